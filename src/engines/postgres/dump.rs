//! Logical backups of PostgreSQL: a snapshot exported from a `REPEATABLE READ` transaction, the table
//! statistics taken in it, and `pg_dump --snapshot` of exactly that state.
//!
//! The session that holds the snapshot also holds [`BACKUP_LOCK_KEY`], a session advisory lock of the
//! database: two backups of one database never run at once, across schedules, a MigrationRun's backup
//! and operator restarts (the lock dies with its connection). Everything here runs with the
//! environment's own credentials, never a server admin's: a backup can read only what the tenant can.
//!
//! `pg_dump` gets its credentials through a passfile in a private temporary directory (mode 0600) and
//! its connection through `PG*` variables of a cleared environment, never through argv, where a
//! database name such as `x host=elsewhere` would be read as a connection string.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
};

use sqlx::{Connection, PgConnection, Row};
use tokio::process::{Child, Command};

use super::{PgError, connect_admin, sql};
use crate::{domain::manifest::TableStats, engines::ServerCredentials};

/// The advisory lock a backup holds on its database (distinct from the migration lock).
pub const BACKUP_LOCK_KEY: i64 = 0x4c69_6665_426b_7570;

/// Session settings under which a row's text form is the same at backup and at restore, so content
/// checksums compare (time zone, date and interval style, float digits, bytea format).
pub const STABLE_TEXT_SETTINGS: &str = "set local timezone = 'UTC'; set local datestyle = 'ISO, MDY'; \
     set local intervalstyle = 'postgres'; set local extra_float_digits = 1; set local bytea_output = 'hex'";

/// An exported snapshot held open (with the backup lock) until [`Snapshot::close`] or drop.
pub struct Snapshot {
    conn: PgConnection,
    /// `pg_export_snapshot()`; what `pg_dump --snapshot` imports.
    pub id: String,
    /// `server_version` of the server.
    pub server_version: String,
    /// `server_version_num / 10000`.
    pub server_major: u32,
}

/// Opens the snapshot of `database`; `Ok(None)` when another backup of it holds the lock.
pub async fn open_snapshot(
    creds: &ServerCredentials,
    database: &str,
) -> Result<Option<Snapshot>, PgError> {
    // Pinned search_path: the statements below call built-ins only, never an object of the tenant's.
    let mut conn = connect_admin(creds, database).await?;
    let locked: bool = sqlx::query_scalar("select pg_catalog.pg_try_advisory_lock($1)")
        .bind(BACKUP_LOCK_KEY)
        .fetch_one(&mut conn)
        .await
        .map_err(|e| PgError::from_sqlx("taking the backup lock", e))?;
    if !locked {
        return Ok(None);
    }
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "begin isolation level repeatable read read only; {STABLE_TEXT_SETTINGS}"
    )))
    .execute(&mut conn)
    .await
    .map_err(|e| PgError::from_sqlx("starting the backup transaction", e))?;
    let row = sqlx::query(
        "select pg_catalog.pg_export_snapshot(), pg_catalog.current_setting('server_version'), \
         pg_catalog.current_setting('server_version_num')::int4 / 10000",
    )
    .fetch_one(&mut conn)
    .await
    .map_err(|e| PgError::from_sqlx("exporting the backup snapshot", e))?;
    Ok(Some(Snapshot {
        id: row.get(0),
        server_version: row.get(1),
        server_major: row.get::<i32, _>(2).max(0) as u32,
        conn,
    }))
}

impl Snapshot {
    /// Row counts (and, with `checksums`, content checksums) of every table whose rows `pg_dump`
    /// dumps: ordinary tables and partitions, not catalogs, not tables of extensions.
    pub async fn table_stats(&mut self, checksums: bool) -> Result<Vec<TableStats>, PgError> {
        let tables: Vec<(String, String)> = sqlx::query_as(USER_TABLES)
            .fetch_all(&mut self.conn)
            .await
            .map_err(|e| PgError::from_sqlx("listing tables for the backup", e))?;
        let mut stats = Vec::with_capacity(tables.len());
        for (schema, name) in tables {
            let (rows, checksum) = table_stat(&mut self.conn, &schema, &name, checksums).await?;
            stats.push(TableStats {
                schema,
                name,
                rows,
                checksum,
            });
        }
        Ok(stats)
    }

