//! [`Tenancy`] for Redis: an environment is an ACL user limited to its key prefix, recorded in
//! [`OWNERS_KEY`] under the owning object's UID; deprovisioning deletes the user, then its keys in
//! bounded `SCAN`/`UNLINK` batches, then the record.

use std::collections::BTreeMap;

use futures::{FutureExt, future::BoxFuture};
use redis::{AsyncCommands, aio::MultiplexedConnection};
use sha2::{Digest, Sha256};

use super::{
    Redis, RedisError,
    acl::{OWNERS_KEY, RESTORED_KEY, owner_from_channels, user_rules},
    archive, connect, endpoint, info, keys, snapshot,
};
use crate::{
    domain::{digest::hex, manifest::TableStats},
    engines::{
        Kind, ServerCredentials,
        tenancy::{
            Archive, Content, EngineError, Provisioned, RestoreReport, ServerFacts, Sink, Source,
            Tenancy, Tenant, Usage,
        },
    },
};

/// Longest user name: Redis has no limit, but names are also key prefixes and metric-free labels.
const MAX_USER: usize = 100;

impl Tenancy for Redis {
    fn kind(&self) -> Kind {
        Kind::Redis
    }

    fn tenant(&self, namespace: &str, name: &str, uid: &str) -> Tenant {
        let user = crate::engines::naming::environment_name(namespace, name, MAX_USER);
        Tenant {
            key_prefix: format!("{user}:"),
            user,
            uid: uid.to_string(),
        }
    }

