//! The idempotent steps that give a DatabaseEnvironment its own role and database on a shared server,
//! and take them away again. Every step can be repeated after a crash at any point: it checks what
//! exists first, and it only ever alters or drops objects that carry this environment's marker.

use sqlx::{AssertSqlSafe, Connection, PgConnection, Row};

use super::{PgError, connect_admin, sql};
use crate::engines::ServerCredentials;
use crate::engines::Target;

/// Who owns a database or role: this environment (`Ours`), nobody yet (`Absent`), or someone else.
#[derive(Debug, PartialEq, Eq)]
pub enum Ownership {
    Absent,
    Ours { comment: Option<String> },
    Foreign,
}

async fn role_ownership(
    admin: &mut PgConnection,
    role: &str,
    uid: &str,
) -> Result<Ownership, PgError> {
    let row =
        sqlx::query("select pg_catalog.shobj_description(oid, 'pg_authid') from pg_catalog.pg_roles where rolname = $1")
            .bind(role)
            .fetch_optional(&mut *admin)
            .await
            .map_err(|e| PgError::from_sqlx("looking up the role", e))?;
    Ok(match row {
        None => Ownership::Absent,
        Some(row) => {
            let comment: Option<String> = row.get(0);
            if sql::is_ours(comment.as_deref(), uid) {
                Ownership::Ours { comment }
            } else {
                Ownership::Foreign
            }
        }
    })
}

/// A database is ours when it carries our marker, or when it has no comment yet but is owned by our role
/// (the operator stopped between `CREATE DATABASE` and `COMMENT ON DATABASE`).
async fn database_ownership(
    admin: &mut PgConnection,
    database: &str,
    role: &str,
    uid: &str,
) -> Result<Ownership, PgError> {
    let row = sqlx::query(
        "select pg_catalog.shobj_description(d.oid, 'pg_database'), pg_catalog.pg_get_userbyid(d.datdba) from pg_catalog.pg_database d where d.datname = $1",
    )
    .bind(database)
    .fetch_optional(&mut *admin)
    .await
    .map_err(|e| PgError::from_sqlx("looking up the database", e))?;
    let Some(row) = row else {
        return Ok(Ownership::Absent);
    };
    let comment: Option<String> = row.get(0);
    let owner: String = row.get(1);
    if sql::is_ours(comment.as_deref(), uid) {
        return Ok(Ownership::Ours { comment });
    }
    if comment.is_none()
        && owner == role
        && matches!(
            role_ownership(admin, role, uid).await?,
            Ownership::Ours { .. }
        )
    {
        return Ok(Ownership::Ours { comment: None });
    }
    Ok(Ownership::Foreign)
}

async fn exec(conn: &mut PgConnection, context: &str, statement: String) -> Result<(), PgError> {
    sqlx::raw_sql(AssertSqlSafe(statement))
        .execute(&mut *conn)
        .await
        .map(|_| ())
        .map_err(|e| PgError::from_sqlx(context, e))
}

/// The attributes every environment role has, stated on creation and restated on every reconcile: an
/// environment's role can log in and nothing more, whatever was done to it since.
fn role_attributes(target: &Target) -> String {
    format!(
        "login nosuperuser nocreatedb nocreaterole noreplication nobypassrls connection limit {}",
        target.connection_limit.unwrap_or(-1)
    )
}

/// The password as PostgreSQL stores it: a SCRAM-SHA-256 verifier computed here, so the password itself
/// is never sent to the server (where a failed statement would print it to the server log, and
/// `pg_stat_activity` would show it to the role's own sessions).
fn verifier(password: &str) -> String {
    postgres_protocol::password::scram_sha_256(password.as_bytes())
}

/// Creates the role (with `password`) unless it exists. Creating a role and commenting it happen in one
/// transaction, so a role without our marker was never ours.
pub async fn ensure_role(
    admin: &mut PgConnection,
    target: &Target,
    password: &str,
) -> Result<bool, PgError> {
    match role_ownership(admin, &target.role, &target.uid).await? {
        Ownership::Ours { .. } => Ok(false),
        Ownership::Foreign => Err(PgError::NotOurs {
            what: format!("role {}", target.role),
        }),
        Ownership::Absent => {
            let mut tx = admin
                .begin()
                .await
                .map_err(|e| PgError::from_sqlx("beginning a transaction", e))?;
            exec(
                &mut tx,
                "creating the role",
                format!(
                    "create role {} {} password {}; comment on role {} is {}",
                    sql::ident(&target.role),
                    role_attributes(target),
                    sql::literal(&verifier(password)),
                    sql::ident(&target.role),
                    sql::literal(&sql::marker(&target.uid)),
                ),
            )
            .await?;
            tx.commit()
                .await
                .map_err(|e| PgError::from_sqlx("committing the role", e))?;
            Ok(true)
        }
    }
}

