//! BackupSchedule on the real platform: PostgreSQL 18 and 15, the S3 server, the API server. Each test
//! asserts what a user can see: objects in the bucket, the manifest, a restore that matches it, the
//! schedule's status and conditions.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api,
    api::{Patch, PatchParams},
};
use lifeboat::api::{MigrationRun, backup_schedule::BackupPhase};
use object_store::{ObjectStoreExt, PutPayload, path::Path};
use serde_json::json;
use support::backups::{BACKUP_WAIT, Backups, manifest_stats, table_stats};

#[tokio::test]
async fn a_triggered_backup_is_verified_and_restores_to_the_same_rows() {
    let Some(b) = Backups::new("bk-restore").await else {
        return;
    };
    b.environment("shop", json!({})).await;
    b.schedule("nightly", "shop", json!({"trigger": "first"}))
        .await;
    let record = b.finished("nightly", BackupPhase::Succeeded).await;
    assert!(record.id.ends_with("-manual"), "{}", record.id);
    assert_eq!(record.kind.as_deref(), Some("manual"));
    let (status, reason, _) = b.condition("nightly", "Ready").await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "BackupSucceeded")
    );
    let (failing, _, _) = b.condition("nightly", "BackupFailing").await;
    assert_eq!(failing, "False");

    // The layout: dump and manifest, nothing else.
    let prefix = b.prefix("nightly");
    assert_eq!(
        b.objects("nightly").await,
        [
            format!("{prefix}/{}/dump", record.id),
            format!("{prefix}/{}/manifest.json", record.id)
        ]
    );
    let manifest = b.manifest("nightly", &record.id).await;
    assert_eq!(manifest.dump.compression, "zstd");
    assert_eq!(Some(manifest.dump.sha256.clone()), record.sha256);
    assert!(
        manifest.server_version.starts_with("18"),
        "{}",
        manifest.server_version
    );
    let source_db = b.fx.database("shop").await;
    let source = table_stats(&b.fx.platform.pg, &source_db).await;
    assert_eq!(
        manifest_stats(&manifest),
        source,
        "manifest = the database at the snapshot"
    );
    assert_eq!(source["public.customers"].0, 3000);
    assert_eq!(source["billing.invoices"].0, 2000);

    // Restore it with pg_restore into a new database: the same rows, the same checksums.
    let path = Path::from(format!("{prefix}/{}/dump", record.id));
    let stored = b.bucket.get(&path).await.unwrap().bytes().await.unwrap();
    assert_eq!(stored.len() as u64, manifest.dump.size_bytes);
    let mut archive = Vec::new();
    tokio::io::copy(
        &mut async_compression::tokio::bufread::ZstdDecoder::new(&stored[..]),
        &mut archive,
    )
    .await
    .unwrap();
    assert_eq!(archive.len() as u64, manifest.dump.raw_size_bytes);
    let target = format!("restored_{}", support::random_suffix());
    let mut admin = support::admin_conn(&b.fx.platform.pg, "postgres").await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("create database {target}")))
        .execute(&mut admin)
        .await
        .unwrap();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &archive).unwrap();
    let pg = &b.fx.platform.pg;
    let out = tokio::process::Command::new("pg_restore")
        .args(["--no-owner", "--no-privileges", "--exit-on-error"])
        .arg(format!(
            "--dbname=postgresql://{}@{}:{}/{target}",
            pg.user, pg.host, pg.port
        ))
        .arg(file.path())
        .env("PGPASSWORD", &pg.password)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "pg_restore: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(table_stats(pg, &target).await, source, "restored = source");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("drop database {target}")))
        .execute(&mut admin)
        .await
        .unwrap();

    // The same trigger again takes nothing; a new one takes a second backup.
    b.trigger("nightly", "second").await;
    let second = support::wait_for(
        &b.schedules,
        "nightly",
        "a second backup",
        BACKUP_WAIT,
        |s| {
            s.status.as_ref().is_some_and(|s| {
                s.recent_backups.len() == 2 && s.recent_backups[0].phase == BackupPhase::Succeeded
            })
        },
    )
    .await;
    assert_eq!(
        second.status.unwrap().last_handled_trigger.as_deref(),
        Some("second")
    );
    b.finish().await;
}

