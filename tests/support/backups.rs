//! A test namespace with an operator, S3 credentials Secrets and a seeded environment helper: what the
//! BackupSchedule and RestoreDrill suites start from.

use std::{collections::BTreeMap, time::Duration};

use futures::TryStreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
};
use lifeboat::{
    api::{
        BackupSchedule,
        backup_schedule::{BackupPhase, BackupRecord},
    },
    domain::manifest::Manifest,
    engines::postgres::dump::{STABLE_TEXT_SETTINGS, table_stat},
};
use object_store::{ObjectStore, ObjectStoreExt, path::Path};
use serde_json::{Value, json};
use sqlx::Connection;

use super::Fixture;

/// How long a backup (or drill) of the test's small databases may take to show up. They take seconds
/// alone; the margin is for CI, where a dozen test binaries' operators and the node share two cores
/// (a drill once missed 90 s there).
pub const BACKUP_WAIT: Duration = Duration::from_secs(180);

/// Tables of different shapes, so content checksums meet types whose text form depends on settings.
pub const SEED: &str = "
create table customers (id serial primary key, name text not null, joined timestamptz not null default now(),
                        score double precision, avatar bytea, prefs jsonb, span interval);
insert into customers (name, joined, score, avatar, prefs, span)
  select 'c' || g, timestamptz '2020-01-01 00:00:00+00' + g * interval '1 hour', g / 7.0,
         decode(md5(g::text), 'hex'), jsonb_build_object('g', g), g * interval '1 minute'
  from generate_series(1, 3000) g;
create schema billing;
create table billing.invoices (id bigint primary key, customer int references customers(id), amount numeric(12,2));
insert into billing.invoices select g, 1 + g % 3000, g * 1.25 from generate_series(1, 2000) g;
create table empty_one (x int);
";

pub struct Backups {
    pub fx: Fixture,
    pub schedules: Api<BackupSchedule>,
    pub bucket: object_store::aws::AmazonS3,
}

impl Backups {
    pub async fn new(prefix: &str) -> Option<Self> {
        let platform = super::platform()?;
        let fx = Fixture::new(platform, prefix).await;
        let s3 = &fx.platform.s3;
        let bucket = s3.store(&s3.secret_key);
        let secret = |name: &str, secret_key: &str| -> Secret {
            serde_json::from_value(json!({"metadata": {"name": name}, "stringData": {
                "accessKeyId": s3.access_key, "secretAccessKey": secret_key}}))
            .unwrap()
        };
        let secrets: Api<Secret> = Api::namespaced(fx.client.clone(), &fx.ns.name);
        for s in [
            secret("s3", &s3.secret_key),
            secret("s3-wrong", "not-the-key"),
        ] {
            secrets.create(&PostParams::default(), &s).await.unwrap();
        }
        let schedules = Api::namespaced(fx.client.clone(), &fx.ns.name);
        Some(Self {
            fx,
            schedules,
            bucket,
        })
    }

    /// A seeded `ci` environment on PostgreSQL 18 (or on the server of `admin_secret`).
    pub async fn environment(&self, name: &str, extra: Value) {
        self.fx
            .config_map(&format!("{name}-seed"), json!({"seed.sql": SEED}))
            .await;
        let mut spec = json!({
            "tier": "ci",
            "server": {"adminSecretRef": {"name": "pg-admin"}},
            "seed": {"configMapRef": {"name": format!("{name}-seed")}, "key": "seed.sql"}
        });
        merge(&mut spec, extra);
        self.fx.apply_env(name, spec).await;
        self.fx.ready(name).await;
    }

    /// A seeded `ci` environment on PostgreSQL 15, through an admin Secret `pg15-admin` (also usable as a
    /// drill's target).
    pub async fn pg15_environment(&self, name: &str) {
        super::create_admin_secret(
            &self.fx.client,
            &self.fx.ns.name,
            "pg15-admin",
            &self.fx.platform.pg15,
            json!({}),
        )
        .await;
        self.environment(
            name,
            json!({"server": {"adminSecretRef": {"name": "pg15-admin"}}}),
        )
        .await;
    }

    pub fn prefix(&self, schedule: &str) -> String {
        format!("{}/{schedule}", self.fx.ns.name)
    }

    /// Applies a BackupSchedule of `env` that never fires by itself unless `extra` says otherwise.
    pub async fn schedule(&self, name: &str, env: &str, extra: Value) {
        let mut spec = json!({
            "environmentRef": {"name": env},
            "schedule": "0 0 1 1 *",
            "destination": {"s3": {
                "bucket": self.fx.platform.s3.bucket,
                "endpoint": self.fx.platform.s3.endpoint,
                "region": self.fx.platform.s3.region,
                "forcePathStyle": true,
                "credentialsSecretRef": {"name": "s3"}
            }}
        });
        merge(&mut spec, extra);
        super::apply_json(
            &self.fx.client,
            &self.fx.ns.name,
            json!({"apiVersion": "lifeboat.dev/v1alpha1", "kind": "BackupSchedule",
                   "metadata": {"name": name}, "spec": spec}),
        )
        .await
        .expect("apply BackupSchedule");
    }

