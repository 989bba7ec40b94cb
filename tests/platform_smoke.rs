//! Proves each part of the test platform is the real thing (issue: test platform).
//! Run with the platform up: `e2e/platform.sh up && eval "$(e2e/platform.sh env)" && cargo test --test platform_smoke`.

mod support;

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    time::Duration,
};

use futures::TryStreamExt;
use k8s_openapi::{
    api::{
        apps::v1::StatefulSet,
        core::v1::{ConfigMap, Pod},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, ResourceExt,
    api::{
        ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
    },
    runtime::wait::{await_condition, conditions},
};
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, path::Path};
use sqlx::{Connection, PgConnection};

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn crd_validation_rule_is_enforced_by_the_api_server() {
    let _platform = require_platform!();
    let client = support::client().await;
    let ns = support::TestNamespace::new(&client, "smoke-cel").await;
    let group = "smoke.lifeboat.dev";
    let crd: CustomResourceDefinition = serde_json::from_value(serde_json::json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("widgets.{group}")},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {"spec": {
                        "type": "object",
                        "properties": {"replicas": {"type": "integer"}},
                        "x-kubernetes-validations": [{
                            "rule": "self.replicas <= 5",
                            "message": "replicas must be at most 5"
                        }]
                    }}
                }}
            }]
        }
    }))
    .unwrap();
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    crds.patch(
        &crd.name_any(),
        &PatchParams::apply("lifeboat-smoke").force(),
        &Patch::Apply(&crd),
    )
    .await
    .expect("server-side apply of the CRD");
    tokio::time::timeout(
        WAIT,
        await_condition(
            crds.clone(),
            &crd.name_any(),
            conditions::is_crd_established(),
        ),
    )
    .await
    .expect("CRD established in time")
    .unwrap();

    let gvk = GroupVersionKind::gvk(group, "v1", "Widget");
    let widgets = Api::<DynamicObject>::namespaced_with(
        client.clone(),
        &ns.name,
        &ApiResource::from_gvk_with_plural(&gvk, "widgets"),
    );
    let widget = |name: &str, replicas: i64| -> DynamicObject {
        serde_json::from_value(serde_json::json!({
            "apiVersion": format!("{group}/v1"), "kind": "Widget",
            "metadata": {"name": name}, "spec": {"replicas": replicas}
        }))
        .unwrap()
    };
    // The rule is only known to the API server: an accepted object proves the CRD works, a rejected one
    // proves the CEL rule runs there.
    widgets
        .create(&PostParams::default(), &widget("small", 3))
        .await
        .expect("a valid object is accepted");
    let err = widgets
        .create(&PostParams::default(), &widget("big", 7))
        .await
        .expect_err("an object breaking the rule is rejected");
    match err {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 422, "{status:?}");
            assert!(
                status.message.contains("replicas must be at most 5"),
                "{}",
                status.message
            );
        }
        other => panic!("unexpected error {other}"),
    }
    ns.cleanup().await;
}

#[tokio::test]
async fn owned_object_is_garbage_collected_after_its_owner() {
    let _platform = require_platform!();
    let client = support::client().await;
    let ns = support::TestNamespace::new(&client, "smoke-gc").await;
    let cms = Api::<ConfigMap>::namespaced(client.clone(), &ns.name);
    let owner: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "owner"}, "data": {"role": "owner"}
    }))
    .unwrap();
    let owner = cms.create(&PostParams::default(), &owner).await.unwrap();
    let child: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "child", "ownerReferences": [{
            "apiVersion": "v1", "kind": "ConfigMap", "name": "owner",
            "uid": owner.uid().unwrap(), "blockOwnerDeletion": true
        }]},
        "data": {"role": "child"}
    }))
    .unwrap();
    cms.create(&PostParams::default(), &child).await.unwrap();
    cms.delete("owner", &DeleteParams::background())
        .await
        .unwrap();
    support::eventually("the garbage collector to delete the child", WAIT, || {
        let cms = cms.clone();
        async move { cms.get_opt("child").await.unwrap().is_none().then_some(()) }
    })
    .await;
    ns.cleanup().await;
}

