//! RestoreDrill on the real platform: a backup taken by a BackupSchedule is restored into a scratch
//! database on PostgreSQL 18, checked, measured, and the scratch database is gone afterwards, also when
//! the operator restarts mid-drill or the drill is deleted.

mod support;

use kube::{Api, ResourceExt, api::DeleteParams};
use lifeboat::{
    api::{
        RestoreDrill,
        backup_schedule::BackupPhase,
        restore_drill::{DrillResult, DrillRun},
    },
    engines::postgres::restore::scratch_target,
};
use object_store::{ObjectStoreExt, PutPayload, path::Path};
use serde_json::{Value, json};
use support::backups::{BACKUP_WAIT, Backups};

struct Drills {
    b: Backups,
    drills: Api<RestoreDrill>,
}

impl Drills {
    /// A namespace with a seeded environment, its schedule `nightly`, and one backup taken.
    async fn new(prefix: &str) -> Option<(Self, String)> {
        let b = Backups::new(prefix).await?;
        b.environment("shop", json!({})).await;
        b.schedule("nightly", "shop", json!({"trigger": "t"})).await;
        let record = b.finished("nightly", BackupPhase::Succeeded).await;
        let drills = Api::namespaced(b.fx.client.clone(), &b.fx.ns.name);
        Some((Self { b, drills }, record.id))
    }

    async fn apply(&self, name: &str, extra: Value) {
        let mut spec = json!({
            "backupScheduleRef": {"name": "nightly"},
            "target": {"server": {"adminSecretRef": {"name": "pg-admin"}}},
        });
        if let (Some(s), Value::Object(e)) = (spec.as_object_mut(), extra) {
            s.extend(e);
        }
        support::apply_json(
            &self.b.fx.client,
            &self.b.fx.ns.name,
            json!({"apiVersion": "lifeboat.dev/v1alpha1", "kind": "RestoreDrill",
                   "metadata": {"name": name}, "spec": spec}),
        )
        .await
        .expect("apply RestoreDrill");
    }

    async fn finished(&self, name: &str) -> (RestoreDrill, DrillRun) {
        let d = support::wait_for(&self.drills, name, "a finished drill", BACKUP_WAIT, |d| {
            d.status.as_ref().is_some_and(|s| s.last_run.is_some())
        })
        .await;
        let run = d.status.clone().unwrap().last_run.unwrap();
        (d, run)
    }

    /// Whether the drill's scratch database or role exists on the server.
    async fn scratch_exists(&self, drill: &RestoreDrill) -> bool {
        let target = scratch_target(&drill.uid().unwrap());
        let mut admin = support::admin_conn(&self.b.fx.platform.pg, "postgres").await;
        let n: i64 = sqlx::query_scalar(
            "select (select count(*) from pg_database where datname = $1) + (select count(*) from pg_roles where rolname = $1)",
        )
        .bind(&target.database)
        .fetch_one(&mut admin)
        .await
        .unwrap();
        n > 0
    }

    async fn object(&self, id: &str, name: &str) -> Option<bytes::Bytes> {
        let path = Path::from(format!("{}/{id}/{name}", self.b.prefix("nightly")));
        self.b.bucket.get(&path).await.ok()?.bytes().await.ok()
    }

    async fn put(&self, id: &str, name: &str, body: Vec<u8>) {
        let path = Path::from(format!("{}/{id}/{name}", self.b.prefix("nightly")));
        self.b
            .bucket
            .put(&path, PutPayload::from(body))
            .await
            .unwrap();
    }
}

fn check<'a>(run: &'a DrillRun, name: &str) -> &'a lifeboat::api::restore_drill::CheckResult {
    run.checks
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("check {name} in {run:#?}"))
}

