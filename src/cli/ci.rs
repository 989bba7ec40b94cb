//! `lifeboat ci`: a migrated database for a pull request in one command. `up` turns a migrations folder
//! into ConfigMaps (split under the 1 MiB limit), applies a `ci` DatabaseEnvironment and starts a
//! MigrationRun; with `--wait` it follows both and prints the connection (`env`, `dotenv` or `json`), or
//! the failing file and line with a non-zero exit. `down` deletes what `up` made; `wait` waits for any
//! environment or run the way a pipeline needs: exit 0 when Ready/Succeeded, at once non-zero when
//! Stalled/Failed/RolledBack.
//!
//! Progress goes to stderr, one line per change (readable in a CI log and on a terminal); only the
//! connection goes to stdout. Installed as `kubectl-lifeboat`, the binary is also `kubectl lifeboat ci …`.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use serde_json::json;

use crate::{
    api::{
        DatabaseEnvironment, MigrationRun,
        migration_run::{MigrationPhase, MigrationRunStatus},
    },
    domain::migrations::{self, RawFile},
};

/// Label on everything `lifeboat ci up` makes, valued with the environment's name.
pub const CI_LABEL: &str = "lifeboat.dev/ci";
/// Label telling the parts apart (`migrations`, `seed`).
pub const PART_LABEL: &str = "lifeboat.dev/ci-part";
/// Most bytes of files in one ConfigMap (the API server stores at most 1 MiB per object).
pub const CONFIG_MAP_BUDGET: usize = 900 * 1024;
const FIELD_MANAGER: &str = "lifeboat-ci";

#[derive(clap::Subcommand)]
pub enum CiCommand {
    /// Create or update a `ci` environment and migrate it; with --wait, print its connection.
    Up(UpArgs),
    /// Delete what `up` made: the environment (and so its database and role), its runs, its ConfigMaps.
    Down(DownArgs),
    /// Wait for `databaseenvironment/NAME` (Ready) or `migrationrun/NAME` (Succeeded); exit 1 at once
    /// when it is Stalled, Failed or RolledBack, 2 at the timeout.
    Wait(WaitArgs),
}

#[derive(clap::Args)]
pub struct UpArgs {
    /// Name of the environment (e.g. `pr-123`); its Secret is `<name>-connection`.
    #[arg(long)]
    pub name: String,
    /// Folder of migration files: any layout MigrationRun reads (sqlx, golang-migrate, dbmate, Flyway
    /// names) and diesel's folders (`<version>_<name>/up.sql`, `down.sql`).
    #[arg(long)]
    pub migrations: Option<PathBuf>,
    /// SQL file run once after the database is created.
    #[arg(long)]
    pub seed: Option<PathBuf>,
    /// The DatabaseServer to provision on.
    #[arg(long, conflicts_with = "admin_secret")]
    pub server: Option<String>,
    /// Instead of --server: a Secret in the namespace with an admin connection to the server.
    #[arg(long)]
    pub admin_secret: Option<String>,
    /// DatabaseEnvironment to clone (`spec.server.templateFrom`): a template kept at the newest
    /// schema, e.g. the main branch's; the pull request's run then applies only its new migrations.
    #[arg(long, conflicts_with = "template_database")]
    pub template: Option<String>,
    /// Instead of --template: a template database on the server to clone (`spec.server.template`).
    #[arg(long)]
    pub template_database: Option<String>,
    /// Delete the environment this long after creation (e.g. `6h`).
    #[arg(long)]
    pub ttl: Option<String>,
    #[command(flatten)]
    pub namespace: NamespaceArg,
    /// Wait for the database and its migrations, then print the connection.
    #[arg(long)]
    pub wait: bool,
    #[command(flatten)]
    pub timeout: TimeoutArg,
    /// How the connection is printed.
    #[arg(long, value_enum, default_value = "env")]
    pub output: Output,
}

#[derive(clap::Args)]
pub struct DownArgs {
    /// Name of the environment `up` made.
    #[arg(long)]
    pub name: String,
    #[command(flatten)]
    pub namespace: NamespaceArg,
}

#[derive(clap::Args)]
pub struct WaitArgs {
    /// `databaseenvironment/NAME` (or `dbenv/`, `de/`) or `migrationrun/NAME` (or `mrun/`, `mr/`).
    pub target: String,
    #[command(flatten)]
    pub namespace: NamespaceArg,
    #[command(flatten)]
    pub timeout: TimeoutArg,
}

