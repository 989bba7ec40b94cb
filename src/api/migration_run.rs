//! `MigrationRun`: one attempt to move a schema, with a way back.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema, core::Duration};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

// The spec's enums, its lint rules and the status's records are the runner's own terms
// (`domain::migrations`), with the serde and schema attributes the CRD needs.
pub use crate::domain::migrations::{
    Direction, LINT_RULE_NAMES, LintFinding, LintMode, LintRules, MAX_LINT_FINDINGS,
    MigrationFailure, MigrationPhase, MigrationRecord, OnFailure, Severity as LintSeverity,
    Version, adopt::AdoptFrom,
};

use super::common::{
    ConfigMapSource, LocalObjectReference, MAX_DURATION_LENGTH, duration_rule,
    impl_conditioned_status,
};

/// Message of the CEL rule that makes a MigrationRun's spec immutable.
pub const IMMUTABLE_SPEC_MESSAGE: &str = "MigrationRun spec is immutable; create a new MigrationRun (use generateName) for a new attempt";

/// One attempt to migrate a DatabaseEnvironment's schema up or down: lint, optional backup,
/// advisory lock, apply each migration in its own transaction, and roll back what it applied if a
/// step fails. The spec is immutable: a new attempt is a new object.
// Several `printcolumn(...)` entries share `type_ = "string"`, which clippy takes for repeats.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "lifeboat.dev",
    version = "v1alpha1",
    kind = "MigrationRun",
    namespaced,
    status = "MigrationRunStatus",
    derive = "PartialEq",
    shortname = "mrun",
    shortname = "migrun",
    category = "lifeboat",
    selectable = ".spec.environmentRef.name",
    doc = "One attempt to migrate a DatabaseEnvironment's schema, with rollback on failure. Immutable.",
    printcolumn(
        name = "Environment",
        type_ = "string",
        json_path = ".spec.environmentRef.name",
        description = "The DatabaseEnvironment migrated"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Where the run is"
    ),
    printcolumn(
        name = "From",
        type_ = "string",
        json_path = ".status.fromVersion",
        description = "Version before"
    ),
    printcolumn(
        name = "To",
        type_ = "string",
        json_path = ".status.toVersion",
        description = "Version after"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#,
        description = "Whether the run succeeded"
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
#[x_kube(validation = Rule::new("self == oldSelf").message(IMMUTABLE_SPEC_MESSAGE))]
#[x_kube(validation = Rule::new("!has(self.runner) || (self.direction == 'up' && !has(self.targetVersion) && !has(self.baselineVersion) && !has(self.lintRules) && !has(self.adoptFrom))").message("spec.runner runs your tool's own migrate command: direction down, targetVersion, baselineVersion, lintRules and adoptFrom belong to Lifeboat's own runner; remove them or remove spec.runner"))]
#[serde(rename_all = "camelCase")]
pub struct MigrationRunSpec {
    /// The DatabaseEnvironment (same namespace) whose database is migrated.
    pub environment_ref: LocalObjectReference,

    /// Where the migration files come from. File names are `<version>_<name>.up.sql` /
    /// `<version>_<name>.down.sql` (sqlx, golang-migrate, diesel; version 0 included),
    /// `<version>_<name>.sql` with dbmate's `-- migrate:up` / `-- migrate:down` sections, or
    /// Flyway's `V<version>__<name>.sql` with an optional `U<version>__<name>.sql` undo. A `-- lifeboat:no-transaction` line runs a
    /// file outside a transaction (e.g. for `CREATE INDEX CONCURRENTLY`).
    pub source: ConfigMapSource,

    /// Version to end at. Unset: `up` applies every pending migration, `down` reverts only the
    /// newest applied one. With `down`, migrations newer than this version are reverted and this
    /// version stays applied. A whole number (`20250101120000`) or a Flyway dotted version as a
    /// string (`"1.2.3"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::domain::version::spec_schema")]
    pub target_version: Option<Version>,

    /// `up` applies pending migrations; `down` reverts applied ones with their down scripts.
    /// Default `up`.
    #[serde(default)]
    pub direction: Direction,

    /// How lint findings (squawk rules) are treated: `enforce` fails the run before anything is
    /// applied, `warn` records them in status and continues, `off` skips lint. Default `enforce`.
    #[serde(default)]
    pub lint: LintMode,

    /// Changes to the lint rule set for this run, by squawk rule name (e.g.
    /// `prefer-robust-stmts`). By default rules about locks and data safety are errors (they fail a
    /// run under `enforce`) and style rules (`prefer-bigint-over-int`, `prefer-text-field`,
    /// `prefer-timestamp-tz`, `prefer-identity`, …) are warnings. A single statement can also be
    /// excused with squawk's `-- squawk-ignore <rule>` comment above it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lint_rules: Option<LintRules>,

    /// On a database Lifeboat has not migrated before (no `lifeboat_schema_migrations` table), whose
    /// ledger says what is applied already: `auto` (default) imports the one other tool's ledger found
    /// in schema `public` — sqlx `_sqlx_migrations`, golang-migrate or dbmate `schema_migrations`,
    /// diesel `__diesel_schema_migrations`, Flyway `flyway_schema_history` — so the history is not run
    /// again; `none` never imports; a tool's name imports that tool's (which must exist). A failed
    /// migration recorded there stops the run with that tool's words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adopt_from: Option<AdoptFrom>,

    /// For a database built by hand: when Lifeboat's ledger is empty and no other tool's ledger is
    /// imported, the source's migrations up to and including this version are recorded as applied
    /// without running them; later ones are applied. A whole number or a dotted version as a string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::domain::version::spec_schema")]
    pub baseline_version: Option<Version>,

    /// What to do when a migration fails: `rollback` undoes what this run applied, in reverse;
    /// `halt` stops where it failed and leaves the applied migrations in place. Default `rollback`.
    #[serde(default)]
    pub on_failure: OnFailure,

    /// How long to wait for the migration advisory lock held by another run. Default `30s`.
    #[serde(default = "default_lock_timeout")]
    #[schemars(length(max = MAX_DURATION_LENGTH))]
    #[x_kube(validation = duration_rule())]
    pub lock_timeout: Duration,

    /// Longest time a single statement may run (PostgreSQL `statement_timeout`). Unset: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_DURATION_LENGTH))]
    #[x_kube(validation = duration_rule())]
    pub statement_timeout: Option<Duration>,

    /// Take a backup of the database before applying anything. Unset: true for `production`
    /// environments, false otherwise; `false` on a production environment fails the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_before_migrate: Option<bool>,

    /// Seconds after the run finishes before the MigrationRun deletes itself. Unset: kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub ttl_seconds_after_finished: Option<i32>,

    /// Run your own migration tool's image (Flyway, Liquibase, Alembic, Prisma, …) instead of
    /// Lifeboat's runner, as a Job in this namespace. Lifeboat holds the migration lock while it runs
    /// and takes the backup first where one is required; the container gets the source's files under
    /// `/migrations` and the connection as `DATABASE_URL`, `JDBC_URL` and libpq's `PGHOST`, `PGPORT`,
    /// `PGDATABASE`, `PGUSER`, `PGPASSWORD`, `PGSSLMODE`. Exit status 0 is `Succeeded`; anything else
    /// `Failed`, with the exit code and the log's last lines (credentials masked) in the message. The
    /// tool's own semantics apply: Lifeboat does not lint, record a ledger or roll back for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner: Option<ContainerRunner>,
}

/// A migration tool run as a container (see `MigrationRunSpec.runner`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerRunner {
    /// The tool's image, e.g. `flyway/flyway:11` or your own.
    #[schemars(length(min = 1, max = 512))]
    pub image: String,
    /// The container's command (its entrypoint); unset: the image's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub command: Vec<String>,
    /// Arguments, e.g. `["-locations=filesystem:/migrations", "migrate"]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub args: Vec<String>,
    /// More environment variables (not secrets: the connection is injected).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub env: Vec<RunnerEnv>,
    /// Longest time the container may run. Default `30m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_DURATION_LENGTH))]
    #[x_kube(validation = duration_rule())]
    pub timeout: Option<Duration>,
}

