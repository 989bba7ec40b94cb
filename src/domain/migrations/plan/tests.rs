use super::*;
use crate::domain::migrations::source::{RawFile, parse};

fn v(n: i64) -> Version {
    Version::whole(n).unwrap()
}

fn migrations(reversible: &[bool]) -> Vec<Migration> {
    let mut files = Vec::new();
    for (i, down) in reversible.iter().enumerate() {
        let v = i + 1;
        files.push(RawFile::new(
            "cm",
            &format!("{v}_m{v}.up.sql"),
            format!("create table t{v} ();"),
        ));
        if *down {
            files.push(RawFile::new(
                "cm",
                &format!("{v}_m{v}.down.sql"),
                format!("drop table t{v};"),
            ));
        }
    }
    parse(&files).unwrap()
}

fn row(m: &Migration, uid: &str) -> LedgerRow {
    LedgerRow {
        version: m.version.clone(),
        name: m.name.clone(),
        checksum: m.checksum.clone(),
        execution_ms: 3,
        run_uid: uid.into(),
        complete: true,
    }
}

fn req(direction: Direction, target: Option<Version>, on_failure: OnFailure) -> Request<'static> {
    Request {
        direction,
        target_version: target,
        on_failure,
        run_uid: "me",
        started_from: None,
        is_blank: blank,
    }
}

/// The engine's parser stands in: only whitespace is blank here.
fn blank(sql: &str) -> bool {
    sql.trim().is_empty()
}

fn versions(p: &Plan) -> Vec<(i64, Action)> {
    p.steps
        .iter()
        .map(|s| (s.migration.version.as_whole().unwrap(), s.action))
        .collect()
}

#[test]
fn up_applies_pending_to_target() {
    let m = migrations(&[true, true, true, true]);
    let ledger = vec![row(&m[0], "old")];
    let p = plan(
        &m,
        &ledger,
        req(Direction::Up, Some(v(3)), OnFailure::Rollback),
    )
    .unwrap();
    assert_eq!(versions(&p), vec![(2, Action::Apply), (3, Action::Apply)]);
    assert_eq!(p.from_version, Some(v(1)));
    let all = plan(&m, &ledger, req(Direction::Up, None, OnFailure::Rollback)).unwrap();
    assert_eq!(all.steps.len(), 3);
    assert_eq!(
        plan(&m, &ledger, req(Direction::Up, Some(v(9)), OnFailure::Halt)).unwrap_err(),
        PlanError::UnknownTarget { version: v(9) }
    );
}

#[test]
fn resumed_run_knows_what_it_applied() {
    let m = migrations(&[true, true, true]);
    let ledger = vec![row(&m[0], "old"), row(&m[1], "me")];
    let p = plan(&m, &ledger, req(Direction::Up, None, OnFailure::Rollback)).unwrap();
    assert_eq!(versions(&p), vec![(3, Action::Apply)]);
    assert_eq!(
        p.from_version,
        Some(v(1)),
        "what this run applied does not count"
    );
    assert_eq!(p.applied_before[0].version, v(2));
}

#[test]
fn drift_and_incomplete_rows_refuse() {
    let m = migrations(&[true, true]);
    let mut changed = row(&m[0], "old");
    changed.checksum = "abc".into();
    let e = plan(&m, &[changed], req(Direction::Up, None, OnFailure::Halt)).unwrap_err();
    assert_eq!(e.reason(), "ChecksumMismatch");
    assert!(e.to_string().starts_with("1_m1.up.sql was changed"), "{e}");
    let mut dirty = row(&m[0], "old");
    dirty.complete = false;
    let e = plan(&m, &[dirty], req(Direction::Up, None, OnFailure::Halt)).unwrap_err();
    assert_eq!(e.reason(), "PartiallyApplied");
    assert!(e.to_string().contains("where version = '1'"), "{e}");
}

#[test]
fn out_of_order_is_refused() {
    let m = migrations(&[true, true, true]);
    let e = plan(
        &m,
        &[row(&m[2], "old")],
        req(Direction::Up, None, OnFailure::Halt),
    )
    .unwrap_err();
    assert_eq!(
        e,
        PlanError::OutOfOrder {
            file: "1_m1.up.sql".into(),
            version: v(1),
            newest: v(3)
        }
    );
}

#[test]
fn rollback_needs_down_scripts_except_for_the_last_step() {
    let m = migrations(&[true, false, false]);
    let e = plan(&m, &[], req(Direction::Up, None, OnFailure::Rollback)).unwrap_err();
    assert_eq!(
        e,
        PlanError::MissingDown {
            files: vec!["2_m2.up.sql".into()],
            why: "rollback on failure (onFailure: rollback)",
            on_rollback: true
        }
    );
    assert!(e.to_string().contains("or set onFailure: halt"));
    assert!(plan(&m, &[], req(Direction::Up, None, OnFailure::Halt)).is_ok());
    assert!(plan(&m, &[], req(Direction::Up, Some(v(2)), OnFailure::Rollback)).is_ok());
}