    fn check_server<'a>(
        &'a self,
        admin: &'a ServerCredentials,
    ) -> BoxFuture<'a, Result<ServerFacts, EngineError>> {
        async move { check_server(admin).await.map_err(EngineError::from_failure) }.boxed()
    }

    fn provision<'a>(
        &'a self,
        admin: &'a ServerCredentials,
        tenant: &'a Tenant,
        password: &'a str,
    ) -> BoxFuture<'a, Result<Provisioned, EngineError>> {
        async move {
            provision(admin, tenant, password)
                .await
                .map_err(EngineError::from_failure)
        }
        .boxed()
    }

    fn check<'a>(
        &'a self,
        admin: &'a ServerCredentials,
        app: &'a ServerCredentials,
    ) -> BoxFuture<'a, Result<Usage, EngineError>> {
        async move { check(admin, app).await.map_err(EngineError::from_failure) }.boxed()
    }

    fn adopt<'a>(
        &'a self,
        creds: &'a ServerCredentials,
    ) -> BoxFuture<'a, Result<(ServerFacts, Option<Usage>), EngineError>> {
        async move { adopt(creds).await.map_err(EngineError::from_failure) }.boxed()
    }

    fn deprovision<'a>(
        &'a self,
        admin: &'a ServerCredentials,
        tenant: &'a Tenant,
    ) -> BoxFuture<'a, Result<Vec<String>, EngineError>> {
        async move {
            deprovision(admin, tenant)
                .await
                .map_err(EngineError::from_failure)
        }
        .boxed()
    }

    fn connection_data(
        &self,
        app: &ServerCredentials,
        tenant: &Tenant,
    ) -> BTreeMap<String, String> {
        super::connection_data(app, &tenant.key_prefix)
    }

    /// A whole server (an empty prefix: the environment's own instance, or an adopted server) is
    /// backed up as an RDB snapshot over the replication protocol; a server that will not send one
    /// (no `SYNC` for the user, TLS) and a tenant's prefix, key by key into a key archive.
    fn backup<'a>(
        &'a self,
        app: &'a ServerCredentials,
        prefix: &'a str,
        checksums: bool,
        sink: Sink,
    ) -> BoxFuture<'a, Result<Archive, EngineError>> {
        async move {
            let mut conn = connect(app).await?;
            let server_version = keys::version(&mut conn).await?;
            if prefix.is_empty() {
                match snapshot::open(app).await? {
                    Ok(replication) => {
                        let taken = replication.stream(&endpoint(app), sink).await?;
                        return Ok(Archive {
                            server_version,
                            format: snapshot::FORMAT,
                            tables: taken.contents.tally.stats(checksums),
                            content: Some(Content {
                                version: format!("RDB {}", taken.contents.rdb_version),
                                sha256: taken.sha256,
                            }),
                        });
                    }
                    Err(refused) => tracing::info!(
                        endpoint = %endpoint(app),
                        why = %refused.0,
                        "the server sends no RDB snapshot; backing it up key by key"
                    ),
                }
            }
            let tally = keys::backup(&mut conn, prefix, sink).await?;
            Ok(Archive {
                server_version,
                format: archive::FORMAT,
                tables: tally.stats(checksums),
                content: None,
            })
        }
        .map(|r: Result<Archive, RedisError>| r.map_err(EngineError::from_failure))
        .boxed()
    }

    fn check_archive(
        &self,
        source: Source,
        checksums: bool,
    ) -> BoxFuture<'_, Result<Vec<TableStats>, EngineError>> {
        async move {
            let (is_snapshot, source) = sniff(source).await;
            if is_snapshot {
                let contents = snapshot::read_async(source, keys::BATCH, None)
                    .await
                    .map_err(RedisError::Snapshot)?;
                return Ok(contents.tally.stats(checksums));
            }
            archive::tally(source, checksums)
                .await
                .map_err(RedisError::Archive)
        }
        .map(|r: Result<Vec<TableStats>, RedisError>| r.map_err(EngineError::from_failure))
        .boxed()
    }

    fn scratch_prefix(&self, drill_uid: &str) -> String {
        format!("{SCRATCH_PREFIX}{drill_uid}:")
    }

    fn restore<'a>(
        &'a self,
        admin: &'a ServerCredentials,
        prefix: &'a str,
        source: Source,
    ) -> BoxFuture<'a, Result<RestoreReport, EngineError>> {
        async move {
            let mut conn = connect(admin).await?;
            let (is_snapshot, source) = sniff(source).await;
            let done = if is_snapshot {
                keys::restore_snapshot(&mut conn, prefix, source).await?
            } else {
                keys::restore(&mut conn, prefix, source).await?
            };
            Ok(RestoreReport {
                keys: done.keys,
                expiring: done.expiring,
                max_ttl_drift_ms: done.max_ttl_drift_ms,
                ttl_lost: done.ttl_lost,
            })
        }
        .map(|r: Result<RestoreReport, RedisError>| r.map_err(EngineError::from_failure))
        .boxed()
    }

    fn stats<'a>(
        &'a self,
        admin: &'a ServerCredentials,
        prefix: &'a str,
        checksums: bool,
    ) -> BoxFuture<'a, Result<Vec<TableStats>, EngineError>> {
        async move {
            let mut conn = connect(admin).await?;
            keys::stats(&mut conn, prefix, checksums).await
        }
        .map(|r: Result<Vec<TableStats>, RedisError>| r.map_err(EngineError::from_failure))
        .boxed()
    }

    fn restored_from<'a>(
        &'a self,
        admin: &'a ServerCredentials,
        tenant: &'a Tenant,
    ) -> BoxFuture<'a, Result<Option<String>, EngineError>> {
        async move {
            let mut conn = connect(admin).await?;
            conn.hget(RESTORED_KEY, &tenant.user).await.map_err(|e| {
                RedisError::command(format!("reading the restore of {}", tenant.user), e)
            })
        }
        .map(|r: Result<Option<String>, RedisError>| r.map_err(EngineError::from_failure))
        .boxed()
    }

    fn mark_restored<'a>(
        &'a self,
        admin: &'a ServerCredentials,
        tenant: &'a Tenant,
        id: &'a str,
    ) -> BoxFuture<'a, Result<(), EngineError>> {
        async move {
            let mut conn = connect(admin).await?;
            let _: i64 = conn
                .hset(RESTORED_KEY, &tenant.user, id)
                .await
                .map_err(|e| {
                    RedisError::command(format!("recording the restore of {}", tenant.user), e)
                })?;
            Ok(())
        }
        .map(|r: Result<(), RedisError>| r.map_err(EngineError::from_failure))
        .boxed()
    }

    fn clear<'a>(
        &'a self,
        admin: &'a ServerCredentials,
        prefix: &'a str,
    ) -> BoxFuture<'a, Result<u64, EngineError>> {
        async move {
            let mut conn = connect(admin).await?;
            keys::delete(&mut conn, prefix).await
        }
        .map(|r: Result<u64, RedisError>| r.map_err(EngineError::from_failure))
        .boxed()
    }
}

