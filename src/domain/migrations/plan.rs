//! What a run will do, decided from the migration files and the ledger alone (pure): which migrations
//! to apply or revert, in which order, and every reason to refuse before changing anything.

use std::collections::BTreeMap;

use super::model::{Direction, LedgerRow, MigrationRecord, OnFailure, Version};
use super::source::{Migration, Script};

/// Apply a migration's up script, or revert it with its down script.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Apply,
    Revert,
}

impl Action {
    pub fn opposite(self) -> Self {
        match self {
            Action::Apply => Action::Revert,
            Action::Revert => Action::Apply,
        }
    }
}

/// One planned step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step<'a> {
    pub migration: &'a Migration,
    pub action: Action,
}

/// Whether a script holds no statement (only comments, whitespace and semicolons), as the engine's
/// parser reads it. A blank down script counts as no down script.
pub type IsBlank = fn(&str) -> bool;

impl<'a> Step<'a> {
    /// The script this step runs; `None` only for a revert without a down script (refused by [`plan`]).
    pub fn script(&self, is_blank: IsBlank) -> Option<&'a Script> {
        match self.action {
            Action::Apply => Some(&self.migration.up),
            Action::Revert => self.migration.down.as_ref().filter(|d| !is_blank(&d.sql)),
        }
    }

    /// The step that undoes this one.
    pub fn undo(&self) -> Step<'a> {
        Step {
            migration: self.migration,
            action: self.action.opposite(),
        }
    }
}

/// What a run asks for.
#[derive(Clone, Debug)]
pub struct Request<'a> {
    pub direction: Direction,
    pub target_version: Option<Version>,
    pub on_failure: OnFailure,
    pub run_uid: &'a str,
    /// Newest applied version when this run first started (an earlier attempt recorded it), so a
    /// resumed `down` without `targetVersion` still reverts only the migration that was newest then.
    pub started_from: Option<Version>,
    /// The engine's test for a script without statements.
    pub is_blank: IsBlank,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan<'a> {
    /// Newest version applied before this run (not counting what an earlier attempt of it applied).
    pub from_version: Option<Version>,
    pub steps: Vec<Step<'a>>,
    /// Migrations an earlier attempt of this run applied (direction `up`), from the ledger.
    pub applied_before: Vec<MigrationRecord>,
}

/// Reasons to refuse a run before it changes anything. Each names the file or version concerned.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error(
        "{file} was changed after it was applied (ledger checksum {recorded}, file checksum {current}); restore the file as it was applied and put the change in a new migration"
    )]
    ChecksumMismatch {
        file: String,
        recorded: String,
        current: String,
    },
    #[error(
        "migration {version} ({name}) ran outside a transaction and did not finish, so it may be partly applied; check the database, complete or undo it by hand, then run `update lifeboat_schema_migrations set complete = true where version = '{version}'` (completed) or `delete from lifeboat_schema_migrations where version = '{version}'` (undone)"
    )]
    PartiallyApplied { version: Version, name: String },
    #[error(
        "{file} (version {version}) is pending but newer version {newest} is already applied; give it a version above {newest}"
    )]
    OutOfOrder {
        file: String,
        version: Version,
        newest: Version,
    },
    #[error("no down script for {}, which a {why} needs; add the .down.sql files (or a -- migrate:down section){}", files.join(", "), if *on_rollback { ", or set onFailure: halt" } else { "" })]
    MissingDown {
        files: Vec<String>,
        why: &'static str,
        on_rollback: bool,
    },
    #[error("targetVersion {version} is not a migration in the source")]
    UnknownTarget { version: Version },
    #[error(
        "applied migration {version} ({name}) has no file in the source, so it cannot be reverted"
    )]
    MissingFile { version: Version, name: String },
}

impl PlanError {
    pub fn reason(&self) -> &'static str {
        match self {
            PlanError::ChecksumMismatch { .. } => "ChecksumMismatch",
            PlanError::PartiallyApplied { .. } => "PartiallyApplied",
            PlanError::OutOfOrder { .. } => "OutOfOrderMigration",
            PlanError::MissingDown { .. } => "MissingDownMigration",
            PlanError::UnknownTarget { .. } => "TargetVersionNotFound",
            PlanError::MissingFile { .. } => "MigrationFileMissing",
        }
    }
}

/// Ledger rows as status records.
pub fn records<'r>(rows: impl IntoIterator<Item = &'r LedgerRow>) -> Vec<MigrationRecord> {
    rows.into_iter()
        .map(|r| MigrationRecord {
            version: r.version.clone(),
            name: r.name.clone(),
            checksum: r.checksum.clone(),
            duration_ms: r.execution_ms,
        })
        .collect()
}

