//! The migrations runner against real PostgreSQL, without Kubernetes: lock, ledger, rollback, halt,
//! no-transaction files, down migrations, lint and an interrupted run resumed.
//! Run with the platform up: `eval "$(e2e/platform.sh env)" && cargo test --test migration_runner`.

mod support;

use std::time::Duration;

use lifeboat::{
    domain::migrations::{self, Direction, LintMode, MigrationPhase, OnFailure, RawFile},
    engines::{
        ServerCredentials,
        postgres::migrate::{self, NoHooks, Outcome, Prior, RunOptions, lock::LOCK_KEY},
    },
};
use sqlx::{Connection, PgConnection, Row};

/// A fresh database on the platform's PostgreSQL 18, dropped at the end.
struct Db {
    admin: support::Postgres,
    name: String,
}

impl Db {
    async fn new(platform: &support::Platform) -> Self {
        let name = format!("lb_runner_{}", support::random_suffix());
        let mut admin = PgConnection::connect(&platform.pg.url("postgres"))
            .await
            .unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("create database {name}")))
            .execute(&mut admin)
            .await
            .unwrap();
        Self {
            admin: platform.pg.clone(),
            name,
        }
    }

    fn creds(&self) -> ServerCredentials {
        ServerCredentials {
            host: self.admin.host.clone(),
            port: self.admin.port,
            username: self.admin.user.clone(),
            password: self.admin.password.clone(),
            sslmode: "disable".into(),
            ca_pem: None,
        }
    }

    async fn conn(&self) -> PgConnection {
        PgConnection::connect(&self.admin.url(&self.name))
            .await
            .unwrap()
    }

    async fn tables(&self) -> Vec<String> {
        sqlx::query_scalar("select tablename::text from pg_tables where schemaname = 'public' and tablename not in ('lifeboat_schema_migrations', 'lifeboat_schema_reverts') order by 1")
            .fetch_all(&mut self.conn().await)
            .await
            .unwrap()
    }

    /// (version, run_uid, complete) of every ledger row.
    async fn ledger(&self) -> Vec<(i64, String, bool)> {
        let mut c = self.conn().await;
        if !migrate::ledger::exists(&mut c).await.unwrap() {
            return Vec::new();
        }
        sqlx::query(
            "select version, run_uid, complete from lifeboat_schema_migrations order by version",
        )
        .fetch_all(&mut c)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
    }

    async fn advisory_locks(&self) -> i64 {
        sqlx::query_scalar("select count(*) from pg_locks l join pg_database d on d.oid = l.database where l.locktype = 'advisory' and d.datname = $1")
            .bind(&self.name)
            .fetch_one(&mut self.conn().await)
            .await
            .unwrap()
    }

    async fn drop(self) {
        let mut admin = PgConnection::connect(&self.admin.url("postgres"))
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

fn files(specs: &[(&str, &str)]) -> Vec<migrations::Migration> {
    let raw: Vec<RawFile> = specs
        .iter()
        .map(|(n, c)| RawFile::new("cm", n, *c))
        .collect();
    migrations::source::parse(&raw).unwrap()
}

fn options(uid: &str) -> RunOptions {
    RunOptions {
        run_uid: uid.into(),
        label: format!("test/{uid}"),
        direction: Direction::Up,
        target_version: None,
        on_failure: OnFailure::Rollback,
        lint: LintMode::Off,
        lint_rules: Default::default(),
        adopt: Default::default(),
        baseline_version: None,
        lock_timeout: Duration::from_secs(5),
        statement_timeout: None,
    }
}

async fn run(db: &Db, m: &[migrations::Migration], opts: &RunOptions) -> Outcome {
    migrate::run(
        &db.creds(),
        &db.name,
        m,
        opts,
        Prior::default(),
        &mut NoHooks,
    )
    .await
    .unwrap()
}

const FIVE: &[(&str, &str)] = &[
    (
        "1_users.up.sql",
        "create table users (id bigint primary key);",
    ),
    ("1_users.down.sql", "drop table users;"),
    (
        "2_orders.up.sql",
        "create table orders (id bigint primary key);\ncreate index orders_id on orders (id);",
    ),
    ("2_orders.down.sql", "drop table orders;"),
    (
        "3_broken.up.sql",
        "create table items (id bigint);\n\ninsert into items\n  select * from missing_table;",
    ),
    ("3_broken.down.sql", "drop table items;"),
    ("4_later.up.sql", "create table later (id bigint);"),
    ("4_later.down.sql", "drop table later;"),
];

#[tokio::test]
async fn failing_migration_rolls_back_this_runs_work_and_releases_the_lock() {
    let platform = require_platform!();
    let db = Db::new(&platform).await;
    let m = files(FIVE);
    let out = run(&db, &m, &options("run-a")).await;
    assert_eq!(out.phase, MigrationPhase::RolledBack, "{out:#?}");
    assert_eq!(out.reason, "MigrationFailed");
    let f = out.state.failure.clone().unwrap();
    assert_eq!(f.file.as_deref(), Some("3_broken.up.sql"));
    assert_eq!(f.statement, Some(2), "the insert is the second statement");
    assert_eq!(f.line, Some(4), "missing_table is on line 4");
    assert_eq!(
        f.position,
        Some(35),
        "the server's position, counted within the failing statement"
    );
    assert_eq!(f.sql_state.as_deref(), Some("42P01"));
    assert!(
        f.position.is_some() && f.error.contains("missing_table"),
        "{f:?}"
    );
    assert_eq!(
        out.state
            .applied
            .listed()
            .iter()
            .map(|r| r.version.as_whole().unwrap())
            .collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert_eq!(
        out.state
            .rolled_back
            .listed()
            .iter()
            .map(|r| r.version.as_whole().unwrap())
            .collect::<Vec<_>>(),
        vec![2, 1],
        "undone newest first"
    );
    assert!(
        out.message
            .contains("3_broken.up.sql statement 2 (line 4) failed"),
        "{}",
        out.message
    );
    assert!(
        db.tables().await.is_empty(),
        "nothing left: {:?}",
        db.tables().await
    );
    assert!(db.ledger().await.is_empty());
    assert_eq!(db.advisory_locks().await, 0, "the lock is released");

    // halt keeps what was applied and says so.
    let halt = RunOptions {
        on_failure: OnFailure::Halt,
        ..options("run-b")
    };
    let out = run(&db, &m, &halt).await;
    assert_eq!(out.phase, MigrationPhase::Failed);
    assert!(
        out.message
            .contains("still applied: 1_users, 2_orders; the schema is at version 2"),
        "{}",
        out.message
    );
    assert_eq!(out.state.to_version, Some(support::v(2)));
    assert_eq!(db.tables().await, vec!["orders", "users"]);
    assert_eq!(db.advisory_locks().await, 0);
    db.drop().await;
}

#[tokio::test]
async fn ledger_checksums_and_drift() {
    let platform = require_platform!();
    let db = Db::new(&platform).await;
    let m = files(&FIVE[..4]);
    let out = run(&db, &m, &options("first")).await;
    assert_eq!(out.phase, MigrationPhase::Succeeded, "{out:#?}");
    assert_eq!(
        (out.state.from_version, out.state.to_version),
        (None, Some(support::v(2)))
    );
    let ledger = db.ledger().await;
    assert_eq!(
        ledger,
        vec![(1, "first".into(), true), (2, "first".into(), true)]
    );
    let checksum: String =
        sqlx::query_scalar("select checksum from lifeboat_schema_migrations where version = 2")
            .fetch_one(&mut db.conn().await)
            .await
            .unwrap();
    assert_eq!(checksum, m[1].checksum);

    let again = run(&db, &m, &options("second")).await;
    assert_eq!(
        (again.phase, again.state.applied.len()),
        (MigrationPhase::Succeeded, 0)
    );
    assert!(
        again.message.starts_with("Nothing to apply"),
        "{}",
        again.message
    );

    let mut edited = FIVE[..4].to_vec();
    edited[2].1 = "create table orders (id bigint primary key, note text);";
    edited.push(("5_more.up.sql", "create table more_things (id bigint);"));
    let out = run(&db, &files(&edited), &options("third")).await;
    assert_eq!(
        (out.phase, out.reason),
        (MigrationPhase::Failed, "ChecksumMismatch")
    );
    assert!(
        out.message
            .contains("2_orders.up.sql was changed after it was applied"),
        "{}",
        out.message
    );
    assert!(
        !db.tables().await.contains(&"more_things".to_string()),
        "nothing applied"
    );
    db.drop().await;
}

#[tokio::test]
async fn second_run_waits_for_the_lock_then_fails_naming_the_holder() {
    let platform = require_platform!();
    let db = Db::new(&platform).await;
    let mut holder = db.conn().await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "set application_name = 'lifeboat-migrate shop/other-run'; select pg_advisory_lock({LOCK_KEY})"
    )))
    .execute(&mut holder)
    .await
    .unwrap();
    let opts = RunOptions {
        lock_timeout: Duration::from_millis(1500),
        ..options("waiting")
    };
    let started = std::time::Instant::now();
    let out = run(&db, &files(&FIVE[..2]), &opts).await;
    let waited = started.elapsed();
    assert_eq!(
        (out.phase, out.reason),
        (MigrationPhase::Failed, "LockTimeout"),
        "{out:#?}"
    );
    assert!(
        waited >= Duration::from_millis(1400) && waited < Duration::from_secs(10),
        "{waited:?}"
    );
    assert!(
        out.message.contains("held by MigrationRun shop/other-run"),
        "{}",
        out.message
    );
    assert!(db.ledger().await.is_empty() && db.tables().await.is_empty());

    // The holder goes away mid-wait: the waiting run proceeds at once.
    let opts = RunOptions {
        lock_timeout: Duration::from_secs(20),
        ..options("patient")
    };
    let url = db.admin.url(&db.name);
    let release = tokio::spawn(async move {
        // Release once the patient run is really waiting for the lock.
        support::eventually("the second run to wait for the lock", Duration::from_secs(10), || {
            let url = url.clone();
            async move {
                let mut c = PgConnection::connect(&url).await.unwrap();
                let waiting: i64 = sqlx::query_scalar(
                    "select count(*) from pg_locks where locktype = 'advisory' and not granted and database = (select oid from pg_database where datname = current_database())",
                )
                .fetch_one(&mut c)
                .await
                .unwrap();
                (waiting > 0).then_some(())
            }
        })
        .await;
        holder.close().await.unwrap();
    });
    let started = std::time::Instant::now();
    let out = run(&db, &files(&FIVE[..2]), &opts).await;
    release.await.unwrap();
    assert_eq!(out.phase, MigrationPhase::Succeeded, "{out:#?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    db.drop().await;
}

