//! Running one step's script: in its own transaction with the ledger change, or statement by statement
//! outside one (`-- lifeboat:no-transaction`). A failure says which statement, where, and what
//! PostgreSQL answered.

use std::time::{Duration, Instant};

use futures::TryStreamExt as _;
use sqlx::{AssertSqlSafe, PgConnection};

use super::{
    ledger,
    statements::{self, Statement},
};
use crate::domain::migrations::{
    model::{LedgerRow, MigrationFailure, MigrationRecord},
    plan::{Action, Step},
    source::Script,
};

/// Timeouts applied to every statement of a script.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// PostgreSQL `lock_timeout`: how long a statement may wait for a table lock.
    pub lock: Duration,
    /// PostgreSQL `statement_timeout`; `None`: no limit.
    pub statement: Option<Duration>,
}

impl Timeouts {
    fn settings(&self, scope: &str) -> String {
        let ms = |d: Duration| d.as_millis().min(i32::MAX as u128);
        format!(
            "set {scope} lock_timeout = {}; set {scope} statement_timeout = {}",
            ms(self.lock).max(1),
            self.statement.map_or(0, ms)
        )
    }
}

/// How a step failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// The script failed and nothing of it is left (its transaction rolled back, or a no-transaction
    /// script failed on its first statement).
    Clean,
    /// A no-transaction script failed after some of its statements committed.
    Partial,
    /// The connection broke; whether the step committed is unknown until the ledger is read again.
    ConnectionLost,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepFailure {
    pub kind: FailureKind,
    pub failure: MigrationFailure,
}

/// One sentence describing a failure: file, statement, line, error.
pub fn describe(f: &MigrationFailure) -> String {
    let mut at = f.file.clone().unwrap_or_else(|| "the run".into());
    if let Some(s) = f.statement {
        at.push_str(&format!(" statement {s}"));
    }
    if let Some(l) = f.line {
        at.push_str(&format!(" (line {l})"));
    }
    let code = f
        .sql_state
        .as_ref()
        .map(|c| format!(" (SQLSTATE {c})"))
        .unwrap_or_default();
    format!("{at} failed: {}{code}", f.error.trim_end_matches('.'))
}

fn int(n: usize) -> Option<i32> {
    i32::try_from(n).ok()
}

/// Turns a sqlx error from running `stmt` (index `index`, 0-based) of `script` into a failure.
/// `prefix_chars`: characters sent before the script in the same message (the server counts error
/// positions from the start of the message); 0 when the statement was sent alone.
fn failure_of(
    e: sqlx::Error,
    step: &Step<'_>,
    script: &Script,
    stmt: Option<(usize, &Statement)>,
    prefix_chars: usize,
) -> (bool, MigrationFailure) {
    let mut f = MigrationFailure {
        version: Some(step.migration.version.clone()),
        file: Some(script.file.clone()),
        statement: stmt.and_then(|(i, _)| int(i + 1)),
        line: stmt
            .and_then(|(_, s)| int(script.line_offset + statements::line_of(&script.sql, s.start))),
        ..Default::default()
    };
    let sqlx::Error::Database(db) = e else {
        f.error = e.to_string();
        return (true, f);
    };
    f.sql_state = db.code().map(|c| c.to_string());
    f.error = db.message().to_string();
    let position = db
        .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
        .and_then(|p| match p.position() {
            Some(sqlx::postgres::PgErrorPosition::Original(n)) => Some(n),
            _ => None,
        });
    if let Some(n) = position {
        if prefix_chars == 0 {
            // The statement (or the script) was sent alone: the position counts within it.
            f.position = int(n);
            let (base, text) = stmt.map_or((0, script.sql.as_str()), |(_, s)| {
                (s.start, s.text.as_str())
            });
            let byte = base + statements::byte_of_char_position(text, n);
            f.line = int(script.line_offset + statements::line_of(&script.sql, byte));
        } else if let Some(in_script) = n.checked_sub(prefix_chars).filter(|c| *c > 0) {
            // Sent in a batch: the position counts from the batch's start.
            let byte = statements::byte_of_char_position(&script.sql, in_script);
            if byte < script.sql.len() {
                f.line = int(script.line_offset + statements::line_of(&script.sql, byte));
                let before = stmt.map_or(0, |(_, s)| script.sql[..s.start].chars().count());
                f.position = int(in_script.saturating_sub(before));
            }
        }
    }
    (false, f)
}

/// Resets what a migration may have changed in its session. (Not `DISCARD ALL`: it would also drop the
/// driver's prepared statements.)
pub const CLEAN_SESSION: &str = "reset role; reset all; discard temp; discard sequences; unlisten *; select pg_catalog.pg_advisory_unlock_all()";

