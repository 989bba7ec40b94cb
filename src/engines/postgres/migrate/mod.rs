//! Running schema migrations against PostgreSQL, shared by MigrationRun and DatabaseEnvironment's
//! `migrations`: splitting scripts with squawk's parser ([`statements`]), squawk lint ([`lint`]), the
//! ledger table ([`ledger`]), importing another tool's ledger ([`adopt`]), the advisory lock
//! ([`lock`]) and doing it ([`runner`], [`execute`]): `engines::Migrate` for PostgreSQL. The files,
//! the model and the plan are engine-free (`domain::migrations`), and so are the run's terms
//! (`engines::migrate`, re-exported here).

pub mod adopt;
pub mod execute;
pub mod ledger;
pub mod lint;
pub mod lock;
pub mod runner;
pub mod statements;

pub use runner::{
    BackupFailure, Hooks, Interrupted, NoHooks, Outcome, Prior, RunOptions, RunState, run,
};
