//! Continuous WAL archiving with PostgreSQL's own tools: `pg_receivewal` streams the server's WAL over
//! a replication connection into a local spool, holding a physical replication slot so that no segment
//! is recycled while the archiver is down; `pg_basebackup -Ft -D - -X none` streams a base backup as a
//! tar. Lifeboat parses neither: it only reads segment *names* (to upload complete ones and to find
//! gaps) and asks the server for its WAL position (`pg_current_wal_lsn`, `pg_switch_wal`).

use std::{path::Path, process::Stdio};

use sqlx::Row;
use tokio::process::{Child, Command};

use super::{
    MAINTENANCE_DATABASE, PgError,
    dump::{DumpTools, clean_command, connection_env},
};
use crate::engines::{
    ServerCredentials, Tools,
    wal::{BaseBackup, BaseTaken, Spooled, WalArchiver, WalProgress, WalSink},
};
use futures::future::BoxFuture;

/// Archiving's client programs (`pg_receivewal`, `pg_basebackup`), found as the dump's are.
impl DumpTools {
    fn command(
        &self,
        name: &str,
        creds: &ServerCredentials,
        private_dir: &Path,
    ) -> std::io::Result<Command> {
        let mut cmd = clean_command(&self.program(name));
        // Physical replication connections look up the passfile under the database `replication`.
        connection_env(&mut cmd, creds, "replication", private_dir, "lifeboat-wal")?;
        cmd.arg("--no-password")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        Ok(cmd)
    }

