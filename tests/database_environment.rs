//! DatabaseEnvironment against a real API server and real PostgreSQL 18 and 15: provisioning on a shared
//! server (plain, cloned from a template, seeded, over TLS), adoption of an external database, deletion
//! policies, TTL expiry, bad input, and restart safety.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api,
    api::{DeleteParams, PostParams},
};
use lifeboat::api::DatabaseEnvironment;
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};
use support::{Fixture, Postgres, TestNamespace};

const WAIT: Duration = Duration::from_secs(60);

async fn exists(pg: &Postgres, catalog: &str, name: &str) -> bool {
    let mut conn = support::admin_conn(pg, "postgres").await;
    let sql = match catalog {
        "database" => "select count(*) from pg_database where datname = $1",
        _ => "select count(*) from pg_roles where rolname = $1",
    };
    let n: i64 = sqlx::query_scalar(sql)
        .bind(name)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    n == 1
}

#[tokio::test]
async fn server_environment_gets_its_own_database_role_and_secret() {
    let platform = require_platform!();
    let f = Fixture::new(platform, "env-basic").await;
    f.apply_env(
        "app",
        json!({"tier": "dev", "server": {"adminSecretRef": {"name": "pg-admin"}}}),
    )
    .await;
    let env = f.ready("app").await;
    let status = env.status.unwrap();
    let db = f.db_name("app");
    assert_eq!(status.database.as_deref(), Some(db.as_str()));
    assert_eq!(status.secret_name.as_deref(), Some("app-connection"));
    assert!(status.server_version.unwrap().starts_with("18"));
    assert!(
        status.expires_at.is_none(),
        "dev environments do not expire"
    );
    assert!(
        env.metadata
            .finalizers
            .unwrap()
            .contains(&"lifeboat.dev/database-cleanup".to_string())
    );

    let c = f.connection("app").await;
    for key in [
        "host", "port", "database", "username", "password", "uri", "jdbcUrl",
    ] {
        assert!(c.contains_key(key), "connection Secret has {key}");
    }
    assert_ne!(
        c["password"], f.platform.pg.password,
        "the app gets its own credentials"
    );
    // The Secret works on its own: the app role connects, owns its database, can create tables.
    let mut conn = PgConnection::connect(&c["uri"])
        .await
        .expect("connect with the Secret's uri");
    let (user, owner): (String, String) =
        sqlx::query_as("select current_user::text, pg_get_userbyid(datdba)::text from pg_database where datname = current_database()")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(
        (user.as_str(), owner.as_str()),
        (c["username"].as_str(), c["username"].as_str())
    );
    sqlx::raw_sql("create table t (id int)")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();

    // Delete: the database and the role are dropped, even with a session open.
    let _open = PgConnection::connect(&c["uri"]).await.unwrap();
    f.delete_env("app").await;
    assert!(
        !exists(&f.platform.pg, "database", &db).await,
        "database dropped"
    );
    assert!(!exists(&f.platform.pg, "role", &db).await, "role dropped");
    f.finish().await;
}

