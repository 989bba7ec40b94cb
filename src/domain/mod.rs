//! Logic that knows neither Kubernetes nor a database engine: when a backup is due and what it is
//! called (`schedule`), which backups to keep (`retention`), and what a backup's manifest says
//! (`manifest`), and migration versions (`version`). Everything here is pure and unit-tested.

pub mod manifest;
pub mod retention;
pub mod schedule;
pub mod version;
