//! Migration files: names, the two formats, ordering, checksums, and errors that name the file.
//!
//! Formats read:
//! - `<version>_<name>.up.sql` with an optional `<version>_<name>.down.sql` (sqlx, golang-migrate);
//! - `<version>_<name>.sql` with dbmate's `-- migrate:up` / `-- migrate:down` sections;
//! - `<version>_<name>.sql` without sections: an up script with no down script (sqlx's simple style);
//! - Flyway's `V<version>__<name>.sql` with an optional `U<version>__<name>.sql` undo (paired by version),
//!   dotted versions included (`V1.2.3__x.sql`, `V1_1__x.sql`), ordered as Flyway orders them.
//!
//! Versions are digits, 0 included (diesel's `00000000000000_diesel_initial_setup`); Flyway's may have
//! parts (see [`Version`]). A name that
//! follows none of these gets a message saying what exactly is wrong with it.
//!
//! A line `-- lifeboat:no-transaction` runs a script outside a transaction (dbmate's
//! `-- migrate:up transaction:false` means the same). In a dbmate file the marker applies to the section
//! it is in, or to both when it stands before the first section.

use std::collections::BTreeMap;

use crate::domain::digest::sha256_hex;
use crate::domain::version::{Version, VersionError};

/// The marker line that runs a script outside a transaction.
pub const NO_TRANSACTION_MARKER: &str = "-- lifeboat:no-transaction";
const DBMATE_UP: &str = "-- migrate:up";
const DBMATE_DOWN: &str = "-- migrate:down";

/// One key of a source ConfigMap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawFile {
    /// The ConfigMap the file came from.
    pub config_map: String,
    /// The key: the file name.
    pub name: String,
    pub content: Vec<u8>,
}

impl RawFile {
    pub fn new(config_map: &str, name: &str, content: impl Into<Vec<u8>>) -> Self {
        Self {
            config_map: config_map.into(),
            name: name.into(),
            content: content.into(),
        }
    }
}

/// One script (up or down) of a migration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Script {
    /// File name, for messages and status.
    pub file: String,
    pub sql: String,
    /// Runs statement by statement outside a transaction.
    pub no_transaction: bool,
    /// Lines of the file before the script starts (a dbmate section starts below its header).
    pub line_offset: usize,
}

/// One migration: a version, a name, an up script and perhaps a down script.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Migration {
    pub version: Version,
    pub name: String,
    pub up: Script,
    pub down: Option<Script>,
    /// SHA-256 (hex) of the up script, as the ledger records it.
    pub checksum: String,
}

/// A problem with the source files; each names the file(s) concerned.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    #[error("{file}: {why}")]
    UnparseableName { file: String, why: String },
    #[error("{file}: the content is not UTF-8 text")]
    NotUtf8 { file: String },
    #[error("{file} appears in ConfigMaps {first} and {second}; a file may appear in only one")]
    DuplicateFile {
        file: String,
        first: String,
        second: String,
    },
    #[error("version {version} is used by more than one migration: {}", files.join(", "))]
    DuplicateVersion {
        version: Version,
        files: Vec<String>,
    },
    #[error("{file}: a down script without its up script {expected}")]
    DownWithoutUp { file: String, expected: String },
    #[error("{file}: {detail}")]
    Sections { file: String, detail: String },
    #[error("no migration files (keys ending in .sql) in ConfigMaps {}", config_maps.join(", "))]
    Empty { config_maps: Vec<String> },
}

/// Every problem found, so a person fixes them in one go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceErrors(pub Vec<SourceError>);

impl std::fmt::Display for SourceErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&parts.join("; "))
    }
}

impl std::error::Error for SourceErrors {}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Up,
    Down,
    Single,
}

/// What a file name says: version, name, kind, and whether it is Flyway's `V…__`/`U…__` form (whose up
/// and undo files pair by version alone; their descriptions may differ).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Name<'a> {
    version: Version,
    name: &'a str,
    kind: Kind,
    flyway: bool,
}

