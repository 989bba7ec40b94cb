//! DatabaseServer controller and the resolution DatabaseEnvironments go through to use one.
//!
//! A DatabaseServer is cluster-scoped and owned by the platform team. Its admin Secret lives in the
//! operator's namespace, so a tenant who can read Secrets in its own namespace never sees it. This
//! controller checks the server answers with those credentials; what environments get from a server is
//! in [`super::server_access`].

use std::{sync::Arc, time::Duration};

use k8s_openapi::jiff::Timestamp;
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
    runtime::controller::Action,
};
use tracing::instrument;

use super::{
    Context, Error, FIELD_MANAGER,
    conditions::{self, Verdict},
    drain, error_policy, instrumented,
    status::{sentence, verdict_for},
};
use crate::{
    api::{ConditionedStatus, DatabaseServer},
    engines::{self, Connect, ENGINE, Health, ServerCredentials},
};

pub const CONTROLLER: &str = "databaseserver";
/// A Ready server is checked again this often.
pub const RECHECK: Duration = Duration::from_secs(300);

pub async fn controller(ctx: Arc<Context>, shutdown: super::Shutdown) {
    let servers: Api<DatabaseServer> = Api::all(ctx.client.clone());
    let stream = super::watch::controller(&servers, ctx.client.clone())
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(reconcile, error_policy::<DatabaseServer>(CONTROLLER), ctx);
    drain(CONTROLLER, stream).await;
}

#[instrument(skip(server, ctx), fields(name = server.name_any()))]
async fn reconcile(server: Arc<DatabaseServer>, ctx: Arc<Context>) -> Result<Action, Error> {
    instrumented(CONTROLLER, server.clone(), ctx.clone(), async move {
        let result = check(&server, &ctx).await;
        let verdict = match &result {
            Ok((version, creds)) => Verdict::Ready {
                reason: "Ready",
                message: sentence(&format!(
                    "{} {version} at {}:{} answers with the admin credentials (sslmode {})",
                    super::engine::kind(server.spec.engine).product(),
                    creds.host,
                    creds.port,
                    creds.sslmode
                )),
            },
            Err(e) => verdict_for(e),
        };
        let (version, mode) = match &result {
            Ok((v, c)) => (Some(v.clone()), Some(c.sslmode.clone())),
            Err(_) => (None, None),
        };
        write_status(&ctx, &server, &verdict, version, mode).await?;
        result.map(|_| Action::requeue(RECHECK))
    })
    .await
}

/// Connects with the admin credentials and checks the role may create databases and roles (the
/// engine's users, for engines of the coarse [`engines::Tenancy`] verbs).
async fn check(
    server: &DatabaseServer,
    ctx: &Context,
) -> Result<(String, ServerCredentials), Error> {
    let creds =
        super::server_access::admin_credentials(ctx, &server.name_any(), &server.spec).await?;
    if let Some(tenancy) = engines::tenancy(super::engine::kind(server.spec.engine)) {
        let facts = tenancy
            .check_server(&creds)
            .await
            .map_err(super::error::pg)?;
        return Ok((facts.version, creds));
    }
    let mut conn = ENGINE
        .connect_admin(&creds)
        .await
        .map_err(super::error::pg)?;
    let version = ENGINE.server_version(&mut conn).await;
    let can = ENGINE.may_provision(&mut conn).await;
    ENGINE.close(conn).await;
    let version = version.map_err(super::error::pg)?;
    if !can.unwrap_or(false) {
        return Err(Error::NeedsAttention {
            reason: "InsufficientPrivileges",
            source: None,
            message: format!(
                "the admin role {} in Secret {}/{} may not create databases and roles; grant it CREATEDB and CREATEROLE",
                creds.username, ctx.config.operator_namespace, server.spec.admin_secret_ref.name
            ),
        });
    }
    Ok((version, creds))
}

async fn write_status(
    ctx: &Context,
    server: &DatabaseServer,
    verdict: &Verdict,
    version: Option<String>,
    mode: Option<String>,
) -> Result<(), Error> {
    let old = server.status.clone();
    let mut new = old.clone().unwrap_or_default();
    if version.is_some() {
        new.server_version = version;
        new.ssl_mode = mode;
    }
    let generation = server.metadata.generation;
    new.set_observed_generation(generation);
    conditions::apply_verdict(new.conditions_mut(), verdict, generation, Timestamp::now());
    if old.as_ref() == Some(&new) {
        return Ok(());
    }
    let api: Api<DatabaseServer> = Api::all(ctx.client.clone());
    let patch: serde_json::Value = serde_json::json!({
        "apiVersion": "lifeboat.dev/v1alpha1",
        "kind": "DatabaseServer",
        "status": new,
    });
    api.patch_status(
        &server.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}