/// Restates the role's attributes (login only, the connection limit): a role that gained a privilege
/// since (by any means) loses it again. Returns whether the role held a privilege it must not have.
pub async fn enforce_role(admin: &mut PgConnection, target: &Target) -> Result<bool, PgError> {
    let elevated: Option<bool> = sqlx::query_scalar(
        "select rolsuper or rolcreatedb or rolcreaterole or rolreplication or rolbypassrls from pg_catalog.pg_roles where rolname = $1",
    )
    .bind(&target.role)
    .fetch_optional(&mut *admin)
    .await
    .map_err(|e| PgError::from_sqlx("reading the role's attributes", e))?;
    exec(
        admin,
        "restating the role's attributes",
        format!(
            "alter role {} {}",
            sql::ident(&target.role),
            role_attributes(target)
        ),
    )
    .await?;
    Ok(elevated.unwrap_or(false))
}

/// Sets the role's password (used when the connection Secret and the role disagree, e.g. after the Secret
/// was deleted by hand).
pub async fn set_role_password(
    admin: &mut PgConnection,
    target: &Target,
    password: &str,
) -> Result<(), PgError> {
    if !matches!(
        role_ownership(admin, &target.role, &target.uid).await?,
        Ownership::Ours { .. }
    ) {
        return Err(PgError::NotOurs {
            what: format!("role {}", target.role),
        });
    }
    exec(
        admin,
        "setting the role's password",
        format!(
            "alter role {} with login password {}",
            sql::ident(&target.role),
            sql::literal(&verifier(password))
        ),
    )
    .await
}

/// Creates the database owned by the role (cloned from the template when one is set) unless it exists.
/// Returns whether it was created now.
pub async fn ensure_database(
    admin: &mut PgConnection,
    admin_creds: &ServerCredentials,
    target: &Target,
) -> Result<bool, PgError> {
    match database_ownership(admin, &target.database, &target.role, &target.uid).await? {
        Ownership::Ours { comment: Some(_) } => {
            restrict_database(admin, target).await?;
            return Ok(false);
        }
        Ownership::Ours { comment: None } => {
            // Created, but the operator stopped before marking it: the hand-over of a clone may not
            // have run either (the marker is written only after it). It is idempotent: run it again.
            restrict_database(admin, target).await?;
            if target.template.is_some() {
                reassign_cloned_objects(admin_creds, target).await?;
            }
            mark_database(admin, target).await?;
            return Ok(false);
        }
        Ownership::Foreign => {
            return Err(PgError::NotOurs {
                what: format!("database {}", target.database),
            });
        }
        Ownership::Absent => {}
    }
    if let Some(template) = &target.template {
        check_template(admin, template, &target.allowed_templates).await?;
    }
    let mut statement = format!(
        "create database {} owner {}",
        sql::ident(&target.database),
        sql::ident(&target.role)
    );
    // Without a template, clone the pristine template0, not template1: on PostgreSQL 14 and older any
    // role may create objects in template1's `public` schema, which would then appear in every new
    // database.
    let template = target.template.as_deref().unwrap_or("template0");
    statement.push_str(&format!(" template {}", sql::ident(template)));
    if let Err(e) = exec(admin, "creating the database", statement).await {
        return Err(match (&target.template, e.code()) {
            // object_in_use: the template has other sessions
            (Some(t), Some("55006")) => PgError::TemplateInUse {
                template: t.clone(),
            },
            // invalid_catalog_name: the template does not exist
            (Some(t), Some("3D000")) => PgError::TemplateMissing {
                template: t.clone(),
            },
            _ => e,
        });
    }
    restrict_database(admin, target).await?;
    if target.template.is_some() {
        reassign_cloned_objects(admin_creds, target).await?;
    }
    mark_database(admin, target).await?;
    Ok(true)
}

/// A template must be marked as one by the server's administrator (`datistemplate`) or listed by them;
/// any other database (another team's, or `postgres`) is refused, so nobody clones what is not theirs.
async fn check_template(
    admin: &mut PgConnection,
    template: &str,
    allowed: &[String],
) -> Result<(), PgError> {
    let marked: Option<bool> =
        sqlx::query_scalar("select datistemplate from pg_catalog.pg_database where datname = $1")
            .bind(template)
            .fetch_optional(&mut *admin)
            .await
            .map_err(|e| PgError::from_sqlx("looking up the template", e))?;
    match marked {
        None => Err(PgError::TemplateMissing {
            template: template.to_string(),
        }),
        Some(true) => Ok(()),
        Some(false) if allowed.iter().any(|a| a == template) => Ok(()),
        Some(false) => Err(PgError::TemplateNotAllowed {
            template: template.to_string(),
        }),
    }
}