/// `--namespace`, shared by every `ci` subcommand.
#[derive(clap::Args)]
pub struct NamespaceArg {
    /// Namespace (default: the kubeconfig's).
    #[arg(id = "namespace", long = "namespace", short = 'n')]
    pub value: Option<String>,
}

impl NamespaceArg {
    fn resolve(&self, client: &Client) -> String {
        self.value
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_string())
    }
}

/// `--timeout`, shared by the subcommands that wait.
#[derive(clap::Args)]
pub struct TimeoutArg {
    /// Longest wait (e.g. `90s`, `5m`).
    #[arg(id = "timeout", long = "timeout", default_value = "5m", value_parser = parse_timeout)]
    pub value: Duration,
}

/// How `up --wait` prints the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// `export DATABASE_URL=…` and libpq's `PGHOST`, `PGPORT`, `PGDATABASE`, `PGUSER`, `PGPASSWORD`,
    /// for `eval "$(lifeboat ci up …)"`.
    Env,
    /// `KEY='value'` lines for a `.env` file.
    Dotenv,
    /// One JSON object.
    Json,
}

/// How a wait ended badly; the exit code says which.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    #[error("{0}")]
    Failed(String),
    #[error("{0}")]
    TimedOut(String),
}

impl WaitError {
    pub fn exit_code(&self) -> i32 {
        match self {
            WaitError::Failed(_) => 1,
            WaitError::TimedOut(_) => 2,
        }
    }
}

pub async fn execute(command: CiCommand) -> anyhow::Result<()> {
    let client = Client::try_default()
        .await
        .context("connecting to the cluster (kubeconfig or in-cluster config)")?;
    match command {
        CiCommand::Up(args) => up(client, args).await,
        CiCommand::Down(args) => down(client, args).await,
        CiCommand::Wait(args) => wait_target(client, args).await,
    }
}

fn parse_timeout(text: &str) -> Result<Duration, String> {
    text.parse::<kube::core::Duration>()
        .map(Into::into)
        .map_err(|_| format!("{text:?} is not a duration like 90s or 5m"))
}

/// The files of a migrations folder as ConfigMap keys (pure but for reading): flat `.sql` files as
/// they are, diesel's `<version>_<name>/up.sql` and `down.sql` as `<version>_<name>.up.sql` and
/// `.down.sql` (diesel's dashes in the version dropped, as diesel records it). Other files are skipped.
pub fn read_migrations(dir: &Path) -> anyhow::Result<Vec<RawFile>> {
    let mut files = Vec::new();
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("reading the folder {}", dir.display()))?;
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().to_string();
        if path.is_dir() {
            let Some((version, rest)) = name.split_once('_') else {
                continue;
            };
            let version: String = version.chars().filter(|c| *c != '-').collect();
            for (file, kind) in [("up.sql", "up"), ("down.sql", "down")] {
                let p = path.join(file);
                if p.is_file() {
                    let key = format!("{version}_{rest}.{kind}.sql");
                    files.push(RawFile::new("", &key, std::fs::read(&p)?));
                }
            }
        } else if name.ends_with(".sql") {
            files.push(RawFile::new("", &name, std::fs::read(&path)?));
        }
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(files)
}

/// Packs files into ConfigMap-sized parts, in name order (pure).
pub fn split(files: &[RawFile], budget: usize) -> Vec<Vec<&RawFile>> {
    let mut parts: Vec<Vec<&RawFile>> = Vec::new();
    let mut part: Vec<&RawFile> = Vec::new();
    let mut size = 0;
    for f in files {
        let bytes = f.name.len() + f.content.len();
        if !part.is_empty() && size + bytes > budget {
            parts.push(std::mem::take(&mut part));
            size = 0;
        }
        part.push(f);
        size += bytes;
    }
    if !part.is_empty() {
        parts.push(part);
    }
    parts
}

fn labels(name: &str, part: &str) -> serde_json::Value {
    json!({ CI_LABEL: name, PART_LABEL: part, "app.kubernetes.io/managed-by": "lifeboat-ci" })
}

