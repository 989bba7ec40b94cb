//! DatabaseServer controller and the resolution DatabaseEnvironments go through to use one.
//!
//! A DatabaseServer is cluster-scoped and owned by the platform team. Its admin Secret lives in the
//! operator's namespace, so a tenant who can read Secrets in its own namespace never sees it. Before an
//! environment touches the server, [`resolve`] checks that the environment's namespace is one the
//! server allows, and hands back the admin credentials with the server's TLS policy applied.

use std::{sync::Arc, time::Duration};

use futures::FutureExt;
use k8s_openapi::{api::core::v1::Namespace, jiff::Timestamp};
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
    core::{Selector, SelectorExt},
    runtime::{Controller, controller::Action},
};
use sqlx::Connection;
use tracing::instrument;

use super::{
    Context, Error, FIELD_MANAGER,
    conditions::{self, Verdict},
    drain, error_policy, instrumented, references,
    status::{sentence, verdict_for},
    watcher_config,
};
use crate::{
    api::{
        ConditionedStatus, DatabaseServer,
        database_server::{DatabaseServerSpec, ServerSslMode},
    },
    engines::{ServerCredentials, postgres},
};

pub const CONTROLLER: &str = "databaseserver";
/// A Ready server is checked again this often.
pub const RECHECK: Duration = Duration::from_secs(300);

