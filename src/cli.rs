//! The kubectl-like verbs: apply, get, describe, delete, logs, talking to the apiserver through kube-rs.

use anyhow::{Context, anyhow, bail};
use futures::{AsyncBufReadExt, StreamExt};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::{Value, json};
use std::io::Read;
use std::path::{Path, PathBuf};
use wasmkube_control::api::resources::{self, ResourceType};
use wasmkube_control::api::table::age;

/// How the client finds the server.
#[derive(clap::Args, Debug, Clone)]
pub struct ClientArgs {
    /// The kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// The API server's URL, overriding the kubeconfig; several, comma-separated, are failed over between.
    #[arg(long, global = true)]
    pub server: Option<String>,
    /// The namespace (default: the kubeconfig context's, then `default`).
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
    /// A CA certificate file (PEM) to trust for the server, overriding the kubeconfig's.
    #[arg(long, global = true)]
    pub certificate_authority: Option<PathBuf>,
    /// A bearer token to authenticate with, overriding the kubeconfig's credentials.
    #[arg(long, global = true, env = "WASMKUBE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// `apply` arguments.
#[derive(clap::Args, Debug)]
pub struct ApplyArgs {
    /// Files, directories or `-`.
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<String>,
    /// Then wait until what was applied is ready (Deployments, DaemonSets and StatefulSets rolled out, Pods
    /// ready, Jobs complete), printing each one's progress.
    #[arg(long)]
    pub wait: bool,
    /// How long `--wait` waits (`30s`, `5m`); 0 waits for ever.
    #[arg(long, default_value = "5m", requires = "wait")]
    pub timeout: String,
}

/// `get` arguments.
#[derive(clap::Args, Debug)]
pub struct GetArgs {
    /// The kind (plural, singular, short name, optionally `.group`).
    pub kind: String,
    /// Names; none lists them all.
    pub names: Vec<String>,
    /// List across all namespaces.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Label selector, e.g. `app=web,tier in (front)`.
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// Field selector, e.g. `spec.nodeName=n1`.
    #[arg(long)]
    pub field_selector: Option<String>,
    /// Output: wide, yaml, json or name.
    #[arg(short = 'o', long)]
    pub output: Option<String>,
    /// After listing, watch for changes.
    #[arg(short = 'w', long)]
    pub watch: bool,
}

/// `logs` arguments.
#[derive(clap::Args, Debug)]
pub struct LogsArgs {
    /// The pod.
    pub pod: String,
    /// The container (needed when the pod has several).
    #[arg(short = 'c', long)]
    pub container: Option<String>,
    /// Keep streaming new output.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only the last N lines.
    #[arg(long)]
    pub tail: Option<usize>,
    /// Only output of the last N seconds.
    #[arg(long)]
    pub since_seconds: Option<i64>,
    /// Prefix lines with their time.
    #[arg(long)]
    pub timestamps: bool,
    /// The previous run of the container.
    #[arg(short = 'p', long)]
    pub previous: bool,
}

/// `describe` arguments.
#[derive(clap::Args, Debug)]
pub struct DescribeArgs {
    /// The kind.
    pub kind: String,
    /// Names; none describes them all.
    pub names: Vec<String>,
    /// Label selector.
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
}

/// `delete` arguments.
#[derive(clap::Args, Debug)]
pub struct DeleteArgs {
    /// The kind, when not deleting from files.
    pub kind: Option<String>,
    /// Names.
    pub names: Vec<String>,
    /// Files, directories or `-` listing the objects.
    #[arg(short = 'f', long = "filename")]
    pub files: Vec<String>,
    /// Label selector.
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// Seconds the objects get to stop (0 = at once).
    #[arg(long)]
    pub grace_period: Option<i64>,
    /// Deletion propagation: background, foreground or orphan.
    #[arg(long, default_value = "background")]
    pub cascade: String,
}

struct Session {
    client: Client,
    namespace: String,
}

/// A kube-rs client and namespace from `--server`, `--kubeconfig` or the usual kubeconfig rules.
pub async fn client(args: &ClientArgs) -> anyhow::Result<(Client, String)> {
    client_as(args, "wasmkube").await
}

/// A client that names itself `component` (`kube-scheduler`, `kubelet`, ...) in its User-Agent, which the
/// apiserver records as the field manager of its writes.
pub async fn client_as(args: &ClientArgs, component: &str) -> anyhow::Result<(Client, String)> {
    let mut config = config(args).await?;
    identify(&mut config, component);
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let mut servers = server_urls(args)?;
    if servers.is_empty() {
        servers = kubeconfig_servers(args);
    }
    let configs = each_server(config, &servers);
    Ok((crate::failover::client(configs)?, namespace))
}

/// The name of the kubeconfig cluster extension listing every server of a highly available cluster (written
/// by `wasmkube up --control-planes N`; other clients use the entry's `server`, the first).
pub const SERVERS_EXTENSION: &str = "wasmkube.io/servers";

/// The servers the current context's cluster lists in its [`SERVERS_EXTENSION`] (none without one).
fn kubeconfig_servers(args: &ClientArgs) -> Vec<http::Uri> {
    let kubeconfig = match &args.kubeconfig {
        Some(path) => Kubeconfig::read_from(path),
        None => Kubeconfig::read(),
    };
    let Ok(kubeconfig) = kubeconfig else {
        return Vec::new();
    };
    let context = kubeconfig
        .contexts
        .iter()
        .find(|c| Some(&c.name) == kubeconfig.current_context.as_ref())
        .and_then(|c| c.context.as_ref());
    let cluster = context.and_then(|context| {
        kubeconfig
            .clusters
            .iter()
            .find(|c| c.name == context.cluster)
            .and_then(|c| c.cluster.as_ref())
    });
    cluster
        .and_then(|c| c.extensions.as_ref())
        .into_iter()
        .flatten()
        .filter(|e| e.name == SERVERS_EXTENSION)
        .flat_map(|e| {
            e.extension["servers"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|url| url.as_str().and_then(|u| u.parse().ok()))
        .collect()
}

/// The URLs of `--server URL,URL,...` (none without the flag).
pub fn server_urls(args: &ClientArgs) -> anyhow::Result<Vec<http::Uri>> {
    let Some(servers) = &args.server else {
        return Ok(Vec::new());
    };
    servers
        .split(',')
        .map(|url| {
            url.trim()
                .parse::<http::Uri>()
                .ok()
                .filter(|u| u.scheme().is_some() && u.host().is_some())
                .ok_or_else(|| anyhow!("invalid server URL {url:?} in --server"))
        })
        .collect()
}

/// `config` for each of several servers (the config itself when there are fewer than two).
pub fn each_server(config: Config, servers: &[http::Uri]) -> Vec<Config> {
    if servers.len() < 2 {
        return vec![config];
    }
    servers
        .iter()
        .map(|url| {
            let mut one = config.clone();
            one.cluster_url = url.clone();
            one
        })
        .collect()
}

/// The User-Agent of a component's requests: `component/VERSION (wasmkube)`.
pub fn user_agent(component: &str) -> String {
    format!("{component}/v{} (wasmkube)", env!("CARGO_PKG_VERSION"))
}

/// Sets the User-Agent of a client configuration to [`user_agent`].
pub fn identify(config: &mut Config, component: &str) {
    if let Ok(value) = http::HeaderValue::from_str(&user_agent(component)) {
        config
            .headers
            .retain(|(name, _)| name != http::header::USER_AGENT);
        config.headers.push((http::header::USER_AGENT, value));
    }
}

async fn session(args: &ClientArgs) -> anyhow::Result<Session> {
    let (client, namespace) = client(args).await?;
    Ok(Session { client, namespace })
}

/// The client configuration of `--server`, `--kubeconfig` or the usual kubeconfig rules, with the overrides.
pub async fn config(args: &ClientArgs) -> anyhow::Result<Config> {
    let mut config = match (&args.server, &args.kubeconfig) {
        (Some(_), _) => Config::new(
            server_urls(args)?
                .into_iter()
                .next()
                .ok_or_else(|| anyhow!("--server names no URL"))?,
        ),
        (None, Some(path)) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .with_context(|| format!("cannot read kubeconfig {}", path.display()))?;
            Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?
        }
        (None, None) => Config::infer()
            .await
            .context("no kubeconfig found: pass --kubeconfig or --server, or set KUBECONFIG")?,
    };
    if let Some(token) = &args.token {
        config.auth_info.token = Some(token.clone().into());
    }
    if let Some(path) = &args.certificate_authority {
        let pem = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read --certificate-authority {}", path.display()))?;
        let certificates = wasmkube_control::pki::certificates_der(&pem);
        if certificates.is_empty() {
            bail!(
                "--certificate-authority {} holds no PEM certificate",
                path.display()
            );
        }
        config.root_cert = Some(certificates);
    }
    Ok(config)
}

fn resource(name: &str) -> anyhow::Result<&'static ResourceType> {
    resources::by_user_name(name)
        .ok_or_else(|| anyhow!("the server doesn't have a resource type {name:?}"))
}

fn collection_path(resource: &ResourceType, namespace: Option<&str>) -> String {
    let base = if resource.group.is_empty() {
        format!("/api/{}", resource.version)
    } else {
        format!("/apis/{}/{}", resource.group, resource.version)
    };
    match namespace {
        Some(ns) if resource.namespaced => format!("{base}/namespaces/{ns}/{}", resource.plural),
        _ => format!("{base}/{}", resource.plural),
    }
}

/// `deployment.apps`, or `pod` for core: how kubectl names a kind in its messages.
fn display_kind(resource: &ResourceType) -> String {
    let kind = resource.kind.to_ascii_lowercase();
    if resource.group.is_empty() {
        kind
    } else {
        format!("{kind}.{}", resource.group)
    }
}

fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

impl Session {
    async fn call(
        &self,
        method: &str,
        path: &str,
        accept: Option<&str>,
        content_type: Option<&str>,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let mut request = http::Request::builder().method(method).uri(path);
        if let Some(accept) = accept {
            request = request.header(http::header::ACCEPT, accept);
        }
        if let Some(content_type) = content_type {
            request = request.header(http::header::CONTENT_TYPE, content_type);
        }
        let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let request = request.body(body)?;
        self.client
            .request::<Value>(request)
            .await
            .map_err(api_error)
    }
}

pub fn api_error(error: kube::Error) -> anyhow::Error {
    match error {
        kube::Error::Api(status) => anyhow!("{}", status.message),
        other => anyhow!(other),
    }
}

/// Reads every object from files, directories (their .yaml/.yml/.json files) and `-`.
fn read_objects(sources: &[String]) -> anyhow::Result<Vec<Value>> {
    let mut objects = Vec::new();
    for source in sources {
        let texts: Vec<(String, String)> = if source == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("cannot read stdin")?;
            vec![("stdin".into(), text)]
        } else {
            let path = Path::new(source);
            let files: Vec<PathBuf> = if path.is_dir() {
                let mut files: Vec<PathBuf> = std::fs::read_dir(path)
                    .with_context(|| format!("cannot read directory {source}"))?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| {
                        p.extension()
                            .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
                    })
                    .collect();
                files.sort();
                files
            } else {
                vec![path.to_path_buf()]
            };
            files
                .into_iter()
                .map(|f| {
                    let text = std::fs::read_to_string(&f)
                        .with_context(|| format!("cannot read {}", f.display()))?;
                    Ok((f.display().to_string(), text))
                })
                .collect::<anyhow::Result<_>>()?
        };
        for (name, text) in texts {
            for document in serde_yaml::Deserializer::from_str(&text) {
                let value: Value = serde::Deserialize::deserialize(document)
                    .with_context(|| format!("{name} is not valid YAML or JSON"))?;
                match value {
                    Value::Null => {}
                    Value::Object(_) if value["kind"] == "List" => {
                        objects.extend(value["items"].as_array().cloned().unwrap_or_default());
                    }
                    Value::Object(_) => objects.push(value),
                    _ => bail!("{name}: a document must be an object with apiVersion and kind"),
                }
            }
        }
    }
    Ok(objects)
}