#[test]
fn down_reverts_newest_first_to_target() {
    let m = migrations(&[true, true, true]);
    let ledger: Vec<LedgerRow> = m.iter().map(|m| row(m, "old")).collect();
    let p = plan(
        &m,
        &ledger,
        req(Direction::Down, Some(v(1)), OnFailure::Rollback),
    )
    .unwrap();
    assert_eq!(versions(&p), vec![(3, Action::Revert), (2, Action::Revert)]);
    let one = plan(&m, &ledger, req(Direction::Down, None, OnFailure::Rollback)).unwrap();
    assert_eq!(versions(&one), vec![(3, Action::Revert)]);
    // Resumed after reverting 3: 2 is newest now, but the run started at 3, so nothing is left.
    let resumed = Request {
        started_from: Some(v(3)),
        ..req(Direction::Down, None, OnFailure::Rollback)
    };
    let p = plan(&m, &ledger[..2], resumed).unwrap();
    assert!(p.steps.is_empty());
    assert_eq!(p.from_version, Some(v(3)));
    let all = plan(
        &m,
        &ledger,
        req(Direction::Down, Some(v(0)), OnFailure::Halt),
    )
    .unwrap();
    assert_eq!(all.steps.len(), 3);
}

#[test]
fn down_needs_the_files() {
    let m = migrations(&[true, false]);
    let ledger: Vec<LedgerRow> = m.iter().map(|m| row(m, "old")).collect();
    let e = plan(&m, &ledger, req(Direction::Down, None, OnFailure::Halt)).unwrap_err();
    assert_eq!(e.reason(), "MissingDownMigration");
    assert!(e.to_string().contains("2_m2.up.sql"), "{e}");
    let mut unknown = ledger.clone();
    unknown.push(LedgerRow {
        version: v(7),
        name: "gone".into(),
        ..ledger[0].clone()
    });
    let e = plan(&m, &unknown, req(Direction::Down, None, OnFailure::Halt)).unwrap_err();
    assert_eq!(
        e,
        PlanError::MissingFile {
            version: v(7),
            name: "gone".into()
        }
    );
}

#[test]
fn version_zero_applies_first_and_reverts_as_the_only_migration() {
    let m = parse(&[
        RawFile::new(
            "cm",
            "00000000000000_diesel_initial_setup.up.sql",
            "select 0;",
        ),
        RawFile::new(
            "cm",
            "00000000000000_diesel_initial_setup.down.sql",
            "select 0;",
        ),
        RawFile::new(
            "cm",
            "20200101000000_users.up.sql",
            "create table users ();",
        ),
        RawFile::new("cm", "20200101000000_users.down.sql", "drop table users;"),
    ])
    .unwrap();
    let up = plan(&m, &[], req(Direction::Up, None, OnFailure::Rollback)).unwrap();
    assert_eq!(
        versions(&up),
        vec![(0, Action::Apply), (20_200_101_000_000, Action::Apply)]
    );
    let both = vec![row(&m[0], "old"), row(&m[1], "old")];
    let down = plan(&m, &both, req(Direction::Down, None, OnFailure::Rollback)).unwrap();
    assert_eq!(versions(&down), vec![(20_200_101_000_000, Action::Revert)]);
    let only_zero = vec![row(&m[0], "old")];
    let down = plan(
        &m,
        &only_zero,
        req(Direction::Down, None, OnFailure::Rollback),
    )
    .unwrap();
    assert_eq!(
        versions(&down),
        vec![(0, Action::Revert)],
        "the newest is version 0 itself"
    );
    let to_zero = plan(
        &m,
        &both,
        req(Direction::Down, Some(v(0)), OnFailure::Rollback),
    )
    .unwrap();
    assert_eq!(
        versions(&to_zero),
        vec![(20_200_101_000_000, Action::Revert)],
        "version 0 stays"
    );
}

#[test]
fn a_blank_down_script_counts_as_none() {
    let m = migrations(&[true]);
    let ledger = vec![row(&m[0], "old")];
    let every_script_blank = Request {
        is_blank: |_| true,
        ..req(Direction::Down, None, OnFailure::Halt)
    };
    let e = plan(&m, &ledger, every_script_blank).unwrap_err();
    assert_eq!(e.reason(), "MissingDownMigration");
    assert!(plan(&m, &ledger, req(Direction::Down, None, OnFailure::Halt)).is_ok());
}
