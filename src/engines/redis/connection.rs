//! What an application needs to connect to its part of a Redis server, as the keys of a connection
//! Secret (pure).

use std::collections::BTreeMap;

use crate::engines::ServerCredentials;

/// The sslmodes a Redis Secret may name: plain, TLS without checking the certificate, TLS checked
/// against `ca.crt` (with or without the host name: the client checks both).
pub const SSL_MODES: &[&str] = &["disable", "require", "verify-ca", "verify-full"];

/// The sslmode when a Secret names none: checked TLS with a CA, plain text without one (most Redis
/// servers speak no TLS; a DatabaseServer's `spec.tls.mode` overrides this).
pub fn default_sslmode(with_ca: bool) -> &'static str {
    if with_ca { "verify-full" } else { "disable" }
}

/// The connection Secret's data: `host`, `port`, `username`, `password`, `keyPrefix`, `tls`
/// (`true`/`false`), `sslmode` (how Lifeboat itself connects, for its backups) and `uri`
/// (`redis://` or `rediss://`).
pub fn connection_data(creds: &ServerCredentials, key_prefix: &str) -> BTreeMap<String, String> {
    let enc = crate::engines::naming::uri_component;
    let tls = creds.sslmode != "disable";
    let host = if creds.host.contains(':') {
        format!("[{}]", creds.host)
    } else {
        creds.host.clone()
    };
    BTreeMap::from([
        ("host".into(), creds.host.clone()),
        ("port".into(), creds.port.to_string()),
        ("username".into(), creds.username.clone()),
        ("password".into(), creds.password.clone()),
        ("keyPrefix".into(), key_prefix.to_string()),
        ("tls".into(), tls.to_string()),
        ("sslmode".into(), creds.sslmode.clone()),
        (
            "uri".into(),
            format!(
                "{}://{}:{}@{host}:{}/0",
                if tls { "rediss" } else { "redis" },
                enc(&creds.username),
                enc(&creds.password),
                creds.port
            ),
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_names_user_prefix_and_scheme() {
        let creds = ServerCredentials {
            host: "redis.example".into(),
            port: 6380,
            username: "shop_a_12345678".into(),
            password: "p@ss/word".into(),
            sslmode: "disable".into(),
            ca_pem: None,
        };
        let data = connection_data(&creds, "shop_a_12345678:");
        assert_eq!(data["keyPrefix"], "shop_a_12345678:");
        assert_eq!(data["tls"], "false");
        assert_eq!(
            data["uri"],
            "redis://shop_a_12345678:p%40ss%2Fword@redis.example:6380/0"
        );
        let tls = ServerCredentials {
            sslmode: "verify-full".into(),
            ..creds
        };
        let data = connection_data(&tls, "p:");
        assert_eq!(data["tls"], "true");
        assert!(data["uri"].starts_with("rediss://"));
    }
}
