//! The migration capability of an engine, in engine-neutral terms: what a run is asked
//! ([`RunOptions`]), what an earlier attempt recorded ([`Prior`]), what it reports as it goes
//! ([`RunState`], through the controller's [`Hooks`]) and how it ended ([`Outcome`]), and the
//! [`Migrate`] trait an engine implements (`engines::postgres::migrate` for PostgreSQL: ledger, lock,
//! lint, one transaction per migration). The files, the model and the plan are `domain::migrations`.

use std::{future::Future, time::Duration};

use super::{Connect, ServerCredentials};
use crate::domain::migrations::{
    Direction, LintCount, LintFinding, LintMode, LintRules, MigrationFailure, MigrationPhase,
    OnFailure, Records, Version,
    adopt::{AdoptFrom, Imported},
    source::Migration,
};

/// What the run was asked to do.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// UID of the MigrationRun, recorded in the ledger.
    pub run_uid: String,
    /// `namespace/name` of the run, shown to runs waiting for the lock.
    pub label: String,
    pub direction: Direction,
    pub target_version: Option<Version>,
    pub on_failure: OnFailure,
    pub lint: LintMode,
    /// Rules excluded, demoted or promoted for this run.
    pub lint_rules: LintRules,
    /// Whose ledger to import on a database Lifeboat has not migrated before.
    pub adopt: AdoptFrom,
    /// On such a database without another tool's ledger: the source's migrations up to this version
    /// are recorded as applied without running them.
    pub baseline_version: Option<Version>,
    /// Longest wait for the migration lock, and for a table lock within a script.
    pub lock_timeout: Duration,
    pub statement_timeout: Option<Duration>,
}

/// What an earlier attempt of this run recorded in status (after an operator restart).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Prior {
    pub from_version: Option<Version>,
    /// As status keeps them (bounded); what was applied or reverted is read from the database.
    pub applied: Records,
    pub rolled_back: Records,
    /// Set once a migration failed: the attempt was rolling back (or halting) when it stopped.
    pub failure: Option<MigrationFailure>,
    pub backup_id: Option<String>,
}

/// The run's state as status shows it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunState {
    pub from_version: Option<Version>,
    pub to_version: Option<Version>,
    /// Migrations this run applied (for `down`: reverted), bounded.
    pub applied: Records,
    /// Migrations the rollback undid, bounded.
    pub rolled_back: Records,
    /// At most [`MAX_LINT_FINDINGS`](crate::domain::migrations::MAX_LINT_FINDINGS).
    pub lint_findings: Vec<LintFinding>,
    pub lint_total: usize,
    /// Findings per rule, errors first.
    pub lint_counts: Vec<LintCount>,
    /// What was imported from another tool's ledger (or a baseline), when this run did.
    pub imported: Option<Imported>,
    pub failure: Option<MigrationFailure>,
    pub backup_id: Option<String>,
    /// What the run is doing now, in one sentence.
    pub activity: String,
    /// Steps the plan holds (0 until planned, and when nothing is pending).
    pub pending: usize,
}

/// How the run ended.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    pub phase: MigrationPhase,
    /// CamelCase reason for the condition and event.
    pub reason: &'static str,
    /// One or two sentences: what happened and what is applied now.
    pub message: String,
    pub state: RunState,
}

/// A backup could not be taken; the run fails before changing anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupFailure {
    pub reason: &'static str,
    pub message: String,
}

/// The run's link to the outside: status writes and the backup. The controller implements it; tests and
/// the benchmark use [`NoHooks`].
pub trait Hooks: Send {
    /// Records progress. `durable`: the run may not go on unless this is recorded (it is what a resumed
    /// attempt needs to know). Errors are messages.
    fn report(
        &mut self,
        state: &RunState,
        durable: bool,
    ) -> impl Future<Output = Result<(), String>> + Send;
    /// Takes a backup and waits for it, when the run requires one; `Ok(None)`: none required. Called
    /// with the lock held, after lint, before the first change.
    fn backup(&mut self) -> impl Future<Output = Result<Option<String>, BackupFailure>> + Send;
}

