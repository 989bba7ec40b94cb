//! Schema migrations for PostgreSQL, shared by MigrationRun and DatabaseEnvironment's `migrations`:
//! squawk lint ([`lint`]), the ledger table ([`ledger`]), the advisory lock ([`lock`]) and doing it
//! ([`runner`], [`execute`]). The files, the model and the plan are engine-free, in
//! `domain::migrations`; they are re-exported here until the rest moves to the engine.

pub mod adopt;
pub mod execute;
pub mod ledger;
pub mod lint;
pub mod lock;
pub mod runner;
pub mod statements;

pub use crate::domain::migrations::{model, plan, source};

pub use model::{
    Direction, LintCount, LintFinding, LintMode, LintRules, MAX_LINT_FINDINGS, MigrationFailure,
    MigrationPhase, MigrationRecord, OnFailure, Records, Severity, Version,
};
pub use runner::{
    BackupFailure, Hooks, Interrupted, NoHooks, Outcome, Prior, RunOptions, RunState, run,
};
pub use source::{Migration, RawFile, SourceErrors};
