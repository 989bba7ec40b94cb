//! Attacks on a shared server, tried as a tenant would: someone who may create DatabaseEnvironments in
//! their own namespace, read that namespace's Secrets, and do anything inside their own database. Each
//! test is one attack from issue 8 (or its review) against the real API server and PostgreSQL 18; each
//! asserts the attack failed and nothing of another tenant's was reached.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::{
    Api,
    api::{DeleteParams, PostParams},
};
use lifeboat::api::{DatabaseEnvironment, DatabaseServer};
use serde_json::json;
use sqlx::{Connection, PgConnection};
use support::{Fixture, Postgres, TestNamespace};

const WAIT: Duration = Duration::from_secs(60);

async fn scalar<T>(pg: &Postgres, database: &str, sql: &str, bind: &str) -> T
where
    T: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send + Unpin,
{
    let mut conn = support::admin_conn(pg, database).await;
    let value = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
        .bind(bind)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    value
}

/// Registers a DatabaseServer for the fixture's PostgreSQL with `spec` (its admin Secret is made in
/// the fixture's namespace, which the test operator uses as its own); returns its generated name.
async fn database_server(t: &Fixture, spec: serde_json::Value) -> String {
    let name = format!("sec-{}", support::random_suffix());
    support::create_admin_secret(
        &t.client,
        &t.ns.name,
        "server-admin",
        &t.platform.pg,
        json!({"sslmode": "disable"}),
    )
    .await;
    let mut spec = spec;
    spec["adminSecretRef"] = json!({"name": "server-admin"});
    Api::<DatabaseServer>::all(t.client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "lifeboat.dev/v1alpha1", "kind": "DatabaseServer",
                "metadata": {"name": name}, "spec": spec
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    name
}

/// Scenario 1 (CVE-2018-1058 class): a function planted in the template's `public` schema with a
/// better-matching signature than the catalog's must never run in Lifeboat's admin session.
#[tokio::test]
async fn planted_functions_in_a_template_never_run_as_admin() {
    let platform = require_platform!();
    let t = Fixture::new(platform, "sec-planted").await;
    let pg = t.platform.pg.clone();
    t.apply_env(
        "tmpl",
        json!({"tier": "dev", "server": {"adminSecretRef": {"name": "pg-admin"}}}),
    )
    .await;
    let template = t.database("tmpl").await;
    // The tenant, as its own role in its own database, plants traps for every catalog function the
    // hand-over of a clone uses. Each one records that it ran and tries to make the tenant superuser.
    let mut app = PgConnection::connect(&t.uri("tmpl").await).await.unwrap();
    let trap = |signature: &str, returns: &str, body_result: &str| {
        format!(
            "create function public.{signature} returns {returns} language plpgsql as $f$
             begin
               insert into public.trap_calls values ('{signature}');
               execute 'alter role ' || quote_ident('{template}') || ' superuser';
               return {body_result};
             end $f$;"
        )
    };
    let sql = [
        "create table public.trap_calls (what text); grant all on public.trap_calls to public;"
            .to_string(),
        trap(
            "format(a text, b name, c text)",
            "text",
            "pg_catalog.format(a, b, c)",
        ),
        trap(
            "format(a text, b name, c name, d text)",
            "text",
            "pg_catalog.format(a, b, c, d)",
        ),
        trap(
            "pg_get_userbyid(o oid)",
            "name",
            "pg_catalog.pg_get_userbyid(o)",
        ),
        trap(
            "shobj_description(o oid, c name)",
            "text",
            "pg_catalog.shobj_description(o, c)",
        ),
        // A table for the hand-over to find.
        "create table public.customers (id int);".to_string(),
    ]
    .join("\n");
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&mut app)
        .await
        .unwrap();
    app.close().await.unwrap();
    // The server's administrator marks the team's database as a template (the legitimate use).
    let mut admin = support::admin_conn(&pg, "postgres").await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "alter database \"{template}\" is_template true"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    admin.close().await.unwrap();

    t.apply_env(
        "clone",
        json!({"tier": "ci", "server": {"adminSecretRef": {"name": "pg-admin"}, "template": template}}),
    )
    .await;
    let clone = t.database("clone").await;
    let calls: i64 = scalar(
        &pg,
        &clone,
        "select count(*) from public.trap_calls where $1 <> ''",
        "x",
    )
    .await;
    assert_eq!(calls, 0, "a planted function ran in the admin session");
    for role in [&template, &clone] {
        let superuser: bool = scalar(
            &pg,
            "postgres",
            "select rolsuper from pg_roles where rolname = $1",
            role,
        )
        .await;
        assert!(!superuser, "role {role} became superuser");
    }
    // The hand-over still happened: the clone's table belongs to the clone's role.
    let owner: String = scalar(
        &pg,
        &clone,
        "select pg_get_userbyid(relowner)::text from pg_class where relname = $1",
        "customers",
    )
    .await;
    assert_eq!(owner, clone);

    t.delete_env("clone").await;
    let mut admin = support::admin_conn(&pg, "postgres").await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "alter database \"{template}\" is_template false"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    admin.close().await.unwrap();
    t.delete_env("tmpl").await;
    t.finish().await;
}

