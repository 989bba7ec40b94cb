//! Migration files: names, the two formats, ordering, checksums, and errors that name the file.
//!
//! Formats read:
//! - `<version>_<name>.up.sql` with an optional `<version>_<name>.down.sql` (sqlx, golang-migrate);
//! - `<version>_<name>.sql` with dbmate's `-- migrate:up` / `-- migrate:down` sections;
//! - `<version>_<name>.sql` without sections: an up script with no down script (sqlx's simple style).
//!
//! A line `-- lifeboat:no-transaction` runs a script outside a transaction (dbmate's
//! `-- migrate:up transaction:false` means the same). In a dbmate file the marker applies to the section
//! it is in, or to both when it stands before the first section.

use std::collections::BTreeMap;

use super::statements;
use crate::engines::postgres::sql::sha256_hex;

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

impl Script {
    /// Whether the script has no statement at all (only comments and whitespace).
    pub fn is_empty(&self) -> bool {
        statements::is_blank(&self.sql)
    }
}

/// One migration: a version, a name, an up script and perhaps a down script.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Migration {
    pub version: i64,
    pub name: String,
    pub up: Script,
    pub down: Option<Script>,
    /// SHA-256 (hex) of the up script, as the ledger records it.
    pub checksum: String,
}

/// A problem with the source files; each names the file(s) concerned.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    #[error(
        "{file}: the name is not <version>_<name>.up.sql, <version>_<name>.down.sql or <version>_<name>.sql (version: digits, at least 1)"
    )]
    UnparseableName { file: String },
    #[error("{file}: the content is not UTF-8 text")]
    NotUtf8 { file: String },
    #[error("{file} appears in ConfigMaps {first} and {second}; a file may appear in only one")]
    DuplicateFile {
        file: String,
        first: String,
        second: String,
    },
    #[error("version {version} is used by more than one migration: {}", files.join(", "))]
    DuplicateVersion { version: i64, files: Vec<String> },
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

/// Splits a file name into version, name and kind; `None` when it follows no known pattern.
fn parse_name(file: &str) -> Option<(i64, &str, Kind)> {
    let (stem, kind) = if let Some(s) = file.strip_suffix(".up.sql") {
        (s, Kind::Up)
    } else if let Some(s) = file.strip_suffix(".down.sql") {
        (s, Kind::Down)
    } else {
        (file.strip_suffix(".sql")?, Kind::Single)
    };
    let (version, name) = stem.split_once('_')?;
    if version.is_empty() || !version.bytes().all(|b| b.is_ascii_digit()) || name.is_empty() {
        return None;
    }
    let version: i64 = version.parse().ok().filter(|v| *v > 0)?;
    Some((version, name, kind))
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
    let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
    // version → (up parts, down parts): (file, name, script)
    type Part = (String, String, Script);
    let mut ups: BTreeMap<i64, Vec<(Part, Option<Script>)>> = BTreeMap::new();
    let mut downs: BTreeMap<i64, Vec<Part>> = BTreeMap::new();
    for f in files.iter().filter(|f| f.name.ends_with(".sql")) {
        if let Some(first) = seen.insert(&f.name, &f.config_map) {
            errors.push(SourceError::DuplicateFile {
                file: f.name.clone(),
                first: first.into(),
                second: f.config_map.clone(),
            });
            continue;
        }
        let Some((version, name, kind)) = parse_name(&f.name) else {
            errors.push(SourceError::UnparseableName {
                file: f.name.clone(),
            });
            continue;
        };
        let Ok(text) = std::str::from_utf8(&f.content) else {
            errors.push(SourceError::NotUtf8 {
                file: f.name.clone(),
            });
            continue;
        };
        let plain = |sql: &str| Script {
            file: f.name.clone(),
            sql: sql.to_string(),
            no_transaction: has_marker(sql),
            line_offset: 0,
        };
        let part = |script| (f.name.clone(), name.to_string(), script);
        match kind {
            Kind::Up => ups
                .entry(version)
                .or_default()
                .push((part(plain(text)), None)),
            Kind::Down => downs.entry(version).or_default().push(part(plain(text))),
            Kind::Single => match dbmate_sections(&f.name, text) {
                Err(e) => errors.push(e),
                Ok(Some((up, down))) => ups.entry(version).or_default().push((part(up), down)),
                Ok(None) => ups
                    .entry(version)
                    .or_default()
                    .push((part(plain(text)), None)),
            },
        }
    }
    let mut migrations = Vec::new();
    for (version, mut candidates) in ups {
        let mut down_parts = downs.remove(&version).unwrap_or_default();
        if candidates.len() > 1 || down_parts.len() > 1 {
            let mut files: Vec<String> = candidates.iter().map(|c| c.0.0.clone()).collect();
            files.extend(down_parts.iter().map(|d| d.0.clone()));
            errors.push(SourceError::DuplicateVersion { version, files });
            continue;
        }
        let ((up_file, name, up), dbmate_down) = candidates.remove(0);
        if let Some((down_file, down_name, _)) = down_parts.first()
            && (*down_name != name || dbmate_down.is_some())
        {
            errors.push(SourceError::DuplicateVersion {
                version,
                files: vec![up_file.clone(), down_file.clone()],
            });
            continue;
        }
        let down = dbmate_down.or_else(|| down_parts.pop().map(|d| d.2));
        migrations.push(Migration {
            version,
            name,
            checksum: sha256_hex(up.sql.as_bytes()),
            up,
            down,
        });
    }
    for (version, parts) in downs {
        for (file, name, _) in parts {
            errors.push(SourceError::DownWithoutUp {
                file,
                expected: format!("{version}_{name}.up.sql"),
            });
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn f(name: &str, content: &str) -> RawFile {
        RawFile::new("cm", name, content)
    }

    #[test]
    fn names() {
        assert_eq!(
            parse_name("0001_create_users.up.sql"),
            Some((1, "create_users", Kind::Up))
        );
        assert_eq!(
            parse_name("20250101120000_a_b.down.sql"),
            Some((20_250_101_120_000, "a_b", Kind::Down))
        );
        assert_eq!(parse_name("3_x.sql"), Some((3, "x", Kind::Single)));
        for bad in [
            "create.up.sql",
            "1.up.sql",
            "_x.sql",
            "0_zero.sql",
            "v1_x.sql",
            "1_.up.sql",
            "99999999999999999999_big.sql",
        ] {
            assert_eq!(parse_name(bad), None, "{bad}");
        }
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
            m.iter().map(|m| m.version).collect::<Vec<_>>(),
            vec![9, 10],
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
            "create_users.sql: the name is not",
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
            SourceError::DuplicateVersion { version: 5, .. }
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
