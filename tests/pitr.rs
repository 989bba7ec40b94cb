//! Point-in-time recovery of an `external` PostgreSQL (a server of the test's own, with a REPLICATION
//! role): the operator archives its WAL continuously and takes a base backup with the schedule's backup;
//! a table is dropped; docs/pitr.md's runbook, run exactly as written with PostgreSQL's own programs,
//! brings a copy of the server back to the second before the drop, with every row. Turning archiving off
//! drops the replication slot.

mod support;

use std::time::Duration;

use kube::api::{Patch, PatchParams};
use lifeboat::api::backup_schedule::BackupPhase;
use serde_json::json;
use sqlx::Connection;
use support::{
    backups::Backups,
    private_pg::{PrivatePostgres, as_server_user, give_to_server_user, server_bin},
};

async fn sql(pg: &support::Postgres, database: &str, statement: &str) {
    let mut conn = support::admin_conn(pg, database).await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(statement.to_string()))
        .execute(&mut conn)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_dropped_table_comes_back_from_the_wal_archive_by_the_runbook() {
    let Some(b) = Backups::new("pitr").await else {
        return;
    };
    let Some(bin) = server_bin() else { return };
    let source = PrivatePostgres::start(bin.clone()).await;
    let pg = source.pg.clone();
    sql(&pg, "postgres", "create database shop").await;
    sql(
        &pg,
        "shop",
        "create table orders (id int primary key, note text not null);
         insert into orders select g, 'order ' || g from generate_series(1, 1000) g",
    )
    .await;
    support::create_admin_secret(
        &b.fx.client,
        &b.fx.ns.name,
        "origin-db",
        &pg,
        json!({"database": "shop", "sslmode": "disable"}),
    )
    .await;
    b.fx.apply_env(
        "origin",
        json!({"tier": "production", "external": {"connectionSecretRef": {"name": "origin-db"}}}),
    )
    .await;
    b.fx.ready("origin").await;
    b.schedule(
        "nightly",
        "origin",
        json!({"trigger": "t", "tableChecks": "rowCounts",
               "wal": {"enabled": true, "archiveTimeout": "5s"}}),
    )
    .await;
    let id = b.finished("nightly", BackupPhase::Succeeded).await.id;
    let manifest = b.manifest("nightly", &id).await;
    let base = manifest
        .base
        .clone()
        .expect("a base backup with the backup");
    println!(
        "base backup: {} bytes, WAL from {} to {}",
        base.size_bytes, base.start_segment, base.end_segment
    );

    // Writes after the base backup, the moment to return to, then the mistake.
    sql(
        &pg,
        "shop",
        "insert into orders select g, 'order ' || g from generate_series(1001, 1500) g",
    )
    .await;
    // The target, read from the server's clock after the insert committed and before the drop: replay
    // stops at it, with the insert and without the drop.
    let target: String = sqlx::query_scalar(
        "select to_char(clock_timestamp() at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'",
    )
    .fetch_one(&mut support::admin_conn(&pg, "shop").await)
    .await
    .unwrap();
    sql(&pg, "shop", "drop table orders").await;
    let dropped_at = chrono::Utc::now();

    // Archived past the drop, within a few archive timeouts.
    let status = support::eventually(
        "the WAL of the drop in the archive",
        Duration::from_secs(90),
        || async {
            let s = b.schedules.get("nightly").await.ok()?.status?;
            let wal = s.wal.clone()?;
            let newest = wal.newest_wal_time.as_ref()?;
            (newest.0.as_second() > dropped_at.timestamp()).then_some(s)
        },
    )
    .await;
    let wal = status.wal.clone().unwrap();
    println!(
        "archived through {:?} (newest {:?}, lag {:?}) {:.1}s after the drop",
        wal.newest_wal_time,
        wal.newest_segment,
        wal.lag_seconds,
        (chrono::Utc::now() - dropped_at).num_milliseconds() as f64 / 1000.0
    );
    let (ready, reason, message) = b.condition("nightly", "WALArchiving").await;
    assert_eq!(
        (ready.as_str(), reason.as_str()),
        ("True", "Archiving"),
        "{message}"
    );

    // The runbook, as written, by a user that is not root.
    let work = tempfile::tempdir().unwrap();
    give_to_server_user(work.path());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let data = work.path().join("restored");
    let s3 = &b.fx.platform.s3;
    let bash = std::path::Path::new("/bin/bash");
    let out = as_server_user(bash)
        .arg("-c")
        .arg(support::doc_block("pitr.md", "pitr-runbook-test"))
        .current_dir(work.path())
        .env("PATH", std::env::var("PATH").unwrap())
        .env("HOME", work.path())
        .env("S3_ENDPOINT", &s3.endpoint)
        .env("BUCKET", &s3.bucket)
        .env("PREFIX", b.prefix("nightly"))
        .env("REGION", &s3.region)
        .env("AWS_ACCESS_KEY_ID", &s3.access_key)
        .env("AWS_SECRET_ACCESS_KEY", &s3.secret_key)
        .env("TARGET_TIME", &target)
        .env("PGBIN", &bin)
        .env("DATA", &data)
        .env("PORT", port.to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the runbook failed:\n{stdout}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(work.path().join("restored.log")).unwrap_or_default()
    );
    assert!(
        stdout.contains(&format!("base backup: {}/{id}", b.prefix("nightly"))),
        "{stdout}"
    );
    println!("{stdout}");

    // Promoted at the target: the table is back with every row written before it.
    let restored = support::Postgres { port, ..pg.clone() };
    let rows: i64 = support::eventually(
        "the restored server promoted",
        Duration::from_secs(120),
        || {
            let restored = restored.clone();
            async move {
                let mut conn = sqlx::PgConnection::connect_with(
                    &restored
                        .url("shop")
                        .parse::<sqlx::postgres::PgConnectOptions>()
                        .ok()?,
                )
                .await
                .ok()?;
                let recovering: bool = sqlx::query_scalar("select pg_is_in_recovery()")
                    .fetch_one(&mut conn)
                    .await
                    .ok()?;
                if recovering {
                    return None;
                }
                sqlx::query_scalar("select count(*) from orders")
                    .fetch_one(&mut conn)
                    .await
                    .ok()
            }
        },
    )
    .await;
    assert_eq!(rows, 1500, "every row written before the target time");
    let _ = as_server_user(&bin.join("pg_ctl"))
        .arg("-D")
        .arg(&data)
        .args(["-m", "immediate", "stop"])
        .output();

    // Archiving off: the archiver stops and its slot goes, so the server keeps no WAL for it.
    b.schedules
        .patch(
            "nightly",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"wal": {"enabled": false}}})),
        )
        .await
        .unwrap();
    support::eventually(
        "the replication slot dropped",
        Duration::from_secs(60),
        || {
            let pg = pg.clone();
            async move {
                let mut conn = support::admin_conn(&pg, "postgres").await;
                let slots: i64 = sqlx::query_scalar("select count(*) from pg_replication_slots")
                    .fetch_one(&mut conn)
                    .await
                    .ok()?;
                (slots == 0).then_some(())
            }
        },
    )
    .await;
    b.finish().await;
}

