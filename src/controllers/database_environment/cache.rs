//! A cache's figures in status and the condition `WithinThresholds` (pure).

use crate::{
    api::database_environment::{CacheStatus, Thresholds},
    engines::Usage,
};

/// The condition saying whether a cache's figures are within `spec.thresholds`.
pub const CONDITION_WITHIN_THRESHOLDS: &str = "WithinThresholds";
/// The hit rate is judged once the server has answered this many lookups (before, a handful of misses
/// on a fresh server would read as a failing cache).
pub const MIN_LOOKUPS: u64 = 100;

const MIB: u64 = 1024 * 1024;

/// The status block for `usage` (`scope`: `server` or `instance`).
pub fn status(usage: &Usage, scope: &str) -> CacheStatus {
    CacheStatus {
        scope: scope.to_string(),
        hit_rate_percent: usage.hit_rate().map(|r| (r * 100.0).floor() as i32),
        lookups: (usage.keyspace_hits + usage.keyspace_misses) as i64,
        evicted_keys: usage.evicted_keys as i64,
        used_memory_mi_b: (usage.used_memory_bytes / MIB) as i64,
        max_memory_mi_b: usage.max_memory_bytes.map(|m| (m / MIB) as i64),
        connected_clients: usage.connected_clients as i64,
    }
}

/// Whether the figures are within the thresholds, with the condition's reason and message.
pub fn judge(usage: &Usage, thresholds: &Thresholds) -> (bool, &'static str, String) {
    let lookups = usage.keyspace_hits + usage.keyspace_misses;
    let min_rate = f64::from(thresholds.cache_hit_rate_percent) / 100.0;
    if lookups >= MIN_LOOKUPS
        && let Some(rate) = usage.hit_rate()
        && rate < min_rate
    {
        return (
            false,
            "CacheHitRateLow",
            format!(
                "The cache hit rate is {:.1}% ({} of {lookups} lookups found their key), below spec.thresholds.cacheHitRatePercent {}%.",
                rate * 100.0,
                usage.keyspace_hits,
                thresholds.cache_hit_rate_percent
            ),
        );
    }
    let max_memory = f64::from(thresholds.memory_used_percent) / 100.0;
    if let Some(ratio) = usage.memory_ratio()
        && ratio > max_memory
    {
        return (
            false,
            "MemoryNearLimit",
            format!(
                "Memory in use is {:.1}% of maxmemory, above spec.thresholds.memoryUsedPercent {}%; {} key(s) were evicted so far.",
                ratio * 100.0,
                thresholds.memory_used_percent,
                usage.evicted_keys
            ),
        );
    }
    let rate = match usage.hit_rate() {
        Some(r) if lookups >= MIN_LOOKUPS => format!("hit rate {:.1}%", r * 100.0),
        _ => format!("hit rate not judged yet ({lookups} lookups, {MIN_LOOKUPS} needed)"),
    };
    let memory = match usage.memory_ratio() {
        Some(r) => format!("memory {:.1}% of maxmemory", r * 100.0),
        None => "no maxmemory set".to_string(),
    };
    (
        true,
        "WithinThresholds",
        format!("The cache is within its thresholds: {rate}, {memory}."),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(hits: u64, misses: u64, used: u64, max: Option<u64>) -> Usage {
        Usage {
            keyspace_hits: hits,
            keyspace_misses: misses,
            evicted_keys: 7,
            used_memory_bytes: used,
            max_memory_bytes: max,
            connected_clients: 2,
        }
    }

    #[test]
    fn thresholds_judge_hit_rate_then_memory() {
        let t = Thresholds::default();
        let cases = [
            (
                "a fresh server is not judged",
                usage(1, 9, 0, None),
                true,
                "WithinThresholds",
            ),
            (
                "a good cache",
                usage(900, 100, 10, Some(100)),
                true,
                "WithinThresholds",
            ),
            (
                "exactly at the threshold",
                usage(80, 20, 0, None),
                true,
                "WithinThresholds",
            ),
            (
                "too many misses",
                usage(790, 210, 0, None),
                false,
                "CacheHitRateLow",
            ),
            (
                "memory near the limit",
                usage(900, 100, 95, Some(100)),
                false,
                "MemoryNearLimit",
            ),
        ];
        for (name, u, ok, reason) in cases {
            let (within, why, message) = judge(&u, &t);
            assert_eq!((within, why), (ok, reason), "{name}: {message}");
        }
        let (_, _, message) = judge(&usage(790, 210, 0, None), &t);
        assert!(
            message.contains("79.0%") && message.contains("80%"),
            "{message}"
        );
    }

    #[test]
    fn status_rounds_to_whole_units() {
        let s = status(&usage(2, 1, 5 * MIB + 3, Some(64 * MIB)), "server");
        assert_eq!(s.hit_rate_percent, Some(66));
        assert_eq!(s.lookups, 3);
        assert_eq!(s.used_memory_mi_b, 5);
        assert_eq!(s.max_memory_mi_b, Some(64));
        assert_eq!(s.scope, "server");
    }
}
