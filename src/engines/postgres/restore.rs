//! Restoring a logical backup for a drill: a scratch role and database created for it (marked with the
//! drill's UID, so only they are ever dropped), `pg_restore` run *as that unprivileged role* (a dump's
//! contents are the tenant's: restoring them as a server admin would run the tenant's SQL with the
//! admin's rights), and the checks against the manifest in one snapshot of the restored database.

use std::{path::Path, process::Stdio, time::Duration};

use sqlx::Connection;
use tokio::process::Child;

use super::{
    PgError, connect, connect_admin,
    dump::{
        DumpTools, STABLE_TEXT_SETTINGS, STDERR_TAIL, USER_TABLES, clean_command, connection_env,
        table_stat, tool_version,
    },
    provision,
};
use crate::engines::{RestoreErrors, RestoreInput, Target};
use crate::{
    domain::{digest::sha256_hex, manifest::TableStats},
    engines::ServerCredentials,
};

/// A named query check may run this long.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(60);

/// The scratch database and role of a drill: one name, derived from the drill's UID.
pub fn scratch_target(drill_uid: &str) -> Target {
    let name = format!("lifeboat_drill_{}", &sha256_hex(drill_uid.as_bytes())[..16]);
    Target {
        database: name.clone(),
        role: name,
        template: None,
        allowed_templates: Vec::new(),
        // `jobs` (at most 8) parallel sessions, plus the checks.
        connection_limit: Some(10),
        uid: drill_uid.to_string(),
    }
}

/// Creates a fresh, empty scratch database (dropping what an interrupted drill left under the name)
/// owned by a fresh role with `password`. Returns the role's credentials.
pub async fn create_scratch(
    admin_creds: &ServerCredentials,
    target: &Target,
    password: &str,
) -> Result<ServerCredentials, PgError> {
    let mut admin = connect_admin(admin_creds, "postgres").await?;
    provision::drop_owned(&mut admin, target).await?;
    provision::ensure_role(&mut admin, target, password).await?;
    provision::ensure_database(&mut admin, admin_creds, target).await?;
    let _ = admin.close().await;
    Ok(ServerCredentials {
        username: target.role.clone(),
        password: password.to_string(),
        ..admin_creds.clone()
    })
}

/// Drops the scratch database and role if they exist and carry the drill's marker; returns what was
/// dropped.
pub async fn drop_scratch(
    admin_creds: &ServerCredentials,
    target: &Target,
) -> Result<Vec<String>, PgError> {
    let mut admin = connect_admin(admin_creds, "postgres").await?;
    let dropped = provision::drop_owned(&mut admin, target).await;
    let _ = admin.close().await;
    dropped
}

/// Databases and roles on the server named like drill scratch objects (for tests and leak checks).
pub async fn scratch_objects(admin_creds: &ServerCredentials) -> Result<Vec<String>, PgError> {
    let mut admin = connect_admin(admin_creds, "postgres").await?;
    let names: Vec<String> = sqlx::query_scalar(
        "select 'database ' || datname from pg_catalog.pg_database where datname like 'lifeboat\\_drill\\_%' \
         union all select 'role ' || rolname from pg_catalog.pg_roles where rolname like 'lifeboat\\_drill\\_%' order by 1",
    )
    .fetch_all(&mut admin)
    .await
    .map_err(|e| PgError::from_sqlx("listing scratch databases", e))?;
    let _ = admin.close().await;
    Ok(names)
}

impl DumpTools {
    /// `pg_restore` of an archive into `database`, as `creds` (never the admin), owning everything it
    /// creates. With `stop_at_first_error` it stops at the first error (`--exit-on-error`); without, it
    /// goes on and [`RestoreErrors`] tells the errors apart.
    pub fn spawn_restore(
        &self,
        creds: &ServerCredentials,
        database: &str,
        private_dir: &Path,
        input: RestoreInput<'_>,
        stop_at_first_error: bool,
    ) -> std::io::Result<Child> {
        let mut cmd = clean_command(&self.pg_restore());
        connection_env(&mut cmd, creds, database, private_dir, "lifeboat-restore")?;
        cmd.args(["--no-owner", "--no-privileges", "--no-password"]);
        if stop_at_first_error {
            cmd.arg("--exit-on-error");
        }
        cmd.args(["--dbname", database]);
        match input {
            RestoreInput::Stdin => {
                cmd.stdin(Stdio::piped());
            }
            RestoreInput::File { path, jobs } => {
                cmd.arg(format!("--jobs={}", jobs.max(1))).arg(path);
                cmd.stdin(Stdio::null());
            }
        }
        cmd.stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
    }