/// A tenant of a shared server may not archive WAL into its own bucket: the server's WAL holds every
/// tenant's data. The schedule says so in `WALArchiving`, takes its dumps as before, and no slot is made.
#[tokio::test]
async fn a_shared_servers_tenant_is_refused_wal_archiving_and_still_backs_up() {
    let Some(b) = Backups::new("pitr-tenant").await else {
        return;
    };
    b.environment("shop", json!({})).await;
    b.schedule(
        "nightly",
        "shop",
        json!({"trigger": "t", "wal": {"enabled": true}}),
    )
    .await;
    let record = b.finished("nightly", BackupPhase::Succeeded).await;
    let manifest = b.manifest("nightly", &record.id).await;
    assert!(manifest.base.is_none(), "no base backup of a shared server");
    let message = support::eventually("WALArchiving=False", Duration::from_secs(30), || async {
        let (status, reason, message) = b.condition("nightly", "WALArchiving").await;
        (status == "False" && reason == "WALArchivingStopped").then_some(message)
    })
    .await;
    assert!(message.contains("tenant of a shared server"), "{message}");
    let mut admin = support::admin_conn(&b.fx.platform.pg, "postgres").await;
    let slots: i64 = sqlx::query_scalar(
        "select count(*) from pg_replication_slots where slot_name like 'lifeboat%'",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!(slots, 0);
    b.finish().await;
}