#[tokio::test]
async fn clone_from_template_then_seed_once() {
    let platform = require_platform!();
    let f = Fixture::new(platform, "env-tmpl").await;
    let template = format!("tmpl_{}", support::random_suffix());
    {
        let mut admin = support::admin_conn(&f.platform.pg, "postgres").await;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "create database {template} is_template true"
        )))
        .execute(&mut admin)
        .await
        .unwrap();
        let mut t = support::admin_conn(&f.platform.pg, &template).await;
        sqlx::raw_sql(
            "create type mood as enum ('ok', 'meh');
             create table customers (id serial primary key, name text not null, mood mood);
             create index customers_name on customers (name);
             create view named as select name from customers;
             create function greet(t text) returns text language sql as $$ select 'hi ' || t $$;",
        )
        .execute(&mut t)
        .await
        .unwrap();
        t.close().await.unwrap();
    }
    f.config_map(
        "seed",
        json!({"seed.sql": "insert into customers (name, mood) values ('ada', 'ok');"}),
    )
    .await;
    f.apply_env(
        "pr-42",
        json!({
            "tier": "ci",
            "server": {"adminSecretRef": {"name": "pg-admin"}, "template": template},
            "seed": {"configMapRef": {"name": "seed"}, "key": "seed.sql"}
        }),
    )
    .await;
    let env = f.ready("pr-42").await;
    let status = env.status.unwrap();
    assert!(status.seeded_at.is_some());
    assert!(
        status.expires_at.is_some(),
        "ci environments expire (24h by default)"
    );

    let c = f.connection("pr-42").await;
    let mut conn = PgConnection::connect(&c["uri"]).await.unwrap();
    // The clone's objects belong to the environment's role, so the app can migrate them.
    sqlx::raw_sql("alter table customers add column email text; create or replace view named as select name, email from customers;")
        .execute(&mut conn)
        .await
        .expect("the app role owns the cloned schema");
    let greeting: String = sqlx::query_scalar("select greet('x')")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(greeting, "hi x");
    let rows: i64 = sqlx::query_scalar("select count(*) from customers")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(rows, 1, "seeded once");

    // A later change to the environment does not seed again.
    f.apply_env(
        "pr-42",
        json!({
            "tier": "ci",
            "server": {"adminSecretRef": {"name": "pg-admin"}, "template": template},
            "seed": {"configMapRef": {"name": "seed"}, "key": "seed.sql"},
            "healthCheck": {"query": "select count(*) from customers"}
        }),
    )
    .await;
    support::wait_for(&f.envs, "pr-42", "Ready at generation 2", WAIT, |e| {
        e.status.as_ref().and_then(|s| s.observed_generation) == Some(2)
            && support::is_ready(e.status.as_ref())
    })
    .await;
    let rows: i64 = sqlx::query_scalar("select count(*) from customers")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(rows, 1, "the seed is applied once");
    conn.close().await.unwrap();
    f.delete_env("pr-42").await;
    assert!(
        exists(&f.platform.pg, "database", &template).await,
        "the template is untouched"
    );
    f.finish().await;
}

#[tokio::test]
async fn busy_template_waits_then_clones() {
    let platform = require_platform!();
    let f = Fixture::new(platform, "env-busy").await;
    let template = format!("tmpl_{}", support::random_suffix());
    let mut admin = support::admin_conn(&f.platform.pg, "postgres").await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "create database {template} is_template true"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    let busy = support::admin_conn(&f.platform.pg, &template).await;
    f.apply_env("app", json!({"tier": "ci", "server": {"adminSecretRef": {"name": "pg-admin"}, "template": template}})).await;
    let env = f.condition("app", "Reconciling", "TemplateInUse").await;
    let (_, _, msg) = support::condition(env.status.as_ref(), "Reconciling").unwrap();
    assert!(msg.contains(&template) && msg.contains("in use"), "{msg}");
    assert!(
        !exists(&f.platform.pg, "role", &f.db_name("app")).await,
        "no orphan role while waiting"
    );
    busy.close().await.unwrap();
    f.ready("app").await;
    f.delete_env("app").await;
    f.finish().await;
}

