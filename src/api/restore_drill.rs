//! `RestoreDrill`: proof that a backup restores, with measured RTO and RPO.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema, core::Duration};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    common::{
        ConnectionSecretRef, LocalObjectReference, MAX_CRON_LENGTH, MAX_DURATION_LENGTH, cron_rule,
        duration_rule, impl_conditioned_status,
    },
    database_environment::InstanceSource,
};

/// Condition type: the last drill met the RTO and RPO objectives.
pub const CONDITION_OBJECTIVES_MET: &str = "ObjectivesMet";

/// Restores a backup of a BackupSchedule into a scratch database, checks it against the backup's
/// manifest and named queries, measures RTO and RPO, records the result next to the backup, and
/// drops the scratch database. One-shot, or recurring with `schedule`.
// Several `printcolumn(...)` entries share `type_ = "string"`, which clippy takes for repeats.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "lifeboat.dev",
    version = "v1alpha1",
    kind = "RestoreDrill",
    namespaced,
    status = "RestoreDrillStatus",
    derive = "PartialEq",
    shortname = "rdrill",
    shortname = "drill",
    category = "lifeboat",
    selectable = ".spec.backupScheduleRef.name",
    doc = "Proof that a backup restores: restore into a scratch database, check it, measure RTO and RPO.",
    printcolumn(
        name = "Schedule Ref",
        type_ = "string",
        json_path = ".spec.backupScheduleRef.name",
        description = "The BackupSchedule whose backups are drilled",
        priority = 1
    ),
    printcolumn(
        name = "Result",
        type_ = "string",
        json_path = ".status.lastRun.result",
        description = "Last run's result"
    ),
    printcolumn(
        name = "RTO(s)",
        type_ = "integer",
        json_path = ".status.lastRun.rtoSeconds",
        description = "Measured recovery time of the last run, in seconds"
    ),
    printcolumn(
        name = "RPO(s)",
        type_ = "integer",
        json_path = ".status.lastRun.rpoSeconds",
        description = "Age of the restored backup at the last run, in seconds",
        priority = 1
    ),
    printcolumn(
        name = "Objectives Met",
        type_ = "boolean",
        json_path = ".status.objectivesMet",
        description = "Whether the last run met the RTO and RPO objectives"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#,
        description = "Whether the last drill passed"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].reason"#,
        description = "Why it is (not) ready"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("!has(self.backupId) || !has(self.schedule)").message(
    "a scheduled drill always restores the newest backup; remove spec.backupId or spec.schedule"
))]
#[serde(rename_all = "camelCase")]
pub struct RestoreDrillSpec {
    /// The BackupSchedule (same namespace) whose storage and credentials hold the backups.
    pub backup_schedule_ref: LocalObjectReference,

    /// A specific backup to restore (an ID from the BackupSchedule's `status.recentBackups` or its
    /// storage). Unset: the newest successful backup. Not allowed with `schedule`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub backup_id: Option<String>,

    /// Run the drill on this five-field cron schedule (or a macro such as `@weekly`). Unset: run
    /// once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_CRON_LENGTH))]
    #[x_kube(validation = cron_rule())]
    pub schedule: Option<String>,

    /// IANA time zone the schedule is read in, e.g. `Europe/Berlin`. Default `UTC`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub time_zone: Option<String>,

    /// Where the scratch database is created.
    pub target: DrillTarget,

    /// What to check after restoring. Unset: row counts against the manifest.
    #[serde(default)]
    pub checks: DrillChecks,

    /// Recovery objectives the drill is judged against (condition `ObjectivesMet`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objectives: Option<Objectives>,

    /// Keep the scratch database when the drill fails, for investigation (drop it by deleting the
    /// RestoreDrill). Default false.
    #[serde(default)]
    pub keep_on_failure: bool,

