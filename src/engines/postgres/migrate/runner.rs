//! One MigrationRun against PostgreSQL: take the lock, read the ledger, plan, lint, back up, apply each
//! step, and on failure undo what this run applied. Every exit path releases the lock, and the result is
//! exactly one of Succeeded, Failed, RolledBack with a message stating what is applied.

use std::{
    collections::BTreeSet,
    ops::ControlFlow,
    time::{Duration, Instant},
};

use sqlx::{Connection, PgConnection};

use super::{
    adopt,
    execute::{self, FailureKind, StepFailure, Timeouts},
    ledger, lint,
    lock::{self, LockError},
    statements,
};
use crate::domain::migrations::{
    model::{
        Direction, LedgerRow, LintMode, MAX_LINT_FINDINGS, MigrationFailure, MigrationPhase,
        MigrationRecord, OnFailure, Records, Severity, Version,
    },
    plan::{self, Action, PlanError, Step},
    source::Migration,
};
pub use crate::engines::migrate::{
    BackupFailure, Hooks, Interrupted, NoHooks, Outcome, Prior, RunOptions, RunState,
};
use crate::engines::migrate::{LockRefusal, lock_timeout_message};
use crate::engines::{
    ServerCredentials,
    postgres::{self, PgError},
};

/// A migrations' connection opened alongside the lock's is opened again when taking the lock took longer
/// than this (it sat idle meanwhile).
const IDLE_REOPEN: Duration = Duration::from_secs(1);

/// Reason for a migration that failed, from its SQLSTATE.
pub fn failure_reason(f: &MigrationFailure) -> &'static str {
    match f.sql_state.as_deref() {
        Some("57014") => "StatementTimeout",
        Some("55P03") => "TableLockTimeout",
        _ => "MigrationFailed",
    }
}

/// Runs the migrations of `migrations` against `database` as `opts` asks.
pub async fn run<H: Hooks>(
    creds: &ServerCredentials,
    database: &str,
    migrations: &[Migration],
    opts: &RunOptions,
    prior: Prior,
    hooks: &mut H,
) -> Result<Outcome, Interrupted> {
    let mut run = Run::new(opts, migrations, &prior);
    let (lock, conn) = lock_and_connect(creds, database, opts).await;
    let mut lock = match lock {
        Ok(lock) => lock,
        Err(e) => {
            if let Ok(conn) = conn {
                let _ = conn.close().await;
            }
            return Ok(run.lock_failed(e, database));
        }
    };
    let result = match conn {
        Err(e) => Ok(run.pg_failed(e)),
        Ok(mut conn) => {
            let result = run.drive(&mut conn, &mut lock, prior, hooks).await;
            let _ = conn.close().await;
            result
        }
    };
    lock.release().await;
    result
}

/// Takes the migration lock and opens the migrations' connection.
///
/// The migrations' connection is opened while the lock's is (a new TLS connection costs several round
/// trips); nothing runs on it before the lock is held. When the lock was not free at once, the
/// connection sat idle through the wait (where a proxy or idle_session_timeout may have closed it): it
/// is opened again then.
async fn lock_and_connect(
    creds: &ServerCredentials,
    database: &str,
    opts: &RunOptions,
) -> (
    Result<lock::MigrationLock, LockError>,
    Result<PgConnection, PgError>,
) {
    let connect = || async {
        let mut conn = postgres::connect(creds, database).await?;
        match lock::identify(&mut conn, &opts.label).await {
            Ok(()) => Ok(conn),
            Err(e) => {
                let _ = conn.close().await;
                Err(e)
            }
        }
    };
    let started = Instant::now();
    let (lock, mut conn) = tokio::join!(
        lock::acquire(creds, database, &opts.label, opts.lock_timeout),
        connect()
    );
    if lock.is_ok() && started.elapsed() > IDLE_REOPEN {
        if let Ok(idle) = conn {
            let _ = idle.close().await;
        }
        conn = connect().await;
    }
    (lock, conn)
}