#[tokio::test]
async fn a_drill_restores_the_newest_backup_checks_it_and_leaves_nothing() {
    let Some((d, id)) = Drills::new("drill-ok").await else {
        return;
    };
    d.apply(
        "weekly",
        json!({
            "checks": {"rowCounts": true, "checksums": true, "queries": [
                {"name": "customers", "sql": "select count(*) from customers", "expected": "3000"},
                {"name": "newest-invoice", "sql": "select max(id) from billing.invoices;", "expected": "2000"}
            ]},
            "objectives": {"rto": "15m", "rpo": "24h"}
        }),
    )
    .await;
    let (drill, run) = d.finished("weekly").await;
    assert_eq!(run.result, DrillResult::Passed, "{run:#?}");
    assert_eq!(run.backup_id, id);
    for name in ["rowCounts", "checksums", "customers", "newest-invoice"] {
        assert!(check(&run, name).passed, "{name}: {run:#?}");
    }
    assert_eq!(
        run.restore_method.as_deref(),
        Some("streamed into one pg_restore job")
    );
    let (rto, rpo) = (run.rto_seconds.unwrap(), run.rpo_seconds.unwrap());
    assert!(rto >= run.restore_seconds.unwrap() && rpo < 600, "{run:#?}");
    assert!(run.newest_backup_age_seconds.is_some());
    let status = drill.status.clone().unwrap();
    assert_eq!(status.objectives_met, Some(true));
    let (met, reason, message) = support::condition(Some(&status), "ObjectivesMet").unwrap();
    assert_eq!(
        (met.as_str(), reason.as_str()),
        ("True", "ObjectivesMet"),
        "{message}"
    );
    assert!(
        message.contains("RTO") && message.contains("RPO"),
        "{message}"
    );
    let (ready, _, _) = support::condition(Some(&status), "Ready").unwrap();
    assert_eq!(ready, "True");
    assert!(
        !d.scratch_exists(&drill).await,
        "the scratch database and role are dropped"
    );

    // The result is kept beside the backup, and the schedule knows it is recoverable.
    let marker = d
        .object(&id, "restore-drill.json")
        .await
        .expect("restore-drill.json");
    let marker: Value = serde_json::from_slice(&marker).unwrap();
    assert_eq!(marker["run"]["result"], "Passed");
    let schedule = support::wait_for(&d.b.schedules, "nightly", "Recoverable", BACKUP_WAIT, |s| {
        support::condition(s.status.as_ref(), "Recoverable").is_some_and(|(s, _, _)| s == "True")
    })
    .await;
    let verified = schedule.status.unwrap().last_verified_restore.unwrap();
    assert_eq!(
        (verified.drill.as_str(), verified.backup_id.as_str()),
        ("weekly", id.as_str())
    );
    d.b.finish().await;
}

