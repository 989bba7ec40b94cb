//! Redis environments on the platform's shared Redis 7.0 (`e2e/platform.sh`): each is an ACL user
//! limited to its key prefix, refused every dangerous command, described by its connection Secret, and
//! removed with its keys (only its own) when deleted or when its namespace goes. Also the refusals:
//! PostgreSQL-only fields (CEL), a MigrationRun (`EngineUnsupported`), a server of another engine.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api,
    api::{DeleteParams, PostParams},
};
use lifeboat::api::{DatabaseEnvironment, DatabaseServer, MigrationRun};
use redis::aio::MultiplexedConnection;
use serde_json::{Value, json};
use support::{
    Fixture, TestNamespace,
    redis::{admin_conn, admin_secret, count_prefix, redis_admin},
};

const WAIT: Duration = Duration::from_secs(60);

/// The platform Redis's admin, or return (a failure under CI=true).
macro_rules! require_redis {
    () => {
        match redis_admin() {
            Some(r) => r,
            None => return,
        }
    };
}

fn redis_env(extra: Value) -> Value {
    let mut spec = json!({"engine": "redis", "tier": "dev",
        "server": {"adminSecretRef": {"name": "redis-admin"}}});
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    spec
}

async fn user_exists(conn: &mut MultiplexedConnection, user: &str) -> bool {
    let v: redis::Value = redis::cmd("ACL")
        .arg("GETUSER")
        .arg(user)
        .query_async(conn)
        .await
        .unwrap();
    !matches!(v, redis::Value::Nil)
}

async fn fill(conn: &mut MultiplexedConnection, prefix: &str, n: usize) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let mut pipe = redis::pipe();
        for i in chunk {
            pipe.set(format!("{prefix}key:{i}"), i).ignore();
        }
        let () = pipe.query_async(conn).await.unwrap();
    }
}

/// The error code of a command's refusal (`NOPERM`), or `None` when it succeeded.
async fn refused(conn: &mut MultiplexedConnection, args: &[&str]) -> Option<String> {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    match cmd.query_async::<redis::Value>(conn).await {
        Ok(_) => None,
        Err(e) => Some(e.code().unwrap_or("?").to_string()),
    }
}

