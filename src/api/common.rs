//! Types shared by the four Lifeboat resources: object references, migration sources, the
//! status-conditions contract and the CEL rules reused across kinds.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{KubeSchema, core::Rule};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Condition type: the resource has reached its desired state (kstatus "Current").
pub const CONDITION_READY: &str = "Ready";
/// Condition type: the operator is still working towards the desired state (kstatus).
pub const CONDITION_RECONCILING: &str = "Reconciling";
/// Condition type: progress stopped on an error that needs a human to fix (kstatus).
pub const CONDITION_STALLED: &str = "Stalled";

/// CEL regex for a duration in Go / `metav1.Duration` syntax (`90s`, `30m`, `24h`, `1h30m`, `1.5h`).
///
/// Days are deliberately not a unit: `kube::core::Duration` (and Go) do not parse them. Both micro
/// signs are accepted because `kube::core::Duration` serializes sub-millisecond values as `µs`.
pub const DURATION_PATTERN: &str = "^([0-9]+([.][0-9]+)?(ns|us|\u{b5}s|\u{3bc}s|ms|s|m|h))+$";

/// CEL regex for a cron schedule: five space-separated fields, or one of the `@daily`-style macros.
pub const CRON_PATTERN: &str =
    "^( *[^ ]+( +[^ ]+){4} *|@(yearly|annually|monthly|weekly|daily|midnight|hourly))$";

/// CEL rule that rejects malformed duration strings.
pub fn duration_rule() -> Rule {
    Rule::new(format!("self.matches('{DURATION_PATTERN}')"))
        .message("must be a duration such as 90s, 30m, 24h or 1h30m (units: ms, s, m, h)")
}

/// CEL rule that rejects schedules that are not five-field cron expressions.
pub fn cron_rule() -> Rule {
    Rule::new(format!("self.matches('{CRON_PATTERN}')")).message(
        "must be a cron schedule with five fields (minute hour day-of-month month day-of-week), \
         e.g. '0 3 * * *', or a macro such as @daily",
    )
}

/// Longest accepted duration string; bounds the CEL cost estimate of `duration_rule`.
pub const MAX_DURATION_LENGTH: u32 = 32;
/// Longest accepted cron string; bounds the CEL cost estimate of `cron_rule`.
pub const MAX_CRON_LENGTH: u32 = 128;

/// A reference to an object of a known kind in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalObjectReference {
    /// Name of the referenced object, in the same namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

impl LocalObjectReference {
    /// A reference to the object called `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into() }
    }
}

/// A Secret holding database connection details, with optional overrides of the key names.
///
/// By default the Secret carries the keys `host`, `port`, `database`, `username`, `password` and,
/// optionally, `sslmode`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionSecretRef {
    /// Name of the Secret, in the same namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key names to read instead of the defaults; unset keys keep their default name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<ConnectionSecretKeys>,
}

/// Key names inside a connection Secret, for Secrets that do not use Lifeboat's default names.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionSecretKeys {
    /// Key holding the server host name. Default `host`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Key holding the server port. Default `port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<String>,
    /// Key holding the database name. Default `database`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// Key holding the user name. Default `username`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Key holding the password. Default `password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// Key holding the libpq `sslmode` (optional in the Secret). Default `sslmode`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sslmode: Option<String>,
}

impl ConnectionSecretRef {
    fn key<'a>(
        &'a self,
        pick: fn(&ConnectionSecretKeys) -> &Option<String>,
        default: &'a str,
    ) -> &'a str {
        self.keys
            .as_ref()
            .and_then(|k| pick(k).as_deref())
            .unwrap_or(default)
    }
    /// The Secret key holding the host.
    pub fn host_key(&self) -> &str {
        self.key(|k| &k.host, "host")
    }
    /// The Secret key holding the port.
    pub fn port_key(&self) -> &str {
        self.key(|k| &k.port, "port")
    }
    /// The Secret key holding the database name.
    pub fn database_key(&self) -> &str {
        self.key(|k| &k.database, "database")
    }
    /// The Secret key holding the user name.
    pub fn username_key(&self) -> &str {
        self.key(|k| &k.username, "username")
    }
    /// The Secret key holding the password.
    pub fn password_key(&self) -> &str {
        self.key(|k| &k.password, "password")
    }
    /// The Secret key holding the sslmode.
    pub fn sslmode_key(&self) -> &str {
        self.key(|k| &k.sslmode, "sslmode")
    }
}

