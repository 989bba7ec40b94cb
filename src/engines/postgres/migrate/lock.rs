//! The migration lock: a session-level PostgreSQL advisory lock held on a connection of its own.
//!
//! Its own connection, because the migrations' connection may sit in a failed transaction, where
//! `pg_advisory_unlock` would fail (lakekeeper PR #1790 hit exactly that with a shared connection). The
//! wait is bounded by the server (`lock_timeout` applies to advisory locks) so it ends the moment the
//! lock is free. If the operator dies, its connection closes and the server releases the lock.

use std::time::Duration;

use sqlx::{AssertSqlSafe, Connection, PgConnection, Row};
use tracing::warn;

use crate::engines::{
    ServerCredentials,
    migrate::LockRefusal,
    postgres::{self, PgError, sql},
};

/// The advisory lock key, the same for every Lifeboat run (advisory locks are per database).
/// `0x4c69_6665_626f_6174` is "Lifeboat" in ASCII.
pub const LOCK_KEY: i64 = 0x4c69_6665_626f_6174;

/// Prefix of the `application_name` of a lock holder, so a waiting run can name who holds it.
pub const APPLICATION_PREFIX: &str = "lifeboat-migrate ";

/// How often the server checks that the client of a running statement is still there (PostgreSQL
/// 14+): a killed operator's statements are cancelled, not left running to their end.
pub const CLIENT_CHECK_INTERVAL: &str = "1s";

/// Why the lock was not taken: another run held it too long, or PostgreSQL failed.
pub type LockError = LockRefusal<PgError>;

/// A held migration lock. Release it with [`MigrationLock::release`]; dropping it closes the connection,
/// which releases it too.
pub struct MigrationLock {
    conn: PgConnection,
}

/// Sets session settings every Lifeboat migration connection carries: a name naming the run, and the
/// client check (skipped on servers older than 14, which lack it).
pub async fn identify(conn: &mut PgConnection, label: &str) -> Result<(), PgError> {
    sqlx::raw_sql(AssertSqlSafe(identify_sql(label)))
        .execute(&mut *conn)
        .await
        .map(|_| ())
        .map_err(|e| PgError::from_sqlx("setting application_name", e))
}

/// The statements of [`identify`], to send in a batch with others.
pub fn identify_sql(label: &str) -> String {
    let name = format!("{APPLICATION_PREFIX}{label}");
    format!(
        "set application_name = {}; select pg_catalog.set_config('client_connection_check_interval', '{CLIENT_CHECK_INTERVAL}', false) where pg_catalog.current_setting('client_connection_check_interval', true) is not null",
        sql::literal(&name)
    )
}

/// Takes the lock on a new connection, waiting at most `timeout`. `label` (e.g. `namespace/name` of the
/// run) is shown to runs that wait for it.
pub async fn acquire(
    creds: &ServerCredentials,
    database: &str,
    label: &str,
    timeout: Duration,
) -> Result<MigrationLock, LockError> {
    let mut conn = postgres::connect(creds, database).await?;
    identify(&mut conn, label).await?;
    // lock_timeout 0 would mean "wait forever".
    let ms = timeout.as_millis().clamp(1, i32::MAX as u128);
    let attempt = sqlx::raw_sql(AssertSqlSafe(format!(
        "set lock_timeout = {ms}; select pg_advisory_lock({LOCK_KEY}); reset lock_timeout"
    )))
    .execute(&mut conn)
    .await;
    match attempt {
        Ok(_) => Ok(MigrationLock { conn }),
        Err(e) => {
            let e = PgError::from_sqlx("taking the migration lock", e);
            if e.code() != Some("55P03") {
                return Err(e.into());
            }
            let holder = holder(&mut conn).await;
            let _ = conn.close().await;
            Err(LockRefusal::Timeout {
                waited: timeout,
                holder,
            })
        }
    }
}

/// Who holds the lock now, as `application_name (pid N)`, if visible.
async fn holder(conn: &mut PgConnection) -> Option<String> {
    let row = sqlx::query(
        "select a.application_name, a.pid from pg_locks l join pg_stat_activity a on a.pid = l.pid
         where l.locktype = 'advisory' and l.granted and l.objsubid = 1
           and l.database = (select oid from pg_database where datname = current_database())
           and l.classid::bigint = $1 and l.objid::bigint = $2
         limit 1",
    )
    .bind(LOCK_KEY >> 32)
    .bind(LOCK_KEY & 0xffff_ffff)
    .fetch_optional(&mut *conn)
    .await
    .ok()??;
    let name: Option<String> = row.get(0);
    let pid: i32 = row.get(1);
    let name = name.unwrap_or_default();
    let who = name.strip_prefix(APPLICATION_PREFIX).map_or_else(
        || format!("session {name:?}"),
        |run| format!("MigrationRun {run}"),
    );
    Some(format!("held by {who} (server pid {pid})"))
}

impl MigrationLock {
    /// Whether this session still holds the lock (its connection answers and the server lists the lock).
    /// One simple query with the key inlined (no parse and bind round of the extended protocol): it
    /// runs before every migration.
    pub async fn held(&mut self) -> bool {
        let sql = format!(
            "select exists (select 1 from pg_catalog.pg_locks l
               where l.locktype = 'advisory' and l.granted and l.pid = pg_catalog.pg_backend_pid()
                 and l.classid::bigint = {} and l.objid::bigint = {} and l.objsubid = 1)",
            LOCK_KEY >> 32,
            LOCK_KEY & 0xffff_ffff
        );
        sqlx::raw_sql(AssertSqlSafe(sql))
            .fetch_one(&mut self.conn)
            .await
            .is_ok_and(|r| r.get::<bool, _>(0))
    }

    /// Unlocks and closes the connection. Never fails: if the unlock cannot be sent, closing the
    /// connection releases the lock all the same.
    pub async fn release(mut self) {
        let unlocked = sqlx::query("select pg_advisory_unlock($1)")
            .bind(LOCK_KEY)
            .fetch_one(&mut self.conn)
            .await
            .map(|r| r.get::<bool, _>(0));
        if !matches!(unlocked, Ok(true)) {
            warn!(result = ?unlocked.map_err(|e| e.to_string()), "advisory unlock did not confirm; closing the connection releases the lock");
        }
        let _ = self.conn.close().await;
    }
}
