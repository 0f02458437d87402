//! Turns a manifest into something that serves: variables resolved, components
//! composed and compiled, pre-instantiated, and routes ordered.

use crate::compile_cache::CompileCache;
use crate::compose::{self, DependencySpec};
use crate::host_services;
use crate::kv::{KvStore, MemoryStore, RedisStore, Stores};
use crate::manifest::{self, Loaded, Route};
use crate::outbound::{AllowedHost, OutboundPolicy};
use crate::outbound_http::OutboundClient;
use crate::reuse::{InstancePool, ReusePolicy};
use crate::runtime_config::{KeyValueStore, RuntimeConfig};
use crate::state::{ComponentConfig, HostState};
use anyhow::{Context, Result, bail};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};
use wasmtime_wasi_http::p2::bindings::ProxyPre;

/// Limits that protect the host from one component.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Requests handled at once; more wait for a slot.
    pub max_concurrent_requests: u32,
    pub max_memory_bytes: usize,
    pub request_timeout: std::time::Duration,
    /// Bound of each in-memory key-value store (keys and values).
    pub kv_memory_max_bytes: u64,
    /// Host resources (streams, fields, pollables, ...) one request may hold
    /// at once; past it a new one traps, so a guest cannot grow the host's
    /// table without bound (wasmtime's own default is a million).
    pub max_resources: usize,
    /// How long an instance lives (`crate::reuse`).
    pub reuse: ReusePolicy,
}

pub const EPOCH_TICK: std::time::Duration = std::time::Duration::from_millis(10);

pub struct ServedComponent {
    pub config: Arc<ComponentConfig>,
    pub pre: ProxyPre<HostState>,
    /// Its instances kept for the next request (`crate::reuse`).
    pub instances: InstancePool,
}

/// A route and the component that serves it; `prefix` routes end in `/...`.
pub struct RouteEntry {
    pub path: String,
    pub prefix: bool,
    pub component: usize,
}

pub struct App {
    pub engine: Engine,
    pub components: Vec<ServedComponent>,
    pub routes: Vec<RouteEntry>,
    pub stores: Stores,
    /// Outbound HTTP for every component: one connection pool.
    pub outbound: OutboundClient,
    pub limits: Limits,
    /// The compilation cache, when on (its hits and misses).
    pub compile_cache: Option<CompileCache>,
}

impl App {
    /// The component for a path: exact routes first, then the longest prefix.
    pub fn route(&self, path: &str) -> Option<(&RouteEntry, &ServedComponent)> {
        self.routes
            .iter()
            .find(|r| !r.prefix && r.path == path)
            .or_else(|| {
                self.routes.iter().filter(|r| r.prefix).find(|r| {
                    r.path == "/"
                        || path == r.path
                        || path.starts_with(&format!("{}/", r.path.trim_end_matches('/')))
                })
            })
            .map(|r| (r, &self.components[r.component]))
    }
}

/// Where `SPIN_VARIABLE_*` values come from: the process environment in the
/// binary, a map in tests.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Application variables: `SPIN_VARIABLE_<NAME>` from the environment, else the default.
fn resolve_variables(loaded: &Loaded, env: Env<'_>) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for (name, var) in &loaded.manifest.variables {
        let env = env(&format!("SPIN_VARIABLE_{}", name.to_ascii_uppercase()));
        match env.or_else(|| var.get_ref().default.clone()) {
            Some(value) => {
                out.insert(name.clone(), value);
            }
            None if var.get_ref().required => {
                bail!(
                    "variable `{name}` is required: set SPIN_VARIABLE_{}",
                    name.to_ascii_uppercase()
                )
            }
            None => {}
        }
    }
    Ok(out)
}

