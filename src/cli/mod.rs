//! The command line: `lifeboat run` (the operator), `lifeboat crds` (its CRDs) and `lifeboat ci` (a
//! migrated database for a pipeline, [`ci`]). `main.rs` only parses and dispatches.

pub mod ci;

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use crate::{
    controllers,
    operator::{LeaseSettings, Operator, Settings},
    telemetry::{self, LogFormat},
};
use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tracing::info;

#[derive(Parser)]
#[command(
    name = "lifeboat",
    version,
    about = "Databases for every environment, migrated, backed up and proven to restore"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once at start-up; boxing the larger variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
pub enum Command {
    /// Run the operator (all five controllers, behind a leader-election Lease).
    Run(RunArgs),
    /// A migrated database for a CI pipeline: `up`, `down`, `wait`.
    Ci {
        #[command(subcommand)]
        command: ci::CiCommand,
    },
    /// Print every CRD as YAML, or write one file per kind into a directory.
    Crds {
        /// Write `<kind>.yaml` files here instead of printing to stdout.
        #[arg(long)]
        output_dir: Option<PathBuf>,
        /// Also write a `Kustomization` file listing them (for `crds/`, not for a Helm chart).
        #[arg(long, requires = "output_dir")]
        kustomization: bool,
        /// Write the field reference pages (`<kind>.md`, `README.md`) into this directory instead.
        #[arg(long, conflicts_with = "output_dir")]
        reference_dir: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
pub struct RunArgs {
    /// Address of the /metrics, /healthz and /readyz endpoint.
    #[arg(long, env = "LIFEBOAT_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Log format.
    #[arg(long, env = "LIFEBOAT_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Log filter, `RUST_LOG` syntax (for example `info` or `lifeboat=debug,info`).
    #[arg(long, env = "LIFEBOAT_LOG_LEVEL", default_value = "info")]
    log_level: String,
    /// Only watch this namespace (default: all namespaces).
    #[arg(long, env = "LIFEBOAT_WATCH_NAMESPACE")]
    watch_namespace: Option<String>,
    /// Namespace of the leader-election Lease (default: the pod's namespace).
    #[arg(long, env = "LIFEBOAT_LEASE_NAMESPACE")]
    lease_namespace: Option<String>,
    /// Name of the leader-election Lease.
    #[arg(long, env = "LIFEBOAT_LEASE_NAME", default_value = "lifeboat-leader")]
    lease_name: String,
    /// Seconds a leader may go without renewing before another instance takes over.
    #[arg(long, env = "LIFEBOAT_LEASE_DURATION_SECONDS", default_value_t = 15)]
    lease_duration_seconds: u64,
    /// Identity of this instance in the Lease and in events (default: the pod name, else the hostname).
    #[arg(long, env = "LIFEBOAT_IDENTITY")]
    identity: Option<String>,
    /// The operator's own namespace, where DatabaseServer admin Secrets live (default: the pod's
    /// namespace, else the Lease namespace).
    #[arg(long, env = "LIFEBOAT_OPERATOR_NAMESPACE")]
    operator_namespace: Option<String>,
    /// Most database jobs (provisioning, seeds, health checks, migrations) running at once.
    #[arg(long, env = "LIFEBOAT_MAX_CONCURRENT_WORK", default_value_t = controllers::work::DEFAULT_GLOBAL)]
    max_concurrent_work: usize,
    /// Most database jobs of one namespace running at once.
    #[arg(long, env = "LIFEBOAT_MAX_CONCURRENT_WORK_PER_NAMESPACE", default_value_t = controllers::work::DEFAULT_PER_NAMESPACE)]
    max_concurrent_work_per_namespace: usize,
    /// Seconds one provisioning job (create, clone, seed, migrations, health check) may take.
    #[arg(long, env = "LIFEBOAT_WORK_TIMEOUT_SECONDS", default_value_t = controllers::DEFAULT_WORK_TIMEOUT.as_secs())]
    work_timeout_seconds: u64,
    /// Image prefixes `spec.instance.image` may use, comma-separated (default: only Lifeboat's default
    /// PostgreSQL image).
    #[arg(long, env = "LIFEBOAT_ALLOWED_IMAGES", value_delimiter = ',')]
    allowed_images: Vec<String>,
    /// Directory holding `pg_dump` and `pg_restore` for backups (their major version must be at least
    /// the servers'); default: found on PATH.
    #[arg(long, env = "LIFEBOAT_PG_BIN_DIR")]
    pg_bin_dir: Option<std::path::PathBuf>,
    /// Directory where a parallel restore (`jobs` above 1) spools the decompressed dump; default: the
    /// system's temporary directory. In a pod, a volume with a size limit.
    #[arg(long, env = "LIFEBOAT_SPOOL_DIR")]
    spool_dir: Option<std::path::PathBuf>,
    /// Most bytes the spooled dumps of all restores running at once may take (bytes, or e.g. `10Gi`,
    /// `500Mi`); a dump that does not fit is restored streaming with one job.
    #[arg(long, env = "LIFEBOAT_SPOOL_LIMIT", default_value = controllers::restore::DEFAULT_SPOOL_LIMIT, value_parser = controllers::restore::parse_size)]
    spool_limit: u64,
}

impl Cli {
    /// Runs the chosen subcommand.
    pub async fn execute(self) -> anyhow::Result<()> {
        match self.command {
            Command::Crds {
                reference_dir: Some(dir),
                ..
            } => write_all(&dir, crate::crdgen::reference::pages()),
            Command::Crds {
                output_dir,
                kustomization,
                reference_dir: None,
            } => crds(output_dir, kustomization),
            Command::Run(args) => run(args).await,
            Command::Ci { command } => ci::execute(command).await,
        }
    }
}

fn crds(output_dir: Option<PathBuf>, kustomization: bool) -> anyhow::Result<()> {
    match output_dir {
        None => print!("{}", crate::crdgen::all_yaml()?),
        Some(dir) => write_all(&dir, crate::crdgen::files(kustomization)?)?,
    }
    Ok(())
}

fn write_all(dir: &std::path::Path, files: Vec<(String, String)>) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (file, text) in files {
        std::fs::write(dir.join(&file), text).with_context(|| format!("writing {file}"))?;
    }
    Ok(())
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    telemetry::init_tracing(args.log_format, &args.log_level)?;
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API")?;
    let identity = args
        .identity
        .or_else(|| std::env::var("POD_NAME").ok())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| format!("lifeboat-{}", std::process::id()));
    let lease_namespace = args
        .lease_namespace
        .or_else(|| std::env::var("POD_NAMESPACE").ok())
        .unwrap_or_else(|| client.default_namespace().to_string());
    let operator_namespace = args
        .operator_namespace
        .or_else(|| std::env::var("POD_NAMESPACE").ok())
        .unwrap_or_else(|| lease_namespace.clone());
    let lease_duration = Duration::from_secs(args.lease_duration_seconds.max(3));
    let settings = Settings {
        controllers: controllers::Config {
            watch_namespace: args.watch_namespace,
            instance: Some(identity.clone()),
            operator_namespace,
            work_limits: controllers::work::Limits {
                global: args.max_concurrent_work,
                per_namespace: args.max_concurrent_work_per_namespace,
            },
            work_timeout: Some(Duration::from_secs(args.work_timeout_seconds.max(1))),
            allowed_images: args.allowed_images,
            pg_bin_dir: args.pg_bin_dir,
            spool: controllers::restore::Spool::new(args.spool_dir, args.spool_limit),
        },
        metrics_addr: Some(args.metrics_addr),
        lease: LeaseSettings {
            namespace: lease_namespace,
            name: args.lease_name,
            identity,
            duration: lease_duration,
            grace: lease_duration / 3,
        },
    };

    let operator = std::sync::Arc::new(Operator::new());
    let signals = operator.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        info!("shutdown signal received; finishing in-flight work");
        signals.stop();
    });
    operator.run(client, settings).await
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_flags_parse() {
        let cli = Cli::try_parse_from([
            "lifeboat",
            "run",
            "--max-concurrent-work=4",
            "--allowed-images=registry.corp/,mirror.corp/",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("run expected");
        };
        assert_eq!(args.max_concurrent_work, 4);
        assert_eq!(
            args.max_concurrent_work_per_namespace,
            controllers::work::DEFAULT_PER_NAMESPACE
        );
        assert_eq!(args.allowed_images, ["registry.corp/", "mirror.corp/"]);
    }
}