const EXPECTED_NAMES: &str = "<version>_<name>.up.sql, <version>_<name>.down.sql, <version>_<name>.sql, V<version>__<name>.sql or U<version>__<name>.sql";

/// Splits a file name into version, name and kind; the error says exactly what is wrong with it.
fn parse_name(file: &str) -> Result<Name<'_>, String> {
    let Some(base) = file.strip_suffix(".sql") else {
        return Err(format!("the name does not end in .sql ({EXPECTED_NAMES})"));
    };
    if let Some(flyway) = flyway_name(base) {
        return flyway;
    }
    let (stem, kind) = if let Some(s) = base.strip_suffix(".up") {
        (s, Kind::Up)
    } else if let Some(s) = base.strip_suffix(".down") {
        (s, Kind::Down)
    } else {
        (base, Kind::Single)
    };
    let Some((version, name)) = stem.split_once('_') else {
        return Err(format!(
            "no `_` between a version and a name (expected {EXPECTED_NAMES})"
        ));
    };
    let version = parse_version(version, "_")?;
    if name.is_empty() {
        return Err("nothing follows the version's `_`: the migration needs a name".into());
    }
    Ok(Name {
        version,
        name,
        kind,
        flyway: false,
    })
}

/// Flyway's `V<version>__<description>` (versioned) and `U<version>__<description>` (undo);
/// `None` when the name is not in Flyway's form at all.
fn flyway_name(base: &str) -> Option<Result<Name<'_>, String>> {
    let kind = match base.as_bytes().first()? {
        b'V' => Kind::Up,
        b'U' => Kind::Down,
        b'R' if base.starts_with("R__") => {
            return Some(Err(
                "Flyway repeatable migrations (R__) are not supported: give it a version (V<version>__<name>.sql)"
                    .into(),
            ));
        }
        _ => return None,
    };
    let (version, name) = base[1..].split_once("__")?;
    if version.is_empty() || !version.bytes().next().is_some_and(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((|| {
        let version = Version::parse_dotted(version).map_err(|e| version_error(e, "__"))?;
        if name.is_empty() {
            return Err("nothing follows the version's `__`: the migration needs a name".into());
        }
        Ok(Name {
            version,
            name,
            kind,
            flyway: true,
        })
    })())
}

fn parse_version(version: &str, separator: &str) -> Result<Version, String> {
    Version::parse_whole(version).map_err(|e| version_error(e, separator))
}

/// A version's problem in a file name's terms.
fn version_error(e: VersionError, separator: &str) -> String {
    match e {
        VersionError::Empty => {
            format!("the name starts with `{separator}`: a version (digits) must come first")
        }
        VersionError::NotDigits { .. } | VersionError::EmptyPart { .. } => {
            format!("{e}, before the first `{separator}`")
        }
        other => other.to_string(),
    }
}

fn has_marker(sql: &str) -> bool {
    sql.lines()
        .any(|l| l.trim().eq_ignore_ascii_case(NO_TRANSACTION_MARKER))
}

