#![forbid(unsafe_code)]
//! Lifeboat: a Kubernetes operator for the whole life of an application's databases.
//!
//! `api` holds the five custom resources, `controllers` their reconcilers, `operator` the process
//! around them (CRD wait, leader election, shutdown), `telemetry` logs and metrics, and `cli` the
//! command line.

pub mod api;
pub mod cli;
pub mod controllers;
pub mod crdgen;
pub mod engines;
pub mod migrations;
pub mod operator;
pub mod telemetry;

/// Picks rustls' crypto provider for the whole process. Several dependencies enable different providers
/// (kube: ring, object_store: aws-lc-rs); with more than one compiled in, rustls needs to be told. Safe
/// to call more than once.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