/// Whether an archive is an RDB snapshot (by its first bytes), and the archive whole again.
async fn sniff(mut source: Source) -> (bool, Source) {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::with_capacity(snapshot::MAGIC.len());
    // Short or failing: not a snapshot; the key archive's reader says what is wrong.
    let _ = (&mut source)
        .take(snapshot::MAGIC.len() as u64)
        .read_to_end(&mut head)
        .await;
    let is = snapshot::is_snapshot(&head);
    (is, Box::new(std::io::Cursor::new(head).chain(source)))
}

/// Where drills restore: under `lifeboat:` like the owners record, which no tenant's prefix starts
/// with (theirs begin with their user's name, which has a hash suffix and no `:`).
const SCRATCH_PREFIX: &str = "lifeboat:drill:";

/// The server's version (ACLs need 6 or later) and whether the admin may manage users.
async fn check_server(admin: &ServerCredentials) -> Result<ServerFacts, RedisError> {
    let mut conn = connect(admin).await?;
    let text: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut conn)
        .await
        .map_err(|e| RedisError::command(format!("INFO at {}", endpoint(admin)), e))?;
    let parsed = info::parse_info(&text);
    let version = info::version(&parsed).unwrap_or_else(|| "unknown".into());
    if info::major(&version).is_some_and(|m| m < super::MIN_MAJOR) {
        return Err(RedisError::NoAcl {
            endpoint: endpoint(admin),
            version,
        });
    }
    // Listing users takes what creating them takes (the ACL command).
    let listed: Result<Vec<String>, _> = redis::cmd("ACL").arg("LIST").query_async(&mut conn).await;
    if let Err(e) = listed {
        if e.code() == Some("NOPERM") {
            return Err(RedisError::NotAdmin {
                endpoint: endpoint(admin),
                user: admin.username.clone(),
                detail: e.to_string(),
            });
        }
        if e.to_string().contains("unknown command") {
            return Err(RedisError::NoAcl {
                endpoint: endpoint(admin),
                version,
            });
        }
        return Err(RedisError::command("ACL LIST", e));
    }
    Ok(ServerFacts { version })
}

/// PING, the version (`HELLO`), and `INFO`'s figures when the user may read them.
async fn adopt(creds: &ServerCredentials) -> Result<(ServerFacts, Option<Usage>), RedisError> {
    let mut conn = connect(creds).await?;
    let pong: String = redis::cmd("PING")
        .query_async(&mut conn)
        .await
        .map_err(|e| RedisError::command(format!("PING as {}", creds.username), e))?;
    if pong != "PONG" {
        return Err(RedisError::Command {
            context: format!("PING as {}", creds.username),
            detail: format!("answered {pong:?}"),
        });
    }
    let version = keys::version(&mut conn).await?;
    let usage = match redis::cmd("INFO").query_async::<String>(&mut conn).await {
        Ok(text) => Some(info::usage(&info::parse_info(&text))),
        Err(e) if e.code() == Some("NOPERM") => None,
        Err(e) => return Err(RedisError::command("INFO", e)),
    };
    Ok((ServerFacts { version }, usage))
}

/// Whose a user is, by [`OWNERS_KEY`].
async fn owner(conn: &mut MultiplexedConnection, user: &str) -> Result<Option<String>, RedisError> {
    conn.hget(OWNERS_KEY, user)
        .await
        .map_err(|e| RedisError::command(format!("reading the owner of user {user}"), e))
}

/// Claims the user for the tenant's UID (first, so a crash right after never leaves a user nobody
/// owns), then states its rules and password. A user someone else made is refused.
async fn provision(
    admin: &ServerCredentials,
    tenant: &Tenant,
    password: &str,
) -> Result<Provisioned, RedisError> {
    let mut conn = connect(admin).await?;
    let user = &tenant.user;
    let found = user_owner(&mut conn, user).await?;
    if let Some(owner) = &found
        && owner.as_deref() != Some(tenant.uid.as_str())
    {
        return Err(RedisError::NotOurs {
            what: format!("ACL user {user}"),
        });
    }
    // Recorded first, so a crash right after never leaves keys nobody would clean up.
    let _: i64 = conn
        .hset(OWNERS_KEY, user, &tenant.uid)
        .await
        .map_err(|e| RedisError::command(format!("recording the owner of user {user}"), e))?;
    let hash = hex(&Sha256::digest(password.as_bytes()));
    let mut setuser = redis::cmd("ACL");
    setuser.arg("SETUSER").arg(user);
    for rule in user_rules(&tenant.key_prefix, &hash, &tenant.uid) {
        setuser.arg(rule);
    }
    let () = setuser
        .query_async(&mut conn)
        .await
        .map_err(|e| RedisError::command(format!("ACL SETUSER {user}"), e))?;
    persist_acl(&mut conn).await;
    Ok(Provisioned {
        created: found.is_none(),
    })
}

