//! The Wasm runtime of a node: one wasmtime Engine, each distinct binary compiled once (in memory by digest, on
//! disk through wasmtime's compilation cache), and a fresh Store per run (or per HTTP request) with memory
//! limits and an epoch deadline that makes busy guests yield to the others.

pub mod cpu;
pub mod http_serve;
pub mod memory;
pub mod usage;

use crate::network::local_sockets::Transport;
use crate::runtime::memory::NodeMemory;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wasmtime::component::{Component, ResourceTable};
use wasmtime::{Engine, InstancePre, Linker, Module, ResourceLimiter, Store};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// Bytes of each pooled table reset in place rather than returned to the kernel (tables are small).
const TABLE_KEEP_RESIDENT: usize = 2 << 20;
/// Decommits gathered before one flush.
const DECOMMIT_BATCH: usize = 16;

/// How often the epoch advances; a guest runs at most this long before yielding to other tasks.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Why a binary cannot be run.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The bytes are not a WebAssembly module or component.
    #[error("not a WebAssembly binary (no \\0asm header)")]
    NotWasm,
    /// wasmtime refused to compile it.
    #[error("invalid WebAssembly: {0}")]
    Invalid(String),
    /// A core module without the `_start` export of a WASI command.
    #[error(
        "the module has no _start export: only WASI command modules (wasm32-wasip1 binaries) can run"
    )]
    NoStart,
    /// A component that exports neither `wasi:cli/run` nor `wasi:http/incoming-handler`.
    #[error(
        "the component exports neither wasi:cli/run (a command) nor wasi:http/incoming-handler (an HTTP handler)"
    )]
    NoEntryPoint,
    /// It imports something the node does not provide.
    #[error("unsupported import: {0}")]
    UnknownImport(String),
}

/// The runtime could not be set up (engine, cache or linker).
#[derive(Debug, thiserror::Error)]
#[error("cannot start the Wasm runtime: {0}")]
pub struct InitError(String);

fn init_error(error: impl std::fmt::Display) -> InitError {
    InitError(error.to_string())
}

/// Why a run ended abnormally before the guest could exit.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Setting up the guest's environment failed (e.g. a volume path is missing).
    #[error("cannot set up the container: {0}")]
    Setup(String),
}

/// A compiled, linked binary, ready to instantiate many times.
enum Program {
    /// A wasm32-wasip1 command module.
    Module(InstancePre<P1State>),
    /// A WASI 0.2 command component (`wasi:cli/run`).
    Command(CommandPre<P2State>),
    /// A WASI 0.2 HTTP component (`wasi:http/incoming-handler`): one instance per request.
    Http(ProxyPre<P2State>),
}

/// A loaded binary, cheap to clone.
#[derive(Clone)]
pub struct Loaded {
    program: Arc<Program>,
    /// The sha256 of the binary, `sha256:<hex>`.
    pub digest: String,
}