#[tokio::test]
async fn bad_input_is_reported_precisely_and_never_shows_a_password() {
    let platform = require_platform!();
    let f = Fixture::new(platform, "env-bad").await;
    let pg = f.platform.pg.clone();
    let wrong = Postgres {
        password: "wrong-password-123".into(),
        ..pg.clone()
    };
    support::create_admin_secret(&f.client, &f.ns.name, "wrong-pass", &wrong, json!({})).await;
    let closed_port = {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let down = Postgres {
        port: closed_port,
        ..pg.clone()
    };
    support::create_admin_secret(&f.client, &f.ns.name, "down", &down, json!({})).await;
    Api::<Secret>::namespaced(f.client.clone(), &f.ns.name)
        .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "no-pass"}, "stringData": {"host": "x", "username": "y"}})).unwrap())
        .await
        .unwrap();
    f.config_map(
        "bad-seed",
        json!({"seed.sql": "create table seeded (id int); insert into nowhere values (1);"}),
    )
    .await;

    let cases = [
        (
            "wrong-password",
            json!({"adminSecretRef": {"name": "wrong-pass"}}),
            None,
            "Stalled",
            "AuthenticationFailed",
        ),
        (
            "unreachable",
            json!({"adminSecretRef": {"name": "down"}}),
            None,
            "Reconciling",
            "ServerUnreachable",
        ),
        (
            "missing-keys",
            json!({"adminSecretRef": {"name": "no-pass"}}),
            None,
            "Stalled",
            "SecretKeyMissing",
        ),
        (
            "missing-template",
            json!({"adminSecretRef": {"name": "pg-admin"}, "template": "no_such_template"}),
            None,
            "Stalled",
            "TemplateNotFound",
        ),
        (
            "bad-seed",
            json!({"adminSecretRef": {"name": "pg-admin"}}),
            Some(json!({"configMapRef": {"name": "bad-seed"}, "key": "seed.sql"})),
            "Stalled",
            "SeedFailed",
        ),
    ];
    for (name, server, seed, type_, reason) in &cases {
        let mut spec = json!({"tier": "dev", "server": server});
        if let Some(seed) = seed {
            spec["seed"] = seed.clone();
        }
        f.apply_env(name, spec).await;
        let env = f.condition(name, type_, reason).await;
        let text = serde_json::to_string(&env.status).unwrap();
        assert!(
            !support::condition(env.status.as_ref(), "Ready")
                .unwrap()
                .0
                .eq("True")
        );
        for secret in [&pg.password, "wrong-password-123"] {
            assert!(
                !text.contains(secret),
                "{name}: status leaks a password: {text}"
            );
        }
    }
    // No orphan role from the failed template clone; the failed seed left nothing half-done.
    assert!(
        !exists(&pg, "role", &f.db_name("missing-template")).await,
        "no orphan role"
    );
    let c = f.connection("bad-seed").await;
    let mut conn = PgConnection::connect(&c["uri"]).await.unwrap();
    let tables: i64 =
        sqlx::query_scalar("select count(*) from pg_tables where tablename = 'seeded'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(tables, 0, "the failed seed was rolled back whole");
    conn.close().await.unwrap();
    let bad_seed = f.envs.get("bad-seed").await.unwrap();
    let (_, _, msg) = support::condition(bad_seed.status.as_ref(), "Stalled").unwrap();
    assert!(
        msg.contains("nowhere") && msg.contains("42P01"),
        "the Postgres error is in the message: {msg}"
    );

    // Events carry no password either.
    let events = f.events().await;
    assert!(events.contains("AuthenticationFailed"));
    assert!(
        !events.contains(&pg.password) && !events.contains("wrong-password-123"),
        "events leak a password"
    );
    for (name, ..) in &cases {
        f.delete_env(name).await;
    }
    f.finish().await;
}

#[tokio::test]
async fn tls_verify_full_with_the_servers_ca() {
    let platform = require_platform!();
    let f = Fixture::new(platform, "env-tls").await;
    let ca = std::fs::read_to_string(std::env::var("LIFEBOAT_CA_FILE").expect("LIFEBOAT_CA_FILE"))
        .unwrap();
    support::create_admin_secret(
        &f.client,
        &f.ns.name,
        "tls-admin",
        &f.platform.pg,
        json!({"sslmode": "verify-full", "ca.crt": ca}),
    )
    .await;
    let other_ca =
        "-----BEGIN CERTIFICATE-----\nMIIBdzCCAR2gAwIBAgIUJ9c5\n-----END CERTIFICATE-----\n";
    support::create_admin_secret(
        &f.client,
        &f.ns.name,
        "bad-ca",
        &f.platform.pg,
        json!({"sslmode": "verify-full", "ca.crt": other_ca}),
    )
    .await;
    f.apply_env(
        "secure",
        json!({"tier": "dev", "server": {"adminSecretRef": {"name": "tls-admin"}}}),
    )
    .await;
    f.ready("secure").await;
    let c = f.connection("secure").await;
    assert_eq!(c["sslmode"], "verify-full");
    assert!(
        c.contains_key("ca.crt"),
        "the CA travels with the connection Secret"
    );
    let mut conn = support::admin_conn(&f.platform.pg, "postgres").await;
    let ssl: bool = sqlx::query_scalar(
        "select bool_and(s.ssl) from pg_stat_ssl s join pg_stat_activity a using (pid) where a.application_name = 'lifeboat'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap_or(true);
    assert!(ssl, "Lifeboat's sessions use TLS");
    f.apply_env(
        "untrusted",
        json!({"tier": "dev", "server": {"adminSecretRef": {"name": "bad-ca"}}}),
    )
    .await;
    let env = support::wait_for(
        &f.envs,
        "untrusted",
        "not Ready with a TLS reason",
        WAIT,
        |e| {
            support::condition(e.status.as_ref(), "Ready")
                .is_some_and(|(s, r, _)| s == "False" && r == "TlsFailed")
        },
    )
    .await;
    let (_, _, msg) = support::condition(env.status.as_ref(), "Ready").unwrap();
    assert!(msg.contains("certificate"), "{msg}");
    f.delete_env("secure").await;
    f.delete_env("untrusted").await;
    f.finish().await;
}

#[tokio::test]
async fn external_database_is_adopted_and_never_dropped() {
    let platform = require_platform!();
    let f = Fixture::new(platform, "env-ext").await;
    let db = format!("ext_{}", support::random_suffix());
    let mut admin = support::admin_conn(&f.platform.pg, "postgres").await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("create database {db}")))
        .execute(&mut admin)
        .await
        .unwrap();
    let pg = &f.platform.pg;
    Api::<Secret>::namespaced(f.client.clone(), &f.ns.name)
        .create(&PostParams::default(), &serde_json::from_value(json!({
            "metadata": {"name": "managed-db"},
            "stringData": {"endpoint": pg.host, "port": pg.port.to_string(), "dbname": db, "username": pg.user, "password": pg.password}
        })).unwrap())
        .await
        .unwrap();
    f.apply_env("legacy", json!({
        "tier": "staging",
        "external": {"connectionSecretRef": {"name": "managed-db", "keys": {"host": "endpoint", "database": "dbname"}}}
    }))
    .await;
    let env = f.ready("legacy").await;
    assert!(
        env.metadata.finalizers.unwrap_or_default().is_empty(),
        "no finalizer: nothing to clean up outside"
    );
    assert_eq!(f.connection("legacy").await["database"], db);
    f.delete_env("legacy").await;
    assert!(
        exists(pg, "database", &db).await,
        "an external database is never dropped"
    );
    f.finish().await;
}

