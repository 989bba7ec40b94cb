//! Adopting databases that real migration tools built: sqlx-cli, golang-migrate, dbmate, diesel_cli and
//! Flyway (each installed by `e2e/lib/migration-tools.sh`) migrate a fresh database on the platform's
//! PostgreSQL 18 with two migrations in their own file layout; then Lifeboat's runner, given the same
//! history in its names plus one new migration, imports the tool's ledger and applies only the new one.
//! A failed migration the tool left behind stops the run in the tool's words: on PostgreSQL only
//! golang-migrate records one (`dirty`); sqlx, dbmate, diesel and Flyway roll a failed migration back
//! and record nothing (their failed-row words are unit-tested in `migrate::adopt`).
//! Run with the platform up: `eval "$(e2e/platform.sh env)" && cargo test --test adoption`.

mod support;

use std::{path::Path, process::Command, time::Duration};

use lifeboat::{
    domain::migrations::{self, Direction, LintMode, MigrationPhase, OnFailure, RawFile},
    engines::{
        ServerCredentials,
        postgres::migrate::{
            self, NoHooks, Outcome, Prior, RunOptions,
            adopt::{AdoptFrom, Tool},
        },
    },
};
use sqlx::{Connection, PgConnection, Row};

/// The path of a tool, installing it on first use (cached under ~/.cache/lifeboat).
fn tool(function: &str) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/e2e/lib/migration-tools.sh");
    let out = Command::new("bash")
        .args([
            "-c",
            &format!("set -euo pipefail; source {script}; {function}"),
        ])
        .output()
        .expect("bash");
    assert!(
        out.status.success(),
        "{function}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

struct Db {
    pg: support::Postgres,
    name: String,
}

impl Db {
    async fn new(platform: &support::Platform, tool: &str) -> Self {
        let name = format!("lb_adopt_{tool}_{}", support::random_suffix()).replace('-', "_");
        let mut admin = PgConnection::connect(&platform.pg.url("postgres"))
            .await
            .unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("create database {name}")))
            .execute(&mut admin)
            .await
            .unwrap();
        Self {
            pg: platform.pg.clone(),
            name,
        }
    }

    fn url(&self) -> String {
        format!("{}?sslmode=disable", self.pg.url(&self.name))
    }

    fn jdbc(&self) -> String {
        format!(
            "jdbc:postgresql://{}:{}/{}",
            self.pg.host, self.pg.port, self.name
        )
    }

    fn creds(&self) -> ServerCredentials {
        ServerCredentials {
            host: self.pg.host.clone(),
            port: self.pg.port,
            username: self.pg.user.clone(),
            password: self.pg.password.clone(),
            sslmode: "disable".into(),
            ca_pem: None,
        }
    }

    async fn query_i64(&self, sql: &str) -> i64 {
        let mut c = PgConnection::connect(&self.pg.url(&self.name))
            .await
            .unwrap();
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
            .fetch_one(&mut c)
            .await
            .unwrap()
    }

    /// (version, run_uid) of Lifeboat's ledger.
    async fn ledger(&self) -> Vec<(i64, String)> {
        let mut c = PgConnection::connect(&self.pg.url(&self.name))
            .await
            .unwrap();
        sqlx::query("select version, run_uid from lifeboat_schema_migrations order by version")
            .fetch_all(&mut c)
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    }

    /// (version as text, run_uid) of Lifeboat's ledger, in the order the rows were written, and the
    /// type of its `version` column.
    async fn ledger_text(&self) -> (Vec<(String, String)>, String) {
        let mut c = PgConnection::connect(&self.pg.url(&self.name))
            .await
            .unwrap();
        let rows = sqlx::query(
            "select version::text, run_uid from lifeboat_schema_migrations order by applied_at, version::text",
        )
        .fetch_all(&mut c)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
        let column: String = sqlx::query_scalar(
            "select format_type(atttypid, atttypmod) from pg_attribute where attrelid = 'lifeboat_schema_migrations'::regclass and attname = 'version'",
        )
        .fetch_one(&mut c)
        .await
        .unwrap();
        (rows, column)
    }

    async fn drop(self) {
        let mut admin = PgConnection::connect(&self.pg.url("postgres"))
            .await
            .unwrap();
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "drop database if exists {} with (force)",
            self.name
        )))
        .execute(&mut admin)
        .await;
    }
}

