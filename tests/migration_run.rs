//! MigrationRun against a real API server and real PostgreSQL 18, with the operator in-process:
//! rollback to the exact schema before, two runs racing for the lock, checksum drift, lint, backups
//! required, down + TTL, and the operator killed mid-run.
//! Run with the platform up: `eval "$(e2e/platform.sh env)" && cargo test --test migration_run`.

mod support;

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, Patch, PatchParams},
};
use lifeboat::api::{
    DatabaseEnvironment, MigrationRun,
    migration_run::{LintSeverity, MigrationPhase, MigrationRunStatus},
};
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};
use support::{RunningOperator, TestNamespace};

const WAIT: Duration = Duration::from_secs(90);

struct Fixture {
    client: Client,
    ns: TestNamespace,
    op: Option<RunningOperator>,
    runs: Api<MigrationRun>,
    conn: BTreeMap<String, String>,
}

impl Fixture {
    /// A namespace, an operator watching it, and a Ready `ci` environment `db` on PostgreSQL 18.
    async fn new(prefix: &str) -> Option<Self> {
        let platform = support::platform()?;
        let client = support::client().await;
        support::install_crds(&client).await;
        let ns = TestNamespace::new(&client, prefix).await;
        let op = Some(support::start_operator(
            &client,
            support::settings(&ns.name, "op-1"),
        ));
        support::create_admin_secret(&client, &ns.name, "pg-admin", &platform.pg, json!({})).await;
        support::apply_json(&client, &ns.name, json!({
            "apiVersion": "lifeboat.dev/v1alpha1", "kind": "DatabaseEnvironment", "metadata": {"name": "db"},
            "spec": {"tier": "ci", "server": {"adminSecretRef": {"name": "pg-admin"}}}
        }))
        .await
        .unwrap();
        let envs: Api<DatabaseEnvironment> = Api::namespaced(client.clone(), &ns.name);
        support::wait_for(&envs, "db", "Ready", WAIT, |e| {
            support::is_ready(e.status.as_ref())
        })
        .await;
        let secret = Api::<Secret>::namespaced(client.clone(), &ns.name)
            .get("db-connection")
            .await
            .unwrap();
        let conn = secret
            .data
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8(v.0).unwrap()))
            .collect();
        let runs = Api::namespaced(client.clone(), &ns.name);
        Some(Self {
            client,
            ns,
            op,
            runs,
            conn,
        })
    }

    async fn config_map(&self, name: &str, files: &[(&str, &str)]) {
        let data: BTreeMap<&str, &str> = files.iter().copied().collect();
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "labels": {"app": "shop"}}, "data": data});
        Api::<ConfigMap>::namespaced(self.client.clone(), &self.ns.name)
            .patch(
                name,
                &PatchParams::apply("lifeboat-tests").force(),
                &Patch::Apply(&cm),
            )
            .await
            .unwrap();
    }

    /// Creates a run of ConfigMap `cm` (or, with `cm` = "", of every ConfigMap labelled app=shop).
    async fn start(&self, name: &str, cm: &str, extra: Value) {
        let source = if cm.is_empty() {
            json!({"configMapSelector": {"matchLabels": {"app": "shop"}}})
        } else {
            json!({"configMapNames": [cm]})
        };
        let mut spec = json!({"environmentRef": {"name": "db"}, "source": source});
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        support::apply_json(&self.client, &self.ns.name, json!({
            "apiVersion": "lifeboat.dev/v1alpha1", "kind": "MigrationRun", "metadata": {"name": name}, "spec": spec
        }))
        .await
        .unwrap();
    }

    async fn finished(&self, name: &str) -> (MigrationRun, MigrationRunStatus) {
        let run = support::wait_for(&self.runs, name, "finished", WAIT, |r| {
            r.status
                .as_ref()
                .and_then(|s| s.phase)
                .is_some_and(MigrationPhase::is_finished)
        })
        .await;
        let status = run.status.clone().unwrap();
        (run, status)
    }

    async fn db(&self) -> PgConnection {
        let c = &self.conn;
        let url = format!(
            "postgres://{}:{}@{}:{}/{}",
            c["username"], c["password"], c["host"], c["port"], c["database"]
        );
        PgConnection::connect(&url).await.unwrap()
    }

    async fn ledger(&self) -> Vec<(i64, String)> {
        let mut db = self.db().await;
        let exists: bool =
            sqlx::query_scalar("select to_regclass('lifeboat_schema_migrations') is not null")
                .fetch_one(&mut db)
                .await
                .unwrap();
        if !exists {
            return Vec::new();
        }
        sqlx::query_as("select version, run_uid from lifeboat_schema_migrations order by version")
            .fetch_all(&mut db)
            .await
            .unwrap()
    }

    async fn tables(&self) -> Vec<String> {
        sqlx::query_scalar("select tablename::text from pg_tables where schemaname = 'public' and tablename not in ('lifeboat_schema_migrations', 'lifeboat_schema_reverts') order by 1")
            .fetch_all(&mut self.db().await)
            .await
            .unwrap()
    }

    async fn advisory_locks(&self) -> i64 {
        sqlx::query_scalar("select count(*) from pg_locks l join pg_database d on d.oid = l.database where l.locktype = 'advisory' and d.datname = $1")
            .bind(&self.conn["database"])
            .fetch_one(&mut self.db().await)
            .await
            .unwrap()
    }

    /// `pg_dump --schema-only` of the environment's database (the password goes through the
    /// environment, never the command line).
    async fn schema_dump(&self) -> String {
        let c = &self.conn;
        let out = tokio::process::Command::new("pg_dump")
            .args([
                "--schema-only",
                "--restrict-key=lifeboat",
                "-h",
                &c["host"],
                "-p",
                &c["port"],
                "-U",
                &c["username"],
                &c["database"],
            ])
            .env("PGPASSWORD", &c["password"])
            .output()
            .await
            .expect("pg_dump on PATH");
        assert!(
            out.status.success(),
            "pg_dump: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    async fn cleanup(mut self) {
        let envs: Api<DatabaseEnvironment> = Api::namespaced(self.client.clone(), &self.ns.name);
        let _ = envs.delete("db", &DeleteParams::default()).await;
        support::eventually(
            "the environment (and its database) to be gone",
            WAIT,
            || {
                let envs = envs.clone();
                async move { envs.get_opt("db").await.unwrap().is_none().then_some(()) }
            },
        )
        .await;
        if let Some(op) = self.op.take() {
            op.stop().await.unwrap();
        }
        self.ns.cleanup().await;
    }
}

