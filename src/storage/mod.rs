//! Object storage for backups: one [`BackupStore`] per destination, laid out as
//! `<prefix>/<backup id>/dump` and `<prefix>/<backup id>/manifest.json` (docs/backups.md). A backup exists
//! only once its manifest does; the dump is written first, streamed with multipart upload, so memory stays
//! bounded by a few parts whatever the database size.
//!
//! Knows no Kubernetes type: the controller reads the credentials Secret and hands over an [`S3Config`].

use std::{fmt, sync::Arc};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt, stream::BoxStream};
use object_store::{
    ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart, aws::AmazonS3Builder, path::Path,
};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Name of the dump object inside a backup's folder.
pub const DUMP_OBJECT: &str = "dump";
/// A base backup (with WAL archiving): the server's data directory as a tar, compressed as the dump is.
pub const BASE_OBJECT: &str = "base.tar";
/// Name of the manifest inside a backup's folder; written last.
pub const MANIFEST_OBJECT: &str = "manifest.json";
/// Written beside a backup by a restore drill that passed (the RestoreDrill controller); retention never
/// deletes the newest backup carrying one.
pub const DRILL_OBJECT: &str = "restore-drill.json";
/// Size of one multipart part. S3 needs at least 5 MiB for every part but the last.
pub const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts uploaded at once: memory held by an upload is about `PART_SIZE * (PARTS_IN_FLIGHT + 1)`.
pub const PARTS_IN_FLIGHT: usize = 2;
/// Bytes read from the source per step of an upload.
const READ_CHUNK: usize = 1024 * 1024;

/// How to reach an S3-compatible bucket. `Debug` never prints the secret key or token.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Config {
    pub bucket: String,
    /// `None`: AWS S3.
    pub endpoint: Option<String>,
    pub region: String,
    pub force_path_style: bool,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("force_path_style", &self.force_path_style)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// A storage failure. Messages name the bucket and object, never a credential.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("object storage: the destination is not usable: {detail}")]
    Config { detail: String },
    #[error(
        "object storage refused the credentials for bucket {bucket} (check the credentials Secret)"
    )]
    Denied {
        bucket: String,
        #[source]
        source: object_store::Error,
    },
    #[error("object storage: {what} {path} failed: {source}")]
    Request {
        what: &'static str,
        path: String,
        #[source]
        source: object_store::Error,
    },
    #[error("reading the stream to upload to {path} failed: {source}")]
    Source {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl StorageError {
    pub fn reason(&self) -> &'static str {
        match self {
            StorageError::Config { .. } => "StorageInvalid",
            StorageError::Denied { .. } => "StorageAccessDenied",
            StorageError::Request { .. } => "StorageError",
            StorageError::Source { .. } => "DumpFailed",
        }
    }
}

/// An object's bytes as read from storage.
pub type ByteStream = BoxStream<'static, Result<Bytes, std::io::Error>>;

/// What was stored by [`BackupStore::upload`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    pub size: u64,
    /// SHA-256 of the stored bytes, lowercase hex.
    pub sha256: String,
}

/// One backup folder found in the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    pub id: String,
    pub has_manifest: bool,
    /// A restore drill passed on it ([`DRILL_OBJECT`]).
    pub drill_passed: bool,
    /// When the newest object of the folder was written.
    pub last_modified: DateTime<Utc>,
}

/// The backups of one schedule: a bucket and a key prefix.
#[derive(Clone)]
pub struct BackupStore {
    store: Arc<dyn ObjectStore>,
    bucket: String,
    prefix: Path,
}

impl fmt::Debug for BackupStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BackupStore(s3://{}/{})", self.bucket, self.prefix)
    }
}

