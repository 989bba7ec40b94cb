//! What the runner is asked and what it reports, in its own terms: no Kubernetes type. The MigrationRun
//! CRD (`api::migration_run`) takes the enums, the lint rules and the records as they are, with the
//! serde and schema attributes its wire format needs; the MigrationRun controller translates only what
//! differs (counts as `i64`, an import as `ImportedLedger`: `controllers/migration_run/convert.rs`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::domain::version::Version;

/// Which way the schema moves: `up` or `down`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    // Apply pending migrations.
    #[default]
    Up,
    // Revert applied migrations.
    Down,
}

/// How lint findings are treated: `enforce`, `warn` or `off`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LintMode {
    // A finding fails the run before anything is applied.
    #[default]
    Enforce,
    // Findings are recorded; the run continues.
    Warn,
    // No lint.
    Off,
}

/// What a failed run does: `rollback` or `halt`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    // Undo what this run applied, newest first.
    #[default]
    Rollback,
    // Stop and leave applied migrations in place.
    Halt,
}

/// Where a run is: `Pending`, `Running`, `Succeeded`, `Failed` or `RolledBack`. The last three are
/// final; a run ends in exactly one of them.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum MigrationPhase {
    // Accepted, not started (waiting for the environment, the lock or the backup).
    #[default]
    Pending,
    // Applying migrations.
    Running,
    // Every migration applied; the schema is at `toVersion`.
    Succeeded,
    // Stopped on an error; migrations applied before it remain (onFailure `halt`, or a failed rollback).
    Failed,
    // Failed, and everything this run applied was undone; the schema is back at `fromVersion`.
    RolledBack,
}

impl MigrationPhase {
    /// Whether the run has ended.
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::RolledBack)
    }
}

/// One row of the ledger, the table of applied migrations (the engine keeps it:
/// `lifeboat_schema_migrations` in PostgreSQL).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerRow {
    pub version: Version,
    pub name: String,
    /// SHA-256 (hex) of the up script when it was applied.
    pub checksum: String,
    pub execution_ms: i64,
    /// UID of the MigrationRun that applied it.
    pub run_uid: String,
    /// False while (or if) a no-transaction migration has not finished.
    pub complete: bool,
}

/// One migration applied or undone.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MigrationRecord {
    /// Migration version.
    pub version: Version,
    /// Migration name (the file name without version and suffix).
    pub name: String,
    /// SHA-256 (hex) of the up script, as recorded in the ledger.
    pub checksum: String,
    /// How long the script took, in milliseconds.
    pub duration_ms: i64,
}

/// One lint finding.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LintFinding {
    /// File the finding is in.
    pub file: String,
    /// 1-based line of the offending statement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<i32>,
    /// Lint rule that fired, e.g. `require-concurrent-index-creation`.
    pub rule: String,
    /// What is wrong and how to fix it.
    pub message: String,
    /// `Error` (a rule about locks or data safety: fails the run under `enforce`) or `Warning`.
    #[serde(default)]
    pub severity: Severity,
}

/// Whether a finding fails a run under `lint: enforce`: `Error` or `Warning`.
#[derive(
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    JsonSchema,
)]
pub enum Severity {
    // Fails the run under `lint: enforce`.
    #[default]
    Error,
    // Recorded; never fails the run.
    Warning,
}

/// Per-run changes to the lint rule set. A rule may be named in only one of the three lists.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "self.exclude.all(r, !(r in self.warn) && !(r in self.error)) && self.warn.all(r, !(r in self.error))",
    "message": "lintRules: a rule may be named in only one of exclude, warn and error",
}]))]
pub struct LintRules {
    /// Rules not checked at all.
    #[serde(default)]
    #[schemars(schema_with = "lint_rule_list")]
    pub exclude: Vec<String>,
    /// Rules whose findings are warnings: recorded, never failing the run. Naming one of squawk's
    /// opt-in rules here turns it on.
    #[serde(default)]
    #[schemars(schema_with = "lint_rule_list")]
    pub warn: Vec<String>,
    /// Rules whose findings are errors: they fail the run under `lint: enforce`. Naming one of
    /// squawk's opt-in rules (e.g. `ban-drop-index`) here turns it on.
    #[serde(default)]
    #[schemars(schema_with = "lint_rule_list")]
    pub error: Vec<String>,
}

