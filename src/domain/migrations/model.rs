//! What the runner is asked and what it reports, in its own terms: no Kubernetes type. The MigrationRun
//! and DatabaseEnvironment controllers translate their specs into these and these into their status
//! (`controllers/migration_run/convert.rs`).

pub use crate::domain::version::Version;

/// Which way the schema moves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Apply pending migrations.
    #[default]
    Up,
    /// Revert applied migrations.
    Down,
}

/// How lint findings are treated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum LintMode {
    /// A finding fails the run before anything is applied.
    #[default]
    Enforce,
    /// Findings are recorded; the run continues.
    Warn,
    /// No lint.
    Off,
}

/// What a failed run does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum OnFailure {
    /// Undo what this run applied, newest first.
    #[default]
    Rollback,
    /// Stop and leave applied migrations in place.
    Halt,
}

/// Where a run ended (or is).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum MigrationPhase {
    #[default]
    Pending,
    Running,
    /// Every migration applied.
    Succeeded,
    /// Stopped on an error; migrations applied before it remain.
    Failed,
    /// Failed, and everything this run applied was undone.
    RolledBack,
}

/// One row of the ledger, the table of applied migrations (the engine keeps it:
/// `lifeboat_schema_migrations` in PostgreSQL).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerRow {
    pub version: Version,
    pub name: String,
    /// SHA-256 (hex) of the up script when it was applied.
    pub checksum: String,
    pub execution_ms: i64,
    /// UID of the MigrationRun that applied it.
    pub run_uid: String,
    /// False while (or if) a no-transaction migration has not finished.
    pub complete: bool,
}

/// One migration applied or undone.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct MigrationRecord {
    pub version: Version,
    /// The file name without version and suffix.
    pub name: String,
    /// SHA-256 (hex) of the up script, as recorded in the ledger.
    pub checksum: String,
    pub duration_ms: i64,
}

/// One lint finding.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LintFinding {
    pub file: String,
    /// 1-based line of the offending statement.
    pub line: Option<i32>,
    /// Rule that fired, e.g. `require-concurrent-index-creation`.
    pub rule: String,
    /// What is wrong and how to fix it.
    pub message: String,
    pub severity: Severity,
}

/// Whether a finding fails a run with `lint: enforce`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Severity {
    /// A rule about locks or data safety: fails the run under `enforce`.
    #[default]
    Error,
    /// A style rule: recorded, never fails the run.
    Warning,
}

/// Per-run changes to the rule set: rule names as squawk spells them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LintRules {
    /// Rules not checked at all.
    pub exclude: Vec<String>,
    /// Rules whose findings are warnings (also turns on an opt-in rule).
    pub warn: Vec<String>,
    /// Rules whose findings are errors (also turns on an opt-in rule).
    pub error: Vec<String>,
}

/// How many findings one rule had.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LintCount {
    pub rule: String,
    pub severity: Severity,
    pub count: usize,
}

/// Where and why a migration failed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MigrationFailure {
    pub version: Option<Version>,
    pub file: Option<String>,
    /// 1-based index of the failing statement within the file.
    pub statement: Option<i32>,
    /// 1-based line in the file where the failing statement starts.
    pub line: Option<i32>,
    /// 1-based character position of the error within the statement, as the server reports it.
    pub position: Option<i32>,
    /// SQLSTATE error code, e.g. `42P01`.
    pub sql_state: Option<String>,
    /// The error, in one sentence.
    pub error: String,
}

/// Most lint findings a run keeps (the rest are counted in its message).
pub const MAX_LINT_FINDINGS: usize = 50;

/// Records kept at each end of a [`Records`] list.
pub const RECORDS_KEPT: usize = 10;

/// A run's list of migrations applied (or undone), kept bounded: the first and the last
/// [`RECORDS_KEPT`], and how many in all. A run of 10,000 migrations reports 20 records and a count;
/// the ledger table is the full record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Records {
    head: Vec<MigrationRecord>,
    tail: std::collections::VecDeque<MigrationRecord>,
    count: usize,
}

impl Records {
    /// A list known only as its kept records and its count (as status keeps it).
    pub fn from_parts(listed: Vec<MigrationRecord>, count: usize) -> Self {
        let mut r = Self::default();
        let listed_len = listed.len();
        for record in listed {
            r.push(record);
        }
        r.count = count.max(listed_len);
        r
    }

    pub fn push(&mut self, record: MigrationRecord) {
        self.count += 1;
        if self.head.len() < RECORDS_KEPT {
            self.head.push(record);
            return;
        }
        self.tail.push_back(record);
        if self.tail.len() > RECORDS_KEPT {
            self.tail.pop_front();
        }
    }

    /// How many records in all (kept or not).
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The kept records, in order: the first ones, then the last ones.
    pub fn listed(&self) -> Vec<MigrationRecord> {
        self.head.iter().chain(self.tail.iter()).cloned().collect()
    }

    /// For messages: `1_a, 2_b, 3_c, … 94 more …, 98_x, 99_y, 100_z`, or `none`.
    pub fn names(&self) -> String {
        const SHOWN: usize = 3;
        let name = |r: &MigrationRecord| format!("{}_{}", r.version, r.name);
        let listed = self.listed();
        if listed.is_empty() {
            return "none".into();
        }
        if self.count <= 2 * SHOWN {
            return listed.iter().map(name).collect::<Vec<_>>().join(", ");
        }
        let first: Vec<String> = listed.iter().take(SHOWN).map(name).collect();
        let last: Vec<String> = listed[listed.len() - SHOWN..].iter().map(name).collect();
        format!(
            "{}, … {} more …, {}",
            first.join(", "),
            self.count - 2 * SHOWN,
            last.join(", ")
        )
    }
}

impl FromIterator<MigrationRecord> for Records {
    fn from_iter<I: IntoIterator<Item = MigrationRecord>>(iter: I) -> Self {
        let mut r = Self::default();
        for record in iter {
            r.push(record);
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(v: i64) -> MigrationRecord {
        MigrationRecord {
            version: Version::whole(v).unwrap(),
            name: format!("m{v}"),
            ..Default::default()
        }
    }

    #[test]
    fn records_keep_both_ends_and_count_all() {
        let r: Records = (1..=10_000).map(rec).collect();
        assert_eq!(r.len(), 10_000);
        let listed = r.listed();
        assert_eq!(listed.len(), 2 * RECORDS_KEPT);
        assert_eq!(listed[0].version.as_whole(), Some(1));
        assert_eq!(listed[RECORDS_KEPT - 1].version.as_whole(), Some(10));
        assert_eq!(listed[RECORDS_KEPT].version.as_whole(), Some(9_991));
        assert_eq!(listed.last().unwrap().version.as_whole(), Some(10_000));
        assert_eq!(
            r.names(),
            "1_m1, 2_m2, 3_m3, … 9994 more …, 9998_m9998, 9999_m9999, 10000_m10000"
        );
        let again = Records::from_parts(listed, r.len());
        assert_eq!(again, r, "what status keeps rebuilds the same list");
    }

    #[test]
    fn short_lists_are_whole() {
        let r: Records = (1..=4).map(rec).collect();
        assert_eq!(r.listed().len(), 4);
        assert_eq!(r.names(), "1_m1, 2_m2, 3_m3, 4_m4");
        assert_eq!(Records::default().names(), "none");
        assert_eq!(Records::from_parts(r.listed(), 0).len(), 4);
    }
}