/// Scenario 2: `server.template` naming a database that is not a template (another team's) is refused
/// before anything is created; a DatabaseServer may list it explicitly.
#[tokio::test]
async fn only_marked_or_listed_databases_may_be_cloned() {
    let platform = require_platform!();
    let t = Fixture::new(platform, "sec-tmpl").await;
    let pg = t.platform.pg.clone();
    t.apply_env(
        "victim",
        json!({"tier": "dev", "server": {"adminSecretRef": {"name": "pg-admin"}}}),
    )
    .await;
    let victim = t.database("victim").await;
    for template in [victim.as_str(), "postgres"] {
        let name = format!("thief-{}", if template == "postgres" { "pg" } else { "db" });
        t.apply_env(
            &name,
            json!({"tier": "ci", "server": {"adminSecretRef": {"name": "pg-admin"}, "template": template}}),
        )
        .await;
        let env = t.condition(&name, "Stalled", "TemplateNotAllowed").await;
        let (_, _, msg) = support::condition(env.status.as_ref(), "Stalled").unwrap();
        assert!(msg.contains(template) && msg.contains("template"), "{msg}");
        let db = lifeboat::engines::postgres::sql::default_name(&t.ns.name, &name);
        let n: i64 = scalar(
            &pg,
            "postgres",
            "select count(*) from pg_database where datname = $1",
            &db,
        )
        .await;
        assert_eq!(n, 0, "nothing was cloned from {template}");
        t.delete_env(&name).await;
    }

    // A DatabaseServer whose owners list the database allows it.
    let server = database_server(
        &t,
        json!({
            "allowedNamespaces": {"matchLabels": {"kubernetes.io/metadata.name": t.ns.name}},
            "templates": [victim],
            "connectionLimit": 5
        }),
    )
    .await;
    let servers: Api<DatabaseServer> = Api::all(t.client.clone());
    t.apply_env(
        "listed",
        json!({"tier": "ci", "server": {"serverRef": {"name": server}, "template": victim}}),
    )
    .await;
    let listed = t.database("listed").await;
    let limit: i32 = scalar(
        &pg,
        "postgres",
        "select rolconnlimit from pg_roles where rolname = $1",
        &listed,
    )
    .await;
    assert_eq!(limit, 5, "the server's per-role connection limit");
    t.delete_env("listed").await;
    servers
        .delete(&server, &DeleteParams::default())
        .await
        .unwrap();
    t.delete_env("victim").await;
    t.finish().await;
}