#[tokio::test]
async fn each_environment_is_an_acl_user_limited_to_its_prefix() {
    let platform = require_platform!();
    let admin = require_redis!();
    let t = Fixture::new(platform, "redis-iso").await;
    admin_secret(&t.client, &t.ns.name, "redis-admin", &admin).await;
    t.apply_env("cache", redis_env(json!({}))).await;
    t.apply_env("other", redis_env(json!({}))).await;
    let env = t.ready("cache").await;
    t.ready("other").await;

    let secret = t.connection("cache").await;
    for key in [
        "host",
        "port",
        "username",
        "password",
        "keyPrefix",
        "tls",
        "uri",
    ] {
        assert!(secret.contains_key(key), "connection Secret has {key}");
    }
    assert_eq!(secret["tls"], "false");
    assert!(secret["uri"].starts_with("redis://"), "{}", secret["uri"]);
    assert_eq!(secret["keyPrefix"], format!("{}:", secret["username"]));
    let status = env.status.clone().unwrap();
    assert_eq!(
        status.database.as_deref(),
        Some(secret["username"].as_str())
    );
    assert!(
        status.server_version.as_deref().unwrap().starts_with('7'),
        "{:?}",
        status.server_version
    );
    let cache = status.cache.expect("status.cache");
    assert_eq!(cache.scope, "server");
    assert!(cache.connected_clients >= 1);
    let (within, reason, message) =
        support::condition(env.status.as_ref(), "WithinThresholds").expect("WithinThresholds");
    assert_eq!(
        (within.as_str(), reason.as_str()),
        ("True", "WithinThresholds"),
        "{message}"
    );

    // The application connects with the Secret's URI, as it would.
    let mut app = redis::Client::open(secret["uri"].as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let prefix = secret["keyPrefix"].clone();
    let other_prefix = t.connection("other").await["keyPrefix"].clone();
    let () = redis::cmd("SET")
        .arg(format!("{prefix}greeting"))
        .arg("hello")
        .query_async(&mut app)
        .await
        .unwrap();
    assert_eq!(
        refused(&mut app, &["SET", &format!("{other_prefix}x"), "1"])
            .await
            .as_deref(),
        Some("NOPERM"),
        "another tenant's key"
    );
    assert_eq!(
        refused(&mut app, &["GET", "unprefixed"]).await.as_deref(),
        Some("NOPERM"),
        "a key outside every prefix"
    );
    assert_eq!(
        refused(&mut app, &["PUBLISH", &format!("{other_prefix}chan"), "hi"])
            .await
            .as_deref(),
        Some("NOPERM"),
        "another tenant's channel"
    );
    let mut root = admin_conn(&admin).await;
    let user = secret["username"].clone();
    for cmd in [
        &["FLUSHALL"][..],
        &["FLUSHDB"],
        &["CONFIG", "GET", "maxmemory"],
        &["ACL", "LIST"],
        &["DEBUG", "SLEEP", "0"],
        &["MODULE", "LIST"],
        &["KEYS", "*"],
        &["SELECT", "1"],
        &["SWAPDB", "0", "1"],
        &["FUNCTION", "FLUSH"],
        &["SHUTDOWN"],
    ] {
        // Redis 7 refuses DEBUG to everyone unless enable-debug-command is set, before asking the
        // ACLs; ACL DRYRUN asks the ACLs alone, for every command.
        let code = refused(&mut app, cmd).await;
        if cmd[0] == "DEBUG" {
            assert!(code.is_some(), "{cmd:?} is refused");
        } else {
            assert_eq!(code.as_deref(), Some("NOPERM"), "{cmd:?} is refused");
        }
        let verdict: String = redis::cmd("ACL")
            .arg("DRYRUN")
            .arg(&user)
            .arg(cmd)
            .query_async(&mut root)
            .await
            .unwrap();
        assert!(verdict.contains("no permissions"), "{cmd:?}: {verdict}");
    }
    // SCAN works for the user (to the end of the keyspace, whatever else the server holds).
    let mut keys: Vec<String> = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, page): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut app)
            .await
            .unwrap();
        keys.extend(page);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    assert_eq!(keys, vec![format!("{prefix}greeting")]);

    // Deleting the environment removes its user and every one of its keys, and nothing else.
    fill(&mut root, &prefix, 5000).await;
    fill(&mut root, &other_prefix, 10).await;
    assert!(user_exists(&mut root, &user).await);
    // The owner's mark lives with the user: losing the server's record (a FLUSHALL, an eviction)
    // does not make the user a stranger.
    let _: i64 = redis::cmd("HDEL")
        .arg("lifeboat:owners")
        .arg(&user)
        .query_async(&mut root)
        .await
        .unwrap();
    t.delete_env("cache").await;
    assert!(!user_exists(&mut root, &user).await, "the user is gone");
    assert_eq!(
        count_prefix(&mut root, &prefix).await,
        0,
        "its keys are gone"
    );
    assert_eq!(
        count_prefix(&mut root, &other_prefix).await,
        10,
        "another tenant's keys stay"
    );
    let events = t.events().await;
    assert!(events.contains("5001 key(s) under"), "{events}");
    assert!(!events.contains(&admin.3), "no admin password in events");
    assert!(
        !events.contains(&secret["password"]),
        "no tenant password in events"
    );
    t.delete_env("other").await;
    assert_eq!(count_prefix(&mut root, &other_prefix).await, 0);
    t.finish().await;
}

