//! PostgreSQL: naming, quoting, connecting with admin credentials, and the idempotent steps a
//! DatabaseEnvironment on a shared server goes through.

pub mod connection;
pub mod dump;
mod engine;
pub mod instance;
pub mod migrate;
pub mod provision;
pub mod restore;
pub mod sql;
pub mod wal;

pub use engine::{MAINTENANCE_DATABASE, Postgres};

use std::time::Duration;

use sqlx::{
    ConnectOptions, Connection, PgConnection,
    postgres::{PgConnectOptions, PgSslMode},
};

use super::ServerCredentials;

/// What the PostgreSQL engine can do: everything controllers ask for.
pub const CAPABILITIES: &[super::Capability] = &[
    super::Capability::SharedServer,
    super::Capability::Instance,
    super::Capability::External,
    super::Capability::Seed,
    super::Capability::Template,
    super::Capability::RestoreFromBackup,
    super::Capability::Migrations,
    super::Capability::Backup,
    super::Capability::RestoreDrill,
    super::Capability::HealthQuery,
];

/// A connection attempt gives up after this long (an unreachable server must not hang a reconcile).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Lifeboat identifies itself to the server under this name (visible in `pg_stat_activity`).
pub const APPLICATION_NAME: &str = "lifeboat";

/// What went wrong talking to PostgreSQL. Messages come from the server or the network and never carry
/// the password (sqlx does not echo it; we never format connection strings into errors).
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("cannot reach PostgreSQL at {endpoint}: {detail}")]
    Unreachable { endpoint: String, detail: String },
    #[error("PostgreSQL at {endpoint} rejected the credentials of user {user}: {detail}")]
    AuthFailed {
        endpoint: String,
        user: String,
        detail: String,
    },
    #[error("TLS to PostgreSQL at {endpoint} failed: {detail}")]
    Tls { endpoint: String, detail: String },
    #[error(
        "template database {template} is in use by other sessions; disconnect them (or stop the app using it) and Lifeboat retries"
    )]
    TemplateInUse { template: String },
    #[error("template database {template} does not exist on the server")]
    TemplateMissing { template: String },
    #[error(
        "database {template} may not be used as a template: only databases marked as templates (ALTER DATABASE {template} IS_TEMPLATE true, done by the server's administrator) or listed in the DatabaseServer's spec.templates can be cloned"
    )]
    TemplateNotAllowed { template: String },
    #[error(
        "{what} already exists on the server and was not created by this environment; choose another name or remove it"
    )]
    NotOurs { what: String },
    #[error("{context}: {message} (SQLSTATE {code})")]
    Sql {
        context: String,
        code: String,
        message: String,
        position: Option<usize>,
    },
    #[error("{context}: {detail}")]
    Other { context: String, detail: String },
}

