//! Continuous WAL archiving with PostgreSQL's own tools: `pg_receivewal` streams the server's WAL over
//! a replication connection into a local spool, holding a physical replication slot so that no segment
//! is recycled while the archiver is down; `pg_basebackup -Ft -D - -X none` streams a base backup as a
//! tar. Lifeboat parses neither: it only reads segment *names* (to upload complete ones and to find
//! gaps) and asks the server for its WAL position (`pg_current_wal_lsn`, `pg_switch_wal`).

use std::{
    path::{Path, PathBuf},
    process::Stdio,
};

use sqlx::Row;
use tokio::process::{Child, Command};

use super::{
    MAINTENANCE_DATABASE, PgError,
    dump::{clean_command, connection_env},
};
use crate::engines::ServerCredentials;

/// The client programs of archiving; `None`: found on `PATH`.
#[derive(Clone, Debug, Default)]
pub struct WalTools {
    pub bin_dir: Option<PathBuf>,
}

impl WalTools {
    fn program(&self, name: &str) -> PathBuf {
        match &self.bin_dir {
            Some(dir) => dir.join(name),
            None => PathBuf::from(name),
        }
    }

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

    /// `pg_receivewal --create-slot --if-not-exists`: the slot that keeps the server's WAL until the
    /// archiver has it.
    pub async fn create_slot(
        &self,
        creds: &ServerCredentials,
        slot: &str,
        private_dir: &Path,
    ) -> Result<(), String> {
        let out = self
            .command("pg_receivewal", creds, private_dir)
            .map_err(|e| e.to_string())?
            .args(["--create-slot", "--if-not-exists", "--slot", slot])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .await
            .map_err(|e| format!("cannot run pg_receivewal: {e}"))?;
        if out.status.success() {
            return Ok(());
        }
        Err(format!(
            "pg_receivewal --create-slot {slot} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
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