#[tokio::test]
async fn postgres_15_is_backed_up_too() {
    let Some(b) = Backups::new("bk-pg15").await else {
        return;
    };
    b.pg15_environment("old").await;
    b.schedule(
        "nightly",
        "old",
        json!({"trigger": "now", "compression": "gzip"}),
    )
    .await;
    let record = b.finished("nightly", BackupPhase::Succeeded).await;
    let manifest = b.manifest("nightly", &record.id).await;
    assert!(
        manifest.server_version.starts_with("15"),
        "{}",
        manifest.server_version
    );
    assert_eq!(manifest.dump.compression, "gzip");
    let db = b.fx.database("old").await;
    assert_eq!(
        manifest_stats(&manifest),
        table_stats(&b.fx.platform.pg15, &db).await
    );
    b.finish().await;
}

#[tokio::test]
async fn a_fast_cron_takes_its_slot() {
    let Some(b) = Backups::new("bk-cron").await else {
        return;
    };
    b.environment("shop", json!({})).await;
    b.schedule(
        "minutely",
        "shop",
        json!({"schedule": "* * * * *", "tableChecks": "rowCounts", "compression": "none"}),
    )
    .await;
    let s = support::wait_for(
        &b.schedules,
        "minutely",
        "a scheduled backup",
        Duration::from_secs(150),
        |s| {
            s.status.as_ref().is_some_and(|s| {
                s.last_successful_backup.is_some() && s.last_schedule_time.is_some()
            })
        },
    )
    .await;
    let status = s.status.unwrap();
    let id = status.last_successful_backup.unwrap().id;
    assert_eq!(id.len(), "20261201T030000Z".len(), "a slot id: {id}");
    assert!(id.ends_with("00Z"), "slots are whole minutes: {id}");
    assert!(status.next_schedule_time.is_some());
    let manifest = b.manifest("minutely", &id).await;
    assert_eq!(manifest.table_checks, "rowCounts");
    assert!(manifest.tables.iter().all(|t| t.checksum.is_none()));
    assert_eq!(manifest.dump.compression, "none");
    assert_eq!(manifest.dump.size_bytes, manifest.dump.raw_size_bytes);
    b.finish().await;
}

#[tokio::test]
async fn failures_store_nothing_and_say_why() {
    let Some(b) = Backups::new("bk-fail").await else {
        return;
    };
    b.environment("shop", json!({"healthCheck": {"periodSeconds": 3600}}))
        .await;

    // Wrong S3 credentials: the destination is checked when the schedule is applied, so the schedule
    // is not Ready within seconds, saying why, and never starts a backup.
    let applied = std::time::Instant::now();
    b.schedule(
        "denied",
        "shop",
        json!({"trigger": "t", "destination": {"s3": {
        "bucket": b.fx.platform.s3.bucket, "endpoint": b.fx.platform.s3.endpoint,
        "region": b.fx.platform.s3.region, "forcePathStyle": true,
        "credentialsSecretRef": {"name": "s3-wrong"}}}}),
    )
    .await;
    let message = support::eventually(
        "Ready=False with DestinationUnavailable",
        Duration::from_secs(30),
        || async {
            let (ready, reason, message) = b.condition("denied", "Ready").await;
            (ready == "False" && reason == "DestinationUnavailable").then_some(message)
        },
    )
    .await;
    println!(
        "not Ready after {:.1}s: {message}",
        applied.elapsed().as_secs_f64()
    );
    assert!(
        message.contains(&format!("s3://{}/", b.fx.platform.s3.bucket)),
        "names the destination: {message}"
    );
    assert!(message.contains("S3 answered"), "S3's answer: {message}");
    assert!(
        !message.contains("not-the-key"),
        "no secret in status: {message}"
    );
    let status = b
        .schedules
        .get("denied")
        .await
        .unwrap()
        .status
        .unwrap_or_default();
    assert!(status.recent_backups.is_empty(), "{status:#?}");
    assert!(status.destination_check.is_none(), "{status:#?}");
    assert!(b.objects("denied").await.is_empty());
    // With the right credentials, the check passes and the backup runs.
    b.schedules
        .patch(
            "denied",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"destination": {"s3": {"credentialsSecretRef": {"name": "s3"}}}}}),
            ),
        )
        .await
        .unwrap();
    b.finished("denied", BackupPhase::Succeeded).await;
    let checked = b.schedules.get("denied").await.unwrap().status.unwrap();
    assert!(checked.destination_check.is_some(), "{checked:#?}");
    assert!(
        !b.objects("denied")
            .await
            .iter()
            .any(|o| o.contains(".lifeboat-destination-check")),
        "the probe object is deleted"
    );

    // The database does not answer: the connection Secret points at a closed port.
    let secrets: Api<Secret> = Api::namespaced(b.fx.client.clone(), &b.fx.ns.name);
    secrets
        .patch(
            "shop-connection",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"port": "1"}})),
        )
        .await
        .unwrap();
    b.schedule("unreachable", "shop", json!({"trigger": "t"}))
        .await;
    let record = b.finished("unreachable", BackupPhase::Failed).await;
    assert_eq!(
        record.reason.as_deref(),
        Some("ServerUnreachable"),
        "{record:#?}"
    );
    assert!(b.objects("unreachable").await.is_empty());
    let events = b.fx.events().await;
    assert!(events.contains("BackupFailed"), "a BackupFailed event");
    b.finish().await;
}

