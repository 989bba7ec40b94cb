//! Applies a directory of migration files to a database with Lifeboat's runner, as a MigrationRun
//! would (advisory lock, ledger, one transaction per migration). Used by `e2e/bench/migrations.sh`.
//!
//! `migrate_bench --dir DIR --database NAME [--lint off|warn]`; the server and admin credentials come
//! from `LIFEBOAT_PG_HOST`, `LIFEBOAT_PG_PORT`, `LIFEBOAT_PG_USER`, `LIFEBOAT_PG_PASSWORD`.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use lifeboat::{
    domain::migrations::{self, Direction, LintMode, MigrationPhase, OnFailure, RawFile},
    engines::{
        ServerCredentials,
        postgres::migrate::{self, NoHooks, Prior, RunOptions},
    },
};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn env(name: &str) -> anyhow::Result<String> {
    std::env::var(name)
        .with_context(|| format!("{name} is not set (eval \"$(e2e/platform.sh env)\")"))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    lifeboat::install_crypto_provider();
    let args: Vec<String> = std::env::args().collect();
    let dir = arg(&args, "--dir").context("--dir DIR is required")?;
    let database = arg(&args, "--database").context("--database NAME is required")?;
    let lint = match arg(&args, "--lint").as_deref() {
        None | Some("off") => LintMode::Off,
        Some("warn") => LintMode::Warn,
        Some(other) => bail!("--lint must be off or warn, not {other}"),
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
        let path = entry?.path();
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        files.push(RawFile::new("bench", &name, std::fs::read(&path)?));
    }
    let started = Instant::now();
    let parsed = migrations::source::parse(&files)?;
    let creds = ServerCredentials {
        host: env("LIFEBOAT_PG_HOST")?,
        port: env("LIFEBOAT_PG_PORT")?.parse()?,
        username: env("LIFEBOAT_PG_USER")?,
        password: env("LIFEBOAT_PG_PASSWORD")?,
        sslmode: "disable".into(),
        ca_pem: None,
    };
    let options = RunOptions {
        run_uid: "bench".into(),
        label: "bench/migrate_bench".into(),
        direction: Direction::Up,
        target_version: None,
        on_failure: OnFailure::Halt,
        lint,
        lint_rules: Default::default(),
        adopt: Default::default(),
        baseline_version: None,
        lock_timeout: Duration::from_secs(30),
        statement_timeout: None,
    };
    let outcome = migrate::run(
        &creds,
        &database,
        &parsed,
        &options,
        Prior::default(),
        &mut NoHooks,
    )
    .await?;
    eprintln!(
        "{:?} ({}) in {:.3}s: {} applied, {} lint finding(s)",
        outcome.phase,
        outcome.reason,
        started.elapsed().as_secs_f64(),
        outcome.state.applied.len(),
        outcome.state.lint_total
    );
    if outcome.phase != MigrationPhase::Succeeded {
        bail!("{}", outcome.message);
    }
    Ok(())
}