/// One environment variable of a runner container.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct RunnerEnv {
    /// The variable's name.
    #[schemars(
        length(min = 1, max = 256),
        regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$")
    )]
    pub name: String,
    /// Its value.
    #[serde(default)]
    #[schemars(length(max = 32768))]
    pub value: String,
}

fn default_lock_timeout() -> Duration {
    std::time::Duration::from_secs(30).into()
}

/// Observed state of a MigrationRun (kstatus conditions plus a phase for people and CI).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct MigrationRunStatus {
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Current conditions, one per type.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// Where the run is: `Pending`, `Running`, `Succeeded`, `Failed` or `RolledBack`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<MigrationPhase>,
    /// Newest applied version when the run started (unset: no migration had been applied). Versions
    /// in status are strings (`"20250101120000"`, `"1.2.3"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_version: Option<Version>,
    /// Newest applied version when the run ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_version: Option<Version>,
    /// Migrations this run applied (for `down`: reverted), in order: all of them up to 20, else the
    /// first 10 and the last 10 (`appliedCount` says how many in all; the ledger table
    /// `lifeboat_schema_migrations` is the full record).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub applied: Vec<MigrationRecord>,
    /// How many migrations this run applied (for `down`: reverted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_count: Option<i64>,
    /// Migrations undone by the rollback after a failure, in the order they were undone; like
    /// `applied`, at most the first 10 and the last 10.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub rolled_back: Vec<MigrationRecord>,
    /// How many migrations the rollback undid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back_count: Option<i64>,
    /// Lint findings, at most 50, errors first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lint_findings: Vec<LintFinding>,
    /// How many findings each rule had (all of them, listed or not), errors first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lint_counts: Vec<LintCount>,
    /// What this run recorded as applied without running it: another tool's ledger, or the baseline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imported: Option<ImportedLedger>,
    /// What failed, when the run failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<MigrationFailure>,
    /// ID of the backup taken before migrating, when one was taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_id: Option<String>,
    /// When the run started working on the database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When the run reached its final phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
}
impl_conditioned_status!(MigrationRunStatus);