async fn exec(conn: &mut PgConnection, sql: &str) -> Result<(), sqlx::Error> {
    sqlx::raw_sql(AssertSqlSafe(sql.to_string()))
        .execute(&mut *conn)
        .await
        .map(|_| ())
}

fn ledger_failure(
    step: &Step<'_>,
    script: &Script,
    e: crate::engines::postgres::PgError,
) -> StepFailure {
    StepFailure {
        kind: FailureKind::ConnectionLost,
        failure: MigrationFailure {
            version: Some(step.migration.version.clone()),
            file: Some(script.file.clone()),
            sql_state: e.code().map(str::to_string),
            error: e.to_string(),
            ..Default::default()
        },
    }
}

/// The statements that make a session clean for a step: nothing a previous migration set (role,
/// search_path, timeouts, temporary tables, advisory locks of its own) carries over, and the session is
/// named again (application_name, client check).
fn clean_sql(label: &str) -> String {
    format!("{CLEAN_SESSION}; {}", super::lock::identify_sql(label))
}

/// The step's script; `None` only for a revert without a down script (refused when the plan is made;
/// never panic on it here).
fn script_of<'a>(step: &Step<'a>) -> Result<&'a Script, StepFailure> {
    step.script(statements::is_blank)
        .ok_or_else(|| StepFailure {
            kind: FailureKind::Clean,
            failure: MigrationFailure {
                version: Some(step.migration.version.clone()),
                error: "no script for this step (a revert needs a down migration)".into(),
                ..Default::default()
            },
        })
}

/// Runs one step and records it in the ledger; returns the record for status.
///
/// A transactional step is one round trip: the session's clean-up, `begin`, the timeouts, the script,
/// the ledger change and `commit` go to the server as one batch, which stops at the first error (the transaction is then
/// rolled back). The statement that failed is the one after the last that completed, so a failure
/// still names its statement and line. Cost per migration stays constant however long the history.
pub async fn run_step(
    conn: &mut PgConnection,
    step: &Step<'_>,
    run_uid: &str,
    label: &str,
    timeouts: Timeouts,
) -> Result<MigrationRecord, StepFailure> {
    let script = script_of(step)?;
    let started = Instant::now();
    if !script.no_transaction {
        return run_in_transaction(conn, step, script, run_uid, label, timeouts, started).await;
    }
    let split = statements::split(&script.sql);
    exec(conn, &clean_sql(label))
        .await
        .map_err(|e| StepFailure {
            kind: FailureKind::ConnectionLost,
            failure: failure_of(e, step, script, None, 0).1,
        })?;
    let statements = split.map_err(|e| unsplittable(step, script, &e))?;
    run_outside_transaction(conn, step, script, &statements, run_uid, timeouts, started).await
}

/// A no-transaction script the parser cannot split: it is not run.
fn unsplittable(step: &Step<'_>, script: &Script, e: &statements::SplitError) -> StepFailure {
    StepFailure {
        kind: FailureKind::Clean,
        failure: MigrationFailure {
            version: Some(step.migration.version.clone()),
            file: Some(script.file.clone()),
            line: int(script.line_offset + e.line),
            error: format!(
                "cannot split the script into statements ({}), which running outside a transaction requires",
                e.message
            ),
            ..Default::default()
        },
    }
}

/// A transactional step, as the one batch [`run_step`] describes.
async fn run_in_transaction(
    conn: &mut PgConnection,
    step: &Step<'_>,
    script: &Script,
    run_uid: &str,
    label: &str,
    timeouts: Timeouts,
    started: Instant,
) -> Result<MigrationRecord, StepFailure> {
    // The clean-up goes in the same message: statements before `begin` join its transaction, so a
    // failed step leaves the session as it was, and the next step cleans it again.
    let prefix = format!(
        "{}; begin; {};\n",
        clean_sql(label),
        timeouts.settings("local")
    );
    let ledger = match step.action {
        Action::Apply => ledger::insert_sql(&row(step, run_uid, 0, true)),
        Action::Revert => ledger::revert_sql(&row(step, run_uid, 0, true)),
    };
    // The script's last line may be a comment or lack its semicolon: end it on a line of its own.
    let batch = format!("{prefix}{}\n;\n{ledger}; commit", script.sql);
    let (completed, result) = execute_counting(conn, batch).await;
    let Err(e) = result else {
        let ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
        return Ok(record(step, ms));
    };
    Err(batch_failure(conn, e, completed, step, script, &prefix).await)
}

/// Runs a batch; how many of its statements completed, and its error if one failed.
async fn execute_counting(
    conn: &mut PgConnection,
    batch: String,
) -> (usize, Result<(), sqlx::Error>) {
    let mut completed = 0usize;
    let mut results = sqlx::raw_sql(AssertSqlSafe(batch)).execute_many(&mut *conn);
    loop {
        match results.try_next().await {
            Ok(Some(_)) => completed += 1,
            Ok(None) => break (completed, Ok(())),
            Err(e) => break (completed, Err(e)),
        }
    }
}

