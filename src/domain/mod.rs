//! Logic that knows neither Kubernetes nor a database engine: when a backup is due and what it is
//! called (`schedule`), which backups to keep (`retention`), and what a backup's manifest says
//! (`manifest`), and migration versions (`version`). Everything here is pure and unit-tested.

pub mod manifest;
pub mod retention;
pub mod schedule;
pub mod version;

/// SHA-256 of `bytes`, in lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
