//! One backup of an engine that writes its own archive ([`Tenancy::backup`]: Redis): the engine writes
//! into a pipe → compression and SHA-256 → multipart upload → read back, decompressed and tallied again
//! (`verify`) → `manifest.json`, written last. As for a dump, a failure removes what was stored
//! ([`super::pipeline::take`]).

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use async_compression::tokio::write;
use chrono::Utc;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWrite;
use tokio_util::io::InspectReader;

use super::pipeline::{Failure, Job, PIPE_BUFFER, Written, compress, fail, write_manifest};
use crate::{
    api::backup_schedule::Compression,
    domain::{digest::hex, manifest::Manifest},
    engines::{Archive, Failure as _, Tenancy},
    storage::{self, DUMP_OBJECT},
};

pub(super) async fn run(job: &Job, tenancy: &dyn Tenancy) -> Result<Manifest, Failure> {
    let started_at = Utc::now();
    let (engine_end, our_end) = tokio::io::duplex(PIPE_BUFFER);
    let raw = Arc::new(AtomicU64::new(0));
    let counter = raw.clone();
    let counted = InspectReader::new(our_end, move |b: &[u8]| {
        counter.fetch_add(b.len() as u64, Ordering::Relaxed);
    });
    let (pipe_out, pipe_in) = tokio::io::duplex(PIPE_BUFFER);
    let compressor = tokio::spawn(compress(counted, pipe_in, job.compression));
    let path = job.store.path(&job.id, DUMP_OBJECT);
    let (archive, uploaded) = tokio::join!(
        tenancy.backup(
            &job.creds,
            &job.database,
            job.checksums,
            Box::new(engine_end)
        ),
        job.store.upload(&path, pipe_out)
    );
    let compressed = compressor
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
    let archive = archive.map_err(|e| {
        fail(
            e.reason(),
            format!("backing up the keys under {}: {e}", job.database),
        )
    })?;
    let stored = uploaded.map_err(|e| fail(e.reason(), e.to_string()))?;
    compressed.map_err(|e| fail("DumpFailed", format!("compressing the archive: {e}")))?;
    if job.verify {
        verify(job, tenancy, &stored, &archive).await?;
    }
    write_manifest(
        job,
        Written {
            engine: tenancy.kind().name(),
            server_version: archive.server_version,
            tool_version: format!("lifeboat {}", env!("CARGO_PKG_VERSION")),
            format: archive.format,
            started_at,
            stored,
            raw_size: raw.load(Ordering::Relaxed),
            tables: archive.tables,
            content: archive.content,
            base: None,
        },
    )
    .await
}

/// Reads the stored archive back: its size and SHA-256 must match what was written, the engine must
/// read every record of the (decompressed) archive to the same statistics, and the decompressed bytes
/// must have the SHA-256 the engine computed while taking them (when it did).
async fn verify(
    job: &Job,
    tenancy: &dyn Tenancy,
    stored: &storage::Stored,
    archive: &Archive,
) -> Result<(), Failure> {
    let tables = &archive.tables;
    let path = job.store.path(&job.id, DUMP_OBJECT);
    let stream = job
        .store
        .stream(&path)
        .await
        .map_err(|e| fail(e.reason(), format!("verify: {e}")))?;
    let (ours, engines) = tokio::io::duplex(PIPE_BUFFER);
    let sink: Box<dyn AsyncWrite + Unpin + Send> = match job.compression {
        Compression::Zstd => Box::new(write::ZstdDecoder::new(ours)),
        Compression::Gzip => Box::new(write::GzipDecoder::new(ours)),
        Compression::None => Box::new(ours),
    };
    let content = Arc::new(std::sync::Mutex::new(Sha256::new()));
    let hashing = content.clone();
    let engines = InspectReader::new(engines, move |b: &[u8]| {
        hashing.lock().unwrap_or_else(|e| e.into_inner()).update(b)
    });
    let (read, checked) = tokio::join!(
        storage::copy_hashed(stream, sink),
        tenancy.check_archive(Box::new(engines), job.checksums)
    );
    let (read, _) =
        read.map_err(|e| fail("VerifyFailed", format!("reading the archive back: {e}")))?;
    if read != *stored {
        return Err(fail(
            "VerifyFailed",
            format!(
                "the archive read back from {} is {} bytes with SHA-256 {}, but {} bytes with SHA-256 {} were written",
                job.store.url(),
                read.size,
                read.sha256,
                stored.size,
                stored.sha256
            ),
        ));
    }
    let read_tables = checked.map_err(|e| {
        fail(
            "VerifyFailed",
            format!("the archive could not be read back: {e}"),
        )
    })?;
    let read_sha256 = hex(&content
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .finalize());
    if let Some(taken) = &archive.content
        && taken.sha256 != read_sha256
    {
        return Err(fail(
            "VerifyFailed",
            format!(
                "the archive decompressed from {} has SHA-256 {read_sha256}, but the {} taken had {}",
                job.store.url(),
                taken.version,
                taken.sha256
            ),
        ));
    }
    if read_tables != *tables {
        return Err(fail(
            "VerifyFailed",
            format!(
                "the archive read back holds {} key(s), but {} were written",
                read_tables.iter().map(|t| t.rows).sum::<i64>(),
                tables.iter().map(|t| t.rows).sum::<i64>()
            ),
        ));
    }
    Ok(())
}