fn stalled_reason(s: &MigrationRunStatus) -> String {
    let (status, reason, _) = support::condition(Some(s), "Stalled").unwrap();
    assert_eq!(status, "True", "{s:#?}");
    reason
}

fn versions(records: &[lifeboat::api::migration_run::MigrationRecord]) -> Vec<i64> {
    records
        .iter()
        .map(|r| r.version.as_whole().unwrap())
        .collect()
}

const BASE: &[(&str, &str)] = &[
    (
        "1_users.up.sql",
        "create table users (id bigint primary key, name text not null);",
    ),
    ("1_users.down.sql", "drop table users;"),
];

#[tokio::test]
async fn third_of_five_fails_and_the_schema_is_exactly_as_before() {
    let Some(fx) = Fixture::new("mrun-rollback").await else {
        return;
    };
    fx.config_map("base", BASE).await;
    fx.start("base", "base", json!({})).await;
    let (_, s) = fx.finished("base").await;
    assert_eq!(s.phase, Some(MigrationPhase::Succeeded), "{s:#?}");
    let before = fx.schema_dump().await;
    assert!(before.contains("CREATE TABLE public.users"), "{before}");

    fx.config_map("release-2", &[
        ("2_orders.up.sql", "create table orders (id bigint primary key, user_id bigint references users);"),
        ("2_orders.down.sql", "drop table orders;"),
        ("3_email.sql", "-- migrate:up\nalter table users add column email text;\n-- migrate:down\nalter table users drop column email;\n"),
        ("4_broken.up.sql", "create table audit (id bigint);\nalter table users add column name text;\n"),
        ("4_broken.down.sql", "drop table audit;"),
        ("5_items.up.sql", "create table items (id bigint);"),
        ("5_items.down.sql", "drop table items;"),
        ("6_more.up.sql", "create table more (id bigint);"),
    ])
    .await;
    fx.start("five", "", json!({"lint": "off"})).await;
    let (run, s) = fx.finished("five").await;
    assert_eq!(s.phase, Some(MigrationPhase::RolledBack), "{s:#?}");
    assert_eq!(versions(&s.applied), vec![2, 3]);
    assert_eq!(versions(&s.rolled_back), vec![3, 2], "newest first");
    let f = s.failure.clone().unwrap();
    assert_eq!(
        (f.file.as_deref(), f.statement, f.line),
        (Some("4_broken.up.sql"), Some(2), Some(2))
    );
    assert_eq!(
        f.sql_state.as_deref(),
        Some("42701"),
        "duplicate column: {f:?}"
    );
    // The outcome is counted by phase and reason (static labels).
    let metrics = &fx.op.as_ref().unwrap().operator.metrics;
    let counted = metrics
        .migration_runs
        .get_or_create(&lifeboat::telemetry::OutcomeLabels {
            phase: "RolledBack",
            reason: "MigrationFailed",
        })
        .get();
    assert_eq!(counted, 1, "{}", metrics.render());
    assert_eq!(stalled_reason(&s), "MigrationFailed");
    let (ready, _, message) = support::condition(Some(&s), "Ready").unwrap();
    assert_eq!(ready, "False");
    assert!(
        message.contains("4_broken.up.sql statement 2 (line 2) failed")
            && message.contains("rolled back 3_email, 2_orders"),
        "{message}"
    );
    assert_eq!(
        (s.from_version, s.to_version),
        (Some(support::v(1)), Some(support::v(1)))
    );
    assert!(s.started_at.is_some() && s.finished_at.is_some());
    assert_eq!(s.observed_generation, run.metadata.generation);

    assert_eq!(
        fx.schema_dump().await,
        before,
        "the schema is exactly as before the run"
    );
    let ledger = fx.ledger().await;
    assert_eq!(ledger.len(), 1, "{ledger:?}");
    assert_eq!(fx.advisory_locks().await, 0);
    fx.cleanup().await;
}