/// Runs a tool; `ok`: whether it must succeed (else it must fail). Returns its output.
fn run_tool(program: &str, args: &[&str], cwd: Option<&Path>, ok: bool) -> String {
    let mut cmd = Command::new(program);
    cmd.args(args);
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    let out = cmd.output().unwrap_or_else(|e| panic!("{program}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.success(), ok, "{program} {args:?}: {text}");
    text
}

fn write(dir: &Path, files: &[(&str, &str)]) {
    for (name, content) in files {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
}

const A: &str = "create table customers (id bigint primary key, name text);";
const A_DOWN: &str = "drop table customers;";
const B: &str = "create table orders (id bigint primary key, customer_id bigint);";
const B_DOWN: &str = "drop table orders;";
const C: &str = "create table invoices (id bigint primary key);";
const C_DOWN: &str = "drop table invoices;";
const BROKEN: &str = "create table broken (id bigint); insert into nowhere values (1);";

fn options(adopt: AdoptFrom) -> RunOptions {
    RunOptions {
        run_uid: format!("adopt-{}", support::random_suffix()),
        label: "test/adoption".into(),
        direction: Direction::Up,
        target_version: None,
        on_failure: OnFailure::Rollback,
        lint: LintMode::Enforce,
        lint_rules: Default::default(),
        adopt,
        baseline_version: None,
        lock_timeout: Duration::from_secs(5),
        statement_timeout: None,
    }
}

async fn lifeboat(db: &Db, files: &[(&str, &str)], adopt: AdoptFrom) -> Outcome {
    let raw: Vec<RawFile> = files
        .iter()
        .map(|(n, c)| RawFile::new("cm", n, *c))
        .collect();
    let parsed = migrations::source::parse(&raw).unwrap();
    migrate::run(
        &db.creds(),
        &db.name,
        &parsed,
        &options(adopt),
        Prior::default(),
        &mut NoHooks,
    )
    .await
    .unwrap()
}

/// The history a tool applied (versions `a`, `b`) plus a new migration `c`, in Lifeboat's names.
fn history(a: i64, b: i64, c: i64) -> Vec<(String, &'static str)> {
    vec![
        (format!("{a}_customers.up.sql"), A),
        (format!("{a}_customers.down.sql"), A_DOWN),
        (format!("{b}_orders.up.sql"), B),
        (format!("{b}_orders.down.sql"), B_DOWN),
        (format!("{c}_invoices.up.sql"), C),
        (format!("{c}_invoices.down.sql"), C_DOWN),
    ]
}

/// Lifeboat imports what the tool applied (`imported` rows from `tool`), applies only `c`, and every
/// table exists once.
async fn assert_adopted(db: &Db, tool: Tool, files: &[(String, &str)], imported: &[i64], c: i64) {
    let files: Vec<(&str, &str)> = files.iter().map(|(n, s)| (n.as_str(), *s)).collect();
    let out = lifeboat(db, &files, AdoptFrom::Auto).await;
    assert_eq!(
        out.phase,
        MigrationPhase::Succeeded,
        "{}: {out:#?}",
        tool.name()
    );
    let got = out.state.imported.clone().expect("imported");
    assert_eq!(
        (got.tool, got.count),
        (Some(tool), imported.len()),
        "{out:#?}"
    );
    assert_eq!(
        out.state
            .applied
            .listed()
            .iter()
            .map(|r| r.version.as_whole().unwrap())
            .collect::<Vec<_>>(),
        vec![c],
        "only the new migration runs"
    );
    assert!(
        out.message.starts_with(&format!(
            "Recorded {} migration(s) as applied from {}'s {}",
            imported.len(),
            tool.name(),
            tool.table()
        )),
        "{}",
        out.message
    );
    let ledger = db.ledger().await;
    let mut expected: Vec<(i64, String)> = imported
        .iter()
        .map(|v| (*v, format!("imported:{}", tool.name())))
        .collect();
    expected.push((c, ledger.last().unwrap().1.clone()));
    assert_eq!(ledger, expected);
    let tables = db
        .query_i64("select count(*) from pg_tables where schemaname = 'public' and tablename in ('customers', 'orders', 'invoices')")
        .await;
    assert_eq!(tables, 3);
    // A second run: Lifeboat's own ledger now rules; nothing is imported again.
    let again = lifeboat(db, &files, AdoptFrom::Auto).await;
    assert_eq!(again.phase, MigrationPhase::Succeeded, "{again:#?}");
    assert!(again.state.imported.is_none());
}

#[tokio::test]
async fn sqlx_cli_history_is_imported_and_a_failed_row_stops_the_run() {
    let platform = require_platform!();
    let sqlx = tool("tool_sqlx");
    let dir = tempfile::tempdir().unwrap();
    let db = Db::new(&platform, "sqlx").await;
    write(
        dir.path(),
        &[
            ("1_customers.up.sql", A),
            ("1_customers.down.sql", A_DOWN),
            ("2_orders.up.sql", B),
            ("2_orders.down.sql", B_DOWN),
        ],
    );
    let source = dir.path().to_str().unwrap();
    run_tool(
        &sqlx,
        &[
            "migrate",
            "run",
            "--source",
            source,
            "--database-url",
            &db.url(),
        ],
        None,
        true,
    );
    assert_adopted(&db, Tool::Sqlx, &history(1, 2, 3), &[1, 2], 3).await;
    db.drop().await;

    // A file changed after sqlx applied it: its SHA-384 no longer matches.
    let db = Db::new(&platform, "sqlx_drift").await;
    run_tool(
        &sqlx,
        &[
            "migrate",
            "run",
            "--source",
            source,
            "--database-url",
            &db.url(),
        ],
        None,
        true,
    );
    let mut changed = history(1, 2, 3);
    changed[2].1 = "create table orders (id bigint primary key);";
    let files: Vec<(&str, &str)> = changed.iter().map(|(n, s)| (n.as_str(), *s)).collect();
    let out = lifeboat(&db, &files, AdoptFrom::Auto).await;
    assert_eq!(
        (out.phase, out.reason),
        (MigrationPhase::Failed, "ChecksumMismatch"),
        "{out:#?}"
    );
    assert!(
        out.message
            .contains("2_orders.up.sql is not the script sqlx applied as version 2"),
        "{}",
        out.message
    );
    db.drop().await;
}

#[tokio::test]
async fn golang_migrate_history_is_imported_and_dirty_stops_the_run() {
    let platform = require_platform!();
    let migrate = tool("tool_golang_migrate");
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        &[
            ("1_customers.up.sql", A),
            ("1_customers.down.sql", A_DOWN),
            ("2_orders.up.sql", B),
            ("2_orders.down.sql", B_DOWN),
        ],
    );
    let path = dir.path().to_str().unwrap();
    let db = Db::new(&platform, "gomigrate").await;
    run_tool(
        &migrate,
        &["-path", path, "-database", &db.url(), "up"],
        None,
        true,
    );
    assert_adopted(&db, Tool::GolangMigrate, &history(1, 2, 3), &[1, 2], 3).await;
    db.drop().await;

    // A failed migration leaves golang-migrate's ledger dirty.
    write(
        dir.path(),
        &[
            ("3_broken.up.sql", BROKEN),
            ("3_broken.down.sql", "drop table if exists broken;"),
        ],
    );
    let db = Db::new(&platform, "gomigrate_dirty").await;
    run_tool(
        &migrate,
        &["-path", path, "-database", &db.url(), "up"],
        None,
        false,
    );
    let out = lifeboat(
        &db,
        &[
            ("1_customers.up.sql", A),
            ("2_orders.up.sql", B),
            ("3_broken.up.sql", BROKEN),
        ],
        AdoptFrom::Auto,
    )
    .await;
    assert_eq!(
        (out.phase, out.reason),
        (MigrationPhase::Failed, "ForeignMigrationFailed"),
        "{out:#?}"
    );
    assert!(
        out.message
            .contains("\"Dirty database version 3. Fix and force version.\""),
        "{}",
        out.message
    );
    assert_eq!(
        db.query_i64(
            "select count(*) from pg_tables where tablename = 'lifeboat_schema_migrations'"
        )
        .await,
        0,
        "nothing was changed"
    );
    db.drop().await;
}

#[tokio::test]
async fn dbmate_history_is_imported() {
    let platform = require_platform!();
    let dbmate = tool("tool_dbmate");
    let dir = tempfile::tempdir().unwrap();
    let a = format!("-- migrate:up\n{A}\n-- migrate:down\n{A_DOWN}\n");
    let b = format!("-- migrate:up\n{B}\n-- migrate:down\n{B_DOWN}\n");
    write(
        dir.path(),
        &[
            ("20240101000000_customers.sql", &a),
            ("20240102000000_orders.sql", &b),
        ],
    );
    let db = Db::new(&platform, "dbmate").await;
    let migrations_dir = dir.path().to_str().unwrap();
    run_tool(
        &dbmate,
        &[
            "--url",
            &db.url(),
            "--migrations-dir",
            migrations_dir,
            "--no-dump-schema",
            "up",
        ],
        None,
        true,
    );
    let c = format!("-- migrate:up\n{C}\n-- migrate:down\n{C_DOWN}\n");
    let files = vec![
        ("20240101000000_customers.sql".to_string(), a.as_str()),
        ("20240102000000_orders.sql".to_string(), b.as_str()),
        ("20240103000000_invoices.sql".to_string(), c.as_str()),
    ];
    assert_adopted(
        &db,
        Tool::Dbmate,
        &files,
        &[20_240_101_000_000, 20_240_102_000_000],
        20_240_103_000_000,
    )
    .await;
    db.drop().await;
}

#[tokio::test]
async fn diesel_history_with_version_zero_is_imported() {
    let platform = require_platform!();
    let diesel = tool("tool_diesel");
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        &[
            ("diesel.toml", ""),
            ("migrations/2024-01-01-000000_customers/up.sql", A),
            ("migrations/2024-01-01-000000_customers/down.sql", A_DOWN),
            ("migrations/2024-01-02-000000_orders/up.sql", B),
            ("migrations/2024-01-02-000000_orders/down.sql", B_DOWN),
        ],
    );
    let db = Db::new(&platform, "diesel").await;
    // `diesel setup` writes and runs 00000000000000_diesel_initial_setup (version 0), then the rest.
    run_tool(
        &diesel,
        &["setup", "--database-url", &db.url()],
        Some(dir.path()),
        true,
    );
    run_tool(
        &diesel,
        &["migration", "run", "--database-url", &db.url()],
        Some(dir.path()),
        true,
    );
    let setup = dir
        .path()
        .join("migrations/00000000000000_diesel_initial_setup");
    let setup_up = std::fs::read_to_string(setup.join("up.sql")).unwrap();
    let setup_down = std::fs::read_to_string(setup.join("down.sql")).unwrap();
    let mut files = vec![
        (
            "00000000000000_diesel_initial_setup.up.sql".to_string(),
            setup_up.as_str(),
        ),
        (
            "00000000000000_diesel_initial_setup.down.sql".to_string(),
            setup_down.as_str(),
        ),
    ];
    files.extend(history(
        20_240_101_000_000,
        20_240_102_000_000,
        20_240_103_000_000,
    ));
    assert_adopted(
        &db,
        Tool::Diesel,
        &files,
        &[0, 20_240_101_000_000, 20_240_102_000_000],
        20_240_103_000_000,
    )
    .await;
    db.drop().await;
}

#[tokio::test]
async fn flyway_history_is_imported() {
    let platform = require_platform!();
    let flyway = tool("tool_flyway");
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        &[("V1__customers.sql", A), ("V2__orders.sql", B)],
    );
    let db = Db::new(&platform, "flyway").await;
    // The wrapper of e2e/lib/migration-tools.sh: `flyway <jdbc-url> <user> <password> <dir> migrate`.
    run_tool(
        &flyway,
        &[
            &db.jdbc(),
            &db.pg.user,
            &db.pg.password,
            dir.path().to_str().unwrap(),
            "migrate",
        ],
        None,
        true,
    );
    let files = vec![
        ("V1__customers.sql".to_string(), A),
        ("U1__customers.sql".to_string(), A_DOWN),
        ("V2__orders.sql".to_string(), B),
        ("U2__orders.sql".to_string(), B_DOWN),
        ("V3__invoices.sql".to_string(), C),
        ("U3__invoices.sql".to_string(), C_DOWN),
    ];
    assert_adopted(&db, Tool::Flyway, &files, &[1, 2], 3).await;
    db.drop().await;
}

