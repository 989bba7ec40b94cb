//! Adopting a database another tool migrated: its ledger is imported into Lifeboat's instead of the
//! history being applied from zero. Read once, on a database whose Lifeboat ledger is empty, with the
//! migration lock held, and recorded just before the run's first change (a run refused by lint records
//! nothing); the other tool's table is left as it was.
//!
//! | tool | table | what it records |
//! |---|---|---|
//! | sqlx | `_sqlx_migrations` | one row per applied version, `success`, SHA-384 `checksum`, `execution_time` (ns) |
//! | golang-migrate | `schema_migrations (version bigint, dirty boolean)` | only the newest version: everything up to it is applied |
//! | dbmate | `schema_migrations (version varchar)` | one row per applied version |
//! | diesel | `__diesel_schema_migrations (version varchar, run_on)` | one row per applied version |
//! | Flyway | `flyway_schema_history` | one row per attempt: versioned, baseline, undo and delete rows, `success` |
//!
//! A row the other tool left failed (sqlx `success = false`, golang-migrate `dirty`, Flyway
//! `success = false`) stops the run with that tool's own words, before anything changes. Without any of
//! them, `baselineVersion` marks the source's migrations up to that version as applied (a database built
//! by hand).

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha384};
use sqlx::{PgConnection, Row as _};

pub use crate::domain::migrations::adopt::{AdoptFrom, Imported, Tool};
use crate::domain::migrations::{
    model::{LedgerRow, Version},
    source::Migration,
};
use crate::engines::postgres::PgError;

/// Why a database cannot be adopted; each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum AdoptError {
    #[error(
        "{tool} left a failed migration in {table}: \"{words}\"; nothing was changed. Fix the database as {tool} asks, then start a new run",
        tool = .tool.name(), table = .tool.table()
    )]
    Dirty { tool: Tool, words: String },
    #[error(
        "the database holds the ledgers of {}; set adoptFrom to the one that built this schema",
        .found.iter().map(|t| format!("{} ({})", t.name(), t.table())).collect::<Vec<_>>().join(" and ")
    )]
    Ambiguous { found: Vec<Tool> },
    #[error("adoptFrom: {} names table public.{}, which does not exist", .tool.name(), .tool.table())]
    NotFound { tool: Tool },
    #[error(
        "{table} records version {value:?}, which Lifeboat cannot read: {why}",
        table = .tool.table()
    )]
    BadVersion {
        tool: Tool,
        value: String,
        why: String,
    },
    #[error(
        "{file} is not the script sqlx applied as version {version} (its SHA-384 differs from _sqlx_migrations.checksum); restore the file as applied"
    )]
    ChecksumMismatch { file: String, version: Version },
    #[error(
        "baselineVersion is set, but the database holds {}'s ledger ({}); drop baselineVersion to import it, or set adoptFrom: none",
        .tool.name(), .tool.table()
    )]
    BaselineAndLedger { tool: Tool },
    #[error(transparent)]
    Pg(#[from] PgError),
}

impl AdoptError {
    pub fn reason(&self) -> &'static str {
        match self {
            AdoptError::Dirty { .. } => "ForeignMigrationFailed",
            AdoptError::Ambiguous { .. } | AdoptError::BaselineAndLedger { .. } => {
                "AmbiguousLedger"
            }
            AdoptError::NotFound { .. } => "LedgerNotFound",
            AdoptError::BadVersion { .. } => "UnreadableLedger",
            AdoptError::ChecksumMismatch { .. } => "ChecksumMismatch",
            AdoptError::Pg(e) => e.reason(),
        }
    }
}

/// What another tool's ledger says is applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// These versions, with the execution time the tool recorded (ms) and sqlx's checksum.
    Versions(BTreeMap<Version, Entry>),
    /// Every version up to and including this one (golang-migrate, a Flyway baseline), plus these.
    UpTo(Version, BTreeMap<Version, Entry>),
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub execution_ms: i64,
    /// sqlx's SHA-384 of the script it applied.
    pub sha384: Option<Vec<u8>>,
}

fn pg(context: &'static str) -> impl FnOnce(sqlx::Error) -> AdoptError {
    move |e| AdoptError::Pg(PgError::from_sqlx(context, e))
}