#[tokio::test]
async fn pg_dump_killed_mid_stream_is_a_failed_backup() {
    let Some(mut b) = Backups::new("bk-killed").await else {
        return;
    };
    // pg_dump's output is cut after 64 KiB and the process is killed.
    let tools = support::backups::tools_with(
        "pg_dump",
        "[ \"$1\" = --version ] && exec \"$REAL\" --version\n\"$REAL\" \"$@\" | head -c 65536\nkill -9 $$",
    );
    b.fx.op.take().unwrap().stop().await.unwrap();
    let mut settings = support::settings(&b.fx.ns.name, "op-cut");
    settings.controllers.pg_bin_dir = Some(tools.path().to_path_buf());
    b.fx.op = Some(support::start_operator(&b.fx.client, settings));
    b.environment("shop", json!({})).await;
    b.schedule(
        "nightly",
        "shop",
        json!({"trigger": "t", "compression": "none"}),
    )
    .await;
    let record = b.finished("nightly", BackupPhase::Failed).await;
    assert_eq!(record.reason.as_deref(), Some("DumpFailed"), "{record:#?}");
    assert!(
        record
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("signal 9"),
        "{record:#?}"
    );
    assert!(
        b.objects("nightly").await.is_empty(),
        "no partial object is left"
    );
    b.finish().await;
}

#[tokio::test]
async fn an_operator_killed_mid_backup_marks_it_failed_and_the_next_one_runs() {
    let Some(mut b) = Backups::new("bk-crash").await else {
        return;
    };
    let slow = support::backups::tools_with(
        "pg_dump",
        "[ \"$1\" = --version ] && exec \"$REAL\" --version\nsleep 20\nexec \"$REAL\" \"$@\"",
    );
    b.fx.op.take().unwrap().stop().await.unwrap();
    let mut settings = support::settings(&b.fx.ns.name, "op-slow");
    settings.controllers.pg_bin_dir = Some(slow.path().to_path_buf());
    b.fx.op = Some(support::start_operator(&b.fx.client, settings));
    b.environment("shop", json!({})).await;
    b.schedule("nightly", "shop", json!({"trigger": "one"}))
        .await;
    support::wait_for(
        &b.schedules,
        "nightly",
        "a running backup",
        BACKUP_WAIT,
        |s| {
            s.status
                .as_ref()
                .and_then(|s| s.recent_backups.first())
                .is_some_and(|r| r.phase == BackupPhase::Running)
        },
    )
    .await;
    b.fx.op.take().unwrap().kill().await;

    b.fx.op = Some(support::start_operator(
        &b.fx.client,
        support::settings(&b.fx.ns.name, "op-after"),
    ));
    let record = b.finished("nightly", BackupPhase::Failed).await;
    assert_eq!(record.reason.as_deref(), Some("Interrupted"), "{record:#?}");
    assert!(b.objects("nightly").await.is_empty());
    b.trigger("nightly", "two").await;
    let s = support::wait_for(
        &b.schedules,
        "nightly",
        "the next backup",
        BACKUP_WAIT,
        |s| {
            s.status
                .as_ref()
                .and_then(|s| s.recent_backups.first())
                .is_some_and(|r| r.phase == BackupPhase::Succeeded)
        },
    )
    .await;
    let status = s.status.unwrap();
    assert_eq!(status.recent_backups.len(), 2);
    assert_eq!(
        status.recent_backups[1].reason.as_deref(),
        Some("Interrupted")
    );
    b.finish().await;
}

