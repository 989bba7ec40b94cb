//! The WAL archiver of a BackupSchedule with `spec.wal.enabled`: a task of the operator per schedule
//! that runs the engine's archiving ([`WalArchiver::stream`]: PostgreSQL's `pg_receivewal` through a
//! physical replication slot) and stores what it hands over: each complete segment (and timeline
//! history file) as `<prefix>/wal/<name>.zst`, its SHA-256 beside it as `<name>.sha256` (`sha256sum`'s
//! format, of the uncompressed file), the checksum first. It writes `status.wal` as it goes (a merge
//! patch of that field alone, which never races the schedule's other writes), starts the engine again
//! with backoff when it stops, and is started again by the reconcile after an operator restart (the
//! slot keeps every segment on the server meanwhile). Turning archiving off, or deleting the schedule,
//! stops the task and drops the slot. docs/pitr.md says what it guarantees and what it does not.

use std::{path::PathBuf, sync::Mutex, time::Duration};

use async_compression::tokio::write::ZstdEncoder;
use futures::{FutureExt, future::BoxFuture};
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tracing::{info, warn};

use super::Backups;
use crate::{
    api::{BackupSchedule, DatabaseEnvironment, backup_schedule::WalStatus},
    domain::digest::hex,
    engines::{
        ServerCredentials, Tools,
        wal::{Spooled, WalProgress, WalSink},
    },
    storage::BackupStore,
};

/// The folder of archived WAL under the schedule's prefix.
pub const WAL_FOLDER: &str = "wal";
/// The longest wait before the engine's archiving is started again.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// What a running archiver was started with: a change restarts it; the credentials drop the slot.
#[derive(Clone, Default)]
pub struct Running {
    fingerprint: String,
    creds: Option<ServerCredentials>,
}

/// Everything one archiver needs.
pub struct Archiver {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub creds: ServerCredentials,
    pub store: BackupStore,
    pub tools: Tools,
    pub spool: PathBuf,
    pub timeout: Duration,
}

/// Why an environment's WAL is not archived by this release, if it is not.
pub fn refusal(env: &DatabaseEnvironment) -> Option<String> {
    if crate::engines::wal_archiver(crate::controllers::engine::kind(env.spec.engine)).is_none() {
        return Some(format!(
            "WAL archiving is PostgreSQL's; DatabaseEnvironment {} is not PostgreSQL",
            env.name_any()
        ));
    }
    if env.spec.server.is_some() {
        return Some(format!(
            "DatabaseEnvironment {} is a tenant of a shared server, whose WAL holds every tenant's data: archiving it into this schedule's destination would copy the other tenants' data out; archiving a shared server belongs to its DatabaseServer (not built yet)",
            env.name_any()
        ));
    }
    if env.spec.instance.is_some() {
        return Some(format!(
            "DatabaseEnvironment {} is an instance, whose server does not accept replication connections in this release; use an external server with a REPLICATION role",
            env.name_any()
        ));
    }
    None
}

/// The condition saying whether WAL is being archived (present while `spec.wal.enabled`).
pub const CONDITION: &str = "WALArchiving";
/// Archiving that lags more than this is reported as behind (the chart's alert fires at the same).
pub const BEHIND_SECONDS: i64 = 300;

/// Seconds of written WAL not archived: the status's figure while archiving runs, the time since the
/// newest archived WAL while it is stopped; `None` before anything is archived.
pub fn lag(status: Option<&WalStatus>, now: chrono::DateTime<chrono::Utc>) -> Option<i64> {
    let status = status?;
    if status.stopped.is_some() {
        let newest = status.newest_wal_time.as_ref()?;
        return Some((now.timestamp() - newest.0.as_second()).max(0));
    }
    status.lag_seconds
}