/// A DatabaseServer serves only the namespaces its `allowedNamespaces` selects.
#[tokio::test]
async fn a_server_refuses_namespaces_it_does_not_allow() {
    let platform = require_platform!();
    let t = Fixture::new(platform, "sec-nsallow").await;
    let server = database_server(
        &t,
        json!({"allowedNamespaces": {"matchLabels": {"team": "payments"}}}),
    )
    .await;
    let servers: Api<DatabaseServer> = Api::all(t.client.clone());
    t.apply_env(
        "app",
        json!({"tier": "dev", "server": {"serverRef": {"name": server}}}),
    )
    .await;
    let env = t.condition("app", "Stalled", "NamespaceNotAllowed").await;
    let (_, _, msg) = support::condition(env.status.as_ref(), "Stalled").unwrap();
    assert!(msg.contains(&t.ns.name) && msg.contains(&server), "{msg}");
    let db = lifeboat::engines::postgres::sql::default_name(&t.ns.name, "app");
    let n: i64 = scalar(
        &t.platform.pg,
        "postgres",
        "select count(*) from pg_roles where rolname = $1",
        &db,
    )
    .await;
    assert_eq!(n, 0, "no role was created");

    // Labelling the namespace lets it in.
    let namespaces: Api<Namespace> = Api::all(t.client.clone());
    namespaces
        .patch(
            &t.ns.name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"metadata": {"labels": {"team": "payments"}}})),
        )
        .await
        .unwrap();
    t.ready("app").await;
    t.delete_env("app").await;
    servers
        .delete(&server, &DeleteParams::default())
        .await
        .unwrap();
    t.finish().await;
}

/// Another tenant's role may not even connect to a database, and an environment's role has no
/// privilege beyond logging in, whatever was done to it since.
#[tokio::test]
async fn tenants_cannot_connect_to_each_other_or_keep_privileges() {
    let platform = require_platform!();
    let t = Fixture::new(platform, "sec-connect").await;
    let pg = t.platform.pg.clone();
    for name in ["a", "b"] {
        t.apply_env(
            name,
            json!({"tier": "dev", "server": {"adminSecretRef": {"name": "pg-admin"}}}),
        )
        .await;
    }
    let (a, b) = (t.database("a").await, t.database("b").await);
    // b's credentials, a's database.
    let b_uri = t.uri("b").await;
    let at = b_uri
        .rfind(&format!("/{b}"))
        .expect("the database in the URI");
    let into_a = format!("{}/{a}{}", &b_uri[..at], &b_uri[at + 1 + b.len()..]);
    assert_ne!(into_a, b_uri);
    let err = PgConnection::connect(&into_a)
        .await
        .expect_err("b's role connects to a's database");
    assert!(err.to_string().contains("permission denied"), "{err}");

    // The password was never sent in the clear: the role stores a SCRAM verifier.
    let stored: String = scalar(
        &pg,
        "postgres",
        "select rolpassword from pg_authid where rolname = $1",
        &a,
    )
    .await;
    assert!(stored.starts_with("SCRAM-SHA-256$"), "{stored}");
    let password = t.uri("a").await;
    let password = password
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split('@').next())
        .and_then(|userinfo| userinfo.split(':').nth(1))
        .unwrap()
        .to_string();
    assert!(!stored.contains(&password));

    // Someone with admin rights hands the role a privilege; the next check takes it away.
    let mut admin = support::admin_conn(&pg, "postgres").await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "alter role \"{a}\" createdb createrole"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    admin.close().await.unwrap();
    t.apply_env(
        "a",
        json!({"tier": "dev", "server": {"adminSecretRef": {"name": "pg-admin"}}, "healthCheck": {"periodSeconds": 5}}),
    )
    .await;
    let pg2 = pg.clone();
    let role = a.clone();
    support::eventually("the extra privileges to be revoked", WAIT, move || {
        let (pg, role) = (pg2.clone(), role.clone());
        async move {
            let elevated: bool = scalar(
                &pg,
                "postgres",
                "select rolsuper or rolcreatedb or rolcreaterole from pg_roles where rolname = $1",
                &role,
            )
            .await;
            (!elevated).then_some(())
        }
    })
    .await;
    t.delete_env("a").await;
    t.delete_env("b").await;
    t.finish().await;
}

