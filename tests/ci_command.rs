//! `lifeboat ci` as a pipeline runs it: the built binary, against the platform's API server and
//! PostgreSQL 18, with the operator in-process. `ci up --wait --output env` prints variables that make
//! `psql` connect to a database migrated from a folder mixing sqlx files and diesel folders; a broken
//! migration exits 1 naming the file and line; `ci wait` of a failed run exits 1 at once; `ci down`
//! removes the environment (database and role) and its ConfigMaps.

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, api::ListParams};
use lifeboat::api::{DatabaseEnvironment, MigrationRun};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_lifeboat");

async fn lifeboat(args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(BIN)
        .args(args)
        .output()
        .await
        .expect("the lifeboat binary");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// The `export K='v'` lines of `--output env`, as a map.
fn exports(stdout: &str) -> Vec<(String, String)> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
        .collect()
}

#[tokio::test]
async fn ci_up_wait_prints_a_working_connection_failures_name_the_file_and_down_cleans_up() {
    let platform = require_platform!();
    let client = support::client().await;
    support::install_crds(&client).await;
    let ns = support::TestNamespace::new(&client, "ci-cmd").await;
    let op = support::start_operator(&client, support::settings(&ns.name, "op-1"));
    support::create_admin_secret(&client, &ns.name, "pg-admin", &platform.pg, json!({})).await;

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("20240101000000_customers.up.sql"),
        "create table customers (id bigint primary key, name text);",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("20240101000000_customers.down.sql"),
        "drop table customers;",
    )
    .unwrap();
    let diesel = dir.path().join("2024-01-02-000000_orders");
    std::fs::create_dir(&diesel).unwrap();
    std::fs::write(
        diesel.join("up.sql"),
        "create table orders (id bigint primary key, customer_id bigint);",
    )
    .unwrap();
    std::fs::write(diesel.join("down.sql"), "drop table orders;").unwrap();
    let seed = dir.path().join("seed.txt");
    std::fs::write(&seed, "-- nothing to seed\nselect 1;").unwrap();
    let folder = dir.path().to_str().unwrap();

    let started = Instant::now();
    let (code, stdout, stderr) = lifeboat(&[
        "ci",
        "up",
        "--name",
        "pr-1",
        "--migrations",
        folder,
        "--seed",
        seed.to_str().unwrap(),
        "--admin-secret",
        "pg-admin",
        "--ttl",
        "6h",
        "-n",
        &ns.name,
        "--wait",
        "--timeout",
        "2m",
        "--output",
        "env",
    ])
    .await;
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    println!(
        "ci up --wait took {:?}; progress:\n{stderr}",
        started.elapsed()
    );
    assert!(stderr.contains("migrationrun/pr-1-"), "{stderr}");
    assert!(stderr.contains("Succeeded"), "{stderr}");
    let vars = exports(&stdout);
    let names: Vec<&str> = vars.iter().map(|(k, _)| k.as_str()).collect();
    for k in [
        "DATABASE_URL",
        "PGHOST",
        "PGPORT",
        "PGDATABASE",
        "PGUSER",
        "PGPASSWORD",
    ] {
        assert!(names.contains(&k), "{k} missing in {stdout}");
    }
    let password = &vars.iter().find(|(k, _)| k == "PGPASSWORD").unwrap().1;
    assert!(
        !stderr.contains(password.as_str()),
        "the password never reaches the log"
    );
    // As `eval "$(lifeboat ci up …)"; psql` would: libpq reads the variables.
    let psql = tokio::process::Command::new("psql")
        .args([
            "-XAtc",
            "select count(*) from pg_tables where tablename in ('customers', 'orders')",
        ])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap())
        .envs(vars.iter().filter(|(k, _)| k.starts_with("PG")).cloned())
        .output()
        .await
        .unwrap();
    assert!(
        psql.status.success(),
        "{}",
        String::from_utf8_lossy(&psql.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&psql.stdout).trim(), "2");

    // JSON for other tools, from a second `up` of the same environment (nothing new to apply).
    let (code, stdout, stderr) = lifeboat(&[
        "ci",
        "up",
        "--name",
        "pr-1",
        "--migrations",
        folder,
        "--admin-secret",
        "pg-admin",
        "-n",
        &ns.name,
        "--wait",
        "--output",
        "json",
    ])
    .await;
    assert_eq!(code, 0, "{stderr}");
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(
        json["DATABASE_URL"]
            .as_str()
            .unwrap()
            .starts_with("postgresql://")
    );

    // A broken migration: exit 1, the file, line and the server's words.
    let broken = tempfile::tempdir().unwrap();
    std::fs::write(
        broken.path().join("1_ok.up.sql"),
        "create table ok (id bigint primary key);",
    )
    .unwrap();
    std::fs::write(broken.path().join("1_ok.down.sql"), "drop table ok;").unwrap();
    std::fs::write(
        broken.path().join("2_bad.up.sql"),
        "-- a typo two lines down\n\ninsert into nowhere values (1);",
    )
    .unwrap();
    let (code, _, stderr) = lifeboat(&[
        "ci",
        "up",
        "--name",
        "pr-2",
        "--migrations",
        broken.path().to_str().unwrap(),
        "--admin-secret",
        "pg-admin",
        "-n",
        &ns.name,
        "--wait",
        "--timeout",
        "2m",
    ])
    .await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("RolledBack"), "{stderr}");
    assert!(
        stderr.contains("at 2_bad.up.sql:3 (statement 1) SQLSTATE 42P01"),
        "{stderr}"
    );
    assert!(stderr.contains("nowhere"), "{stderr}");

    // `ci wait` of that run exits 1 at once; of the Ready environment, 0.
    let runs: Api<MigrationRun> = Api::namespaced(client.clone(), &ns.name);
    let failed = runs
        .list(&ListParams::default().labels("lifeboat.dev/ci=pr-2"))
        .await
        .unwrap()
        .items
        .remove(0);
    let target = format!("migrationrun/{}", kube::ResourceExt::name_any(&failed));
    let t = Instant::now();
    let (code, _, stderr) =
        lifeboat(&["ci", "wait", &target, "-n", &ns.name, "--timeout", "60s"]).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "at once, not at the timeout"
    );
    let (code, _, stderr) = lifeboat(&["ci", "wait", "dbenv/pr-1", "-n", &ns.name]).await;
    assert_eq!(code, 0, "{stderr}");
    let (code, _, stderr) = lifeboat(&[
        "ci",
        "wait",
        "dbenv/missing",
        "-n",
        &ns.name,
        "--timeout",
        "2s",
    ])
    .await;
    assert_eq!(code, 2, "a timeout is exit 2: {stderr}");

    // Bad input is refused before anything is sent.
    let typo = tempfile::tempdir().unwrap();
    std::fs::write(typo.path().join("v1_x.up.sql"), "select 1;").unwrap();
    let (code, _, stderr) = lifeboat(&[
        "ci",
        "up",
        "--name",
        "pr-3",
        "--migrations",
        typo.path().to_str().unwrap(),
        "--admin-secret",
        "pg-admin",
        "-n",
        &ns.name,
    ])
    .await;
    assert_eq!(code, 1);
    assert!(
        stderr.contains("v1_x.up.sql: the version \"v1\" holds 'v'"),
        "{stderr}"
    );
    let envs: Api<DatabaseEnvironment> = Api::namespaced(client.clone(), &ns.name);
    assert!(envs.get_opt("pr-3").await.unwrap().is_none());

    // Down: the environment goes (its database and role with it), and so do the ConfigMaps.
    let database = envs
        .get("pr-1")
        .await
        .unwrap()
        .status
        .unwrap()
        .database
        .unwrap();
    for name in ["pr-1", "pr-2"] {
        let (code, _, stderr) = lifeboat(&["ci", "down", "--name", name, "-n", &ns.name]).await;
        assert_eq!(code, 0, "{stderr}");
    }
    support::eventually(
        "both environments to be gone",
        Duration::from_secs(60),
        || {
            let envs = envs.clone();
            async move {
                envs.list(&ListParams::default())
                    .await
                    .unwrap()
                    .items
                    .is_empty()
                    .then_some(())
            }
        },
    )
    .await;
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    assert!(
        maps.list(&ListParams::default().labels("lifeboat.dev/ci"))
            .await
            .unwrap()
            .items
            .is_empty()
    );
    let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&platform.pg.url("postgres"))
        .await
        .unwrap();
    let left: i64 = sqlx::query_scalar("select count(*) from pg_database where datname = $1")
        .bind(&database)
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert_eq!(left, 0, "the database was dropped");
    op.stop().await.unwrap();
    ns.cleanup().await;
}

/// Installed as `kubectl-lifeboat` on PATH, the binary is a kubectl plugin: `kubectl lifeboat …`.
#[tokio::test]
async fn the_binary_is_a_kubectl_plugin() {
    let _platform = require_platform!();
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(BIN, dir.path().join("kubectl-lifeboat")).unwrap();
    let path = format!(
        "{}:{}",
        dir.path().display(),
        std::env::var("PATH").unwrap()
    );
    let out = tokio::process::Command::new("kubectl")
        .args([
            "lifeboat",
            "ci",
            "wait",
            "dbenv/nobody-here",
            "-n",
            "default",
            "--timeout",
            "1s",
        ])
        .env("PATH", &path)
        .output()
        .await
        .expect("kubectl on PATH");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("timed out waiting for databaseenvironment/nobody-here"),
        "{stderr}"
    );
    let plugins = tokio::process::Command::new("kubectl")
        .args(["plugin", "list"])
        .env("PATH", &path)
        .output()
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&plugins.stdout).contains("kubectl-lifeboat"));
}
