//! `lifeboat ci up` of a pull request adding 3 migrations on top of a 200-table template: wall time from
//! the command to a usable `DATABASE_URL` (the command returns after `--wait`), side by side with the
//! raw path — `createdb -T` of the same template, then `psql -1 -f` of the same 3 files — interleaved in
//! one run on one server, 30 runs each, p50/p95. Each pull request's environment is removed with
//! `lifeboat ci down` between runs (not timed).
//!
//! Needs the test platform: `e2e/platform.sh up && eval "$(e2e/platform.sh env)"`, then
//! `cargo bench --bench ci_up` (or `e2e/bench/ci-up.sh`). Prints figures; asserts nothing.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Instant;

use serde_json::json;

const RUNS: usize = 30;
const TABLES: usize = 200;
const BIN: &str = env!("CARGO_BIN_EXE_lifeboat");

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

fn template_sql() -> String {
    (0..TABLES)
        .map(|t| {
            format!(
                "create table t{t} (id bigint generated always as identity primary key, name text not null, created_at timestamptz not null default now());\ncreate index t{t}_name on t{t} (name);\n"
            )
        })
        .collect()
}

const MIGRATIONS: [(&str, &str); 6] = [
    (
        "20250301000000_carts.up.sql",
        "create table carts (id bigint generated always as identity primary key, t0_id bigint not null references t0);",
    ),
    ("20250301000000_carts.down.sql", "drop table carts;"),
    (
        "20250302000000_cart_items.up.sql",
        "create table cart_items (cart_id bigint not null references carts, sku text not null, quantity integer not null default 1, primary key (cart_id, sku));",
    ),
    (
        "20250302000000_cart_items.down.sql",
        "drop table cart_items;",
    ),
    (
        "20250303000000_carts_note.up.sql",
        "alter table carts add column note text;",
    ),
    (
        "20250303000000_carts_note.down.sql",
        "alter table carts drop column note;",
    ),
];

async fn command(program: &str, args: &[&str], env: &[(&str, &str)]) {
    let out = tokio::process::Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .await
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::main]
async fn main() {
    let platform = support::platform().expect(
        "the test platform must be up: e2e/platform.sh up && eval \"$(e2e/platform.sh env)\"",
    );
    let client = support::client().await;
    support::install_crds(&client).await;
    let ns = support::TestNamespace::new(&client, "bench-ci-up").await;
    support::create_admin_secret(&client, &ns.name, "pg-admin", &platform.pg, json!({})).await;
    let pg = &platform.pg;
    let template = format!("bench_ci_tmpl_{}", support::random_suffix());
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
    }
    let dir = tempfile::tempdir().unwrap();
    for (file, sql) in MIGRATIONS {
        std::fs::write(dir.path().join(file), sql).unwrap();
    }
    let ups: Vec<String> = MIGRATIONS
        .iter()
        .filter(|(f, _)| f.ends_with(".up.sql"))
        .map(|(f, _)| dir.path().join(f).display().to_string())
        .collect();
    let folder = dir.path().display().to_string();
    let op = support::start_operator(&client, support::settings(&ns.name, "bench"));
    let port = pg.port.to_string();
    let (mut lifeboat, mut raw) = (Vec::new(), Vec::new());
    for i in 0..RUNS {
        let name = format!("pr-{i}");
        let start = Instant::now();
        command(
            BIN,
            &[
                "ci",
                "up",
                "--name",
                &name,
                "--migrations",
                &folder,
                "--template-database",
                &template,
                "--admin-secret",
                "pg-admin",
                "-n",
                &ns.name,
                "--wait",
                "--timeout",
                "2m",
                "--output",
                "env",
            ],
            &[],
        )
        .await;
        lifeboat.push(start.elapsed().as_secs_f64() * 1000.0);
        command(BIN, &["ci", "down", "--name", &name, "-n", &ns.name], &[]).await;

        let db = format!("{template}_raw_{i}");
        let start = Instant::now();
        let login = [
            "-h",
            pg.host.as_str(),
            "-p",
            port.as_str(),
            "-U",
            pg.user.as_str(),
        ];
        let env = [("PGPASSWORD", pg.password.as_str())];
        command(
            "createdb",
            &[&login[..], &["-T", &template, &db]].concat(),
            &env,
        )
        .await;
        let mut psql: Vec<&str> = [
            &login[..],
            &["-X", "-q", "-1", "-v", "ON_ERROR_STOP=1", "-d", &db],
        ]
        .concat();
        for f in &ups {
            psql.extend(["-f", f.as_str()]);
        }
        command("psql", &psql, &env).await;
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
    println!("ci up benchmark: {RUNS} runs each, template with {TABLES} tables, 3 new migrations");
    println!("{:<44} {:>10} {:>10}", "", "p50 ms", "p95 ms");
    println!(
        "{:<44} {:>10.1} {:>10.1}",
        "lifeboat ci up --wait (to DATABASE_URL)", lp50, lp95
    );
    println!(
        "{:<44} {:>10.1} {:>10.1}",
        "createdb -T + psql -1 -f (raw)", rp50, rp95
    );
    println!(
        "ratio p50 Lifeboat/raw: {:.2}x; target p50 <= 1.5 x raw + 300 ms = {target:.1} ms: {}",
        lp50 / rp50,
        if lp50 <= target { "met" } else { "NOT met" }
    );

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