    pub async fn trigger(&self, name: &str, value: &str) {
        self.schedules
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"trigger": value}})),
            )
            .await
            .unwrap();
    }

    /// Waits until the newest recorded backup has finished with `phase`; returns that record.
    pub async fn finished(&self, name: &str, phase: BackupPhase) -> BackupRecord {
        let s = super::wait_for(
            &self.schedules,
            name,
            &format!("a finished backup ({phase:?})"),
            BACKUP_WAIT,
            |s| {
                s.status
                    .as_ref()
                    .and_then(|s| s.recent_backups.first())
                    .is_some_and(|r| r.phase != BackupPhase::Running)
            },
        )
        .await;
        let record = s.status.unwrap().recent_backups[0].clone();
        assert_eq!(record.phase, phase, "{record:#?}");
        record
    }

    /// Object names under the schedule's prefix.
    pub async fn objects(&self, schedule: &str) -> Vec<String> {
        let prefix = Path::from(self.prefix(schedule));
        let mut names: Vec<String> = self
            .bucket
            .list(Some(&prefix))
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await
            .unwrap();
        names.sort();
        names
    }

    pub async fn manifest(&self, schedule: &str, id: &str) -> Manifest {
        let path = Path::from(format!("{}/{id}/manifest.json", self.prefix(schedule)));
        let bytes = self.bucket.get(&path).await.unwrap().bytes().await.unwrap();
        Manifest::parse(&bytes).unwrap()
    }

    /// Stops the operator, deletes the namespace and what the test stored in the bucket.
    pub async fn finish(self) {
        let prefix = Path::from(self.fx.ns.name.clone());
        let objects: Vec<Path> = self
            .bucket
            .list(Some(&prefix))
            .map_ok(|m| m.location)
            .try_collect()
            .await
            .unwrap();
        for path in objects {
            self.bucket.delete(&path).await.unwrap();
        }
        self.fx.finish().await;
    }

    pub async fn condition(&self, name: &str, type_: &str) -> (String, String, String) {
        let s = self.schedules.get(name).await.unwrap();
        super::capture::observe(&s);
        super::condition(s.status.as_ref(), type_).unwrap_or_default()
    }
}

pub fn merge(base: &mut Value, extra: Value) {
    if let (Some(b), Value::Object(e)) = (base.as_object_mut(), extra) {
        b.extend(e);
    }
}

/// Row counts and checksums of every user table of `database`, computed as a backup does.
pub async fn table_stats(pg: &super::Postgres, database: &str) -> BTreeMap<String, (i64, String)> {
    let mut conn = super::admin_conn(pg, database).await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "begin isolation level repeatable read; {STABLE_TEXT_SETTINGS}"
    )))
    .execute(&mut conn)
    .await
    .unwrap();
    let tables: Vec<(String, String)> =
        sqlx::query_as(lifeboat::engines::postgres::dump::USER_TABLES)
            .fetch_all(&mut conn)
            .await
            .unwrap();
    let mut out = BTreeMap::new();
    for (schema, name) in tables {
        let (rows, sum) = table_stat(&mut conn, &schema, &name, true).await.unwrap();
        out.insert(format!("{schema}.{name}"), (rows, sum.unwrap()));
    }
    conn.close().await.unwrap();
    out
}

pub fn manifest_stats(m: &Manifest) -> BTreeMap<String, (i64, String)> {
    m.tables
        .iter()
        .map(|t| {
            (
                format!("{}.{}", t.schema, t.name),
                (t.rows, t.checksum.clone().unwrap_or_default()),
            )
        })
        .collect()
}

/// A directory of client tools where `program` (`pg_dump` or `pg_restore`) is a script (`$REAL` is the
/// real one) and the other is the real tool.
pub fn tools_with(program: &str, script_body: &str) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let which = |p: &str| {
        let out = std::process::Command::new("sh")
            .args(["-c", &format!("command -v {p}")])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join(program);
    std::fs::write(
        &script,
        format!("#!/bin/sh\nREAL={}\n{script_body}\n", which(program)),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let other = if program == "pg_dump" {
        "pg_restore"
    } else {
        "pg_dump"
    };
    std::os::unix::fs::symlink(which(other), dir.path().join(other)).unwrap();
    dir
}