impl PgError {
    pub fn reason(&self) -> &'static str {
        match self {
            PgError::Unreachable { .. } => "ServerUnreachable",
            PgError::AuthFailed { .. } => "AuthenticationFailed",
            PgError::Tls { .. } => "TlsFailed",
            PgError::TemplateInUse { .. } => "TemplateInUse",
            PgError::TemplateMissing { .. } => "TemplateNotFound",
            PgError::TemplateNotAllowed { .. } => "TemplateNotAllowed",
            PgError::NotOurs { .. } => "DatabaseConflict",
            PgError::Sql { .. } => "SqlError",
            PgError::Other { .. } => "DatabaseError",
        }
    }

    /// Errors that time alone may fix (network, a busy template) rather than a person.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            PgError::Unreachable { .. } | PgError::TemplateInUse { .. } | PgError::Other { .. }
        )
    }

    /// Classifies a sqlx error from a statement run in `context`.
    pub fn from_sqlx(context: impl Into<String>, e: sqlx::Error) -> Self {
        let context = context.into();
        match e {
            sqlx::Error::Database(db) => PgError::Sql {
                code: db.code().map(|c| c.to_string()).unwrap_or_default(),
                message: db.message().to_string(),
                position: db
                    .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                    .and_then(|p| match p.position() {
                        Some(sqlx::postgres::PgErrorPosition::Original(n)) => Some(n),
                        _ => None,
                    }),
                context,
            },
            other => PgError::Other {
                context,
                detail: other.to_string(),
            },
        }
    }

    /// The SQLSTATE, when the server sent one.
    pub fn code(&self) -> Option<&str> {
        match self {
            PgError::Sql { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// Connection options for `database` with the given credentials.
pub fn connect_options(
    creds: &ServerCredentials,
    database: &str,
) -> Result<PgConnectOptions, PgError> {
    let mode: PgSslMode = creds.sslmode.parse().map_err(|_| PgError::Other {
        context: "reading sslmode".into(),
        detail: format!(
            "unknown sslmode {:?}; use one of {}",
            creds.sslmode,
            connection::SSL_MODES.join(", ")
        ),
    })?;
    let mut opts = PgConnectOptions::new()
        .host(&creds.host)
        .port(creds.port)
        .username(&creds.username)
        .password(&creds.password)
        .database(database)
        .ssl_mode(mode)
        .application_name(APPLICATION_NAME)
        .statement_cache_capacity(0)
        .disable_statement_logging();
    if let Some(ca) = &creds.ca_pem {
        opts = opts.ssl_root_cert_from_pem(ca.clone());
    }
    Ok(opts)
}

/// The `search_path` of every admin session: only the system catalog, then the session's own temporary
/// schema. A tenant controls the contents of its database (and, on PostgreSQL 14 and older, may create
/// objects in `public` of any database it can reach): with its schemas out of the path, no function or
/// operator it plants can stand in for a built-in one that an admin statement calls (CVE-2018-1058).
pub const ADMIN_SEARCH_PATH: &str = "pg_catalog, pg_temp";

/// Connects to `database`, classifying failures (unreachable, bad credentials, TLS).
pub async fn connect(creds: &ServerCredentials, database: &str) -> Result<PgConnection, PgError> {
    connect_with(creds, connect_options(creds, database)?).await
}

/// Connects with admin credentials: like [`connect`], with `search_path` pinned to
/// [`ADMIN_SEARCH_PATH`] from the first statement on (a startup option, so nothing runs before it).
pub async fn connect_admin(
    creds: &ServerCredentials,
    database: &str,
) -> Result<PgConnection, PgError> {
    let opts = connect_options(creds, database)?.options([("search_path", ADMIN_SEARCH_PATH)]);
    connect_with(creds, opts).await
}

async fn connect_with(
    creds: &ServerCredentials,
    opts: PgConnectOptions,
) -> Result<PgConnection, PgError> {
    let endpoint = format!("{}:{}", creds.host, creds.port);
    match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&opts)).await {
        Err(_) => Err(PgError::Unreachable {
            endpoint,
            detail: format!("no answer within {CONNECT_TIMEOUT:?}"),
        }),
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(classify_connect_error(endpoint, &creds.username, e)),
    }
}

fn classify_connect_error(endpoint: String, user: &str, e: sqlx::Error) -> PgError {
    match e {
        sqlx::Error::Io(io) => PgError::Unreachable {
            endpoint,
            detail: io.to_string(),
        },
        sqlx::Error::Tls(t) => PgError::Tls {
            endpoint,
            detail: t.to_string(),
        },
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.to_string()).unwrap_or_default();
            // 28P01 invalid_password, 28000 invalid_authorization_specification
            if code.starts_with("28") {
                PgError::AuthFailed {
                    endpoint,
                    user: user.to_string(),
                    detail: db.message().to_string(),
                }
            } else {
                PgError::Sql {
                    context: format!("connecting to {endpoint}"),
                    code,
                    message: db.message().to_string(),
                    position: None,
                }
            }
        }
        other => {
            let detail = other.to_string();
            if detail.to_ascii_lowercase().contains("tls") || detail.contains("certificate") {
                PgError::Tls { endpoint, detail }
            } else {
                PgError::Unreachable { endpoint, detail }
            }
        }
    }
}

/// Runs the health query on an open connection; it must return at least one row.
pub async fn health_check_on(conn: &mut PgConnection, query: &str) -> Result<(), PgError> {
    let rows = sqlx::raw_sql(sqlx::AssertSqlSafe(query.to_string()))
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| PgError::from_sqlx("running the health query", e))?;
    if rows.is_empty() {
        return Err(PgError::Other {
            context: "running the health query".into(),
            detail: "it returned no rows".into(),
        });
    }
    Ok(())
}