fn object_target(
    session: &Session,
    object: &Value,
) -> anyhow::Result<(&'static ResourceType, String, Option<String>)> {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let kind = object["kind"].as_str().unwrap_or_default();
    if api_version.is_empty() || kind.is_empty() {
        bail!("an object has no apiVersion or kind");
    }
    let resource = resources::by_kind(api_version, kind)
        .ok_or_else(|| anyhow!("no matches for kind {kind:?} in version {api_version:?}"))?;
    let name = object["metadata"]["name"]
        .as_str()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| anyhow!("a {kind} has no metadata.name"))?;
    let namespace = resource.namespaced.then(|| {
        object["metadata"]["namespace"]
            .as_str()
            .map_or_else(|| session.namespace.clone(), str::to_owned)
    });
    Ok((resource, name.to_owned(), namespace))
}

/// `wasmkube apply -f ...`: creates what is missing and merges the manifests into what exists.
pub async fn apply(client: &ClientArgs, args: ApplyArgs) -> anyhow::Result<()> {
    let session = session(client).await?;
    let objects = read_objects(&args.files)?;
    let limit = crate::rollout::parse_duration(&args.timeout)?;
    let mut applied = Vec::new();
    for mut object in objects {
        let (resource, name, namespace) = object_target(&session, &object)?;
        if let Some(ns) = &namespace {
            object["metadata"]["namespace"] = ns.clone().into();
        }
        let collection = collection_path(resource, namespace.as_deref());
        let item = format!("{collection}/{}", encode(&name));
        let display = format!("{}/{name}", display_kind(resource));
        match session.call("GET", &item, None, None, None).await {
            // Everything the manifest says is already so: nothing to write (controllers may have changed other
            // fields meanwhile, which is no change of the user's).
            Ok(current) if contains(&current, &object) => println!("{display} unchanged"),
            Ok(current) => {
                let patched = session
                    .call(
                        "PATCH",
                        &format!("{item}?fieldManager=wasmkube&fieldValidation=Strict"),
                        None,
                        Some("application/strategic-merge-patch+json"),
                        Some(&object),
                    )
                    .await
                    .with_context(|| format!("cannot apply {display}"))?;
                let verb = if patched["metadata"]["resourceVersion"]
                    == current["metadata"]["resourceVersion"]
                {
                    "unchanged"
                } else {
                    "configured"
                };
                println!("{display} {verb}");
            }
            Err(e) if e.to_string().ends_with("not found") => {
                session
                    .call(
                        "POST",
                        &format!("{collection}?fieldManager=wasmkube&fieldValidation=Strict"),
                        None,
                        Some("application/json"),
                        Some(&object),
                    )
                    .await
                    .with_context(|| format!("cannot create {display}"))?;
                println!("{display} created");
            }
            Err(e) => return Err(e),
        }
        if crate::rollout::awaited(resource.kind) {
            applied.push((display, item));
        }
    }
    if args.wait {
        wait_ready(&session, applied, limit, &args.timeout).await?;
    }
    Ok(())
}

