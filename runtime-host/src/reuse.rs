//! Consecutive instance reuse: an instance of a component that finished a
//! request cleanly serves the next one, as `wasmtime serve` does with
//! `--max-instance-reuse-count` above 1 and Spin 4 with WASI 0.3 instances,
//! instead of instantiating the whole composition (four core instances and
//! memories for the gateway) for every request.
//!
//! What an instance keeps across requests is its own linear memory: the
//! components keep only their parsed settings there (which cannot change
//! while the application runs) and read everything else from the key-value
//! store each time. The host state is fresh for every request: the resource
//! table must be empty when a request ends (else the instance is retired),
//! the HTTP context is new, the client address and the deadline are the
//! request's own. An instance is never reused after a trap, a timeout, a
//! response its client did not read to the end, a grow the memory limit
//! refused, or `max_uses` requests; an idle one is dropped after
//! `idle_timeout`.

use crate::state::HostState;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use wasmtime::Store;
use wasmtime_wasi_http::p2::bindings::Proxy;

/// How long instances live.
#[derive(Debug, Clone, Copy)]
pub struct ReusePolicy {
    /// Requests one instance serves at most; 1 instantiates for every request.
    pub max_uses: u32,
    /// An instance idle this long is dropped (its memory with it).
    pub idle_timeout: Duration,
}

impl ReusePolicy {
    /// Every request on a fresh instance, as Spin serves WASI 0.2.
    pub const NEVER: ReusePolicy = ReusePolicy {
        max_uses: 1,
        idle_timeout: Duration::ZERO,
    };
}

/// An instance that has served `served` requests, with its store.
pub struct Warm {
    pub store: Store<HostState>,
    pub proxy: Proxy,
    pub served: u32,
    idle_since: Instant,
}

impl Warm {
    pub fn new(store: Store<HostState>, proxy: Proxy, served: u32) -> Warm {
        Warm {
            store,
            proxy,
            served,
            idle_since: Instant::now(),
        }
    }
}

/// Why an instance was not kept for another request (a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retired {
    Trap,
    Timeout,
    /// The client left before it read the whole response.
    Abandoned,
    /// A grow the memory or table limit refused.
    LimitHit,
    /// Host resources still open when the request ended.
    Leaked,
    /// It served `max_uses` requests.
    Uses,
    Idle,
    /// Reuse is off (`max_uses` of 1).
    Off,
}

impl Retired {
    pub fn label(self) -> &'static str {
        match self {
            Retired::Trap => "trap",
            Retired::Timeout => "timeout",
            Retired::Abandoned => "abandoned",
            Retired::LimitHit => "limit",
            Retired::Leaked => "leaked_resources",
            Retired::Uses => "max_uses",
            Retired::Idle => "idle",
            Retired::Off => "reuse_off",
        }
    }

    pub const ALL: [Retired; 8] = [
        Retired::Trap,
        Retired::Timeout,
        Retired::Abandoned,
        Retired::LimitHit,
        Retired::Leaked,
        Retired::Uses,
        Retired::Idle,
        Retired::Off,
    ];
}

/// Counts a retired instance.
pub fn retire(component: &str, why: Retired) {
    metrics::counter!("sluice_host_instances_retired_total",
        "component" => component.to_owned(), "cause" => why.label())
    .increment(1);
}

/// One component's idle instances, most recently used last.
pub struct InstancePool {
    component: String,
    policy: ReusePolicy,
    idle: Mutex<Vec<Warm>>,
}

impl InstancePool {
    pub fn new(component: &str, policy: ReusePolicy) -> InstancePool {
        InstancePool {
            component: component.to_string(),
            policy,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// The most recently used idle instance (its memory is the warmest),
    /// dropping those idle too long.
    pub fn take(&self) -> Option<Warm> {
        self.sweep();
        let warm = self.idle.lock().ok()?.pop()?;
        metrics::counter!("sluice_host_instance_reuses_total", "component" => self.component.clone())
            .increment(1);
        Some(warm)
    }

    /// Keeps an instance that served a request cleanly, unless it has served
    /// its share.
    pub fn give_back(&self, mut warm: Warm) {
        if self.policy.max_uses <= 1 {
            return retire(&self.component, Retired::Off);
        }
        if warm.served >= self.policy.max_uses {
            return retire(&self.component, Retired::Uses);
        }
        warm.idle_since = Instant::now();
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(warm);
        }
    }

    /// Drops instances idle longer than the policy allows (on every take, and
    /// on the server's sweep between requests).
    pub fn sweep(&self) {
        let expired: Vec<Warm> = match self.idle.lock() {
            Ok(mut idle) => {
                let timeout = self.policy.idle_timeout;
                let (expired, kept) = std::mem::take(&mut *idle)
                    .into_iter()
                    .partition(|w| w.idle_since.elapsed() >= timeout);
                *idle = kept;
                expired
            }
            Err(_) => Vec::new(),
        };
        for _ in &expired {
            retire(&self.component, Retired::Idle);
        }
    }
}