impl Loaded {
    /// Whether it is an HTTP component, served on its container's port rather than run as a process.
    pub fn serves_http(&self) -> bool {
        matches!(self.program.as_ref(), Program::Http(_))
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    /// The exit code (0 = success).
    pub code: i32,
    /// `Completed`, `Error` or `OOMKilled`, as Kubernetes reports terminated containers.
    pub reason: &'static str,
    /// What went wrong, for a trap.
    pub message: Option<String>,
}

/// A directory shared with the guest.
#[derive(Debug, Clone)]
pub struct Mount {
    /// The directory on the host.
    pub host_path: PathBuf,
    /// Where the guest sees it.
    pub guest_path: String,
    /// Whether the guest may only read.
    pub read_only: bool,
}

/// Answers the names a guest looks up before the host's resolver does (the cluster's Service names).
pub trait NameLookup: Send + Sync + std::fmt::Debug {
    /// The addresses of `name`; None lets the host resolve it.
    fn lookup(&self, name: &str) -> Option<Vec<std::net::IpAddr>>;
}

/// The network a guest may use: its pod's address and declared ports.
#[derive(Debug, Clone)]
pub struct PodNetwork {
    /// The pod's IP address.
    pub ip: std::net::IpAddr,
    /// The container ports its pod declares; a guest may listen only on these, on `ip`.
    pub ports: Vec<u16>,
    /// The names the cluster answers for the guest.
    pub names: Option<Arc<dyn NameLookup>>,
    /// The addresses the guest may not connect to (none: it may connect anywhere).
    pub infrastructure: Option<Arc<crate::network::sandbox::Infrastructure>>,
}

impl PodNetwork {
    /// Whether a guest may use a socket address this way: it may listen only on its pod's address and declared
    /// ports, and connect anywhere but to the cluster's infrastructure.
    fn allows(&self, address: std::net::SocketAddr, usage: SocketAddrUse) -> bool {
        match usage {
            SocketAddrUse::TcpBind | SocketAddrUse::UdpBind => {
                // An implicit bind before connect asks for the wildcard address and port 0.
                address.port() == 0 && address.ip().is_unspecified()
                    || address.ip() == self.ip && self.ports.contains(&address.port())
            }
            // Outgoing: not to the cluster's machinery.
            SocketAddrUse::TcpConnect => self
                .infrastructure
                .as_ref()
                .is_none_or(|guard| guard.allows(address, Transport::Tcp)),
            SocketAddrUse::UdpSend => self
                .infrastructure
                .as_ref()
                .is_none_or(|guard| guard.allows(address, Transport::Udp)),
            // Listening and what arrives: from anyone.
            SocketAddrUse::TcpListen | SocketAddrUse::TcpAccept | SocketAddrUse::UdpReceive => true,
        }
    }
}

/// Where a guest's stdout or stderr goes: its container log, or an exec session.
pub type Output = Arc<dyn wasmtime_wasi::cli::StdoutStream + Sync>;
/// What a guest reads as its stdin: an attach or exec session's input.
pub type Input = Arc<dyn wasmtime_wasi::cli::StdinStream + Sync>;

/// Everything one run of a container needs.
#[derive(Clone)]
pub struct RunSpec {
    /// argv, argv[0] first.
    pub args: Vec<String>,
    /// Environment variables.
    pub env: Vec<(String, String)>,
    /// Preopened directories.
    pub mounts: Vec<Mount>,
    /// Bytes of linear memory the guest may use, in all.
    pub memory_limit: Option<usize>,
    /// The CPU the guest may use, in millicores (its pod's `resources.limits.cpu`).
    pub cpu_limit: Option<u64>,
    /// The CPU the guest asks for, in millicores (its `resources.requests.cpu`): its share when guests
    /// compete, as the kernel's cpu.weight gives containers theirs.
    pub cpu_request: Option<u64>,
    /// What the guest reads as stdin (None: an empty stdin).
    pub stdin: Option<Input>,
    /// Where stdout goes.
    pub stdout: Output,
    /// Where stderr goes.
    pub stderr: Output,
    /// The pod's address and ports.
    pub network: PodNetwork,
    /// Bytes of linear memory the pod's guests hold, kept current for the agent's eviction.
    pub pod_memory: Arc<std::sync::atomic::AtomicUsize>,
    /// What this run's guests use, for the node's metrics.
    pub usage: Arc<usage::Usage>,
    /// The HTTP requests an HTTP component answered, for the node's metrics.
    pub requests: Arc<crate::metrics::RequestStats>,
}

/// Caps linear memory growth and remembers whether it had to refuse.
pub(crate) struct MemoryLimiter {
    limit: Option<usize>,
    refused: Arc<AtomicBool>,
    /// The node's budget, which every growth is charged to.
    node: Arc<NodeMemory>,
    /// What this guest took of it, given back when its Store goes.
    held: usize,
    /// The pod's count of what its guests hold.
    pod: Arc<std::sync::atomic::AtomicUsize>,
    /// The run's usage, which counts it too.
    usage: Arc<usage::Usage>,
}

impl MemoryLimiter {
    pub(crate) fn new(spec: &RunSpec, refused: Arc<AtomicBool>, node: Arc<NodeMemory>) -> Self {
        Self {
            limit: spec.memory_limit,
            refused,
            node,
            held: 0,
            pod: spec.pod_memory.clone(),
            usage: spec.usage.clone(),
        }
    }
}

impl Drop for MemoryLimiter {
    fn drop(&mut self) {
        self.node.give_back(self.held);
        self.pod.fetch_sub(self.held, Ordering::SeqCst);
        self.usage.shrink_memory(self.held);
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let growth = desired.saturating_sub(current);
        let allowed = self.limit.is_none_or(|limit| desired <= limit)
            && maximum.is_none_or(|max| desired <= max)
            && self.node.try_take(growth);
        if allowed {
            self.held = self.held.saturating_add(growth);
            self.pod.fetch_add(growth, Ordering::SeqCst);
            self.usage.grow_memory(growth);
        } else {
            self.refused.store(true, Ordering::SeqCst);
        }
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000 && maximum.is_none_or(|max| desired <= max))
    }
}

