//! Logic that knows neither Kubernetes nor a database engine: when a backup is due and what it is
//! called (`schedule`), which backups to keep (`retention`), and what a backup's manifest says
//! (`manifest`), migration versions (`version`), migration files and plans (`migrations`), and SHA-256
//! checksums (`digest`). Everything here is pure and unit-tested.

pub mod digest;
pub mod manifest;
pub mod migrations;
pub mod retention;
pub mod schedule;
pub mod version;