/// Flyway's dotted versions: Flyway applies 1 and 1.1; Lifeboat, given the history plus 1.2 and 1.10,
/// imports the two and applies 1.2 before 1.10 (Flyway's order, not the text's); its ledger's version
/// column is text. A `down` run to `"1.1"` reverts 1.10, then 1.2.
#[tokio::test]
async fn flyway_dotted_versions_are_imported_and_ordered_as_flyway_orders_them() {
    let platform = require_platform!();
    let flyway = tool("tool_flyway");
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        &[("V1__customers.sql", A), ("V1.1__orders.sql", B)],
    );
    let db = Db::new(&platform, "flyway_dotted").await;
    run_tool(
        &flyway,
        &[
            &db.jdbc(),
            &db.pg.user,
            &db.pg.password,
            dir.path().to_str().unwrap(),
            "migrate",
        ],
        None,
        true,
    );
    const NOTES: &str = "create table notes (id bigint primary key);";
    let files = [
        ("V1__customers.sql", A),
        ("U1__customers.sql", A_DOWN),
        ("V1.1__orders.sql", B),
        ("U1.1__orders.sql", B_DOWN),
        ("V1.10__notes.sql", NOTES),
        ("U1.10__notes.sql", "drop table notes;"),
        ("V1.2__invoices.sql", C),
        ("U1.2__invoices.sql", C_DOWN),
    ];
    let out = lifeboat(&db, &files, AdoptFrom::Auto).await;
    assert_eq!(out.phase, MigrationPhase::Succeeded, "{out:#?}");
    let imported = out.state.imported.clone().expect("imported");
    assert_eq!(
        (
            imported.tool,
            imported.count,
            imported.newest.map(|v| v.to_string())
        ),
        (Some(Tool::Flyway), 2, Some("1.1".to_string()))
    );
    let applied: Vec<String> = out
        .state
        .applied
        .listed()
        .iter()
        .map(|r| r.version.to_string())
        .collect();
    assert_eq!(applied, ["1.2", "1.10"], "Flyway's order");
    assert_eq!(
        out.state.to_version.map(|v| v.to_string()),
        Some("1.10".into())
    );
    let (ledger, column) = db.ledger_text().await;
    assert_eq!(column, "text");
    assert_eq!(
        ledger.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(),
        ["1", "1.1", "1.2", "1.10"]
    );

    let raw: Vec<RawFile> = files
        .iter()
        .map(|(n, s)| RawFile::new("cm", n, *s))
        .collect();
    let parsed = migrations::source::parse(&raw).unwrap();
    let mut opts = options(AdoptFrom::Auto);
    opts.direction = Direction::Down;
    opts.target_version = Some("1.1".parse().unwrap());
    // Reverting drops tables, which lint's ban-drop-table calls an error.
    opts.lint = LintMode::Warn;
    let down = migrate::run(
        &db.creds(),
        &db.name,
        &parsed,
        &opts,
        Prior::default(),
        &mut NoHooks,
    )
    .await
    .unwrap();
    assert_eq!(down.phase, MigrationPhase::Succeeded, "{down:#?}");
    let reverted: Vec<String> = down
        .state
        .applied
        .listed()
        .iter()
        .map(|r| r.version.to_string())
        .collect();
    assert_eq!(reverted, ["1.10", "1.2"], "newest first");
    let tables = db
        .query_i64("select count(*) from pg_tables where schemaname = 'public' and tablename in ('customers', 'orders', 'invoices', 'notes')")
        .await;
    assert_eq!(tables, 2);
    db.drop().await;
}

