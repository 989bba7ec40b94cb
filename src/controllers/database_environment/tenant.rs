//! Environments of engines that take the coarse [`Tenancy`] verbs (Redis): the connection Secret first
//! (so a crash never loses the password), then the engine provisions the tenant and checks it.

use kube::{ResourceExt, runtime::events::EventType};

use super::{Outcome, existing_password, generate_password};
use crate::{
    api::DatabaseEnvironment,
    controllers::{Context, Error, error::pg, server_access::Resolved, status::sentence},
    engines::{ServerCredentials, Tenancy, Tenant},
};

/// The tenant of an environment: named from its namespace and name, marked with its UID.
pub(super) fn tenant_of(tenancy: &dyn Tenancy, env: &DatabaseEnvironment) -> Tenant {
    tenancy.tenant(
        &env.namespace().unwrap_or_default(),
        &env.name_any(),
        &env.uid().unwrap_or_default(),
    )
}

/// Checks the server, writes the connection Secret, provisions the tenant and checks it as the
/// tenant's own user.
pub(super) async fn provision(
    env: &DatabaseEnvironment,
    ctx: &Context,
    tenancy: &dyn Tenancy,
    access: Resolved,
) -> Result<Outcome, Error> {
    let admin = access.admin;
    // Reach the server first: nothing exists until the admin credentials work, so deleting an
    // environment that never got this far has nothing to clean up.
    let facts = tenancy.check_server(&admin).await.map_err(pg)?;
    let tenant = tenant_of(tenancy, env);
    let app = ServerCredentials {
        username: tenant.user.clone(),
        password: existing_password(ctx, env)
            .await?
            .unwrap_or_else(generate_password),
        ..admin.clone()
    };
    let data = tenancy.connection_data(&app, &tenant);
    super::write_secret_data(ctx, env, data, app.ca_pem.as_deref()).await?;
    let provisioned = tenancy
        .provision(&admin, &tenant, &app.password)
        .await
        .map_err(pg)?;
    if provisioned.created {
        let note = format!(
            "Created user {} limited to keys and channels under {}.",
            tenant.user, tenant.key_prefix
        );
        ctx.publish(env, EventType::Normal, "Created", note).await;
    }
    let restored_from = match &env.spec.restore {
        Some(source) => Some(restore_once(env, ctx, tenancy, &admin, &tenant, source).await?),
        None => None,
    };
    let usage = tenancy
        .check(&admin, &app)
        .await
        .map_err(|e| Error::NeedsAttention {
            reason: "HealthCheckFailed",
            message: e.to_string(),
            source: Some(Box::new(e)),
        })?;
    let labels = crate::telemetry::ServerLabels {
        engine: tenancy.kind().name().to_string(),
        server: server_label(env),
    };
    ctx.metrics.cache.record(&labels, &usage);
    Ok(Outcome {
        message: sentence(&format!(
            "user {} (keys under {}) on {} {}:{} is ready; connect with Secret {}",
            tenant.user,
            tenant.key_prefix,
            tenancy.kind().product(),
            admin.host,
            admin.port,
            env.connection_secret_name()
        )),
        database: tenant.user,
        host: admin.host,
        port: admin.port,
        server_version: facts.version,
        seeded_now: false,
        schema_version: None,
        restored_from,
        usage: Some((usage, "server")),
    })
}