/// Files left in a spool directory.
fn spooled_files(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[tokio::test]
async fn parallel_drills_spool_within_the_limit_and_stream_beyond_it() {
    let Some((mut d, id)) = Drills::new("drill-jobs").await else {
        return;
    };
    let spool = tempfile::tempdir().unwrap();
    let restart = |d: &mut Drills, limit: u64, identity: &str| {
        let mut settings = support::settings(&d.b.fx.ns.name, identity);
        settings.controllers.spool =
            lifeboat::controllers::restore::Spool::new(Some(spool.path().to_path_buf()), limit);
        d.b.fx.op = Some(support::start_operator(&d.b.fx.client, settings));
    };
    d.b.fx.op.take().unwrap().stop().await.unwrap();
    restart(&mut d, 1 << 30, "op-spool");
    let checks = json!({"rowCounts": true, "checksums": true});
    d.apply("parallel", json!({"jobs": 3, "checks": checks}))
        .await;
    let (_, run) = d.finished("parallel").await;
    assert_eq!(run.result, DrillResult::Passed, "{run:#?}");
    assert!(check(&run, "checksums").passed, "{run:#?}");
    let method = run.restore_method.clone().unwrap();
    assert!(
        method.starts_with("spooled ") && method.ends_with("with 3 parallel jobs"),
        "{method}"
    );
    assert!(
        spooled_files(spool.path()).is_empty(),
        "the spool file is removed"
    );

    // A limit below the dump's size: the drill streams with one job and says why.
    let manifest = d.b.manifest("nightly", &id).await;
    d.b.fx.op.take().unwrap().stop().await.unwrap();
    restart(&mut d, manifest.dump.raw_size_bytes - 1, "op-small-spool");
    d.apply("too-big", json!({"jobs": 2, "checks": checks}))
        .await;
    let (_, run) = d.finished("too-big").await;
    assert_eq!(run.result, DrillResult::Passed, "{run:#?}");
    let method = run.restore_method.clone().unwrap();
    assert!(
        method.starts_with("streamed into one pg_restore job: the dump is ")
            && method.contains("free of its"),
        "{method}"
    );

    // A manifest that understates the dump's size (the bucket is the tenant's to write) does not get
    // past the limit: it is held while writing.
    let mut lying = manifest.clone();
    lying.dump.raw_size_bytes = 10;
    d.put(&id, "manifest.json", lying.to_json()).await;
    d.apply("lying", json!({"jobs": 2, "backupId": id})).await;
    let (_, run) = d.finished("lying").await;
    assert_eq!(run.result, DrillResult::Passed, "{run:#?}");
    let method = run.restore_method.clone().unwrap();
    assert!(
        method.ends_with("the dump decompresses to more than the 10 B its manifest states"),
        "{method}"
    );
    assert!(
        spooled_files(spool.path()).is_empty(),
        "the partial spool file is removed"
    );
    d.b.finish().await;
}

/// `pg_restore` 18 (the operator's client tools) starts each session with `SET transaction_timeout`,
/// which PostgreSQL 15 does not know; a drill of a 15 server's backup onto that server still restores
/// everything (that any other error still fails it is the unit test of `scan_restore_stderr`).
#[tokio::test]
async fn a_postgres_15_backup_restores_into_postgres_15_with_newer_tools() {
    let Some(b) = Backups::new("drill-pg15").await else {
        return;
    };
    b.pg15_environment("old").await;
    b.schedule("nightly", "old", json!({"trigger": "now"}))
        .await;
    let record = b.finished("nightly", BackupPhase::Succeeded).await;
    let drills = Api::namespaced(b.fx.client.clone(), &b.fx.ns.name);
    let d = Drills { b, drills };
    let on_15 = json!({"target": {"server": {"adminSecretRef": {"name": "pg15-admin"}}},
                       "checks": {"rowCounts": true, "checksums": true}});
    d.apply("streamed", on_15.clone()).await;
    let mut parallel = on_15;
    parallel["jobs"] = json!(2);
    d.apply("parallel", parallel).await;
    for name in ["streamed", "parallel"] {
        let (_, run) = d.finished(name).await;
        assert_eq!(run.result, DrillResult::Passed, "{name}: {run:#?}");
        assert_eq!(run.backup_id, record.id);
        assert!(check(&run, "checksums").passed, "{name}: {run:#?}");
    }
    d.b.finish().await;
}

#[tokio::test]
async fn corrupted_and_truncated_backups_fail_their_drill_with_the_cause() {
    let Some((d, id)) = Drills::new("drill-bad").await else {
        return;
    };
    let dump = d.object(&id, "dump").await.unwrap().to_vec();
    // Same length, one byte flipped in the middle.
    let mut flipped = dump.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0xff;
    let manifest = d.object(&id, "manifest.json").await.unwrap().to_vec();
    for (copy, body) in [
        ("20261101T030000Z", flipped),
        ("20261102T030000Z", dump[..dump.len() / 2].to_vec()),
    ] {
        d.put(copy, "dump", body).await;
        let mut m: Value = serde_json::from_slice(&manifest).unwrap();
        m["id"] = json!(copy);
        d.put(copy, "manifest.json", serde_json::to_vec(&m).unwrap())
            .await;
    }
    d.apply("flipped", json!({"backupId": "20261101T030000Z"}))
        .await;
    d.apply("truncated", json!({"backupId": "20261102T030000Z"}))
        .await;
    for name in ["flipped", "truncated"] {
        let (drill, run) = d.finished(name).await;
        assert_eq!(run.result, DrillResult::Failed, "{run:#?}");
        let message = run.message.clone().unwrap();
        assert!(
            message.contains("does not match its manifest") && message.contains("SHA-256"),
            "{name}: {message}"
        );
        assert!(run.rto_seconds.is_none(), "no RTO without a restore");
        let (stalled, reason, _) = support::condition(drill.status.as_ref(), "Stalled").unwrap();
        assert_eq!((stalled.as_str(), reason.as_str()), ("True", "DrillFailed"));
        assert!(!d.scratch_exists(&drill).await, "{name}: scratch dropped");
    }
    // A backup that is not there is named.
    d.apply("missing", json!({"backupId": "20200101T000000Z"}))
        .await;
    let (_, run) = d.finished("missing").await;
    assert!(run.message.unwrap().contains("has no manifest.json"));
    d.b.finish().await;
}

#[tokio::test]
async fn a_failing_query_and_a_missed_objective_are_named_and_the_kept_database_goes_with_the_drill()
 {
    let Some((d, id)) = Drills::new("drill-miss").await else {
        return;
    };
    // The same backup, recorded as a month older: its RPO is a month.
    let manifest = d.object(&id, "manifest.json").await.unwrap();
    let mut m: Value = serde_json::from_slice(&manifest).unwrap();
    let old = "20261101T030000Z";
    m["id"] = json!(old);
    m["startedAt"] = json!("2026-11-01T03:00:00Z");
    m["finishedAt"] = json!("2026-11-01T03:00:09Z");
    d.put(old, "dump", d.object(&id, "dump").await.unwrap().to_vec())
        .await;
    d.put(old, "manifest.json", serde_json::to_vec(&m).unwrap())
        .await;
    d.apply(
        "strict",
        json!({
            "backupId": old,
            "keepOnFailure": true,
            "checks": {"queries": [{"name": "one-customer", "sql": "select count(*) from customers", "expected": "1"}]},
            "objectives": {"rpo": "1h"}
        }),
    )
    .await;
    let (drill, run) = d.finished("strict").await;
    assert_eq!(run.result, DrillResult::Failed);
    let q = check(&run, "one-customer");
    assert!(!q.passed);
    assert_eq!(q.message.as_deref(), Some("expected \"1\", got \"3000\""));
    assert!(check(&run, "rowCounts").passed);
    let (met, reason, message) =
        support::condition(drill.status.as_ref(), "ObjectivesMet").unwrap();
    assert_eq!(
        (met.as_str(), reason.as_str()),
        ("False", "ObjectivesMissed")
    );
    assert!(
        message.contains("RPO") && message.contains("missed the objective of 3600 s by"),
        "{message}"
    );
    let kept = run.kept_database.clone().expect("kept on failure");
    assert!(
        d.scratch_exists(&drill).await,
        "{kept} is kept for investigation"
    );
    assert!(d.b.fx.events().await.contains("ObjectivesMissed"));

    // Deleting the drill drops what it kept.
    d.drills
        .delete("strict", &DeleteParams::default())
        .await
        .unwrap();
    let drills = d.drills.clone();
    support::eventually("the drill to be gone", BACKUP_WAIT, || {
        let drills = drills.clone();
        async move {
            drills
                .get_opt("strict")
                .await
                .unwrap()
                .is_none()
                .then_some(())
        }
    })
    .await;
    assert!(
        !d.scratch_exists(&drill).await,
        "the finalizer dropped {kept}"
    );
    d.b.finish().await;
}

#[tokio::test]
async fn an_operator_restart_mid_drill_reruns_it_and_leaks_nothing() {
    let Some((mut d, id)) = Drills::new("drill-crash").await else {
        return;
    };
    let slow = support::backups::tools_with(
        "pg_restore",
        "[ \"$1\" = --version ] && exec \"$REAL\" --version\nsleep 30\nexec \"$REAL\" \"$@\"",
    );
    d.b.fx.op.take().unwrap().stop().await.unwrap();
    let mut settings = support::settings(&d.b.fx.ns.name, "op-slow");
    settings.controllers.pg_bin_dir = Some(slow.path().to_path_buf());
    d.b.fx.op = Some(support::start_operator(&d.b.fx.client, settings));
    d.apply("weekly", json!({})).await;
    let drill = support::wait_for(&d.drills, "weekly", "running", BACKUP_WAIT, |d| {
        support::condition(d.status.as_ref(), "Reconciling")
            .is_some_and(|(s, r, _)| s == "True" && r == "DrillRunning")
    })
    .await;
    support::eventually("the scratch database to exist", BACKUP_WAIT, || async {
        d.scratch_exists(&drill).await.then_some(())
    })
    .await;
    d.b.fx.op.take().unwrap().kill().await;

    d.b.fx.op = Some(support::start_operator(
        &d.b.fx.client,
        support::settings(&d.b.fx.ns.name, "op-after"),
    ));
    let (drill, run) = d.finished("weekly").await;
    assert_eq!(run.result, DrillResult::Passed, "{run:#?}");
    assert_eq!(run.backup_id, id);
    assert!(!d.scratch_exists(&drill).await);
    d.b.finish().await;
}

#[tokio::test]
async fn a_new_environment_is_created_from_a_backup_and_checked() {
    let Some((d, id)) = Drills::new("recover").await else {
        return;
    };
    let manifest = d.b.manifest("nightly", &id).await;
    // Rows written after the backup are not in the recovered database.
    let source_db = d.b.fx.database("shop").await;
    let mut admin = support::admin_conn(&d.b.fx.platform.pg, &source_db).await;
    sqlx::raw_sql("insert into customers (name) values ('after the backup')")
        .execute(&mut admin)
        .await
        .unwrap();

    // A restore needs the server source, without a template or a seed: said at apply time.
    let refused = support::apply_json(
        &d.b.fx.client,
        &d.b.fx.ns.name,
        json!({"apiVersion": "lifeboat.dev/v1alpha1", "kind": "DatabaseEnvironment", "metadata": {"name": "bad"},
               "spec": {"tier": "staging", "server": {"adminSecretRef": {"name": "pg-admin"}, "template": "t"},
                        "restore": {"backupScheduleRef": {"name": "nightly"}}}}),
    )
    .await
    .unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("spec.restore fills a new database"),
        "{refused}"
    );

    d.b.fx
        .apply_env(
            "shop-recovered",
            json!({"tier": "staging", "deletionPolicy": "Delete",
                   "server": {"adminSecretRef": {"name": "pg-admin"}},
                   "restore": {"backupScheduleRef": {"name": "nightly"}, "jobs": 2}}),
        )
        .await;
    let env = d.b.fx.ready("shop-recovered").await;
    support::eventually(
        "a Restored event saying it ran 2 parallel jobs",
        BACKUP_WAIT,
        || async {
            d.b.fx
                .events()
                .await
                .contains("then pg_restore with 2 parallel jobs")
                .then_some(())
        },
    )
    .await;
    let status = env.status.unwrap();
    assert_eq!(status.restored_from.as_deref(), Some(id.as_str()));
    let db = status.database.unwrap();
    let restored = support::backups::table_stats(&d.b.fx.platform.pg, &db).await;
    assert_eq!(restored, support::backups::manifest_stats(&manifest));
    // The data belongs to the environment's own role, which can use it with its connection Secret.
    let uri = d.b.fx.uri("shop-recovered").await;
    let mut app = <sqlx::PgConnection as sqlx::Connection>::connect(&uri)
        .await
        .unwrap();
    let owners: Vec<String> = sqlx::query_scalar(
        "select distinct tableowner::text from pg_tables where schemaname in ('public', 'billing')",
    )
    .fetch_all(&mut app)
    .await
    .unwrap();
    assert_eq!(
        owners,
        std::slice::from_ref(&db),
        "the role is named like its database"
    );
    let n: i64 = sqlx::query_scalar("select count(*) from customers")
        .fetch_one(&mut app)
        .await
        .unwrap();
    assert_eq!(n, 3000);
    assert!(d.b.fx.events().await.contains("Restored"));
    d.b.fx.delete_env("shop-recovered").await;
    d.b.finish().await;
}

