//! A PostgreSQL server of the test's own, from the platform's server programs
//! (`LIFEBOAT_PG_SERVER_BIN`/`_LIB`): its own data directory, a generated password for `admin`, and
//! replication connections allowed, as an administrator grants them for WAL archiving. As root (CI) it
//! runs as `nobody`, as the platform's servers do (PostgreSQL refuses root). Stopped when dropped.

use std::path::{Path, PathBuf};

use super::var;

/// Runs `program` as `nobody` when this process is root, with the server's libraries.
pub fn as_server_user(program: &Path) -> std::process::Command {
    let lib = var("LIFEBOAT_PG_SERVER_LIB").unwrap_or_default();
    let mut cmd = if nix_is_root() {
        let mut c = std::process::Command::new("setpriv");
        c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
            .arg(program);
        c
    } else {
        std::process::Command::new(program)
    };
    cmd.env("LD_LIBRARY_PATH", lib);
    cmd
}

fn nix_is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

/// Makes `path` the server user's (when root).
pub fn give_to_server_user(path: &Path) {
    if nix_is_root() {
        let ok = std::process::Command::new("chown")
            .args(["-R", "nobody:nogroup"])
            .arg(path)
            .status()
            .unwrap()
            .success();
        assert!(ok, "chown {}", path.display());
    }
}

/// The platform's server programs, or `None` (saying so) when the platform does not export them.
pub fn server_bin() -> Option<PathBuf> {
    let bin = var("LIFEBOAT_PG_SERVER_BIN").map(PathBuf::from);
    if bin.is_none() {
        if var("CI").as_deref() == Some("true") {
            panic!(
                "CI=true and LIFEBOAT_PG_SERVER_BIN is not set: start the platform with e2e/platform.sh up"
            );
        }
        eprintln!(
            "SKIPPED: LIFEBOAT_PG_SERVER_BIN is not set (an older platform): restart it with e2e/platform.sh up"
        );
    }
    bin
}

pub struct PrivatePostgres {
    pub dir: tempfile::TempDir,
    pub bin: PathBuf,
    pub pg: super::Postgres,
}

impl PrivatePostgres {
    pub async fn start(bin: PathBuf) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let password = format!("pw{}", super::random_suffix());
        std::fs::write(dir.path().join("pwfile"), format!("{password}\n")).unwrap();
        give_to_server_user(dir.path());
        let data = dir.path().join("data");
        let out = as_server_user(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "admin",
                "--auth",
                "scram-sha-256",
                "--no-sync",
                "--pwfile",
            ])
            .arg(dir.path().join("pwfile"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let conf = format!(
            "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\nfsync = off\n",
            dir.path().display()
        );
        append(&data.join("postgresql.conf"), &conf);
        std::fs::write(
            data.join("pg_hba.conf"),
            "host all all 127.0.0.1/32 scram-sha-256\nhost replication all 127.0.0.1/32 scram-sha-256\n",
        )
        .unwrap();
        give_to_server_user(dir.path());
        let server = Self {
            bin,
            pg: super::Postgres {
                host: "127.0.0.1".into(),
                port,
                user: "admin".into(),
                password,
            },
            dir,
        };
        server.ctl(&data, &["-w", "-t", "60", "start"]);
        server
    }

    /// `pg_ctl -D data args…` as the server user, logging to `<dir>/<data name>.log`.
    pub fn ctl(&self, data: &Path, args: &[&str]) {
        let log = self.dir.path().join(format!(
            "{}.log",
            data.file_name().unwrap().to_string_lossy()
        ));
        let out = as_server_user(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(data)
            .arg("-l")
            .arg(&log)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = as_server_user(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "stop"])
            .output();
    }
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}