#[tokio::test]
async fn no_transaction_files_and_partial_application() {
    let platform = require_platform!();
    let db = Db::new(&platform).await;
    let specs = [
        ("1_t.up.sql", "create table t (a bigint, b bigint);"),
        ("1_t.down.sql", "drop table t;"),
        (
            "2_idx.sql",
            "-- migrate:up transaction:false\ncreate index concurrently t_a on t (a);\n-- migrate:down\ndrop index t_a;\n",
        ),
    ];
    let out = run(&db, &files(&specs), &options("cic")).await;
    assert_eq!(out.phase, MigrationPhase::Succeeded, "{out:#?}");
    assert_eq!(db.ledger().await.last(), Some(&(2, "cic".into(), true)));

    let mut more = specs.to_vec();
    more.push((
        "3_half.up.sql",
        "-- lifeboat:no-transaction\ncreate index concurrently t_b on t (b);\ncreate index concurrently t_c on t (no_such_column);\n",
    ));
    let out = run(&db, &files(&more), &options("half")).await;
    assert_eq!(
        (out.phase, out.reason),
        (MigrationPhase::Failed, "PartiallyApplied"),
        "{out:#?}"
    );
    assert!(
        out.message
            .contains("3_half.up.sql statement 2 (line 3) failed"),
        "{}",
        out.message
    );
    assert!(
        out.message.contains("where version = '3'"),
        "{}",
        out.message
    );
    assert_eq!(
        db.ledger().await.last(),
        Some(&(3, "half".into(), false)),
        "marked incomplete"
    );

    let out = run(&db, &files(&more), &options("after")).await;
    assert_eq!(
        (out.phase, out.reason),
        (MigrationPhase::Failed, "PartiallyApplied")
    );
    assert!(
        out.message
            .starts_with("Nothing was changed: migration 3 (half)"),
        "{}",
        out.message
    );
    db.drop().await;
}