#[tokio::test]
async fn retention_expires_old_backups_but_keeps_the_drilled_one() {
    let Some(b) = Backups::new("bk-keep").await else {
        return;
    };
    b.environment("shop", json!({})).await;
    // Ten earlier daily backups (as another run of this schedule left them), one verified by a drill.
    let prefix = b.prefix("nightly");
    let days: Vec<String> = (1..=10).map(|d| format!("202611{d:02}T030000Z")).collect();
    for id in &days {
        for name in ["dump", "manifest.json"] {
            let path = Path::from(format!("{prefix}/{id}/{name}"));
            b.bucket
                .put(&path, PutPayload::from_static(b"x"))
                .await
                .unwrap();
        }
    }
    let drilled = &days[2];
    b.bucket
        .put(
            &Path::from(format!("{prefix}/{drilled}/restore-drill.json")),
            PutPayload::from_static(b"{}"),
        )
        .await
        .unwrap();
    b.schedule(
        "nightly",
        "shop",
        json!({"trigger": "t", "retention": {"keepLast": 2}}),
    )
    .await;
    let record = b.finished("nightly", BackupPhase::Succeeded).await;
    // Retention deletes one backup after another once the new one is recorded: wait for the end state.
    let want: std::collections::BTreeSet<String> =
        [record.id.clone(), days[9].clone(), drilled.clone()]
            .into_iter()
            .collect();
    let folders = |objects: Vec<String>| -> std::collections::BTreeSet<String> {
        objects
            .iter()
            .filter_map(|o| o.strip_prefix(&format!("{prefix}/")))
            .filter_map(|o| o.split('/').next())
            .map(str::to_string)
            .collect()
    };
    support::eventually(
        "retention to keep the new backup, the newest before it (keepLast 2) and the drilled one",
        BACKUP_WAIT,
        || async { (folders(b.objects("nightly").await) == want).then_some(()) },
    )
    .await;
    b.finish().await;
}

#[tokio::test]
async fn a_production_migration_takes_its_backup_first() {
    let Some(b) = Backups::new("bk-prod").await else {
        return;
    };
    b.environment(
        "prod",
        json!({"tier": "production", "deletionPolicy": "Delete", "allowProductionDataLoss": true,
               "healthCheck": {"periodSeconds": 5}}),
    )
    .await;
    b.fx.config_map(
        "migrations",
        json!({"1_add_notes.up.sql": "alter table customers add column notes text;",
               "1_add_notes.down.sql": "alter table customers drop column notes;"}),
    )
    .await;
    let runs: Api<MigrationRun> = Api::namespaced(b.fx.client.clone(), &b.fx.ns.name);
    let apply_run = |name: &'static str| {
        support::apply_json(
            &b.fx.client,
            &b.fx.ns.name,
            json!({"apiVersion": "lifeboat.dev/v1alpha1", "kind": "MigrationRun", "metadata": {"name": name},
                   "spec": {"environmentRef": {"name": "prod"}, "source": {"configMapNames": ["migrations"]}}}),
        )
    };
    // Without a schedule the run is refused, naming what to create.
    apply_run("without").await.unwrap();
    let refused = support::wait_for(&runs, "without", "refused", BACKUP_WAIT, |r| {
        r.status.as_ref().is_some_and(|s| s.finished_at.is_some())
    })
    .await;
    let (stalled, reason, message) =
        support::condition(refused.status.as_ref(), "Stalled").unwrap();
    assert_eq!(
        (stalled.as_str(), reason.as_str()),
        ("True", "BackupsNotAvailable")
    );
    assert!(
        message.contains("no BackupSchedule") && message.contains("prod"),
        "{message}"
    );

    let expected = |missing: &'static str, reason: &'static str| {
        let envs = b.fx.envs.clone();
        async move {
            support::wait_for(
                &envs,
                "prod",
                &format!("BackupsExpected={missing}/{reason}"),
                BACKUP_WAIT,
                move |e| {
                    support::condition(e.status.as_ref(), "BackupsExpected")
                        .is_some_and(|(s, r, _)| s == missing && r == reason)
                },
            )
            .await
        }
    };
    expected("True", "NoBackupSchedule").await;

    b.schedule("nightly", "prod", json!({})).await;
    apply_run("with").await.unwrap();
    let done = support::wait_for(&runs, "with", "finished", BACKUP_WAIT, |r| {
        r.status.as_ref().is_some_and(|s| s.finished_at.is_some())
    })
    .await;
    let status = done.status.unwrap();
    assert_eq!(
        status.phase,
        Some(lifeboat::api::migration_run::MigrationPhase::Succeeded),
        "{status:#?}"
    );
    let id = status.backup_id.expect("the run records its backup");
    assert!(id.ends_with("-premigrate"), "{id}");
    let manifest = b.manifest("nightly", &id).await;
    assert_eq!(manifest.kind, "premigrate");
    let customers = manifest
        .tables
        .iter()
        .find(|t| t.name == "customers")
        .unwrap();
    assert_eq!(customers.rows, 3000);
    let schedule = b.schedules.get("nightly").await.unwrap();
    let recorded = schedule.status.unwrap().last_successful_backup.unwrap();
    assert_eq!(recorded.id, id);
    // The environment sees its backup at its next health check.
    expected("False", "BackupRecent").await;
    b.finish().await;
}

