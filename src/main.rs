#![forbid(unsafe_code)]
//! The `lifeboat` binary: parses the command line (`lifeboat::cli`) and runs it. Exit codes: 0 done, 1
//! failed (for `ci`: the environment or run failed), 2 timed out waiting (`ci`).

use std::process::ExitCode;

use clap::Parser;
use lifeboat::cli::ci::WaitError;

#[tokio::main]
async fn main() -> ExitCode {
    lifeboat::install_crypto_provider();
    match lifeboat::cli::Cli::parse().execute().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => match e.downcast_ref::<WaitError>() {
            Some(w) => {
                eprintln!("{w}");
                ExitCode::from(u8::try_from(w.exit_code()).unwrap_or(1))
            }
            None => {
                eprintln!("Error: {e:?}");
                ExitCode::FAILURE
            }
        },
    }
}