#[tokio::test]
async fn concurrent_runs_wait_for_the_lock() {
    let Some(fx) = Fixture::new("mrun-lock").await else {
        return;
    };
    fx.config_map(
        "m",
        &[
            BASE[0],
            BASE[1],
            (
                "2_slow.up.sql",
                "create table slow (id bigint);\nselect pg_sleep(4);",
            ),
            ("2_slow.down.sql", "drop table slow;"),
        ],
    )
    .await;
    fx.start("first", "m", json!({})).await;
    support::eventually("first to hold the migration lock", WAIT, || async {
        (fx.advisory_locks().await > 0).then_some(())
    })
    .await;
    // Defined behaviour: a second run waits up to its lockTimeout, then fails with LockTimeout naming the
    // holder; one with a longer lockTimeout gets the lock when the first ends, and finds nothing to do.
    fx.start("impatient", "m", json!({"lockTimeout": "1s"}))
        .await;
    fx.start("patient", "m", json!({"lockTimeout": "60s"}))
        .await;
    let (_, s) = fx.finished("impatient").await;
    assert_eq!(
        (s.phase, stalled_reason(&s)),
        (Some(MigrationPhase::Failed), "LockTimeout".into()),
        "{s:#?}"
    );
    let msg = s.failure.unwrap().error;
    assert!(
        msg.contains(&format!("held by MigrationRun {}/first", fx.ns.name)),
        "{msg}"
    );
    let (_, s) = fx.finished("first").await;
    assert_eq!(s.phase, Some(MigrationPhase::Succeeded), "{s:#?}");
    assert_eq!(versions(&s.applied), vec![1, 2]);
    let (_, s) = fx.finished("patient").await;
    assert_eq!(s.phase, Some(MigrationPhase::Succeeded), "{s:#?}");
    assert!(
        s.applied.is_empty(),
        "everything was applied by the first run"
    );
    assert_eq!(fx.advisory_locks().await, 0);
    fx.cleanup().await;
}

