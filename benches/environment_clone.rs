//! Apply-to-Ready time of `ci` environments cloned from a migrated template (50 tables with indexes), side
//! by side with raw `createdb -T` of the same template, interleaved in one run on one server.
//!
//! Needs the test platform: `e2e/platform.sh up && eval "$(e2e/platform.sh env)"`, then
//! `cargo bench --bench environment_clone` (or `e2e/bench/environment-clone.sh`). Prints figures; asserts nothing.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use kube::Api;
use lifeboat::api::DatabaseEnvironment;
use serde_json::json;

const RUNS: usize = 50;
const TABLES: usize = 50;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

fn template_sql() -> String {
    let mut sql = String::new();
    for t in 0..TABLES {
        sql.push_str(&format!(
            "create table t{t} (id bigserial primary key, name text not null, amount numeric(12,2), created_at timestamptz default now(){});\n\
             create index t{t}_name on t{t} (name);\ncreate index t{t}_created on t{t} (created_at);\n",
            if t > 0 { format!(", parent_id bigint references t{} (id)", t - 1) } else { String::new() }
        ));
    }
    sql
}

#[tokio::main]
async fn main() {
    let platform = support::platform().expect(
        "the test platform must be up: e2e/platform.sh up && eval \"$(e2e/platform.sh env)\"",
    );
    let client = support::client().await;
    support::install_crds(&client).await;
    let ns = support::TestNamespace::new(&client, "bench-clone").await;
    support::create_admin_secret(&client, &ns.name, "pg-admin", &platform.pg, json!({})).await;
    let pg = &platform.pg;
    let template = format!("bench_tmpl_{}", support::random_suffix());
    {
        let mut admin = support::admin_conn(pg, "postgres").await;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "create database {template} is_template true"
        )))
        .execute(&mut admin)
        .await
        .unwrap();
        let mut t = support::admin_conn(pg, &template).await;
        sqlx::raw_sql(sqlx::AssertSqlSafe(template_sql()))
            .execute(&mut t)
            .await
            .unwrap();
        use sqlx::Connection;
        t.close().await.unwrap();
    }
    let op = support::start_operator(&client, support::settings(&ns.name, "bench"));
    let envs: Api<DatabaseEnvironment> = Api::namespaced(client.clone(), &ns.name);

    let (mut lifeboat, mut raw) = (Vec::new(), Vec::new());
    for i in 0..RUNS {
        // Lifeboat: apply the object, wait (watching) for Ready.
        let name = format!("pr-{i}");
        let start = Instant::now();
        support::apply_json(&client, &ns.name, json!({
            "apiVersion": "lifeboat.dev/v1alpha1", "kind": "DatabaseEnvironment", "metadata": {"name": name},
            "spec": {"tier": "ci", "server": {"adminSecretRef": {"name": "pg-admin"}, "template": template}}
        }))
        .await
        .unwrap();
        support::wait_for(&envs, &name, "Ready", Duration::from_secs(60), |e| {
            support::is_ready(e.status.as_ref())
        })
        .await;
        lifeboat.push(start.elapsed().as_secs_f64() * 1000.0);

        // Raw: createdb -T of the same template.
        let start = Instant::now();
        let out = tokio::process::Command::new("createdb")
            .args([
                "-h",
                &pg.host,
                "-p",
                &pg.port.to_string(),
                "-U",
                &pg.user,
                "-T",
                &template,
                &format!("{template}_raw_{i}"),
            ])
            .env("PGPASSWORD", &pg.password)
            .output()
            .await
            .expect("createdb on PATH");
        assert!(
            out.status.success(),
            "createdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        raw.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    lifeboat.sort_by(f64::total_cmp);
    raw.sort_by(f64::total_cmp);
    let (lp50, lp95, rp50, rp95) = (
        percentile(&lifeboat, 0.5),
        percentile(&lifeboat, 0.95),
        percentile(&raw, 0.5),
        percentile(&raw, 0.95),
    );
    let target = 1.5 * rp50 + 300.0;
    println!(
        "environment clone benchmark: {RUNS} runs each, template with {TABLES} tables and {} indexes",
        TABLES * 3
    );
    println!("{:<34} {:>10} {:>10}", "", "p50 ms", "p95 ms");
    println!(
        "{:<34} {:>10.1} {:>10.1}",
        "Lifeboat apply -> Ready", lp50, lp95
    );
    println!("{:<34} {:>10.1} {:>10.1}", "createdb -T (raw)", rp50, rp95);
    println!(
        "ratio p50 Lifeboat/raw: {:.2}x; target p50 <= 1.5 x raw + 300 ms = {target:.1} ms: {}",
        lp50 / rp50,
        if lp50 <= target { "met" } else { "NOT met" }
    );

    support::delete_all(&envs, Duration::from_secs(120)).await;
    op.stop().await.unwrap();
    let mut admin = support::admin_conn(pg, "postgres").await;
    for i in 0..RUNS {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "drop database {template}_raw_{i}"
        )))
        .execute(&mut admin)
        .await
        .unwrap();
    }
    // A template must be unmarked before it can be dropped.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "alter database {template} is_template false"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("drop database {template}")))
        .execute(&mut admin)
        .await
        .unwrap();
    ns.cleanup().await;
}