/// The failure of a transactional step's batch (`prefix`, the script, the ledger change) after
/// `completed` statements succeeded; rolls the transaction back.
async fn batch_failure(
    conn: &mut PgConnection,
    e: sqlx::Error,
    completed: usize,
    step: &Step<'_>,
    script: &Script,
    prefix: &str,
) -> StepFailure {
    // Only now is the script split (with squawk's parser; a success never pays for it): the failing
    // statement is the one after the last that completed. A script the parser cannot split ran whole,
    // and its failure names a line, not a statement.
    let prefix_statements = statements::split(prefix).map_or(0, |s| s.len());
    let statements = statements::split(&script.sql).ok();
    let script_statements = statements.as_ref().map(Vec::len);
    let failed_at = completed.checked_sub(prefix_statements);
    let stmt = match (&statements, failed_at) {
        (Some(stmts), Some(i)) => stmts.get(i).map(|s| (i, s)),
        _ => None,
    };
    let in_ledger = matches!((script_statements, failed_at), (Some(n), Some(i)) if i >= n);
    let (broken, mut failure) = failure_of(e, step, script, stmt, prefix.chars().count());
    // A failed transaction accepts nothing but ROLLBACK; if that fails too, the connection is unusable.
    let rolled_back = exec(conn, "rollback").await.is_ok();
    if in_ledger && !broken {
        failure.error = format!(
            "recording it in the ledger (or committing) failed: {}",
            failure.error
        );
    }
    // A failure in Lifeboat's own statements before the script is the session's, not the migration's.
    let kind = if broken || !rolled_back || failed_at.is_none() {
        FailureKind::ConnectionLost
    } else {
        FailureKind::Clean
    };
    StepFailure { kind, failure }
}

fn row(step: &Step<'_>, run_uid: &str, ms: i64, complete: bool) -> LedgerRow {
    LedgerRow {
        version: step.migration.version.clone(),
        name: step.migration.name.clone(),
        checksum: step.migration.checksum.clone(),
        execution_ms: ms,
        run_uid: run_uid.to_string(),
        complete,
    }
}

fn record(step: &Step<'_>, ms: i64) -> MigrationRecord {
    MigrationRecord {
        version: step.migration.version.clone(),
        name: step.migration.name.clone(),
        checksum: step.migration.checksum.clone(),
        duration_ms: ms,
    }
}

async fn run_outside_transaction(
    conn: &mut PgConnection,
    step: &Step<'_>,
    script: &Script,
    statements: &[Statement],
    run_uid: &str,
    timeouts: Timeouts,
    started: Instant,
) -> Result<MigrationRecord, StepFailure> {
    let v = &step.migration.version;
    let lost = |e: sqlx::Error| StepFailure {
        kind: FailureKind::ConnectionLost,
        failure: failure_of(e, step, script, None, 0).1,
    };
    exec(conn, &timeouts.settings("session"))
        .await
        .map_err(lost)?;
    // Mark the ledger first: if this stops midway, the row says so (complete = false).
    let marked = match step.action {
        Action::Apply => ledger::insert(conn, &row(step, run_uid, 0, false)).await,
        Action::Revert => ledger::set_complete(conn, v, false, 0).await,
    };
    marked.map_err(|e| ledger_failure(step, script, e))?;
    for (i, stmt) in statements.iter().enumerate() {
        if let Err(e) = exec(conn, &stmt.text).await {
            let (broken, failure) = failure_of(e, step, script, Some((i, stmt)), 0);
            if broken {
                return Err(StepFailure {
                    kind: FailureKind::ConnectionLost,
                    failure,
                });
            }
            let _ = exec(conn, "reset lock_timeout; reset statement_timeout").await;
            if i > 0 {
                return Err(StepFailure {
                    kind: FailureKind::Partial,
                    failure,
                });
            }
            // Nothing of the script committed: undo the marker.
            let unmarked = match step.action {
                Action::Apply => ledger::remove(conn, v).await,
                Action::Revert => ledger::set_complete(conn, v, true, 0).await,
            };
            let kind = if unmarked.is_ok() {
                FailureKind::Clean
            } else {
                FailureKind::ConnectionLost
            };
            return Err(StepFailure { kind, failure });
        }
    }
    let ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
    let done = match step.action {
        Action::Apply => ledger::set_complete(conn, v, true, ms).await,
        Action::Revert => ledger::revert(conn, &row(step, run_uid, ms, true)).await,
    };
    done.map_err(|e| ledger_failure(step, script, e))?;
    exec(conn, "reset lock_timeout; reset statement_timeout")
        .await
        .map_err(lost)?;
    Ok(record(step, ms))
}