/// Whose an ACL user is: `None` when there is no such user, `Some(None)` for a user without
/// Lifeboat's mark, `Some(Some(uid))` for one made for the object of that UID.
async fn user_owner(
    conn: &mut MultiplexedConnection,
    user: &str,
) -> Result<Option<Option<String>>, RedisError> {
    let found: redis::Value = redis::cmd("ACL")
        .arg("GETUSER")
        .arg(user)
        .query_async(conn)
        .await
        .map_err(|e| RedisError::command(format!("ACL GETUSER {user}"), e))?;
    let fields = match found {
        redis::Value::Nil => return Ok(None),
        redis::Value::Array(fields) => fields,
        redis::Value::Map(pairs) => pairs.into_iter().flat_map(|(k, v)| [k, v]).collect(),
        _ => Vec::new(),
    };
    let text = |v: &redis::Value| match v {
        redis::Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        redis::Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    };
    let channels = fields
        .chunks(2)
        .find(|kv| text(&kv[0]).as_deref() == Some("channels"))
        .and_then(|kv| kv.get(1).and_then(text))
        .unwrap_or_default();
    Ok(Some(owner_from_channels(&channels)))
}

/// Writes the users to the server's ACL file when it has one (best effort: without one, a restarted
/// server forgets them, and each environment's next check makes its user again).
async fn persist_acl(conn: &mut MultiplexedConnection) {
    let saved: Result<(), _> = redis::cmd("ACL").arg("SAVE").query_async(conn).await;
    if let Err(e) = saved {
        tracing::debug!(error = %e, "ACL SAVE (no ACL file configured?)");
    }
}

/// PING as the tenant, then the server's figures as the admin (`INFO` is an admin command).
async fn check(admin: &ServerCredentials, app: &ServerCredentials) -> Result<Usage, RedisError> {
    let mut conn = connect(app).await?;
    let pong: String = redis::cmd("PING")
        .query_async(&mut conn)
        .await
        .map_err(|e| RedisError::command(format!("PING as {}", app.username), e))?;
    if pong != "PONG" {
        return Err(RedisError::Command {
            context: format!("PING as {}", app.username),
            detail: format!("answered {pong:?}"),
        });
    }
    let mut conn = connect(admin).await?;
    let text: String = redis::cmd("INFO")
        .query_async(&mut conn)
        .await
        .map_err(|e| RedisError::command(format!("INFO at {}", endpoint(admin)), e))?;
    Ok(info::usage(&info::parse_info(&text)))
}

/// Deletes the tenant's user (which also disconnects its clients), then every key under its prefix,
/// then the record; only when the record names the tenant's UID. Safe to repeat after a crash at any
/// point: the record goes last.
async fn deprovision(
    admin: &ServerCredentials,
    tenant: &Tenant,
) -> Result<Vec<String>, RedisError> {
    let mut conn = connect(admin).await?;
    let user = &tenant.user;
    let ours = match user_owner(&mut conn, user).await? {
        Some(owner) => owner.as_deref() == Some(tenant.uid.as_str()),
        // The user is gone (a cleanup stopped half-way): the record says whose its keys were.
        None => owner(&mut conn, user).await?.as_deref() == Some(&tenant.uid),
    };
    if !ours {
        return Ok(Vec::new());
    }
    let mut removed = Vec::new();
    let deleted: i64 = redis::cmd("ACL")
        .arg("DELUSER")
        .arg(user)
        .query_async(&mut conn)
        .await
        .map_err(|e| RedisError::command(format!("ACL DELUSER {user}"), e))?;
    if deleted > 0 {
        removed.push(format!("ACL user {user}"));
        persist_acl(&mut conn).await;
    }
    let keys = super::keys::delete(&mut conn, &tenant.key_prefix).await?;
    removed.push(format!("{keys} key(s) under {}", tenant.key_prefix));
    let _: i64 = conn
        .hdel(RESTORED_KEY, user)
        .await
        .map_err(|e| RedisError::command(format!("forgetting the restore of {user}"), e))?;
    let _: i64 = conn
        .hdel(OWNERS_KEY, user)
        .await
        .map_err(|e| RedisError::command(format!("forgetting user {user}"), e))?;
    Ok(removed)
}
