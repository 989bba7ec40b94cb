//! What the runner is asked and what it reports, in its own terms: no Kubernetes type. The MigrationRun
//! and DatabaseEnvironment controllers translate their specs into these and these into their status
//! (`controllers/migration_run/convert.rs`).

/// Which way the schema moves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Apply pending migrations.
    #[default]
    Up,
    /// Revert applied migrations.
    Down,
}

/// How lint findings are treated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum LintMode {
    /// A finding fails the run before anything is applied.
    #[default]
    Enforce,
    /// Findings are recorded; the run continues.
    Warn,
    /// No lint.
    Off,
}

/// What a failed run does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum OnFailure {
    /// Undo what this run applied, newest first.
    #[default]
    Rollback,
    /// Stop and leave applied migrations in place.
    Halt,
}

/// Where a run ended (or is).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum MigrationPhase {
    #[default]
    Pending,
    Running,
    /// Every migration applied.
    Succeeded,
    /// Stopped on an error; migrations applied before it remain.
    Failed,
    /// Failed, and everything this run applied was undone.
    RolledBack,
}

/// One migration applied or undone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MigrationRecord {
    pub version: i64,
    /// The file name without version and suffix.
    pub name: String,
    /// SHA-256 (hex) of the up script, as recorded in the ledger.
    pub checksum: String,
    pub duration_ms: i64,
}

/// One lint finding.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LintFinding {
    pub file: String,
    /// 1-based line of the offending statement.
    pub line: Option<i32>,
    /// Rule that fired, e.g. `require-concurrent-index-creation`.
    pub rule: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

/// Where and why a migration failed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MigrationFailure {
    pub version: Option<i64>,
    pub file: Option<String>,
    /// 1-based index of the failing statement within the file.
    pub statement: Option<i32>,
    /// 1-based line in the file where the failing statement starts.
    pub line: Option<i32>,
    /// 1-based character position of the error within the statement, as the server reports it.
    pub position: Option<i32>,
    /// SQLSTATE error code, e.g. `42P01`.
    pub sql_state: Option<String>,
    /// The error, in one sentence.
    pub error: String,
}

/// Most lint findings a run keeps (the rest are counted in its message).
pub const MAX_LINT_FINDINGS: usize = 50;