/// A user Lifeboat did not create is never taken over, changed or deleted.
#[tokio::test]
async fn a_user_lifeboat_did_not_create_is_left_alone() {
    let platform = require_platform!();
    let admin = require_redis!();
    let t = Fixture::new(platform, "redis-foreign").await;
    admin_secret(&t.client, &t.ns.name, "redis-admin", &admin).await;
    let mut root = admin_conn(&admin).await;
    let user = lifeboat::engines::naming::environment_name(&t.ns.name, "taken", 100);
    let () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg(&user)
        .arg("on")
        .arg(">someone-elses-password")
        .arg("~*")
        .arg("+get")
        .query_async(&mut root)
        .await
        .unwrap();
    let () = redis::cmd("SET")
        .arg(format!("{user}:theirs"))
        .arg("1")
        .query_async(&mut root)
        .await
        .unwrap();
    t.apply_env("taken", redis_env(json!({}))).await;
    let env = t.condition("taken", "Stalled", "DatabaseConflict").await;
    let (_, _, message) = support::condition(env.status.as_ref(), "Stalled").unwrap();
    assert!(
        message.contains("was not created by this environment"),
        "{message}"
    );
    t.delete_env("taken").await;
    assert!(
        user_exists(&mut root, &user).await,
        "the foreign user stays"
    );
    let rules: Vec<String> = redis::cmd("ACL")
        .arg("LIST")
        .query_async(&mut root)
        .await
        .unwrap();
    let rule = rules
        .iter()
        .find(|r| r.starts_with(&format!("user {user} ")))
        .unwrap();
    assert!(
        rule.contains("~*") && rule.contains("+get"),
        "unchanged: {rule}"
    );
    assert_eq!(
        count_prefix(&mut root, &format!("{user}:")).await,
        1,
        "its key stays"
    );
    let () = redis::cmd("ACL")
        .arg("DELUSER")
        .arg(&user)
        .query_async::<i64>(&mut root)
        .await
        .map(|_| ())
        .unwrap();
    let _: i64 = redis::cmd("DEL")
        .arg(format!("{user}:theirs"))
        .query_async(&mut root)
        .await
        .unwrap();
    t.finish().await;
}

