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
        DumpTools, STABLE_TEXT_SETTINGS, USER_TABLES, clean_command, connection_env, table_stat,
    },
    provision::{self, Target},
    sql,
};
use crate::{domain::manifest::TableStats, engines::ServerCredentials};

/// A named query check may run this long.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(60);

/// The scratch database and role of a drill: one name, derived from the drill's UID.
pub fn scratch_target(drill_uid: &str) -> Target {
    let name = format!(
        "lifeboat_drill_{}",
        &sql::sha256_hex(drill_uid.as_bytes())[..16]
    );
    Target {
        database: name.clone(),
        role: name,
        template: None,
        allowed_templates: Vec::new(),
        connection_limit: Some(8),
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
    /// `pg_restore` of an archive read from stdin into `database`, as `creds` (never the admin),
    /// owning everything it creates, stopping at the first error.
    pub fn spawn_restore(
        &self,
        creds: &ServerCredentials,
        database: &str,
        private_dir: &Path,
    ) -> std::io::Result<Child> {
        let mut cmd = clean_command(&self.pg_restore());
        connection_env(&mut cmd, creds, database, private_dir, "lifeboat-restore")?;
        cmd.args([
            "--no-owner",
            "--no-privileges",
            "--exit-on-error",
            "--no-password",
            "--dbname",
            database,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
    }
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