struct P1State {
    wasi: WasiP1Ctx,
    limiter: MemoryLimiter,
}

/// The state of a component's Store: WASI, wasi:http and the limits.
pub(crate) struct P2State {
    ctx: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    limiter: MemoryLimiter,
    /// The pod's address, which a bind to the unspecified address (0.0.0.0) means.
    pod_ip: std::net::IpAddr,
    /// The names the cluster answers.
    names: Option<Arc<dyn NameLookup>>,
    /// Outgoing wasi:http requests, with Service names resolved.
    http_hooks: PodHttpHooks,
}

impl WasiHttpView for P2State {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.http_hooks,
        }
    }
}

/// The wasi:http hooks of a pod: an outgoing request to a Service name goes to the Service's address (the Host
/// header keeps the name); everything else is wasmtime-wasi-http's default client.
struct PodHttpHooks {
    names: Option<Arc<dyn NameLookup>>,
    infrastructure: Option<Arc<crate::network::sandbox::Infrastructure>>,
}

impl PodHttpHooks {
    /// The request's URI with a Service name replaced by its address, if the host is one.
    fn service_uri(&self, uri: &http::Uri) -> Option<http::Uri> {
        let host = uri.host()?;
        let ip = *self.names.as_ref()?.lookup(host)?.first()?;
        let port = uri
            .port_u16()
            .unwrap_or(if uri.scheme() == Some(&http::uri::Scheme::HTTPS) {
                443
            } else {
                80
            });
        let mut parts = uri.clone().into_parts();
        parts.authority = std::net::SocketAddr::new(ip, port).to_string().parse().ok();
        http::Uri::from_parts(parts).ok()
    }
}

type HttpResult<T> = wasmtime_wasi_http::Result<T>;
type IoFuture = Box<dyn Future<Output = HttpResult<()>> + Send>;

impl wasmtime_wasi_http::WasiHttpHooks for PodHttpHooks {
    fn send_request(
        &mut self,
        mut request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        fut: IoFuture,
    ) -> Box<
        dyn Future<Output = HttpResult<(http::Response<wasmtime_wasi_http::WasiBody>, IoFuture)>>
            + Send,
    > {
        if let Some(uri) = self.service_uri(request.uri()) {
            *request.uri_mut() = uri;
        }
        _ = fut;
        let infrastructure = self.infrastructure.clone();
        Box::new(async move {
            use http_body_util::BodyExt;
            if let (Some(guard), Some(host)) = (infrastructure, request.uri().host()) {
                let port = request.uri().port_u16().unwrap_or(80);
                let host = host.trim_start_matches('[').trim_end_matches(']');
                let addresses: Vec<std::net::IpAddr> = match host.parse() {
                    Ok(ip) => vec![ip],
                    Err(_) => tokio::net::lookup_host((host, port))
                        .await
                        .map(|found| found.map(|a| a.ip()).collect())
                        .unwrap_or_default(),
                };
                let refused = |ip: &std::net::IpAddr| {
                    !guard.allows(std::net::SocketAddr::new(*ip, port), Transport::Tcp)
                };
                if addresses.iter().any(refused) {
                    return Err(wasmtime_wasi_http::Error::DestinationIpProhibited);
                }
            }
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as IoFuture,
            ))
        })
    }
}