    /// `pg_receivewal` streaming into `spool` through `slot` until it is killed or the connection
    /// ends; complete segments appear under their own names, the one being written as `.partial`.
    pub fn spawn_receivewal(
        &self,
        creds: &ServerCredentials,
        slot: &str,
        spool: &Path,
        private_dir: &Path,
    ) -> std::io::Result<Child> {
        let mut cmd = self.command("pg_receivewal", creds, private_dir)?;
        cmd.arg("--directory")
            .arg(spool)
            .args(["--slot", slot, "--no-loop", "--verbose"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
    }

    /// `pg_basebackup` writing a tar of the data directory (one tablespace) to stdout, without WAL
    /// (the archive has it), after an immediate checkpoint.
    pub fn spawn_basebackup(
        &self,
        creds: &ServerCredentials,
        label: &str,
        private_dir: &Path,
    ) -> std::io::Result<Child> {
        let mut cmd = self.command("pg_basebackup", creds, private_dir)?;
        cmd.args([
            "--pgdata=-",
            "--format=tar",
            "--wal-method=none",
            "--checkpoint=fast",
            "--label",
            label,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    }
}

/// Creates the physical replication slot `slot` unless it exists, reserving WAL from now on (so
/// nothing written after this returns is recycled before the archiver has it, even if it has not
/// started streaming yet).
pub async fn create_slot(creds: &ServerCredentials, slot: &str) -> Result<(), String> {
    let mut conn = super::connect_admin(creds, MAINTENANCE_DATABASE)
        .await
        .map_err(|e| e.to_string())?;
    sqlx::query(
        "select pg_create_physical_replication_slot($1, true) where not exists (select 1 from pg_replication_slots where slot_name = $1)",
    )
    .bind(slot)
    .execute(&mut conn)
    .await
    .map(|_| ())
    .map_err(|e| format!("creating the replication slot {slot}: {e}"))
}

/// The server's WAL position and the segment it is in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Position {
    pub lsn: String,
    pub segment: String,
}

/// Where the server writes WAL now.
pub async fn position(admin: &ServerCredentials) -> Result<Position, PgError> {
    let mut conn = super::connect_admin(admin, MAINTENANCE_DATABASE).await?;
    let row =
        sqlx::query("select pg_current_wal_lsn()::text, pg_walfile_name(pg_current_wal_lsn())")
            .fetch_one(&mut conn)
            .await
            .map_err(|e| PgError::from_sqlx("reading the WAL position", e))?;
    Ok(Position {
        lsn: row.get(0),
        segment: row.get(1),
    })
}

/// Closes the current segment when WAL was written since `since` (what `archive_timeout` does on a
/// server Lifeboat cannot configure); the position after.
pub async fn switch_if_moved(
    admin: &ServerCredentials,
    since: Option<&str>,
) -> Result<Position, PgError> {
    let now = position(admin).await?;
    if since == Some(now.lsn.as_str()) {
        return Ok(now);
    }
    let mut conn = super::connect_admin(admin, MAINTENANCE_DATABASE).await?;
    sqlx::query("select pg_switch_wal()")
        .execute(&mut conn)
        .await
        .map_err(|e| PgError::from_sqlx("pg_switch_wal()", e))?;
    position(admin).await
}

/// The replication slot of an archive's owner (unique per UID; PostgreSQL allows `[a-z0-9_]`, 63 bytes).
pub fn slot_name(owner_uid: &str) -> String {
    let tail: String = owner_uid
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(50)
        .collect();
    format!("lifeboat_{tail}")
}

/// How often the spool is looked at.
const TICK: std::time::Duration = std::time::Duration::from_secs(2);
/// How often progress is reported when nothing was archived.
const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(15);

/// What the streaming loop knows.
#[derive(Default)]
struct Tracker {
    progress: WalProgress,
    /// A switch that closed `segment` at a time; the archive covers that time once it is stored.
    pending: Option<(String, chrono::DateTime<chrono::Utc>)>,
    /// The server's position right after the last switch.
    switched_at_lsn: Option<String>,
    written_since: bool,
}

impl Tracker {
    fn archived(&mut self, segment: &str) {
        self.progress.newest = Some(segment.to_string());
        if let Some((closed, at)) = &self.pending
            && segment >= closed.as_str()
        {
            self.progress.newest_time = Some(*at);
            self.pending = None;
        }
    }

    fn lag(&mut self) {
        let now = chrono::Utc::now();
        self.progress.lag_seconds = self.progress.newest_time.map(|t| {
            if self.written_since {
                (now - t).num_seconds().max(0)
            } else {
                0
            }
        });
    }
}

/// One run of the archiver: what it streams from and where to.
struct Run<'a> {
    tools: &'a DumpTools,
    creds: &'a ServerCredentials,
    slot: String,
    spool: &'a Path,
    timeout: std::time::Duration,
    sink: &'a dyn WalSink,
}

impl Run<'_> {
    /// One run of `pg_receivewal` with the loop around it; why it ended.
    async fn stream_once(&self, tracker: &mut Tracker) -> String {
        let (tools, creds, slot, spool, timeout, sink) = (
            &self.tools,
            self.creds,
            self.slot.as_str(),
            self.spool,
            self.timeout,
            self.sink,
        );
        if let Err(e) = tokio::fs::create_dir_all(spool).await {
            return format!("cannot create the spool {}: {e}", spool.display());
        }
        let private = match tempfile::Builder::new().prefix("lifeboat-wal-").tempdir() {
            Ok(d) => d,
            Err(e) => return format!("cannot create a private directory: {e}"),
        };
        if let Err(e) = create_slot(creds, slot).await {
            return e;
        }
        let mut child = match tools.spawn_receivewal(creds, slot, spool, private.path()) {
            Ok(c) => c,
            Err(e) => return format!("cannot run pg_receivewal: {e}"),
        };
        let stderr = child
            .stderr
            .take()
            .map(|s| tokio::spawn(super::dump::stderr_tail(s)));
        let mut tick = tokio::time::interval(TICK);
        let mut last_switch = tokio::time::Instant::now();
        let mut last_report = tokio::time::Instant::now() - PROGRESS_EVERY;
        loop {
            tokio::select! {
                status = child.wait() => {
                    let _ = archive_ready(spool, sink, tracker).await;
                    let tail = match stderr {
                        Some(t) => t.await.unwrap_or_default(),
                        None => String::new(),
                    };
                    let status = status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                    return format!("pg_receivewal ended ({status}): {}", tail.trim());
                }
                _ = tick.tick() => {
                    let archived = match archive_ready(spool, sink, tracker).await {
                        Ok(n) => n,
                        Err(e) => return e,
                    };
                    if last_switch.elapsed() >= timeout {
                        last_switch = tokio::time::Instant::now();
                        if let Err(e) = switch(creds, tracker).await {
                            return e;
                        }
                    }
                    if archived > 0 || last_report.elapsed() >= PROGRESS_EVERY {
                        last_report = tokio::time::Instant::now();
                        tracker.lag();
                        sink.progress(&tracker.progress).await;
                    }
                }
            }
        }
    }
}

/// Closes the current segment when the server wrote since the last switch.
async fn switch(creds: &ServerCredentials, tracker: &mut Tracker) -> Result<(), String> {
    let before = position(creds)
        .await
        .map_err(|e| format!("reading the WAL position: {e}"))?;
    tracker.written_since = tracker.switched_at_lsn.as_deref() != Some(before.lsn.as_str());
    if !tracker.written_since {
        return Ok(());
    }
    let at = chrono::Utc::now();
    let after = switch_if_moved(creds, None)
        .await
        .map_err(|e| format!("closing the WAL segment: {e}"))?;
    tracker.switched_at_lsn = Some(after.lsn);
    tracker.pending = Some((before.segment, at));
    Ok(())
}

/// Hands every complete segment and history file of the spool to `sink`, history files first, then
/// segments in order, removing each once stored; how many.
async fn archive_ready(
    spool: &Path,
    sink: &dyn WalSink,
    tracker: &mut Tracker,
) -> Result<usize, String> {
    let mut names = Vec::new();
    let mut dir = tokio::fs::read_dir(spool)
        .await
        .map_err(|e| format!("reading the spool {}: {e}", spool.display()))?;
    while let Ok(Some(entry)) = dir.next_entry().await {
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_segment(&name) || is_history(&name) {
            names.push(name);
        }
    }
    names.sort_by_key(|n| (is_segment(n), n.clone()));
    for name in &names {
        let file = Spooled {
            name: name.clone(),
            path: spool.join(name),
            is_segment: is_segment(name),
        };
        sink.archive(&file).await?;
        tokio::fs::remove_file(&file.path)
            .await
            .map_err(|e| format!("removing {name} from the spool: {e}"))?;
        if file.is_segment {
            tracker.archived(name);
        }
    }
    Ok(names.len())
}

impl WalArchiver for super::Postgres {
    fn stream<'a>(
        &'a self,
        tools: &'a Tools,
        creds: &'a ServerCredentials,
        owner_uid: &'a str,
        spool: &'a Path,
        timeout: std::time::Duration,
        sink: &'a dyn WalSink,
    ) -> BoxFuture<'a, String> {
        Box::pin(async move {
            let run = Run {
                tools,
                creds,
                slot: slot_name(owner_uid),
                spool,
                timeout,
                sink,
            };
            run.stream_once(&mut Tracker::default()).await
        })
    }

    fn drop_slot<'a>(
        &'a self,
        creds: &'a ServerCredentials,
        owner_uid: &'a str,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let slot = slot_name(owner_uid);
            let mut conn = super::connect_admin(creds, MAINTENANCE_DATABASE)
                .await
                .map_err(|e| e.to_string())?;
            sqlx::query(
                "select pg_drop_replication_slot(slot_name) from pg_replication_slots where slot_name = $1 and not active",
            )
            .bind(&slot)
            .execute(&mut conn)
            .await
            .map(|_| ())
            .map_err(|e| format!("dropping the replication slot {slot}: {e}"))
        })
    }
}