/// A ledger Lifeboat wrote for whole-number versions (`bigint`) gains a dotted version: the column
/// becomes text in place, keeping its rows, and the new migration applies after them.
#[tokio::test]
async fn a_bigint_ledger_takes_a_dotted_version() {
    let platform = require_platform!();
    let db = Db::new(&platform, "ledger_upgrade").await;
    let whole = [
        ("V1__customers.sql", A),
        ("U1__customers.sql", A_DOWN),
        ("V2__orders.sql", B),
        ("U2__orders.sql", B_DOWN),
    ];
    let out = lifeboat(&db, &whole, AdoptFrom::None).await;
    assert_eq!(out.phase, MigrationPhase::Succeeded, "{out:#?}");
    assert_eq!(db.ledger_text().await.1, "bigint");
    let dotted = [
        ("V1__customers.sql", A),
        ("U1__customers.sql", A_DOWN),
        ("V2__orders.sql", B),
        ("U2__orders.sql", B_DOWN),
        ("V2.1__invoices.sql", C),
        ("U2.1__invoices.sql", C_DOWN),
    ];
    let out = lifeboat(&db, &dotted, AdoptFrom::None).await;
    assert_eq!(out.phase, MigrationPhase::Succeeded, "{out:#?}");
    let (ledger, column) = db.ledger_text().await;
    assert_eq!(column, "text");
    assert_eq!(
        ledger.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(),
        ["1", "2", "2.1"]
    );
    // Whole-number runs keep working on the text column.
    let more = [
        ("V1__customers.sql", A),
        ("U1__customers.sql", A_DOWN),
        ("V2__orders.sql", B),
        ("U2__orders.sql", B_DOWN),
        ("V2.1__invoices.sql", C),
        ("U2.1__invoices.sql", C_DOWN),
        (
            "V3__notes.sql",
            "create table notes (id bigint primary key);",
        ),
    ];
    let out = lifeboat(&db, &more, AdoptFrom::None).await;
    assert_eq!(out.phase, MigrationPhase::Succeeded, "{out:#?}");
    assert_eq!(db.ledger_text().await.0.len(), 4);
    db.drop().await;
}