async fn apply<K>(api: &Api<K>, name: &str, object: serde_json::Value) -> anyhow::Result<K>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&object),
    )
    .await
    .with_context(|| format!("applying {name}"))
}

async fn up(client: Client, args: UpArgs) -> anyhow::Result<()> {
    let ns = args.namespace.resolve(&client);
    if args.server.is_none() && args.admin_secret.is_none() {
        bail!("say where the database lives: --server <DatabaseServer> or --admin-secret <Secret>");
    }
    let files = match &args.migrations {
        Some(dir) => checked_migrations(dir)?,
        None => Vec::new(),
    };
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let parts = split(&files, CONFIG_MAP_BUDGET);
    apply_migration_maps(&maps, &args.name, &parts).await?;
    let seed = match &args.seed {
        Some(path) => Some(apply_seed_map(&maps, &args.name, path).await?),
        None => None,
    };
    let envs: Api<DatabaseEnvironment> = Api::namespaced(client.clone(), &ns);
    apply(
        &envs,
        &args.name,
        json!({
            "apiVersion": "lifeboat.dev/v1alpha1", "kind": "DatabaseEnvironment",
            "metadata": {"name": args.name, "labels": labels(&args.name, "environment")},
            "spec": environment_spec(&args, seed.as_deref()),
        }),
    )
    .await?;
    eprintln!("databaseenvironment/{} applied in {ns}", args.name);
    let runs: Api<MigrationRun> = Api::namespaced(client.clone(), &ns);
    let run = if files.is_empty() {
        None
    } else {
        let run = start_run(&runs, &args.name).await?;
        eprintln!(
            "migrationrun/{run} created: {} file(s) in {} ConfigMap(s)",
            files.len(),
            parts.len()
        );
        Some(run)
    };
    if !args.wait {
        return Ok(());
    }
    let deadline = Instant::now() + args.timeout.value;
    let secrets: Api<Secret> = Api::namespaced(client, &ns);
    let secret =
        wait_connection(&envs, &runs, &secrets, &args.name, run.as_deref(), deadline).await?;
    print!("{}", render(&secret_data(&secret), args.output));
    Ok(())
}

/// The migration files of `dir`, refused before anything is sent when the operator would refuse them.
fn checked_migrations(dir: &Path) -> anyhow::Result<Vec<RawFile>> {
    let files = read_migrations(dir)?;
    migrations::source::parse(&files).map_err(|e| {
        anyhow::anyhow!(
            "the migration files in {} are not usable: {e}",
            dir.display()
        )
    })?;
    Ok(files)
}

/// Applies one ConfigMap per part (`<name>-migrations-<i>`) and deletes the parts an earlier, longer
/// history left.
async fn apply_migration_maps(
    maps: &Api<ConfigMap>,
    name: &str,
    parts: &[Vec<&RawFile>],
) -> anyhow::Result<()> {
    let mut kept = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        let cm_name = format!("{name}-migrations-{i}");
        let data: BTreeMap<&str, String> = part
            .iter()
            .map(|f| {
                (
                    f.name.as_str(),
                    String::from_utf8_lossy(&f.content).to_string(),
                )
            })
            .collect();
        apply(
            maps,
            &cm_name,
            json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": cm_name, "labels": labels(name, "migrations")},
                "data": data,
            }),
        )
        .await?;
        kept.push(cm_name);
    }
    let selector = format!("{CI_LABEL}={name},{PART_LABEL}=migrations");
    for old in maps.list(&ListParams::default().labels(&selector)).await? {
        if !kept.contains(&old.name_any()) {
            maps.delete(&old.name_any(), &DeleteParams::default())
                .await?;
        }
    }
    Ok(())
}

/// Applies the seed file as the ConfigMap `<name>-seed`; returns its name.
async fn apply_seed_map(maps: &Api<ConfigMap>, name: &str, path: &Path) -> anyhow::Result<String> {
    let sql = std::fs::read_to_string(path)
        .with_context(|| format!("reading the seed {}", path.display()))?;
    let seed_name = format!("{name}-seed");
    apply(
        maps,
        &seed_name,
        json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": seed_name, "labels": labels(name, "seed")},
            "data": {"seed.sql": sql},
        }),
    )
    .await?;
    Ok(seed_name)
}