impl BaseBackup for super::Postgres {
    fn base_backup<'a>(
        &'a self,
        tools: &'a Tools,
        creds: &'a ServerCredentials,
        owner_uid: &'a str,
        label: &'a str,
        mut sink: crate::engines::tenancy::Sink,
    ) -> BoxFuture<'a, Result<BaseTaken, String>> {
        Box::pin(async move {
            use tokio::io::AsyncWriteExt;
            let mut conn = super::connect_admin(creds, MAINTENANCE_DATABASE)
                .await
                .map_err(|e| e.to_string())?;
            let server_version: String = sqlx::query_scalar("show server_version")
                .fetch_one(&mut conn)
                .await
                .map_err(|e| format!("reading the server version: {e}"))?;
            drop(conn);
            // WAL from here on stays on the server until the archiver has it.
            create_slot(creds, &slot_name(owner_uid)).await?;
            let start = position(creds).await.map_err(|e| e.to_string())?;
            let private = tempfile::Builder::new()
                .prefix("lifeboat-base-")
                .tempdir()
                .map_err(|e| format!("cannot create a private directory: {e}"))?;
            let mut child = tools
                .spawn_basebackup(creds, label, private.path())
                .map_err(|e| format!("cannot run pg_basebackup: {e}"))?;
            let Some(mut stdout) = child.stdout.take() else {
                return Err("pg_basebackup was started without a stdout pipe".into());
            };
            let stderr = child
                .stderr
                .take()
                .map(|s| tokio::spawn(super::dump::stderr_tail(s)));
            let copied = tokio::io::copy(&mut stdout, &mut sink).await;
            let shut = sink.shutdown().await;
            let status = child.wait().await.map_err(|e| e.to_string())?;
            let tail = match stderr {
                Some(t) => t.await.unwrap_or_default(),
                None => String::new(),
            };
            if !status.success() {
                return Err(format!("pg_basebackup failed ({status}): {}", tail.trim()));
            }
            copied.map_err(|e| format!("writing the base backup: {e}"))?;
            shut.map_err(|e| format!("writing the base backup: {e}"))?;
            let end = position(creds).await.map_err(|e| e.to_string())?;
            Ok(BaseTaken {
                start_segment: start.segment,
                end_lsn: end.lsn,
                end_segment: end.segment,
                server_version,
            })
        })
    }
}