/// Scenario 3: the per-pull-request pattern. Deleting the whole namespace (environment, connection
/// Secret and admin Secret together) finishes, and the database and role are dropped.
#[tokio::test]
async fn deleting_a_namespace_drops_its_databases_and_finishes() {
    let platform = require_platform!();
    let client = support::client().await;
    support::install_crds(&client).await;
    // The operator lives elsewhere (its Lease must outlive the PR namespace).
    let control = TestNamespace::new(&client, "sec-control").await;
    let pr = TestNamespace::new(&client, "sec-pr").await;
    let mut settings = support::settings(&control.name, "op");
    settings.controllers.watch_namespace = Some(pr.name.clone());
    let op = support::start_operator(&client, settings);
    support::create_admin_secret(&client, &pr.name, "pg-admin", &platform.pg, json!({})).await;
    let envs: Api<DatabaseEnvironment> = Api::namespaced(client.clone(), &pr.name);
    for name in ["app", "never-ready"] {
        let spec = if name == "app" {
            json!({"tier": "ci", "server": {"adminSecretRef": {"name": "pg-admin"}}})
        } else {
            // Never Ready (its health query fails), after its role and database exist.
            json!({"tier": "ci", "server": {"adminSecretRef": {"name": "pg-admin"}},
                   "healthCheck": {"query": "select * from missing_table"}})
        };
        support::apply_json(
            &client,
            &pr.name,
            json!({"apiVersion": "lifeboat.dev/v1alpha1", "kind": "DatabaseEnvironment", "metadata": {"name": name}, "spec": spec}),
        )
        .await
        .unwrap();
    }
    support::wait_for(&envs, "app", "Ready", WAIT, |e| {
        support::is_ready(e.status.as_ref())
    })
    .await;
    support::wait_for(&envs, "never-ready", "HealthCheckFailed", WAIT, |e| {
        support::has_condition(e.status.as_ref(), "Stalled", "HealthCheckFailed")
    })
    .await;
    let names: Vec<String> = ["app", "never-ready"]
        .iter()
        .map(|n| lifeboat::engines::postgres::sql::default_name(&pr.name, n))
        .collect();
    for db in &names {
        let n: i64 = scalar(
            &platform.pg,
            "postgres",
            "select count(*) from pg_database where datname = $1",
            db,
        )
        .await;
        assert_eq!(n, 1, "{db} exists before the namespace is deleted");
    }

    let started = std::time::Instant::now();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .delete(&pr.name, &DeleteParams::background())
        .await
        .unwrap();
    let (ns_api, ns_name) = (namespaces.clone(), pr.name.clone());
    support::eventually(
        "the PR namespace to be gone",
        Duration::from_secs(120),
        move || {
            let (api, name) = (ns_api.clone(), ns_name.clone());
            async move { api.get_opt(&name).await.unwrap().is_none().then_some(()) }
        },
    )
    .await;
    println!(
        "namespace deleted in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    for db in &names {
        let dbs: i64 = scalar(
            &platform.pg,
            "postgres",
            "select count(*) from pg_database where datname = $1",
            db,
        )
        .await;
        let roles: i64 = scalar(
            &platform.pg,
            "postgres",
            "select count(*) from pg_roles where rolname = $1",
            db,
        )
        .await;
        assert_eq!((dbs, roles), (0, 0), "{db}: database and role dropped");
    }
    op.stop().await.unwrap();
    control.cleanup().await;
}

/// An environment never overwrites an object of its names that it did not create: a hand-written
/// `<name>-connection` Secret stays as it was.
#[tokio::test]
async fn objects_lifeboat_did_not_create_are_never_overwritten() {
    let platform = require_platform!();
    let t = Fixture::new(platform, "sec-overwrite").await;
    support::create_admin_secret(
        &t.client,
        &t.ns.name,
        "ext-source",
        &t.platform.pg,
        json!({"database": "postgres"}),
    )
    .await;
    let secrets: Api<Secret> = Api::namespaced(t.client.clone(), &t.ns.name);
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "ext-connection"}, "stringData": {"mine": "keep me"}}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    t.apply_env(
        "ext",
        json!({"tier": "dev", "external": {"connectionSecretRef": {"name": "ext-source"}}}),
    )
    .await;
    let env = t.condition("ext", "Stalled", "ObjectConflict").await;
    let (_, _, msg) = support::condition(env.status.as_ref(), "Stalled").unwrap();
    assert!(msg.contains("ext-connection"), "{msg}");
    let secret = secrets.get("ext-connection").await.unwrap();
    let data = secret.data.unwrap();
    assert_eq!(data.keys().collect::<Vec<_>>(), vec!["mine"]);
    assert_eq!(data["mine"].0, b"keep me");
    t.finish().await;
}