#[tokio::test]
async fn retain_keeps_the_database_and_ttl_expires_the_environment() {
    let platform = require_platform!();
    let f = Fixture::new(platform, "env-life").await;
    f.apply_env(
        "kept",
        json!({"tier": "production", "server": {"adminSecretRef": {"name": "pg-admin"}}}),
    )
    .await;
    f.ready("kept").await;
    f.delete_env("kept").await;
    let db = f.db_name("kept");
    assert!(
        exists(&f.platform.pg, "database", &db).await,
        "production keeps its data (Retain)"
    );

    f.apply_env(
        "short",
        json!({"tier": "ci", "ttl": "4s", "server": {"adminSecretRef": {"name": "pg-admin"}}}),
    )
    .await;
    let env = f.ready("short").await;
    assert!(env.status.unwrap().expires_at.is_some());
    let envs = f.envs.clone();
    support::eventually("the TTL to delete the environment", WAIT, || {
        let envs = envs.clone();
        async move { envs.get_opt("short").await.unwrap().is_none().then_some(()) }
    })
    .await;
    assert!(
        !exists(&f.platform.pg, "database", &f.db_name("short")).await,
        "expired ci database dropped"
    );

    let mut admin = support::admin_conn(&f.platform.pg, "postgres").await;
    for statement in [format!("drop database {db}"), format!("drop role {db}")] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
            .execute(&mut admin)
            .await
            .unwrap();
    }
    f.finish().await;
}

#[tokio::test]
async fn postgres_15_is_supported() {
    let platform = require_platform!();
    let f = Fixture::new(platform, "env-pg15").await;
    support::create_admin_secret(
        &f.client,
        &f.ns.name,
        "pg15-admin",
        &f.platform.pg15,
        json!({}),
    )
    .await;
    f.apply_env(
        "old",
        json!({"tier": "dev", "server": {"adminSecretRef": {"name": "pg15-admin"}}}),
    )
    .await;
    let env = f.ready("old").await;
    assert!(
        env.status
            .unwrap()
            .server_version
            .unwrap()
            .starts_with("15")
    );
    f.delete_env("old").await;
    assert!(!exists(&f.platform.pg15, "database", &f.db_name("old")).await);
    f.finish().await;
}