impl WasiView for P2State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

/// The node's runtime: one Engine, linkers, the binaries loaded so far, and the executors guests run on.
pub struct Runtime {
    engine: Engine,
    p1: Linker<P1State>,
    p2: wasmtime::component::Linker<P2State>,
    loaded: Mutex<HashMap<String, Loaded>>,
    stop_ticker: Arc<AtomicBool>,
    guests: GuestExecutors,
    memory: Arc<NodeMemory>,
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::SeqCst);
    }
}

/// The executors guests run on, apart from the agent's own (proxy, probes, status, log serving), which so never
/// waits behind a busy guest: long-running commands on one, HTTP requests on the other, so a request's latency
/// does not wait behind commands that spin either. The kernel shares the CPUs between their threads; within an
/// executor guests take turns at every slice (see `cpu::govern`).
struct GuestExecutors {
    commands: Option<tokio::runtime::Runtime>,
    requests: Option<tokio::runtime::Runtime>,
}

impl GuestExecutors {
    fn new() -> Result<Self, InitError> {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let executor = |name: &str| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .thread_name(name)
                .enable_all()
                .build()
                .map_err(init_error)
        };
        Ok(Self {
            commands: Some(executor("wasm-commands")?),
            requests: Some(executor("wasm-requests")?),
        })
    }

    fn for_program(&self, program: &Program) -> Result<tokio::runtime::Handle, RunError> {
        let executor = match program {
            Program::Http(_) => &self.requests,
            Program::Module(_) | Program::Command(_) => &self.commands,
        };
        executor
            .as_ref()
            .map(|e| e.handle().clone())
            .ok_or_else(|| RunError::Setup("the node's Wasm runtime is shutting down".into()))
    }
}

impl Drop for GuestExecutors {
    /// Guests still running are dropped where they are; the agent is exiting (a blocking shutdown would
    /// panic inside the agent's own executor).
    fn drop(&mut self) {
        for executor in [self.commands.take(), self.requests.take()]
            .into_iter()
            .flatten()
        {
            executor.shutdown_background();
        }
    }
}

/// Whether bytes start like a core module (`\0asm` version 1) or a component (`\0asm` layer 1).
fn is_component(bytes: &[u8]) -> Result<bool, LoadError> {
    match bytes.get(..8) {
        Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => Ok(false),
        Some([0, b'a', b's', b'm', _, _, 1, 0]) => Ok(true),
        _ => Err(LoadError::NotWasm),
    }
}

fn link_error(error: wasmtime::Error) -> LoadError {
    let text = format!("{error:#}");
    if text.contains("unknown import") || text.contains("import") && text.contains("not") {
        LoadError::UnknownImport(text)
    } else {
        LoadError::Invalid(text)
    }
}