/// The `ci` environment's spec from the flags, with the seed ConfigMap when there is one (pure).
pub fn environment_spec(args: &UpArgs, seed_map: Option<&str>) -> serde_json::Value {
    let mut spec = json!({"tier": "ci", "server": {}});
    if let Some(server) = &args.server {
        spec["server"]["serverRef"] = json!({"name": server});
    }
    if let Some(secret) = &args.admin_secret {
        spec["server"]["adminSecretRef"] = json!({"name": secret});
    }
    if let Some(template) = &args.template {
        spec["server"]["templateFrom"] = json!({"name": template});
    }
    if let Some(database) = &args.template_database {
        spec["server"]["template"] = json!(database);
    }
    if let Some(ttl) = &args.ttl {
        spec["ttl"] = json!(ttl);
    }
    if let Some(seed_map) = seed_map {
        spec["seed"] = json!({"configMapRef": {"name": seed_map}, "key": "seed.sql"});
    }
    spec
}

/// Creates a MigrationRun of the environment's migration ConfigMaps; returns its generated name.
async fn start_run(runs: &Api<MigrationRun>, name: &str) -> anyhow::Result<String> {
    let run: MigrationRun = serde_json::from_value(json!({
        "apiVersion": "lifeboat.dev/v1alpha1", "kind": "MigrationRun",
        "metadata": {"generateName": format!("{name}-"), "labels": labels(name, "migration")},
        "spec": {
            "environmentRef": {"name": name},
            "source": {"configMapSelector": {"matchLabels": {CI_LABEL: name, PART_LABEL: "migrations"}}},
            "ttlSecondsAfterFinished": 86400,
        },
    }))?;
    Ok(runs.create(&PostParams::default(), &run).await?.name_any())
}

/// Waits for the environment and its run at once (each with its own progress lines) and reads the
/// connection Secret, written before the environment is Ready, while the run migrates. The first
/// failure ends the wait.
async fn wait_connection(
    envs: &Api<DatabaseEnvironment>,
    runs: &Api<MigrationRun>,
    secrets: &Api<Secret>,
    name: &str,
    run: Option<&str>,
    deadline: Instant,
) -> anyhow::Result<Secret> {
    let environment = async {
        wait_environment(envs, name, deadline, &mut Progress::default()).await?;
        secrets
            .get(&format!("{name}-connection"))
            .await
            .context("reading the connection Secret")
    };
    let migrated = async {
        if let Some(run) = run {
            wait_run(runs, run, deadline, &mut Progress::default()).await?;
        }
        anyhow::Ok(())
    };
    let (secret, ()) = futures::try_join!(environment, migrated)?;
    Ok(secret)
}

fn secret_data(secret: &Secret) -> BTreeMap<String, String> {
    secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).to_string()))
        .collect()
}

/// The connection as `DATABASE_URL` and libpq's variables, in `output`'s syntax (pure).
pub fn render(data: &BTreeMap<String, String>, output: Output) -> String {
    let get = |k: &str| data.get(k).cloned().unwrap_or_default();
    let vars = [
        ("DATABASE_URL", get("uri")),
        ("PGHOST", get("host")),
        ("PGPORT", get("port")),
        ("PGDATABASE", get("database")),
        ("PGUSER", get("username")),
        ("PGPASSWORD", get("password")),
        ("PGSSLMODE", get("sslmode")),
    ];
    // Single quotes keep every character but the quote itself, which is closed, escaped and reopened.
    let quote = |v: &str| format!("'{}'", v.replace('\'', r"'\''"));
    match output {
        Output::Env => vars
            .iter()
            .map(|(k, v)| format!("export {k}={}\n", quote(v)))
            .collect(),
        Output::Dotenv => vars
            .iter()
            .map(|(k, v)| format!("{k}={}\n", quote(v)))
            .collect(),
        Output::Json => {
            let map: BTreeMap<&str, &String> = vars.iter().map(|(k, v)| (*k, v)).collect();
            format!(
                "{}\n",
                serde_json::to_string_pretty(&map).unwrap_or_default()
            )
        }
    }
}

/// Prints a line when what it shows changes.
#[derive(Default)]
struct Progress {
    last: String,
}

impl Progress {
    fn show(&mut self, line: String) {
        if line != self.last {
            eprintln!("{line}");
            self.last = line;
        }
    }
}

