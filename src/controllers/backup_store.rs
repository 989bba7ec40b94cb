//! The object store of a BackupSchedule, with credentials from its Secret: shared by the schedule (which
//! writes backups) and by restore drills (which read them).

use kube::ResourceExt;

use super::{Context, Error, references};
use crate::{
    api::BackupSchedule,
    storage::{BackupStore, S3Config},
};

/// The store of `schedule`'s destination (prefix default `<namespace>/<schedule name>`).
pub async fn for_schedule(ctx: &Context, schedule: &BackupSchedule) -> Result<BackupStore, Error> {
    Ok(with_secret_version(ctx, schedule).await?.0)
}

/// The store of `schedule`'s destination and the `resourceVersion` of its credentials Secret.
pub async fn with_secret_version(
    ctx: &Context,
    schedule: &BackupSchedule,
) -> Result<(BackupStore, String), Error> {
    let ns = schedule.namespace().unwrap_or_default();
    let Some(s3) = &schedule.spec.destination.s3 else {
        return Err(Error::InvalidSpec {
            reason: "DestinationMissing",
            message: "spec.destination.s3 is not set".into(),
        });
    };
    let creds = &s3.credentials_secret_ref;
    let field = "spec.destination.s3.credentialsSecretRef";
    let secret = references::secret_with_keys(
        ctx,
        &ns,
        &creds.name,
        field,
        &[creds.access_key_id_key(), creds.secret_access_key_key()],
    )
    .await?;
    let value = |key: &str| references::secret_value(&secret, key);
    let config = S3Config {
        bucket: s3.bucket.clone(),
        endpoint: s3.endpoint.clone(),
        region: s3.region.clone().unwrap_or_else(|| "us-east-1".into()),
        force_path_style: s3.force_path_style,
        access_key_id: value(creds.access_key_id_key()).unwrap_or_default(),
        secret_access_key: value(creds.secret_access_key_key()).unwrap_or_default(),
        session_token: value(creds.session_token_key()),
    };
    let prefix = s3
        .prefix
        .clone()
        .unwrap_or_else(|| format!("{ns}/{}", schedule.name_any()));
    let store = BackupStore::s3(&config, &prefix).map_err(|e| Error::InvalidSpec {
        reason: e.reason(),
        message: e.to_string(),
    })?;
    Ok((store, secret.resource_version().unwrap_or_default()))
}

/// The backup a new environment's `spec.restore` names (or the newest of its schedule) with its
/// manifest and store; the schedule must exist in `namespace`.
pub async fn restore_source(
    ctx: &Context,
    namespace: &str,
    source: &crate::api::database_environment::RestoreSource,
) -> Result<(BackupStore, crate::domain::manifest::Manifest), Error> {
    let schedule: BackupSchedule = references::lifeboat_object(
        ctx,
        namespace,
        &source.backup_schedule_ref.name,
        "BackupScheduleNotFound",
    )
    .await?;
    let store = for_schedule(ctx, &schedule).await?;
    let (manifest, _) = super::restore::pick(&store, source.backup_id.as_deref())
        .await
        .map_err(|e| Error::NeedsAttention {
            reason: "BackupNotFound",
            message: format!("spec.restore: {e}"),
            source: None,
        })?;
    Ok((store, manifest))
}
