//! The runner's terms ↔ the MigrationRun API's: specs become run options, outcomes become status.
//! The runner (`engines::Migrate`, in the terms of `engines::migrate` and `domain::migrations`) knows no Kubernetes type; this is where the two meet.

use crate::{
    api::migration_run as api,
    domain::migrations::{self as run, adopt},
};

impl From<api::Direction> for run::Direction {
    fn from(d: api::Direction) -> Self {
        match d {
            api::Direction::Up => Self::Up,
            api::Direction::Down => Self::Down,
        }
    }
}

impl From<api::LintMode> for run::LintMode {
    fn from(m: api::LintMode) -> Self {
        match m {
            api::LintMode::Enforce => Self::Enforce,
            api::LintMode::Warn => Self::Warn,
            api::LintMode::Off => Self::Off,
        }
    }
}

impl From<api::OnFailure> for run::OnFailure {
    fn from(f: api::OnFailure) -> Self {
        match f {
            api::OnFailure::Rollback => Self::Rollback,
            api::OnFailure::Halt => Self::Halt,
        }
    }
}

impl From<run::MigrationPhase> for api::MigrationPhase {
    fn from(p: run::MigrationPhase) -> Self {
        match p {
            run::MigrationPhase::Pending => Self::Pending,
            run::MigrationPhase::Running => Self::Running,
            run::MigrationPhase::Succeeded => Self::Succeeded,
            run::MigrationPhase::Failed => Self::Failed,
            run::MigrationPhase::RolledBack => Self::RolledBack,
        }
    }
}

impl From<run::MigrationRecord> for api::MigrationRecord {
    fn from(r: run::MigrationRecord) -> Self {
        Self {
            version: r.version.clone(),
            name: r.name,
            checksum: r.checksum,
            duration_ms: r.duration_ms,
        }
    }
}

impl From<run::LintFinding> for api::LintFinding {
    fn from(f: run::LintFinding) -> Self {
        Self {
            file: f.file,
            line: f.line,
            rule: f.rule,
            message: f.message,
            severity: f.severity.into(),
        }
    }
}

impl From<run::Severity> for api::LintSeverity {
    fn from(s: run::Severity) -> Self {
        match s {
            run::Severity::Error => Self::Error,
            run::Severity::Warning => Self::Warning,
        }
    }
}

impl From<run::LintCount> for api::LintCount {
    fn from(c: run::LintCount) -> Self {
        Self {
            rule: c.rule,
            severity: c.severity.into(),
            count: i64::try_from(c.count).unwrap_or(i64::MAX),
        }
    }
}

impl From<api::AdoptFrom> for adopt::AdoptFrom {
    fn from(a: api::AdoptFrom) -> Self {
        use adopt::Tool;
        match a {
            api::AdoptFrom::Auto => Self::Auto,
            api::AdoptFrom::None => Self::None,
            api::AdoptFrom::Sqlx => Self::Tool(Tool::Sqlx),
            api::AdoptFrom::GolangMigrate => Self::Tool(Tool::GolangMigrate),
            api::AdoptFrom::Dbmate => Self::Tool(Tool::Dbmate),
            api::AdoptFrom::Diesel => Self::Tool(Tool::Diesel),
            api::AdoptFrom::Flyway => Self::Tool(Tool::Flyway),
        }
    }
}

impl From<adopt::Imported> for api::ImportedLedger {
    fn from(i: adopt::Imported) -> Self {
        Self {
            from: i.tool.map_or("baseline", |t| t.name()).to_string(),
            table: i.tool.map(|t| t.table().to_string()),
            count: i64::try_from(i.count).unwrap_or(i64::MAX),
            newest_version: i.newest,
        }
    }
}

impl From<api::LintRules> for run::LintRules {
    fn from(r: api::LintRules) -> Self {
        Self {
            exclude: r.exclude,
            warn: r.warn,
            error: r.error,
        }
    }
}

impl From<run::MigrationFailure> for api::MigrationFailure {
    fn from(f: run::MigrationFailure) -> Self {
        Self {
            version: f.version.clone(),
            file: f.file,
            statement: f.statement,
            line: f.line,
            position: f.position,
            sql_state: f.sql_state,
            error: f.error,
        }
    }
}

impl From<api::MigrationRecord> for run::MigrationRecord {
    fn from(r: api::MigrationRecord) -> Self {
        Self {
            version: r.version.clone(),
            name: r.name,
            checksum: r.checksum,
            duration_ms: r.duration_ms,
        }
    }
}

impl From<api::MigrationFailure> for run::MigrationFailure {
    fn from(f: api::MigrationFailure) -> Self {
        Self {
            version: f.version.clone(),
            file: f.file,
            statement: f.statement,
            line: f.line,
            position: f.position,
            sql_state: f.sql_state,
            error: f.error,
        }
    }
}

/// Converts a list (`Vec<run::X>` → `Vec<api::X>`).
pub fn all<A, B: From<A>>(items: Vec<A>) -> Vec<B> {
    items.into_iter().map(B::from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_runner_keeps_as_many_findings_as_the_status_documents() {
        assert_eq!(run::MAX_LINT_FINDINGS, api::MAX_LINT_FINDINGS);
    }

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
    fn every_variant_maps() {
        for (a, r) in [
            (api::Direction::Up, run::Direction::Up),
            (api::Direction::Down, run::Direction::Down),
        ] {
            assert_eq!(run::Direction::from(a), r);
        }
        assert_eq!(run::LintMode::from(api::LintMode::Off), run::LintMode::Off);
        assert_eq!(
            api::MigrationPhase::from(run::MigrationPhase::RolledBack),
            api::MigrationPhase::RolledBack
        );
        let f = api::MigrationFailure::from(run::MigrationFailure {
            version: Some(run::Version::whole(3).unwrap()),
            sql_state: Some("42P01".into()),
            error: "x".into(),
            ..Default::default()
        });
        assert_eq!(
            (f.version.and_then(|v| v.as_whole()), f.sql_state.as_deref()),
            (Some(3), Some("42P01"))
        );
    }
}