/// `reason: message`, without the reason twice when the message starts with it.
fn describe(c: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition) -> String {
    if c.message.starts_with(c.reason.as_str()) {
        c.message.clone()
    } else {
        format!("{}: {}", c.reason, c.message)
    }
}

fn condition<'a>(
    conditions: &'a [k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    conditions
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
}

/// What one look at a watched object found.
enum Seen {
    Done(Result<(), WaitError>),
    Doing(String),
}

/// Watches object `name` until `look` says it is done, showing what it is doing meanwhile; times out at
/// `deadline`. Event-driven: each change is seen when the API server sends it, not at a poll.
async fn watch_until<K>(
    api: &Api<K>,
    name: &str,
    deadline: Instant,
    progress: &mut Progress,
    mut look: impl FnMut(&K) -> Seen,
) -> Result<(), WaitError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    K::DynamicType: Default,
{
    use futures::StreamExt as _;
    use kube::runtime::{WatchStreamExt as _, watcher};
    let what = format!(
        "{}/{name}",
        K::kind(&K::DynamicType::default()).to_lowercase()
    );
    let mut last = "waiting for the operator".to_string();
    progress.show(format!("{what}: {last}"));
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = std::pin::pin!(
        watcher(api.clone(), config)
            .default_backoff()
            .applied_objects()
    );
    loop {
        match tokio::time::timeout_at(deadline.into(), events.next()).await {
            Err(_) => {
                return Err(WaitError::TimedOut(format!(
                    "timed out waiting for {what}; last: {last}"
                )));
            }
            Ok(None) => {
                return Err(WaitError::TimedOut(format!(
                    "the watch of {what} ended; last: {last}"
                )));
            }
            // The watcher retries with backoff; an error is only a pause.
            Ok(Some(Err(_))) => {}
            Ok(Some(Ok(obj))) => match look(&obj) {
                Seen::Done(result) => return result,
                Seen::Doing(doing) => {
                    progress.show(format!("{what}: {doing}"));
                    last = doing;
                }
            },
        }
    }
}

async fn wait_environment(
    api: &Api<DatabaseEnvironment>,
    name: &str,
    deadline: Instant,
    progress: &mut Progress,
) -> Result<(), WaitError> {
    let mut ready = None;
    let result = watch_until(api, name, deadline, progress, |env| {
        let status = env.status.clone().unwrap_or_default();
        let current = status.observed_generation == env.metadata.generation;
        if current && let Some(c) = condition(&status.conditions, "Ready") {
            ready = Some(c.message.clone());
            return Seen::Done(Ok(()));
        }
        if current && let Some(c) = condition(&status.conditions, "Stalled") {
            return Seen::Done(Err(WaitError::Failed(format!(
                "databaseenvironment/{name} is Stalled: {}: {}",
                c.reason, c.message
            ))));
        }
        Seen::Doing(
            condition(&status.conditions, "Reconciling")
                .map(describe)
                .unwrap_or_else(|| "waiting for the operator".into()),
        )
    })
    .await;
    if let Some(message) = ready {
        progress.show(format!("databaseenvironment/{name}: Ready ({message})"));
    }
    result
}

/// What a failed run says, for a person reading a CI log (pure).
pub fn run_failure(name: &str, s: &MigrationRunStatus) -> String {
    let phase = s.phase.map(|p| format!("{p:?}")).unwrap_or_default();
    let stalled = condition(&s.conditions, "Stalled");
    let (reason, message) = stalled.map_or(("", ""), |c| (c.reason.as_str(), c.message.as_str()));
    let mut text = format!("migrationrun/{name} {phase}: {reason}: {message}");
    if let Some(f) = &s.failure {
        let mut at = f.file.clone().unwrap_or_default();
        if let Some(line) = f.line {
            at.push_str(&format!(":{line}"));
        }
        if !at.is_empty() {
            text.push_str(&format!("\n  at {at}"));
            if let Some(n) = f.statement {
                text.push_str(&format!(" (statement {n})"));
            }
            if let Some(code) = &f.sql_state {
                text.push_str(&format!(" SQLSTATE {code}"));
            }
            text.push_str(&format!(": {}", f.error));
        }
    }
    for finding in s
        .lint_findings
        .iter()
        .filter(|f| f.severity == crate::api::migration_run::LintSeverity::Error)
    {
        text.push_str(&format!(
            "\n  lint {}:{} {}: {}",
            finding.file,
            finding.line.unwrap_or_default(),
            finding.rule,
            finding.message
        ));
    }
    text
}