/// The shell block after `marker` in docs/recovery.md.

#[tokio::test]
async fn a_lost_table_is_copied_back() {
    let Some((d, id)) = Drills::new("lost-table").await else {
        return;
    };
    let manifest = d.b.manifest("nightly", &id).await;
    let target_url = d.b.fx.uri("shop").await;
    let mut app = <sqlx::PgConnection as sqlx::Connection>::connect(&target_url)
        .await
        .unwrap();
    sqlx::raw_sql("drop table billing.invoices")
        .execute(&mut app)
        .await
        .unwrap();

    d.b.fx
        .apply_env(
            "shop-restored",
            json!({"tier": "staging", "deletionPolicy": "Delete",
                   "server": {"adminSecretRef": {"name": "pg-admin"}},
                   "restore": {"backupScheduleRef": {"name": "nightly"}, "backupId": id}}),
        )
        .await;
    d.b.fx.ready("shop-restored").await;
    let out = tokio::process::Command::new("bash")
        .arg("-c")
        .arg(support::doc_block("recovery.md", "recovery-lost-table"))
        .env("RESTORED_URL", d.b.fx.uri("shop-restored").await)
        .env("TARGET_URL", &target_url)
        .env("TABLE", "billing.invoices")
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "the recovery steps failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let db = d.b.fx.database("shop").await;
    let now = support::backups::table_stats(&d.b.fx.platform.pg, &db).await;
    let backup = support::backups::manifest_stats(&manifest);
    assert_eq!(
        now["billing.invoices"], backup["billing.invoices"],
        "rows and checksum as in the backup"
    );
    let owner: String =
        sqlx::query_scalar("select tableowner::text from pg_tables where schemaname = 'billing'")
            .fetch_one(&mut app)
            .await
            .unwrap();
    assert_eq!(owner, db, "owned by the environment's role again");
    d.b.fx.delete_env("shop-restored").await;
    d.b.finish().await;
}