#[tokio::test]
async fn checksum_drift_stops_the_run_and_names_the_file() {
    let Some(fx) = Fixture::new("mrun-drift").await else {
        return;
    };
    fx.config_map("m", BASE).await;
    fx.start("one", "m", json!({})).await;
    assert_eq!(
        fx.finished("one").await.1.phase,
        Some(MigrationPhase::Succeeded)
    );
    fx.config_map(
        "m",
        &[
            (
                "1_users.up.sql",
                "create table users (id bigint primary key, name text);",
            ),
            BASE[1],
            ("2_more.up.sql", "create table more (id bigint);"),
        ],
    )
    .await;
    fx.start("two", "m", json!({"onFailure": "halt"})).await;
    let (_, s) = fx.finished("two").await;
    assert_eq!(
        (s.phase, stalled_reason(&s)),
        (Some(MigrationPhase::Failed), "ChecksumMismatch".into())
    );
    assert!(
        s.failure
            .unwrap()
            .error
            .contains("1_users.up.sql was changed after it was applied")
    );
    assert_eq!(fx.tables().await, vec!["users"], "nothing applied");
    fx.cleanup().await;
}

#[tokio::test]
async fn lint_enforce_refuses_before_touching_the_database_and_warn_records() {
    let Some(fx) = Fixture::new("mrun-lint").await else {
        return;
    };
    fx.config_map(
        "m",
        &[
            BASE[0],
            BASE[1],
            (
                "2_idx.up.sql",
                "-- index for lookups\ncreate index users_name on users (name);",
            ),
            ("2_idx.down.sql", "drop index users_name;"),
        ],
    )
    .await;
    fx.start("strict", "m", json!({})).await;
    let (_, s) = fx.finished("strict").await;
    assert_eq!(
        (s.phase, stalled_reason(&s)),
        (Some(MigrationPhase::Failed), "LintFailed".into()),
        "{s:#?}"
    );
    let finding = s
        .lint_findings
        .iter()
        .find(|f| f.rule == "require-concurrent-index-creation")
        .unwrap();
    assert_eq!(
        (finding.file.as_str(), finding.line),
        ("2_idx.up.sql", Some(2))
    );
    assert!(!finding.message.is_empty());
    assert!(
        fx.ledger().await.is_empty() && fx.tables().await.is_empty(),
        "the database was not changed"
    );

    fx.start("lenient", "m", json!({"lint": "warn"})).await;
    let (_, s) = fx.finished("lenient").await;
    assert_eq!(s.phase, Some(MigrationPhase::Succeeded), "{s:#?}");
    assert!(support::is_ready(Some(&s)));
    assert!(
        s.lint_findings
            .iter()
            .any(|f| f.rule == "require-concurrent-index-creation")
    );
    assert_eq!(versions(&s.applied), vec![1, 2]);
    fx.cleanup().await;
}