/// PostgreSQL-only fields are refused by the API server naming the field; a MigrationRun on a Redis
/// environment is refused with `EngineUnsupported`; a Redis environment cannot use a PostgreSQL server.
#[tokio::test]
async fn what_redis_cannot_do_is_refused_with_one_reason() {
    let platform = require_platform!();
    let admin = require_redis!();
    let t = Fixture::new(platform, "redis-refuse").await;
    admin_secret(&t.client, &t.ns.name, "redis-admin", &admin).await;
    for (extra, field) in [
        (
            json!({"seed": {"configMapRef": {"name": "s"}}}),
            "spec.seed",
        ),
        (
            json!({"migrations": {"configMapNames": ["m"]}}),
            "spec.migrations",
        ),
        (
            json!({"server": {"adminSecretRef": {"name": "redis-admin"}, "template": "t"}}),
            "spec.server.template",
        ),
        (
            json!({"server": {"adminSecretRef": {"name": "redis-admin"}, "databaseName": "x"}}),
            "spec.server.databaseName",
        ),
        (
            json!({"healthCheck": {"query": "select 1 from t"}}),
            "spec.healthCheck.query",
        ),
    ] {
        let err = support::apply_json(
            &t.client,
            &t.ns.name,
            json!({"apiVersion": "lifeboat.dev/v1alpha1", "kind": "DatabaseEnvironment",
                   "metadata": {"name": "bad"}, "spec": redis_env(extra.clone())}),
        )
        .await
        .expect_err("refused by CEL");
        let text = err.to_string();
        assert!(text.contains(field), "{extra}: {text}");
    }
    let err = support::apply_json(
        &t.client,
        &t.ns.name,
        json!({"apiVersion": "lifeboat.dev/v1alpha1", "kind": "DatabaseEnvironment",
               "metadata": {"name": "bad"}, "spec": {"tier": "dev", "thresholds": {},
               "server": {"adminSecretRef": {"name": "pg-admin"}}}}),
    )
    .await
    .expect_err("thresholds are for redis");
    assert!(err.to_string().contains("spec.thresholds"), "{err}");

    // A MigrationRun on a Redis environment fails at once, naming the engine, touching nothing.
    t.apply_env("cache", redis_env(json!({}))).await;
    t.ready("cache").await;
    t.config_map("m", json!({"001_init.up.sql": "create table t (id int);"}))
        .await;
    support::apply_json(
        &t.client,
        &t.ns.name,
        json!({"apiVersion": "lifeboat.dev/v1alpha1", "kind": "MigrationRun",
               "metadata": {"name": "migrate-cache"},
               "spec": {"environmentRef": {"name": "cache"}, "source": {"configMapNames": ["m"]}}}),
    )
    .await
    .unwrap();
    let runs: Api<MigrationRun> = Api::namespaced(t.client.clone(), &t.ns.name);
    let run = support::wait_for(&runs, "migrate-cache", "refused", WAIT, |r| {
        serde_json::to_string(&r.status)
            .unwrap()
            .contains("EngineUnsupported")
    })
    .await;
    let text = serde_json::to_string(&run.status).unwrap();
    assert!(text.contains("schema migrations"), "{text}");
    assert!(text.contains("Redis"), "{text}");

    // A Redis environment naming a PostgreSQL DatabaseServer is refused before anything is made.
    let server = format!("pg-{}", support::random_suffix());
    support::create_admin_secret(
        &t.client,
        &t.ns.name,
        "server-admin",
        &t.platform.pg,
        json!({"sslmode": "disable"}),
    )
    .await;
    Api::<DatabaseServer>::all(t.client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "lifeboat.dev/v1alpha1", "kind": "DatabaseServer",
                "metadata": {"name": server},
                "spec": {"adminSecretRef": {"name": "server-admin"}, "allowedNamespaces": {}}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    t.apply_env(
        "mismatch",
        json!({"engine": "redis", "tier": "dev", "server": {"serverRef": {"name": server}}}),
    )
    .await;
    t.condition("mismatch", "Stalled", "EngineMismatch").await;
    t.delete_env("cache").await;
    let _ = Api::<DatabaseServer>::all(t.client.clone())
        .delete(&server, &DeleteParams::default())
        .await;
    t.finish().await;
}

/// A DatabaseServer of engine redis is Ready with the server's version; deleting a namespace with
/// Redis environments on it finishes, and their users and keys are gone.
#[tokio::test]
async fn a_redis_server_serves_namespaces_and_namespace_deletion_cleans_up() {
    let platform = require_platform!();
    let admin = require_redis!();
    let _ = platform;
    let client = support::client().await;
    support::install_crds(&client).await;
    let control = TestNamespace::new(&client, "redis-control").await;
    let pr = TestNamespace::new(&client, "redis-pr").await;
    let mut settings = support::settings(&control.name, "op");
    settings.controllers.watch_namespace = Some(pr.name.clone());
    let op = support::start_operator(&client, settings);
    admin_secret(&client, &control.name, "shared-redis-admin", &admin).await;
    let server = format!("redis-{}", support::random_suffix());
    let servers: Api<DatabaseServer> = Api::all(client.clone());
    servers
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "lifeboat.dev/v1alpha1", "kind": "DatabaseServer",
                "metadata": {"name": server},
                "spec": {"engine": "redis", "adminSecretRef": {"name": "shared-redis-admin"},
                         "allowedNamespaces": {}}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let ready = support::wait_for(&servers, &server, "Ready", WAIT, |s| {
        support::is_ready(s.status.as_ref())
    })
    .await;
    let version = ready.status.unwrap().server_version.unwrap();
    assert!(version.starts_with("7."), "{version}");

    // An admin user that may not manage ACL users: Stalled, saying what to grant.
    let mut root = admin_conn(&admin).await;
    let weak = format!("weak_{}", support::random_suffix());
    let () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg(&weak)
        .arg(&["on", ">weak-password", "~*", "&*", "+@all", "-acl"][..])
        .query_async(&mut root)
        .await
        .unwrap();
    let weak_admin: support::redis::Admin = (
        admin.0.clone(),
        admin.1,
        weak.clone(),
        "weak-password".into(),
    );
    admin_secret(&client, &control.name, "weak-redis-admin", &weak_admin).await;
    let weak_server = format!("redis-weak-{}", support::random_suffix());
    servers
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "lifeboat.dev/v1alpha1", "kind": "DatabaseServer",
                "metadata": {"name": weak_server},
                "spec": {"engine": "redis", "adminSecretRef": {"name": "weak-redis-admin"},
                         "allowedNamespaces": {}}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let stalled = support::wait_for(&servers, &weak_server, "Stalled", WAIT, |s| {
        support::has_condition(s.status.as_ref(), "Stalled", "InsufficientPrivileges")
    })
    .await;
    let (_, _, message) = support::condition(stalled.status.as_ref(), "Stalled").unwrap();
    assert!(message.contains("may not manage ACL users"), "{message}");
    assert!(!message.contains("weak-password"), "no password in status");
    let _ = servers.delete(&weak_server, &DeleteParams::default()).await;
    let _: i64 = redis::cmd("ACL")
        .arg("DELUSER")
        .arg(&weak)
        .query_async(&mut root)
        .await
        .unwrap();

    let envs: Api<DatabaseEnvironment> = Api::namespaced(client.clone(), &pr.name);
    for name in ["a", "b"] {
        support::apply_json(
            &client,
            &pr.name,
            json!({"apiVersion": "lifeboat.dev/v1alpha1", "kind": "DatabaseEnvironment",
                   "metadata": {"name": name},
                   "spec": {"engine": "redis", "tier": "ci", "server": {"serverRef": {"name": server}}}}),
        )
        .await
        .unwrap();
    }
    let mut root = admin_conn(&admin).await;
    let mut users = Vec::new();
    for name in ["a", "b"] {
        support::wait_for(&envs, name, "Ready", WAIT, |e| {
            support::is_ready(e.status.as_ref())
        })
        .await;
        let user = lifeboat::engines::naming::environment_name(&pr.name, name, 100);
        fill(&mut root, &format!("{user}:"), 100).await;
        users.push(user);
    }
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .delete(&pr.name, &DeleteParams::background())
        .await
        .unwrap();
    let (ns_api, ns_name) = (namespaces.clone(), pr.name.clone());
    support::eventually(
        "the namespace to be gone",
        Duration::from_secs(120),
        move || {
            let (api, name) = (ns_api.clone(), ns_name.clone());
            async move { api.get_opt(&name).await.unwrap().is_none().then_some(()) }
        },
    )
    .await;
    for user in &users {
        assert!(!user_exists(&mut root, user).await, "{user} is gone");
        assert_eq!(
            count_prefix(&mut root, &format!("{user}:")).await,
            0,
            "{user}'s keys are gone"
        );
    }
    let _ = servers.delete(&server, &DeleteParams::default()).await;
    op.stop().await.unwrap();
    control.cleanup().await;
}

/// An external Redis is adopted as it is: checked with PING, described in the connection Secret,
/// never changed, and its keys stay when the environment goes.
#[tokio::test]
async fn an_external_redis_is_adopted_and_never_touched() {
    let platform = require_platform!();
    let admin = require_redis!();
    let t = Fixture::new(platform, "redis-ext").await;
    admin_secret(&t.client, &t.ns.name, "redis-admin", &admin).await;
    let mut root = admin_conn(&admin).await;
    let marker = format!("external-test:{}", t.ns.name);
    let () = redis::cmd("SET")
        .arg(&marker)
        .arg("kept")
        .query_async(&mut root)
        .await
        .unwrap();
    t.apply_env(
        "adopted",
        json!({"engine": "redis", "tier": "production",
               "external": {"connectionSecretRef": {"name": "redis-admin"}}}),
    )
    .await;
    let env = t.ready("adopted").await;
    let status = env.status.unwrap();
    assert_eq!(status.cache.expect("figures").scope, "server");
    let secret = t.connection("adopted").await;
    assert_eq!(secret["username"], admin.2);
    assert_eq!(secret["keyPrefix"], "");
    assert!(secret["uri"].starts_with("redis://"));
    t.delete_env("adopted").await;
    let kept: String = redis::cmd("GET")
        .arg(&marker)
        .query_async(&mut root)
        .await
        .unwrap();
    assert_eq!(kept, "kept", "an adopted server's keys stay");
    let _: i64 = redis::cmd("DEL")
        .arg(&marker)
        .query_async(&mut root)
        .await
        .unwrap();
    t.finish().await;
}