impl Runtime {
    /// Creates the node's Engine, with compiled code cached under `cache_dir`. With `pool_size` > 0, instances
    /// come from a pool of that many pre-reserved slots (measured with per-request HTTP instances: 7,780 requests/s
    /// on demand, 14,600 pooled, when the pool came in); 0 allocates each instance on demand.
    pub fn new(cache_dir: &Path, pool_size: u32) -> Result<Self, InitError> {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        if pool_size > 0 {
            let size = pool_size;
            let mut pool = wasmtime::PoolingAllocationConfig::default();
            pool.total_component_instances(size)
                .total_core_instances(size * 4)
                .total_memories(size)
                .total_tables(size * 2)
                .total_stacks(size)
                // A linear memory's pages go back to the kernel when its instance ends, gathered into one
                // madvise per DECOMMIT_BATCH instances: no memory is kept resident by slots nothing runs in.
                // Keeping the first 2 MiB of each memory (reset with memset) was slower for the hello app
                // (~17,000 requests/s against ~24,000 with 32 clients: the memset touched all of a 1 MiB
                // memory where a request touches a few pages) and held 1 MiB per slot ever used (agent RSS
                // 125 MiB after the load, 53 MiB now).
                .table_keep_resident(TABLE_KEEP_RESIDENT)
                // Reuse the slots a program used before (least recently used first) rather than warm up cold
                // ones: fewer slots hold the module's memory image and a table.
                .max_unused_warm_slots(0)
                .decommit_batch_size(DECOMMIT_BATCH);
            config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        }
        let mut cache = wasmtime::CacheConfig::new();
        cache.with_directory(cache_dir);
        config.cache(Some(wasmtime::Cache::new(cache).map_err(init_error)?));
        let engine = Engine::new(&config).map_err(init_error)?;
        let mut p1 = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut p1, |state: &mut P1State| &mut state.wasi)
            .map_err(init_error)?;
        let mut p2 = wasmtime::component::Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut p2).map_err(init_error)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut p2).map_err(init_error)?;
        bind_on_pod_address(&mut p2).map_err(init_error)?;
        answer_cluster_names(&mut p2).map_err(init_error)?;
        let stop_ticker = Arc::new(AtomicBool::new(false));
        let (ticker_engine, stop) = (engine.clone(), stop_ticker.clone());
        std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    std::thread::sleep(EPOCH_TICK);
                    ticker_engine.increment_epoch();
                }
            })
            .map_err(init_error)?;
        Ok(Self {
            engine,
            p1,
            p2,
            loaded: Mutex::new(HashMap::new()),
            stop_ticker,
            guests: GuestExecutors::new()?,
            memory: Arc::new(NodeMemory::new(usize::MAX)),
        })
    }

    /// The same runtime, charging every guest's memory to a node budget of `bytes`.
    pub fn with_memory_budget(mut self, bytes: usize) -> Self {
        self.memory = Arc::new(NodeMemory::new(bytes));
        self
    }

    /// The node's memory budget and what guests hold of it.
    pub fn memory(&self) -> Arc<NodeMemory> {
        self.memory.clone()
    }

    /// Compiles and links a binary once per digest; later loads of the same bytes are free.
    pub fn load(&self, bytes: &[u8]) -> Result<Loaded, LoadError> {
        self.load_digested(&format!("sha256:{:x}", Sha256::digest(bytes)), bytes)
    }

    /// [`Runtime::load`] of bytes whose digest (`sha256:<hex>`) the caller knows: nothing is hashed, and a
    /// digest loaded before costs a map lookup.
    pub fn load_digested(&self, digest: &str, bytes: &[u8]) -> Result<Loaded, LoadError> {
        let digest = digest.to_owned();
        if let Some(loaded) = self
            .loaded
            .lock()
            .map_err(|_| LoadError::Invalid("runtime poisoned".into()))?
            .get(&digest)
        {
            return Ok(loaded.clone());
        }
        let program = if is_component(bytes)? {
            let component = Component::new(&self.engine, bytes)
                .map_err(|e| LoadError::Invalid(format!("{e:#}")))?;
            let pre = self.p2.instantiate_pre(&component).map_err(link_error)?;
            if let Ok(proxy) = ProxyPre::new(pre.clone()) {
                Program::Http(proxy)
            } else {
                Program::Command(CommandPre::new(pre).map_err(|_| LoadError::NoEntryPoint)?)
            }
        } else {
            let module = Module::new(&self.engine, bytes)
                .map_err(|e| LoadError::Invalid(format!("{e:#}")))?;
            if module.get_export("_start").is_none() {
                return Err(LoadError::NoStart);
            }
            Program::Module(self.p1.instantiate_pre(&module).map_err(link_error)?)
        };
        let loaded = Loaded {
            program: Arc::new(program),
            digest: digest.clone(),
        };
        if let Ok(mut map) = self.loaded.lock() {
            map.insert(digest, loaded.clone());
        }
        Ok(loaded)
    }

    /// Runs a loaded binary to its end on the guests' executor; an HTTP component is served as `serving` says
    /// until it has drained. Dropping the future stops the guest.
    pub async fn run(
        &self,
        loaded: &Loaded,
        spec: RunSpec,
        serving: Option<crate::runtime::http_serve::Serving>,
    ) -> Result<Exit, RunError> {
        let executor = self.guests.for_program(&loaded.program)?;
        // The listener moves to the executor that serves it.
        let serving = serving
            .map(|s| {
                s.listener
                    .into_std()
                    .map(|listener| (listener, s.drain))
                    .map_err(|e| RunError::Setup(format!("cannot hand the listener over: {e}")))
            })
            .transpose()?;
        let (engine, program) = (self.engine.clone(), loaded.program.clone());
        let memory = self.memory.clone();
        let task = tokio_util::task::AbortOnDropHandle::new(executor.spawn(async move {
            let serving = serving
                .map(|(listener, drain)| {
                    tokio::net::TcpListener::from_std(listener)
                        .map(|listener| crate::runtime::http_serve::Serving { listener, drain })
                        .map_err(|e| RunError::Setup(format!("cannot serve the listener: {e}")))
                })
                .transpose()?;
            run_program(&engine, &program, spec, serving, memory).await
        }));
        task.await
            .map_err(|e| RunError::Setup(format!("the guest's task ended abnormally: {e}")))?
    }
}