/// Hooks that record nothing and take no backup.
pub struct NoHooks;

impl Hooks for NoHooks {
    async fn report(&mut self, _: &RunState, _: bool) -> Result<(), String> {
        Ok(())
    }
    async fn backup(&mut self) -> Result<Option<String>, BackupFailure> {
        Ok(None)
    }
}

/// The run stopped without a result because a durable progress report failed; resume it later.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the run was interrupted: {0}")]
pub struct Interrupted(pub String);

/// The migration lock could not be taken; nothing was changed.
#[derive(Debug)]
pub enum LockRefusal<E> {
    /// Another run held it for longer than the wait allowed; `holder` names it when visible.
    Timeout {
        waited: Duration,
        holder: Option<String>,
    },
    /// The engine failed while taking it.
    Failed(E),
}

impl<E> From<E> for LockRefusal<E> {
    fn from(e: E) -> Self {
        LockRefusal::Failed(e)
    }
}

/// The message of a [`LockRefusal::Timeout`] on `database`; `then` says what did not happen
/// ("nothing was changed", "the runner was not started").
pub fn lock_timeout_message(
    database: &str,
    waited: Duration,
    holder: Option<&str>,
    then: &str,
) -> String {
    let who = holder.map(|h| format!(" ({h})")).unwrap_or_default();
    format!(
        "Another migration held the migration lock on database {database} for longer than lockTimeout ({waited:?}){who}; {then}. Start a new run when it has finished."
    )
}

/// A held migration lock on one database; released by [`MigrationLock::release`] (or when dropped,
/// by closing its session).
pub trait MigrationLock: Send {
    fn release(self) -> impl Future<Output = ()> + Send;
}

/// Migrating one database's schema: the engine's runner and its migration lock.
pub trait Migrate: Connect {
    type Lock: MigrationLock;

    /// Runs `migrations` against `database` as `opts` asks, resuming from `prior`: takes the lock,
    /// reads the ledger, plans, lints, calls `hooks` for the backup and progress, applies each step,
    /// and undoes what it applied on failure when `opts` says so. `Err` only when a durable progress
    /// report failed (resume later); every other end is an [`Outcome`].
    fn migrate<H: Hooks>(
        &self,
        creds: &ServerCredentials,
        database: &str,
        migrations: &[Migration],
        opts: &RunOptions,
        prior: Prior,
        hooks: &mut H,
    ) -> impl Future<Output = Result<Outcome, Interrupted>> + Send;

    /// Takes the migration lock on `database` (what [`Migrate::migrate`] takes), waiting at most
    /// `timeout`; `label` names the holder to runs that wait. For work done under the lock by
    /// something else (a team's own migration tool in a Job).
    fn lock_migrations(
        &self,
        creds: &ServerCredentials,
        database: &str,
        label: &str,
        timeout: Duration,
    ) -> impl Future<Output = Result<Self::Lock, LockRefusal<Self::Error>>> + Send;

    /// The names of the lint rules the engine's linter knows, as `spec.lint.rules` takes them.
    fn lint_rule_names(&self) -> Vec<String>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_timeout_names_the_database_the_wait_the_holder_and_what_did_not_happen() {
        let m = lock_timeout_message(
            "shop",
            Duration::from_millis(1500),
            Some("held by MigrationRun prod/add-index (server pid 42)"),
            "nothing was changed",
        );
        assert_eq!(
            m,
            "Another migration held the migration lock on database shop for longer than lockTimeout (1.5s) (held by MigrationRun prod/add-index (server pid 42)); nothing was changed. Start a new run when it has finished."
        );
        let m = lock_timeout_message(
            "shop",
            Duration::from_secs(1),
            None,
            "the runner was not started",
        );
        assert!(
            m.ends_with("(1s); the runner was not started. Start a new run when it has finished."),
            "{m}"
        );
    }
}
