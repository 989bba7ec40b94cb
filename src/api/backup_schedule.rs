//! `BackupSchedule`: backups on a clock, kept by a policy, each one checked.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{
    LocalObjectReference, MAX_CRON_LENGTH, MAX_DURATION_LENGTH, cron_rule, duration_rule,
    impl_conditioned_status,
};

/// Most entries kept in `status.recentBackups`.
pub const MAX_RECENT_BACKUPS: usize = 10;

/// Scheduled logical backups (`pg_dump -Fc`) of one DatabaseEnvironment, streamed compressed into
/// object storage with a checksum and a manifest, and pruned by a retention policy.
// Several `printcolumn(...)` entries share `type_ = "string"`, which clippy takes for repeats.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "lifeboat.dev",
    version = "v1alpha1",
    kind = "BackupSchedule",
    namespaced,
    status = "BackupScheduleStatus",
    derive = "PartialEq",
    shortname = "bsched",
    category = "lifeboat",
    selectable = ".spec.environmentRef.name",
    doc = "Scheduled backups of one DatabaseEnvironment into object storage, pruned by a retention policy.",
    printcolumn(
        name = "Environment",
        type_ = "string",
        json_path = ".spec.environmentRef.name",
        description = "The DatabaseEnvironment backed up"
    ),
    printcolumn(
        name = "Schedule",
        type_ = "string",
        json_path = ".spec.schedule",
        description = "Cron schedule"
    ),
    printcolumn(
        name = "Suspend",
        type_ = "boolean",
        json_path = ".spec.suspend",
        description = "Whether paused"
    ),
    printcolumn(
        name = "Last Success",
        type_ = "date",
        json_path = ".status.lastSuccessfulBackup.finishedAt",
        description = "When the newest successful backup finished"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#,
        description = "Whether backups are healthy"
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
#[serde(rename_all = "camelCase")]
pub struct BackupScheduleSpec {
    /// The DatabaseEnvironment (same namespace) to back up.
    pub environment_ref: LocalObjectReference,

    /// When to take backups: a five-field cron expression (`minute hour day-of-month month
    /// day-of-week`, e.g. `0 3 * * *`) or a macro such as `@daily`.
    #[schemars(length(max = MAX_CRON_LENGTH))]
    #[x_kube(validation = cron_rule())]
    pub schedule: String,

    /// IANA time zone the schedule is read in, e.g. `Europe/Berlin`. Default `UTC`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub time_zone: Option<String>,

    /// Where backups are written.
    pub destination: BackupDestination,

    /// Compression of the dump stream: `gzip`, `zstd` or `none`. Default `zstd`.
    #[serde(default)]
    pub compression: Compression,

    /// Which backups to keep. The newest successful backup and the newest backup that passed a
    /// restore drill are always kept. Unset: keep every backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Retention>,

    /// After uploading, read the backup back and check its size, SHA-256 and archive table of
    /// contents. Default true.
    #[serde(default = "default_true")]
    pub verify: bool,

    /// What the manifest records of each table, taken in the dump's snapshot and compared by restore
    /// drills: `checksums` (row counts and an order-independent checksum of every row's text, one
    /// sequential scan and an md5 per row) or `rowCounts` (one count per table; cheaper on very large
    /// tables). Default `checksums`.
    #[serde(default)]
    pub table_checks: TableChecks,

    /// Pause scheduled backups (a `trigger` change still takes one). Default false.
    #[serde(default)]
    pub suspend: bool,

    /// Seconds after its scheduled time within which a missed backup is still taken (e.g. after
    /// an operator restart). Unset: a missed backup is taken no matter how late.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub starting_deadline_seconds: Option<i64>,

    /// How recent a passed restore drill of this schedule's backups must be for the condition
    /// `Recoverable` to be True, e.g. `168h`. Default `168h` (7 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_DURATION_LENGTH))]
    #[x_kube(validation = duration_rule())]
    pub recoverable_within: Option<kube::core::Duration>,

    /// Change this string (any new value, e.g. a timestamp) to take a backup now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub trigger: Option<String>,

    /// Continuous WAL archiving for point-in-time recovery (PostgreSQL; an `external` environment in
    /// this release): every WAL segment is streamed into `<prefix>/wal/`, and each scheduled backup
    /// also takes a base backup. See docs/pitr.md.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal: Option<WalArchiving>,
}

/// Continuous WAL archiving.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WalArchiving {
    /// Stream the server's WAL into the destination. Default false.
    #[serde(default)]
    pub enabled: bool,
    /// The longest a written transaction waits before its WAL segment is closed and archived (the
    /// RPO the archive aims at), in whole seconds from `5s` to `60s`. Default `60s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_DURATION_LENGTH))]
    #[x_kube(validation = Rule::new("self.matches('^([5-9]|[1-5][0-9]|60)s$')").message("archiveTimeout must be whole seconds from 5s to 60s, e.g. 60s"))]
    pub archive_timeout: Option<String>,
}

