//! What the runner reports that the MigrationRun status says differently: counts as `i64` (the
//! runner counts in `usize`) and an import as `ImportedLedger` (the tool's name and table as
//! strings). The enums, lint rules and records are the same types on both sides
//! (`domain::migrations`, re-exported by `api::migration_run`).

use crate::{
    api::migration_run as api,
    domain::migrations::{self as run, adopt},
};

impl From<run::LintCount> for api::LintCount {
    fn from(c: run::LintCount) -> Self {
        Self {
            rule: c.rule,
            severity: c.severity,
            count: count(c.count),
        }
    }
}

impl From<adopt::Imported> for api::ImportedLedger {
    fn from(i: adopt::Imported) -> Self {
        Self {
            from: i.tool.map_or("baseline", |t| t.name()).to_string(),
            table: i.tool.map(|t| t.table().to_string()),
            count: count(i.count),
            newest_version: i.newest,
        }
    }
}

/// A count for status (a count past `i64::MAX` says `i64::MAX`).
fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_lists_every_rule_squawk_knows() {
        let api: Vec<String> = api::LINT_RULE_NAMES
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            api,
            crate::engines::Migrate::lint_rule_names(&crate::engines::ENGINE)
        );
    }

    #[test]
    fn counts_and_imports_read_as_status_says_them() {
        let c = api::LintCount::from(run::LintCount {
            rule: "ban-drop-table".into(),
            severity: run::Severity::Warning,
            count: 3,
        });
        assert_eq!((c.count, c.severity), (3, api::LintSeverity::Warning));
        let i = api::ImportedLedger::from(adopt::Imported {
            tool: Some(adopt::Tool::Flyway),
            count: 2,
            newest: Some(run::Version::whole(7).unwrap()),
        });
        assert_eq!(
            (i.from.as_str(), i.table.as_deref(), i.count),
            ("Flyway", Some("flyway_schema_history"), 2)
        );
        let baseline = api::ImportedLedger::from(adopt::Imported {
            tool: None,
            count: 1,
            newest: None,
        });
        assert_eq!((baseline.from.as_str(), baseline.table), ("baseline", None));
        assert_eq!(count(usize::MAX), i64::MAX);
    }
}