#[tokio::test]
async fn down_to_target_and_missing_down_scripts() {
    let platform = require_platform!();
    let db = Db::new(&platform).await;
    let m = files(&FIVE[..4]);
    assert_eq!(
        run(&db, &m, &options("up")).await.phase,
        MigrationPhase::Succeeded
    );
    let down = RunOptions {
        direction: Direction::Down,
        target_version: Some(support::v(1)),
        ..options("down")
    };
    let out = run(&db, &m, &down).await;
    assert_eq!(out.phase, MigrationPhase::Succeeded, "{out:#?}");
    assert_eq!(
        out.state
            .applied
            .listed()
            .iter()
            .map(|r| r.version.as_whole().unwrap())
            .collect::<Vec<_>>(),
        vec![2]
    );
    assert_eq!(
        (out.state.from_version, out.state.to_version),
        (Some(support::v(2)), Some(support::v(1)))
    );
    assert_eq!(db.tables().await, vec!["users"]);

    let no_down = files(&[
        FIVE[0],
        ("2_x.up.sql", "create table x ();"),
        ("3_y.up.sql", "create table y ();"),
    ]);
    let out = run(&db, &no_down, &options("strict")).await;
    assert_eq!(
        (out.phase, out.reason),
        (MigrationPhase::Failed, "MissingDownMigration")
    );
    assert!(
        out.message.contains("no down script for 2_x.up.sql"),
        "{}",
        out.message
    );
    assert_eq!(
        db.tables().await,
        vec!["users"],
        "refused before changing anything"
    );
    db.drop().await;
}