impl WalArchiving {
    /// `archiveTimeout`, 60 s when unset or unreadable (the API server checked it).
    pub fn timeout(&self) -> std::time::Duration {
        self.archive_timeout
            .as_deref()
            .and_then(|d| d.parse::<kube::core::Duration>().ok())
            .map(Into::into)
            .unwrap_or(std::time::Duration::from_secs(60))
    }
}

fn default_true() -> bool {
    true
}

/// Where backups are written. Exactly one destination must be set; S3-compatible object storage is
/// the only one in this release.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[x_kube(validation = Rule::new("has(self.s3)").message("set destination.s3 (the only destination in this release)"))]
#[serde(rename_all = "camelCase")]
pub struct BackupDestination {
    /// An S3-compatible bucket (AWS S3, MinIO, Ceph RGW, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Destination>,
}

/// An S3-compatible bucket.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Destination {
    /// Bucket name, by S3's naming rules: 3-63 characters of lowercase letters, digits, dots and
    /// hyphens, starting and ending with a letter or digit, no two dots in a row, not an IP address.
    #[schemars(length(min = 3, max = 63))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9][a-z0-9.-]*[a-z0-9]$') && !self.contains('..') && !self.matches('^[0-9]+[.][0-9]+[.][0-9]+[.][0-9]+$')").message("bucket must be a valid S3 bucket name: 3-63 lowercase letters, digits, dots and hyphens, starting and ending with a letter or digit, no '..', not an IP address"))]
    pub bucket: String,
    /// Key prefix for this schedule's backups, e.g. `shop/production`. Default: `<namespace>/<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub prefix: Option<String>,
    /// Endpoint URL for non-AWS stores, e.g. `https://minio.storage:9000`. Unset: AWS S3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    #[x_kube(validation = Rule::new("self.matches('^https?://')").message("endpoint must be an http:// or https:// URL"))]
    pub endpoint: Option<String>,
    /// Region, e.g. `eu-central-1`. Default `us-east-1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Secret with the access key (keys `accessKeyId`, `secretAccessKey`, optional `sessionToken`).
    pub credentials_secret_ref: S3CredentialsSecretRef,
    /// Address buckets as `<endpoint>/<bucket>` instead of `<bucket>.<endpoint>` (needed by most
    /// MinIO and Ceph setups). Default false.
    #[serde(default)]
    pub force_path_style: bool,
}

/// A Secret with S3 credentials, with optional overrides of the key names.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3CredentialsSecretRef {
    /// Name of the Secret, in the same namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key holding the access key ID. Default `accessKeyId`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id_key: Option<String>,
    /// Key holding the secret access key. Default `secretAccessKey`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key_key: Option<String>,
    /// Key holding an optional session token. Default `sessionToken`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_token_key: Option<String>,
}

impl S3CredentialsSecretRef {
    /// The Secret key holding the access key ID.
    pub fn access_key_id_key(&self) -> &str {
        self.access_key_id_key.as_deref().unwrap_or("accessKeyId")
    }
    /// The Secret key holding the secret access key.
    pub fn secret_access_key_key(&self) -> &str {
        self.secret_access_key_key
            .as_deref()
            .unwrap_or("secretAccessKey")
    }
    /// The Secret key holding the session token (which may be absent from the Secret).
    pub fn session_token_key(&self) -> &str {
        self.session_token_key.as_deref().unwrap_or("sessionToken")
    }
}

/// Compression of the dump stream: `gzip`, `zstd` or `none`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    // gzip (widest tool support).
    Gzip,
    // Zstandard (faster and smaller).
    #[default]
    Zstd,
    // Stored as `pg_dump -Fc` wrote it (already compressed per table).
    None,
}

/// What a backup's manifest records per table: `checksums` or `rowCounts`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum TableChecks {
    // Row counts and content checksums.
    #[default]
    Checksums,
    // Row counts only.
    RowCounts,
}

/// Which backups to keep: the union of every rule below. A count of 0 disables that rule.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Retention {
    /// Keep the newest N successful backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub keep_last: Option<i32>,
    /// Keep the newest backup of each of the last N days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub daily: Option<i32>,
    /// Keep the newest backup of each of the last N weeks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub weekly: Option<i32>,
    /// Keep the newest backup of each of the last N months.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub monthly: Option<i32>,
}

/// Observed state of a BackupSchedule (kstatus conditions).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupScheduleStatus {
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Current conditions, one per type.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// Scheduled time of the most recent backup started by the schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,
    /// When the next scheduled backup is due (unset while suspended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_schedule_time: Option<Time>,
    /// The newest backup that completed and verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_backup: Option<BackupRecord>,
    /// The `spec.trigger` value a backup was last taken for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_trigger: Option<String>,
    /// The newest restore drill that passed on one of this schedule's backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_verified_restore: Option<VerifiedRestore>,
    /// The most recent backups, newest first, at most 10.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_RECENT_BACKUPS))]
    pub recent_backups: Vec<BackupRecord>,
    /// The newest check that the destination is usable (an object written, read back and deleted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_check: Option<DestinationCheck>,
    /// Continuous WAL archiving, while `spec.wal.enabled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal: Option<WalStatus>,
}