/// Two tools' ledgers in one database: `auto` refuses and names both; `adoptFrom` picks one. A
/// baseline marks a hand-built database's history without running it.
#[tokio::test]
async fn two_ledgers_are_ambiguous_and_a_baseline_needs_none() {
    let platform = require_platform!();
    let sqlx = tool("tool_sqlx");
    let migrate = tool("tool_golang_migrate");
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        &[("1_customers.up.sql", A), ("1_customers.down.sql", A_DOWN)],
    );
    let path = dir.path().to_str().unwrap();
    let db = Db::new(&platform, "two").await;
    run_tool(
        &sqlx,
        &[
            "migrate",
            "run",
            "--source",
            path,
            "--database-url",
            &db.url(),
        ],
        None,
        true,
    );
    // golang-migrate on the same files: its table beside sqlx's (the table customers exists: use a
    // second schema-neutral migration for it).
    let dir2 = tempfile::tempdir().unwrap();
    write(
        dir2.path(),
        &[
            ("1_noop.up.sql", "select 1;"),
            ("1_noop.down.sql", "select 1;"),
        ],
    );
    run_tool(
        &migrate,
        &[
            "-path",
            dir2.path().to_str().unwrap(),
            "-database",
            &db.url(),
            "up",
        ],
        None,
        true,
    );
    let files = [("1_customers.up.sql", A), ("2_orders.up.sql", B)];
    let out = lifeboat(&db, &files, AdoptFrom::Auto).await;
    assert_eq!(
        (out.phase, out.reason),
        (MigrationPhase::Failed, "AmbiguousLedger"),
        "{out:#?}"
    );
    assert!(
        out.message
            .contains("sqlx (_sqlx_migrations) and golang-migrate (schema_migrations)"),
        "{}",
        out.message
    );
    let out = lifeboat(&db, &files, AdoptFrom::Sqlx).await;
    assert_eq!(out.phase, MigrationPhase::Succeeded, "{out:#?}");
    assert_eq!(
        db.ledger().await.iter().map(|r| r.0).collect::<Vec<_>>(),
        vec![1, 2]
    );
    db.drop().await;

    let db = Db::new(&platform, "baseline").await;
    let mut c = PgConnection::connect(&db.pg.url(&db.name)).await.unwrap();
    sqlx::raw_sql(A).execute(&mut c).await.unwrap();
    let raw: Vec<RawFile> = files
        .iter()
        .map(|(n, s)| RawFile::new("cm", n, *s))
        .collect();
    let parsed = migrations::source::parse(&raw).unwrap();
    let mut opts = options(AdoptFrom::Auto);
    opts.baseline_version = Some(support::v(1));
    let out = migrate::run(
        &db.creds(),
        &db.name,
        &parsed,
        &opts,
        Prior::default(),
        &mut NoHooks,
    )
    .await
    .unwrap();
    assert_eq!(out.phase, MigrationPhase::Succeeded, "{out:#?}");
    assert_eq!(
        db.ledger().await,
        vec![(1, "baseline".to_string()), (2, opts.run_uid.clone())]
    );
    db.drop().await;
}