/// Runs a program to its end (an HTTP component: until it has drained).
async fn run_program(
    engine: &Engine,
    program: &Program,
    spec: RunSpec,
    serving: Option<crate::runtime::http_serve::Serving>,
    memory: Arc<NodeMemory>,
) -> Result<Exit, RunError> {
    let refused = Arc::new(AtomicBool::new(false));
    let outcome = match program {
        Program::Module(pre) => {
            let mut store = Store::new(
                engine,
                P1State {
                    wasi: wasi_builder(&spec)?.build_p1(),
                    limiter: MemoryLimiter::new(&spec, refused.clone(), memory),
                },
            );
            store.limiter(|state| &mut state.limiter);
            crate::runtime::cpu::govern(&mut store, cpu_quota(&spec), slice_ticks(&spec));
            let run = async {
                match pre.instantiate_async(&mut store).await {
                    Ok(instance) => match instance.get_typed_func::<(), ()>(&mut store, "_start") {
                        Ok(start) => start.call_async(&mut store, ()).await,
                        Err(e) => Err(e),
                    },
                    Err(e) => Err(e),
                }
            };
            usage::Charged::new(run, spec.usage.clone()).await
        }
        Program::Command(pre) => {
            let limiter = MemoryLimiter::new(&spec, refused.clone(), memory);
            let mut store = p2_store(engine, &spec, limiter, cpu_quota(&spec))?;
            let run = async {
                match pre.instantiate_async(&mut store).await {
                    Ok(command) => match command.wasi_cli_run().call_run(&mut store).await {
                        Ok(Ok(())) => Ok(()),
                        Ok(Err(())) => Err(I32Exit(1).into()),
                        Err(e) => Err(e),
                    },
                    Err(e) => Err(e),
                }
            };
            usage::Charged::new(run, spec.usage.clone()).await
        }
        Program::Http(pre) => {
            let serving = serving.ok_or_else(|| {
                RunError::Setup("an HTTP component needs a containerPort to be served on".into())
            })?;
            let handler = crate::runtime::http_serve::Handler {
                pre: pre.clone(),
                cpu: cpu_quota(&spec),
                spec,
                memory,
            };
            crate::runtime::http_serve::serve(serving, Arc::new(handler)).await;
            Ok(())
        }
    };
    Ok(exit_of(outcome, refused.load(Ordering::SeqCst)))
}