/// Where WAL archiving stands.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WalStatus {
    /// The newest segment in the archive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newest_segment: Option<String>,
    /// Every transaction committed before this time is in the archive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newest_wal_time: Option<Time>,
    /// Seconds of written WAL not yet archived (0 when the server wrote nothing since).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_seconds: Option<i64>,
    /// The oldest point a restore can reach: the end of the oldest base backup whose WAL is archived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recoverable_from: Option<Time>,
    /// When this status was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<Time>,
    /// Why archiving stopped, while it is stopped (it starts again by itself, with backoff).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
}

/// A passed check of the destination.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DestinationCheck {
    /// When the check passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked_at: Option<Time>,
    /// What was checked: a hash of the destination's settings and of its credentials Secret's
    /// version (no secret material); a change checks again.
    pub fingerprint: String,
}
impl_conditioned_status!(BackupScheduleStatus);

/// A restore drill that passed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VerifiedRestore {
    /// The RestoreDrill (same namespace).
    pub drill: String,
    /// The backup it restored.
    pub backup_id: String,
    /// When its checks finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// Its measured RTO, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rto_seconds: Option<i64>,
}

/// One backup.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupRecord {
    /// Backup ID, unique within the destination and derived from the schedule slot (a retry of the
    /// same slot reuses it).
    pub id: String,
    /// Where the backup is: `Running`, `Succeeded` or `Failed`.
    pub phase: BackupPhase,
    /// When the dump started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When the manifest was written (or the backup failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// Size of the stored artifact in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub size_bytes: Option<i64>,
    /// SHA-256 (hex) of the stored artifact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// What started it: `scheduled`, `manual` (a `trigger`) or `premigrate` (a MigrationRun).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Why the backup failed: a CamelCase reason such as `DumpFailed` or `StorageAccessDenied`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Why the backup failed, in one sentence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub message: Option<String>,
}

/// Where a backup is: `Running`, `Succeeded` or `Failed`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum BackupPhase {
    // Being written.
    #[default]
    Running,
    // Written, checksummed, verified and its manifest stored.
    Succeeded,
    // Gave up; no manifest, so it does not count as a backup.
    Failed,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::test_support::*;
    use kube::CustomResourceExt;

    const EXAMPLE: &str = r#"
apiVersion: lifeboat.dev/v1alpha1
kind: BackupSchedule
metadata: {name: shop-nightly, namespace: shop}
spec:
  environmentRef: {name: shop-production}
  schedule: "0 3 * * *"
  timeZone: Europe/Berlin
  destination:
    s3:
      bucket: backups
      prefix: shop/production
      endpoint: http://127.0.0.1:9000
      credentialsSecretRef: {name: backup-s3}
      forcePathStyle: true
  retention: {keepLast: 7, daily: 14, weekly: 8, monthly: 12}
"#;

    #[test]
    fn example_deserializes_with_defaults() {
        let schedule: BackupSchedule = serde_yaml::from_str(EXAMPLE).unwrap();
        let spec = &schedule.spec;
        assert_eq!(spec.schedule, "0 3 * * *");
        let s3 = spec.destination.s3.as_ref().unwrap();
        assert!(s3.force_path_style);
        assert_eq!(
            s3.credentials_secret_ref.secret_access_key_key(),
            "secretAccessKey"
        );
        assert_eq!(spec.compression, Compression::Zstd);
        assert!(spec.verify && !spec.suspend);
        assert_eq!(spec.retention.as_ref().unwrap().monthly, Some(12));
        assert_eq!(serde_json::to_value(Compression::None).unwrap(), "none");
    }

    #[test]
    fn crd_carries_rules_columns_and_names() {
        let crd = BackupSchedule::crd();
        assert_names(&crd, &["bsched"]);
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_columns(
            &crd,
            &[
                "Environment",
                "Schedule",
                "Suspend",
                "Last Success",
                "Ready",
                "Reason",
                "Age",
            ],
        );
        let schema = schema(&crd);
        let spec = &schema["properties"]["spec"]["properties"];
        assert_eq!(
            spec["schedule"]["x-kubernetes-validations"][0]["rule"],
            crate::api::common::cron_rule().rule
        );
        assert_eq!(
            spec["retention"]["properties"]["keepLast"]["minimum"].as_f64(),
            Some(0.0)
        );
        assert_eq!(spec["compression"]["default"], "zstd");
        assert_eq!(spec["verify"]["default"], true);
        let rules = rules(&crd);
        assert!(rules.contains(&(
            "has(self.s3)".into(),
            "set destination.s3 (the only destination in this release)".into()
        )));
        let recent = &schema["properties"]["status"]["properties"]["recentBackups"];
        assert_eq!(recent["maxItems"], MAX_RECENT_BACKUPS);
    }

    #[test]
    fn schema_is_structural_and_documented() {
        let crd = BackupSchedule::crd();
        assert_structural(&schema(&crd));
        assert_all_described(&schema(&crd));
    }
}