impl BackupStore {
    /// A store on an S3-compatible bucket under `prefix` (slashes at either end are ignored).
    pub fn s3(config: &S3Config, prefix: &str) -> Result<Self, StorageError> {
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            .with_access_key_id(&config.access_key_id)
            .with_secret_access_key(&config.secret_access_key)
            .with_virtual_hosted_style_request(!config.force_path_style);
        if let Some(endpoint) = &config.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"));
        }
        if let Some(token) = &config.session_token {
            builder = builder.with_token(token);
        }
        let store = builder.build().map_err(|e| StorageError::Config {
            detail: e.to_string(),
        })?;
        Ok(Self {
            store: Arc::new(store),
            bucket: config.bucket.clone(),
            prefix: Path::from(prefix.trim_matches('/')),
        })
    }

    /// `s3://bucket/prefix`, for messages and manifests.
    pub fn url(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }

    /// The object `<prefix>/<id>/<name>`.
    pub fn path(&self, id: &str, name: &str) -> Path {
        self.prefix.clone().join(id).join(name)
    }

    fn request(
        &self,
        what: &'static str,
        path: &Path,
        source: object_store::Error,
    ) -> StorageError {
        let denied = matches!(
            source,
            object_store::Error::PermissionDenied { .. }
                | object_store::Error::Unauthenticated { .. }
        ) || source.to_string().contains("403");
        if denied {
            StorageError::Denied {
                bucket: self.bucket.clone(),
                source,
            }
        } else {
            StorageError::Request {
                what,
                path: format!("s3://{}/{path}", self.bucket),
                source,
            }
        }
    }

    /// Streams `source` into `path` with multipart upload, hashing what it stores. A read error aborts the
    /// upload, so no partial object is left behind (the caller also removes the folder of a failed backup).
    pub async fn upload(
        &self,
        path: &Path,
        mut source: impl AsyncRead + Unpin,
    ) -> Result<Stored, StorageError> {
        let upload = self
            .store
            .put_multipart(path)
            .await
            .map_err(|e| self.request("starting the upload of", path, e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let mut hash = Sha256::new();
        let mut size = 0u64;
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            if let Err(e) = writer.wait_for_capacity(PARTS_IN_FLIGHT).await {
                let _ = writer.abort().await;
                return Err(self.request("uploading", path, e));
            }
            let n = match source.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    let _ = writer.abort().await;
                    return Err(StorageError::Source {
                        path: format!("s3://{}/{path}", self.bucket),
                        source: e,
                    });
                }
            };
            hash.update(&buf[..n]);
            size += n as u64;
            writer.write(&buf[..n]);
        }
        writer
            .finish()
            .await
            .map_err(|e| self.request("completing the upload of", path, e))?;
        Ok(Stored {
            size,
            sha256: hex(&hash.finalize()),
        })
    }

    /// Writes a small object in one request.
    pub async fn put(&self, path: &Path, body: Vec<u8>) -> Result<(), StorageError> {
        self.store
            .put(path, PutPayload::from(body))
            .await
            .map(|_| ())
            .map_err(|e| self.request("writing", path, e))
    }

    /// Reads a small object whole; `Ok(None)` when it does not exist.
    pub async fn get(&self, path: &Path) -> Result<Option<Bytes>, StorageError> {
        match self.store.get(path).await {
            Ok(r) => r
                .bytes()
                .await
                .map(Some)
                .map_err(|e| self.request("reading", path, e)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.request("reading", path, e)),
        }
    }

    /// Streams an object.
    pub async fn stream(
        &self,
        path: &Path,
    ) -> Result<BoxStream<'static, Result<Bytes, std::io::Error>>, StorageError> {
        let r = self
            .store
            .get(path)
            .await
            .map_err(|e| self.request("reading", path, e))?;
        Ok(r.into_stream().map_err(std::io::Error::other).boxed())
    }

    /// Proves the destination usable, as Velero checks a BackupStorageLocation: a small object
    /// `<prefix>/<name>` is written, read back (it must hold what was written) and deleted. The object
    /// sits beside the backup folders, never inside one, so no listing takes it for a backup.
    pub async fn probe(&self, name: &str) -> Result<(), StorageError> {
        let path = self.prefix.clone().join(name);
        let body = format!("lifeboat destination check {}\n", Utc::now().to_rfc3339()).into_bytes();
        self.put(&path, body.clone()).await?;
        match self.get(&path).await? {
            Some(read) if read.as_ref() == body.as_slice() => {}
            other => {
                return Err(StorageError::Config {
                    detail: format!(
                        "{path} was written but read back {} (the store does not keep what it is given)",
                        match other {
                            None => "as missing".to_string(),
                            Some(b) => format!("as {} other bytes", b.len()),
                        }
                    ),
                });
            }
        }
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.request("deleting", &path, e)),
        }
    }

    /// Every backup folder under the prefix (one listing, paginated by the store).
    pub async fn list(&self) -> Result<Vec<Listed>, StorageError> {
        let mut folders: std::collections::BTreeMap<String, Listed> = Default::default();
        let mut objects = self.store.list(Some(&self.prefix));
        while let Some(meta) = objects.next().await {
            let meta = meta.map_err(|e| self.request("listing", &self.prefix, e))?;
            let parts: Vec<_> = meta
                .location
                .prefix_match(&self.prefix)
                .into_iter()
                .flatten()
                .collect();
            let [id, name] = parts.as_slice() else {
                continue;
            };
            let entry = folders.entry(id.as_ref().to_string()).or_insert(Listed {
                id: id.as_ref().to_string(),
                has_manifest: false,
                drill_passed: false,
                last_modified: meta.last_modified,
            });
            entry.has_manifest |= name.as_ref() == MANIFEST_OBJECT;
            entry.drill_passed |= name.as_ref() == DRILL_OBJECT;
            entry.last_modified = entry.last_modified.max(meta.last_modified);
        }
        Ok(folders.into_values().collect())
    }

    /// Deletes every object of a backup's folder, the manifest first (so a half-deleted backup no longer
    /// counts as one). Deleting what is already gone succeeds.
    pub async fn delete_backup(&self, id: &str) -> Result<(), StorageError> {
        let manifest = self.path(id, MANIFEST_OBJECT);
        match self.store.delete(&manifest).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(self.request("deleting", &manifest, e)),
        }
        let folder = self.prefix.clone().join(id);
        let objects: Vec<_> = self
            .store
            .list(Some(&folder))
            .map_ok(|m| m.location)
            .try_collect()
            .await
            .map_err(|e| self.request("listing", &folder, e))?;
        for path in objects {
            match self.store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.request("deleting", &path, e)),
            }
        }
        Ok(())
    }
}

