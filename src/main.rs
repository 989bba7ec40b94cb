#![forbid(unsafe_code)]
//! The `lifeboat` binary: parses the command line (`lifeboat::cli`) and runs it.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    lifeboat::install_crypto_provider();
    lifeboat::cli::Cli::parse().execute().await
}
