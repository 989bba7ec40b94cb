#![forbid(unsafe_code)]
//! Lifeboat: a Kubernetes operator for the whole life of an application's databases.
//!
//! Layers, each importing only those below it (tests/layers.rs checks): `api` (the five custom
//! resources) and `domain` (pure logic: schedules, retention, manifests, migration files and plans) →
//! `engines` (PostgreSQL, its migration runner included) and `storage` (object storage) →
//! `controllers` (the reconcilers) → `operator` (the
//! process: CRD wait, leader election, shutdown) and `cli` (the command line). `telemetry` holds logs
//! and metrics.

pub mod api;
pub mod cli;
pub mod controllers;
pub mod crdgen;
pub mod domain;
pub mod engines;
pub mod operator;
pub mod storage;
pub mod telemetry;

/// Picks rustls' crypto provider for the whole process. Several dependencies enable different providers
/// (kube: ring, object_store: aws-lc-rs); with more than one compiled in, rustls needs to be told. Safe
/// to call more than once.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