fn lint_rule_list(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "maxItems": LINT_RULE_NAMES.len(),
        "items": {"type": "string", "enum": LINT_RULE_NAMES},
    })
}

/// Rule names squawk knows, as [`LintRules`] may name them (the engine's
/// `Migrate::lint_rule_names`; a test keeps the two lists equal).
pub const LINT_RULE_NAMES: &[&str] = &[
    "adding-field-with-default",
    "adding-foreign-key-constraint",
    "adding-not-nullable-field",
    "adding-required-field",
    "adding-serial-primary-key-field",
    "ban-add-column",
    "ban-add-composite-attribute",
    "ban-add-enum-value",
    "ban-alter-database-options",
    "ban-alter-domain-with-add-constraint",
    "ban-alter-extension",
    "ban-alter-function-options",
    "ban-alter-generated-expression",
    "ban-alter-identity",
    "ban-alter-policy-condition",
    "ban-alter-policy-roles",
    "ban-alter-role-options",
    "ban-alter-row-level-security",
    "ban-alter-sequence-values",
    "ban-alter-system-options",
    "ban-alter-view-options",
    "ban-char-field",
    "ban-concurrent-index-creation-in-transaction",
    "ban-create-domain-with-constraint",
    "ban-create-policy",
    "ban-detach-inheritance",
    "ban-disable-trigger",
    "ban-drop-column",
    "ban-drop-constraint",
    "ban-drop-database",
    "ban-drop-default",
    "ban-drop-domain",
    "ban-drop-extension",
    "ban-drop-function",
    "ban-drop-generated-expression",
    "ban-drop-index",
    "ban-drop-not-null",
    "ban-drop-policy",
    "ban-drop-schema",
    "ban-drop-sequence",
    "ban-drop-table",
    "ban-drop-trigger",
    "ban-drop-type",
    "ban-drop-view",
    "ban-duplicate-column-assignments",
    "ban-new-write-restriction",
    "ban-replace-view-function",
    "ban-replica-identity",
    "ban-revoke",
    "ban-set-default",
    "ban-set-schema",
    "ban-truncate-cascade",
    "ban-uncommitted-transaction",
    "changing-column-type",
    "constraint-missing-not-valid",
    "disallowed-unique-constraint",
    "identifier-too-long",
    "prefer-bigint-over-int",
    "prefer-bigint-over-smallint",
    "prefer-identity",
    "prefer-repack",
    "prefer-robust-stmts",
    "prefer-text-field",
    "prefer-timestamp-tz",
    "renaming-column",
    "renaming-object",
    "renaming-table",
    "require-concurrent-index-creation",
    "require-concurrent-index-deletion",
    "require-concurrent-partition-detach",
    "require-concurrent-reindex",
    "require-enum-value-ordering",
    "require-lock-timeout",
    "require-statement-timeout",
    "require-table-schema",
    "transaction-nesting",
];

/// How many findings one rule had.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LintCount {
    pub rule: String,
    pub severity: Severity,
    pub count: usize,
}

/// Where and why a migration failed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MigrationFailure {
    /// Version of the failing migration, if the failure was in one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<Version>,
    /// File of the failing migration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// 1-based index of the failing statement within the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statement: Option<i32>,
    /// 1-based line in the file where the failing statement starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<i32>,
    /// 1-based character position of the error within the statement, as the server reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<i32>,
    /// SQLSTATE error code, e.g. `42P01`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql_state: Option<String>,
    /// The error, in one sentence.
    pub error: String,
}

/// Most lint findings a run keeps, and status lists; the rest are counted in the `Ready` condition's
/// message.
pub const MAX_LINT_FINDINGS: usize = 50;