/// A whole server reached with `creds`: the environment's own instance, or an adopted one (never
/// changed, never deleted). The connection Secret carries `creds` with no key prefix.
pub(super) async fn adopt(
    env: &DatabaseEnvironment,
    ctx: &Context,
    tenancy: &dyn Tenancy,
    creds: ServerCredentials,
    scope: &'static str,
) -> Result<Outcome, Error> {
    let (facts, usage) = tenancy
        .adopt(&creds)
        .await
        .map_err(|e| Error::NeedsAttention {
            reason: if e.transient {
                "ServerUnreachable"
            } else {
                "HealthCheckFailed"
            },
            message: e.to_string(),
            source: Some(Box::new(e)),
        })?;
    let tenant = Tenant {
        user: creds.username.clone(),
        key_prefix: String::new(),
        uid: env.uid().unwrap_or_default(),
    };
    let data = tenancy.connection_data(&creds, &tenant);
    super::write_secret_data(ctx, env, data, creds.ca_pem.as_deref()).await?;
    if let Some(usage) = &usage {
        let labels = crate::telemetry::ServerLabels {
            engine: tenancy.kind().name().to_string(),
            server: format!("{}/{}", env.namespace().unwrap_or_default(), env.name_any()),
        };
        ctx.metrics.cache.record(&labels, usage);
    }
    let what = if scope == "instance" {
        "its own"
    } else {
        "the adopted"
    };
    Ok(Outcome {
        message: sentence(&format!(
            "{what} {} {} at {}:{} answers; connect with Secret {}",
            tenancy.kind().product(),
            facts.version,
            creds.host,
            creds.port,
            env.connection_secret_name()
        )),
        database: creds.username,
        host: creds.host,
        port: creds.port,
        server_version: facts.version,
        seeded_now: false,
        schema_version: None,
        restored_from: None,
        usage: usage.map(|u| (u, scope)),
    })
}

/// The server an environment's figures belong to, as metrics name it: the DatabaseServer, or the
/// namespace's admin Secret.
fn server_label(env: &DatabaseEnvironment) -> String {
    let server = env.spec.server.as_ref();
    match (
        server.and_then(|s| s.server_ref.as_ref()),
        server.and_then(|s| s.admin_secret_ref.as_ref()),
    ) {
        (Some(r), _) => r.name.clone(),
        (None, Some(secret)) => format!("{}/{}", env.namespace().unwrap_or_default(), secret.name),
        (None, None) => String::new(),
    }
}

/// Fills the tenant's prefix from a backup once (`spec.restore`): emptied, restored, checked against
/// the manifest (key counts, and name checksums when recorded), then recorded; until that record exists
/// every attempt starts again from an empty prefix. Returns the backup id.
async fn restore_once(
    env: &DatabaseEnvironment,
    ctx: &Context,
    tenancy: &dyn Tenancy,
    admin: &ServerCredentials,
    tenant: &Tenant,
    source: &crate::api::database_environment::RestoreSource,
) -> Result<String, Error> {
    if let Some(id) = tenancy.restored_from(admin, tenant).await.map_err(pg)? {
        return Ok(id);
    }
    let failed = |reason: &'static str, message: String| Error::NeedsAttention {
        reason,
        message,
        source: None,
    };
    let namespace = env.namespace().unwrap_or_default();
    let (store, manifest) =
        crate::controllers::backup_store::restore_source(ctx, &namespace, source).await?;
    let engine = tenancy.kind();
    if manifest.engine != engine.name() {
        return Err(Error::InvalidSpec {
            reason: "BackupEngineMismatch",
            message: format!(
                "spec.restore: backup {} is a {} backup; a {} environment restores {} backups",
                manifest.id,
                manifest.engine,
                engine.name(),
                engine.name()
            ),
        });
    }
    tenancy.clear(admin, &tenant.key_prefix).await.map_err(pg)?;
    let report = crate::controllers::restore_archive::restore_archive(
        tenancy,
        &store,
        &manifest,
        admin,
        &tenant.key_prefix,
    )
    .await
    .map_err(|e| failed("RestoreFailed", e))?;
    let checksums = crate::controllers::restore::recorded_checksums(&manifest);
    let restored = tenancy
        .stats(admin, &tenant.key_prefix, checksums)
        .await
        .map_err(pg)?;
    let check = crate::controllers::restore::restore_matches(&manifest, &restored)?;
    tenancy
        .mark_restored(admin, tenant, &manifest.id)
        .await
        .map_err(pg)?;
    let note = format!(
        "Restored backup {} into the keys under {} ({} key(s), {} with a TTL, none more than {} ms short) and checked it against its manifest ({}).",
        manifest.id,
        tenant.key_prefix,
        report.keys,
        report.expiring,
        report.max_ttl_drift_ms,
        check
    );
    ctx.publish(env, EventType::Normal, "Restored", note).await;
    Ok(manifest.id)
}