async fn wait_run(
    api: &Api<MigrationRun>,
    name: &str,
    deadline: Instant,
    progress: &mut Progress,
) -> Result<(), WaitError> {
    let mut succeeded = None;
    let result = watch_until(api, name, deadline, progress, |run| {
        let status = run.status.clone().unwrap_or_default();
        match status.phase {
            Some(MigrationPhase::Succeeded) => {
                succeeded = Some(
                    condition(&status.conditions, "Ready")
                        .map(|c| c.message.clone())
                        .unwrap_or_default(),
                );
                return Seen::Done(Ok(()));
            }
            Some(p) if p.is_finished() => {
                return Seen::Done(Err(WaitError::Failed(run_failure(name, &status))));
            }
            _ => {}
        }
        Seen::Doing(
            condition(&status.conditions, "Reconciling")
                .map(describe)
                .unwrap_or_else(|| "waiting for the operator".into()),
        )
    })
    .await;
    if let Some(message) = succeeded {
        progress.show(format!("migrationrun/{name}: Succeeded ({message})"));
    }
    result
}

async fn wait_target(client: Client, args: WaitArgs) -> anyhow::Result<()> {
    let ns = args.namespace.resolve(&client);
    let deadline = Instant::now() + args.timeout.value;
    let Some((kind, name)) = args.target.split_once('/') else {
        bail!("wait for kind/name, e.g. migrationrun/pr-123-x7k2q or databaseenvironment/pr-123");
    };
    let mut progress = Progress::default();
    match kind.to_ascii_lowercase().as_str() {
        "databaseenvironment" | "databaseenvironments" | "dbenv" | "de" => {
            let api: Api<DatabaseEnvironment> = Api::namespaced(client, &ns);
            wait_environment(&api, name, deadline, &mut progress).await?;
        }
        "migrationrun" | "migrationruns" | "mrun" | "mr" => {
            let api: Api<MigrationRun> = Api::namespaced(client, &ns);
            wait_run(&api, name, deadline, &mut progress).await?;
        }
        other => {
            bail!("cannot wait for {other:?}: use databaseenvironment/NAME or migrationrun/NAME")
        }
    }
    Ok(())
}

