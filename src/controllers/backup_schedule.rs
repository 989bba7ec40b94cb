//! BackupSchedule controller. This build resolves the environment and the destination's credentials
//! Secret and reports what is missing. Taking backups is not in this build: a schedule whose inputs are
//! present is reported `Stalled` with reason `NotImplemented`, never `Ready`.

use std::sync::Arc;

use kube::{
    ResourceExt,
    runtime::{Controller, controller::Action},
};
use tracing::instrument;

use super::{
    Context, Error, conditions::Verdict, drain, error_policy, instrumented, references, status,
    watcher_config,
};
use crate::api::{BackupSchedule, BackupScheduleStatus, DatabaseEnvironment};

pub const CONTROLLER: &str = "backupschedule";

pub async fn controller(ctx: Arc<Context>, shutdown: super::Shutdown) {
    let schedules = Controller::new(ctx.watched_api::<BackupSchedule>(), watcher_config());
    let store = schedules.store();
    let stream = schedules
        .watches(
            ctx.watched_api::<DatabaseEnvironment>(),
            watcher_config(),
            super::referencing(store, |s: &BackupSchedule| &s.spec.environment_ref.name),
        )
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(reconcile, error_policy::<BackupSchedule>(CONTROLLER), ctx);
    drain(CONTROLLER, stream).await;
}

#[instrument(skip(schedule, ctx), fields(namespace = schedule.namespace().unwrap_or_default(), name = schedule.name_any()))]
async fn reconcile(schedule: Arc<BackupSchedule>, ctx: Arc<Context>) -> Result<Action, Error> {
    instrumented(CONTROLLER, schedule.clone(), ctx.clone(), async move {
        let result = evaluate(&schedule, &ctx).await;
        let verdict = match &result {
            Ok(v) => v.clone(),
            Err(e) => status::verdict_for(e),
        };
        status::write(
            ctx.as_ref(),
            schedule.as_ref(),
            &verdict,
            |_: &mut BackupScheduleStatus| {},
        )
        .await?;
        result.map(|_| Action::await_change())
    })
    .await
}

async fn evaluate(schedule: &BackupSchedule, ctx: &Context) -> Result<Verdict, Error> {
    let ns = schedule.namespace().unwrap_or_default();
    super::schedule::parse(
        &schedule.spec.schedule,
        schedule.spec.time_zone.as_deref(),
        "spec.schedule",
    )?;
    let _env: DatabaseEnvironment = references::lifeboat_object(
        ctx,
        &ns,
        &schedule.spec.environment_ref.name,
        "EnvironmentNotFound",
    )
    .await?;
    if let Some(s3) = &schedule.spec.destination.s3 {
        let creds = &s3.credentials_secret_ref;
        references::secret_with_keys(
            ctx,
            &ns,
            &creds.name,
            "spec.destination.s3.credentialsSecretRef",
            &[creds.access_key_id_key(), creds.secret_access_key_key()],
        )
        .await?;
    }
    Err(Error::NotImplemented {
        message: "all inputs are present, but taking backups is not in this build yet; no backup was taken".into(),
    })
}
