//! The platform's Redis server (`e2e/platform.sh`: Debian's redis-server 7.0 on loopback, the `default`
//! user off, an admin user with every right).

use super::{START_COMMAND, var};

/// The platform Redis server's admin: `(host, port, user, password)` from `LIFEBOAT_REDIS_*`, or `None`
/// (with a message naming the command that starts the platform) when they are not set. With `CI=true` a
/// missing server is a failure, never a skip, as for the PostgreSQL servers (`super::platform`).
pub fn redis_admin() -> Option<(String, u16, String, String)> {
    let found = (|| {
        Some((
            var("LIFEBOAT_REDIS_HOST")?,
            var("LIFEBOAT_REDIS_PORT")?.parse().ok()?,
            var("LIFEBOAT_REDIS_USER")?,
            var("LIFEBOAT_REDIS_PASSWORD")?,
        ))
    })();
    if found.is_none() {
        if var("CI").as_deref() == Some("true") {
            panic!(
                "CI=true and the test platform's Redis is not configured (LIFEBOAT_REDIS_*); start it with: {START_COMMAND}"
            );
        }
        eprintln!(
            "SKIPPED: the test platform's Redis is not up (LIFEBOAT_REDIS_*); start it with: {START_COMMAND}"
        );
    }
    found
}
