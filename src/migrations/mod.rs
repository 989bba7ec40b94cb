//! Schema migrations for PostgreSQL, shared by MigrationRun and DatabaseEnvironment's `migrations`:
//! files from ConfigMaps ([`source`]), squawk lint ([`lint`]), the ledger table ([`ledger`]), the
//! advisory lock ([`lock`]), what to do ([`plan`], pure) and doing it ([`runner`], [`execute`]).

pub mod adopt;
pub mod execute;
pub mod ledger;
pub mod lint;
pub mod lock;
pub mod model;
pub mod plan;
pub mod runner;
pub mod source;
pub mod statements;

pub use model::{
    Direction, LintCount, LintFinding, LintMode, LintRules, MAX_LINT_FINDINGS, MigrationFailure,
    MigrationPhase, MigrationRecord, OnFailure, Records, Severity, Version,
};
pub use runner::{
    BackupFailure, Hooks, Interrupted, NoHooks, Outcome, Prior, RunOptions, RunState, run,
};
pub use source::{Migration, RawFile, SourceErrors};