    /// `pg_restore --version`'s major version.
    pub async fn restore_major(&self) -> Result<u32, String> {
        tool_version(&self.pg_restore())
            .await
            .map(|(_, major)| major)
    }
}

/// The server's major version (`server_version_num` / 10000), as the connection reported it.
pub async fn server_major(creds: &ServerCredentials, database: &str) -> Result<u32, PgError> {
    let conn = connect(creds, database).await?;
    let major = conn.server_version_num().map_or(0, |n| n / 10000);
    let _ = conn.close().await;
    Ok(major)
}

/// Whether `pg_restore` of major `tool_major` must be let past its own session settings on a server of
/// major `server_major`: from 17 on it starts every session with `SET transaction_timeout = 0`, a setting
/// older servers do not have, so `--exit-on-error` would stop it before the first object.
pub fn needs_tolerant_restore(tool_major: u32, server_major: u32) -> bool {
    tool_major >= 17 && server_major < 17
}

/// The error `pg_restore` 17+ gets on a server older than 17 for its own session setting.
const UNKNOWN_TRANSACTION_TIMEOUT: &str =
    "unrecognized configuration parameter \"transaction_timeout\"";

/// Reads `pg_restore`'s stderr to the end: counts its error entries (a `pg_restore: error:` line and the
/// lines after it up to the next `pg_restore:` line), tells the ignorable ones apart, keeps the first
/// other one and the tail. Lines are cut at [`STDERR_TAIL`] bytes: a tenant's dump can hold huge
/// statements that pg_restore echoes.
pub async fn scan_restore_stderr(mut stderr: impl tokio::io::AsyncRead + Unpin) -> RestoreErrors {
    use tokio::io::AsyncReadExt;
    let mut out = RestoreErrors::default();
    let mut tail: Vec<u8> = Vec::new();
    let mut line: Vec<u8> = Vec::new();
    let mut entry: Option<String> = None;
    let mut buf = [0u8; 8192];
    let finish = |entry: &mut Option<String>, out: &mut RestoreErrors| {
        if let Some(text) = entry.take() {
            if text.contains(UNKNOWN_TRANSACTION_TIMEOUT) {
                out.ignorable += 1;
            } else if out.first.is_none() {
                out.first = Some(text.trim().to_string());
            }
        }
    };
    let take_line = |line: &[u8], entry: &mut Option<String>, out: &mut RestoreErrors| {
        let text = String::from_utf8_lossy(line);
        if let Some(rest) = text.strip_prefix("pg_restore: error: ") {
            finish(entry, out);
            out.errors += 1;
            *entry = Some(rest.to_string());
        } else if text.starts_with("pg_restore: ") {
            finish(entry, out);
        } else if let Some(e) = entry.as_mut()
            && e.len() < STDERR_TAIL
        {
            e.push('\n');
            e.push_str(&text);
        }
    };
    loop {
        let n = match stderr.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        tail.extend_from_slice(&buf[..n]);
        if tail.len() > 2 * STDERR_TAIL {
            tail.drain(..tail.len() - STDERR_TAIL);
        }
        for &b in &buf[..n] {
            if b == b'\n' {
                take_line(&line, &mut entry, &mut out);
                line.clear();
            } else if line.len() < STDERR_TAIL {
                line.push(b);
            }
        }
    }
    if !line.is_empty() {
        take_line(&line, &mut entry, &mut out);
    }
    finish(&mut entry, &mut out);
    let start = tail.len().saturating_sub(STDERR_TAIL);
    out.tail = String::from_utf8_lossy(&tail[start..]).into_owned();
    out
}