/// Splits a dbmate file into its up and down scripts. `Ok(None)`: the file has no sections.
fn dbmate_sections(
    file: &str,
    text: &str,
) -> Result<Option<(Script, Option<Script>)>, SourceError> {
    let mut headers = Vec::new(); // (line index, byte offset of the next line, is_up, options)
    let mut offset = 0;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let trimmed = line.trim();
        let lower = trimmed.to_ascii_lowercase();
        for (prefix, up) in [(DBMATE_UP, true), (DBMATE_DOWN, false)] {
            if lower == prefix || lower.starts_with(&format!("{prefix} ")) {
                headers.push((
                    i,
                    offset + line.len(),
                    up,
                    lower[prefix.len()..].to_string(),
                ));
            }
        }
        offset += line.len();
    }
    if headers.is_empty() {
        return Ok(None);
    }
    let sections_err = |detail: &str| SourceError::Sections {
        file: file.into(),
        detail: detail.into(),
    };
    let ups = headers.iter().filter(|h| h.2).count();
    let downs = headers.len() - ups;
    if ups != 1 || downs > 1 {
        return Err(sections_err(
            "a dbmate file needs exactly one `-- migrate:up` line and at most one `-- migrate:down` line",
        ));
    }
    if !headers[0].2 {
        return Err(sections_err(
            "`-- migrate:down` comes before `-- migrate:up`",
        ));
    }
    let preamble_marker = has_marker(&text[..headers[0].1]);
    let section = |idx: usize| -> Script {
        let (line, start, _, options) = &headers[idx];
        // The section ends where the next header line starts.
        let end = headers
            .get(idx + 1)
            .map_or(text.len(), |h| line_start(text, h.0));
        let sql = text[*start..end].to_string();
        Script {
            file: file.into(),
            no_transaction: preamble_marker
                || has_marker(&sql)
                || options.split_whitespace().any(|o| o == "transaction:false"),
            sql,
            line_offset: line + 1,
        }
    };
    let up = section(0);
    let down = (headers.len() == 2).then(|| section(1));
    Ok(Some((up, down)))
}

/// Byte offset where line `index` (0-based) starts.
fn line_start(text: &str, index: usize) -> usize {
    text.split_inclusive('\n').take(index).map(str::len).sum()
}

/// Parses every `.sql` key of the source into migrations ordered by version. Keys not ending in `.sql`
/// are ignored (a ConfigMap may carry a README). Returns every problem found, not just the first.
pub fn parse(files: &[RawFile]) -> Result<Vec<Migration>, SourceErrors> {
    let mut errors = Vec::new();
    let Sorted { ups, mut downs } = sort(files, &mut errors);
    let mut migrations = Vec::new();
    for (version, candidates) in ups {
        let down_parts = downs.remove(&version).unwrap_or_default();
        match pair(version, candidates, down_parts) {
            Ok(migration) => migrations.push(migration),
            Err(e) => errors.push(e),
        }
    }
    errors.extend(downs_without_ups(downs));
    if migrations.is_empty() && errors.is_empty() {
        let mut config_maps: Vec<String> = files.iter().map(|f| f.config_map.clone()).collect();
        config_maps.dedup();
        errors.push(SourceError::Empty { config_maps });
    }
    if errors.is_empty() {
        Ok(migrations)
    } else {
        Err(SourceErrors(errors))
    }
}

/// One file's script with what its name says: (file, name, script, Flyway form).
type Part = (String, String, Script, bool);

/// The source's scripts by version: up parts (each with the down section of its own file, dbmate's)
/// and down parts.
#[derive(Default)]
struct Sorted {
    ups: BTreeMap<Version, Vec<(Part, Option<Script>)>>,
    downs: BTreeMap<Version, Vec<Part>>,
}

/// Sorts the `.sql` files by version and kind; a file that cannot be read is an error in `errors`.
fn sort(files: &[RawFile], errors: &mut Vec<SourceError>) -> Sorted {
    let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
    let mut sorted = Sorted::default();
    for f in files.iter().filter(|f| f.name.ends_with(".sql")) {
        if let Err(e) = sorted.add(f, &mut seen) {
            errors.push(e);
        }
    }
    sorted
}