/// `WALArchiving` from the spec and `status.wal`; `None` when archiving is off.
pub fn condition(
    spec: Option<&crate::api::backup_schedule::WalArchiving>,
    status: Option<&WalStatus>,
) -> Option<(bool, &'static str, String)> {
    if !spec.is_some_and(|w| w.enabled) {
        return None;
    }
    let Some(status) = status else {
        return Some((false, "Starting", "WAL archiving is starting.".into()));
    };
    if let Some(why) = &status.stopped {
        return Some((false, "WALArchivingStopped", why.clone()));
    }
    let newest = status.newest_segment.as_deref().unwrap_or("none yet");
    match status.lag_seconds {
        Some(lag) if lag > BEHIND_SECONDS => Some((
            false,
            "WALArchiveBehind",
            format!(
                "WAL written {lag} s ago is not archived yet (newest archived segment {newest})."
            ),
        )),
        lag => Some((
            true,
            "Archiving",
            format!(
                "Newest archived segment {newest}; lag {} s.",
                lag.unwrap_or_default()
            ),
        )),
    }
}

/// Starts, restarts (the settings changed) or stops the archiver of `schedule`; a refusal is written
/// to `status.wal.stopped`.
pub async fn reconcile(
    backups: &Backups,
    schedule: &BackupSchedule,
    resolved: &super::Resolved,
) -> Result<(), crate::controllers::Error> {
    let uid = schedule.uid().unwrap_or_default();
    let Some(spec) = schedule.spec.wal.as_ref().filter(|w| w.enabled) else {
        if backups.archivers.peek(&uid, |_| ()).is_some() {
            stop(backups, &uid).await;
        }
        // Archiving was on (status says so), maybe before an operator restart: its slot goes too,
        // then status.wal.
        if schedule.status.as_ref().is_some_and(|s| s.wal.is_some()) {
            if refusal(&resolved.environment).is_none() {
                let job = super::job(&backups.ctx, schedule, resolved, "wal".into(), "wal").await?;
                if let Some(engine) = crate::engines::wal_archiver(job.engine)
                    && let Err(e) = engine.drop_slot(&job.creds, &uid).await
                {
                    warn!(uid, error = %e, "could not drop the replication slot of WAL archiving that was turned off");
                    return Ok(());
                }
            }
            patch_wal(
                &backups.ctx.client,
                &schedule.namespace().unwrap_or_default(),
                &schedule.name_any(),
                serde_json::Value::Null,
            )
            .await;
        }
        return Ok(());
    };
    if let Some(why) = refusal(&resolved.environment) {
        stop(backups, &uid).await;
        let stopped = schedule
            .status
            .as_ref()
            .and_then(|s| s.wal.as_ref())
            .and_then(|w| w.stopped.clone());
        let why = crate::controllers::status::sentence(&why);
        if stopped.as_deref() != Some(why.as_str()) {
            patch_wal(
                &backups.ctx.client,
                &schedule.namespace().unwrap_or_default(),
                &schedule.name_any(),
                serde_json::json!({"stopped": why}),
            )
            .await;
        }
        return Ok(());
    }
    let job = super::job(&backups.ctx, schedule, resolved, "wal".into(), "wal").await?;
    start(
        backups,
        Archiver {
            namespace: schedule.namespace().unwrap_or_default(),
            name: schedule.name_any(),
            uid: uid.clone(),
            creds: job.creds,
            store: resolved.store.clone(),
            tools: job.tools,
            spool: std::env::temp_dir().join("lifeboat-wal").join(&uid),
            timeout: spec.timeout(),
        },
    );
    Ok(())
}

/// Writes `status.wal` of the schedule `namespace/name` by merge patch (that field alone, so it never
/// races the schedule's other status writes); `null` removes it.
async fn patch_wal(client: &kube::Client, namespace: &str, name: &str, wal: serde_json::Value) {
    let api: Api<BackupSchedule> = Api::namespaced(client.clone(), namespace);
    let patch = serde_json::json!({"status": {"wal": wal}});
    if let Err(e) = api
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        warn!(schedule = %name, error = %e, "could not write status.wal");
    }
}