#[tokio::test]
async fn style_findings_never_stop_a_run_and_rules_are_set_per_run() {
    let Some(fx) = Fixture::new("mrun-lintrules").await else {
        return;
    };
    // A real history's style: int ids, timestamp without time zone, varchar. Only warnings.
    fx.config_map(
        "m",
        &[
            (
                "1_users.up.sql",
                "create table users (id serial primary key, created timestamp, name varchar(40));",
            ),
            ("1_users.down.sql", "drop table users;"),
            (
                "2_orders.up.sql",
                "create table orders (id int primary key, user_id int);",
            ),
            ("2_orders.down.sql", "drop table orders;"),
        ],
    )
    .await;
    fx.start("styled", "m", json!({})).await;
    let (_, s) = fx.finished("styled").await;
    assert_eq!(s.phase, Some(MigrationPhase::Succeeded), "{s:#?}");
    assert!(!s.lint_findings.is_empty(), "style findings are recorded");
    assert!(
        s.lint_findings
            .iter()
            .all(|f| f.severity == LintSeverity::Warning),
        "{s:#?}"
    );
    let count = |rule: &str| {
        s.lint_counts
            .iter()
            .find(|c| c.rule == rule)
            .map(|c| c.count)
    };
    assert!(
        count("prefer-bigint-over-int").is_some_and(|n| n >= 2),
        "{:#?}",
        s.lint_counts
    );

    // A safety rule demoted for one run, an opt-in rule promoted, and a squawk-ignore comment.
    fx.config_map(
        "m2",
        &[
            ("3_idx.up.sql", "create index orders_user on orders (user_id);"),
            ("3_idx.down.sql", "-- squawk-ignore ban-drop-index, require-concurrent-index-deletion\ndrop index orders_user;"),
        ],
    )
    .await;
    fx.start(
        "strict",
        "m2",
        json!({"lintRules": {"error": ["ban-drop-index"]}}),
    )
    .await;
    let (_, s) = fx.finished("strict").await;
    assert_eq!(stalled_reason(&s), "LintFailed", "{s:#?}");
    let errors: Vec<_> = s
        .lint_findings
        .iter()
        .filter(|f| f.severity == LintSeverity::Error)
        .collect();
    assert_eq!(errors.len(), 1, "{s:#?}");
    assert_eq!(errors[0].rule, "require-concurrent-index-creation");
    fx.start(
        "demoted",
        "m2",
        json!({"lintRules": {"warn": ["require-concurrent-index-creation"], "error": ["ban-drop-index"]}}),
    )
    .await;
    let (_, s) = fx.finished("demoted").await;
    assert_eq!(s.phase, Some(MigrationPhase::Succeeded), "{s:#?}");
    fx.start(
        "down",
        "m2",
        json!({"direction": "down", "lintRules": {"error": ["ban-drop-index"]}}),
    )
    .await;
    let (_, s) = fx.finished("down").await;
    assert_eq!(
        s.phase,
        Some(MigrationPhase::Succeeded),
        "the ignore comment excuses the drop: {s:#?}"
    );

    // The API server refuses a rule it does not know, and one named twice.
    let bad = support::apply_json(&fx.client, &fx.ns.name, json!({
        "apiVersion": "lifeboat.dev/v1alpha1", "kind": "MigrationRun", "metadata": {"name": "typo"},
        "spec": {"environmentRef": {"name": "db"}, "source": {"configMapNames": ["m"]},
                 "lintRules": {"warn": ["prefer-bigints"]}}
    }))
    .await
    .unwrap_err();
    assert!(bad.to_string().contains("prefer-bigints"), "{bad}");
    let twice = support::apply_json(&fx.client, &fx.ns.name, json!({
        "apiVersion": "lifeboat.dev/v1alpha1", "kind": "MigrationRun", "metadata": {"name": "twice"},
        "spec": {"environmentRef": {"name": "db"}, "source": {"configMapNames": ["m"]},
                 "lintRules": {"warn": ["ban-drop-column"], "exclude": ["ban-drop-column"]}}
    }))
    .await
    .unwrap_err();
    assert!(
        twice
            .to_string()
            .contains("only one of exclude, warn and error"),
        "{twice}"
    );

    // targetVersion: a whole number or a dotted string; anything else is refused with what to write.
    for (name, target, accepted) in [
        ("whole", json!(20250101120000_i64), true),
        ("dotted", json!("1.2.3"), true),
        ("underscored", json!("1_1"), true),
        ("words", json!("latest"), false),
        ("negative", json!(-1), false),
        ("empty-part", json!("1..2"), false),
    ] {
        let result = support::apply_json(&fx.client, &fx.ns.name, json!({
            "apiVersion": "lifeboat.dev/v1alpha1", "kind": "MigrationRun", "metadata": {"name": format!("target-{name}")},
            "spec": {"environmentRef": {"name": "missing"}, "source": {"configMapNames": ["m"]},
                     "targetVersion": target}
        }))
        .await;
        match (result, accepted) {
            (Ok(_), true) => {}
            (Err(e), false) => assert!(
                e.to_string().contains("a version is a whole number (20250101120000) or Flyway's dotted form as a string"),
                "{name}: {e}"
            ),
            (r, _) => panic!("{name}: expected accepted={accepted}, got {r:?}"),
        }
    }
    fx.cleanup().await;
}