async fn down(client: Client, args: DownArgs) -> anyhow::Result<()> {
    let ns = args.namespace.resolve(&client);
    let selector = format!("{CI_LABEL}={}", args.name);
    let runs: Api<MigrationRun> = Api::namespaced(client.clone(), &ns);
    let envs: Api<DatabaseEnvironment> = Api::namespaced(client.clone(), &ns);
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    for run in runs.list(&ListParams::default().labels(&selector)).await? {
        let _ = runs.delete(&run.name_any(), &DeleteParams::default()).await;
    }
    match envs.delete(&args.name, &DeleteParams::background()).await {
        Ok(_) => eprintln!(
            "databaseenvironment/{} deleted (its database and role are dropped)",
            args.name
        ),
        Err(kube::Error::Api(e)) if e.code == 404 => {
            eprintln!("databaseenvironment/{} does not exist", args.name)
        }
        Err(e) => return Err(e.into()),
    }
    for cm in maps.list(&ListParams::default().labels(&selector)).await? {
        maps.delete(&cm.name_any(), &DeleteParams::default())
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    /// `lifeboat ci …` as the shell passes it.
    fn try_parse(args: &[&str]) -> Result<CiCommand, clap::Error> {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(subcommand)]
            ci: CiCommand,
        }
        Cli::try_parse_from(std::iter::once("ci").chain(args.iter().copied())).map(|cli| cli.ci)
    }

    fn parse(args: &[&str]) -> CiCommand {
        try_parse(args).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    #[test]
    fn every_subcommand_takes_the_shared_namespace_and_timeout_flags() {
        let CiCommand::Up(up) = parse(&["up", "--name", "pr-1", "-n", "ci", "--timeout", "90s"])
        else {
            panic!("not up");
        };
        assert_eq!(up.namespace.value.as_deref(), Some("ci"));
        assert_eq!(up.timeout.value, Duration::from_secs(90));
        let CiCommand::Down(down) = parse(&["down", "--name", "pr-1", "--namespace", "ci"]) else {
            panic!("not down");
        };
        assert_eq!(down.namespace.value.as_deref(), Some("ci"));
        let CiCommand::Wait(wait) = parse(&["wait", "mr/x", "-n", "ci"]) else {
            panic!("not wait");
        };
        assert_eq!(
            (wait.namespace.value.as_deref(), wait.timeout.value),
            (Some("ci"), Duration::from_secs(300))
        );
        let Err(err) = try_parse(&["wait", "mr/x", "--timeout", "soon"]) else {
            panic!("a timeout of \"soon\" was taken");
        };
        assert!(
            err.to_string()
                .contains(r#""soon" is not a duration like 90s or 5m"#),
            "{err}"
        );
    }

    #[test]
    fn the_environment_spec_follows_the_flags() {
        let CiCommand::Up(up) = parse(&[
            "up",
            "--name",
            "pr-1",
            "--server",
            "shared",
            "--template",
            "main",
            "--ttl",
            "6h",
        ]) else {
            panic!("not up");
        };
        assert_eq!(
            environment_spec(&up, Some("pr-1-seed")),
            json!({
                "tier": "ci",
                "server": {"serverRef": {"name": "shared"}, "templateFrom": {"name": "main"}},
                "ttl": "6h",
                "seed": {"configMapRef": {"name": "pr-1-seed"}, "key": "seed.sql"},
            })
        );
        let CiCommand::Up(up) = parse(&[
            "up",
            "--name",
            "pr-1",
            "--admin-secret",
            "admin",
            "--template-database",
            "tpl",
        ]) else {
            panic!("not up");
        };
        assert_eq!(
            environment_spec(&up, None),
            json!({"tier": "ci", "server": {"adminSecretRef": {"name": "admin"}, "template": "tpl"}})
        );
    }

    #[test]
    fn diesel_folders_become_up_and_down_files() {
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path().join("2024-01-02-000000_orders");
        std::fs::create_dir_all(&m).unwrap();
        std::fs::write(m.join("up.sql"), "create table orders ();").unwrap();
        std::fs::write(m.join("down.sql"), "drop table orders;").unwrap();
        std::fs::write(dir.path().join(".keep"), "").unwrap();
        std::fs::write(dir.path().join("1_a.up.sql"), "select 1;").unwrap();
        let files = read_migrations(dir.path()).unwrap();
        let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            vec![
                "1_a.up.sql",
                "20240102000000_orders.down.sql",
                "20240102000000_orders.up.sql"
            ]
        );
        assert_eq!(migrations::source::parse(&files).unwrap().len(), 2);
    }

    #[test]
    fn files_are_split_under_the_budget_in_order() {
        let files: Vec<RawFile> = (0..10)
            .map(|i| RawFile::new("", &format!("{i}_m.sql"), vec![b'x'; 100]))
            .collect();
        let parts = split(&files, 250);
        assert_eq!(
            parts.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![2, 2, 2, 2, 2]
        );
        let big = [RawFile::new("", "1_big.sql", vec![b'x'; 1000])];
        assert_eq!(
            split(&big, 250).len(),
            1,
            "a file larger than the budget gets a part alone"
        );
        assert!(split(&[], 250).is_empty());
    }

    #[test]
    fn connections_render_for_shells_dotenv_and_json() {
        let data: BTreeMap<String, String> = [
            ("uri", "postgresql://u:p@h:5432/d?sslmode=disable"),
            ("host", "h"),
            ("port", "5432"),
            ("database", "d"),
            ("username", "u"),
            ("password", "it's"),
            ("sslmode", "disable"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let env = render(&data, Output::Env);
        assert!(env.contains("export DATABASE_URL='postgresql://u:p@h:5432/d?sslmode=disable'\n"));
        assert!(env.contains("export PGPASSWORD='it'\\''s'\n"), "{env}");
        assert!(render(&data, Output::Dotenv).contains("PGHOST='h'\n"));
        let json: serde_json::Value = serde_json::from_str(&render(&data, Output::Json)).unwrap();
        assert_eq!(json["PGDATABASE"], "d");
    }
}