struct Run<'a> {
    opts: &'a RunOptions,
    migrations: &'a [Migration],
    state: RunState,
    /// Versions in the ledger now.
    versions: BTreeSet<Version>,
    /// Whether `versions` is known (the ledger was read).
    ledger_read: bool,
}

impl<'a> Run<'a> {
    /// A run starting from what an earlier attempt recorded (`prior`).
    fn new(opts: &'a RunOptions, migrations: &'a [Migration], prior: &Prior) -> Self {
        Run {
            opts,
            migrations,
            state: RunState {
                from_version: prior.from_version.clone(),
                applied: prior.applied.clone(),
                rolled_back: prior.rolled_back.clone(),
                failure: prior.failure.clone(),
                backup_id: prior.backup_id.clone(),
                ..Default::default()
            },
            versions: BTreeSet::new(),
            ledger_read: false,
        }
    }

    /// The migration lock could not be taken: nothing was changed.
    fn lock_failed(&mut self, e: LockError, database: &str) -> Outcome {
        match e {
            LockRefusal::Timeout { waited, holder } => self.end(
                MigrationPhase::Failed,
                "LockTimeout",
                lock_timeout_message(database, waited, holder.as_deref(), "nothing was changed"),
            ),
            LockRefusal::Failed(e) => self.pg_failed(e),
        }
    }

    /// The run stops (no rollback: another run may hold the lock now) and says what it applied.
    fn lock_lost(&mut self, next: &Step<'_>) -> Outcome {
        let message = format!(
            "The migration lock's connection was lost before {}_{}; stopped so that no other run works on the database at the same time. Applied by this run: {}. {}. Start a new run.",
            next.migration.version,
            next.migration.name,
            self.state.applied.names(),
            self.schema_at()
        );
        self.end(MigrationPhase::Failed, "LockLost", message)
    }

    fn end(&mut self, phase: MigrationPhase, reason: &'static str, message: String) -> Outcome {
        self.state.to_version = if self.ledger_read {
            self.versions.last().cloned()
        } else {
            None
        };
        Outcome {
            phase,
            reason,
            message,
            state: self.state.clone(),
        }
    }

    fn pg_failed(&mut self, e: PgError) -> Outcome {
        self.end(
            MigrationPhase::Failed,
            e.reason(),
            format!("{e}; nothing was changed by this attempt."),
        )
    }

    fn schema_at(&self) -> String {
        match self.versions.last() {
            Some(v) => format!("the schema is at version {v}"),
            None => "no migration is applied".into(),
        }
    }