/// Checks the ledger against the files (incomplete rows, checksum drift). Shared by plans and recovery.
pub fn check_ledger(migrations: &[Migration], ledger: &[LedgerRow]) -> Result<(), PlanError> {
    let by_version: BTreeMap<&Version, &Migration> =
        migrations.iter().map(|m| (&m.version, m)).collect();
    if let Some(row) = ledger.iter().find(|r| !r.complete) {
        return Err(PlanError::PartiallyApplied {
            version: row.version.clone(),
            name: row.name.clone(),
        });
    }
    for row in ledger {
        if let Some(m) = by_version.get(&row.version)
            && m.checksum != row.checksum
        {
            return Err(PlanError::ChecksumMismatch {
                file: m.up.file.clone(),
                recorded: row.checksum.clone(),
                current: m.checksum.clone(),
            });
        }
    }
    Ok(())
}

pub fn plan<'a>(
    migrations: &'a [Migration],
    ledger: &[LedgerRow],
    req: Request<'_>,
) -> Result<Plan<'a>, PlanError> {
    check_ledger(migrations, ledger)?;
    let by_version: BTreeMap<&Version, &Migration> =
        migrations.iter().map(|m| (&m.version, m)).collect();
    let from_version = match req.direction {
        Direction::Up => ledger
            .iter()
            .filter(|r| r.run_uid != req.run_uid)
            .map(|r| r.version.clone())
            .max(),
        Direction::Down => req
            .started_from
            .clone()
            .or_else(|| ledger.iter().map(|r| r.version.clone()).max()),
    };
    let applied_before = records(ledger.iter().filter(|r| r.run_uid == req.run_uid));
    let steps = match req.direction {
        Direction::Up => up_steps(migrations, &by_version, ledger, req.target_version.as_ref())?,
        Direction::Down => down_steps(
            &by_version,
            ledger,
            req.target_version.as_ref(),
            req.started_from.as_ref(),
        )?,
    };
    // Every revert needs a down script; with onFailure rollback, every applied step but the last may
    // have to be undone (the last one's own transaction undoes it), so it needs its opposite script.
    let mut missing: Vec<String> = steps
        .iter()
        .filter(|s| s.script(req.is_blank).is_none())
        .map(|s| s.migration.up.file.clone())
        .collect();
    let on_rollback = missing.is_empty() && req.on_failure == OnFailure::Rollback;
    if on_rollback {
        missing = steps
            .iter()
            .take(steps.len().saturating_sub(1))
            .filter(|s| s.undo().script(req.is_blank).is_none())
            .map(|s| s.migration.up.file.clone())
            .collect();
    }
    if !missing.is_empty() {
        let why = if on_rollback {
            "rollback on failure (onFailure: rollback)"
        } else {
            "down migration"
        };
        return Err(PlanError::MissingDown {
            files: missing,
            on_rollback,
            why,
        });
    }
    Ok(Plan {
        from_version,
        steps,
        applied_before,
    })
}

/// Up: every migration not in the ledger (up to the target), refusing one older than the newest applied.
fn up_steps<'a>(
    migrations: &'a [Migration],
    by_version: &BTreeMap<&Version, &'a Migration>,
    ledger: &[LedgerRow],
    target_version: Option<&Version>,
) -> Result<Vec<Step<'a>>, PlanError> {
    if let Some(t) = target_version
        && !by_version.contains_key(t)
    {
        return Err(PlanError::UnknownTarget { version: t.clone() });
    }
    let newest = ledger.iter().map(|r| &r.version).max();
    let applied: std::collections::HashSet<&Version> = ledger.iter().map(|r| &r.version).collect();
    let pending: Vec<&Migration> = migrations
        .iter()
        .filter(|m| !applied.contains(&m.version))
        .filter(|m| target_version.is_none_or(|t| m.version <= *t))
        .collect();
    if let (Some(first), Some(newest)) = (pending.first(), newest)
        && first.version < *newest
    {
        return Err(PlanError::OutOfOrder {
            file: first.up.file.clone(),
            version: first.version.clone(),
            newest: newest.clone(),
        });
    }
    Ok(pending
        .into_iter()
        .map(|migration| Step {
            migration,
            action: Action::Apply,
        })
        .collect())
}

/// Down: the applied migrations newer than the target, newest first. Without a target, the one that
/// was newest when the run started.
fn down_steps<'a>(
    by_version: &BTreeMap<&Version, &'a Migration>,
    ledger: &[LedgerRow],
    target_version: Option<&Version>,
    started_from: Option<&Version>,
) -> Result<Vec<Step<'a>>, PlanError> {
    let mut applied: Vec<&LedgerRow> = ledger.iter().collect();
    applied.sort_by(|a, b| b.version.cmp(&a.version));
    // `None`: nothing older stays (the newest migration is also the oldest, e.g. version 0).
    let target = target_version.or_else(|| {
        let newest = started_from.or(applied.first().map(|r| &r.version));
        applied
            .iter()
            .map(|r| &r.version)
            .find(|v| newest.is_some_and(|n| *v < n))
    });
    applied
        .into_iter()
        .filter(|r| target.is_none_or(|t| r.version > *t))
        .map(|row| {
            let migration = by_version
                .get(&row.version)
                .ok_or_else(|| PlanError::MissingFile {
                    version: row.version.clone(),
                    name: row.name.clone(),
                })?;
            Ok(Step {
                migration,
                action: Action::Revert,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests;