#[tokio::test]
async fn statefulset_controller_creates_its_pod() {
    let _platform = require_platform!();
    let client = support::client().await;
    let ns = support::TestNamespace::new(&client, "smoke-sts").await;
    let sts: StatefulSet = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "db"},
        "spec": {
            "serviceName": "db", "replicas": 1,
            "selector": {"matchLabels": {"app": "db"}},
            "template": {
                "metadata": {"labels": {"app": "db"}},
                "spec": {"containers": [{"name": "postgres", "image": "postgres:18"}]}
            }
        }
    }))
    .unwrap();
    Api::<StatefulSet>::namespaced(client.clone(), &ns.name)
        .create(&PostParams::default(), &sts)
        .await
        .unwrap();
    let pods = Api::<Pod>::namespaced(client.clone(), &ns.name);
    let pod = support::eventually("the StatefulSet controller to create db-0", WAIT, || {
        let pods = pods.clone();
        async move { pods.get_opt("db-0").await.unwrap() }
    })
    .await;
    let owner = &pod.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("StatefulSet", "db")
    );
    ns.cleanup().await;
}

async fn round_trip_and_dump(pg: &support::Postgres, expected_major: u32) {
    let mut conn = PgConnection::connect(&pg.url("postgres"))
        .await
        .expect("connect with the generated credentials");
    let version: i32 = sqlx::query_scalar("select current_setting('server_version_num')::int")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        version as u32 / 10000,
        expected_major,
        "server version {version}"
    );
    let db = format!("smoke_{}", support::random_suffix());
    sqlx::query(sqlx::AssertSqlSafe(format!("create database {db}")))
        .execute(&mut conn)
        .await
        .unwrap();
    let mut dbconn = PgConnection::connect(&pg.url(&db)).await.unwrap();
    sqlx::query("create table lifeboat_smoke (id int primary key, note text)")
        .execute(&mut dbconn)
        .await
        .unwrap();
    sqlx::query("insert into lifeboat_smoke values ($1, $2)")
        .bind(7)
        .bind("round trip")
        .execute(&mut dbconn)
        .await
        .unwrap();
    let note: String = sqlx::query_scalar("select note from lifeboat_smoke where id = 7")
        .fetch_one(&mut dbconn)
        .await
        .unwrap();
    assert_eq!(note, "round trip");
    dbconn.close().await.unwrap();

    // A wrong password is refused: the server really authenticates.
    let wrong = support::Postgres {
        password: "not-the-password".into(),
        ..pg.clone()
    };
    assert!(PgConnection::connect(&wrong.url("postgres")).await.is_err());

    let out = tokio::process::Command::new("pg_dump")
        .args([
            "-h",
            &pg.host,
            "-p",
            &pg.port.to_string(),
            "-U",
            &pg.user,
            "-d",
            &db,
            "--no-password",
        ])
        .env("PGPASSWORD", &pg.password)
        .output()
        .await
        .expect("pg_dump on PATH (eval \"$(e2e/platform.sh env)\")");
    assert!(
        out.status.success(),
        "pg_dump failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dump = String::from_utf8(out.stdout).unwrap();
    assert!(
        dump.contains("-- Dumped by pg_dump version 18."),
        "dump header: {}",
        &dump[..dump.len().min(400)]
    );
    assert!(
        dump.contains("CREATE TABLE public.lifeboat_smoke"),
        "dump lacks the table"
    );
    assert!(dump.contains("round trip"), "dump lacks the row");
    sqlx::query(sqlx::AssertSqlSafe(format!("drop database {db}")))
        .execute(&mut conn)
        .await
        .unwrap();
}

#[tokio::test]
async fn postgres_18_round_trip_and_dump() {
    let platform = require_platform!();
    round_trip_and_dump(&platform.pg, 18).await;
}

#[tokio::test]
async fn postgres_15_round_trip_and_dump() {
    let platform = require_platform!();
    round_trip_and_dump(&platform.pg15, 15).await;
}