/// Slow work is bounded: with one work slot, an environment whose seed never ends is stopped at the
/// work timeout (and reported), and the next environment still gets its turn; a health query that
/// hangs fails after `healthCheck.timeoutSeconds`.
#[tokio::test]
async fn slow_seeds_and_health_queries_cannot_starve_others() {
    let platform = require_platform!();
    let client = support::client().await;
    support::install_crds(&client).await;
    let ns = TestNamespace::new(&client, "sec-starve").await;
    let mut settings = support::settings(&ns.name, "op");
    settings.controllers.work_limits = lifeboat::controllers::work::Limits {
        global: 1,
        per_namespace: 1,
    };
    settings.controllers.work_timeout = Some(Duration::from_secs(4));
    let op = support::start_operator(&client, settings);
    support::create_admin_secret(&client, &ns.name, "pg-admin", &platform.pg, json!({})).await;
    support::apply_json(
        &client,
        &ns.name,
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "slow"},
               "data": {"seed.sql": "select pg_sleep(100000);"}}),
    )
    .await
    .unwrap();
    let envs: Api<DatabaseEnvironment> = Api::namespaced(client.clone(), &ns.name);
    let specs = [
        (
            "slow-seed",
            json!({"tier": "dev", "server": {"adminSecretRef": {"name": "pg-admin"}},
                             "seed": {"configMapRef": {"name": "slow"}}}),
        ),
        (
            "hanging-health",
            json!({"tier": "dev", "server": {"adminSecretRef": {"name": "pg-admin"}},
                                  "healthCheck": {"query": "select pg_sleep(100000)", "timeoutSeconds": 1}}),
        ),
        (
            "fast",
            json!({"tier": "dev", "server": {"adminSecretRef": {"name": "pg-admin"}}}),
        ),
    ];
    let started = std::time::Instant::now();
    for (name, spec) in &specs {
        support::apply_json(
            &client,
            &ns.name,
            json!({"apiVersion": "lifeboat.dev/v1alpha1", "kind": "DatabaseEnvironment", "metadata": {"name": name}, "spec": spec}),
        )
        .await
        .unwrap();
    }
    let slow = support::wait_for(&envs, "slow-seed", "WorkTimedOut", WAIT, |e| {
        support::has_condition(e.status.as_ref(), "Reconciling", "WorkTimedOut")
    })
    .await;
    let (_, _, msg) = support::condition(slow.status.as_ref(), "Reconciling").unwrap();
    assert!(msg.contains("4s"), "{msg}");
    let hanging = support::wait_for(&envs, "hanging-health", "HealthCheckFailed", WAIT, |e| {
        support::has_condition(e.status.as_ref(), "Stalled", "HealthCheckFailed")
    })
    .await;
    let (_, _, msg) = support::condition(hanging.status.as_ref(), "Stalled").unwrap();
    assert!(
        msg.contains("statement timeout") || msg.contains("within 1s"),
        "{msg}"
    );
    support::wait_for(&envs, "fast", "Ready", WAIT, |e| {
        support::is_ready(e.status.as_ref())
    })
    .await;
    println!(
        "fast environment Ready {:.1}s after the slow ones were applied (one work slot)",
        started.elapsed().as_secs_f64()
    );
    // The timed-out seed's statement was stopped by the server too: no session still sleeps.
    let db = lifeboat::engines::postgres::sql::default_name(&ns.name, "slow-seed");
    let pg = platform.pg.clone();
    support::eventually("the slow seed's session to end", Duration::from_secs(15), move || {
        let (pg, db) = (pg.clone(), db.clone());
        async move {
            let n: i64 = scalar(
                &pg,
                "postgres",
                "select count(*) from pg_stat_activity where datname = $1 and query like '%pg_sleep%'",
                &db,
            )
            .await;
            (n == 0).then_some(())
        }
    })
    .await;
    for (name, _) in &specs {
        envs.delete(name, &DeleteParams::default()).await.unwrap();
    }
    support::delete_all(&envs, WAIT).await;
    op.stop().await.unwrap();
    ns.cleanup().await;
}
