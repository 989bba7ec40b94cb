//! Redis: environments as ACL users limited to a key prefix on a shared server, reached through the
//! coarse [`super::Tenancy`] verbs. What a Redis connection Secret holds, how Lifeboat connects
//! (plain or TLS), and what a failure means.

mod acl;
pub mod archive;
mod connection;
mod info;
mod instance;
mod keys;
pub mod snapshot;
mod tenancy;

pub use connection::connection_data;
pub use info::parse_info;

use std::time::Duration;

use redis::{
    Client, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo, TlsCertificates,
    aio::MultiplexedConnection,
};

use super::{Capability, Failure, ServerCredentials};

/// What the Redis engine can do in this release.
pub const CAPABILITIES: &[Capability] = &[
    Capability::SharedServer,
    Capability::Instance,
    Capability::External,
    Capability::RestoreFromBackup,
    Capability::Backup,
    Capability::RestoreDrill,
];
/// The port a Secret that names none means.
pub const DEFAULT_PORT: u16 = 6379;
/// A connection attempt (and any one command) gives up after this long.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// The oldest Redis with ACL users (`ACL SETUSER`).
pub const MIN_MAJOR: u32 = 6;

/// Redis, through the `redis` crate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Redis;

/// What went wrong talking to Redis. Messages come from the server or the network and never carry a
/// password (we never format credentials or URIs into them).
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("cannot reach Redis at {endpoint}: {detail}")]
    Unreachable { endpoint: String, detail: String },
    #[error("Redis at {endpoint} rejected the credentials of user {user}: {detail}")]
    AuthFailed {
        endpoint: String,
        user: String,
        detail: String,
    },
    #[error(
        "Redis {version} at {endpoint} has no ACL users (Redis {MIN_MAJOR} or later is needed to give each environment its own user)"
    )]
    NoAcl { endpoint: String, version: String },
    #[error(
        "the admin user {user} of Redis at {endpoint} may not manage ACL users ({detail}); give it +@admin (or at least +acl) and ~* &*"
    )]
    NotAdmin {
        endpoint: String,
        user: String,
        detail: String,
    },
    #[error(
        "{what} already exists on the server and was not created by this environment; choose another name or remove it"
    )]
    NotOurs { what: String },
    #[error("the connection to Redis was lost during {context}: {detail}")]
    Lost { context: String, detail: String },
    #[error("{context}: {detail}")]
    Command { context: String, detail: String },
    #[error("{0}")]
    Archive(archive::ArchiveError),
    #[error("{0}")]
    Snapshot(snapshot::SnapshotError),
}

impl RedisError {
    fn command(context: impl Into<String>, e: redis::RedisError) -> Self {
        let context = context.into();
        if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() {
            return RedisError::Lost {
                context,
                detail: e.to_string(),
            };
        }
        RedisError::Command {
            context,
            detail: e.to_string(),
        }
    }
}

impl Failure for RedisError {
    fn reason(&self) -> &'static str {
        match self {
            RedisError::Unreachable { .. } | RedisError::Lost { .. } => "ServerUnreachable",
            RedisError::AuthFailed { .. } => "AuthenticationFailed",
            RedisError::NoAcl { .. } => "ServerUnsupported",
            RedisError::NotAdmin { .. } => "InsufficientPrivileges",
            RedisError::NotOurs { .. } => "DatabaseConflict",
            RedisError::Command { .. } => "RedisError",
            RedisError::Archive(archive::ArchiveError::Truncated(_)) => "BackupTruncated",
            RedisError::Archive(_) => "BackupDamaged",
            RedisError::Snapshot(snapshot::SnapshotError::Truncated(_)) => "BackupTruncated",
            RedisError::Snapshot(
                snapshot::SnapshotError::Streams { .. } | snapshot::SnapshotError::Module { .. },
            ) => "EngineUnsupported",
            RedisError::Snapshot(_) => "BackupDamaged",
        }
    }
    fn is_transient(&self) -> bool {
        matches!(
            self,
            RedisError::Unreachable { .. } | RedisError::Lost { .. }
        )
    }
    fn is_auth_failure(&self) -> bool {
        matches!(self, RedisError::AuthFailed { .. })
    }
}

/// `host:port`, for messages.
fn endpoint(creds: &ServerCredentials) -> String {
    format!("{}:{}", creds.host, creds.port)
}

/// A connection as `creds`: plain with sslmode `disable`; TLS otherwise, checking the server's
/// certificate against `ca.crt` (or the system's roots) unless the mode is `require`.
pub async fn connect(creds: &ServerCredentials) -> Result<MultiplexedConnection, RedisError> {
    let at = endpoint(creds);
    let unreachable = |detail: String| RedisError::Unreachable {
        endpoint: at.clone(),
        detail,
    };
    let addr = match creds.sslmode.as_str() {
        "disable" => ConnectionAddr::Tcp(creds.host.clone(), creds.port),
        mode => ConnectionAddr::TcpTls {
            host: creds.host.clone(),
            port: creds.port,
            insecure: mode == "require",
            tls_params: None,
        },
    };
    let info = addr
        .into_connection_info()
        .map_err(|e| unreachable(e.to_string()))?
        .set_redis_settings(
            RedisConnectionInfo::default()
                .set_username(&creds.username)
                .set_password(&creds.password)
                .set_skip_set_lib_name(),
        );
    let client = match (&creds.ca_pem, creds.sslmode.as_str()) {
        (Some(ca), "verify-ca" | "verify-full") => Client::build_with_tls(
            info,
            TlsCertificates {
                client_tls: None,
                root_cert: Some(ca.clone()),
            },
        ),
        _ => Client::open(info),
    }
    .map_err(|e| unreachable(e.to_string()))?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(TIMEOUT))
        .set_response_timeout(Some(TIMEOUT));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| {
            let auth = e.kind() == redis::ErrorKind::AuthenticationFailed
                || matches!(e.code(), Some("WRONGPASS" | "NOAUTH" | "NOPERM"));
            if auth {
                RedisError::AuthFailed {
                    endpoint: at.clone(),
                    user: creds.username.clone(),
                    detail: e.to_string(),
                }
            } else {
                unreachable(e.to_string())
            }
        })
}

impl super::ConnectionDetails for Redis {
    fn default_port(&self) -> u16 {
        DEFAULT_PORT
    }
    fn ssl_modes(&self) -> &'static [&'static str] {
        connection::SSL_MODES
    }
    fn default_ssl_mode(&self, with_ca: bool) -> &'static str {
        connection::default_sslmode(with_ca)
    }
    fn scope_key(&self) -> &'static str {
        "keyPrefix"
    }
    /// `database` is the key prefix.
    fn connection_data(
        &self,
        creds: &ServerCredentials,
        database: &str,
    ) -> std::collections::BTreeMap<String, String> {
        connection::connection_data(creds, database)
    }
}