/// Migrations a run recorded as applied from another tool's ledger (or a baseline).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImportedLedger {
    /// `sqlx`, `golang-migrate`, `dbmate`, `diesel`, `Flyway`, or `baseline`.
    pub from: String,
    /// The table read (unset for a baseline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// How many migrations were recorded.
    pub count: i64,
    /// The newest of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newest_version: Option<Version>,
}

/// How many findings one lint rule had.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LintCount {
    /// The rule.
    pub rule: String,
    /// `Error` or `Warning`.
    pub severity: LintSeverity,
    /// Findings of this rule in the run's migrations.
    pub count: i64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::test_support::*;
    use kube::CustomResourceExt;

    const EXAMPLE: &str = r#"
apiVersion: lifeboat.dev/v1alpha1
kind: MigrationRun
metadata: {generateName: shop-pr-1234-, namespace: shop}
spec:
  environmentRef: {name: pr-1234}
  source:
    configMapSelector:
      matchLabels: {app: shop, lifeboat.dev/migrations: "true"}
  targetVersion: 20250101120000
  lint: warn
  statementTimeout: 5m
  ttlSecondsAfterFinished: 3600
"#;

    #[test]
    fn example_deserializes_with_defaults() {
        let run: MigrationRun = serde_yaml::from_str(EXAMPLE).unwrap();
        let spec = &run.spec;
        assert_eq!(spec.environment_ref.name, "pr-1234");
        assert!(
            spec.source.config_map_names.is_empty() && spec.source.config_map_selector.is_some()
        );
        assert_eq!(
            spec.target_version.as_ref().and_then(Version::as_whole),
            Some(20_250_101_120_000)
        );
        assert_eq!(
            (spec.direction, spec.lint, spec.on_failure),
            (Direction::Up, LintMode::Warn, OnFailure::Rollback)
        );
        assert_eq!(spec.lock_timeout, std::time::Duration::from_secs(30));
        assert_eq!(
            spec.statement_timeout.unwrap(),
            std::time::Duration::from_secs(300)
        );
        assert_eq!(spec.backup_before_migrate, None);
    }

    #[test]
    fn status_round_trips_with_phase_strings() {
        let status = MigrationRunStatus {
            phase: Some(MigrationPhase::RolledBack),
            applied: vec![MigrationRecord {
                version: Version::whole(2).unwrap(),
                name: "add_orders".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json["phase"], "RolledBack");
        assert_eq!(json["applied"][0]["durationMs"], 0);
        assert!(json.get("conditions").is_none());
        assert_eq!(
            serde_json::from_value::<MigrationRunStatus>(json).unwrap(),
            status
        );
        assert!(MigrationPhase::RolledBack.is_finished() && !MigrationPhase::Running.is_finished());
    }

    #[test]
    fn crd_carries_rules_columns_and_names() {
        let crd = MigrationRun::crd();
        assert_names(&crd, &["mrun", "migrun"]);
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_columns(
            &crd,
            &[
                "Environment",
                "Phase",
                "From",
                "To",
                "Ready",
                "Reason",
                "Age",
            ],
        );
        let schema = schema(&crd);
        let spec = &schema["properties"]["spec"];
        assert_eq!(
            spec["x-kubernetes-validations"][0]["rule"],
            "self == oldSelf"
        );
        assert_eq!(
            spec["x-kubernetes-validations"][0]["message"],
            IMMUTABLE_SPEC_MESSAGE
        );
        assert_eq!(spec["properties"]["lint"]["default"], "enforce");
        assert_eq!(spec["properties"]["onFailure"]["default"], "rollback");
        assert_eq!(spec["properties"]["lockTimeout"]["default"], "30s");
        let rules = rules(&crd);
        assert!(
            rules.iter().any(|(r, _)| r.contains("configMapSelector")),
            "source one-of rule"
        );
        assert!(
            rules
                .iter()
                .filter(|(r, _)| r.contains("self.matches("))
                .count()
                >= 2,
            "duration rules"
        );
        assert_eq!(
            schema["properties"]["status"]["properties"]["phase"]["enum"],
            // kube lists `null` in the enum of an optional enum (with `nullable: true`).
            serde_json::json!([
                "Pending",
                "Running",
                "Succeeded",
                "Failed",
                "RolledBack",
                null
            ])
        );
    }

    #[test]
    fn schema_is_structural_and_documented() {
        let crd = MigrationRun::crd();
        assert_structural(&schema(&crd));
        assert_all_described(&schema(&crd));
    }
}