#[tokio::test]
async fn restart_after_a_crash_converges_without_duplicates_or_leaks() {
    let platform = require_platform!();
    let mut f = Fixture::new(platform, "env-crash").await;
    // A seed slow enough to kill the operator in the middle of it.
    f.config_map("slow-seed", json!({"seed.sql": "create table seeded (id int); insert into seeded values (1); select pg_sleep(4);"})).await;
    f.apply_env(
        "app",
        json!({
            "tier": "dev",
            "server": {"adminSecretRef": {"name": "pg-admin"}},
            "seed": {"configMapRef": {"name": "slow-seed"}, "key": "seed.sql"}
        }),
    )
    .await;
    let db = f.db_name("app");
    let pg = f.platform.pg.clone();
    // Kill once the seed is running: a session in this environment's own database runs pg_sleep.
    // (Other tests in this binary sleep too, in their own databases; only this one counts.)
    let seed_sessions = "select count(*) from pg_stat_activity where datname = $1 and query like '%pg_sleep(4)%' and pid <> pg_backend_pid()";
    support::eventually("the seed to be running", WAIT, || {
        let pg = pg.clone();
        let db = db.clone();
        async move {
            let mut c = support::admin_conn(&pg, "postgres").await;
            let n: i64 = sqlx::query_scalar(seed_sessions)
                .bind(&db)
                .fetch_one(&mut c)
                .await
                .unwrap();
            (n > 0).then_some(())
        }
    })
    .await;
    f.op.take().unwrap().kill().await;

    // The killed session's transaction is rolled back: nothing of the seed is there.
    support::eventually("the killed seed to be rolled back", WAIT, || {
        let pg = pg.clone();
        let db = db.clone();
        async move {
            let mut c = support::admin_conn(&pg, "postgres").await;
            let n: i64 = sqlx::query_scalar(seed_sessions)
                .bind(&db)
                .fetch_one(&mut c)
                .await
                .unwrap();
            (n == 0).then_some(())
        }
    })
    .await;

    f.op = Some(support::start_operator(
        &f.client,
        support::settings(&f.ns.name, "op-after-crash"),
    ));
    f.ready("app").await;
    let c = f.connection("app").await;
    let mut conn = PgConnection::connect(&c["uri"])
        .await
        .expect("the password survived the crash");
    let rows: i64 = sqlx::query_scalar("select count(*) from seeded")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(rows, 1, "seeded exactly once across the crash");
    conn.close().await.unwrap();
    let mut admin = support::admin_conn(&pg, "postgres").await;
    let roles: i64 = sqlx::query_scalar("select count(*) from pg_roles where rolname like $1")
        .bind(format!("{db}%"))
        .fetch_one(&mut admin)
        .await
        .unwrap();
    let dbs: i64 = sqlx::query_scalar("select count(*) from pg_database where datname like $1")
        .bind(format!("{db}%"))
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert_eq!((roles, dbs), (1, 1), "no duplicate role or database");
    f.delete_env("app").await;
    assert!(
        !exists(&pg, "database", &db).await && !exists(&pg, "role", &db).await,
        "nothing leaked"
    );
    f.finish().await;
}

