//! What an application needs to connect to a PostgreSQL database, as the keys of a connection Secret:
//! the parts, a libpq URI and a JDBC URL (pure).

use std::collections::BTreeMap;

use crate::engines::ServerCredentials;

/// The sslmodes libpq knows.
pub const SSL_MODES: &[&str] = &[
    "disable",
    "allow",
    "prefer",
    "require",
    "verify-ca",
    "verify-full",
];

/// The sslmode when a Secret names none: with a CA the server's certificate can be checked, so it is,
/// host name included; without, TLS when the server offers it.
pub fn default_sslmode(with_ca: bool) -> &'static str {
    if with_ca { "verify-full" } else { "prefer" }
}

/// The connection Secret's data (pure).
pub fn connection_data(creds: &ServerCredentials, database: &str) -> BTreeMap<String, String> {
    let enc = crate::engines::naming::uri_component;
    let host = if creds.host.contains(':') {
        format!("[{}]", creds.host)
    } else {
        creds.host.clone()
    };
    BTreeMap::from([
        ("host".into(), creds.host.clone()),
        ("port".into(), creds.port.to_string()),
        ("database".into(), database.to_string()),
        ("username".into(), creds.username.clone()),
        ("password".into(), creds.password.clone()),
        ("sslmode".into(), creds.sslmode.clone()),
        (
            "uri".into(),
            format!(
                "postgresql://{}:{}@{host}:{}/{}?sslmode={}",
                enc(&creds.username),
                enc(&creds.password),
                creds.port,
                enc(database),
                creds.sslmode
            ),
        ),
        (
            "jdbcUrl".into(),
            format!(
                "jdbc:postgresql://{host}:{}/{}?sslmode={}",
                creds.port,
                enc(database),
                creds.sslmode
            ),
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_data_encodes_credentials_in_the_uri() {
        let creds = ServerCredentials {
            host: "db.example".into(),
            port: 5433,
            username: "app".into(),
            password: "p@ss:w/rd".into(),
            sslmode: "require".into(),
            ca_pem: None,
        };
        let d = connection_data(&creds, "orders");
        assert_eq!(
            d["uri"],
            "postgresql://app:p%40ss%3Aw%2Frd@db.example:5433/orders?sslmode=require"
        );
        assert_eq!(
            d["jdbcUrl"],
            "jdbc:postgresql://db.example:5433/orders?sslmode=require"
        );
        assert_eq!(d["password"], "p@ss:w/rd");
        for key in [
            "host", "port", "database", "username", "password", "uri", "jdbcUrl",
        ] {
            assert!(d.contains_key(key), "{key}");
        }
    }
}
