//! Schema migrations without an engine: the migration files and their formats ([`source`]), what a
//! run is asked and reports ([`model`]), what it will do ([`plan`]) and whose ledger it may adopt
//! ([`adopt`]). Running them is the engine's (`engines::Migrate`).

pub mod adopt;
pub mod model;
pub mod plan;
pub mod source;

pub use model::{
    Direction, LINT_RULE_NAMES, LedgerRow, LintCount, LintFinding, LintMode, LintRules,
    MAX_LINT_FINDINGS, MigrationFailure, MigrationPhase, MigrationRecord, OnFailure, Records,
    Severity, Version,
};
pub use source::{Migration, RawFile, SourceErrors};
