//! Adopting a database another tool migrated, without an engine: the tools whose ledgers Lifeboat
//! imports ([`Tool`]), where a run takes its applied migrations from ([`AdoptFrom`]) and what it
//! imported ([`Imported`]). Reading a ledger is the engine's (`engines::postgres::migrate::adopt`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::model::Version;

/// A tool whose ledger Lifeboat reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tool {
    Sqlx,
    GolangMigrate,
    Dbmate,
    Diesel,
    Flyway,
}

impl Tool {
    pub const ALL: [Tool; 5] = [
        Tool::Sqlx,
        Tool::GolangMigrate,
        Tool::Dbmate,
        Tool::Diesel,
        Tool::Flyway,
    ];

    /// The tool's name, as its users write it.
    pub fn name(self) -> &'static str {
        match self {
            Tool::Sqlx => "sqlx",
            Tool::GolangMigrate => "golang-migrate",
            Tool::Dbmate => "dbmate",
            Tool::Diesel => "diesel",
            Tool::Flyway => "Flyway",
        }
    }

    /// Its ledger table (in schema `public`).
    pub fn table(self) -> &'static str {
        match self {
            Tool::Sqlx => "_sqlx_migrations",
            Tool::GolangMigrate | Tool::Dbmate => "schema_migrations",
            Tool::Diesel => "__diesel_schema_migrations",
            Tool::Flyway => "flyway_schema_history",
        }
    }
}

/// Whose ledger a run imports on a database Lifeboat has not migrated before.
// The wire form of `MigrationRunSpec.adoptFrom`, one word per choice; `tool()` says which tool a word
// names.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum AdoptFrom {
    // The one other tool's ledger found, if any.
    #[default]
    Auto,
    // Never import.
    None,
    // sqlx's `_sqlx_migrations`.
    Sqlx,
    // golang-migrate's `schema_migrations` (version, dirty).
    GolangMigrate,
    // dbmate's `schema_migrations` (version).
    Dbmate,
    // diesel's `__diesel_schema_migrations`.
    Diesel,
    // Flyway's `flyway_schema_history`.
    Flyway,
}

impl AdoptFrom {
    /// The tool whose ledger, which must exist, is imported; `None` for `Auto` (the one other
    /// tool's ledger found in schema `public`, if any; two found: refused) and `None` (never import;
    /// apply from zero or from `baselineVersion`).
    pub fn tool(self) -> Option<Tool> {
        match self {
            AdoptFrom::Auto | AdoptFrom::None => None,
            AdoptFrom::Sqlx => Some(Tool::Sqlx),
            AdoptFrom::GolangMigrate => Some(Tool::GolangMigrate),
            AdoptFrom::Dbmate => Some(Tool::Dbmate),
            AdoptFrom::Diesel => Some(Tool::Diesel),
            AdoptFrom::Flyway => Some(Tool::Flyway),
        }
    }
}

/// What was imported, for status and the message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Imported {
    /// The tool, or `None` for a baseline.
    pub tool: Option<Tool>,
    /// Migrations recorded as applied.
    pub count: usize,
    pub newest: Option<Version>,
}

impl Imported {
    /// For messages: `Imported 312 applied migration(s) from sqlx's _sqlx_migrations (newest 20240101)`.
    pub fn describe(&self) -> String {
        let from = match self.tool {
            Some(t) => format!("from {}'s {}", t.name(), t.table()),
            None => "as the baseline (baselineVersion)".into(),
        };
        let newest = self
            .newest
            .as_ref()
            .map(|v| format!(", newest {v}"))
            .unwrap_or_default();
        format!(
            "Recorded {} migration(s) as applied {from}{newest}, without running them",
            self.count
        )
    }
}
