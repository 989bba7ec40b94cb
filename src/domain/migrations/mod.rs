//! Schema migrations without an engine: the migration files and their formats ([`source`]), what a
//! run is asked and reports ([`model`]) and what it will do ([`plan`]). Running them is the engine's
//! (`engines::postgres::migrate`).

pub mod model;
pub mod plan;
pub mod source;

pub use model::{
    Direction, LedgerRow, LintCount, LintFinding, LintMode, LintRules, MAX_LINT_FINDINGS,
    MigrationFailure, MigrationPhase, MigrationRecord, OnFailure, Records, Severity, Version,
};
pub use source::{Migration, RawFile, SourceErrors};