/// The other tools' ledgers present in schema `public`.
pub async fn detect(conn: &mut PgConnection) -> Result<Vec<Tool>, AdoptError> {
    let rows = sqlx::query(
        "select c.relname::text, pg_catalog.array_agg(a.attname::text) from pg_catalog.pg_class c
           join pg_catalog.pg_namespace n on n.oid = c.relnamespace
           join pg_catalog.pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
          where n.nspname = 'public' and c.relkind in ('r', 'p')
            and c.relname in ('_sqlx_migrations', 'schema_migrations', '__diesel_schema_migrations', 'flyway_schema_history')
          group by c.relname",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(pg("looking for other tools' ledgers"))?;
    let mut found = BTreeSet::new();
    for r in rows {
        let table: String = r.get(0);
        let columns: Vec<String> = r.get(1);
        let tool = match table.as_str() {
            "_sqlx_migrations" => Tool::Sqlx,
            "__diesel_schema_migrations" => Tool::Diesel,
            "flyway_schema_history" => Tool::Flyway,
            // golang-migrate's has a `dirty` column; dbmate's only `version`.
            _ if columns.iter().any(|c| c == "dirty") => Tool::GolangMigrate,
            _ => Tool::Dbmate,
        };
        found.insert(tool);
    }
    Ok(found.into_iter().collect())
}

/// A version as `tool` records it: a whole number, or for Flyway perhaps a dotted one (`1.2.3`).
fn version(tool: Tool, value: &str) -> Result<Version, AdoptError> {
    let v = value.trim();
    let parsed = if tool == Tool::Flyway {
        Version::parse_dotted(v)
    } else {
        Version::parse_whole(v)
    };
    parsed.map_err(|e| AdoptError::BadVersion {
        tool,
        value: value.to_string(),
        why: e.to_string(),
    })
}

/// A version `tool` records as an integer.
fn integer(tool: Tool, value: i64) -> Result<Version, AdoptError> {
    Version::whole(value).map_err(|e| AdoptError::BadVersion {
        tool,
        value: value.to_string(),
        why: e.to_string(),
    })
}

/// What a failed read of another tool's ledger says it was doing.
const READING: &str = "reading another tool's ledger";

/// Reads `tool`'s ledger.
pub async fn read(conn: &mut PgConnection, tool: Tool) -> Result<Applied, AdoptError> {
    match tool {
        Tool::Sqlx => read_sqlx(conn).await,
        Tool::GolangMigrate => read_golang_migrate(conn).await,
        Tool::Dbmate | Tool::Diesel => read_versions(conn, tool).await,
        Tool::Flyway => read_flyway(conn).await,
    }
}

/// sqlx's `_sqlx_migrations`: one row per migration, with its SHA-384 and time.
async fn read_sqlx(conn: &mut PgConnection) -> Result<Applied, AdoptError> {
    let tool = Tool::Sqlx;
    let rows = sqlx::query(
        "select version, description, success, checksum, execution_time from public._sqlx_migrations order by version",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(pg(READING))?;
    let mut versions = BTreeMap::new();
    for r in rows {
        let version: i64 = r.get(0);
        if !r.get::<bool, _>(2) {
            // sqlx's own message (MigrateError::Dirty).
            return Err(AdoptError::Dirty {
                tool,
                words: format!(
                    "migration {version} is partially applied; fix and remove row from `_sqlx_migrations` table"
                ),
            });
        }
        versions.insert(
            integer(tool, version)?,
            Entry {
                name: r.get(1),
                execution_ms: r.get::<i64, _>(4) / 1_000_000,
                sha384: Some(r.get(3)),
            },
        );
    }
    Ok(Applied::Versions(versions))
}

/// golang-migrate's `schema_migrations`: one row, the newest version applied.
async fn read_golang_migrate(conn: &mut PgConnection) -> Result<Applied, AdoptError> {
    let tool = Tool::GolangMigrate;
    let row = sqlx::query("select version, dirty from public.schema_migrations limit 1")
        .fetch_optional(&mut *conn)
        .await
        .map_err(pg(READING))?;
    let Some(row) = row else {
        return Ok(Applied::Versions(BTreeMap::new()));
    };
    let version: i64 = row.get(0);
    if row.get::<bool, _>(1) {
        // golang-migrate's own message (ErrDirty).
        return Err(AdoptError::Dirty {
            tool,
            words: format!("Dirty database version {version}. Fix and force version."),
        });
    }
    Ok(Applied::UpTo(integer(tool, version)?, BTreeMap::new()))
}

/// dbmate's `schema_migrations` or diesel's `__diesel_schema_migrations`: the versions applied.
async fn read_versions(conn: &mut PgConnection, tool: Tool) -> Result<Applied, AdoptError> {
    // The table name is one of two constants, never input.
    let sql = if tool == Tool::Dbmate {
        "select version::text from public.schema_migrations order by 1"
    } else {
        "select version::text from public.__diesel_schema_migrations order by 1"
    };
    let rows = sqlx::query(sql)
        .fetch_all(&mut *conn)
        .await
        .map_err(pg(READING))?;
    let mut versions = BTreeMap::new();
    for r in rows {
        let value: String = r.get(0);
        versions.insert(version(tool, &value)?, Entry::default());
    }
    Ok(Applied::Versions(versions))
}

/// Flyway's `flyway_schema_history`, in the order Flyway installed it: migrations, undos, deletes and
/// a baseline.
async fn read_flyway(conn: &mut PgConnection) -> Result<Applied, AdoptError> {
    let tool = Tool::Flyway;
    let rows = sqlx::query(
        "select version, description, type, success, execution_time from public.flyway_schema_history order by installed_rank",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(pg(READING))?;
    let mut versions = BTreeMap::new();
    let mut baseline = None;
    for r in rows {
        let version: Option<String> = r.get(0);
        let description: Option<String> = r.get(1);
        let kind: String = r.get(2);
        let success: bool = r.get(3);
        let Some(version) = version else {
            continue; // repeatable migrations and schema markers have no version
        };
        if !success {
            // Flyway's own words (validate).
            return Err(AdoptError::Dirty {
                tool,
                words: format!(
                    "Detected failed migration to version {version} ({})",
                    description.unwrap_or_default()
                ),
            });
        }
        let v = self::version(tool, &version)?;
        match kind.as_str() {
            "BASELINE" => baseline = Some(v),
            "UNDO_SQL" | "UNDO_JDBC" | "UNDO_SCRIPT" | "DELETE" => {
                versions.remove(&v);
            }
            _ => {
                versions.insert(
                    v,
                    Entry {
                        name: description.unwrap_or_default(),
                        execution_ms: r.get::<Option<i32>, _>(4).map_or(0, i64::from),
                        sha384: None,
                    },
                );
            }
        }
    }
    Ok(match baseline {
        Some(b) => Applied::UpTo(b, versions),
        None => Applied::Versions(versions),
    })
}

/// The Lifeboat ledger rows that record `applied` against the source `migrations` (pure). A version
/// with a file gets the file's name and checksum; one without (a pruned history) keeps the other tool's
/// name and an empty checksum, which no file is compared with.
pub fn rows(
    tool: Option<Tool>,
    applied: &Applied,
    migrations: &[Migration],
) -> Result<Vec<LedgerRow>, AdoptError> {
    let run_uid = match tool {
        Some(t) => format!("imported:{}", t.name()),
        None => "baseline".to_string(),
    };
    let (up_to, listed) = match applied {
        Applied::Versions(v) => (None, v),
        Applied::UpTo(n, v) => (Some(n), v),
    };
    let by_version: BTreeMap<&Version, &Migration> =
        migrations.iter().map(|m| (&m.version, m)).collect();
    let mut out: BTreeMap<Version, LedgerRow> = BTreeMap::new();
    if let Some(n) = up_to {
        for m in migrations.iter().filter(|m| m.version <= *n) {
            out.insert(m.version.clone(), row(m, &Entry::default(), &run_uid));
        }
    }
    for (version, entry) in listed {
        let new = match by_version.get(version) {
            Some(m) => {
                if let Some(sum) = &entry.sha384
                    && Sha384::digest(m.up.sql.as_bytes()).as_slice() != sum.as_slice()
                {
                    return Err(AdoptError::ChecksumMismatch {
                        file: m.up.file.clone(),
                        version: version.clone(),
                    });
                }
                row(m, entry, &run_uid)
            }
            None => LedgerRow {
                version: version.clone(),
                name: entry.name.clone(),
                checksum: String::new(),
                execution_ms: entry.execution_ms,
                run_uid: run_uid.clone(),
                complete: true,
            },
        };
        out.insert(version.clone(), new);
    }
    Ok(out.into_values().collect())
}

fn row(m: &Migration, entry: &Entry, run_uid: &str) -> LedgerRow {
    LedgerRow {
        version: m.version.clone(),
        name: m.name.clone(),
        checksum: m.checksum.clone(),
        execution_ms: entry.execution_ms,
        run_uid: run_uid.to_string(),
        complete: true,
    }
}

/// What to import into Lifeboat's empty ledger from another tool's ledger (or the baseline); `Ok(None)`:
/// nothing. Reads only: the runner records the rows (with [`super::ledger::insert_all`]) once lint and the
/// backup have passed, just before its first change.
pub async fn prepare(
    conn: &mut PgConnection,
    migrations: &[Migration],
    from: AdoptFrom,
    baseline: Option<&Version>,
) -> Result<Option<(Imported, Vec<LedgerRow>)>, AdoptError> {
    let tool = match from.tool() {
        Some(t) => {
            if !detect(conn).await?.contains(&t) {
                return Err(AdoptError::NotFound { tool: t });
            }
            Some(t)
        }
        None if from == AdoptFrom::None => None,
        None => {
            let found = detect(conn).await?;
            match found.as_slice() {
                [] => None,
                [one] => Some(*one),
                _ => return Err(AdoptError::Ambiguous { found }),
            }
        }
    };
    let applied = match (tool, baseline) {
        (Some(t), Some(_)) => return Err(AdoptError::BaselineAndLedger { tool: t }),
        (Some(t), None) => read(conn, t).await?,
        (None, Some(b)) => Applied::UpTo(b.clone(), BTreeMap::new()),
        (None, None) => return Ok(None),
    };
    let rows = rows(tool, &applied, migrations)?;
    if rows.is_empty() {
        return Ok(None);
    }
    let imported = Imported {
        tool,
        count: rows.len(),
        newest: rows.last().map(|r| r.version.clone()),
    };
    Ok(Some((imported, rows)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::migrations::source::{RawFile, parse};

    fn v(n: i64) -> Version {
        Version::whole(n).unwrap()
    }

    fn source() -> Vec<Migration> {
        parse(&[
            RawFile::new("cm", "1_a.up.sql", "create table a ();"),
            RawFile::new("cm", "2_b.up.sql", "create table b ();"),
            RawFile::new("cm", "3_c.up.sql", "create table c ();"),
        ])
        .unwrap()
    }

    #[test]
    fn up_to_marks_every_source_version_at_or_below() {
        let rows = rows(
            Some(Tool::GolangMigrate),
            &Applied::UpTo(v(2), BTreeMap::new()),
            &source(),
        )
        .unwrap();
        assert_eq!(
            rows.iter().map(|r| r.version.clone()).collect::<Vec<_>>(),
            vec![v(1), v(2)]
        );
        assert_eq!(rows[0].run_uid, "imported:golang-migrate");
        assert_eq!(rows[0].checksum, source()[0].checksum);
    }

    #[test]
    fn listed_versions_keep_pruned_ones_and_check_sqlx_checksums() {
        let m = source();
        let mut listed = BTreeMap::new();
        listed.insert(
            v(0),
            Entry {
                name: "pruned".into(),
                ..Default::default()
            },
        );
        listed.insert(
            v(1),
            Entry {
                name: "a".into(),
                execution_ms: 7,
                sha384: Some(Sha384::digest(b"create table a ();").to_vec()),
            },
        );
        let r = rows(Some(Tool::Sqlx), &Applied::Versions(listed.clone()), &m).unwrap();
        assert_eq!(
            r.iter().map(|r| r.version.clone()).collect::<Vec<_>>(),
            vec![v(0), v(1)]
        );
        assert_eq!((r[0].name.as_str(), r[0].checksum.as_str()), ("pruned", ""));
        assert_eq!(r[1].execution_ms, 7);
        listed.get_mut(&v(1)).unwrap().sha384 = Some(vec![0; 48]);
        let err = rows(Some(Tool::Sqlx), &Applied::Versions(listed), &m).unwrap_err();
        assert!(
            err.to_string()
                .contains("1_a.up.sql is not the script sqlx applied as version 1"),
            "{err}"
        );
    }

    #[test]
    fn errors_speak_the_tools_words() {
        let e = AdoptError::Dirty {
            tool: Tool::GolangMigrate,
            words: "Dirty database version 3. Fix and force version.".into(),
        };
        assert!(e.to_string().starts_with(
            "golang-migrate left a failed migration in schema_migrations: \"Dirty database version 3."
        ));
        let e = AdoptError::Ambiguous {
            found: vec![Tool::Sqlx, Tool::Flyway],
        };
        assert!(
            e.to_string()
                .contains("sqlx (_sqlx_migrations) and Flyway (flyway_schema_history)"),
            "{e}"
        );
        assert_eq!(version(Tool::Flyway, "1.2").unwrap().to_string(), "1.2");
        assert_eq!(
            version(Tool::Dbmate, "1.2").unwrap_err().to_string(),
            "schema_migrations records version \"1.2\", which Lifeboat cannot read: the version \"1.2\" holds '.'; a version is digits only"
        );
        assert_eq!(version(Tool::Diesel, "00000000000000").unwrap(), v(0));
        assert!(matches!(
            integer(Tool::Sqlx, -1),
            Err(AdoptError::BadVersion { .. })
        ));
    }
}
