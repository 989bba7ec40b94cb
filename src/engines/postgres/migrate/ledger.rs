//! The ledger table `lifeboat_schema_migrations`: which migrations are applied, with their checksum,
//! when, how long they took, and which MigrationRun applied them. A transactional migration's row is
//! written in the migration's own transaction, so the ledger is exactly what committed. A
//! no-transaction migration's row is written `complete = false` before it starts and completed after:
//! a row left incomplete means the migration may be partly applied, and every later run refuses to
//! start until a person has looked (reason `PartiallyApplied`).
//!
//! Beside it, `lifeboat_schema_reverts` records every revert (by a `down` run or a rollback), written in
//! the revert's own transaction: a `down` run resumed after a restart knows exactly what it reverted
//! from the database, not from a status list (which is bounded).
//!
//! Versions are `bigint` in both tables, as they always were; a history with a dotted Flyway version
//! (`1.2.3`) turns the column into `text` the first time it is migrated ([`ensure`] with `dotted`).
//! SQL here reads `version::text` and writes versions as untyped literals, so it works with either
//! column type; ordering is done in Rust, as Flyway orders versions ([`Version`]).

use sqlx::{AssertSqlSafe, PgConnection, Row as _};

use crate::domain::migrations::model::{LedgerRow, Version};
use crate::engines::postgres::PgError;

/// The ledger table, always in schema `public`: where it lives never depends on the session's
/// `search_path` (which a migration may change).
pub const TABLE: &str = "public.lifeboat_schema_migrations";

/// Creates the ledger table when missing. Called with the migration lock held, so two runs never race.
pub const CREATE: &str = "create table if not exists public.lifeboat_schema_migrations (
    version bigint primary key,
    name text not null,
    checksum text not null,
    applied_at timestamptz not null default pg_catalog.now(),
    execution_ms bigint not null default 0,
    run_uid text not null,
    complete boolean not null default true
)";

/// The revert log, in schema `public` like the ledger.
pub const REVERTS_TABLE: &str = "public.lifeboat_schema_reverts";

/// Creates the revert log when missing (with the lock held, like [`CREATE`]).
pub const CREATE_REVERTS: &str = "create table if not exists public.lifeboat_schema_reverts (
    id bigint generated always as identity primary key,
    version bigint not null,
    name text not null,
    checksum text not null,
    reverted_at timestamptz not null default pg_catalog.now(),
    run_uid text not null
);
create index if not exists lifeboat_schema_reverts_run_uid on public.lifeboat_schema_reverts (run_uid)";

fn err(context: &str) -> impl FnOnce(sqlx::Error) -> PgError + '_ {
    move |e| PgError::from_sqlx(context, e)
}

/// Whether the ledger table exists.
pub async fn exists(conn: &mut PgConnection) -> Result<bool, PgError> {
    table_exists(conn, TABLE).await
}

async fn table_exists(conn: &mut PgConnection, table: &str) -> Result<bool, PgError> {
    sqlx::query("select pg_catalog.to_regclass($1) is not null")
        .bind(table)
        .fetch_one(&mut *conn)
        .await
        .map(|r| r.get::<bool, _>(0))
        .map_err(err("looking for the ledger tables"))
}

/// Creates the ledger tables when missing; with `dotted` (the source has a dotted version), makes
/// their `version` columns `text` where they are still `bigint`.
pub async fn ensure(conn: &mut PgConnection, dotted: bool) -> Result<(), PgError> {
    sqlx::raw_sql(AssertSqlSafe(format!("{CREATE};\n{CREATE_REVERTS}")))
        .execute(&mut *conn)
        .await
        .map(|_| ())
        .map_err(err(
            "creating the ledger tables lifeboat_schema_migrations and lifeboat_schema_reverts",
        ))?;
    if !dotted {
        return Ok(());
    }
    for table in [TABLE, REVERTS_TABLE] {
        let bigint: bool = sqlx::query(
            "select a.atttypid = 'pg_catalog.int8'::pg_catalog.regtype from pg_catalog.pg_attribute a
              where a.attrelid = pg_catalog.to_regclass($1) and a.attname = 'version'",
        )
        .bind(table)
        .fetch_one(&mut *conn)
        .await
        .map(|r| r.get(0))
        .map_err(err("reading the ledger's version column type"))?;
        if bigint {
            sqlx::raw_sql(AssertSqlSafe(format!(
                "alter table {table} alter column version type text using version::text"
            )))
            .execute(&mut *conn)
            .await
            .map_err(err(
                "changing the ledger's version column to text for dotted versions",
            ))?;
        }
    }
    Ok(())
}