pub async fn controller(ctx: Arc<Context>, shutdown: super::Shutdown) {
    let servers: Api<DatabaseServer> = Api::all(ctx.client.clone());
    let stream = Controller::new(servers, watcher_config())
        .graceful_shutdown_on(shutdown.map(|_| ()))
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
                    "PostgreSQL {version} at {}:{} answers with the admin credentials (sslmode {})",
                    creds.host, creds.port, creds.sslmode
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

/// Connects with the admin credentials and checks the role may create databases and roles.
async fn check(
    server: &DatabaseServer,
    ctx: &Context,
) -> Result<(String, ServerCredentials), Error> {
    let creds = admin_credentials(ctx, &server.name_any(), &server.spec).await?;
    let mut conn = postgres::connect_admin(&creds, "postgres")
        .await
        .map_err(super::database_environment::pg)?;
    let version = postgres::provision::server_version(&mut conn).await;
    let can: Result<bool, _> = sqlx::query_scalar(
        "select rolsuper or (rolcreatedb and rolcreaterole) from pg_catalog.pg_roles where rolname = pg_catalog.current_user()",
    )
    .fetch_one(&mut conn)
    .await;
    let _ = conn.close().await;
    let version = version.map_err(super::database_environment::pg)?;
    if !can.unwrap_or(false) {
        return Err(Error::NeedsAttention {
            reason: "InsufficientPrivileges",
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

/// The admin credentials of a server, from its Secret in the operator's namespace, with the server's
/// TLS policy: `spec.tls.mode`, else the Secret's `sslmode`, else `verify-full` with a CA and `require`
/// without one. `prefer` and `allow` (which fall back to plain text) become `require`.
pub async fn admin_credentials(
    ctx: &Context,
    name: &str,
    spec: &DatabaseServerSpec,
) -> Result<ServerCredentials, Error> {
    let field = format!("DatabaseServer {name} spec.adminSecretRef");
    let (mut creds, _) = references::connection_credentials(
        ctx,
        &ctx.config.operator_namespace,
        &spec.admin_secret_ref,
        &field,
        false,
    )
    .await?;
    creds.sslmode = effective_sslmode(
        spec.tls.as_ref().and_then(|t| t.mode),
        &creds.sslmode,
        creds.ca_pem.is_some(),
    )
    .to_string();
    if creds.sslmode.starts_with("verify") && creds.ca_pem.is_none() {
        return Err(Error::NeedsAttention {
            reason: "SecretKeyMissing",
            message: format!(
                "{field}: sslmode {} needs the server's CA in the key {}",
                creds.sslmode,
                references::CA_KEY
            ),
        });
    }
    Ok(creds)
}

/// The sslmode used for a DatabaseServer (pure).
pub fn effective_sslmode(
    spec: Option<ServerSslMode>,
    from_secret: &str,
    has_ca: bool,
) -> &'static str {
    if let Some(mode) = spec {
        return mode.as_str();
    }
    match from_secret {
        "disable" => "disable",
        "verify-ca" => "verify-ca",
        "verify-full" => "verify-full",
        _ if has_ca => "verify-full",
        _ => "require",
    }
}

/// What an environment may do on a server it is allowed to use.
pub struct Resolved {
    pub admin: ServerCredentials,
    pub templates: Vec<String>,
    pub connection_limit: Option<i32>,
}

/// Resolves the DatabaseServer `name` for an environment in `namespace`: it must exist, and it must
/// allow the namespace.
pub async fn resolve(ctx: &Context, name: &str, namespace: &str) -> Result<Resolved, Error> {
    let servers: Api<DatabaseServer> = Api::all(ctx.client.clone());
    let server = servers
        .get_opt(name)
        .await?
        .ok_or_else(|| Error::NeedsAttention {
            reason: "ServerNotFound",
            message: format!(
                "DatabaseServer {name} named by spec.server.serverRef does not exist; `kubectl get databaseservers` lists those that do"
            ),
        })?;
    let ns = Api::<Namespace>::all(ctx.client.clone())
        .get_opt(namespace)
        .await?;
    let labels = ns.map(|n| n.labels().clone()).unwrap_or_default();
    if !namespace_allowed(&server.spec, &labels)? {
        return Err(Error::NeedsAttention {
            reason: "NamespaceNotAllowed",
            message: format!(
                "DatabaseServer {name} does not allow namespace {namespace} (its spec.allowedNamespaces does not select it); ask the server's owners to allow it"
            ),
        });
    }
    let admin = admin_credentials(ctx, name, &server.spec).await?;
    Ok(Resolved {
        admin,
        templates: server.spec.templates.iter().map(|t| t.0.clone()).collect(),
        connection_limit: Some(server.spec.connection_limit).filter(|l| *l >= 0),
    })
}

/// Whether the server's `allowedNamespaces` selects a namespace with these labels (pure).
pub fn namespace_allowed(
    spec: &DatabaseServerSpec,
    labels: &std::collections::BTreeMap<String, String>,
) -> Result<bool, Error> {
    let selector =
        Selector::try_from(spec.allowed_namespaces.clone()).map_err(|e| Error::InvalidSpec {
            reason: "InvalidSelector",
            message: format!(
                "spec.allowedNamespaces of the DatabaseServer is not a valid selector: {e}"
            ),
        })?;
    Ok(selector.matches(labels))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn spec(selector: serde_json::Value) -> DatabaseServerSpec {
        serde_json::from_value(serde_json::json!({
            "adminSecretRef": {"name": "admin"},
            "allowedNamespaces": selector,
        }))
        .unwrap()
    }

    #[test]
    fn allowed_namespaces_is_a_label_selector() {
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let tenants = spec(serde_json::json!({"matchLabels": {"tenant": "yes"}}));
        for (labels, allowed) in [
            (labels(&[("tenant", "yes")]), true),
            (labels(&[("tenant", "no")]), false),
            (labels(&[]), false),
        ] {
            assert_eq!(namespace_allowed(&tenants, &labels).unwrap(), allowed);
        }
        let everyone = spec(serde_json::json!({}));
        assert!(namespace_allowed(&everyone, &labels(&[])).unwrap());
        let by_name = spec(serde_json::json!({"matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["team-a"]}
        ]}));
        assert!(
            namespace_allowed(
                &by_name,
                &labels(&[("kubernetes.io/metadata.name", "team-a")])
            )
            .unwrap()
        );
        assert!(
            !namespace_allowed(
                &by_name,
                &labels(&[("kubernetes.io/metadata.name", "team-b")])
            )
            .unwrap()
        );
    }

    #[test]
    fn tls_policy() {
        use ServerSslMode::*;
        for (spec, secret, ca, want) in [
            (None, "prefer", false, "require"),
            (None, "prefer", true, "verify-full"),
            (None, "allow", false, "require"),
            (None, "disable", false, "disable"),
            (None, "verify-ca", true, "verify-ca"),
            (Some(Disable), "verify-full", true, "disable"),
            (Some(VerifyFull), "prefer", true, "verify-full"),
        ] {
            assert_eq!(
                effective_sslmode(spec, secret, ca),
                want,
                "{spec:?} {secret} {ca}"
            );
        }
    }
}