#[tokio::test]
async fn s3_put_get_list_delete() {
    let platform = require_platform!();
    let s3 = &platform.s3;
    let store = s3.store(&s3.secret_key);
    let prefix = Path::from(format!("smoke-{}", support::random_suffix()));
    let key = prefix.clone().join("object.bin");
    let body: Vec<u8> = (0..=255u8).cycle().take(1 << 20).collect();
    store
        .put(&key, PutPayload::from(body.clone()))
        .await
        .expect("put");
    let got = store.get(&key).await.expect("get").bytes().await.unwrap();
    assert_eq!(got.as_ref(), body.as_slice());
    let listed: Vec<_> = store.list(Some(&prefix)).try_collect().await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].location, key);
    assert_eq!(listed[0].size, body.len() as u64);
    store.delete(&key).await.expect("delete");
    let listed: Vec<_> = store.list(Some(&prefix)).try_collect().await.unwrap();
    assert!(listed.is_empty());

    // Wrong credentials are refused: the server really authenticates.
    let wrong = s3.store("wrong-secret");
    assert!(
        wrong
            .put(&key, PutPayload::from_static(b"x"))
            .await
            .is_err()
    );
}

/// Sends one command as a RESP array of bulk strings and reads its reply: a simple string, error or
/// integer as its line (`+PONG`, `-NOAUTH ...`, `:1`), a bulk string as its content.
fn resp_call(conn: &mut BufReader<TcpStream>, args: &[&str]) -> String {
    let mut command = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        command.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        command.extend_from_slice(arg.as_bytes());
        command.extend_from_slice(b"\r\n");
    }
    conn.get_mut()
        .write_all(&command)
        .expect("send a RESP command");
    let mut line = String::new();
    conn.read_line(&mut line).expect("read a RESP reply");
    let line = line.trim_end_matches("\r\n").to_owned();
    match line.strip_prefix('$') {
        Some(len) => {
            let len: usize = len.parse().expect("a bulk string's length");
            let mut content = vec![0; len + 2];
            conn.read_exact(&mut content).expect("read a bulk string");
            content.truncate(len);
            String::from_utf8(content).expect("a UTF-8 bulk string")
        }
        None => line,
    }
}

/// The platform's Redis over plain RESP: the admin user authenticates and gets PONG; without AUTH, and
/// as the disabled `default` user (whatever the password), every command is refused.
#[test]
fn redis_admin_authenticates_and_the_default_user_is_refused() {
    let Some((host, port, user, password)) = support::redis::redis_admin() else {
        return;
    };
    let connect = || {
        let stream = TcpStream::connect((host.as_str(), port)).expect("a TCP connection to Redis");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        BufReader::new(stream)
    };

    let mut admin = connect();
    assert_eq!(resp_call(&mut admin, &["AUTH", &user, &password]), "+OK");
    assert_eq!(resp_call(&mut admin, &["PING"]), "+PONG");
    assert_eq!(resp_call(&mut admin, &["ACL", "WHOAMI"]), user);
    let version = std::env::var("LIFEBOAT_REDIS_VERSION").expect("LIFEBOAT_REDIS_VERSION");
    let info = resp_call(&mut admin, &["INFO", "server"]);
    assert!(
        info.contains(&format!("redis_version:{version}\r\n")),
        "INFO server does not report version {version}: {info}"
    );

    let mut anonymous = connect();
    let reply = resp_call(&mut anonymous, &["PING"]);
    assert!(reply.starts_with("-NOAUTH"), "PING without AUTH: {reply}");
    let refused: [&[&str]; 4] = [
        &["AUTH", "default", "anything"],
        &["AUTH", "default", &password],
        &["AUTH", "anything"], // the one-argument form authenticates as `default`
        &["AUTH", &user, "wrong-password"],
    ];
    for auth in refused {
        let reply = resp_call(&mut anonymous, auth);
        assert!(reply.starts_with("-WRONGPASS"), "{:?}: {reply}", &auth[..2]);
    }
    let reply = resp_call(&mut anonymous, &["PING"]);
    assert!(
        reply.starts_with("-NOAUTH"),
        "PING after refused AUTHs: {reply}"
    );
}
