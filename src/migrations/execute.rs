//! Running one step's script: in its own transaction with the ledger change, or statement by statement
//! outside one (`-- lifeboat:no-transaction`). A failure says which statement, where, and what
//! PostgreSQL answered.

use std::time::{Duration, Instant};

use sqlx::{AssertSqlSafe, Connection, PgConnection};

use super::model::{MigrationFailure, MigrationRecord};
use super::{
    ledger::{self, Row},
    plan::{Action, Step},
    source::Script,
    statements::{self, Statement},
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
fn failure_of(
    e: sqlx::Error,
    step: &Step<'_>,
    script: &Script,
    stmt: Option<(usize, &Statement)>,
) -> (bool, MigrationFailure) {
    let mut f = MigrationFailure {
        version: Some(step.migration.version),
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
        f.position = int(n);
        let (base, text) = stmt.map_or((0, script.sql.as_str()), |(_, s)| {
            (s.start, s.text.as_str())
        });
        let byte = base + statements::byte_of_char_position(text, n);
        f.line = int(script.line_offset + statements::line_of(&script.sql, byte));
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
            version: Some(step.migration.version),
            file: Some(script.file.clone()),
            sql_state: e.code().map(str::to_string),
            error: e.to_string(),
            ..Default::default()
        },
    }
}

/// The step's script, on a session made clean for it: nothing a previous migration set (role,
/// search_path, timeouts, temporary tables, advisory locks of its own) carries over, and the session is
/// named again (application_name, client check).
async fn begin_step<'a>(
    conn: &mut PgConnection,
    step: &Step<'a>,
    label: &str,
) -> Result<&'a Script, StepFailure> {
    let Some(script) = step.script() else {
        // A revert without a down script is refused when the plan is made; never panic on it here.
        return Err(StepFailure {
            kind: FailureKind::Clean,
            failure: MigrationFailure {
                version: Some(step.migration.version),
                error: "no script for this step (a revert needs a down migration)".into(),
                ..Default::default()
            },
        });
    };
    exec(conn, CLEAN_SESSION).await.map_err(|e| StepFailure {
        kind: FailureKind::ConnectionLost,
        failure: failure_of(e, step, script, None).1,
    })?;
    if let Err(e) = crate::migrations::lock::identify(conn, label).await {
        return Err(StepFailure {
            kind: FailureKind::ConnectionLost,
            failure: MigrationFailure {
                version: Some(step.migration.version),
                file: Some(script.file.clone()),
                error: e.to_string(),
                ..Default::default()
            },
        });
    }
    Ok(script)
}

/// Runs one step and records it in the ledger; returns the record for status.
pub async fn run_step(
    conn: &mut PgConnection,
    step: &Step<'_>,
    run_uid: &str,
    label: &str,
    timeouts: Timeouts,
) -> Result<MigrationRecord, StepFailure> {
    let script = begin_step(conn, step, label).await?;
    let started = Instant::now();
    let split = statements::split(&script.sql);
    if script.no_transaction {
        let statements = split.map_err(|e| StepFailure {
            kind: FailureKind::Clean,
            failure: MigrationFailure {
                version: Some(step.migration.version),
                file: Some(script.file.clone()),
                line: int(script.line_offset + e.line),
                error: format!(
                    "cannot split the script into statements ({}), which running outside a transaction requires",
                    e.message
                ),
                ..Default::default()
            },
        })?;
        return run_outside_transaction(
            conn,
            step,
            script,
            &statements,
            run_uid,
            timeouts,
            started,
        )
        .await;
    }
    let lost = |e: sqlx::Error| StepFailure {
        kind: FailureKind::ConnectionLost,
        failure: failure_of(e, step, script, None).1,
    };
    let mut tx = conn.begin().await.map_err(lost)?;
    exec(&mut tx, &timeouts.settings("local"))
        .await
        .map_err(lost)?;
    // A script the parser cannot split runs whole (failures then name a line, not a statement).
    let pieces: Vec<(Option<usize>, Statement)> = match split {
        Ok(stmts) => stmts
            .into_iter()
            .enumerate()
            .map(|(i, s)| (Some(i), s))
            .collect(),
        Err(_) => vec![(
            None,
            Statement {
                text: script.sql.clone(),
                start: 0,
            },
        )],
    };
    for (index, stmt) in &pieces {
        if let Err(e) = exec(&mut tx, &stmt.text).await {
            let (broken, failure) = failure_of(e, step, script, index.map(|i| (i, stmt)));
            // Roll back before anything else uses the connection (a failed transaction accepts
            // nothing but ROLLBACK).
            let rolled_back = tx.rollback().await.is_ok();
            let kind = if broken || !rolled_back {
                FailureKind::ConnectionLost
            } else {
                FailureKind::Clean
            };
            return Err(StepFailure { kind, failure });
        }
    }
    let ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
    let recorded = match step.action {
        Action::Apply => ledger::insert(&mut tx, &row(step, run_uid, ms, true)).await,
        Action::Revert => ledger::remove(&mut tx, step.migration.version).await,
    };
    if let Err(e) = recorded {
        let _ = tx.rollback().await;
        return Err(ledger_failure(step, script, e));
    }
    tx.commit().await.map_err(lost)?;
    Ok(record(step, ms))
}

fn row(step: &Step<'_>, run_uid: &str, ms: i64, complete: bool) -> Row {
    Row {
        version: step.migration.version,
        name: step.migration.name.clone(),
        checksum: step.migration.checksum.clone(),
        execution_ms: ms,
        run_uid: run_uid.to_string(),
        complete,
    }
}

fn record(step: &Step<'_>, ms: i64) -> MigrationRecord {
    MigrationRecord {
        version: step.migration.version,
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
    let v = step.migration.version;
    let lost = |e: sqlx::Error| StepFailure {
        kind: FailureKind::ConnectionLost,
        failure: failure_of(e, step, script, None).1,
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
            let (broken, failure) = failure_of(e, step, script, Some((i, stmt)));
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
        Action::Revert => ledger::remove(conn, v).await,
    };
    done.map_err(|e| ledger_failure(step, script, e))?;
    exec(conn, "reset lock_timeout; reset statement_timeout")
        .await
        .map_err(lost)?;
    Ok(record(step, ms))
}