/// A version read from a ledger table (`version::text`).
fn read_version(text: &str) -> Result<Version, PgError> {
    text.parse().map_err(|e| PgError::Other {
        context: "reading the ledger table lifeboat_schema_migrations".into(),
        detail: format!("it holds version {text:?}, which is not a version: {e}"),
    })
}

/// Migrations `run_uid` reverted, in the order it reverted them (each version once, at its last revert).
pub async fn reverted_by(
    conn: &mut PgConnection,
    run_uid: &str,
) -> Result<Vec<LedgerRow>, PgError> {
    if !table_exists(conn, REVERTS_TABLE).await? {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(
        "select version::text, name, checksum from public.lifeboat_schema_reverts r where run_uid = $1
           and id = (select max(id) from public.lifeboat_schema_reverts s where s.run_uid = r.run_uid and s.version = r.version)
         order by id",
    )
    .bind(run_uid)
    .fetch_all(&mut *conn)
    .await
    .map_err(err("reading the table lifeboat_schema_reverts"))?;
    rows.into_iter()
        .map(|r| {
            Ok(LedgerRow {
                version: read_version(r.get(0))?,
                name: r.get(1),
                checksum: r.get(2),
                execution_ms: 0,
                run_uid: run_uid.to_string(),
                complete: true,
            })
        })
        .collect()
}

/// SQL that records an applied migration, for a batch sent with the migration itself. Values are
/// written as escape-string literals, which read the same whatever `standard_conforming_strings` the
/// migration set. `execution_ms` counts from the receipt of the batch.
pub fn insert_sql(row: &LedgerRow) -> String {
    format!(
        "insert into public.lifeboat_schema_migrations (version, name, checksum, execution_ms, run_uid, complete) values ('{}', {}, {}, (pg_catalog.date_part('epoch', pg_catalog.clock_timestamp() - pg_catalog.statement_timestamp()) * 1000)::bigint, {}, {})",
        row.version,
        e_literal(&row.name),
        e_literal(&row.checksum),
        e_literal(&row.run_uid),
        row.complete
    )
}

/// SQL that removes a reverted migration's row and logs the revert, for a batch.
pub fn revert_sql(row: &LedgerRow) -> String {
    format!(
        "delete from public.lifeboat_schema_migrations where version = '{v}'; insert into public.lifeboat_schema_reverts (version, name, checksum, run_uid) values ('{v}', {}, {}, {})",
        e_literal(&row.name),
        e_literal(&row.checksum),
        e_literal(&row.run_uid),
        v = row.version,
    )
}

/// An escape-string literal: `E'it\'s'`. Backslashes and quotes are escaped, so the value reads the
/// same with `standard_conforming_strings` on or off.
fn e_literal(value: &str) -> String {
    format!("E'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Every row, by version; empty when the table does not exist yet.
pub async fn read(conn: &mut PgConnection) -> Result<Vec<LedgerRow>, PgError> {
    if !exists(conn).await? {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(
        "select version::text, name, checksum, execution_ms, run_uid, complete from public.lifeboat_schema_migrations",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(err("reading the ledger table lifeboat_schema_migrations"))?;
    let mut rows = rows
        .into_iter()
        .map(|r| {
            Ok(LedgerRow {
                version: read_version(r.get(0))?,
                name: r.get(1),
                checksum: r.get(2),
                execution_ms: r.get(3),
                run_uid: r.get(4),
                complete: r.get(5),
            })
        })
        .collect::<Result<Vec<_>, PgError>>()?;
    rows.sort_by(|a, b| a.version.cmp(&b.version));
    Ok(rows)
}

/// Records an applied migration (inside the migration's transaction, or `complete = false` before a
/// no-transaction migration starts).
pub async fn insert(conn: &mut PgConnection, row: &LedgerRow) -> Result<(), PgError> {
    sqlx::query(AssertSqlSafe(format!(
        "insert into public.lifeboat_schema_migrations (version, name, checksum, execution_ms, run_uid, complete) values ('{}', $1, $2, $3, $4, $5)",
        row.version
    )))
    .bind(&row.name)
    .bind(&row.checksum)
    .bind(row.execution_ms)
    .bind(&row.run_uid)
    .bind(row.complete)
    .execute(&mut *conn)
    .await
    .map(|_| ())
    .map_err(err("recording the migration in lifeboat_schema_migrations"))
}

/// Records many rows in one statement (an imported ledger, a baseline).
pub async fn insert_all(conn: &mut PgConnection, rows: &[LedgerRow]) -> Result<(), PgError> {
    let col = |f: fn(&LedgerRow) -> String| rows.iter().map(f).collect::<Vec<String>>();
    sqlx::query(
        "insert into public.lifeboat_schema_migrations (version, name, checksum, execution_ms, run_uid, complete)
         select (pg_catalog.json_populate_record(null::public.lifeboat_schema_migrations, pg_catalog.json_build_object('version', v))).version, n, c, e, u, true
           from rows from (pg_catalog.unnest($1::text[]), pg_catalog.unnest($2::text[]), pg_catalog.unnest($3::text[]), pg_catalog.unnest($4::bigint[]), pg_catalog.unnest($5::text[])) as t(v, n, c, e, u)",
    )
    .bind(col(|r| r.version.to_string()))
    .bind(col(|r| r.name.clone()))
    .bind(col(|r| r.checksum.clone()))
    .bind(rows.iter().map(|r| r.execution_ms).collect::<Vec<i64>>())
    .bind(col(|r| r.run_uid.clone()))
    .execute(&mut *conn)
    .await
    .map(|_| ())
    .map_err(err("recording the imported migrations in lifeboat_schema_migrations"))
}

/// Marks a row complete (or not), with its execution time.
pub async fn set_complete(
    conn: &mut PgConnection,
    version: &Version,
    complete: bool,
    execution_ms: i64,
) -> Result<(), PgError> {
    sqlx::query(
        "update public.lifeboat_schema_migrations set complete = $2, execution_ms = $3 where version::text = $1",
    )
    .bind(version.to_string())
    .bind(complete)
    .bind(execution_ms)
    .execute(&mut *conn)
    .await
    .map(|_| ())
    .map_err(err("updating lifeboat_schema_migrations"))
}

/// Removes a reverted migration's row and logs the revert (a no-transaction revert; both in one
/// implicit transaction).
pub async fn revert(conn: &mut PgConnection, row: &LedgerRow) -> Result<(), PgError> {
    sqlx::raw_sql(AssertSqlSafe(revert_sql(row)))
        .execute(&mut *conn)
        .await
        .map(|_| ())
        .map_err(err(
            "removing the migration from public.lifeboat_schema_migrations",
        ))
}

/// Removes a row that was only marked (a no-transaction migration that failed on its first statement).
pub async fn remove(conn: &mut PgConnection, version: &Version) -> Result<(), PgError> {
    sqlx::query("delete from public.lifeboat_schema_migrations where version::text = $1")
        .bind(version.to_string())
        .execute(&mut *conn)
        .await
        .map(|_| ())
        .map_err(err(
            "removing the migration from public.lifeboat_schema_migrations",
        ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_literals_hold_quotes_and_backslashes() {
        assert_eq!(e_literal(r"a'b\c"), r"E'a\'b\\c'");
        let sql = insert_sql(&LedgerRow {
            version: Version::whole(7).unwrap(),
            name: "x'); drop table t; --".into(),
            checksum: "ab".into(),
            execution_ms: 0,
            run_uid: "u".into(),
            complete: true,
        });
        assert!(sql.contains(r"E'x\'); drop table t; --'"), "{sql}");
    }
}
