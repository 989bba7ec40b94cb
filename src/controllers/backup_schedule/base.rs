//! The base backup of a schedule with WAL archiving: the engine writes the whole server's base backup
//! (PostgreSQL: `pg_basebackup` as a tar) into a pipe → compression → multipart upload to
//! `<prefix>/<id>/base.tar` (compressed as the schedule says) → the manifest's `base` section: where
//! WAL replay starts and how far it must go. Taken after the dump, in the same backup, so retention
//! keeps or drops both together.

use chrono::Utc;

use super::pipeline::{Failure, Job, PIPE_BUFFER, compress, compression_name, fail};
use crate::{domain::manifest::BaseBackupObject, engines::wal::WalArchiver, storage::BASE_OBJECT};

pub(super) async fn take(
    job: &Job,
    engine: &dyn WalArchiver,
    owner_uid: &str,
) -> Result<BaseBackupObject, Failure> {
    let started_at = Utc::now();
    let (engine_end, our_end) = tokio::io::duplex(PIPE_BUFFER);
    let (pipe_out, pipe_in) = tokio::io::duplex(PIPE_BUFFER);
    let compressor = tokio::spawn(compress(our_end, pipe_in, job.compression));
    let path = job.store.path(&job.id, BASE_OBJECT);
    let label = format!("lifeboat {}", job.id);
    let (taken, uploaded) = tokio::join!(
        engine.base_backup(
            &job.tools,
            &job.creds,
            owner_uid,
            &label,
            Box::new(engine_end)
        ),
        job.store.upload(&path, pipe_out)
    );
    let compressed = compressor
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
    let taken = taken.map_err(|e| fail("BaseBackupFailed", format!("base backup: {e}")))?;
    let stored = uploaded.map_err(|e| fail(e.reason(), e.to_string()))?;
    compressed.map_err(|e| {
        fail(
            "BaseBackupFailed",
            format!("compressing the base backup: {e}"),
        )
    })?;
    Ok(BaseBackupObject {
        object: BASE_OBJECT.into(),
        compression: compression_name(job.compression).into(),
        size_bytes: stored.size,
        sha256: stored.sha256,
        server_version: taken.server_version,
        started_at,
        finished_at: Utc::now(),
        start_segment: taken.start_segment,
        end_segment: taken.end_segment,
        end_lsn: taken.end_lsn,
    })
}