#[tokio::test]
async fn deleting_the_namespace_drops_a_kept_scratch_database() {
    let Some((mut d, _)) = Drills::new("drill-ns").await else {
        return;
    };
    // The drill's own admin Secret (the environment holds `pg-admin` for itself).
    support::create_admin_secret(
        &d.b.fx.client,
        &d.b.fx.ns.name,
        "drill-admin",
        &d.b.fx.platform.pg,
        json!({}),
    )
    .await;
    d.apply(
        "kept",
        json!({"keepOnFailure": true,
               "target": {"server": {"adminSecretRef": {"name": "drill-admin"}}},
               "checks": {"queries": [{"name": "wrong", "sql": "select 1", "expected": "2"}]}}),
    )
    .await;
    let (drill, run) = d.finished("kept").await;
    assert!(run.kept_database.is_some() && d.scratch_exists(&drill).await);
    // The namespace goes, with the admin Secret in it, while no operator runs: Kubernetes deletes the
    // Secret before any cleanup could read it, unless the drill holds it.
    d.b.fx.op.take().unwrap().stop().await.unwrap();
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(d.b.fx.client.clone());
    namespaces
        .delete(&d.b.fx.ns.name, &DeleteParams::default())
        .await
        .unwrap();
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(d.b.fx.client.clone(), &d.b.fx.ns.name);
    let held = support::eventually(
        "the namespace controller to reach the Secret",
        BACKUP_WAIT,
        || async {
            match secrets.get_opt("drill-admin").await.unwrap() {
                None => Some(false),
                Some(s) if s.metadata.deletion_timestamp.is_some() => Some(true),
                Some(_) => None,
            }
        },
    )
    .await;
    assert!(
        held,
        "the admin Secret is kept (Terminating) while the drill needs it"
    );
    // An operator comes back (its Lease elsewhere: nothing can be created in a Terminating namespace).
    let mut settings = support::settings(&d.b.fx.ns.name, "op-back");
    settings.lease.namespace = "default".into();
    settings.lease.name = format!("lifeboat-{}", d.b.fx.ns.name);
    d.b.fx.op = Some(support::start_operator(&d.b.fx.client, settings));
    support::eventually(
        "the scratch database to be dropped",
        BACKUP_WAIT,
        || async { (!d.scratch_exists(&drill).await).then_some(()) },
    )
    .await;
    support::eventually("the Secret to be released", BACKUP_WAIT, || async {
        secrets
            .get_opt("pg-admin")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    d.b.finish().await;
}

/// `target.instance` as far as the API server goes (the server starting and the restore onto it are in
/// tests/node.rs, where the operator runs in a pod): the drill's own `ci` environment has the drill's
/// instance spec, label and owner, and deleting the drill mid-start removes it.
#[tokio::test]
async fn an_instance_drill_owns_its_server_and_removes_it_when_deleted() {
    let Some((d, _)) = Drills::new("drill-instance").await else {
        return;
    };
    d.apply(
        "new-server",
        json!({"target": {"instance": {"version": "18", "storage": {"size": "2Gi"}}}}),
    )
    .await;
    let drill = d.drills.get("new-server").await.unwrap();
    let name = lifeboat::controllers::restore_drill::instance::name(&drill.uid().unwrap());
    let envs: Api<lifeboat::api::DatabaseEnvironment> =
        Api::namespaced(d.b.fx.client.clone(), &d.b.fx.ns.name);
    let env = support::eventually("the drill's environment", BACKUP_WAIT, || async {
        envs.get_opt(&name).await.ok().flatten()
    })
    .await;
    let spec = serde_json::to_value(&env.spec).unwrap();
    assert_eq!(spec["tier"], "ci");
    assert_eq!(spec["deletionPolicy"], "Delete");
    assert_eq!(spec["instance"]["version"], "18");
    assert_eq!(spec["instance"]["storage"]["size"], "2Gi");
    assert_eq!(
        env.labels()
            .get("lifeboat.dev/restore-drill")
            .map(String::as_str),
        Some("new-server")
    );
    let owner = &env.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str()),
        ("RestoreDrill", drill.uid().unwrap().as_str())
    );
    let running = support::wait_for(&d.drills, "new-server", "running", BACKUP_WAIT, |d| {
        support::condition(d.status.as_ref(), "Reconciling")
            .is_some_and(|(s, r, _)| s == "True" && r == "DrillRunning")
    })
    .await;
    assert!(running.status.unwrap().last_run.is_none());

    d.drills
        .delete("new-server", &DeleteParams::default())
        .await
        .unwrap();
    support::eventually(
        "the drill and its environment to be gone",
        BACKUP_WAIT,
        || async {
            let drill = d.drills.get_opt("new-server").await.ok()?;
            let env = envs.get_opt(&name).await.ok()?;
            (drill.is_none() && env.is_none()).then_some(())
        },
    )
    .await;
    d.b.finish().await;
}
