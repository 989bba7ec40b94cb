//! `DatabaseServer`: a shared database server the platform team offers to tenants (cluster-scoped).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    common::{ConnectionSecretRef, impl_conditioned_status},
    database_environment::Engine,
};

/// A shared database server that DatabaseEnvironments in the allowed namespaces get their own
/// database and role on (`spec.server.serverRef`). Its admin credentials stay in a Secret in the
/// operator's namespace, which tenants cannot read.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "lifeboat.dev",
    version = "v1alpha1",
    kind = "DatabaseServer",
    status = "DatabaseServerStatus",
    derive = "PartialEq",
    shortname = "dbserver",
    shortname = "dbservers",
    category = "lifeboat",
    doc = "A shared database server offered to the namespaces its allowedNamespaces selects.",
    printcolumn(
        name = "Engine",
        type_ = "string",
        json_path = ".spec.engine",
        description = "Database engine"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#,
        description = "Whether the server answers with the admin credentials"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].reason"#,
        description = "Why it is (not) ready"
    ),
    printcolumn(
        name = "Version",
        type_ = "string",
        json_path = ".status.serverVersion",
        description = "Version the server reports"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(
    validation = Rule::new("!has(self.engine) || self.engine != 'redis' || !has(self.templates) || size(self.templates) == 0")
        .message("spec.templates lists PostgreSQL template databases; a redis server has none: remove it")
        .field_path(".templates"),
)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseServerSpec {
    /// Database engine: `postgres` or `redis` (`mongodb` is planned). Default `postgres`. For
    /// `redis` the admin Secret names an ACL user that may manage users (`+@admin` or at least
    /// `+acl`, with `~* &*`); environments get users limited to their key prefix. Immutable.
    #[serde(default)]
    #[x_kube(
        validation = Rule::new("self == 'postgres' || self == 'redis'").message("engine must be postgres or redis in this release (mongodb is planned)"),
        validation = Rule::new("self == oldSelf").message("engine is immutable; create a new DatabaseServer"),
    )]
    pub engine: Engine,

    /// Secret in the operator's namespace with an administrative connection to the server (keys
    /// `host`, `port`, `username`, `password`, optional `sslmode` and `ca.crt`). The role must be
    /// allowed to create databases and roles. Whoever can read this Secret owns the server: keep it
    /// out of tenants' namespaces.
    pub admin_secret_ref: ConnectionSecretRef,

    /// Namespaces whose DatabaseEnvironments may use this server, by label (for example
    /// `matchLabels: {lifeboat.dev/tenant: "true"}`, or `matchExpressions` on
    /// `kubernetes.io/metadata.name`). `{}` allows every namespace.
    pub allowed_namespaces: LabelSelector,

    /// Databases that environments may clone (PostgreSQL) (`spec.server.template`) besides those the server's
    /// administrator marked as templates (`ALTER DATABASE … IS_TEMPLATE true`). Any other database,
    /// such as another team's, is refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub templates: Vec<TemplateName>,

    /// Most connections one environment's role may hold at once (`CONNECTION LIMIT`), so one tenant
    /// cannot take every connection of the server. Default 20; `-1`: no limit. PostgreSQL only:
    /// Redis has no per-user connection limit (its `maxclients` is the server's).
    #[serde(default = "default_connection_limit")]
    #[schemars(range(min = -1, max = 10000))]
    pub connection_limit: i32,

    /// How Lifeboat's connections (and the connection Secrets it writes) use TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTls>,
}

/// A database name on the server.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(transparent)]
pub struct TemplateName(#[schemars(length(min = 1, max = 63))] pub String);

fn default_connection_limit() -> i32 {
    20
}

/// TLS to the server.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServerTls {
    /// libpq `sslmode`: `disable`, `require`, `verify-ca` or `verify-full`. Default: `verify-full`
    /// when the admin Secret has a `ca.crt`, else `require`. `verify-full` is the only mode that
    /// proves the server is the one it claims to be; below it, a machine in the middle could ask for
    /// the password in clear text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<ServerSslMode>,
}

/// libpq sslmode values a DatabaseServer accepts (`allow` and `prefer` silently fall back to plain
/// text, so they are not offered).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ServerSslMode {
    // No TLS at all.
    Disable,
    // TLS, without checking the server's certificate.
    Require,
    // TLS, with a certificate signed by the CA in `ca.crt`.
    VerifyCa,
    // TLS, with a certificate signed by the CA in `ca.crt` for the host name connected to.
    VerifyFull,
}

impl ServerSslMode {
    /// The libpq spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ServerSslMode::Disable => "disable",
            ServerSslMode::Require => "require",
            ServerSslMode::VerifyCa => "verify-ca",
            ServerSslMode::VerifyFull => "verify-full",
        }
    }
}

/// Observed state of a DatabaseServer (kstatus conditions `Ready`, `Reconciling`, `Stalled`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseServerStatus {
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Current conditions, one per type.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// Version the server reports, e.g. `18.4`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_version: Option<String>,
    /// The `sslmode` Lifeboat uses for this server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssl_mode: Option<String>,
}
impl_conditioned_status!(DatabaseServerStatus);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::test_support::*;
    use kube::CustomResourceExt;

    const EXAMPLE: &str = r#"
apiVersion: lifeboat.dev/v1alpha1
kind: DatabaseServer
metadata: {name: shared-pg}
spec:
  adminSecretRef: {name: shared-pg-admin}
  allowedNamespaces:
    matchLabels: {lifeboat.dev/tenant: "true"}
  templates: [shop_template]
"#;

    #[test]
    fn example_deserializes_with_defaults() {
        let server: DatabaseServer = serde_yaml::from_str(EXAMPLE).unwrap();
        assert_eq!(server.spec.engine, Engine::Postgres);
        assert_eq!(server.spec.connection_limit, 20);
        assert_eq!(
            server.spec.templates,
            vec![TemplateName("shop_template".into())]
        );
        assert!(server.spec.tls.is_none());
    }

    #[test]
    fn crd_is_cluster_scoped_structural_and_documented() {
        let crd = DatabaseServer::crd();
        assert_eq!(crd.spec.scope, "Cluster");
        assert_names(&crd, &["dbserver", "dbservers"]);
        assert_structural(&schema(&crd));
        assert_all_described(&schema(&crd));
        assert_eq!(
            serde_json::to_value(ServerSslMode::VerifyFull).unwrap(),
            "verify-full"
        );
    }
}