/// The shell block after `<!-- runbook-test -->` in docs/backups.md.
#[tokio::test]
async fn the_runbook_restores_by_hand() {
    let Some(mut b) = Backups::new("bk-runbook").await else {
        return;
    };
    b.environment("shop", json!({})).await;
    b.schedule("nightly", "shop", json!({"trigger": "t"})).await;
    let record = b.finished("nightly", BackupPhase::Succeeded).await;
    let manifest = b.manifest("nightly", &record.id).await;

    // Lifeboat is gone: only the bucket, the page and the standard tools remain.
    b.fx.op.take().unwrap().stop().await.unwrap();
    let pg = &b.fx.platform.pg;
    let target = format!("byhand_{}", support::random_suffix());
    let mut admin = support::admin_conn(pg, "postgres").await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("create database {target}")))
        .execute(&mut admin)
        .await
        .unwrap();
    let s3 = &b.fx.platform.s3;
    let dir = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new("bash")
        .arg("-c")
        .arg(support::doc_block("backups.md", "runbook-test"))
        .current_dir(dir.path())
        .env("S3_ENDPOINT", &s3.endpoint)
        .env("BUCKET", &s3.bucket)
        .env("PREFIX", b.prefix("nightly"))
        .env("REGION", &s3.region)
        .env("AWS_ACCESS_KEY_ID", &s3.access_key)
        .env("AWS_SECRET_ACCESS_KEY", &s3.secret_key)
        .env(
            "TARGET_URL",
            format!("postgresql://{}@{}:{}/{target}", pg.user, pg.host, pg.port),
        )
        .env("PGPASSWORD", &pg.password)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the runbook failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("restoring backup {}", record.id)),
        "{stdout}"
    );
    assert!(
        stdout.contains("dump: OK"),
        "the checksum was checked: {stdout}"
    );
    assert_eq!(table_stats(pg, &target).await, manifest_stats(&manifest));
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("drop database {target}")))
        .execute(&mut admin)
        .await
        .unwrap();
    b.finish().await;
}

#[tokio::test]
async fn two_schedules_of_one_environment_never_back_up_at_once() {
    let Some(b) = Backups::new("bk-two").await else {
        return;
    };
    b.environment("shop", json!({})).await;
    // Both are triggered at once; the database's backup lock makes one wait for the other.
    b.schedule("first", "shop", json!({"trigger": "t"})).await;
    b.schedule("second", "shop", json!({"trigger": "t"})).await;
    let one = b.finished("first", BackupPhase::Succeeded).await;
    let two = b.finished("second", BackupPhase::Succeeded).await;
    let (m1, m2) = (
        b.manifest("first", &one.id).await,
        b.manifest("second", &two.id).await,
    );
    let (earlier, later) = if m1.started_at <= m2.started_at {
        (&m1, &m2)
    } else {
        (&m2, &m1)
    };
    assert!(
        earlier.finished_at <= later.started_at,
        "one backup's snapshot to manifest ({} .. {}) overlaps the other's ({} .. {})",
        earlier.started_at,
        earlier.finished_at,
        later.started_at,
        later.finished_at
    );
    b.finish().await;
}