/// Records kept at each end of a [`Records`] list.
pub const RECORDS_KEPT: usize = 10;

/// A run's list of migrations applied (or undone), kept bounded: the first and the last
/// [`RECORDS_KEPT`], and how many in all. A run of 10,000 migrations reports 20 records and a count;
/// the ledger table is the full record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Records {
    head: Vec<MigrationRecord>,
    tail: std::collections::VecDeque<MigrationRecord>,
    count: usize,
}

impl Records {
    /// A list known only as its kept records and its count (as status keeps it).
    pub fn from_parts(listed: Vec<MigrationRecord>, count: usize) -> Self {
        let mut r = Self::default();
        let listed_len = listed.len();
        for record in listed {
            r.push(record);
        }
        r.count = count.max(listed_len);
        r
    }

    pub fn push(&mut self, record: MigrationRecord) {
        self.count += 1;
        if self.head.len() < RECORDS_KEPT {
            self.head.push(record);
            return;
        }
        self.tail.push_back(record);
        if self.tail.len() > RECORDS_KEPT {
            self.tail.pop_front();
        }
    }

    /// How many records in all (kept or not).
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The kept records, in order: the first ones, then the last ones.
    pub fn listed(&self) -> Vec<MigrationRecord> {
        self.head.iter().chain(self.tail.iter()).cloned().collect()
    }

    /// For messages: `1_a, 2_b, 3_c, … 94 more …, 98_x, 99_y, 100_z`, or `none`.
    pub fn names(&self) -> String {
        const SHOWN: usize = 3;
        let name = |r: &MigrationRecord| format!("{}_{}", r.version, r.name);
        let listed = self.listed();
        if listed.is_empty() {
            return "none".into();
        }
        if self.count <= 2 * SHOWN {
            return listed.iter().map(name).collect::<Vec<_>>().join(", ");
        }
        let first: Vec<String> = listed.iter().take(SHOWN).map(name).collect();
        let last: Vec<String> = listed[listed.len() - SHOWN..].iter().map(name).collect();
        format!(
            "{}, … {} more …, {}",
            first.join(", "),
            self.count - 2 * SHOWN,
            last.join(", ")
        )
    }
}

impl FromIterator<MigrationRecord> for Records {
    fn from_iter<I: IntoIterator<Item = MigrationRecord>>(iter: I) -> Self {
        let mut r = Self::default();
        for record in iter {
            r.push(record);
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(v: i64) -> MigrationRecord {
        MigrationRecord {
            version: Version::whole(v).unwrap(),
            name: format!("m{v}"),
            ..Default::default()
        }
    }

    #[test]
    fn records_keep_both_ends_and_count_all() {
        let r: Records = (1..=10_000).map(rec).collect();
        assert_eq!(r.len(), 10_000);
        let listed = r.listed();
        assert_eq!(listed.len(), 2 * RECORDS_KEPT);
        assert_eq!(listed[0].version.as_whole(), Some(1));
        assert_eq!(listed[RECORDS_KEPT - 1].version.as_whole(), Some(10));
        assert_eq!(listed[RECORDS_KEPT].version.as_whole(), Some(9_991));
        assert_eq!(listed.last().unwrap().version.as_whole(), Some(10_000));
        assert_eq!(
            r.names(),
            "1_m1, 2_m2, 3_m3, … 9994 more …, 9998_m9998, 9999_m9999, 10000_m10000"
        );
        let again = Records::from_parts(listed, r.len());
        assert_eq!(again, r, "what status keeps rebuilds the same list");
    }

    #[test]
    fn short_lists_are_whole() {
        let r: Records = (1..=4).map(rec).collect();
        assert_eq!(r.listed().len(), 4);
        assert_eq!(r.names(), "1_m1, 2_m2, 3_m3, 4_m4");
        assert_eq!(Records::default().names(), "none");
        assert_eq!(Records::from_parts(r.listed(), 0).len(), 4);
    }
}