    /// Ends the transaction and releases the lock.
    pub async fn close(self) {
        let _ = self.conn.close().await;
    }
}

/// The tables a logical dump carries rows of, in a stable order.
pub const USER_TABLES: &str = "select n.nspname::text, c.relname::text \
     from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace \
     where c.relkind = 'r' \
       and n.nspname <> 'information_schema' and n.nspname !~ '^pg_' \
       and not exists (select 1 from pg_catalog.pg_depend d \
                       where d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass \
                         and d.objid = c.oid and d.deptype = 'e') \
     order by 1, 2";

/// Row count and order-independent content checksum (the sum of each row's 64-bit md5 prefix) of one
/// table, in the session's snapshot. One sequential scan; the checksum adds an md5 per row.
pub async fn table_stat(
    conn: &mut PgConnection,
    schema: &str,
    name: &str,
    checksum: bool,
) -> Result<(i64, Option<String>), PgError> {
    let table = format!("{}.{}", sql::ident(schema), sql::ident(name));
    let query = if checksum {
        format!(
            "select pg_catalog.count(*)::int8, pg_catalog.sum(('x' || pg_catalog.substr(pg_catalog.md5(t::pg_catalog.text), 1, 16))::pg_catalog.bit(64)::int8::pg_catalog.numeric)::pg_catalog.text from only {table} t"
        )
    } else {
        format!("select pg_catalog.count(*)::int8, null::pg_catalog.text from only {table}")
    };
    let row = sqlx::query(sqlx::AssertSqlSafe(query))
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| PgError::from_sqlx(format!("counting rows of {schema}.{name}"), e))?;
    let rows: i64 = row.get(0);
    let sum: Option<String> = row.get(1);
    Ok((rows, checksum.then(|| sum.unwrap_or_else(|| "0".into()))))
}

/// The PostgreSQL client programs a backup runs.
#[derive(Clone, Debug)]
pub struct DumpTools {
    /// Directory of `pg_dump` and `pg_restore`; `None`: found on `PATH`.
    pub bin_dir: Option<PathBuf>,
}

impl DumpTools {
    pub fn pg_dump(&self) -> PathBuf {
        self.program("pg_dump")
    }
    pub fn pg_restore(&self) -> PathBuf {
        self.program("pg_restore")
    }
    pub(super) fn program(&self, name: &str) -> PathBuf {
        match &self.bin_dir {
            Some(dir) => dir.join(name),
            None => PathBuf::from(name),
        }
    }

    /// `pg_dump --version` (e.g. `pg_dump (PostgreSQL) 18.6`) and its major version.
    pub async fn dump_version(&self) -> Result<(String, u32), String> {
        tool_version(&self.pg_dump()).await
    }

