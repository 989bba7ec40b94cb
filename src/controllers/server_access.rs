//! What an environment's `spec.server.serverRef` gives it: the DatabaseServer must exist and allow the
//! environment's namespace; the admin credentials come from the server's Secret in the operator's
//! namespace, with the server's TLS policy applied. Shared by the DatabaseServer controller (its own
//! check) and the DatabaseEnvironment controller.

use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, ResourceExt,
    core::{Selector, SelectorExt},
};

use super::{Context, Error, references};
use crate::{
    api::{
        DatabaseServer,
        database_environment::Engine,
        database_server::{DatabaseServerSpec, ServerSslMode},
    },
    engines::ServerCredentials,
};

/// The admin credentials of a server, from its Secret in the operator's namespace, with the server's
/// TLS policy: `spec.tls.mode`, else the Secret's `sslmode`, else `verify-full` with a CA and `require`
/// without one. `prefer` and `allow` (which fall back to plain text) become `require`.
pub async fn admin_credentials(
    ctx: &Context,
    name: &str,
    spec: &DatabaseServerSpec,
) -> Result<ServerCredentials, Error> {
    let field = format!("DatabaseServer {name} spec.adminSecretRef");
    let (mut creds, _) = references::engine_credentials(
        ctx,
        super::engine::kind(spec.engine),
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
            source: None,
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

impl Resolved {
    /// A server reached with its admin credentials alone (a namespace's admin Secret, an instance's
    /// superuser): only marked templates, no connection limit.
    pub fn admin_only(admin: ServerCredentials) -> Self {
        Self {
            admin,
            templates: Vec::new(),
            connection_limit: None,
        }
    }
}

/// Resolves the DatabaseServer `name` for an environment of `engine` in `namespace`: it must exist,
/// run that engine, and allow the namespace.
pub async fn resolve(
    ctx: &Context,
    name: &str,
    namespace: &str,
    engine: Engine,
) -> Result<Resolved, Error> {
    let servers: Api<DatabaseServer> = Api::all(ctx.client.clone());
    let server = servers
        .get_opt(name)
        .await?
        .ok_or_else(|| Error::NeedsAttention {
            reason: "ServerNotFound",
            source: None,
            message: format!(
                "DatabaseServer {name} named by spec.server.serverRef does not exist; `kubectl get databaseservers` lists those that do"
            ),
        })?;
    if server.spec.engine != engine {
        return Err(Error::InvalidSpec {
            reason: "EngineMismatch",
            message: format!(
                "DatabaseServer {name} runs {}, but this environment's spec.engine is {}; name a {} server",
                super::engine::kind(server.spec.engine).product(),
                super::engine::kind(engine).name(),
                super::engine::kind(engine).product()
            ),
        });
    }
    let ns = Api::<Namespace>::all(ctx.client.clone())
        .get_opt(namespace)
        .await?;
    let labels = ns.map(|n| n.labels().clone()).unwrap_or_default();
    if !namespace_allowed(&server.spec, &labels)? {
        return Err(Error::NeedsAttention {
            reason: "NamespaceNotAllowed",
            source: None,
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