/// Only the environment's role may connect to its database: PostgreSQL grants CONNECT and TEMPORARY
/// to PUBLIC on every new database, which would let every other tenant's role in. Restated on every
/// reconcile (also for databases created before Lifeboat did this).
async fn restrict_database(admin: &mut PgConnection, target: &Target) -> Result<(), PgError> {
    let db = sql::ident(&target.database);
    exec(
        admin,
        "restricting who may connect to the database",
        format!(
            "revoke all on database {db} from public; grant connect, temporary on database {db} to {}",
            sql::ident(&target.role)
        ),
    )
    .await
}

async fn mark_database(admin: &mut PgConnection, target: &Target) -> Result<(), PgError> {
    exec(
        admin,
        "marking the database",
        format!(
            "comment on database {} is {}",
            sql::ident(&target.database),
            sql::literal(&sql::marker(&target.uid))
        ),
    )
    .await
}

/// A database cloned from a template keeps the template's object owners; the environment's role must own
/// its schema to use and migrate it. Reassign every non-system schema, relation, routine and type owned by
/// someone else to the role, inside the new database only (`REASSIGN OWNED` would also move shared objects
/// such as the template database itself). Objects that belong to extensions are left alone.
async fn reassign_cloned_objects(
    admin_creds: &ServerCredentials,
    target: &Target,
) -> Result<(), PgError> {
    let mut conn = connect_admin(admin_creds, &target.database).await?;
    let role = sql::literal(&target.role);
    let statement = format!(
        r#"do $lifeboat$
declare
  r record;
  owner_role text := {role};
begin
  for r in select n.nspname from pg_catalog.pg_namespace n
           where n.nspname not like 'pg\_%' and n.nspname <> 'information_schema'
             and pg_catalog.pg_get_userbyid(n.nspowner) <> owner_role loop
    execute pg_catalog.format('alter schema %I owner to %I', r.nspname, owner_role);
  end loop;
  for r in select n.nspname, c.relname, c.relkind from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
           where n.nspname not like 'pg\_%' and n.nspname <> 'information_schema'
             and c.relkind in ('r','p','v','m','S','f')
             and pg_catalog.pg_get_userbyid(c.relowner) <> owner_role
             and not exists (select 1 from pg_catalog.pg_depend d where d.objid = c.oid and d.deptype in ('a','i') and c.relkind = 'S') loop
    execute pg_catalog.format('alter %s %I.%I owner to %I',
      case r.relkind when 'v' then 'view' when 'm' then 'materialized view' when 'S' then 'sequence'
                     when 'f' then 'foreign table' else 'table' end,
      r.nspname, r.relname, owner_role);
  end loop;
  for r in select p.oid::pg_catalog.regprocedure as sig, p.prokind from pg_catalog.pg_proc p join pg_catalog.pg_namespace n on n.oid = p.pronamespace
           where n.nspname not like 'pg\_%' and n.nspname <> 'information_schema'
             and pg_catalog.pg_get_userbyid(p.proowner) <> owner_role
             and not exists (select 1 from pg_catalog.pg_depend d where d.objid = p.oid and d.deptype = 'e') loop
    execute pg_catalog.format('alter %s %s owner to %I', case r.prokind when 'p' then 'procedure' when 'a' then 'aggregate' else 'function' end, r.sig, owner_role);
  end loop;
  for r in select t.oid::pg_catalog.regtype as typ from pg_catalog.pg_type t join pg_catalog.pg_namespace n on n.oid = t.typnamespace
           where n.nspname not like 'pg\_%' and n.nspname <> 'information_schema'
             and (t.typtype in ('d','e','r')
                  or (t.typtype = 'c' and exists (select 1 from pg_catalog.pg_class c where c.oid = t.typrelid and c.relkind = 'c')))
             and pg_catalog.pg_get_userbyid(t.typowner) <> owner_role
             and not exists (select 1 from pg_catalog.pg_depend d where d.objid = t.oid and d.deptype = 'e') loop
    execute pg_catalog.format('alter type %s owner to %I', r.typ, owner_role);
  end loop;
end
$lifeboat$"#
    );
    let result = exec(
        &mut conn,
        "giving the cloned objects to the environment's role",
        statement,
    )
    .await;
    let _ = conn.close().await;
    result
}