impl Sorted {
    /// Adds one file where its name says; `seen` holds the files added so far, with their ConfigMaps.
    fn add<'f>(
        &mut self,
        f: &'f RawFile,
        seen: &mut BTreeMap<&'f str, &'f str>,
    ) -> Result<(), SourceError> {
        if let Some(first) = seen.insert(&f.name, &f.config_map) {
            return Err(SourceError::DuplicateFile {
                file: f.name.clone(),
                first: first.into(),
                second: f.config_map.clone(),
            });
        }
        let Name {
            version,
            name,
            kind,
            flyway,
        } = parse_name(&f.name).map_err(|why| SourceError::UnparseableName {
            file: f.name.clone(),
            why,
        })?;
        let text = std::str::from_utf8(&f.content).map_err(|_| SourceError::NotUtf8 {
            file: f.name.clone(),
        })?;
        let plain = |sql: &str| Script {
            file: f.name.clone(),
            sql: sql.to_string(),
            no_transaction: has_marker(sql),
            line_offset: 0,
        };
        let part = |script| (f.name.clone(), name.to_string(), script, flyway);
        let (up, down) = match kind {
            Kind::Up => (plain(text), None),
            Kind::Down => {
                self.downs
                    .entry(version)
                    .or_default()
                    .push(part(plain(text)));
                return Ok(());
            }
            Kind::Single => dbmate_sections(&f.name, text)?.unwrap_or_else(|| (plain(text), None)),
        };
        self.ups.entry(version).or_default().push((part(up), down));
        Ok(())
    }
}

/// The migration of `version` from its up and down parts. More than one of either, or a down file that
/// does not belong with the up file, is a version used twice.
fn pair(
    version: Version,
    mut candidates: Vec<(Part, Option<Script>)>,
    mut down_parts: Vec<Part>,
) -> Result<Migration, SourceError> {
    if candidates.len() > 1 || down_parts.len() > 1 {
        let mut files: Vec<String> = candidates.iter().map(|c| c.0.0.clone()).collect();
        files.extend(down_parts.iter().map(|d| d.0.clone()));
        return Err(SourceError::DuplicateVersion { version, files });
    }
    let ((up_file, name, up, up_flyway), dbmate_down) = candidates.remove(0);
    // Flyway pairs an undo with its migration by version; the other tools by version and name.
    if let Some((down_file, down_name, _, down_flyway)) = down_parts.first()
        && ((*down_name != name && !(up_flyway && *down_flyway))
            || up_flyway != *down_flyway
            || dbmate_down.is_some())
    {
        return Err(SourceError::DuplicateVersion {
            version,
            files: vec![up_file, down_file.clone()],
        });
    }
    let down = dbmate_down.or_else(|| down_parts.pop().map(|d| d.2));
    Ok(Migration {
        version,
        name,
        checksum: sha256_hex(up.sql.as_bytes()),
        up,
        down,
    })
}