/// 10,000 migrations in one run end Succeeded with a status far below etcd's request limit; the
/// ledger holds every one.
#[tokio::test]
async fn ten_thousand_migrations_end_succeeded_with_a_bounded_status() {
    const N: usize = 10_000;
    let Some(fx) = Fixture::new("mrun-10k").await else {
        return;
    };
    // Two ConfigMaps of 5,000 files each (one ConfigMap holds at most 1 MiB).
    let files: Vec<(String, String)> = (1..=N)
        .map(|i| {
            (
                format!("{i:05}_step_{i}.up.sql"),
                format!("create table t{i} (id bigint primary key);"),
            )
        })
        .collect();
    for (part, chunk) in files.chunks(N / 2).enumerate() {
        let refs: Vec<(&str, &str)> = chunk
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        fx.config_map(&format!("big-{part}"), &refs).await;
    }
    fx.start("big", "", json!({"onFailure": "halt"})).await;
    let run = support::wait_for(&fx.runs, "big", "finished", Duration::from_secs(600), |r| {
        r.status
            .as_ref()
            .and_then(|s| s.phase)
            .is_some_and(MigrationPhase::is_finished)
    })
    .await;
    let s = run.status.clone().unwrap();
    assert_eq!(
        s.phase,
        Some(MigrationPhase::Succeeded),
        "{:?}",
        s.conditions
    );
    assert_eq!(s.applied_count, Some(N as i64));
    assert_eq!(s.applied.len(), 20, "the first 10 and the last 10");
    assert_eq!(
        (
            s.applied[0].version.as_whole(),
            s.applied[19].version.as_whole()
        ),
        (Some(1), Some(N as i64))
    );
    assert_eq!(s.to_version, Some(support::v(N as i64)));
    let bytes = serde_json::to_vec(&s).unwrap().len();
    assert!(bytes < 64 * 1024, "status is {bytes} bytes");
    let message = &s
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap()
        .message;
    assert!(message.len() < 1024, "{message}");
    assert_eq!(fx.ledger().await.len(), N, "the ledger is the full record");
    fx.cleanup().await;
}

#[tokio::test]
async fn backup_required_is_refused_before_touching_the_database() {
    let Some(fx) = Fixture::new("mrun-backup").await else {
        return;
    };
    fx.config_map("m", BASE).await;
    fx.start("careful", "m", json!({"backupBeforeMigrate": true}))
        .await;
    let (_, s) = fx.finished("careful").await;
    assert_eq!(
        (s.phase, stalled_reason(&s)),
        (Some(MigrationPhase::Failed), "BackupsNotAvailable".into())
    );
    let (_, _, message) = support::condition(Some(&s), "Ready").unwrap();
    assert!(
        message.contains("requires a backup before migrating")
            && message.contains("no BackupSchedule"),
        "{message}"
    );
    assert!(fx.ledger().await.is_empty() && fx.tables().await.is_empty());
    fx.cleanup().await;
}