/// Writes every chunk of `stream` into `sink` (then shuts it down) while hashing and counting the chunks.
/// Reading goes on to the end even when the sink fails (a child that exited early), so the SHA-256 and
/// size always describe the whole object; the sink's error is returned beside them.
pub async fn copy_hashed(
    mut stream: BoxStream<'static, Result<Bytes, std::io::Error>>,
    mut sink: impl tokio::io::AsyncWrite + Unpin,
) -> Result<(Stored, std::io::Result<()>), std::io::Error> {
    use tokio::io::AsyncWriteExt;
    let (mut hash, mut size, mut piped) = (Sha256::new(), 0u64, Ok(()));
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        hash.update(&chunk);
        size += chunk.len() as u64;
        if piped.is_ok() {
            piped = sink.write_all(&chunk).await;
        }
    }
    if piped.is_ok() {
        piped = sink.shutdown().await;
    }
    let stored = Stored {
        size,
        sha256: hex(&hash.finalize()),
    };
    Ok((stored, piped))
}

/// Lowercase hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_secrets() {
        let config = S3Config {
            bucket: "b".into(),
            endpoint: Some("http://127.0.0.1:9000".into()),
            region: "us-east-1".into(),
            force_path_style: true,
            access_key_id: "AKIA".into(),
            secret_access_key: "very-secret".into(),
            session_token: Some("token-secret".into()),
        };
        let printed = format!("{config:?}");
        assert!(!printed.contains("very-secret") && !printed.contains("token-secret"));
        let store = BackupStore::s3(&config, "/shop/prod/").unwrap();
        assert_eq!(store.url(), "s3://b/shop/prod");
        assert_eq!(
            store.path("20261201T030000Z", DUMP_OBJECT).as_ref(),
            "shop/prod/20261201T030000Z/dump"
        );
    }
}
