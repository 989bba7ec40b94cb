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

/// The platform Redis's admin: `(host, port, user, password)`.
pub type Admin = (String, u16, String, String);

/// A connection as `user`.
pub async fn connect(
    host: &str,
    port: u16,
    user: &str,
    password: &str,
) -> redis::aio::MultiplexedConnection {
    let url = format!(
        "redis://{}:{}@{host}:{port}/0",
        lifeboat::engines::naming::uri_component(user),
        lifeboat::engines::naming::uri_component(password)
    );
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// A connection as the platform Redis's admin.
pub async fn admin_conn(admin: &Admin) -> redis::aio::MultiplexedConnection {
    connect(&admin.0, admin.1, &admin.2, &admin.3).await
}

/// A Secret `name` in `namespace` with the platform Redis's admin credentials (plain text), as a user
/// would create it for `spec.server.adminSecretRef` or a drill's target.
pub async fn admin_secret(client: &kube::Client, namespace: &str, name: &str, admin: &Admin) {
    use k8s_openapi::api::core::v1::Secret;
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "stringData": {"host": admin.0, "port": admin.1.to_string(), "username": admin.2,
                       "password": admin.3, "sslmode": "disable"}
    }))
    .unwrap();
    kube::Api::<Secret>::namespaced(client.clone(), namespace)
        .create(&kube::api::PostParams::default(), &secret)
        .await
        .unwrap();
}

/// How many keys start with `prefix` (SCAN to the end).
pub async fn count_prefix(conn: &mut redis::aio::MultiplexedConnection, prefix: &str) -> usize {
    let (mut cursor, mut n) = (0u64, 0);
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await
            .unwrap();
        n += keys.len();
        if next == 0 {
            return n;
        }
        cursor = next;
    }
}

/// A redis-server of the test's own (`$LIFEBOAT_REDIS_SERVER_BIN`, the platform's binary) on a free
/// loopback port, the `default` user with a password, no persistence; killed when dropped (`kill_on_drop`).
pub struct PrivateRedis {
    _child: tokio::process::Child,
    _dir: tempfile::TempDir,
    pub admin: Admin,
}

impl PrivateRedis {
    pub async fn start() -> Self {
        let bin = var("LIFEBOAT_REDIS_SERVER_BIN").unwrap_or_else(|| "redis-server".into());
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let password = format!("pw-{}", super::random_suffix());
        let child = tokio::process::Command::new(&bin)
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--requirepass",
                &password,
            ])
            .arg("--dir")
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {bin}: {e}"));
        let admin = (
            "127.0.0.1".to_string(),
            port,
            "default".to_string(),
            password,
        );
        // Owned before the wait: a timeout panics and drops (kills) it.
        let server = Self {
            _child: child,
            _dir: dir,
            admin,
        };
        super::eventually(
            &format!("{bin} to listen on port {port}"),
            std::time::Duration::from_secs(5),
            || async move {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .ok()
                    .map(|_| ())
            },
        )
        .await;
        server
    }
}