    /// Parallel `pg_restore` jobs. Above 1 the dump is first spooled, decompressed, to the operator's
    /// spool directory (bounded by `--spool-limit`; a dump too large for it is restored streaming with
    /// one job, and `lastRun.restoreMethod` says so). Unset or 1: streamed from storage into one job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 8))]
    pub jobs: Option<i32>,
}

/// Where a drill's scratch database is created. Exactly one of `server` or `instance`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new("(has(self.server) ? 1 : 0) + (has(self.instance) ? 1 : 0) == 1")
    .message("set exactly one of target.server or target.instance"))]
#[serde(rename_all = "camelCase")]
pub struct DrillTarget {
    /// A scratch database on an existing shared server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<DrillServer>,
    /// A dedicated, ephemeral server run only for the drill.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<InstanceSource>,
}

/// A shared server that hosts drill scratch databases.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DrillServer {
    /// Secret with an administrative connection to the server (keys `host`, `port`, `username`,
    /// `password`, optional `sslmode`); the role must be allowed to create databases.
    pub admin_secret_ref: ConnectionSecretRef,
}

/// What a drill checks after restoring.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DrillChecks {
    /// Compare every table's row count with the backup manifest. Default true.
    #[serde(default = "default_true")]
    pub row_counts: bool,
    /// Compare every table's content checksum with the backup manifest (reads all data, which
    /// counts towards the measured RTO). Default false.
    #[serde(default)]
    pub checksums: bool,
    /// Named SQL queries whose result must equal the expected value.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub queries: Vec<DrillQuery>,
}

fn default_true() -> bool {
    true
}

impl Default for DrillChecks {
    fn default() -> Self {
        Self {
            row_counts: true,
            checksums: false,
            queries: Vec::new(),
        }
    }
}

/// A SQL query with its expected result.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DrillQuery {
    /// Name of the check, unique within the drill; shown in status.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// Query run read-only against the restored database.
    #[schemars(length(min = 1, max = 4096))]
    pub sql: String,
    /// Expected value of the first column of the first row, as PostgreSQL prints it as text
    /// (e.g. `42`, `t`, `2025-01-01`).
    #[schemars(length(max = 4096))]
    pub expected: String,
}

/// Recovery objectives.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Objectives {
    /// Recovery time objective: the longest acceptable restore-plus-verify time, e.g. `15m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_DURATION_LENGTH))]
    #[x_kube(validation = duration_rule())]
    pub rto: Option<Duration>,
    /// Recovery point objective: the oldest acceptable age of the restored backup, e.g. `24h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_DURATION_LENGTH))]
    #[x_kube(validation = duration_rule())]
    pub rpo: Option<Duration>,
}

/// Observed state of a RestoreDrill (kstatus conditions plus `ObjectivesMet`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreDrillStatus {
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Current conditions, one per type.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The most recent finished drill.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<DrillRun>,
    /// Whether the most recent drill met every objective set (unset: no finished drill, or no
    /// objectives).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objectives_met: Option<bool>,
    /// When the next scheduled drill is due (scheduled drills only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_schedule_time: Option<Time>,
    /// The slot of the most recent scheduled drill started (scheduled drills only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,
    /// The most recent finished drills, newest first, at most 10.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_DRILL_HISTORY))]
    pub history: Vec<DrillRun>,
}

/// Most entries kept in `status.history`.
pub const MAX_DRILL_HISTORY: usize = 10;
impl_conditioned_status!(RestoreDrillStatus);