/// Down files left without an up file once every version is paired.
fn downs_without_ups(downs: BTreeMap<Version, Vec<Part>>) -> impl Iterator<Item = SourceError> {
    downs.into_iter().flat_map(|(version, parts)| {
        parts.into_iter().map(move |(file, name, _, flyway)| {
            let expected = if flyway {
                format!("V{version}__<name>.sql")
            } else {
                format!("{version}_{name}.up.sql")
            };
            SourceError::DownWithoutUp { file, expected }
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(name: &str, content: &str) -> RawFile {
        RawFile::new("cm", name, content)
    }

    fn name(file: &str) -> Option<(String, &str, Kind)> {
        parse_name(file)
            .ok()
            .map(|n| (n.version.to_string(), n.name, n.kind))
    }

    #[test]
    fn names_of_sqlx_golang_migrate_dbmate_and_diesel() {
        assert_eq!(
            name("0001_create_users.up.sql"),
            Some(("1".into(), "create_users", Kind::Up))
        );
        assert_eq!(
            name("20250101120000_a_b.down.sql"),
            Some(("20250101120000".into(), "a_b", Kind::Down))
        );
        assert_eq!(name("3_x.sql"), Some(("3".into(), "x", Kind::Single)));
        assert_eq!(
            name("00000000000000_diesel_initial_setup.up.sql"),
            Some(("0".into(), "diesel_initial_setup", Kind::Up)),
            "version 0 is diesel's convention"
        );
    }

    #[test]
    fn names_of_flyway() {
        assert_eq!(
            name("V2__add_users.sql"),
            Some(("2".into(), "add_users", Kind::Up))
        );
        assert_eq!(
            name("U2__drop_users.sql"),
            Some(("2".into(), "drop_users", Kind::Down))
        );
        assert_eq!(
            name("V1.2.3__dotted.sql"),
            Some(("1.2.3".into(), "dotted", Kind::Up))
        );
        assert_eq!(
            name("V1_1__underscored.sql"),
            Some(("1.1".into(), "underscored", Kind::Up))
        );
        assert_eq!(
            name("U2024.01.15.1__undo.sql"),
            Some(("2024.1.15.1".into(), "undo", Kind::Down))
        );
        assert_eq!(name("Vacation_x.sql"), None);
    }

    #[test]
    fn names_that_follow_no_format_say_what_is_wrong() {
        for (bad, why) in [
            ("create.up.sql", "no `_` between a version and a name"),
            ("1.up.sql", "no `_` between a version and a name"),
            (
                "_x.sql",
                "the name starts with `_`: a version (digits) must come first",
            ),
            (
                "v1_x.sql",
                "the version \"v1\" holds 'v'; a version is digits only",
            ),
            ("1_.up.sql", "nothing follows the version's `_`"),
            (
                "99999999999999999999_big.sql",
                "is larger than 9223372036854775807",
            ),
            (
                "V1..2__x.sql",
                "the version \"1..2\" has an empty part; parts are digits separated by one `.` or `_`, before the first `__`",
            ),
            (
                "1.2_x.up.sql",
                "the version \"1.2\" holds '.'; a version is digits only, before the first `_`",
            ),
            ("V1__.sql", "nothing follows the version's `__`"),
            (
                "R__views.sql",
                "Flyway repeatable migrations (R__) are not supported",
            ),
        ] {
            let err = parse_name(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn flyway_pairs_by_version() {
        let m = parse(&[
            f("V1__create_users.sql", "create table users ();"),
            f("U1__undo_users.sql", "drop table users;"),
            f("V10__ten.sql", "select 10;"),
            f("V2__two.sql", "select 2;"),
        ])
        .unwrap();
        assert_eq!(
            m.iter().map(|m| m.version.to_string()).collect::<Vec<_>>(),
            ["1", "2", "10"]
        );
        assert_eq!(m[0].down.as_ref().unwrap().file, "U1__undo_users.sql");
        let err = parse(&[f("U3__x.sql", "select 1;")]).unwrap_err();
        assert!(
            err.to_string()
                .contains("U3__x.sql: a down script without its up script V3__<name>.sql"),
            "{err}"
        );
    }

    #[test]
    fn dotted_flyway_versions_order_as_flyway_orders_them() {
        let m = parse(&[
            f("V1.10__ten.sql", "select 110;"),
            f("V1.9__nine.sql", "select 19;"),
            f("U1.9__undo_nine.sql", "select -19;"),
            f("V1__one.sql", "select 1;"),
            f("V1.0.1__patch.sql", "select 101;"),
            f("V2__two.sql", "select 2;"),
        ])
        .unwrap();
        assert_eq!(
            m.iter().map(|m| m.version.to_string()).collect::<Vec<_>>(),
            ["1", "1.0.1", "1.9", "1.10", "2"]
        );
        assert_eq!(m[2].down.as_ref().unwrap().file, "U1.9__undo_nine.sql");
        // 1 and 1.0 are one version to Flyway.
        let err = parse(&[f("V1__a.sql", "select 1;"), f("V1.0__b.sql", "select 1;")]).unwrap_err();
        assert!(
            err.to_string()
                .contains("version 1 is used by more than one migration: V1__a.sql, V1.0__b.sql"),
            "{err}"
        );
    }

    #[test]
    fn numeric_order_and_pairs() {
        let m = parse(&[
            f("10_ten.up.sql", "create table ten();"),
            f("9_nine.up.sql", "create table nine();"),
            f("9_nine.down.sql", "drop table nine;"),
            f("README.md", "ignored"),
        ])
        .unwrap();
        assert_eq!(
            m.iter().map(|m| m.version.to_string()).collect::<Vec<_>>(),
            ["9", "10"],
            "numeric, not lexical"
        );
        assert_eq!(m[0].down.as_ref().unwrap().sql, "drop table nine;");
        assert!(m[1].down.is_none());
        assert_eq!(m[0].checksum, sha256_hex(b"create table nine();"));
    }

    #[test]
    fn dbmate_sections_and_markers() {
        let text = "-- a comment\n-- migrate:up transaction:false\ncreate index concurrently i on t(a);\n\n-- migrate:down\ndrop index i;\n";
        let m = parse(&[f("20240101_idx.sql", text)]).unwrap();
        let up = &m[0].up;
        assert_eq!(up.sql, "create index concurrently i on t(a);\n\n");
        assert!(up.no_transaction);
        assert_eq!(up.line_offset, 2);
        let down = m[0].down.as_ref().unwrap();
        assert_eq!(down.sql, "drop index i;\n");
        assert!(!down.no_transaction);
        assert_eq!(down.line_offset, 5);
        assert_eq!(m[0].checksum, sha256_hex(up.sql.as_bytes()));

        let marked = parse(&[f(
            "1_a.up.sql",
            "-- lifeboat:no-transaction\ncreate index concurrently i on t(a);",
        )])
        .unwrap();
        assert!(marked.remove_first().up.no_transaction);
        let preamble = parse(&[f(
            "1_a.sql",
            "-- lifeboat:no-transaction\n-- migrate:up\nselect 1;\n-- migrate:down\nselect 2;\n",
        )])
        .unwrap();
        assert!(preamble[0].up.no_transaction && preamble[0].down.as_ref().unwrap().no_transaction);
        let plain = parse(&[f("1_a.sql", "create table a();")]).unwrap();
        assert!(plain[0].down.is_none() && !plain[0].up.no_transaction);
    }

    trait First {
        fn remove_first(self) -> Migration;
    }
    impl First for Vec<Migration> {
        fn remove_first(mut self) -> Migration {
            self.remove(0)
        }
    }

    #[test]
    fn errors_name_every_file() {
        let err = parse(&[
            f("1_a.up.sql", "select 1;"),
            f("1_b.up.sql", "select 1;"),
            f("2_c.down.sql", "select 1;"),
            f("create_users.sql", "select 1;"),
            f(
                "3_d.sql",
                "-- migrate:down\nselect 1;\n-- migrate:up\nselect 2;",
            ),
            RawFile::new("cm", "4_e.up.sql", vec![0xff, 0xfe]),
            RawFile::new("other", "1_a.up.sql", "select 1;"),
        ])
        .unwrap_err();
        let text = err.to_string();
        for needle in [
            "version 1 is used by more than one migration: 1_a.up.sql, 1_b.up.sql",
            "2_c.down.sql: a down script without its up script 2_c.up.sql",
            "create_users.sql: the version \"create\" holds 'c'; a version is digits only",
            "3_d.sql: `-- migrate:down` comes before `-- migrate:up`",
            "4_e.up.sql: the content is not UTF-8",
            "1_a.up.sql appears in ConfigMaps cm and other",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in {text}");
        }
        assert_eq!(err.0.len(), 6);
    }

    #[test]
    fn mixed_formats_for_one_version_conflict() {
        let err = parse(&[
            f(
                "5_x.sql",
                "-- migrate:up\nselect 1;\n-- migrate:down\nselect 2;",
            ),
            f("5_x.down.sql", "select 2;"),
        ])
        .unwrap_err();
        assert!(matches!(
            &err.0[0],
            SourceError::DuplicateVersion { version, .. } if version.as_whole() == Some(5)
        ));
        let err =
            parse(&[f("5_x.up.sql", "select 1;"), f("5_y.down.sql", "select 2;")]).unwrap_err();
        assert!(
            err.to_string().contains("5_x.up.sql, 5_y.down.sql"),
            "{err}"
        );
    }

    #[test]
    fn no_files_is_an_error() {
        let err = parse(&[RawFile::new("cm", "notes.txt", "x")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no migration files (keys ending in .sql) in ConfigMaps cm"
        );
    }
}
