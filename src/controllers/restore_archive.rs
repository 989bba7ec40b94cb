//! Restoring an engine's own archive ([`Tenancy::restore`]: Redis) from storage: streamed through
//! decompression into the engine while its size and SHA-256 are checked against the manifest.

use crate::{
    domain::manifest::Manifest,
    engines::{RestoreReport, ServerCredentials, Tenancy},
    storage::{self, BackupStore},
};

use super::restore::{check_bytes, decoder};

/// Bytes between storage, the decompressor and the engine.
const PIPE_BUFFER: usize = 1024 * 1024;

/// Restores backup `manifest` under `prefix` as `admin`; what the engine restored, or why not.
pub async fn restore_archive(
    tenancy: &dyn Tenancy,
    store: &BackupStore,
    manifest: &Manifest,
    admin: &ServerCredentials,
    prefix: &str,
) -> Result<RestoreReport, String> {
    let path = store.path(&manifest.id, &manifest.dump.object);
    let stream = store
        .stream(&path)
        .await
        .map_err(|e| format!("reading backup {}: {e}", manifest.id))?;
    let (ours, engines) = tokio::io::duplex(PIPE_BUFFER);
    let sink = decoder(&manifest.dump.compression, ours);
    let (read, restored) = tokio::join!(
        storage::copy_hashed(stream, sink),
        tenancy.restore(admin, prefix, Box::new(engines))
    );
    let (read, piped) = read.map_err(|e| format!("reading backup {}: {e}", manifest.id))?;
    // A damaged object is reported as such, before what the engine made of it.
    check_bytes(manifest, &read)?;
    if let Err(e) = piped
        && restored.is_err()
    {
        return Err(format!("decompressing backup {}: {e}", manifest.id));
    }
    restored.map_err(|e| format!("restoring backup {}: {e}", manifest.id))
}