#[tokio::test]
async fn lint_enforce_fails_before_changing_anything_and_warn_proceeds() {
    let platform = require_platform!();
    let db = Db::new(&platform).await;
    let base = files(&FIVE[..2]);
    assert_eq!(
        run(&db, &base, &options("base")).await.phase,
        MigrationPhase::Succeeded
    );
    let risky = files(&[
        FIVE[0],
        FIVE[1],
        (
            "2_idx.up.sql",
            "alter table users add column email text;\ncreate index users_email on users (email);",
        ),
        (
            "2_idx.down.sql",
            "drop index users_email;\nalter table users drop column email;",
        ),
    ]);
    let enforce = RunOptions {
        lint: LintMode::Enforce,
        ..options("enforce")
    };
    let out = run(&db, &risky, &enforce).await;
    assert_eq!(
        (out.phase, out.reason),
        (MigrationPhase::Failed, "LintFailed"),
        "{out:#?}"
    );
    let finding = out
        .state
        .lint_findings
        .iter()
        .find(|f| f.rule == "require-concurrent-index-creation")
        .unwrap();
    assert_eq!(
        (finding.file.as_str(), finding.line),
        ("2_idx.up.sql", Some(2))
    );
    assert_eq!(db.ledger().await.len(), 1, "nothing applied");
    let warn = RunOptions {
        lint: LintMode::Warn,
        ..options("warn")
    };
    let out = run(&db, &risky, &warn).await;
    assert_eq!(out.phase, MigrationPhase::Succeeded, "{out:#?}");
    assert!(!out.state.lint_findings.is_empty());
    db.drop().await;
}

#[tokio::test]
async fn statement_timeout_ends_the_run_with_its_reason() {
    let platform = require_platform!();
    let db = Db::new(&platform).await;
    let m = files(&[FIVE[0], FIVE[1], ("2_slow.up.sql", "select pg_sleep(5);")]);
    let opts = RunOptions {
        statement_timeout: Some(Duration::from_millis(300)),
        ..options("slow")
    };
    let out = run(&db, &m, &opts).await;
    assert_eq!(
        (out.phase, out.reason),
        (MigrationPhase::RolledBack, "StatementTimeout"),
        "{out:#?}"
    );
    assert!(db.tables().await.is_empty());
    db.drop().await;
}