/// Reads row counts (and checksums) of every user table of the restored database in one snapshot, as
/// the backup recorded them.
pub async fn restored_stats(
    creds: &ServerCredentials,
    database: &str,
    checksums: bool,
) -> Result<Vec<TableStats>, PgError> {
    let mut conn = connect(creds, database).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "begin isolation level repeatable read read only; set local search_path = pg_catalog, pg_temp; {STABLE_TEXT_SETTINGS}"
    )))
    .execute(&mut conn)
    .await
    .map_err(|e| PgError::from_sqlx("starting the check transaction", e))?;
    let tables: Vec<(String, String)> = sqlx::query_as(USER_TABLES)
        .fetch_all(&mut conn)
        .await
        .map_err(|e| PgError::from_sqlx("listing restored tables", e))?;
    let mut out = Vec::with_capacity(tables.len());
    for (schema, name) in tables {
        let (rows, checksum) = table_stat(&mut conn, &schema, &name, checksums).await?;
        out.push(TableStats {
            schema,
            name,
            rows,
            checksum,
        });
    }
    let _ = conn.close().await;
    Ok(out)
}

/// Runs a named check query read-only (as the scratch role, under [`QUERY_TIMEOUT`]) and returns the
/// first column of its first row as text (`None`: no row; a NULL reads as `NULL`).
pub async fn query_value(
    creds: &ServerCredentials,
    database: &str,
    query: &str,
) -> Result<Option<String>, PgError> {
    let mut conn = connect(creds, database).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "begin read only; set local statement_timeout = {}",
        QUERY_TIMEOUT.as_millis()
    )))
    .execute(&mut conn)
    .await
    .map_err(|e| PgError::from_sqlx("starting the query check", e))?;
    // The query is the user's: as a subquery it can be one statement only, and its first column is
    // read as text whatever its type.
    let wrapped = format!(
        "select coalesce(q.v::text, 'NULL') from ({}\n) as q(v) limit 1",
        query.trim().trim_end_matches(';')
    );
    let value: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(wrapped))
        .fetch_optional(&mut conn)
        .await
        .map_err(|e| PgError::from_sqlx("running the query check", e))?;
    let _ = conn.close().await;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn scan(text: &str) -> RestoreErrors {
        scan_restore_stderr(text.as_bytes()).await
    }

    #[test]
    fn only_17_and_newer_tools_on_older_servers_are_let_past_their_setting() {
        assert!(needs_tolerant_restore(18, 15));
        assert!(needs_tolerant_restore(17, 16));
        assert!(!needs_tolerant_restore(18, 17));
        assert!(!needs_tolerant_restore(18, 18));
        assert!(!needs_tolerant_restore(16, 15));
    }

    #[tokio::test]
    async fn the_transaction_timeout_setting_is_the_only_ignorable_error() {
        // pg_restore 18.6 into PostgreSQL 15.18, as printed (two parallel jobs: one per session).
        let only = "pg_restore: error: could not execute query: ERROR:  unrecognized configuration parameter \"transaction_timeout\"\n\
                    Command was: SET transaction_timeout = 0;\n\
                    pg_restore: error: could not execute query: ERROR:  unrecognized configuration parameter \"transaction_timeout\"\n\
                    Command was: SET transaction_timeout = 0;\n\
                    pg_restore: warning: errors ignored on restore: 2\n";
        let errors = scan(only).await;
        assert_eq!((errors.errors, errors.ignorable), (2, 2));
        assert!(errors.only_ignorable() && errors.first.is_none());

        let mixed = format!(
            "{}pg_restore: error: could not execute query: ERROR:  relation \"orders\" already exists\nCommand was: CREATE TABLE public.orders (\n    id bigint\n);\npg_restore: warning: errors ignored on restore: 3\n",
            &only[..only.find("pg_restore: warning").unwrap()]
        );
        let errors = scan(&mixed).await;
        assert_eq!((errors.errors, errors.ignorable), (3, 2));
        assert!(!errors.only_ignorable());
        let first = errors.first.unwrap();
        assert!(first.starts_with("could not execute query: ERROR:  relation \"orders\" already exists\nCommand was: CREATE TABLE public.orders ("), "{first}");

        // A failure without error entries (killed, unreadable input) is not "only ignorable".
        assert!(
            !scan("pg_restore: warning: something\n")
                .await
                .only_ignorable()
        );
    }

    #[tokio::test]
    async fn huge_echoed_statements_are_cut() {
        let text = format!(
            "pg_restore: error: could not execute query: ERROR:  syntax error\nCommand was: {}\n",
            "x".repeat(1_000_000)
        );
        let errors = scan(&text).await;
        assert_eq!(errors.errors, 1);
        assert!(errors.first.unwrap().len() <= 2 * STDERR_TAIL);
        assert!(errors.tail.len() <= STDERR_TAIL);
    }
}
