//! What Lifeboat knows about running PostgreSQL in a container: the official image's port, superuser,
//! uid, data directory and readiness command. The `instance` source (a controller) builds its pod from
//! these; nothing PostgreSQL-specific is spelled in the controller.

/// The port the server listens on.
pub const PORT: u16 = 5432;
/// The superuser of the official image.
pub const SUPERUSER: &str = "postgres";
/// uid/gid of the `postgres` user in the official image.
pub const UID: i64 = 999;
/// Where the data lives inside the data volume (a subdirectory, so the volume's root may hold
/// `lost+found`).
pub const PGDATA: &str = "/var/lib/postgresql/data/pgdata";
/// The data volume's mount path.
pub const DATA_MOUNT: &str = "/var/lib/postgresql/data";
/// Where the server puts its Unix socket and lock file.
pub const SOCKET_DIR: &str = "/var/run/postgresql";

/// The official image of a major version, e.g. `postgres:18`.
pub fn official_image(version: &str) -> String {
    format!("postgres:{version}")
}

/// The readiness (and liveness) command of a server on this pod.
pub fn ready_command() -> Vec<String> {
    vec![
        "pg_isready".into(),
        "-U".into(),
        SUPERUSER.into(),
        "-h".into(),
        "127.0.0.1".into(),
        "-p".into(),
        PORT.to_string(),
    ]
}