/// One finished drill.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DrillRun {
    /// ID of the restored backup.
    pub backup_id: String,
    /// `Passed` when the restore and every check succeeded, else `Failed`.
    pub result: DrillResult,
    /// When the restore started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When the checks finished (or the drill failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// Measured recovery time: restore plus checks, in seconds (unset when the restore failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub rto_seconds: Option<i64>,
    /// Age of the restored backup when the drill started, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub rpo_seconds: Option<i64>,
    /// The part of the RTO spent fetching and restoring, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub restore_seconds: Option<i64>,
    /// The part of the RTO spent on the checks, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub verify_seconds: Option<i64>,
    /// How the dump was restored: streamed with one job, or spooled with parallel jobs (and why a
    /// requested spool was not used).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_method: Option<String>,
    /// Age of the schedule's newest successful backup when the drill started, in seconds (the data
    /// a restore at that moment would have lost at best).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub newest_backup_age_seconds: Option<i64>,
    /// The drill's `metadata.generation` this run was made for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// Result of each check.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckResult>,
    /// Name of the scratch database, when it was kept after a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept_database: Option<String>,
    /// Why the drill failed, in one sentence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Outcome of a drill: `Passed` or `Failed`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum DrillResult {
    // The backup restored and every check passed.
    #[default]
    Passed,
    // The restore or a check failed.
    Failed,
}

/// Result of one check.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckResult {
    /// `rowCounts`, `checksums`, or the name of a query check.
    pub name: String,
    /// Whether the check passed.
    pub passed: bool,
    /// What differed, when it failed (e.g. the first tables whose counts differ).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::test_support::*;
    use kube::CustomResourceExt;

    const EXAMPLE: &str = r#"
apiVersion: lifeboat.dev/v1alpha1
kind: RestoreDrill
metadata: {name: shop-weekly-drill, namespace: shop}
spec:
  backupScheduleRef: {name: shop-nightly}
  schedule: "@weekly"
  target:
    server:
      adminSecretRef: {name: scratch-pg-admin}
  checks:
    checksums: true
    queries:
      - {name: has-products, sql: "SELECT count(*) > 0 FROM products", expected: "t"}
  objectives: {rto: 15m, rpo: 26h}
"#;

    #[test]
    fn example_deserializes_with_defaults() {
        let drill: RestoreDrill = serde_yaml::from_str(EXAMPLE).unwrap();
        let spec = &drill.spec;
        assert_eq!(spec.backup_schedule_ref.name, "shop-nightly");
        assert!(spec.target.server.is_some() && spec.target.instance.is_none());
        assert!(spec.checks.row_counts && spec.checks.checksums);
        assert_eq!(spec.checks.queries[0].expected, "t");
        let objectives = spec.objectives.as_ref().unwrap();
        assert_eq!(
            objectives.rpo.unwrap(),
            std::time::Duration::from_secs(26 * 3600)
        );
        assert!(!spec.keep_on_failure);
        let one_shot: RestoreDrillSpec = serde_yaml::from_str(
            "backupScheduleRef: {name: s}\nbackupId: b1\ntarget: {instance: {version: \"18\"}}",
        )
        .unwrap();
        assert_eq!(one_shot.checks, DrillChecks::default());
    }

    #[test]
    fn crd_carries_rules_columns_and_names() {
        let crd = RestoreDrill::crd();
        assert_names(&crd, &["rdrill", "drill"]);
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_columns(
            &crd,
            &[
                "Schedule Ref",
                "Result",
                "RTO(s)",
                "RPO(s)",
                "Objectives Met",
                "Ready",
                "Reason",
                "Age",
            ],
        );
        let rules = rules(&crd);
        for (rule, message) in [
            (
                "!has(self.backupId) || !has(self.schedule)",
                "a scheduled drill always restores the newest backup; remove spec.backupId or spec.schedule",
            ),
            (
                "(has(self.server) ? 1 : 0) + (has(self.instance) ? 1 : 0) == 1",
                "set exactly one of target.server or target.instance",
            ),
        ] {
            assert!(
                rules.contains(&(rule.into(), message.into())),
                "missing rule {rule}"
            );
        }
        let schema = schema(&crd);
        let queries =
            &schema["properties"]["spec"]["properties"]["checks"]["properties"]["queries"];
        assert_eq!(
            queries["x-kubernetes-list-map-keys"],
            serde_json::json!(["name"])
        );
    }

    #[test]
    fn schema_is_structural_and_documented() {
        let crd = RestoreDrill::crd();
        assert_structural(&schema(&crd));
        assert_all_described(&schema(&crd));
    }
}
