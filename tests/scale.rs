//! 100 `ci` environments applied at once all reach Ready on one shared server; deleting them drops all 100
//! databases and roles.

mod support;

use std::time::{Duration, Instant};

use futures::future::join_all;
use kube::Api;
use lifeboat::api::DatabaseEnvironment;
use serde_json::json;

const COUNT: usize = 100;
const WAIT: Duration = Duration::from_secs(300);

#[tokio::test]
async fn hundred_ci_environments_at_once() {
    let platform = require_platform!();
    let client = support::client().await;
    support::install_crds(&client).await;
    let ns = support::TestNamespace::new(&client, "scale").await;
    support::create_admin_secret(&client, &ns.name, "pg-admin", &platform.pg, json!({})).await;
    let op = support::start_operator(&client, support::settings(&ns.name, "op"));
    let envs: Api<DatabaseEnvironment> = Api::namespaced(client.clone(), &ns.name);

    let start = Instant::now();
    join_all((0..COUNT).map(|i| {
        let (client, ns) = (client.clone(), ns.name.clone());
        async move {
            support::apply_json(&client, &ns, json!({
                "apiVersion": "lifeboat.dev/v1alpha1", "kind": "DatabaseEnvironment", "metadata": {"name": format!("pr-{i}")},
                "spec": {"tier": "ci", "server": {"adminSecretRef": {"name": "pg-admin"}}}
            }))
            .await
            .unwrap()
        }
    }))
    .await;
    let ready = support::eventually("all environments Ready", WAIT, || {
        let envs = envs.clone();
        async move {
            let list = envs.list(&Default::default()).await.unwrap();
            let n = list
                .items
                .iter()
                .filter(|e| support::is_ready(e.status.as_ref()))
                .count();
            (n == COUNT).then_some(n)
        }
    })
    .await;
    println!(
        "{ready} ci environments Ready {:.1}s after applying them at once",
        start.elapsed().as_secs_f64()
    );

    let prefix = format!("{}_pr_", ns.name.replace('-', "_"));
    let count = |catalog: &'static str| {
        let (pg, prefix) = (platform.pg.clone(), prefix.clone());
        async move {
            let mut c = support::admin_conn(&pg, "postgres").await;
            let sql = if catalog == "db" {
                "select count(*) from pg_database where datname like $1 || '%'"
            } else {
                "select count(*) from pg_roles where rolname like $1 || '%'"
            };
            sqlx::query_scalar::<_, i64>(sql)
                .bind(prefix)
                .fetch_one(&mut c)
                .await
                .unwrap()
        }
    };
    assert_eq!(
        (count("db").await, count("role").await),
        (COUNT as i64, COUNT as i64)
    );

    let start = Instant::now();
    support::delete_all(&envs, WAIT).await;
    println!(
        "{COUNT} environments deleted (databases and roles dropped) in {:.1}s",
        start.elapsed().as_secs_f64()
    );
    assert_eq!(
        (count("db").await, count("role").await),
        (0, 0),
        "every database and role dropped"
    );
    op.stop().await.unwrap();
    ns.cleanup().await;
}