/// Applies the seed once, as the environment's own role, in one transaction that also records the seed's
/// checksum on the database: either both commit or neither does, so a crash mid-seed leaves an unseeded
/// database and the next attempt starts clean. Returns whether the seed ran now.
pub async fn apply_seed(
    app: &mut PgConnection,
    target: &Target,
    seed_sql: &str,
) -> Result<bool, PgError> {
    let checksum = crate::domain::digest::sha256_hex(seed_sql.as_bytes());
    let comment: Option<String> =
        sqlx::query_scalar("select pg_catalog.shobj_description(oid, 'pg_database') from pg_catalog.pg_database where datname = pg_catalog.current_database()")
            .fetch_one(&mut *app)
            .await
            .map_err(|e| PgError::from_sqlx("reading the seed marker", e))?;
    if sql::recorded_seed(comment.as_deref()).is_some() {
        return Ok(false);
    }
    let mut tx = app
        .begin()
        .await
        .map_err(|e| PgError::from_sqlx("beginning the seed transaction", e))?;
    exec(&mut tx, "applying the seed", seed_sql.to_string()).await?;
    exec(
        &mut tx,
        "recording the seed",
        format!(
            "comment on database {} is {}",
            sql::ident(&target.database),
            sql::literal(&sql::seeded_marker(&target.uid, &checksum))
        ),
    )
    .await?;
    tx.commit()
        .await
        .map_err(|e| PgError::from_sqlx("committing the seed", e))?;
    Ok(true)
}

/// The backup id recorded on the database by [`mark_restored`], if it was restored.
pub async fn restored_from(
    admin: &mut PgConnection,
    target: &Target,
) -> Result<Option<String>, PgError> {
    match database_ownership(admin, &target.database, &target.role, &target.uid).await? {
        Ownership::Ours { comment } => Ok(comment
            .as_deref()
            .and_then(|c| c.split(' ').find_map(|p| p.strip_prefix("restored=")))
            .map(str::to_string)),
        _ => Ok(None),
    }
}

/// Records on the database that the backup `id` was restored into it and checked (after that, the
/// environment never restores again).
pub async fn mark_restored(
    admin: &mut PgConnection,
    target: &Target,
    id: &str,
) -> Result<(), PgError> {
    exec(
        admin,
        "recording the restore on the database",
        format!(
            "comment on database {} is {}",
            sql::ident(&target.database),
            sql::literal(&format!("{} restored={id}", sql::marker(&target.uid)))
        ),
    )
    .await
}

/// Drops the environment's database (if ours) and creates it empty again: a restore that did not
/// finish and check starts over on a clean database, never on top of part of a dump.
pub async fn recreate_database(
    admin: &mut PgConnection,
    admin_creds: &ServerCredentials,
    target: &Target,
) -> Result<(), PgError> {
    if let Ownership::Ours { .. } =
        database_ownership(admin, &target.database, &target.role, &target.uid).await?
    {
        exec(
            admin,
            "dropping the database to restore into it afresh",
            format!(
                "drop database if exists {} with (force)",
                sql::ident(&target.database)
            ),
        )
        .await?;
    }
    ensure_database(admin, admin_creds, target)
        .await
        .map(|_| ())
}

/// Drops the database (ending its sessions) and the role, each only if it carries our marker. Safe to
/// call when nothing was ever created. Returns what was dropped, for the event.
pub async fn drop_owned(admin: &mut PgConnection, target: &Target) -> Result<Vec<String>, PgError> {
    let mut dropped = Vec::new();
    match database_ownership(admin, &target.database, &target.role, &target.uid).await? {
        Ownership::Ours { .. } => {
            // A template cannot be dropped: unmark it first. WITH (FORCE) terminates the database's
            // sessions (PostgreSQL 13+).
            // (Two statements: DROP DATABASE may not share a multi-statement string.)
            let db = sql::ident(&target.database);
            exec(
                admin,
                "unmarking the database as a template",
                format!("alter database {db} is_template false"),
            )
            .await?;
            exec(
                admin,
                "dropping the database",
                format!("drop database if exists {db} with (force)"),
            )
            .await?;
            dropped.push(format!("database {}", target.database));
        }
        Ownership::Foreign | Ownership::Absent => {}
    }
    if let Ownership::Ours { .. } = role_ownership(admin, &target.role, &target.uid).await? {
        exec(
            admin,
            "dropping the role",
            format!("drop role if exists {}", sql::ident(&target.role)),
        )
        .await?;
        dropped.push(format!("role {}", target.role));
    }
    Ok(dropped)
}

/// The server's version string, e.g. `18.4`.
pub async fn server_version(conn: &mut PgConnection) -> Result<String, PgError> {
    sqlx::query_scalar("select pg_catalog.current_setting('server_version')")
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| PgError::from_sqlx("reading the server version", e))
}