#[tokio::test]
async fn interrupted_run_releases_the_lock_and_resumes_from_the_ledger() {
    let platform = require_platform!();
    let db = Db::new(&platform).await;
    let m = files(&[
        FIVE[0],
        FIVE[1],
        (
            "2_slow.up.sql",
            "create table slow (id bigint);\nselect pg_sleep(5);",
        ),
        ("2_slow.down.sql", "drop table slow;"),
        ("3_last.up.sql", "create table last (id bigint);"),
    ]);
    let (creds, name, m2) = (db.creds(), db.name.clone(), m.clone());
    let task = tokio::spawn(async move {
        migrate::run(
            &creds,
            &name,
            &m2,
            &options("killed"),
            Prior::default(),
            &mut NoHooks,
        )
        .await
    });
    support::eventually("migration 2 to be running", Duration::from_secs(20), || async {
        let mut c = db.conn().await;
        let running: i64 = sqlx::query_scalar(
            "select count(*) from pg_stat_activity where datname = current_database() and query like '%pg_sleep(5)%' and pid <> pg_backend_pid()",
        )
        .fetch_one(&mut c)
        .await
        .unwrap();
        (running > 0 && db.ledger().await.len() == 1).then_some(())
    })
    .await;
    task.abort(); // what a killed operator looks like to the server: its connections close
    support::eventually(
        "the lock to die with its connection",
        Duration::from_secs(10),
        || async { (db.advisory_locks().await == 0).then_some(()) },
    )
    .await;
    assert_eq!(db.ledger().await, vec![(1, "killed".into(), true)]);

    let out = migrate::run(
        &db.creds(),
        &db.name,
        &m,
        &options("killed"),
        Prior::default(),
        &mut NoHooks,
    )
    .await
    .unwrap();
    assert_eq!(out.phase, MigrationPhase::Succeeded, "{out:#?}");
    assert_eq!(
        out.state
            .applied
            .listed()
            .iter()
            .map(|r| r.version.as_whole().unwrap())
            .collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(
        out.state.from_version, None,
        "the run's own earlier work does not count as before"
    );
    assert_eq!(db.tables().await, vec!["last", "slow", "users"]);
    db.drop().await;
}

/// The lock's own connection drops mid-run (here: terminated from inside a migration): the run stops
/// before the next migration instead of working on without the lock, and says what it applied.
#[tokio::test]
async fn a_lost_lock_stops_the_run_before_the_next_migration() {
    let platform = require_platform!();
    let db = Db::new(&platform).await;
    let m = files(&[
        (
            "1_users.up.sql",
            "create table users (id bigint primary key);",
        ),
        ("1_users.down.sql", "drop table users;"),
        (
            "2_cut.up.sql",
            "select pg_terminate_backend(l.pid) from pg_locks l
             where l.locktype = 'advisory' and l.granted and l.pid <> pg_backend_pid()
               and l.database = (select oid from pg_database where datname = current_database());",
        ),
        ("2_cut.down.sql", "select 1;"),
        ("3_later.up.sql", "create table later (id bigint);"),
        ("3_later.down.sql", "drop table later;"),
    ]);
    let out = run(&db, &m, &options("cut")).await;
    assert_eq!(
        (out.phase, out.reason),
        (MigrationPhase::Failed, "LockLost"),
        "{out:#?}"
    );
    assert!(out.message.contains("3_later"), "{}", out.message);
    assert_eq!(db.tables().await, vec!["users".to_string()]);
    let versions: Vec<i64> = db.ledger().await.into_iter().map(|r| r.0).collect();
    assert_eq!(versions, vec![1, 2]);
    db.drop().await;
}

/// A real project's history: atuin-server-postgres 18.20.1 (MIT; its 20 sqlx migrations from
/// 2021–2026, copied verbatim from the crate published on crates.io into tests/fixtures/). It applies
/// under the default lint (style findings are warnings; anything that still stops a run is a lock or
/// data-safety rule, reported by count), then again as a no-op.
#[tokio::test]
async fn a_real_projects_history_applies_and_lint_fails_only_on_safety_rules() {
    let platform = require_platform!();
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/atuin-server-postgres-18.20.1"
    );
    let mut raw: Vec<RawFile> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            RawFile::new(
                "atuin",
                e.file_name().to_str().unwrap(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    raw.sort_by(|a, b| a.name.cmp(&b.name));
    let m = migrations::source::parse(&raw).unwrap();
    assert_eq!(m.len(), 20);
    let db = Db::new(&platform).await;
    let mut opts = options("real");
    opts.lint = LintMode::Enforce;
    opts.on_failure = OnFailure::Halt;
    let out = run(&db, &m, &opts).await;
    let counts: Vec<(String, migrations::Severity, usize)> = out
        .state
        .lint_counts
        .iter()
        .map(|c| (c.rule.clone(), c.severity, c.count))
        .collect();
    println!("{:?} {}: {counts:?}", out.phase, out.message);
    let errors: Vec<&(String, migrations::Severity, usize)> = counts
        .iter()
        .filter(|c| c.1 == migrations::Severity::Error)
        .collect();
    let warnings: usize = counts
        .iter()
        .filter(|c| c.1 == migrations::Severity::Warning)
        .map(|c| c.2)
        .sum();
    assert!(
        warnings > 0,
        "the style of six years is recorded: {counts:?}"
    );
    for (rule, _, _) in &errors {
        assert!(
            !lifeboat::engines::postgres::migrate::lint::STYLE_RULES
                .iter()
                .any(|r| r.to_string() == *rule),
            "{rule} is a style rule but counted as an error"
        );
    }
    if errors.is_empty() {
        assert_eq!(out.phase, MigrationPhase::Succeeded, "{out:#?}");
    } else {
        assert_eq!(
            (out.phase, out.reason),
            (MigrationPhase::Failed, "LintFailed")
        );
        assert!(db.ledger().await.is_empty(), "nothing applied");
        // Accepting the safety findings for a fresh database (lint: warn) applies all 20 exactly.
        opts.lint = LintMode::Warn;
        let out = run(&db, &m, &opts).await;
        assert_eq!(out.phase, MigrationPhase::Succeeded, "{out:#?}");
    }
    assert_eq!(db.ledger().await.len(), 20);
    let again = run(&db, &m, &options("real-again")).await;
    assert_eq!(
        (again.phase, again.state.applied.len()),
        (MigrationPhase::Succeeded, 0),
        "{again:#?}"
    );
    db.drop().await;
}
