//! `manifest.json`: what a backup is, written last beside its dump. A person restoring by hand during an
//! outage reads it (docs/backups.md), and a restore is compared with its table counts and checksums.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Version of the manifest layout; readers refuse a newer one.
pub const MANIFEST_FORMAT: u32 = 1;

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub format: u32,
    pub id: String,
    /// `scheduled`, `manual` (a trigger) or `premigrate` (before a MigrationRun).
    pub kind: String,
    pub environment: EnvironmentRef,
    /// `postgres`.
    pub engine: String,
    /// `SHOW server_version` of the server dumped.
    pub server_version: String,
    /// `pg_dump --version` of the tool that wrote the dump.
    pub dump_tool_version: String,
    /// The database dumped.
    pub database: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub dump: DumpObject,
    /// `checksums` (row counts and content checksums) or `rowCounts`.
    pub table_checks: String,
    /// Per table, taken in the same snapshot as the dump.
    pub tables: Vec<TableStats>,
    /// The server's base backup, taken after the dump when the schedule archives WAL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<BaseBackupObject>,
}

/// A base backup: the whole server's data directory, onto which archived WAL is replayed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BaseBackupObject {
    /// Object key relative to the backup's folder (`base.tar`).
    pub object: String,
    /// `zstd`, `gzip` or `none`, as for the dump.
    pub compression: String,
    pub size_bytes: u64,
    /// SHA-256 of the stored bytes.
    pub sha256: String,
    pub server_version: String,
    pub started_at: DateTime<Utc>,
    /// A restore to a time before this is refused: the backup is consistent only once replayed past
    /// its end.
    pub finished_at: DateTime<Utc>,
    /// The segment the server was writing when the backup started: replay needs it and every later one.
    pub start_segment: String,
    pub end_segment: String,
    pub end_lsn: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct EnvironmentRef {
    pub namespace: String,
    pub name: String,
}

/// The stored dump.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DumpObject {
    /// Object key relative to the backup's folder (`dump`).
    pub object: String,
    /// `pg_dump` archive format: `custom` (`-Fc`, for `pg_restore`).
    pub format: String,
    /// `zstd`, `gzip` or `none`: how the stored bytes were compressed on top of the archive.
    pub compression: String,
    /// Bytes stored.
    pub size_bytes: u64,
    /// Bytes `pg_dump` wrote (before `compression`).
    pub raw_size_bytes: u64,
    /// SHA-256 of the stored bytes, lowercase hex.
    pub sha256: String,
    /// The archive's own format version, when the engine reads it (`RDB 10` for a Redis snapshot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_version: Option<String>,
    /// SHA-256 of the archive before compression, computed as it was taken (a Redis snapshot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_sha256: Option<String>,
}

/// Row count and content checksum of one table at the snapshot.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TableStats {
    pub schema: String,
    pub name: String,
    pub rows: i64,
    /// Order-independent checksum of the rows' text form (absent with `rowCounts`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
}

impl Manifest {
    /// Reads a manifest, refusing one this build does not understand.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let manifest: Manifest = serde_json::from_slice(bytes)
            .map_err(|e| format!("manifest.json is not valid: {e}"))?;
        if manifest.format > MANIFEST_FORMAT {
            return Err(format!(
                "manifest.json has format {}, newer than this build of Lifeboat reads ({MANIFEST_FORMAT})",
                manifest.format
            ));
        }
        Ok(manifest)
    }

    pub fn to_json(&self) -> Vec<u8> {
        // A struct of strings and numbers always serializes.
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> Manifest {
        Manifest {
            format: MANIFEST_FORMAT,
            id: "20261201T030000Z".into(),
            kind: "scheduled".into(),
            environment: EnvironmentRef {
                namespace: "shop".into(),
                name: "shop-production".into(),
            },
            engine: "postgres".into(),
            server_version: "18.4".into(),
            dump_tool_version: "pg_dump (PostgreSQL) 18.6".into(),
            database: "shop".into(),
            started_at: "2026-12-01T03:00:00Z".parse().unwrap(),
            finished_at: "2026-12-01T03:00:09Z".parse().unwrap(),
            dump: DumpObject {
                object: "dump".into(),
                format: "custom".into(),
                compression: "zstd".into(),
                size_bytes: 10,
                raw_size_bytes: 20,
                sha256: "ab".repeat(32),
                content_version: None,
                content_sha256: None,
            },
            table_checks: "checksums".into(),
            base: None,
            tables: vec![TableStats {
                schema: "public".into(),
                name: "orders".into(),
                rows: 3,
                checksum: Some("123".into()),
            }],
        }
    }

    #[test]
    fn round_trips_and_uses_camel_case() {
        let m = example();
        let json = m.to_json();
        let text = String::from_utf8(json.clone()).unwrap();
        assert!(text.contains("\"finishedAt\"") && text.contains("\"rawSizeBytes\""));
        assert_eq!(Manifest::parse(&json).unwrap(), m);
    }

    #[test]
    fn newer_or_broken_manifests_are_refused() {
        let mut m = example();
        m.format = MANIFEST_FORMAT + 1;
        assert!(Manifest::parse(&m.to_json()).unwrap_err().contains("newer"));
        assert!(Manifest::parse(b"{").unwrap_err().contains("not valid"));
    }
}