/// Starts the archiver, or restarts it when its settings changed.
fn start(backups: &Backups, a: Archiver) {
    let uid = a.uid.clone();
    let fingerprint = hex(&Sha256::digest(
        format!(
            "{}|{}|{}|{}|{}|{:?}|{}",
            a.creds.host,
            a.creds.port,
            a.creds.username,
            hex(&Sha256::digest(a.creds.password.as_bytes())),
            a.creds.sslmode,
            a.timeout,
            a.store.url()
        )
        .as_bytes(),
    ));
    let same = backups
        .archivers
        .peek(&uid, |r: &Running| r.fingerprint == fingerprint)
        .unwrap_or(false);
    if same && backups.archivers.is_running(&uid) {
        return;
    }
    backups.archivers.forget(&uid);
    backups.archivers.with(&uid, |r| {
        *r = Running {
            fingerprint,
            creds: Some(a.creds.clone()),
        }
    });
    let client = backups.ctx.client.clone();
    backups.archivers.spawn(&uid, move |_| run(client, a));
}

/// Stops the archiver of `uid` and drops its slot (best effort: a slot left behind is named in a
/// warning, and keeps WAL on the server until dropped).
pub async fn stop(backups: &Backups, uid: &str) {
    let creds = backups.archivers.peek(uid, |r| r.creds.clone()).flatten();
    backups.archivers.forget(uid);
    if let (Some(creds), Some(engine)) = (
        creds,
        crate::engines::wal_archiver(crate::engines::Kind::Postgres),
    ) {
        match engine.drop_slot(&creds, uid).await {
            Ok(()) => info!(
                uid,
                "WAL archiving stopped; its replication slot is dropped"
            ),
            Err(e) => {
                warn!(uid, error = %e, "WAL archiving stopped, but its replication slot could not be dropped: the server keeps WAL for it until it is")
            }
        }
    }
}