/// A complete WAL segment's name: 24 upper-case hex digits (timeline, log, segment).
pub fn is_segment(name: &str) -> bool {
    name.len() == 24 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'A'..=b'F'))
}

/// A timeline history file's name (`00000002.history`).
pub fn is_history(name: &str) -> bool {
    name.len() == 16
        && name.ends_with(".history")
        && name[..8]
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'A'..=b'F'))
}

/// The segment after `name` on the same timeline, for segments of `segment_bytes` (16 MiB by
/// default): the low part counts up to `4 GiB / segment_bytes`, then the log number goes up.
pub fn next_segment(name: &str, segment_bytes: u64) -> Option<String> {
    if !is_segment(name) {
        return None;
    }
    let timeline = &name[..8];
    let log = u32::from_str_radix(&name[8..16], 16).ok()?;
    let seg = u32::from_str_radix(&name[16..], 16).ok()?;
    let per_log = (0x1_0000_0000u64 / segment_bytes.max(1)) as u32;
    let (log, seg) = if seg + 1 >= per_log {
        (log.checked_add(1)?, 0)
    } else {
        (log, seg + 1)
    };
    Some(format!("{timeline}{log:08X}{seg:08X}"))
}

/// The first segment missing between `from` and `to` (inclusive) in the sorted `have`, if any.
pub fn first_gap(have: &[String], from: &str, to: &str, segment_bytes: u64) -> Option<String> {
    let mut want = from.to_string();
    let set: std::collections::BTreeSet<&str> = have.iter().map(String::as_str).collect();
    while want.as_str() <= to {
        if !set.contains(want.as_str()) {
            return Some(want);
        }
        want = next_segment(&want, segment_bytes)?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB16: u64 = 16 * 1024 * 1024;

    #[test]
    fn slot_names_are_what_postgresql_allows() {
        let s = slot_name("0C6B1B7E-3F1A-4E8B-9D2C-1A2B3C4D5E6F");
        assert_eq!(s, "lifeboat_0c6b1b7e_3f1a_4e8b_9d2c_1a2b3c4d5e6f");
        assert!(s.len() <= 63);
    }

    #[test]
    fn segment_names() {
        assert!(is_segment("000000010000000000000005"));
        assert!(!is_segment("000000010000000000000006.partial"));
        assert!(!is_segment("00000001000000000000000g"));
        assert!(is_history("00000002.history"));
        assert!(!is_history("00000002.historyx"));
    }

    #[test]
    fn segments_count_up_and_roll_over_to_the_next_log() {
        assert_eq!(
            next_segment("000000010000000000000005", MIB16).as_deref(),
            Some("000000010000000000000006")
        );
        assert_eq!(
            next_segment("0000000100000000000000FF", MIB16).as_deref(),
            Some("000000010000000100000000")
        );
        // 1 GiB segments: four per log.
        assert_eq!(
            next_segment("000000010000000000000003", 1 << 30).as_deref(),
            Some("000000010000000100000000")
        );
    }

    #[test]
    fn a_gap_is_named() {
        let have: Vec<String> = ["000000010000000000000004", "000000010000000000000006"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            first_gap(
                &have,
                "000000010000000000000004",
                "000000010000000000000006",
                MIB16
            )
            .as_deref(),
            Some("000000010000000000000005")
        );
        assert_eq!(
            first_gap(
                &have,
                "000000010000000000000006",
                "000000010000000000000006",
                MIB16
            ),
            None
        );
    }
}