    async fn drive<H: Hooks>(
        &mut self,
        conn: &mut PgConnection,
        lock: &mut lock::MigrationLock,
        prior: Prior,
        hooks: &mut H,
    ) -> Result<Outcome, Interrupted> {
        let (ledger, import) = match self.read_ledger(conn).await {
            ControlFlow::Continue(read) => read,
            ControlFlow::Break(ended) => return Ok(ended),
        };
        self.versions = ledger.iter().map(|r| r.version.clone()).collect();
        self.ledger_read = true;
        if prior.failure.is_some() {
            return Ok(self.recover(conn, &ledger, &prior).await);
        }
        let plan = match self.plan_and_lint(&ledger, &prior) {
            ControlFlow::Continue(plan) => plan,
            ControlFlow::Break(ended) => return Ok(ended),
        };
        if let Some(ended) = self.prepare(conn, &plan, import, hooks).await? {
            return Ok(ended);
        }
        // What this run did before (resumed), then what it does now: the list a rollback undoes.
        let done: Vec<Step<'a>> = match self.opts.direction {
            Direction::Up => self.steps_for(&plan.applied_before, Action::Apply),
            Direction::Down => match self.still_reverted(conn).await {
                Ok(reverted) => self.steps_for(&reverted, Action::Revert),
                Err(e) => return Ok(self.pg_failed(e)),
            },
        };
        Ok(self.apply_steps(conn, lock, &plan.steps, done, hooks).await)
    }

    /// Reads the ledger; on a database Lifeboat has not migrated, with the rows another tool's ledger
    /// (or a baseline) says are applied, which are also returned to be recorded before the first change.
    async fn read_ledger(
        &mut self,
        conn: &mut PgConnection,
    ) -> ControlFlow<Outcome, (Vec<LedgerRow>, Option<Vec<LedgerRow>>)> {
        let ledger = match ledger::read(conn).await {
            Ok(rows) => rows,
            Err(e) => return ControlFlow::Break(self.pg_failed(e)),
        };
        // Automatic import only where Lifeboat never was (no ledger table: an emptied ledger is one a
        // run reverted, and must not be refilled from the old tool's table); asked for, on any empty one.
        let asked = self.opts.adopt.tool().is_some() || self.opts.baseline_version.is_some();
        let fresh = ledger.is_empty()
            && (asked
                || match ledger::exists(conn).await {
                    Ok(exists) => !exists,
                    Err(e) => return ControlFlow::Break(self.pg_failed(e)),
                });
        if !fresh {
            return ControlFlow::Continue((ledger, None));
        }
        match adopt::prepare(
            conn,
            self.migrations,
            self.opts.adopt,
            self.opts.baseline_version.as_ref(),
        )
        .await
        {
            Ok(None) => ControlFlow::Continue((ledger, None)),
            Ok(Some((imported, rows))) => {
                self.state.imported = Some(imported);
                ControlFlow::Continue((rows.clone(), Some(rows)))
            }
            Err(e) => {
                let message = format!("Nothing was changed: {e}.");
                ControlFlow::Break(self.end(MigrationPhase::Failed, e.reason(), message))
            }
        }
    }

    /// Plans the run from `ledger` and lints the scripts the plan runs; a refused plan or failed lint
    /// ends the run.
    fn plan_and_lint(
        &mut self,
        ledger: &[LedgerRow],
        prior: &Prior,
    ) -> ControlFlow<Outcome, plan::Plan<'a>> {
        let request = plan::Request {
            direction: self.opts.direction,
            target_version: self.opts.target_version.clone(),
            on_failure: self.opts.on_failure,
            run_uid: &self.opts.run_uid,
            started_from: prior.from_version.clone(),
            is_blank: statements::is_blank,
        };
        let plan = match plan::plan(self.migrations, ledger, request) {
            Ok(p) => p,
            Err(e) => return ControlFlow::Break(self.refuse(&e)),
        };
        self.state.from_version = plan.from_version.clone();
        if self.opts.direction == Direction::Up {
            self.state.applied = plan.applied_before.iter().cloned().collect();
        }
        match self.lint(&plan) {
            Some(refused) => ControlFlow::Break(refused),
            None => ControlFlow::Continue(plan),
        }
    }

    /// Before the first change: the backup, the durable report of what the run will do, the ledger
    /// tables, and the imported rows. `Some`: the run ended.
    async fn prepare<H: Hooks>(
        &mut self,
        conn: &mut PgConnection,
        plan: &plan::Plan<'_>,
        import: Option<Vec<LedgerRow>>,
        hooks: &mut H,
    ) -> Result<Option<Outcome>, Interrupted> {
        // One backup per run, before its first change (a resumed run keeps the one it took).
        if !plan.steps.is_empty() && self.state.backup_id.is_none() {
            match hooks.backup().await {
                Ok(id) => self.state.backup_id = id,
                Err(b) => return Ok(Some(self.end(MigrationPhase::Failed, b.reason, b.message))),
            }
        }
        self.state.activity = format!("{} {} migration(s).", self.verb(), plan.steps.len());
        self.state.pending = plan.steps.len();
        hooks.report(&self.state, true).await.map_err(Interrupted)?;
        if (!plan.steps.is_empty() || import.is_some())
            && let Err(e) =
                ledger::ensure(conn, self.migrations.iter().any(|m| m.version.is_dotted())).await
        {
            return Ok(Some(self.pg_failed(e)));
        }
        if let Some(rows) = import
            && let Err(e) = ledger::insert_all(conn, &rows).await
        {
            return Ok(Some(self.pg_failed(e)));
        }
        Ok(None)
    }

    /// Runs `steps` in order, each checked against the lock first; a failed one hands over to
    /// [`Self::failed`] with `done` (what a rollback undoes) and what this run has applied since.
    async fn apply_steps<H: Hooks>(
        &mut self,
        conn: &mut PgConnection,
        lock: &mut lock::MigrationLock,
        steps: &[Step<'a>],
        mut done: Vec<Step<'a>>,
        hooks: &mut H,
    ) -> Outcome {
        let total = steps.len();
        for (i, step) in steps.iter().enumerate() {
            // The lock sits on an idle connection of its own, which can drop unnoticed (a restarted
            // server, a proxy timeout); then another run could start. Never change more without it.
            if !lock.held().await {
                return self.lock_lost(step);
            }
            match execute::run_step(
                conn,
                step,
                &self.opts.run_uid,
                &self.opts.label,
                self.timeouts(),
            )
            .await
            {
                Ok(record) => {
                    self.track(step);
                    self.state.applied.push(record);
                    done.push(*step);
                    self.state.activity =
                        format!("{} migrations: {} of {total} done.", self.verb(), i + 1);
                    // Not durable: the ledger and the revert log say what is done.
                    let _ = hooks.report(&self.state, false).await;
                }
                Err(failure) => return self.failed(conn, failure, done, hooks).await,
            }
        }
        self.succeeded()
    }

    /// What the run is doing, for its activity: applying or reverting.
    fn verb(&self) -> &'static str {
        match self.opts.direction {
            Direction::Up => "Applying",
            Direction::Down => "Reverting",
        }
    }

    /// Lints the scripts the plan runs; with `enforce`, error findings end the run before any change
    /// (warnings never do).
    fn lint(&mut self, plan: &plan::Plan<'_>) -> Option<Outcome> {
        if self.opts.lint == LintMode::Off {
            return None;
        }
        let policy = match lint::Policy::new(&self.opts.lint_rules) {
            Ok(p) => p,
            Err(e) => {
                let message = format!("Nothing was changed: {e}.");
                return Some(self.end(MigrationPhase::Failed, "InvalidLintRules", message));
            }
        };
        let mut findings = lint::lint(
            plan.steps
                .iter()
                .filter_map(|s| s.script(statements::is_blank)),
            &policy,
        );
        self.state.lint_counts = lint::counts(&findings);
        self.state.lint_total = findings.len();
        // Errors first (a stable sort keeps file order within each severity).
        findings.sort_by_key(|f| f.severity);
        let errors = findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .count();
        let mut files: Vec<&str> = findings
            .iter()
            .take_while(|f| f.severity == Severity::Error)
            .map(|f| f.file.as_str())
            .collect();
        files.dedup();
        let listed = files.len().min(5);
        let more = files.len() - listed;
        let files = files[..listed].join(", ")
            + &(if more > 0 {
                format!(" and {more} more file(s)")
            } else {
                String::new()
            });
        self.state.lint_findings = findings.into_iter().take(MAX_LINT_FINDINGS).collect();
        if self.opts.lint != LintMode::Enforce || errors == 0 {
            return None;
        }
        let warnings = self.state.lint_total - errors;
        let warned = if warnings > 0 {
            format!(" and {warnings} warning(s), which do not stop a run,")
        } else {
            String::new()
        };
        let message = format!(
            "Lint found {errors} error(s) in {files}{warned} (see status.lintFindings and status.lintCounts); nothing was changed. Fix them, or accept one with a `-- squawk-ignore <rule>` comment on its statement, a rule with lintRules.warn, or all with lint: warn."
        );
        Some(self.end(MigrationPhase::Failed, "LintFailed", message))
    }

    fn succeeded(&mut self) -> Outcome {
        let (did, none) = match self.opts.direction {
            Direction::Up => ("Applied", "Nothing to apply"),
            Direction::Down => ("Reverted", "Nothing to revert"),
        };
        let imported = self
            .state
            .imported
            .as_ref()
            .map(|i| format!("{}. ", i.describe()))
            .unwrap_or_default();
        let message = if self.state.applied.is_empty() {
            format!("{imported}{none}; {}.", self.schema_at())
        } else {
            format!(
                "{imported}{did} {} migration(s): {}; {}.",
                self.state.applied.len(),
                self.state.applied.names(),
                self.schema_at()
            )
        };
        self.end(MigrationPhase::Succeeded, "Succeeded", message)
    }

    fn timeouts(&self) -> Timeouts {
        Timeouts {
            lock: self.opts.lock_timeout,
            statement: self.opts.statement_timeout,
        }
    }

    fn track(&mut self, step: &Step<'_>) {
        match step.action {
            Action::Apply => self.versions.insert(step.migration.version.clone()),
            Action::Revert => self.versions.remove(&step.migration.version),
        };
    }

    fn steps_for(&self, records: &[MigrationRecord], action: Action) -> Vec<Step<'a>> {
        let by_version: std::collections::HashMap<&Version, &'a Migration> =
            self.migrations.iter().map(|m| (&m.version, m)).collect();
        records
            .iter()
            .filter_map(|r| by_version.get(&r.version).copied())
            .map(|migration| Step { migration, action })
            .collect()
    }

    /// What this (`down`) run reverted and is still reverted, in the order it reverted them, from the
    /// revert log.
    async fn still_reverted(
        &self,
        conn: &mut PgConnection,
    ) -> Result<Vec<MigrationRecord>, PgError> {
        let rows = ledger::reverted_by(conn, &self.opts.run_uid).await?;
        Ok(plan::records(
            rows.iter().filter(|r| !self.versions.contains(&r.version)),
        ))
    }

    fn refuse(&mut self, e: &PlanError) -> Outcome {
        let message = format!("Nothing was changed: {e}.");
        self.end(MigrationPhase::Failed, e.reason(), message)
    }

    async fn failed<H: Hooks>(
        &mut self,
        conn: &mut PgConnection,
        StepFailure { kind, failure }: StepFailure,
        done: Vec<Step<'a>>,
        hooks: &mut H,
    ) -> Outcome {
        let what = execute::describe(&failure);
        let reason = failure_reason(&failure);
        let version = failure.version.clone().unwrap_or_default();
        self.state.failure = Some(failure);
        match kind {
            FailureKind::Partial => {
                let message = format!(
                    "{what}. It runs outside a transaction, so the statements before it are committed: the migration is partly applied. Complete or undo it by hand, then `update lifeboat_schema_migrations set complete = true where version = '{version}'` (completed) or `delete from lifeboat_schema_migrations where version = '{version}'` (undone), and start a new run. Applied by this run: {}.",
                    self.state.applied.names()
                );
                self.end(MigrationPhase::Failed, "PartiallyApplied", message)
            }
            FailureKind::ConnectionLost => {
                let message = match ledger::read(conn).await {
                    Ok(rows) => self.applied_per_ledger(&rows),
                    Err(_) => "the ledger could not be read again: table lifeboat_schema_migrations says what is applied".into(),
                };
                self.end(
                    MigrationPhase::Failed,
                    "ConnectionLost",
                    format!("{what}. The connection broke, so the run stopped; {message}."),
                )
            }
            FailureKind::Clean if self.opts.on_failure == OnFailure::Halt => {
                let message = format!(
                    "{what}; halted (onFailure: halt). Applied by this run and still applied: {}; {}.",
                    self.state.applied.names(),
                    self.schema_at()
                );
                self.end(MigrationPhase::Failed, reason, message)
            }
            FailureKind::Clean => {
                self.state.activity = format!("{what}; rolling back.");
                // Best effort: a resumed attempt that missed this report re-runs the failing step, which
                // fails again and rolls back then.
                let _ = hooks.report(&self.state, true).await;
                self.rollback(conn, done, &what, reason, hooks).await
            }
        }
    }

    fn applied_per_ledger(&mut self, rows: &[LedgerRow]) -> String {
        self.versions = rows.iter().map(|r| r.version.clone()).collect();
        let mine: Records = plan::records(rows.iter().filter(|r| r.run_uid == self.opts.run_uid))
            .into_iter()
            .collect();
        format!(
            "applied by this run per the ledger: {}; {}",
            mine.names(),
            self.schema_at()
        )
    }

    /// Undoes `done` newest first, each in its own step; ends RolledBack, or Failed if an undo fails.
    async fn rollback<H: Hooks>(
        &mut self,
        conn: &mut PgConnection,
        done: Vec<Step<'a>>,
        what: &str,
        reason: &'static str,
        hooks: &mut H,
    ) -> Outcome {
        for (undone, step) in done.iter().rev().enumerate() {
            let undo = step.undo();
            match execute::run_step(
                conn,
                &undo,
                &self.opts.run_uid,
                &self.opts.label,
                self.timeouts(),
            )
            .await
            {
                Ok(record) => {
                    self.track(&undo);
                    self.state.rolled_back.push(record);
                    let _ = hooks.report(&self.state, false).await;
                }
                Err(e) => {
                    let still = &done[..done.len() - undone];
                    let still: Records = still
                        .iter()
                        .map(|s| MigrationRecord {
                            version: s.migration.version.clone(),
                            name: s.migration.name.clone(),
                            ..Default::default()
                        })
                        .collect();
                    let message = format!(
                        "{what}. Rolling back then failed: {}. Undone: {}; still changed by this run: {}; {}.",
                        execute::describe(&e.failure),
                        self.state.rolled_back.names(),
                        still.names(),
                        self.schema_at()
                    );
                    return self.end(MigrationPhase::Failed, "RollbackFailed", message);
                }
            }
        }
        let message = format!(
            "{what}; rolled back {} (onFailure: rollback); {}.",
            self.state.rolled_back.names(),
            self.schema_at()
        );
        self.end(MigrationPhase::RolledBack, reason, message)
    }

    /// An earlier attempt stopped after a migration failed: finish what it was doing (halt, or undo
    /// what this run still has applied).
    async fn recover(
        &mut self,
        conn: &mut PgConnection,
        ledger: &[LedgerRow],
        prior: &Prior,
    ) -> Outcome {
        let failure = prior.failure.clone().unwrap_or_default();
        let what = execute::describe(&failure);
        let reason = failure_reason(&failure);
        if let Err(e) = plan::check_ledger(self.migrations, ledger) {
            let message = format!("{what}; then: {e}");
            return self.end(MigrationPhase::Failed, e.reason(), message);
        }
        if self.opts.on_failure == OnFailure::Halt {
            let message = format!(
                "{what}; halted (onFailure: halt). {}.",
                self.applied_per_ledger(ledger)
            );
            return self.end(MigrationPhase::Failed, reason, message);
        }
        let done: Vec<Step<'a>> = match self.opts.direction {
            Direction::Up => {
                let mine: Vec<MigrationRecord> =
                    plan::records(ledger.iter().filter(|r| r.run_uid == self.opts.run_uid));
                self.steps_for(&mine, Action::Apply)
            }
            Direction::Down => match self.still_reverted(conn).await {
                Ok(reverted) => self.steps_for(&reverted, Action::Revert),
                Err(e) => return self.pg_failed(e),
            },
        };
        self.rollback(conn, done, &what, reason, &mut NoHooks).await
    }
}