#[tokio::test]
async fn down_to_target_and_ttl_after_finished() {
    let Some(fx) = Fixture::new("mrun-down").await else {
        return;
    };
    fx.config_map(
        "m",
        &[
            BASE[0],
            BASE[1],
            ("2_orders.up.sql", "create table orders (id bigint);"),
            ("2_orders.down.sql", "drop table orders;"),
        ],
    )
    .await;
    fx.start("up", "m", json!({"ttlSecondsAfterFinished": 2}))
        .await;
    assert_eq!(
        fx.finished("up").await.1.phase,
        Some(MigrationPhase::Succeeded)
    );
    support::eventually("the finished run to delete itself", WAIT, || async {
        fx.runs.get_opt("up").await.unwrap().is_none().then_some(())
    })
    .await;
    // Down scripts are linted too (they are what runs); dropping a table is a finding.
    fx.start(
        "down",
        "m",
        json!({"direction": "down", "targetVersion": 1, "lint": "warn"}),
    )
    .await;
    let (_, s) = fx.finished("down").await;
    assert_eq!(s.phase, Some(MigrationPhase::Succeeded), "{s:#?}");
    assert!(
        s.lint_findings
            .iter()
            .any(|f| f.file == "2_orders.down.sql" && f.rule == "ban-drop-table"),
        "{:?}",
        s.lint_findings
    );
    assert_eq!(versions(&s.applied), vec![2], "reverted");
    assert_eq!(
        (s.from_version, s.to_version),
        (Some(support::v(2)), Some(support::v(1)))
    );
    assert_eq!(fx.tables().await, vec!["users"]);
    fx.cleanup().await;
}

#[tokio::test]
async fn operator_killed_mid_run_ends_terminal_with_ledger_matching_schema() {
    let Some(mut fx) = Fixture::new("mrun-kill").await else {
        return;
    };
    fx.config_map(
        "m",
        &[
            BASE[0],
            BASE[1],
            (
                "2_slow.up.sql",
                "create table slow (id bigint);\nselect pg_sleep(5);",
            ),
            ("2_slow.down.sql", "drop table slow;"),
            ("3_last.up.sql", "create table last (id bigint);"),
        ],
    )
    .await;
    fx.start("long", "m", json!({})).await;
    support::eventually("migration 1 to be applied", WAIT, || async {
        (fx.ledger().await.len() == 1).then_some(())
    })
    .await;
    let run = fx.runs.get("long").await.unwrap();
    assert_eq!(
        run.status.as_ref().unwrap().phase,
        Some(MigrationPhase::Running)
    );
    fx.op.take().unwrap().kill().await;
    // The killed operator's connections are gone, and with them its lock and open transaction.
    support::eventually("the lock to die with the operator", WAIT, || async {
        (fx.advisory_locks().await == 0).then_some(())
    })
    .await;
    assert_eq!(
        fx.runs.get("long").await.unwrap().status.unwrap().phase,
        Some(MigrationPhase::Running)
    );
    fx.op = Some(support::start_operator(
        &fx.client,
        support::settings(&fx.ns.name, "op-2"),
    ));
    let (run, s) = fx.finished("long").await;
    assert_eq!(s.phase, Some(MigrationPhase::Succeeded), "{s:#?}");
    assert_eq!(versions(&s.applied), vec![1, 2, 3]);
    let uid = run.uid().unwrap();
    let ledger = fx.ledger().await;
    assert_eq!(ledger, vec![(1, uid.clone()), (2, uid.clone()), (3, uid)]);
    assert_eq!(
        fx.tables().await,
        vec!["last", "slow", "users"],
        "the ledger matches the schema"
    );
    fx.cleanup().await;
}
