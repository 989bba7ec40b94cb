//! Continuous archiving of a server's write-ahead log, as a coarse verb with callbacks: the engine
//! streams, closes segments on time and hands each complete file to a [`WalSink`] (which stores it and
//! reports progress); the controller never sequences the engine's steps. PostgreSQL implements it
//! ([`super::postgres::wal`]).

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;

use super::{ServerCredentials, Tools};

/// A complete file in the spool, ready to be archived.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spooled {
    pub name: String,
    pub path: PathBuf,
    /// A WAL segment (rather than a timeline history file).
    pub is_segment: bool,
}

/// Where archiving stands.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WalProgress {
    /// The newest segment archived.
    pub newest: Option<String>,
    /// Every transaction committed before this time is archived.
    pub newest_time: Option<DateTime<Utc>>,
    /// Seconds of written WAL not archived yet (0 when the server wrote nothing since).
    pub lag_seconds: Option<i64>,
}

/// What the archiver hands its files and progress to.
pub trait WalSink: Send + Sync {
    /// Stores `file`; the engine removes it from the spool once this returns `Ok`.
    fn archive<'a>(&'a self, file: &'a Spooled) -> BoxFuture<'a, Result<(), String>>;
    /// Where archiving stands (after uploads, and every few seconds).
    fn progress<'a>(&'a self, progress: &'a WalProgress) -> BoxFuture<'a, ()>;
}

/// An engine's WAL archiving.
pub trait WalArchiver: BaseBackup + Send + Sync {
    /// Streams the WAL of the server at `creds` into `spool` through a slot named for `owner_uid`,
    /// closing the current segment every `timeout` when the server wrote since, and hands complete
    /// files to `sink`; returns why it stopped (it never stops by itself otherwise).
    fn stream<'a>(
        &'a self,
        tools: &'a Tools,
        creds: &'a ServerCredentials,
        owner_uid: &'a str,
        spool: &'a Path,
        timeout: std::time::Duration,
        sink: &'a dyn WalSink,
    ) -> BoxFuture<'a, String>;

    /// Drops the slot of `owner_uid` (when archiving is turned off or its owner goes), so the server
    /// stops keeping WAL for it. Dropping a slot that is not there succeeds.
    fn drop_slot<'a>(
        &'a self,
        creds: &'a ServerCredentials,
        owner_uid: &'a str,
    ) -> BoxFuture<'a, Result<(), String>>;
}

/// What a base backup recorded about the WAL it needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaseTaken {
    /// The segment the server was writing when the backup started: replay starts at or after it.
    pub start_segment: String,
    /// The server's position once the backup ended: a restore must replay at least this far.
    pub end_lsn: String,
    pub end_segment: String,
    pub server_version: String,
}

/// An engine's base backups (the starting point WAL is replayed onto).
pub trait BaseBackup: Send + Sync {
    /// Writes a base backup of the whole server at `creds` into `sink` (shut down at the end), after
    /// reserving WAL for the archive of `owner_uid` (its slot), so the archive holds what replay needs.
    fn base_backup<'a>(
        &'a self,
        tools: &'a Tools,
        creds: &'a ServerCredentials,
        owner_uid: &'a str,
        label: &'a str,
        sink: super::tenancy::Sink,
    ) -> BoxFuture<'a, Result<BaseTaken, String>>;
}