fn engine(limits: &Limits) -> Result<Engine> {
    let slots = limits.max_concurrent_requests;
    let mut pool = PoolingAllocationConfig::default();
    // A composed gateway holds one core instance and memory per component and adapter.
    pool.total_component_instances(slots)
        .total_core_instances(slots * 16)
        .total_memories(slots * 8)
        .total_tables(slots * 16)
        .max_memory_size(limits.max_memory_bytes)
        .max_memories_per_component(16)
        .max_tables_per_component(32)
        .max_core_instances_per_component(64)
        // Reset the first 2 MiB of a memory (the components' initial memory, see
        // xtask's LINK_FLAGS) and 64 KiB of a table with memset, the pages a request
        // touched found by PAGEMAP_SCAN (Linux 6.7+; `Auto` falls back), instead of
        // madvise and a page fault per page on the next request: less host CPU per
        // request (BENCHMARKS.md, 2026-12-03 (m)). Only touched pages stay resident.
        .linear_memory_keep_resident(2 << 20)
        .table_keep_resident(64 << 10)
        .pagemap_scan(wasmtime::Enabled::Auto);
    let mut config = Config::new();
    // `perf` can name the compiled wasm functions (a /tmp/perf-PID.map) when asked:
    // what `scripts/bench`'s profiles of the host read.
    if std::env::var_os("SLUICE_HOST_PERF_MAP").is_some_and(|v| v == "1") {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config)
        .map_err(anyhow::Error::from)
        .context("creating the wasm engine")
}

/// Everything a component may import: WASI, outbound HTTP, key-value, config.
pub fn linker(engine: &Engine) -> Result<Linker<HostState>> {
    let mut linker = Linker::<HostState>::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    host_services::add_to_linker(&mut linker)?;
    Ok(linker)
}

/// Loads the application; `cache_dir` keeps compiled components across
/// starts (`crate::compile_cache`), `None` compiles every start.
pub fn load(
    loaded: &Loaded,
    runtime: &RuntimeConfig,
    limits: Limits,
    cache_dir: Option<&Path>,
    env: Env<'_>,
) -> Result<App> {
    let variables = resolve_variables(loaded, env)?;
    let compile_cache = cache_dir.map(CompileCache::open).transpose()?;
    let engine = engine(&limits)?;
    let linker = linker(&engine)?;
    let mut labels: BTreeSet<String> = runtime.key_value_store.keys().cloned().collect();
    labels.insert("default".into());

    let mut index_of = BTreeMap::new();
    let mut components = Vec::new();
    for trigger in &loaded.manifest.trigger.http {
        let id = trigger.component.get_ref().clone();
        if index_of.contains_key(&id) {
            continue;
        }
        let spec = &loaded.manifest.component[&id];
        for label in &spec.key_value_stores {
            if !labels.contains(label) {
                bail!(
                    "component `{id}` uses key-value store `{label}`, which runtime-config.toml does not define"
                );
            }
        }
        let config = component_config(loaded, &id, spec, &variables)?;
        let compiled = compile(loaded, &id, spec, &engine, compile_cache.as_ref())?;
        let pre = link(&id, &compiled, &linker)?;
        let instances = InstancePool::new(&id, limits.reuse);
        index_of.insert(id, components.len());
        components.push(ServedComponent {
            instances,
            config: Arc::new(config),
            pre,
        });
    }
    Ok(App {
        engine,
        components,
        routes: routes(loaded, &index_of),
        stores: open_stores(runtime, labels, limits.kv_memory_max_bytes)?,
        outbound: OutboundClient::new(),
        limits,
        compile_cache,
    })
}

/// What a component may see and reach: its variables and outbound hosts with
/// the application's variables filled in.
fn component_config(
    loaded: &Loaded,
    id: &str,
    spec: &manifest::Component,
    variables: &BTreeMap<String, String>,
) -> Result<ComponentConfig> {
    let resolved = |template: &str| manifest::expand(template, |n| variables.get(n).cloned());
    let mut component_vars = BTreeMap::new();
    for (name, template) in &spec.variables {
        let value = resolved(template.get_ref()).with_context(|| {
            format!("component `{id}` variable `{name}` refers to an unset variable")
        })?;
        component_vars.insert(name.clone(), value);
    }
    let mut allowed = Vec::new();
    for entry in &spec.allowed_outbound_hosts {
        let value = resolved(entry.get_ref()).with_context(|| {
            format!("component `{id}`: allowed_outbound_hosts refers to an unset variable")
        })?;
        allowed.push(AllowedHost::parse(&value).map_err(|e| {
            loaded.invalid(
                entry.span(),
                format!("component.{id}.allowed_outbound_hosts"),
                e.to_string(),
            )
        })?);
    }
    Ok(ComponentConfig {
        id: id.to_string(),
        key_value_stores: spec.key_value_stores.clone(),
        variables: component_vars,
        environment: spec
            .environment
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        outbound: OutboundPolicy::new(allowed),
    })
}

