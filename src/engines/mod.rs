//! Database engines. PostgreSQL is the one implemented; the shapes here (connection info, naming) are
//! what Redis and MongoDB will fill in later.

pub mod postgres;

use std::fmt;

/// How to reach a database server, read from a Secret. `Debug` never prints the password.
#[derive(Clone, PartialEq, Eq)]
pub struct ServerCredentials {
    pub host: String,
    pub port: u16,
    pub username: String,
    pub password: String,
    /// libpq sslmode: disable, allow, prefer, require, verify-ca, verify-full.
    pub sslmode: String,
    /// PEM CA bundle for verify-ca / verify-full.
    pub ca_pem: Option<Vec<u8>>,
}

impl fmt::Debug for ServerCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerCredentials")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("sslmode", &self.sslmode)
            .field("ca_pem", &self.ca_pem.as_ref().map(|c| c.len()))
            .finish()
    }
}

/// The sslmodes libpq knows.
pub const SSL_MODES: &[&str] = &[
    "disable",
    "allow",
    "prefer",
    "require",
    "verify-ca",
    "verify-full",
];