/// Where migration (or seed) SQL files come from: ConfigMaps named in a list, or all ConfigMaps
/// matching a label selector. Exactly one of the two must be set.
///
/// Every key ending in `.sql` in the selected ConfigMaps is a file; a file name may appear in only
/// one ConfigMap. A ConfigMap holds at most 1 MiB, so split large histories across several
/// ConfigMaps (e.g. one per release) and list them, or label them and use a selector.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new(
    "(has(self.configMapNames) && size(self.configMapNames) > 0) != has(self.configMapSelector)"
).message("set exactly one of configMapNames (a non-empty list) or configMapSelector"))]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapSource {
    /// Names of ConfigMaps in the same namespace whose `.sql` keys are the files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 253)))]
    pub config_map_names: Vec<String>,
    /// Selects the ConfigMaps in the same namespace whose `.sql` keys are the files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_selector: Option<LabelSelector>,
}

/// The status fields every Lifeboat resource shares (kstatus conventions), so condition helpers
/// can be written once for all kinds.
pub trait ConditionedStatus: Default {
    /// The current conditions.
    fn conditions(&self) -> &[Condition];
    /// The conditions, for updating in place.
    fn conditions_mut(&mut self) -> &mut Vec<Condition>;
    /// The `metadata.generation` the status was last computed from.
    fn observed_generation(&self) -> Option<i64>;
    /// Record the `metadata.generation` the status was computed from.
    fn set_observed_generation(&mut self, generation: Option<i64>);
}

/// Implements [`ConditionedStatus`] for a status struct with `conditions` and
/// `observed_generation` fields.
macro_rules! impl_conditioned_status {
    ($status:ty) => {
        impl $crate::api::common::ConditionedStatus for $status {
            fn conditions(&self) -> &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition] {
                &self.conditions
            }
            fn conditions_mut(
                &mut self,
            ) -> &mut Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
                &mut self.conditions
            }
            fn observed_generation(&self) -> Option<i64> {
                self.observed_generation
            }
            fn set_observed_generation(&mut self, generation: Option<i64>) {
                self.observed_generation = generation;
            }
        }
    };
}
pub(crate) use impl_conditioned_status;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_keys_default_and_override() {
        let plain: ConnectionSecretRef = serde_yaml::from_str("name: pg-admin").unwrap();
        assert_eq!(plain.host_key(), "host");
        assert_eq!(plain.password_key(), "password");
        let custom: ConnectionSecretRef =
            serde_yaml::from_str("name: rds\nkeys: {password: PGPASSWORD, host: endpoint}")
                .unwrap();
        assert_eq!(custom.host_key(), "endpoint");
        assert_eq!(custom.password_key(), "PGPASSWORD");
        assert_eq!(custom.port_key(), "port");
    }

    #[test]
    fn patterns_embed_cleanly_in_cel_string_literals() {
        // The patterns are pasted into single-quoted CEL strings: a quote would end the literal and
        // a backslash would need a second level of escaping.
        for pattern in [DURATION_PATTERN, CRON_PATTERN] {
            assert!(
                pattern.starts_with('^') && pattern.ends_with('$'),
                "{pattern} is anchored"
            );
            assert!(
                !pattern.contains(['\\', '\'']),
                "{pattern} needs no escaping"
            );
        }
        assert_eq!(
            duration_rule().rule,
            format!("self.matches('{DURATION_PATTERN}')")
        );
    }
}
