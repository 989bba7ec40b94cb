//! Redis backups and drills on the platform's Redis 7.0 and S3: a tenant's own keys (about a million,
//! of every type, many with a TTL) go into a key archive and come back under a drill's scratch prefix
//! with the same counts, names and TTLs; a damaged and a truncated backup each fail their drill naming
//! the cause; the scratch keys never stay behind.

mod support;

use std::time::Instant;

use kube::{Api, ResourceExt, api::DeleteParams};
use lifeboat::api::{
    RestoreDrill,
    backup_schedule::BackupPhase,
    restore_drill::{DrillResult, DrillRun},
};
use object_store::{ObjectStoreExt, PutPayload, path::Path};
use redis::aio::MultiplexedConnection;
use serde_json::{Value, json};
use support::{
    backups::{BACKUP_WAIT, Backups},
    redis::{Admin, admin_conn, admin_secret, count_prefix, redis_admin},
};

/// Keys the large test writes (`LIFEBOAT_REDIS_TEST_KEYS` to change it locally).
fn key_count() -> usize {
    std::env::var("LIFEBOAT_REDIS_TEST_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

/// Writes `n` keys under `prefix`: of every type, one in three with an hour to live. Returns the
/// count per type.
async fn fill(
    conn: &mut MultiplexedConnection,
    prefix: &str,
    n: usize,
) -> [(&'static str, i64); 6] {
    let mut counts = [
        ("string", 0),
        ("list", 0),
        ("set", 0),
        ("zset", 0),
        ("hash", 0),
        ("stream", 0),
    ];
    for start in (0..n).step_by(2000) {
        let mut pipe = redis::pipe();
        for i in start..(start + 2000).min(n) {
            let key = format!("{prefix}k:{i}");
            // Mostly strings, as caches are; every type well represented; a few streams.
            let t = match i % 20 {
                0..=11 => 0,
                12 | 13 => 1,
                14 | 15 => 2,
                16 | 17 => 3,
                18 => 4,
                _ if i % 1000 == 19 => 5,
                _ => 4,
            };
            match t {
                0 => pipe.set(&key, format!("value-{i}")).ignore(),
                1 => pipe.rpush(&key, &[i, i + 1, i + 2]).ignore(),
                2 => pipe.sadd(&key, &[i, i * 2]).ignore(),
                3 => pipe.zadd(&key, "m", i).ignore(),
                4 => pipe.hset(&key, "field", i).ignore(),
                _ => pipe.cmd("XADD").arg(&key).arg("*").arg("f").arg(i).ignore(),
            };
            if i % 3 == 0 {
                pipe.expire(&key, 3600).ignore();
            }
            counts[t].1 += 1;
        }
        let () = pipe.query_async(conn).await.unwrap();
    }
    counts
}

struct RedisDrills {
    b: Backups,
    admin: Admin,
    drills: Api<RestoreDrill>,
}

impl RedisDrills {
    /// A namespace with a Redis environment `cache` holding `keys` keys and its schedule `nightly`
    /// (`extra` merged into the schedule's spec); one backup taken.
    async fn new(
        prefix: &str,
        keys: usize,
        extra: Value,
    ) -> Option<(Self, String, [(&'static str, i64); 6])> {
        let b = Backups::new(prefix).await?;
        let admin = redis_admin()?;
        admin_secret(&b.fx.client, &b.fx.ns.name, "redis-admin", &admin).await;
        b.fx.apply_env(
            "cache",
            json!({"engine": "redis", "tier": "dev", "server": {"adminSecretRef": {"name": "redis-admin"}}}),
        )
        .await;
        b.fx.ready("cache").await;
        let key_prefix = b.fx.connection("cache").await["keyPrefix"].clone();
        let mut root = admin_conn(&admin).await;
        let started = Instant::now();
        let counts = fill(&mut root, &key_prefix, keys).await;
        println!(
            "wrote {keys} keys in {:.1}s",
            started.elapsed().as_secs_f64()
        );
        let mut schedule = json!({"trigger": "t", "tableChecks": "checksums"});
        support::backups::merge(&mut schedule, extra);
        b.schedule("nightly", "cache", schedule).await;
        let record = b.finished("nightly", BackupPhase::Succeeded).await;
        let drills = Api::namespaced(b.fx.client.clone(), &b.fx.ns.name);
        Some((Self { b, admin, drills }, record.id, counts))
    }

    async fn apply(&self, name: &str, extra: Value) {
        let mut spec = json!({
            "backupScheduleRef": {"name": "nightly"},
            "target": {"server": {"adminSecretRef": {"name": "redis-admin"}}},
            "checks": {"rowCounts": true, "checksums": true},
        });
        support::backups::merge(&mut spec, extra);
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

    async fn scratch_keys(&self, drill: &RestoreDrill) -> usize {
        let mut root = admin_conn(&self.admin).await;
        count_prefix(
            &mut root,
            &format!("lifeboat:drill:{}:", drill.uid().unwrap()),
        )
        .await
    }

    fn path(&self, id: &str, name: &str) -> Path {
        Path::from(format!("{}/{id}/{name}", self.b.prefix("nightly")))
    }

    async fn object(&self, id: &str, name: &str) -> Vec<u8> {
        let got = self.b.bucket.get(&self.path(id, name)).await.unwrap();
        got.bytes().await.unwrap().to_vec()
    }

    async fn put(&self, id: &str, name: &str, body: Vec<u8>) {
        self.b
            .bucket
            .put(&self.path(id, name), PutPayload::from(body))
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
async fn a_million_keys_back_up_and_drill_with_their_ttls() {
    let keys = key_count();
    let Some((d, id, counts)) = RedisDrills::new("redis-bk", keys, json!({})).await else {
        return;
    };
    let manifest = d.b.manifest("nightly", &id).await;
    assert_eq!(manifest.engine, "redis");
    assert_eq!(manifest.dump.format, "lifeboat-redis-keys-v1");
    assert!(
        manifest.server_version.starts_with("7."),
        "{}",
        manifest.server_version
    );
    for (t, n) in counts.iter().filter(|(_, n)| *n > 0) {
        let stat = manifest
            .tables
            .iter()
            .find(|s| s.name == *t)
            .unwrap_or_else(|| panic!("{t} in {:?}", manifest.tables));
        assert_eq!((stat.schema.as_str(), stat.rows), ("db0", *n), "{t}");
        assert!(stat.checksum.is_some());
    }
    assert_eq!(
        manifest.tables.iter().map(|t| t.rows).sum::<i64>(),
        keys as i64
    );
    println!(
        "backup of {keys} keys: {:.1}s, {} bytes stored ({} raw)",
        (manifest.finished_at - manifest.started_at).num_milliseconds() as f64 / 1000.0,
        manifest.dump.size_bytes,
        manifest.dump.raw_size_bytes
    );

    d.apply("weekly", json!({})).await;
    let (drill, run) = d.finished("weekly").await;
    assert_eq!(run.result, DrillResult::Passed, "{run:#?}");
    for name in ["rowCounts", "checksums", "ttls"] {
        assert!(check(&run, name).passed, "{name}: {run:#?}");
    }
    let ttls = check(&run, "ttls").message.clone().unwrap();
    let expiring = keys.div_ceil(3);
    assert!(
        ttls.starts_with(&format!("{expiring} key(s) kept their TTL")),
        "{ttls}"
    );
    assert!(run.rto_seconds.is_some() && run.rpo_seconds.is_some());
    println!(
        "drill of {keys} keys: restore {}s, verify {}s, RTO {}s ({})",
        run.restore_seconds.unwrap_or_default(),
        run.verify_seconds.unwrap_or_default(),
        run.rto_seconds.unwrap_or_default(),
        run.restore_method.clone().unwrap_or_default()
    );
    assert_eq!(d.scratch_keys(&drill).await, 0, "the scratch keys are gone");
    // The environment's million keys go with it (not left on the shared test server).
    d.b.fx.delete_env("cache").await;
    let mut root = admin_conn(&d.admin).await;
    let user = lifeboat::engines::naming::environment_name(&d.b.fx.ns.name, "cache", 100);
    assert_eq!(count_prefix(&mut root, &format!("{user}:")).await, 0);
    d.b.finish().await;
}

#[tokio::test]
async fn damaged_and_truncated_redis_backups_fail_their_drill_with_the_cause() {
    let Some((d, id, _)) =
        RedisDrills::new("redis-bad", 3000, json!({"compression": "none"})).await
    else {
        return;
    };
    let archive = d.object(&id, "dump").await;
    let manifest: Value = serde_json::from_slice(&d.object(&id, "manifest.json").await).unwrap();
    // One byte flipped: the stored object no longer matches its manifest.
    let mut flipped = archive.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0xff;
    // Cut in half, with a manifest that matches the cut object: the archive itself says it is short.
    let cut = archive[..archive.len() / 2].to_vec();
    for (copy, body, fix_manifest) in [
        ("20261101T030000Z", flipped, false),
        ("20261102T030000Z", cut, true),
    ] {
        let mut m = manifest.clone();
        m["id"] = json!(copy);
        if fix_manifest {
            use sha2::Digest;
            m["dump"]["sizeBytes"] = json!(body.len());
            m["dump"]["sha256"] =
                json!(lifeboat::domain::digest::hex(&sha2::Sha256::digest(&body)));
        }
        d.put(copy, "dump", body).await;
        d.put(copy, "manifest.json", serde_json::to_vec(&m).unwrap())
            .await;
    }
    d.apply("flipped", json!({"backupId": "20261101T030000Z"}))
        .await;
    d.apply("truncated", json!({"backupId": "20261102T030000Z"}))
        .await;
    for (name, cause) in [
        ("flipped", "does not match its manifest"),
        ("truncated", "the archive is truncated"),
    ] {
        let (drill, run) = d.finished(name).await;
        assert_eq!(run.result, DrillResult::Failed, "{run:#?}");
        let message = run.message.clone().unwrap();
        assert!(message.contains(cause), "{name}: {message}");
        assert!(run.rto_seconds.is_none(), "no RTO without a restore");
        assert_eq!(
            d.scratch_keys(&drill).await,
            0,
            "{name}: scratch keys removed"
        );
        d.drills
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
    }
    d.b.fx.delete_env("cache").await;
    d.b.finish().await;
}

/// A new Redis environment created from a backup (`spec.restore`) holds the backed-up keys under its
/// own prefix, with their TTLs, readable by its own user; it is restored once.
#[tokio::test]
async fn a_new_redis_environment_is_created_from_a_backup() {
    let Some((d, id, counts)) = RedisDrills::new("redis-restore", 6000, json!({})).await else {
        return;
    };
    d.b.fx
        .apply_env(
            "copy",
            json!({"engine": "redis", "tier": "dev",
                   "server": {"adminSecretRef": {"name": "redis-admin"}},
                   "restore": {"backupScheduleRef": {"name": "nightly"}}}),
        )
        .await;
    let env = d.b.fx.ready("copy").await;
    assert_eq!(
        env.status.unwrap().restored_from.as_deref(),
        Some(id.as_str())
    );
    let secret = d.b.fx.connection("copy").await;
    let prefix = secret["keyPrefix"].clone();
    let mut root = admin_conn(&d.admin).await;
    let total: i64 = counts.iter().map(|(_, n)| n).sum();
    assert_eq!(count_prefix(&mut root, &prefix).await as i64, total);
    let mut app = redis::Client::open(secret["uri"].as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    // Key 0 has an hour to live (one in three does), key 1 none.
    let ttl: i64 = redis::cmd("TTL")
        .arg(format!("{prefix}k:0"))
        .query_async(&mut app)
        .await
        .unwrap();
    assert!((3000..=3600).contains(&ttl), "about an hour left: {ttl}");
    let none: i64 = redis::cmd("TTL")
        .arg(format!("{prefix}k:1"))
        .query_async(&mut app)
        .await
        .unwrap();
    assert_eq!(none, -1);
    let value: String = redis::cmd("GET")
        .arg(format!("{prefix}k:1"))
        .query_async(&mut app)
        .await
        .unwrap();
    assert_eq!(value, "value-1");
    let events = d.b.fx.events().await;
    assert!(events.contains("Restored backup"), "{events}");
    d.b.fx.delete_env("copy").await;
    d.b.fx.delete_env("cache").await;
    assert_eq!(count_prefix(&mut root, &prefix).await, 0);
    d.b.finish().await;
}

/// Writes keys of the five decoded types into database 0 of `conn` (some large enough for Redis's
/// plain encodings and 32-bit lengths, a third of the small ones with an hour to live) and `in_db3`
/// strings into database 3. Returns the count per type in database 0.
async fn fill_whole_server(conn: &mut MultiplexedConnection, n: usize, in_db3: usize) -> [i64; 5] {
    let mut counts = [0i64; 5];
    for start in (0..n).step_by(2000) {
        let mut pipe = redis::pipe();
        for i in start..(start + 2000).min(n) {
            let key = format!("k:{i}");
            let t = i % 5;
            match t {
                0 => pipe.set(&key, format!("value-{i}")).ignore(),
                1 => pipe.rpush(&key, &[i, i + 1]).ignore(),
                2 => pipe
                    .sadd(&key, &[format!("a{i}"), format!("b{i}")])
                    .ignore(),
                3 => pipe.zadd(&key, "m", i as f64 + 0.5).ignore(),
                _ => pipe.hset(&key, "field", i).ignore(),
            };
            if i % 3 == 0 {
                pipe.expire(&key, 3600).ignore();
            }
            counts[t] += 1;
        }
        let () = pipe.query_async(conn).await.unwrap();
    }
    // Large values: a 20,000-element list (a 32-bit length), a hash and a sorted set past their
    // compact encodings, an integer set, a 100 KB string.
    let mut pipe = redis::pipe();
    pipe.rpush("big:list", (0..20_000).collect::<Vec<i64>>())
        .ignore();
    pipe.hset_multiple(
        "big:hash",
        &(0..1000).map(|i| (format!("f{i}"), i)).collect::<Vec<_>>(),
    )
    .ignore();
    pipe.zadd_multiple(
        "big:zset",
        &(0..500)
            .map(|i| (i as f64 / 3.0, format!("m{i}")))
            .collect::<Vec<_>>(),
    )
    .ignore();
    pipe.sadd("big:intset", (0..300).collect::<Vec<i64>>())
        .ignore();
    pipe.set("big:string", "x".repeat(100_000)).ignore();
    pipe.cmd("SELECT").arg(3).ignore();
    for i in 0..in_db3 {
        pipe.set(format!("other:{i}"), i).ignore();
    }
    pipe.cmd("SELECT").arg(0).ignore();
    let () = pipe.query_async(conn).await.unwrap();
    counts[0] += 1;
    counts[1] += 1;
    counts[2] += 1;
    counts[3] += 1;
    counts[4] += 1;
    counts
}

/// An adopted Redis (a server of the test's own) is backed up as an RDB snapshot over the replication
/// protocol: the manifest names the RDB version, the snapshot's SHA-256 and its keys per database and
/// type; a drill restores it under a scratch prefix on the platform's Redis, databases kept apart, with
/// the TTLs; a snapshot holding a stream backs up but its drill fails naming the streams; a truncated
/// snapshot fails its drill saying so.
#[tokio::test]
async fn a_whole_server_is_backed_up_as_an_rdb_snapshot_and_drilled() {
    let Some(b) = Backups::new("redis-rdb").await else {
        return;
    };
    let Some(admin) = redis_admin() else { return };
    admin_secret(&b.fx.client, &b.fx.ns.name, "redis-admin", &admin).await;
    let own = support::redis::PrivateRedis::start().await;
    admin_secret(&b.fx.client, &b.fx.ns.name, "origin-redis", &own.admin).await;
    let mut origin = admin_conn(&own.admin).await;
    let counts = fill_whole_server(&mut origin, 20_000, 500).await;
    b.fx.apply_env(
        "origin",
        json!({"engine": "redis", "tier": "production",
               "external": {"connectionSecretRef": {"name": "origin-redis"}}}),
    )
    .await;
    b.fx.ready("origin").await;
    b.schedule(
        "nightly",
        "origin",
        json!({"trigger": "t", "tableChecks": "checksums", "compression": "none"}),
    )
    .await;
    let id = b.finished("nightly", BackupPhase::Succeeded).await.id;
    let manifest = b.manifest("nightly", &id).await;
    assert_eq!(manifest.dump.format, "redis-rdb");
    assert_eq!(manifest.dump.content_version.as_deref(), Some("RDB 10"));
    let drills = Api::<RestoreDrill>::namespaced(b.fx.client.clone(), &b.fx.ns.name);
    let d = RedisDrills { b, admin, drills };
    let stored = d.object(&id, "dump").await;
    assert!(stored.starts_with(b"REDIS0010"), "an RDB file as stored");
    {
        use sha2::Digest;
        assert_eq!(
            manifest.dump.content_sha256.as_deref(),
            Some(lifeboat::domain::digest::hex(&sha2::Sha256::digest(&stored)).as_str())
        );
    }
    let by_table = |db: &str, t: &str| {
        manifest
            .tables
            .iter()
            .find(|s| s.schema == db && s.name == t)
            .map(|s| s.rows)
    };
    for (t, n) in ["string", "list", "set", "zset", "hash"].iter().zip(counts) {
        assert_eq!(by_table("db0", t), Some(n), "{t}: {:?}", manifest.tables);
    }
    assert_eq!(by_table("db3", "string"), Some(500));

    d.apply("weekly", json!({})).await;
    let (drill, run) = d.finished("weekly").await;
    assert_eq!(run.result, DrillResult::Passed, "{run:#?}");
    for name in ["rowCounts", "checksums", "ttls"] {
        assert!(check(&run, name).passed, "{name}: {run:#?}");
    }
    println!(
        "snapshot drill: restore {}s, verify {}s, ttls: {}",
        run.restore_seconds.unwrap_or_default(),
        run.verify_seconds.unwrap_or_default(),
        check(&run, "ttls").message.clone().unwrap_or_default()
    );
    let scratch = format!("lifeboat:drill:{}:", drill.uid().unwrap());
    assert_eq!(d.scratch_keys(&drill).await, 0, "scratch keys gone (db 0)");
    let mut root = admin_conn(&d.admin).await;
    let () = redis::cmd("SELECT")
        .arg(3)
        .query_async(&mut root)
        .await
        .unwrap();
    assert_eq!(count_prefix(&mut root, &scratch).await, 0, "and in db 3");
    let () = redis::cmd("SELECT")
        .arg(0)
        .query_async(&mut root)
        .await
        .unwrap();

    // A stream: counted in the snapshot, not restorable from it.
    let _: String = redis::cmd("XADD")
        .arg("events")
        .arg("*")
        .arg("f")
        .arg(1)
        .query_async(&mut origin)
        .await
        .unwrap();
    d.b.trigger("nightly", "t2").await;
    let second = support::wait_for(
        &d.b.schedules,
        "nightly",
        "a second finished backup",
        BACKUP_WAIT,
        |s| {
            s.status
                .as_ref()
                .and_then(|s| s.recent_backups.first())
                .is_some_and(|r| r.id != id && r.phase != BackupPhase::Running)
        },
    )
    .await
    .status
    .unwrap()
    .recent_backups[0]
        .clone();
    assert_eq!(second.phase, BackupPhase::Succeeded, "{second:#?}");
    let with_stream = second.id;
    let manifest = d.b.manifest("nightly", &with_stream).await;
    assert!(
        manifest
            .tables
            .iter()
            .any(|s| s.schema == "db0" && s.name == "stream" && s.rows == 1),
        "{:?}",
        manifest.tables
    );
    d.apply("streams", json!({"backupId": with_stream})).await;
    let (drill, run) = d.finished("streams").await;
    assert_eq!(run.result, DrillResult::Failed, "{run:#?}");
    let message = run.message.clone().unwrap();
    assert!(message.contains("1 stream key(s)"), "{message}");
    assert_eq!(d.scratch_keys(&drill).await, 0, "scratch keys removed");

    // Cut in half, with a manifest that matches the cut object.
    let cut = stored[..stored.len() / 2].to_vec();
    let mut m: Value = serde_json::from_slice(&d.object(&id, "manifest.json").await).unwrap();
    let copy = "20261103T030000Z";
    m["id"] = json!(copy);
    {
        use sha2::Digest;
        m["dump"]["sizeBytes"] = json!(cut.len());
        m["dump"]["sha256"] = json!(lifeboat::domain::digest::hex(&sha2::Sha256::digest(&cut)));
    }
    d.put(copy, "dump", cut).await;
    d.put(copy, "manifest.json", serde_json::to_vec(&m).unwrap())
        .await;
    d.apply("truncated", json!({"backupId": copy})).await;
    let (drill, run) = d.finished("truncated").await;
    assert_eq!(run.result, DrillResult::Failed, "{run:#?}");
    let message = run.message.clone().unwrap();
    assert!(message.contains("the snapshot is truncated"), "{message}");
    assert_eq!(d.scratch_keys(&drill).await, 0, "scratch keys removed");
    d.b.fx.delete_env("origin").await;
    let kept: i64 = redis::cmd("DBSIZE").query_async(&mut origin).await.unwrap();
    assert!(kept > 20_000, "an adopted server keeps its keys: {kept}");
    d.b.finish().await;
}