/// Waits until every object is ready, printing each one's progress when it changes and its pods' image pulls
/// (the kubelet's `Pulled` events: how long, how many bytes); an error when one fails or `limit` (unless zero)
/// passes first.
async fn wait_ready(
    session: &Session,
    mut waiting: Vec<(String, String)>,
    limit: std::time::Duration,
    timeout: &str,
) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let mut last: std::collections::HashMap<String, String> = Default::default();
    let mut pulls_seen = std::collections::HashSet::new();
    while !waiting.is_empty() {
        let mut still = Vec::new();
        for (display, path) in waiting {
            let object = session.call("GET", &path, None, None, None).await?;
            print_pulls(session, &object, &mut pulls_seen).await?;
            let (message, ready) = crate::rollout::readiness(&object)
                .with_context(|| format!("{display} will not be ready"))?;
            if last.get(&display) != Some(&message) {
                println!("{display}: {message}");
                last.insert(display.clone(), message);
            }
            if !ready {
                still.push((display, path));
            }
        }
        waiting = still;
        if waiting.is_empty() {
            break;
        }
        if !limit.is_zero() && started.elapsed() > limit {
            let names: Vec<&str> = waiting.iter().map(|(d, _)| d.as_str()).collect();
            bail!("timed out after {timeout} waiting for {}", names.join(", "));
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    Ok(())
}

/// Prints the image pulls of the pods of `object` (a Pod, or a workload's pods by its selector's labels) not
/// printed yet.
async fn print_pulls(
    session: &Session,
    object: &Value,
    seen: &mut std::collections::HashSet<String>,
) -> anyhow::Result<()> {
    let namespace = object["metadata"]["namespace"].as_str().unwrap_or_default();
    let pods: Vec<String> = if object["kind"] == "Pod" {
        vec![
            object["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        ]
    } else {
        let Some(labels) = object["spec"]["selector"]["matchLabels"].as_object() else {
            return Ok(());
        };
        let selector: Vec<String> = labels
            .iter()
            .map(|(key, value)| format!("{key}={}", value.as_str().unwrap_or_default()))
            .collect();
        let path = format!(
            "/api/v1/namespaces/{}/pods?labelSelector={}",
            encode(namespace),
            encode(&selector.join(","))
        );
        let listed = session.call("GET", &path, None, None, None).await?;
        listed["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|pod| pod["metadata"]["name"].as_str().map(str::to_owned))
            .collect()
    };
    if pods.is_empty() {
        return Ok(());
    }
    let path = format!(
        "/api/v1/namespaces/{}/events?fieldSelector={}",
        encode(namespace),
        encode("reason=Pulled,involvedObject.kind=Pod")
    );
    let events = session.call("GET", &path, None, None, None).await?;
    for event in events["items"].as_array().into_iter().flatten() {
        let pod = event["involvedObject"]["name"].as_str().unwrap_or_default();
        let uid = event["metadata"]["uid"].as_str().unwrap_or_default();
        if pods.iter().any(|p| p == pod) && seen.insert(uid.to_owned()) {
            println!(
                "pod/{pod}: {}",
                event["message"].as_str().unwrap_or_default()
            );
        }
    }
    Ok(())
}

/// Whether every field `wanted` sets has that value in `current` (lists element by element).
fn contains(current: &Value, wanted: &Value) -> bool {
    match (current, wanted) {
        (Value::Object(current), Value::Object(wanted)) => wanted
            .iter()
            .all(|(key, value)| current.get(key).is_some_and(|c| contains(c, value))),
        (Value::Array(current), Value::Array(wanted)) => {
            current.len() == wanted.len() && current.iter().zip(wanted).all(|(c, w)| contains(c, w))
        }
        (current, wanted) => current == wanted,
    }
}

const TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";

fn list_query(selector: Option<&str>, field_selector: Option<&str>) -> String {
    let mut parts = Vec::new();
    if let Some(s) = selector {
        parts.push(format!("labelSelector={}", encode(s)));
    }
    if let Some(s) = field_selector {
        parts.push(format!("fieldSelector={}", encode(s)));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

/// Prints table rows aligned like kubectl: columns padded to their widest cell, three spaces apart.
fn print_rows(rows: &[Vec<String>]) {
    let widths: Vec<usize> = (0..rows.first().map_or(0, Vec::len))
        .map(|i| {
            rows.iter()
                .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let last = row.len().saturating_sub(1);
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, cell)| {
                if i == last {
                    cell.clone()
                } else {
                    format!("{cell:<width$}", width = widths[i])
                }
            })
            .collect();
        println!("{}", line.join("   ").trim_end());
    }
}

fn cell_text(cell: &Value) -> String {
    match cell {
        Value::String(s) => s.clone(),
        Value::Null => "<none>".into(),
        other => other.to_string(),
    }
}

struct TableView {
    columns: Vec<usize>,
    all_namespaces: bool,
}

impl TableView {
    fn new(table: &Value, wide: bool, all_namespaces: bool) -> (Self, Vec<String>) {
        let definitions = table["columnDefinitions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let columns: Vec<usize> = (0..definitions.len())
            .filter(|i| wide || definitions[*i]["priority"].as_i64().unwrap_or(0) == 0)
            .collect();
        let mut header: Vec<String> = columns
            .iter()
            .map(|i| {
                definitions[*i]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_ascii_uppercase()
            })
            .collect();
        if all_namespaces {
            header.insert(0, "NAMESPACE".into());
        }
        (
            Self {
                columns,
                all_namespaces,
            },
            header,
        )
    }

    fn rows(&self, table: &Value) -> Vec<Vec<String>> {
        table["rows"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|row| {
                let cells = row["cells"].as_array().cloned().unwrap_or_default();
                let mut line: Vec<String> = self
                    .columns
                    .iter()
                    .map(|i| cells.get(*i).map(cell_text).unwrap_or_default())
                    .collect();
                if self.all_namespaces {
                    line.insert(
                        0,
                        row["object"]["metadata"]["namespace"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned(),
                    );
                }
                line
            })
            .collect()
    }
}

/// `wasmkube get KIND [NAME...]`
pub async fn get(client: &ClientArgs, args: GetArgs) -> anyhow::Result<()> {
    let session = session(client).await?;
    let resource = resource(&args.kind)?;
    let namespace = (!args.all_namespaces).then(|| session.namespace.clone());
    let collection = collection_path(resource, namespace.as_deref());
    let output = args.output.as_deref().unwrap_or("");
    if !["", "wide", "yaml", "json", "name"].contains(&output) {
        bail!(
            "unable to match a printer suitable for the output format {output:?}, allowed formats are: json, name, wide, yaml"
        );
    }
    let query = list_query(args.selector.as_deref(), args.field_selector.as_deref());
    let objects_wanted = matches!(output, "yaml" | "json" | "name");
    let mut fetched = Vec::new();
    if args.names.is_empty() {
        fetched.push(
            session
                .call(
                    "GET",
                    &format!("{collection}{query}"),
                    (!objects_wanted).then_some(TABLE),
                    None,
                    None,
                )
                .await?,
        );
    } else {
        for name in &args.names {
            fetched.push(
                session
                    .call(
                        "GET",
                        &format!("{collection}/{}", encode(name)),
                        (!objects_wanted).then_some(TABLE),
                        None,
                        None,
                    )
                    .await?,
            );
        }
    }
    match output {
        "yaml" | "json" => {
            let items: Vec<Value> = fetched
                .iter()
                .flat_map(|f| {
                    if f.get("items").is_some() {
                        f["items"].as_array().cloned().unwrap_or_default()
                    } else {
                        vec![f.clone()]
                    }
                })
                .collect();
            let shown = if args.names.len() == 1 {
                items.into_iter().next().unwrap_or(Value::Null)
            } else {
                json!({"apiVersion": "v1", "kind": "List", "items": items, "metadata": {"resourceVersion": ""}})
            };
            if output == "json" {
                println!("{}", serde_json::to_string_pretty(&shown)?);
            } else {
                print!("{}", serde_yaml::to_string(&shown)?);
            }
        }
        "name" => {
            for fetched in &fetched {
                let items = if fetched.get("items").is_some() {
                    fetched["items"].as_array().cloned().unwrap_or_default()
                } else {
                    vec![fetched.clone()]
                };
                for item in items {
                    println!(
                        "{}/{}",
                        display_kind(resource),
                        item["metadata"]["name"].as_str().unwrap_or_default()
                    );
                }
            }
        }
        _ => {
            let Some(first) = fetched.first() else {
                return Ok(());
            };
            let (view, header) = TableView::new(first, output == "wide", args.all_namespaces);
            let mut rows = vec![header.clone()];
            for table in &fetched {
                rows.extend(view.rows(table));
            }
            if rows.len() == 1 && !args.watch {
                match &namespace {
                    Some(ns) if resource.namespaced => {
                        eprintln!("No resources found in {ns} namespace.")
                    }
                    _ => eprintln!("No resources found"),
                }
            } else {
                print_rows(&rows);
            }
            if args.watch {
                let revision = first["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                let watch_query = format!(
                    "{}watch=1&resourceVersion={revision}",
                    if query.is_empty() {
                        "?".to_owned()
                    } else {
                        format!("{query}&")
                    }
                );
                let request = http::Request::builder()
                    .uri(format!("{collection}{watch_query}"))
                    .header(http::header::ACCEPT, TABLE)
                    .body(Vec::new())?;
                let mut lines = session
                    .client
                    .request_stream(request)
                    .await
                    .map_err(api_error)?
                    .lines();
                while let Some(line) = lines.next().await {
                    let event: Value = serde_json::from_str(&line?)?;
                    if event["type"] == "ERROR" {
                        bail!(
                            "{}",
                            event["object"]["message"]
                                .as_str()
                                .unwrap_or("the watch failed")
                        );
                    }
                    for row in view.rows(&event["object"]) {
                        print_rows(&[row]);
                    }
                }
            }
        }
    }
    Ok(())
}

fn map_text(map: &Value) -> String {
    match map.as_object() {
        Some(map) if !map.is_empty() => map
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
            .collect::<Vec<_>>()
            .join("\n              "),
        _ => "<none>".into(),
    }
}

/// `wasmkube describe KIND [NAME...]`
pub async fn describe(client: &ClientArgs, args: DescribeArgs) -> anyhow::Result<()> {
    let session = session(client).await?;
    let resource = resource(&args.kind)?;
    let collection = collection_path(resource, Some(&session.namespace));
    let objects: Vec<Value> = if args.names.is_empty() {
        let list = session
            .call(
                "GET",
                &format!("{collection}{}", list_query(args.selector.as_deref(), None)),
                None,
                None,
                None,
            )
            .await?;
        list["items"].as_array().cloned().unwrap_or_default()
    } else {
        let mut objects = Vec::new();
        for name in &args.names {
            objects.push(
                session
                    .call(
                        "GET",
                        &format!("{collection}/{}", encode(name)),
                        None,
                        None,
                        None,
                    )
                    .await?,
            );
        }
        objects
    };
    let events = resources::by_user_name("events").context("events are not served")?;
    let now = jiff::Timestamp::now();
    for (i, object) in objects.iter().enumerate() {
        if i > 0 {
            println!();
        }
        let meta = &object["metadata"];
        println!(
            "Name:         {}",
            meta["name"].as_str().unwrap_or_default()
        );
        if resource.namespaced {
            println!(
                "Namespace:    {}",
                meta["namespace"].as_str().unwrap_or_default()
            );
        }
        println!("Labels:       {}", map_text(&meta["labels"]));
        let mut annotations = meta["annotations"].clone();
        annotations
            .as_object_mut()
            .map(|a| a.remove("kubectl.kubernetes.io/last-applied-configuration"));
        println!("Annotations:  {}", map_text(&annotations));
        println!(
            "Created:      {} ({} ago)",
            meta["creationTimestamp"].as_str().unwrap_or_default(),
            cell_text(&age(object, "metadata.creationTimestamp", now))
        );
        for section in ["spec", "status"] {
            if let Some(value) = object.get(section).filter(|v| !v.is_null()) {
                println!("{}:", if section == "spec" { "Spec" } else { "Status" });
                for line in serde_yaml::to_string(value)?.lines() {
                    println!("  {line}");
                }
            }
        }
        let selector = format!(
            "involvedObject.name={},involvedObject.namespace={},involvedObject.uid={}",
            meta["name"].as_str().unwrap_or_default(),
            meta["namespace"].as_str().unwrap_or_default(),
            meta["uid"].as_str().unwrap_or_default()
        );
        let event_path = collection_path(events, meta["namespace"].as_str().or(Some("default")));
        let list = session
            .call(
                "GET",
                &format!("{event_path}{}", list_query(None, Some(&selector))),
                None,
                None,
                None,
            )
            .await?;
        let mut items = list["items"].as_array().cloned().unwrap_or_default();
        // Oldest first, as kubectl shows them.
        items.sort_by_key(|e| {
            e["lastTimestamp"]
                .as_str()
                .or(e["eventTime"].as_str())
                .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        });
        if items.is_empty() {
            println!("Events:       <none>");
        } else {
            println!("Events:");
            let mut rows = vec![vec![
                "  Type".to_owned(),
                "Reason".into(),
                "Age".into(),
                "From".into(),
                "Message".into(),
            ]];
            for event in items {
                let seen = if event["lastTimestamp"].is_string() {
                    "lastTimestamp"
                } else {
                    "eventTime"
                };
                rows.push(vec![
                    format!("  {}", event["type"].as_str().unwrap_or_default()),
                    event["reason"].as_str().unwrap_or_default().into(),
                    cell_text(&age(&event, seen, now)),
                    event["source"]["component"]
                        .as_str()
                        .or(event["reportingComponent"].as_str())
                        .unwrap_or_default()
                        .into(),
                    event["message"].as_str().unwrap_or_default().into(),
                ]);
            }
            print_rows(&rows);
        }
    }
    Ok(())
}

/// `wasmkube delete KIND NAME...`, `-l SELECTOR` or `-f FILE`.
pub async fn delete(client: &ClientArgs, args: DeleteArgs) -> anyhow::Result<()> {
    let session = session(client).await?;
    let policy = match args.cascade.as_str() {
        "background" | "true" => "Background",
        "foreground" => "Foreground",
        "orphan" | "false" => "Orphan",
        other => bail!("invalid --cascade {other:?}: must be background, foreground or orphan"),
    };
    let mut options =
        json!({"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": policy});
    if let Some(grace) = args.grace_period {
        options["gracePeriodSeconds"] = grace.into();
    }
    let mut targets: Vec<(&ResourceType, String, Option<String>)> = Vec::new();
    if !args.files.is_empty() {
        for object in read_objects(&args.files)? {
            targets.push(object_target(&session, &object)?);
        }
    } else {
        let kind = args.kind.as_deref().ok_or_else(|| {
            anyhow!("you must provide one or more resources by argument or filename")
        })?;
        let resource = resource(kind)?;
        let namespace = resource.namespaced.then(|| session.namespace.clone());
        if let Some(selector) = &args.selector {
            let collection = collection_path(resource, namespace.as_deref());
            let list = session
                .call(
                    "GET",
                    &format!("{collection}{}", list_query(Some(selector), None)),
                    None,
                    None,
                    None,
                )
                .await?;
            for item in list["items"].as_array().into_iter().flatten() {
                targets.push((
                    resource,
                    item["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    namespace.clone(),
                ));
            }
        } else if args.names.is_empty() {
            bail!("resource(s) were provided, but no name was specified");
        }
        targets.extend(
            args.names
                .iter()
                .map(|n| (resource, n.clone(), namespace.clone())),
        );
    }
    let mut failed = None;
    for (resource, name, namespace) in targets {
        let path = format!(
            "{}/{}",
            collection_path(resource, namespace.as_deref()),
            encode(&name)
        );
        match session
            .call(
                "DELETE",
                &path,
                None,
                Some("application/json"),
                Some(&options),
            )
            .await
        {
            Ok(_) => println!("{} {name:?} deleted", display_kind(resource)),
            Err(e) => {
                eprintln!("Error from server: {e}");
                failed = Some(e);
            }
        }
    }
    match failed {
        Some(e) => Err(e.context("not every object was deleted")),
        None => Ok(()),
    }
}

/// `wasmkube logs POD`: a container's output, read through the apiserver from its node.
pub async fn logs(client: &ClientArgs, args: LogsArgs) -> anyhow::Result<()> {
    use futures::AsyncReadExt;
    let session = session(client).await?;
    let pods = resource("pods")?;
    let mut query = Vec::new();
    if let Some(container) = &args.container {
        query.push(format!("container={}", encode(container)));
    }
    for (flag, name) in [
        (args.follow, "follow"),
        (args.timestamps, "timestamps"),
        (args.previous, "previous"),
    ] {
        if flag {
            query.push(format!("{name}=true"));
        }
    }
    if let Some(tail) = args.tail {
        query.push(format!("tailLines={tail}"));
    }
    if let Some(since) = args.since_seconds {
        query.push(format!("sinceSeconds={since}"));
    }
    let path = format!(
        "{}/{}/log?{}",
        collection_path(pods, Some(&session.namespace)),
        encode(&args.pod),
        query.join("&")
    );
    let request = http::Request::builder().uri(path).body(Vec::new())?;
    let mut stream = session
        .client
        .request_stream(request)
        .await
        .map_err(api_error)?;
    let mut buffer = vec![0u8; 16 << 10];
    let mut stdout = std::io::stdout();
    loop {
        let read = stream.read(&mut buffer).await?;
        if read == 0 {
            return Ok(());
        }
        std::io::Write::write_all(&mut stdout, &buffer[..read])?;
        std::io::Write::flush(&mut stdout)?;
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn a_manifest_is_contained_when_every_field_it_sets_matches() {
        let current = json!({"metadata": {"name": "a", "resourceVersion": "7",
            "annotations": {"deployment.kubernetes.io/revision": "1"}},
            "spec": {"replicas": 2, "ports": [{"port": 80, "protocol": "TCP"}]}});
        let manifest =
            json!({"metadata": {"name": "a"}, "spec": {"replicas": 2, "ports": [{"port": 80}]}});
        assert!(super::contains(&current, &manifest));
        let scaled = json!({"metadata": {"name": "a"}, "spec": {"replicas": 3}});
        assert!(!super::contains(&current, &scaled));
        let more_ports = json!({"spec": {"ports": [{"port": 80}, {"port": 81}]}});
        assert!(!super::contains(&current, &more_ports));
    }
}