    /// `pg_dump -Fc` of `database` at `snapshot`, writing the archive to stdout. `compress`: whether
    /// pg_dump compresses the archive itself (false when the stream is compressed afterwards).
    pub fn spawn_dump(
        &self,
        creds: &ServerCredentials,
        database: &str,
        snapshot: &str,
        compress: bool,
        private_dir: &Path,
    ) -> std::io::Result<Child> {
        let mut cmd = clean_command(&self.pg_dump());
        connection_env(&mut cmd, creds, database, private_dir, "lifeboat-backup")?;
        cmd.args(["--format=custom", "--no-password", "--snapshot", snapshot]);
        if !compress {
            cmd.arg("--compress=0");
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
    }

    /// `pg_restore --file=/dev/null` reading an archive from stdin: reads every entry, so a truncated or
    /// damaged archive fails.
    pub fn spawn_restore_check(&self) -> std::io::Result<Child> {
        clean_command(&self.pg_restore())
            .args(["--file=/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
    }
}

/// A client program's `--version` line (e.g. `pg_dump (PostgreSQL) 18.6`) and its major version.
pub async fn tool_version(program: &Path) -> Result<(String, u32), String> {
    let out = clean_command(program)
        .arg("--version")
        .output()
        .await
        .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let major = text
        .rsplit(' ')
        .next()
        .and_then(|v| v.split(['.', 'b', 'r']).next())
        .and_then(|m| m.parse().ok())
        .ok_or_else(|| {
            format!(
                "cannot read the version of {} from {text:?}",
                program.display()
            )
        })?;
    Ok((text, major))
}

/// Last bytes of a tool's stderr kept for a message.
pub const STDERR_TAIL: usize = 1500;

/// The last [`STDERR_TAIL`] bytes of a child's stderr, reading it all in bounded memory (a tenant's
/// database can make a tool print a lot).
pub async fn stderr_tail(mut stderr: impl tokio::io::AsyncRead + Unpin) -> String {
    use tokio::io::AsyncReadExt;
    let mut kept: Vec<u8> = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = stderr.read(&mut buf).await {
        if n == 0 {
            break;
        }
        kept.extend_from_slice(&buf[..n]);
        if kept.len() > 2 * STDERR_TAIL {
            kept.drain(..kept.len() - STDERR_TAIL);
        }
    }
    let start = kept.len().saturating_sub(STDERR_TAIL);
    String::from_utf8_lossy(&kept[start..]).into_owned()
}

/// A command with an empty environment but for what finding and loading programs needs.
pub fn clean_command(program: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear();
    for keep in ["PATH", "LD_LIBRARY_PATH", "TZ", "LANG"] {
        if let Some(v) = std::env::var_os(keep) {
            cmd.env(keep, v);
        }
    }
    cmd
}

/// libpq's connection variables, with the password in a passfile and the CA in a file, both in
/// `private_dir` (created by the caller with mode 0700 and removed after the child ends).
pub fn connection_env(
    cmd: &mut Command,
    creds: &ServerCredentials,
    database: &str,
    private_dir: &Path,
    application_name: &str,
) -> std::io::Result<()> {
    let passfile = private_dir.join("pgpass");
    write_private(
        &passfile,
        format!(
            "{}:{}:{}:{}:{}\n",
            pgpass_field(&creds.host),
            creds.port,
            pgpass_field(database),
            pgpass_field(&creds.username),
            pgpass_field(&creds.password)
        )
        .as_bytes(),
    )?;
    cmd.env("PGHOST", &creds.host)
        .env("PGPORT", creds.port.to_string())
        .env("PGUSER", &creds.username)
        .env("PGDATABASE", database)
        .env("PGPASSFILE", &passfile)
        .env("PGSSLMODE", &creds.sslmode)
        .env("PGAPPNAME", application_name)
        .env("PGCONNECT_TIMEOUT", "10");
    if let Some(ca) = &creds.ca_pem {
        let ca_file = private_dir.join("ca.crt");
        write_private(&ca_file, ca)?;
        cmd.env("PGSSLROOTCERT", ca_file);
    }
    Ok(())
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)
}

/// A passfile field: `:` and `\` escaped with `\` (libpq's rule); a newline cannot be stored.
fn pgpass_field(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace(':', "\\:")
        .replace(['\n', '\r'], "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passfile_fields_are_escaped() {
        assert_eq!(pgpass_field(r"a:b\c"), r"a\:b\\c");
        assert_eq!(pgpass_field("x\ny"), "xy");
    }

    #[test]
    fn credentials_go_to_files_and_variables_never_arguments() {
        let dir = tempfile::tempdir().unwrap();
        let creds = ServerCredentials {
            host: "db".into(),
            port: 5432,
            username: "app".into(),
            password: "s3cret:pw".into(),
            sslmode: "verify-full".into(),
            ca_pem: Some(b"PEM".to_vec()),
        };
        let mut cmd = Command::new("pg_dump");
        connection_env(
            &mut cmd,
            &creds,
            "x host=elsewhere",
            dir.path(),
            "lifeboat-backup",
        )
        .unwrap();
        let std = cmd.as_std();
        assert!(std.get_args().next().is_none());
        let envs: Vec<_> = std
            .get_envs()
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into_owned(),
                    v.map(|v| v.to_string_lossy().into_owned()),
                )
            })
            .collect();
        assert!(
            !envs
                .iter()
                .any(|(_, v)| v.as_deref().is_some_and(|v| v.contains("s3cret")))
        );
        assert!(envs.contains(&("PGDATABASE".into(), Some("x host=elsewhere".into()))));
        let pass = std::fs::read_to_string(dir.path().join("pgpass")).unwrap();
        assert_eq!(pass, "db:5432:x host=elsewhere:app:s3cret\\:pw\n");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("pgpass"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
