//! Reading `INFO` (pure): the version and the figures a cache is judged by.

use std::collections::BTreeMap;

use crate::engines::tenancy::Usage;

/// `INFO`'s `field:value` lines, sections and comments left out.
pub fn parse_info(text: &str) -> BTreeMap<&str, &str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .collect()
}

/// The server's version (`redis_version`).
pub fn version(info: &BTreeMap<&str, &str>) -> Option<String> {
    info.get("redis_version").map(|v| v.to_string())
}

/// The major version of `7.0.15`.
pub fn major(version: &str) -> Option<u32> {
    version.split('.').next()?.parse().ok()
}

/// The databases that hold keys (`INFO keyspace`'s `db<N>:keys=…` lines), in order.
pub fn databases(info: &BTreeMap<&str, &str>) -> Vec<u32> {
    info.keys()
        .filter_map(|k| k.strip_prefix("db")?.parse().ok())
        .collect::<std::collections::BTreeSet<u32>>()
        .into_iter()
        .collect()
}

/// The figures of [`Usage`]; a missing or unreadable field counts as 0 (`maxmemory` 0: no limit).
pub fn usage(info: &BTreeMap<&str, &str>) -> Usage {
    let n = |k: &str| {
        info.get(k)
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    Usage {
        keyspace_hits: n("keyspace_hits"),
        keyspace_misses: n("keyspace_misses"),
        evicted_keys: n("evicted_keys"),
        used_memory_bytes: n("used_memory"),
        max_memory_bytes: Some(n("maxmemory")).filter(|m| *m > 0),
        connected_clients: n("connected_clients"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "# Server\r\nredis_version:7.0.15\r\nredis_mode:standalone\r\n\r\n# Clients\r\nconnected_clients:3\r\n# Memory\r\nused_memory:1048576\r\nmaxmemory:0\r\n# Stats\r\nkeyspace_hits:80\r\nkeyspace_misses:20\r\nevicted_keys:5\r\n";

    #[test]
    fn reads_version_and_figures() {
        let info = parse_info(INFO);
        assert_eq!(version(&info).as_deref(), Some("7.0.15"));
        assert_eq!(major("7.0.15"), Some(7));
        assert_eq!(major("5.0.14"), Some(5));
        let u = usage(&info);
        assert_eq!(u.connected_clients, 3);
        assert_eq!(u.used_memory_bytes, 1_048_576);
        assert_eq!(u.max_memory_bytes, None, "maxmemory 0 is no limit");
        assert_eq!(u.evicted_keys, 5);
        assert_eq!(u.hit_rate(), Some(0.8));
    }

    #[test]
    fn databases_with_keys() {
        let info = parse_info(
            "# Keyspace\r\ndb0:keys=3,expires=0,avg_ttl=0\r\ndb10:keys=1,expires=1,avg_ttl=5\r\ndb2:keys=1,expires=0,avg_ttl=0\r\n",
        );
        assert_eq!(databases(&info), vec![0, 2, 10]);
        assert_eq!(databases(&parse_info(INFO)), Vec::<u32>::new());
    }
}
