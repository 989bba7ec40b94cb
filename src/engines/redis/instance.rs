//! Redis in a pod (the `instance` source): the official image's contract (`redis-server` on 6379, data
//! in `/data`, uid 999), the password from the superuser Secret, durability by tier (pure).

use crate::engines::{Durability, InstanceSettings, InstanceTemplate, ServerCredentials};

use super::{DEFAULT_PORT, Redis};

/// The variable the container reads the password from (expanded into its arguments by Kubernetes).
pub const PASSWORD_ENV: &str = "REDIS_PASSWORD";
/// The user an instance's clients (and Lifeboat) connect as.
pub const SUPERUSER: &str = "default";
/// Snapshot points of `staging` and `production`: after 900 s with 1 change, 300 s with 10, 60 s
/// with 10,000.
pub const SNAPSHOTS: &str = "900 1 300 10 60 10000";

impl InstanceTemplate for Redis {
    fn server_name(&self) -> &'static str {
        "redis"
    }

    fn server_args(&self, settings: &InstanceSettings) -> Vec<String> {
        let mut args: Vec<String> = [
            "redis-server",
            "--port",
            "6379",
            "--dir",
            "/data",
            "--requirepass",
            "$(REDIS_PASSWORD)",
        ]
        .map(String::from)
        .into();
        let (appendonly, save) = match settings.durability {
            Durability::None => ("no", ""),
            Durability::Log => ("yes", ""),
            Durability::LogAndSnapshots => ("yes", SNAPSHOTS),
        };
        args.extend(["--appendonly".into(), appendonly.into()]);
        if appendonly == "yes" {
            args.extend(["--appendfsync".into(), "everysec".into()]);
        }
        args.extend(["--save".into(), save.into()]);
        if let Some(bytes) = settings.max_memory_bytes {
            args.extend(["--maxmemory".into(), bytes.to_string()]);
        }
        if let Some(policy) = &settings.eviction_policy {
            args.extend(["--maxmemory-policy".into(), policy.clone()]);
        }
        args
    }

    fn official_image(&self, version: &str) -> String {
        format!("redis:{version}")
    }
    fn port(&self) -> u16 {
        DEFAULT_PORT
    }
    fn superuser(&self) -> &'static str {
        SUPERUSER
    }
    fn run_as(&self) -> i64 {
        999
    }
    fn data_mount(&self) -> &'static str {
        "/data"
    }
    fn data_env(&self) -> Vec<(&'static str, &'static str)> {
        Vec::new()
    }
    fn superuser_env(&self) -> (&'static str, &'static str) {
        ("REDIS_USER", PASSWORD_ENV)
    }
    fn run_dir(&self) -> &'static str {
        "/run/redis"
    }
    fn ready_command(&self) -> Vec<String> {
        // The password goes through redis-cli's own variable, never onto a command line.
        vec![
            "sh".into(),
            "-c".into(),
            format!("REDISCLI_AUTH=\"${PASSWORD_ENV}\" redis-cli -p 6379 ping | grep -q PONG"),
        ]
    }
    fn instance_admin(&self, host: String, password: String) -> ServerCredentials {
        ServerCredentials {
            host,
            port: DEFAULT_PORT,
            username: SUPERUSER.into(),
            password,
            // The pod's server speaks no TLS.
            sslmode: "disable".into(),
            ca_pem: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(durability: Durability) -> Vec<String> {
        Redis.server_args(&InstanceSettings {
            durability,
            max_memory_bytes: Some(268_435_456),
            eviction_policy: Some("allkeys-lru".into()),
        })
    }

    fn after<'a>(args: &'a [String], flag: &str) -> &'a str {
        let at = args.iter().position(|a| a == flag).unwrap();
        &args[at + 1]
    }

    #[test]
    fn durability_follows_the_tier() {
        let ci = args(Durability::None);
        assert_eq!(after(&ci, "--appendonly"), "no");
        assert_eq!(after(&ci, "--save"), "", "no snapshots");
        let dev = args(Durability::Log);
        assert_eq!(after(&dev, "--appendonly"), "yes");
        assert_eq!(after(&dev, "--appendfsync"), "everysec");
        assert_eq!(after(&dev, "--save"), "");
        let prod = args(Durability::LogAndSnapshots);
        assert_eq!(after(&prod, "--appendonly"), "yes");
        assert_eq!(after(&prod, "--save"), "900 1 300 10 60 10000");
        assert_eq!(after(&prod, "--maxmemory"), "268435456");
        assert_eq!(after(&prod, "--maxmemory-policy"), "allkeys-lru");
        assert_eq!(after(&prod, "--requirepass"), "$(REDIS_PASSWORD)");
        assert_eq!(prod[0], "redis-server");
    }
}