/// The component's bytes, composed with its dependencies as Spin composes
/// them, compiled and pre-instantiated.
/// Compiles every component the triggers serve into the cache in
/// `cache_dir` (for a container image: the next start loads them). Needs no
/// variables or stores: only the components and the limits, which shape the
/// engine's code as they do at `up`.
pub fn precompile(loaded: &Loaded, limits: &Limits, cache_dir: &Path) -> Result<CompileCache> {
    let cache = CompileCache::open(cache_dir)?;
    let engine = engine(limits)?;
    let mut done = BTreeSet::new();
    for trigger in &loaded.manifest.trigger.http {
        let id = trigger.component.get_ref();
        if done.insert(id.clone()) {
            let spec = &loaded.manifest.component[id];
            compile(loaded, id, spec, &engine, Some(&cache))?;
        }
    }
    Ok(cache)
}

/// A component composed with its dependencies and compiled (or loaded from
/// the cache).
fn compile(
    loaded: &Loaded,
    id: &str,
    spec: &manifest::Component,
    engine: &Engine,
    cache: Option<&CompileCache>,
) -> Result<Component> {
    let base = loaded.base_dir();
    let source = base.join(spec.source.get_ref());
    let main = std::fs::read(&source)
        .with_context(|| format!("reading component `{id}` from {}", source.display()))?;
    let bytes = if spec.dependencies.is_empty() {
        main
    } else {
        let deps: Vec<DependencySpec> = spec
            .dependencies
            .iter()
            .map(|(name, dep)| DependencySpec {
                name: name.clone(),
                path: base.join(&dep.get_ref().path),
                export: dep.get_ref().export.clone(),
            })
            .collect();
        compose::compose(id, &main, &deps, spec.dependencies_inherit_configuration)
            .with_context(|| format!("composing component `{id}`"))?
    };
    match cache {
        Some(cache) => cache.component(engine, &bytes).map_err(anyhow::Error::from),
        None => Component::new(engine, &bytes).map_err(anyhow::Error::from),
    }
    .with_context(|| format!("compiling component `{id}`"))
}

fn link(id: &str, compiled: &Component, linker: &Linker<HostState>) -> Result<ProxyPre<HostState>> {
    let instance_pre = linker
        .instantiate_pre(compiled)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("linking component `{id}`"))?;
    ProxyPre::new(instance_pre)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("component `{id}` does not export wasi:http/incoming-handler"))
}

/// The HTTP triggers as routes, longest prefix first so `/v1/...` wins over `/...`.
fn routes(loaded: &Loaded, index_of: &BTreeMap<String, usize>) -> Vec<RouteEntry> {
    let mut routes = Vec::new();
    for trigger in &loaded.manifest.trigger.http {
        let Route::Path(path) = trigger.route.get_ref() else {
            continue;
        };
        let component = index_of[trigger.component.get_ref()];
        routes.push(match path.strip_suffix("/...") {
            Some(prefix) => RouteEntry {
                path: if prefix.is_empty() {
                    "/".into()
                } else {
                    prefix.into()
                },
                prefix: true,
                component,
            },
            None => RouteEntry {
                path: path.clone(),
                prefix: false,
                component,
            },
        });
    }
    routes.sort_by_key(|r| std::cmp::Reverse(r.path.len()));
    routes
}

/// The backend of every label: as `runtime-config.toml` says, else in memory.
/// Redis stores connect lazily, but need the Tokio runtime they will run on.
fn open_stores(
    runtime: &RuntimeConfig,
    labels: BTreeSet<String>,
    memory_max_bytes: u64,
) -> Result<Stores> {
    let mut stores = Vec::new();
    for label in labels {
        let store = match runtime.key_value_store.get(&label) {
            Some(KeyValueStore::Redis { url }) => {
                if tokio::runtime::Handle::try_current().is_err() {
                    bail!("key-value store `{label}`: redis needs a Tokio runtime to connect from");
                }
                KvStore::Redis(
                    RedisStore::new(url).with_context(|| format!("key-value store `{label}`"))?,
                )
            }
            Some(KeyValueStore::Spin { .. }) | None => {
                KvStore::Memory(MemoryStore::new(memory_max_bytes))
            }
        };
        stores.push((label, store));
    }
    Ok(Stores::new(stores))
}