async fn run(client: kube::Client, a: Archiver) {
    let Some(engine) = crate::engines::wal_archiver(crate::engines::Kind::Postgres) else {
        return;
    };
    let sink = Sink {
        client,
        namespace: a.namespace.clone(),
        name: a.name.clone(),
        store: a.store.clone(),
        last: Mutex::default(),
    };
    let mut backoff = Duration::from_secs(1);
    loop {
        let started = tokio::time::Instant::now();
        info!(schedule = %a.name, namespace = %a.namespace, "WAL archiving starting");
        let why = engine
            .stream(&a.tools, &a.creds, &a.uid, &a.spool, a.timeout, &sink)
            .await;
        warn!(schedule = %a.name, namespace = %a.namespace, error = %why, "WAL archiving stopped; starting again");
        sink.report(Some(&why)).await;
        if started.elapsed() > MAX_BACKOFF {
            backoff = Duration::from_secs(1);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

struct Sink {
    client: kube::Client,
    namespace: String,
    name: String,
    store: BackupStore,
    last: Mutex<WalProgress>,
}

impl Sink {
    async fn report(&self, stopped: Option<&str>) {
        let p = self.last.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let status = WalStatus {
            newest_segment: p.newest,
            newest_wal_time: p.newest_time.map(super::plan::to_time),
            lag_seconds: p.lag_seconds,
            recoverable_from: None,
            updated_at: Some(super::plan::to_time(chrono::Utc::now())),
            stopped: stopped.map(crate::controllers::status::sentence),
        };
        // `stopped: null` clears an old reason once archiving runs again.
        let mut wal = serde_json::to_value(&status).unwrap_or_default();
        wal["stopped"] = serde_json::to_value(&status.stopped).unwrap_or_default();
        patch_wal(&self.client, &self.namespace, &self.name, wal).await;
    }
}

impl WalSink for Sink {
    fn archive<'a>(&'a self, file: &'a Spooled) -> BoxFuture<'a, Result<(), String>> {
        upload(&self.store, file).boxed()
    }

    fn progress<'a>(&'a self, progress: &'a WalProgress) -> BoxFuture<'a, ()> {
        async move {
            let mut last = progress.clone();
            {
                let mut kept = self.last.lock().unwrap_or_else(|e| e.into_inner());
                // A restarted engine starts with nothing known: keep what was archived before.
                last.newest = last.newest.or(kept.newest.clone());
                last.newest_time = last.newest_time.or(kept.newest_time);
                *kept = last;
            }
            self.report(None).await;
        }
        .boxed()
    }
}

/// The object of `name` (with `suffix`) in the archive.
pub fn object(store: &BackupStore, name: &str) -> object_store::path::Path {
    store.path(WAL_FOLDER, name)
}

/// One file of the spool into the archive: its checksum, then the file compressed.
async fn upload(store: &BackupStore, file: &Spooled) -> Result<(), String> {
    let bytes = tokio::fs::read(&file.path)
        .await
        .map_err(|e| format!("reading {}: {e}", file.path.display()))?;
    let sum = hex(&Sha256::digest(&bytes));
    let mut encoder = ZstdEncoder::new(Vec::with_capacity(bytes.len() / 4));
    encoder
        .write_all(&bytes)
        .await
        .map_err(|e| format!("compressing {}: {e}", file.name))?;
    encoder
        .shutdown()
        .await
        .map_err(|e| format!("compressing {}: {e}", file.name))?;
    store
        .put(
            &object(store, &format!("{}.sha256", file.name)),
            format!("{sum}  {}\n", file.name).into_bytes(),
        )
        .await
        .map_err(|e| format!("storing the checksum of {}: {e}", file.name))?;
    store
        .put(
            &object(store, &format!("{}.zst", file.name)),
            encoder.into_inner(),
        )
        .await
        .map_err(|e| format!("storing {}: {e}", file.name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::backup_schedule::WalArchiving;

    fn status(lag: Option<i64>, stopped: Option<&str>, newest_secs_ago: Option<i64>) -> WalStatus {
        WalStatus {
            newest_segment: Some("000000010000000000000007".into()),
            newest_wal_time: newest_secs_ago.map(|s| {
                super::super::plan::to_time(chrono::Utc::now() - chrono::Duration::seconds(s))
            }),
            lag_seconds: lag,
            stopped: stopped.map(String::from),
            ..Default::default()
        }
    }

    #[test]
    fn the_condition_follows_the_spec_and_the_status() {
        let on = WalArchiving {
            enabled: true,
            archive_timeout: None,
        };
        assert_eq!(condition(None, None), None);
        assert_eq!(condition(Some(&WalArchiving::default()), None), None);
        assert_eq!(condition(Some(&on), None).unwrap().1, "Starting");
        let ok = condition(Some(&on), Some(&status(Some(3), None, Some(3)))).unwrap();
        assert_eq!((ok.0, ok.1), (true, "Archiving"));
        assert!(ok.2.contains("000000010000000000000007"), "{}", ok.2);
        let behind = condition(Some(&on), Some(&status(Some(301), None, Some(301)))).unwrap();
        assert_eq!((behind.0, behind.1), (false, "WALArchiveBehind"));
        let stopped = condition(Some(&on), Some(&status(Some(0), Some("No slot."), None))).unwrap();
        assert_eq!(
            (stopped.0, stopped.1, stopped.2.as_str()),
            (false, "WALArchivingStopped", "No slot.")
        );
    }

    #[test]
    fn the_lag_grows_while_archiving_is_stopped() {
        let now = chrono::Utc::now();
        assert_eq!(lag(None, now), None);
        assert_eq!(lag(Some(&status(Some(7), None, Some(7))), now), Some(7));
        let stopped = lag(Some(&status(Some(0), Some("x"), Some(120))), now).unwrap();
        assert!((119..=121).contains(&stopped), "{stopped}");
    }
}