#[tokio::test]
async fn environment_is_kept_migrated_with_the_shared_runner() {
    let platform = require_platform!();
    let f = Fixture::new(platform, "env-migr").await;
    f.config_map("schema", json!({
            "1_customers.up.sql": "create table customers (id bigint primary key, name text);",
            "1_customers.down.sql": "drop table customers;",
            "2_orders.up.sql": "create table orders (id bigint primary key, customer_id bigint references customers);",
            "2_orders.down.sql": "drop table orders;"
        })).await;
    f.apply_env(
        "app",
        json!({
            "tier": "dev",
            "server": {"adminSecretRef": {"name": "pg-admin"}},
            "migrations": {"configMapNames": ["schema"]}
        }),
    )
    .await;
    let env = f.ready("app").await;
    assert_eq!(env.status.unwrap().schema_version, Some(support::v(2)));
    let c = f.connection("app").await;
    let mut conn = PgConnection::connect(&c["uri"]).await.unwrap();
    let ledger: Vec<(i64, String)> =
        sqlx::query_as("select version, name from lifeboat_schema_migrations order by version")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert_eq!(
        ledger,
        vec![(1, "customers".to_string()), (2, "orders".to_string())]
    );
    // Rows the application wrote since: a later failed attempt must never touch them.
    sqlx::raw_sql("insert into customers values (1, 'ada'); insert into orders values (10, 1);")
        .execute(&mut conn)
        .await
        .unwrap();

    // A new file lands in the ConfigMap alone (no spec change): the ConfigMap is watched, so it is
    // applied within seconds, long before the next health period would have looked.
    let added = std::time::Instant::now();
    f.config_map("schema", json!({
            "1_customers.up.sql": "create table customers (id bigint primary key, name text);",
            "1_customers.down.sql": "drop table customers;",
            "2_orders.up.sql": "create table orders (id bigint primary key, customer_id bigint references customers);",
            "2_orders.down.sql": "drop table orders;",
            "3_notes.up.sql": "create table notes (id bigint primary key, body text);",
            "3_notes.down.sql": "drop table notes;"
        })).await;
    support::wait_for(
        &f.envs,
        "app",
        "schema version 3",
        Duration::from_secs(15),
        |e| e.status.as_ref().and_then(|s| s.schema_version.clone()) == Some(support::v(3)),
    )
    .await;
    println!(
        "a new file in the ConfigMap was applied in {:?}",
        added.elapsed()
    );

    // A broken migration: rolled back, reported, the schema stays at version 3.
    f.config_map("broken", json!({"4_bad.up.sql": "alter table customers add column email text; alter table nowhere add column x int;", "4_bad.down.sql": "alter table customers drop column email;"})).await;
    f.apply_env(
        "app",
        json!({
            "tier": "dev",
            "server": {"adminSecretRef": {"name": "pg-admin"}},
            "migrations": {"configMapNames": ["schema", "broken"]}
        }),
    )
    .await;
    let env = f.condition("app", "Stalled", "MigrationFailed").await;
    let (_, _, msg) = support::condition(env.status.as_ref(), "Stalled").unwrap();
    assert!(
        msg.contains("4_bad.up.sql") && msg.contains("nowhere"),
        "{msg}"
    );
    let email: i64 = sqlx::query_scalar("select count(*) from information_schema.columns where table_name = 'customers' and column_name = 'email'")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(email, 0, "the failed migration left nothing behind");
    // Only what the failed attempt applied is rolled back: migrations 1 to 3 (applied by earlier
    // attempt) and the rows written since are all still there.
    let rows: (i64, i64) =
        sqlx::query_as("select (select count(*) from customers), (select count(*) from orders)")
            .fetch_one(&mut conn)
            .await
            .expect("both tables survive the failed attempt");
    assert_eq!(rows, (1, 1), "the rows survive the failed attempt");
    let ledger: Vec<i64> = sqlx::query_scalar(
        "select version from public.lifeboat_schema_migrations order by version",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(ledger, vec![1, 2, 3]);

    conn.close().await.unwrap();
    f.delete_env("app").await;
    f.finish().await;
}

#[tokio::test]
async fn crash_between_role_and_database_converges() {
    let platform = require_platform!();
    let client = support::client().await;
    support::install_crds(&client).await;
    let ns = TestNamespace::new(&client, "env-halfway").await;
    support::create_admin_secret(&client, &ns.name, "pg-admin", &platform.pg, json!({})).await;
    support::apply_json(&client, &ns.name, json!({
        "apiVersion": "lifeboat.dev/v1alpha1", "kind": "DatabaseEnvironment", "metadata": {"name": "app"},
        "spec": {"tier": "dev", "server": {"adminSecretRef": {"name": "pg-admin"}}}
    }))
    .await
    .unwrap();
    let envs: Api<DatabaseEnvironment> = Api::namespaced(client.clone(), &ns.name);
    let env = envs.get("app").await.unwrap();
    let uid = env.metadata.uid.clone().unwrap();
    let db = lifeboat::engines::postgres::sql::default_name(&ns.name, "app");

    // The state a crash right after CREATE ROLE leaves: the Secret with the password, the marked role,
    // no database.
    let password = "halfway-password-0123456789abcdef";
    Api::<Secret>::namespaced(client.clone(), &ns.name)
        .create(&PostParams::default(), &serde_json::from_value(json!({
            "metadata": {"name": "app-connection", "ownerReferences": [{
                "apiVersion": "lifeboat.dev/v1alpha1", "kind": "DatabaseEnvironment", "name": "app", "uid": uid, "controller": true
            }]},
            "stringData": {"password": password, "username": db}
        })).unwrap())
        .await
        .unwrap();
    let mut admin = support::admin_conn(&platform.pg, "postgres").await;
    for statement in [
        format!("create role {db} login password '{password}'"),
        format!("comment on role {db} is 'managed-by=lifeboat uid={uid}'"),
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
            .execute(&mut admin)
            .await
            .unwrap();
    }

    let op = support::start_operator(&client, support::settings(&ns.name, "op-restarted"));
    support::wait_for(&envs, "app", "Ready", WAIT, |e| {
        support::is_ready(e.status.as_ref())
    })
    .await;
    let secret = Api::<Secret>::namespaced(client.clone(), &ns.name)
        .get("app-connection")
        .await
        .unwrap();
    let uri = String::from_utf8(secret.data.unwrap()["uri"].0.clone()).unwrap();
    assert!(
        uri.contains(password),
        "the password stored before the crash is kept"
    );
    PgConnection::connect(&uri)
        .await
        .expect("the role from before the crash logs in")
        .close()
        .await
        .unwrap();
    let roles: i64 = sqlx::query_scalar("select count(*) from pg_roles where rolname = $1")
        .bind(&db)
        .fetch_one(&mut admin)
        .await
        .unwrap();
    let dbs: i64 = sqlx::query_scalar("select count(*) from pg_database where datname = $1")
        .bind(&db)
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert_eq!((roles, dbs), (1, 1));

    envs.delete("app", &DeleteParams::default()).await.unwrap();
    support::eventually("the environment to be gone", WAIT, || {
        let envs = envs.clone();
        async move { envs.get_opt("app").await.unwrap().is_none().then_some(()) }
    })
    .await;
    assert!(
        !exists(&platform.pg, "database", &db).await && !exists(&platform.pg, "role", &db).await
    );
    op.stop().await.unwrap();
    ns.cleanup().await;
}

/// A Ready environment stays Ready through `failureThreshold - 1` failed health checks (each a warning
/// event), and is Stalled at the threshold.
#[tokio::test]
async fn health_failures_count_up_to_the_threshold() {
    let platform = require_platform!();
    let f = Fixture::new(platform, "env-health").await;
    f.apply_env(
        "app",
        json!({"tier": "dev", "server": {"adminSecretRef": {"name": "pg-admin"}}}),
    )
    .await;
    f.ready("app").await;
    let c = f.connection("app").await;
    let mut conn = PgConnection::connect(&c["uri"]).await.unwrap();
    sqlx::raw_sql("create table gate (ok int); insert into gate values (1);")
        .execute(&mut conn)
        .await
        .unwrap();
    f.apply_env(
        "app",
        json!({"tier": "dev", "server": {"adminSecretRef": {"name": "pg-admin"}},
               "healthCheck": {"query": "select * from gate", "periodSeconds": 1, "failureThreshold": 3}}),
    )
    .await;
    support::wait_for(&f.envs, "app", "Ready at generation 2", WAIT, |e| {
        e.status.as_ref().and_then(|s| s.observed_generation) == Some(2)
            && support::is_ready(e.status.as_ref())
    })
    .await;
    sqlx::raw_sql("delete from gate")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let env = f.condition("app", "Stalled", "HealthCheckFailed").await;
    let (_, _, msg) = support::condition(env.status.as_ref(), "Stalled").unwrap();
    assert!(msg.contains("no rows"), "{msg}");
    let events = f.events().await;
    // The first failures only warn (repeats of the warning are counted into the first event's series).
    assert!(
        events.contains("Health check 1 of 3 failed"),
        "a warning, not Stalled, at the first failure"
    );
    let json: Value = serde_json::from_str(&events).unwrap();
    let warned: i64 = json["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["reason"] == "HealthCheckFailing")
        .map(|e| {
            e["series"]["count"]
                .as_i64()
                .or(e["count"].as_i64())
                .unwrap_or(1)
        })
        .sum();
    assert!(warned >= 2, "two warnings before the threshold: {warned}");
    f.delete_env("app").await;
    f.finish().await;
}

/// A template kept migrated (issue 13): `main` follows its ConfigMaps; a pull request's environment
/// clones it with `templateFrom` and applies only its own migration. A clone asked for while the
/// template is migrating waits (`TemplateMigrating`) and gets the finished schema, never a half-migrated one.
#[tokio::test]
async fn clones_of_a_template_environment_apply_only_their_own_migrations() {
    let platform = require_platform!();
    let f = Fixture::new(platform, "env-tmpl").await;
    let base = json!({
        "1_customers.up.sql": "create table customers (id bigint primary key, name text);",
        "1_customers.down.sql": "drop table customers;",
        "2_orders.up.sql": "create table orders (id bigint primary key, customer_id bigint);",
        "2_orders.down.sql": "drop table orders;"
    });
    f.config_map("main-schema", base.clone()).await;
    let server = json!({"adminSecretRef": {"name": "pg-admin"}});
    f.apply_env("main", json!({"tier": "staging", "server": server, "migrations": {"configMapNames": ["main-schema"]}})).await;
    let main = f.ready("main").await;
    let main_uid = main.metadata.uid.clone().unwrap();
    assert_eq!(main.status.unwrap().schema_version, Some(support::v(2)));

    f.config_map("pr-1-schema", json!({"3_notes.up.sql": "create table notes (id bigint primary key);", "3_notes.down.sql": "drop table notes;"})).await;
    f.apply_env(
        "pr-1",
        json!({
            "tier": "ci",
            "server": {"adminSecretRef": {"name": "pg-admin"}, "templateFrom": {"name": "main"}},
            "migrations": {"configMapNames": ["main-schema", "pr-1-schema"]}
        }),
    )
    .await;
    let pr = f.ready("pr-1").await;
    assert_eq!(pr.status.unwrap().schema_version, Some(support::v(3)));
    let c = f.connection("pr-1").await;
    let mut conn = PgConnection::connect(&c["uri"]).await.unwrap();
    let ledger: Vec<(i64, String)> =
        sqlx::query_as("select version, run_uid from lifeboat_schema_migrations order by version")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert_eq!(ledger.len(), 3, "{ledger:?}");
    assert!(
        ledger[..2]
            .iter()
            .all(|(_, uid)| uid.starts_with(&main_uid)),
        "1 and 2 came with the clone (applied by main's runs), not run again: {ledger:?}"
    );
    assert!(
        !ledger[2].1.starts_with(&main_uid),
        "3 was applied by the clone"
    );
    conn.close().await.unwrap();

    // The template starts a slow migration; a clone asked for meanwhile waits for it.
    let mut slow = base.clone();
    slow["4_slow.up.sql"] = json!("create table slow (id bigint); select pg_sleep(4);");
    slow["4_slow.down.sql"] = json!("drop table slow;");
    f.config_map("main-schema", slow).await;
    support::wait_for(&f.envs, "main", "migrating", Duration::from_secs(20), |e| {
        support::condition(e.status.as_ref(), "Reconciling").is_some_and(|(s, _, _)| s == "True")
    })
    .await;
    f.apply_env(
        "pr-2",
        json!({
            "tier": "ci",
            "server": {"adminSecretRef": {"name": "pg-admin"}, "templateFrom": {"name": "main"}},
            "migrations": {"configMapNames": ["main-schema"]}
        }),
    )
    .await;
    let waited = support::wait_for(
        &f.envs,
        "pr-2",
        "TemplateMigrating",
        Duration::from_secs(20),
        |e| {
            support::condition(e.status.as_ref(), "Reconciling")
                .is_some_and(|(s, reason, _)| s == "True" && reason == "TemplateMigrating")
                || support::is_ready(e.status.as_ref())
        },
    )
    .await;
    let (status, reason, message) = support::condition(waited.status.as_ref(), "Reconciling")
        .expect("pr-2 waited for the template instead of cloning it mid-migration");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "TemplateMigrating"),
        "pr-2 was Ready without waiting: {message}"
    );
    assert!(message.contains("main"), "{message}");
    let pr2 = f.ready("pr-2").await;
    assert_eq!(pr2.status.unwrap().schema_version, Some(support::v(4)));
    let c = f.connection("pr-2").await;
    let mut conn = PgConnection::connect(&c["uri"]).await.unwrap();
    let from_main: i64 =
        sqlx::query_scalar("select count(*) from lifeboat_schema_migrations where run_uid like $1")
            .bind(format!("{main_uid}%"))
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(from_main, 3, "1, 2 and the slow 4 all came with the clone");
    conn.close().await.unwrap();

    // Refused at the API server: both a template database and a template environment.
    let both = support::apply_json(&f.client, &f.ns.name, json!({
        "apiVersion": "lifeboat.dev/v1alpha1", "kind": "DatabaseEnvironment", "metadata": {"name": "both"},
        "spec": {"tier": "ci", "server": {"adminSecretRef": {"name": "pg-admin"}, "template": "x", "templateFrom": {"name": "main"}}}
    }))
    .await
    .unwrap_err();
    assert!(
        both.to_string().contains("at most one of server.template"),
        "{both}"
    );
    for name in ["pr-1", "pr-2", "main"] {
        f.delete_env(name).await;
    }
    f.finish().await;
}