/// Epoch ticks a guest runs before it yields to the others of its executor: one (10 ms) per 100 millicores
/// it requests, from 1 to 10, so that competing guests share the CPU in proportion to their requests.
fn slice_ticks(spec: &RunSpec) -> u64 {
    spec.cpu_request
        .map_or(1, |millicores| (millicores / 100).clamp(1, 10))
}

/// In a pod, listening on 0.0.0.0 means the pod's own address (as in a Linux pod's network namespace): the
/// component Linker's `tcp-socket.start-bind` is replaced by one that maps the unspecified IPv4 address to the
/// pod's IP before wasmtime-wasi binds, so two pods can both listen on 0.0.0.0:8080 and the socket check then
/// sees the real address.
fn bind_on_pod_address(linker: &mut wasmtime::component::Linker<P2State>) -> wasmtime::Result<()> {
    use wasmtime_wasi::p2::bindings::sockets::network::IpSocketAddress;
    use wasmtime_wasi::p2::bindings::sockets::tcp::HostTcpSocket;
    use wasmtime_wasi::sockets::WasiSocketsView;
    type Params = (
        wasmtime::component::Resource<wasmtime_wasi::p2::TcpSocket>,
        wasmtime::component::Resource<wasmtime_wasi::p2::Network>,
        IpSocketAddress,
    );
    linker.allow_shadowing(true);
    linker.instance(TCP_INTERFACE)?.func_wrap_async(
        "[method]tcp-socket.start-bind",
        |mut store: wasmtime::StoreContextMut<'_, P2State>, (socket, network, address): Params| {
            Box::new(async move {
                let mut address = std::net::SocketAddr::from(address);
                let pod_ip = store.data().pod_ip;
                if address.ip() == std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
                    && pod_ip.is_ipv4()
                {
                    address.set_ip(pod_ip);
                }
                let mut sockets = store.data_mut().sockets();
                let bound =
                    HostTcpSocket::start_bind(&mut sockets, socket, network, address.into()).await;
                // An ErrorCode goes back to the guest; anything else is a trap.
                let result = match bound {
                    Ok(()) => Ok(()),
                    Err(error) => Err(error.downcast()?),
                };
                Ok((result,))
            })
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// The wasi:sockets TCP interface as wasmtime-wasi registers it (older 0.2 imports resolve to it by semver).
const TCP_INTERFACE: &str = "wasi:sockets/tcp@0.2.12";
/// The wasi:sockets name lookup interface, likewise.
const NAME_LOOKUP_INTERFACE: &str = "wasi:sockets/ip-name-lookup@0.2.12";

/// Service names resolve inside pods: `ip-name-lookup.resolve-addresses` is replaced by one that asks the
/// pod's [`NameLookup`] first and hands wasmtime-wasi the address it answers (an IP literal resolves to
/// itself), so the guest's resolver gets the Service's address; other names go to the host's resolver.
fn answer_cluster_names(linker: &mut wasmtime::component::Linker<P2State>) -> wasmtime::Result<()> {
    use wasmtime_wasi::p2::bindings::sockets::ip_name_lookup::Host;
    use wasmtime_wasi::p2::bindings::sockets::network::ErrorCode;
    use wasmtime_wasi::sockets::WasiSocketsView;
    type Params = (
        wasmtime::component::Resource<wasmtime_wasi::p2::Network>,
        String,
    );
    linker.allow_shadowing(true);
    linker.instance(NAME_LOOKUP_INTERFACE)?.func_wrap(
        "resolve-addresses",
        |mut store: wasmtime::StoreContextMut<'_, P2State>, (network, name): Params| {
            let answer = store.data().names.as_ref().and_then(|n| n.lookup(&name));
            let name = match answer.as_deref() {
                Some([first, ..]) => first.to_string(),
                Some([]) => return Ok((Err(ErrorCode::NameUnresolvable),)),
                None => name,
            };
            let mut sockets = store.data_mut().sockets();
            let result = match Host::resolve_addresses(&mut sockets, network, name) {
                Ok(stream) => Ok(stream),
                Err(error) => Err(error.downcast()?),
            };
            Ok((result,))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// A fresh component Store for one run or one request, with the spec's limits and an epoch deadline.
pub(crate) fn p2_store(
    engine: &Engine,
    spec: &RunSpec,
    limiter: MemoryLimiter,
    cpu: Option<Arc<Mutex<crate::runtime::cpu::Quota>>>,
) -> Result<Store<P2State>, RunError> {
    let mut store = Store::new(
        engine,
        P2State {
            ctx: wasi_builder(spec)?.build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            limiter,
            pod_ip: spec.network.ip,
            names: spec.network.names.clone(),
            http_hooks: PodHttpHooks {
                names: spec.network.names.clone(),
                infrastructure: spec.network.infrastructure.clone(),
            },
        },
    );
    store.limiter(|state| &mut state.limiter);
    crate::runtime::cpu::govern(&mut store, cpu, slice_ticks(spec));
    Ok(store)
}

/// The CPU quota of one run of a container (shared by all its requests, for an HTTP component).
fn cpu_quota(spec: &RunSpec) -> Option<Arc<Mutex<crate::runtime::cpu::Quota>>> {
    spec.cpu_limit.map(|millicores| {
        Arc::new(Mutex::new(crate::runtime::cpu::Quota::new(
            millicores,
            EPOCH_TICK,
            std::time::Instant::now(),
        )))
    })
}

/// The guest's WASI world: argv, env, stdio into its log, its volumes and the network its pod allows.
fn wasi_builder(spec: &RunSpec) -> Result<WasiCtxBuilder, RunError> {
    let mut builder = WasiCtxBuilder::new();
    builder
        .args(&spec.args)
        .envs(&spec.env)
        .stdout(spec.stdout.clone())
        .stderr(spec.stderr.clone())
        .allow_tcp(true)
        .allow_udp(true)
        .allow_ip_name_lookup(true);
    if let Some(stdin) = &spec.stdin {
        builder.stdin(stdin.clone());
    }
    let network = spec.network.clone();
    builder.socket_addr_check(move |address, usage| {
        let allowed = network.allows(address, usage);
        Box::pin(async move { allowed })
    });
    for mount in &spec.mounts {
        let perms = if mount.read_only {
            FsPerms::ReadOnly
        } else {
            FsPerms::ReadWrite
        };
        builder
            .preopened_dir(&mount.host_path, &mount.guest_path, perms)
            .map_err(|e| {
                RunError::Setup(format!(
                    "cannot mount {} at {}: {e}",
                    mount.host_path.display(),
                    mount.guest_path
                ))
            })?;
    }
    Ok(builder)
}

fn exit_of(outcome: wasmtime::Result<()>, memory_refused: bool) -> Exit {
    match outcome {
        Ok(()) => Exit {
            code: 0,
            reason: "Completed",
            message: None,
        },
        Err(error) => match error.downcast_ref::<I32Exit>() {
            Some(I32Exit(0)) => Exit {
                code: 0,
                reason: "Completed",
                message: None,
            },
            Some(I32Exit(code)) if memory_refused => Exit {
                code: *code,
                reason: "OOMKilled",
                message: None,
            },
            Some(I32Exit(code)) => Exit {
                code: *code,
                reason: "Error",
                message: None,
            },
            None if memory_refused => Exit {
                code: 137,
                reason: "OOMKilled",
                message: Some(format!("{error:#}")),
            },
            // A trap: like a process killed by a signal, with the trap as the message.
            None => Exit {
                code: 134,
                reason: "Error",
                message: Some(format!("{error:#}")),
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_tells_modules_from_components() {
        assert!(!is_component(b"\0asm\x01\0\0\0rest").unwrap());
        assert!(is_component(b"\0asm\x0d\0\x01\0rest").unwrap());
        assert!(matches!(
            is_component(b"#!/bin/sh\n"),
            Err(LoadError::NotWasm)
        ));
        assert!(matches!(is_component(b""), Err(LoadError::NotWasm)));
    }
}
