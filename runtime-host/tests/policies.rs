//! The edge policy components, each instantiated alone under wasmtime with the
//! host's own key-value and config services, and called through their WIT
//! exports: the decisions, headers and refusals that reach clients.
//!
//! Needs `cargo xtask edge` (the test command runs it) and, for the Redis
//! cases, Redis on 127.0.0.1:6379 (the test command starts it when down).
//!
//! The suite runs twice in the test command: with every call on a fresh
//! instance (as Spin serves WASI 0.2) and with `SLUICE_HOST_MAX_INSTANCE_REUSE_COUNT`
//! above 1, where a call is served by an instance an earlier call of the same
//! test left behind (as sluice-host reuses them), so a component that kept one
//! request's data for the next fails the same assertions.
#![expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers: any failure should fail the test"
)]

use sluice_host::kv::{KvStore, MemoryStore, RedisStore, Stores};
use sluice_host::outbound::{AllowedHost, OutboundPolicy};
use sluice_host::state::{ComponentConfig, HostState};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use wasmtime::component::{Component, Instance};
use wasmtime::{Config, Engine, Store};

mod rate_limit_world {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "sluice:edge/rate-limit-policy",
        exports: { default: async },
        with: {
            "wasi:keyvalue": sluice_host::host_services::bindings::wasi::keyvalue,
            "wasi:config": sluice_host::host_services::bindings::wasi::config,
        },
    });
}

mod cache_world {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "sluice:edge/cache-policy",
        exports: { default: async },
        with: {
            "wasi:keyvalue": sluice_host::host_services::bindings::wasi::keyvalue,
            "wasi:config": sluice_host::host_services::bindings::wasi::config,
        },
    });
}

mod auth_world {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "sluice:edge/auth-policy",
        exports: { default: async },
        with: {
            "wasi:keyvalue": sluice_host::host_services::bindings::wasi::keyvalue,
            "wasi:config": sluice_host::host_services::bindings::wasi::config,
        },
    });
}

fn wasm(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/wasm")
        .join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: run `cargo xtask edge` first",
        path.display()
    );
    path
}

/// One policy component, compiled once, with its variables and stores.
struct Policy {
    engine: Engine,
    component: Component,
    linker: wasmtime::component::Linker<HostState>,
    config: Arc<ComponentConfig>,
    stores: Stores,
    /// Instances that served a call, with how many, when reuse is on.
    idle: Mutex<Vec<(Store<HostState>, Instance, u32)>>,
}

/// Calls one instance serves, from the host's own variable (1: a fresh
/// instance for every call).
fn reuse_count() -> u32 {
    std::env::var("SLUICE_HOST_MAX_INSTANCE_REUSE_COUNT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

/// An instance of a policy for one call; `done` hands it back for the next
/// call when reuse is on (a call that failed never hands it back).
struct Lease<'a> {
    policy: &'a Policy,
    store: Store<HostState>,
    instance: Instance,
    served: u32,
}

impl Lease<'_> {
    fn done(mut self) {
        self.served += 1;
        if self.served < reuse_count() {
            assert!(
                !self.store.data_mut().holds_request_resources(),
                "a call left host resources open"
            );
            self.policy
                .idle
                .lock()
                .unwrap()
                .push((self.store, self.instance, self.served));
        }
    }
}

impl Policy {
    fn new(name: &str, variables: &[(&str, &str)], stores: Stores) -> Policy {
        Policy::with_outbound(name, variables, stores, &[])
    }

    fn with_outbound(
        name: &str,
        variables: &[(&str, &str)],
        stores: Stores,
        allowed: &[String],
    ) -> Policy {
        let engine = Engine::new(Config::new().wasm_component_model(true)).unwrap();
        let component = Component::from_file(&engine, wasm(name)).unwrap();
        let linker = sluice_host::app::linker(&engine).unwrap();
        Policy {
            engine,
            component,
            linker,
            config: Arc::new(ComponentConfig {
                id: name.into(),
                key_value_stores: vec!["default".into()],
                variables: variables
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>(),
                environment: Vec::new(),
                outbound: OutboundPolicy::new(
                    allowed
                        .iter()
                        .map(|a| AllowedHost::parse(a).unwrap())
                        .collect(),
                ),
            }),
            stores,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// A reused instance (its host state begun afresh) or a new one.
    async fn lease(&self) -> Lease<'_> {
        let reused = self.idle.lock().unwrap().pop();
        if let Some((mut store, instance, served)) = reused {
            store.data_mut().begin_request();
            return Lease {
                policy: self,
                store,
                instance,
                served,
            };
        }
        let mut store = self.store();
        let instance = self
            .linker
            .instantiate_async(&mut store, &self.component)
            .await
            .unwrap();
        Lease {
            policy: self,
            store,
            instance,
            served: 0,
        }
    }

    fn store(&self) -> Store<HostState> {
        Store::new(
            &self.engine,
            HostState::new(
                self.config.clone(),
                self.stores.clone(),
                sluice_host::outbound_http::OutboundClient::new(),
                64 << 20,
                10_000,
            ),
        )
    }
}

fn memory() -> Stores {
    Stores::new([(
        "default".to_string(),
        KvStore::Memory(MemoryStore::new(8 << 20)),
    )])
}

fn redis(url: &str) -> Stores {
    Stores::new([(
        "default".to_string(),
        KvStore::Redis(RedisStore::new(url).unwrap()),
    )])
}

/// Every store flavour a policy may meet, by name: sluice-host's memory store
/// (counters as Spin's default store keeps them), Redis, and both as Spin
/// 4.0.2's Redis store behaves (every swap reported failed, written or not).
fn store_flavours() -> Vec<(&'static str, Stores)> {
    let one = |store: KvStore| Stores::new([("default".to_string(), store)]);
    let redis = || KvStore::Redis(RedisStore::new("redis://127.0.0.1:6379").unwrap());
    let memory = || KvStore::Memory(MemoryStore::new(8 << 20));
    vec![
        ("memory", one(memory())),
        ("redis", one(redis())),
        (
            "memory, swaps reported failed",
            one(KvStore::SwapReportsFailure(Box::new(memory()))),
        ),
        (
            "redis, swaps reported failed (Spin 4.0.2's Redis store)",
            one(KvStore::SwapReportsFailure(Box::new(redis()))),
        ),
    ]
}

/// Unique per test run, so tests sharing the real Redis never share records.
fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

mod rate_limit {
    use super::rate_limit_world::RateLimitPolicy;
    use super::rate_limit_world::exports::sluice::rate_limit::rate_limit::{
        TokenAdmission, TokenCharge, TokenRequest,
    };
    use super::rate_limit_world::sluice::types::types::{
        Principal, RequestHead, Tier, TokenLimits,
    };
    use super::*;

    pub fn principal(subject: &str, tier: Tier, scopes: &[&str]) -> Principal {
        Principal {
            subject: subject.into(),
            tier,
            key_id: None,
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            token_limits: TokenLimits {
                key: None,
                user: None,
            },
        }
    }

    pub type TokenOutcome = Result<TokenAdmission, (u16, Vec<(String, String)>, String)>;

    pub async fn admit_tokens(
        policy: &Policy,
        who: &Principal,
        head: &RequestHead,
        body: &[u8],
    ) -> TokenOutcome {
        let read = sluice_core::token_estimate::TokenRequest::read(body);
        let request = TokenRequest {
            text_bytes: read.text_bytes,
            files: read.files,
            output_tokens: read.output_tokens,
            choices: read.choices,
        };
        let (mut lease, instance) = instantiate(policy).await;
        let outcome = instance
            .sluice_rate_limit_rate_limit()
            .call_admit_tokens(&mut lease.store, who, head, request)
            .await
            .unwrap()
            .map_err(|d| (d.status, d.headers, String::from_utf8(d.body).unwrap()));
        lease.done();
        outcome
    }

    pub async fn settle_tokens(policy: &Policy, charge: &TokenCharge, used: u64) {
        let (mut lease, instance) = instantiate(policy).await;
        instance
            .sluice_rate_limit_rate_limit()
            .call_settle_tokens(&mut lease.store, charge, used)
            .await
            .unwrap();
        lease.done();
    }

    pub fn head(method: &str, path: &str, ip: Option<&str>) -> RequestHead {
        RequestHead {
            method: method.into(),
            path: path.into(),
            query: None,
            headers: Vec::new(),
            client_ip: ip.map(str::to_string),
        }
    }

    pub type Outcome = Result<Vec<(String, String)>, (u16, Vec<(String, String)>, String)>;

    /// An instance of the policy as the host serves a request with.
    async fn instantiate(policy: &Policy) -> (Lease<'_>, RateLimitPolicy) {
        let mut lease = policy.lease().await;
        let bindings = RateLimitPolicy::new(&mut lease.store, &lease.instance).unwrap();
        (lease, bindings)
    }

    pub async fn check(policy: &Policy, who: &Principal, head: &RequestHead) -> Outcome {
        let (mut lease, instance) = instantiate(policy).await;
        let outcome = instance
            .sluice_rate_limit_rate_limit()
            .call_check(&mut lease.store, who, head)
            .await
            .unwrap()
            .map_err(|d| (d.status, d.headers, String::from_utf8(d.body).unwrap()));
        lease.done();
        outcome
    }

    /// Sends `requests` concurrent requests of one free-tier subject,
    /// alternating between two policy instances; how many were admitted.
    pub async fn admitted_by_two(
        first: Arc<Policy>,
        second: Arc<Policy>,
        requests: usize,
    ) -> usize {
        let subject = unique("shared");
        let mut tasks = Vec::new();
        for i in 0..requests {
            let policy = if i % 2 == 0 {
                first.clone()
            } else {
                second.clone()
            };
            let who = principal(&subject, Tier::Free, &[]);
            tasks.push(tokio::spawn(async move {
                check(&policy, &who, &head("GET", "/v1/me", None))
                    .await
                    .is_ok()
            }));
        }
        let mut admitted = 0;
        for t in tasks {
            admitted += usize::from(t.await.unwrap());
        }
        admitted
    }

    pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no {name} in {headers:?}"))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn token_limits_admit_on_the_estimate_and_settle_to_the_usage() {
    use rate_limit::*;
    use rate_limit_world::sluice::types::types::Tier;
    let policy = Policy::new("ratelimit", &[("tokens_free", "1000/1h")], memory());
    let who = principal(&unique("user"), Tier::Free, &[]);
    let chat = head("POST", "/v1/chat/completions", None);
    let body = br#"{"model":"m","max_tokens":500,"messages":[{"role":"user","content":"hi"}]}"#;
    let estimate = (body.len() as u64).div_ceil(4) + 500;

    let first = admit_tokens(&policy, &who, &chat, body).await.unwrap();
    let charge = first.charge.unwrap();
    assert_eq!(charge.estimate, estimate);
    let remaining = 1000 - estimate;
    assert_eq!(
        header(&first.headers, "x-ratelimit-remaining-tokens"),
        remaining.to_string()
    );
    assert_eq!(
        header(&first.headers, "ratelimit-policy"),
        "\"tokens-free\";q=1000;w=3600;qu=\"tokens\""
    );
    // A second estimate does not fit in what is left...
    let (status, headers, refusal) = admit_tokens(&policy, &who, &chat, body).await.unwrap_err();
    assert_eq!(status, 429);
    assert!(header(&headers, "retry-after").parse::<u64>().unwrap() >= 1);
    let refusal: serde_json::Value = serde_json::from_str(&refusal).unwrap();
    assert_eq!(refusal["error"]["type"], "tokens");
    // ... until the first is settled to the 60 tokens it used.
    settle_tokens(&policy, &charge, 60).await;
    let second = admit_tokens(&policy, &who, &chat, body).await.unwrap();
    assert_eq!(
        header(&second.headers, "x-ratelimit-remaining-tokens"),
        (1000 - 60 - estimate).to_string()
    );
    // Routes outside token_routes and callers without a limit are not charged.
    let me = head("GET", "/v1/me", None);
    assert!(
        admit_tokens(&policy, &who, &me, b"")
            .await
            .unwrap()
            .charge
            .is_none()
    );
    let premium = principal(&unique("user"), Tier::Premium, &[]);
    assert!(
        admit_tokens(&policy, &premium, &chat, body)
            .await
            .unwrap()
            .charge
            .is_none()
    );

    // A user's own limit replaces the tier's; a key's applies beside it.
    let mut own = principal(&unique("user"), Tier::Free, &[]);
    own.key_id = Some(unique("key"));
    own.token_limits.user = Some("unlimited".into());
    own.token_limits.key = Some("600/1h".into());
    let admitted = admit_tokens(&policy, &own, &chat, body).await.unwrap();
    assert_eq!(admitted.charge.unwrap().counters.len(), 1);
    assert_eq!(
        header(&admitted.headers, "ratelimit-policy"),
        "\"tokens-key\";q=600;w=3600;qu=\"tokens\""
    );
    let (status, _, refusal) = admit_tokens(&policy, &own, &chat, body).await.unwrap_err();
    assert_eq!(status, 429);
    assert!(refusal.contains("tokens-key"), "{refusal}");
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limit_admits_the_tier_quota_then_refuses_with_headers() {
    use rate_limit::*;
    let policy = Policy::new("ratelimit", &[("rate_limit_free", "3/1m")], memory());
    let who = principal(
        &unique("user"),
        rate_limit_world::sluice::types::types::Tier::Free,
        &[],
    );
    let req = head("GET", "/v1/models", None);
    for remaining in ["2", "1", "0"] {
        let headers = check(&policy, &who, &req).await.unwrap();
        assert_eq!(header(&headers, "x-ratelimit-limit"), "3");
        assert_eq!(header(&headers, "x-ratelimit-remaining"), remaining);
        assert_eq!(header(&headers, "ratelimit-policy"), "\"free\";q=3;w=60");
        assert!(header(&headers, "ratelimit").starts_with(&format!("\"free\";r={remaining};t=")));
    }
    let (status, headers, body) = check(&policy, &who, &req).await.unwrap_err();
    assert_eq!(status, 429);
    // The window the three fell in must end and fade by a third (sliding window).
    let retry_after: u64 = header(&headers, "retry-after").parse().unwrap();
    assert!(
        (20..=80).contains(&retry_after),
        "retry-after {retry_after}"
    );
    assert_eq!(header(&headers, "x-ratelimit-remaining"), "0");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        body["detail"],
        format!("Rate limit exceeded. Try again in {retry_after} seconds.")
    );
    assert_eq!(body["status_code"], 429);
    assert_eq!(body["error"]["type"], "rate_limit_error");

    // Another subject of the same tier has its own record.
    let other = principal(
        &unique("user"),
        rate_limit_world::sluice::types::types::Tier::Free,
        &[],
    );
    assert!(check(&policy, &other, &req).await.is_ok());
    // Admin is unlimited by default: no record, no headers.
    let admin = principal(
        "root",
        rate_limit_world::sluice::types::types::Tier::Admin,
        &[],
    );
    for _ in 0..10 {
        assert_eq!(check(&policy, &admin, &req).await.unwrap(), Vec::new());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limit_the_most_restrictive_policy_decides() {
    use rate_limit::*;
    use rate_limit_world::sluice::types::types::Tier;
    let policy = Policy::new(
        "ratelimit",
        &[
            ("rate_limit_premium", "300/1m"),
            ("rate_limit_ip", "2/15m"),
            ("rate_limit_anonymous_ai", "1/15m"),
            (
                "ai_routes",
                "POST /v1/chat/completions, POST /v1/embeddings",
            ),
        ],
        memory(),
    );
    let ip = format!("10.{}.0.1", rand_octet());
    // Per IP, whoever calls: two premium users behind one address share 2.
    let a = principal(&unique("a"), Tier::Premium, &[]);
    let b = principal(&unique("b"), Tier::Premium, &[]);
    let req = head("GET", "/v1/me", Some(&ip));
    let first = check(&policy, &a, &req).await.unwrap();
    assert_eq!(
        header(&first, "x-ratelimit-limit"),
        "2",
        "ip is tighter than premium"
    );
    assert_eq!(
        header(&first, "ratelimit-policy"),
        "\"premium\";q=300;w=60, \"ip\";q=2;w=900"
    );
    assert!(check(&policy, &b, &req).await.is_ok());
    let (status, headers, _) = check(&policy, &a, &req).await.unwrap_err();
    assert_eq!(status, 429);
    assert_eq!(
        header(&headers, "ratelimit").split(';').next(),
        Some("\"ip\"")
    );

    // Anonymous callers on AI routes: 1 per IP, other routes not counted there.
    let ip = format!("10.{}.0.2", rand_octet());
    let anon = principal(&format!("anonymous:{ip}"), Tier::Free, &["anonymous"]);
    let chat = head("POST", "/v1/chat/completions", Some(&ip));
    let first = check(&policy, &anon, &chat).await.unwrap();
    assert_eq!(header(&first, "x-ratelimit-limit"), "1");
    let (status, headers, _) = check(&policy, &anon, &chat).await.unwrap_err();
    assert_eq!(status, 429);
    assert!(header(&headers, "ratelimit").starts_with("\"anonymous-ai\""));
    let models = check(&policy, &anon, &head("GET", "/v1/models", Some(&ip)))
        .await
        .unwrap();
    assert_eq!(
        header(&models, "x-ratelimit-limit"),
        "2",
        "the ip policy, not the AI one"
    );
}

fn rand_octet() -> u8 {
    uuid::Uuid::new_v4().as_bytes()[0]
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limit_follows_each_policys_fail_mode_when_the_store_is_down() {
    use rate_limit::*;
    use rate_limit_world::sluice::types::types::Tier;
    // Nothing listens on port 1: every store operation fails as with Redis down.
    let down = redis("redis://127.0.0.1:1");
    let who = principal("u", Tier::Free, &[]);
    let req = head("GET", "/v1/me", Some("10.0.0.9"));

    let open = Policy::new("ratelimit", &[("rate_limit_free", "1/1m")], down.clone());
    for _ in 0..3 {
        assert_eq!(
            check(&open, &who, &req).await.unwrap(),
            Vec::new(),
            "fail open admits"
        );
    }
    let closed = Policy::new(
        "ratelimit",
        &[
            ("rate_limit_free", "1/1m"),
            ("rate_limit_fail_mode", "closed"),
        ],
        down.clone(),
    );
    let (status, headers, body) = check(&closed, &who, &req).await.unwrap_err();
    assert_eq!(status, 503, "{body}");
    assert_eq!(header(&headers, "retry-after"), "1");
    // Per policy: the ip policy fails closed while the tier policy fails open.
    let mixed = Policy::new(
        "ratelimit",
        &[
            ("rate_limit_free", "1/1m"),
            ("rate_limit_ip", "5/1m;fail=closed"),
        ],
        down,
    );
    assert_eq!(check(&mixed, &who, &req).await.unwrap_err().0, 503);
    assert!(
        check(&mixed, &who, &head("GET", "/v1/me", None))
            .await
            .is_ok()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limit_two_instances_on_one_redis_never_exceed_the_limit() {
    use rate_limit::*;
    const LIMIT: usize = 40;
    let vars = [("rate_limit_free", "40/1h")];
    // Two stores, two connection sets: what two hosts on one Redis have.
    let first = Arc::new(Policy::new(
        "ratelimit",
        &vars,
        redis("redis://127.0.0.1:6379"),
    ));
    let second = Arc::new(Policy::new(
        "ratelimit",
        &vars,
        redis("redis://127.0.0.1:6379"),
    ));
    let admitted = admitted_by_two(first, second, 200).await;
    // Never more than the burst in the hour. At the boundary a refused caller
    // briefly holds a slot it then returns, so a racing caller may be refused
    // too: the count may fall short by a little, never exceed.
    assert!(
        (LIMIT - LIMIT / 10..=LIMIT).contains(&admitted),
        "admitted {admitted} with a burst of {LIMIT} across both instances"
    );
}

mod cache {
    use super::cache_world::CachePolicy;
    use super::cache_world::exports::sluice::cache::cache::LookupResult;
    pub use super::cache_world::sluice::types::types::Response;
    use super::cache_world::sluice::types::types::{Principal, RequestHead, Tier, TokenLimits};
    use super::*;

    pub fn who(subject: &str) -> Principal {
        Principal {
            subject: subject.into(),
            tier: Tier::Free,
            key_id: None,
            scopes: Vec::new(),
            token_limits: TokenLimits {
                key: None,
                user: None,
            },
        }
    }

    pub fn head(method: &str, path: &str, headers: &[(&str, &str)]) -> RequestHead {
        RequestHead {
            method: method.into(),
            path: path.into(),
            query: None,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            client_ip: None,
        }
    }

    pub fn ok(body: &str, cache_control: Option<&str>) -> Response {
        let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
        if let Some(cc) = cache_control {
            headers.push(("cache-control".into(), cc.into()));
        }
        Response {
            status: 200,
            headers,
            body: body.as_bytes().to_vec(),
        }
    }

    /// What a client would see: `Hit(body)`, `Miss`, or `Bypass`; a miss or
    /// bypass with a ticket offers `answer` to `offer`, as the gateway does.
    #[derive(Debug, PartialEq, Eq)]
    pub enum Seen {
        Hit(String),
        Miss,
        Bypass,
    }

    pub async fn call(
        policy: &Policy,
        who: &Principal,
        head: &RequestHead,
        body: &str,
        answer: Response,
    ) -> Seen {
        let mut lease = policy.lease().await;
        let instance = CachePolicy::new(&mut lease.store, &lease.instance).unwrap();
        let cache = instance.sluice_cache_cache();
        let (ticket, seen) = match cache
            .call_find(&mut lease.store, who, head, body.as_bytes())
            .await
            .unwrap()
        {
            LookupResult::Hit((response, _age)) => {
                lease.done();
                return Seen::Hit(String::from_utf8(response.body).unwrap());
            }
            LookupResult::Miss(ticket) => (Some(ticket), Seen::Miss),
            LookupResult::Bypass(ticket) => (ticket, Seen::Bypass),
        };
        if let Some(ticket) = ticket {
            cache
                .call_offer(&mut lease.store, &ticket, &answer)
                .await
                .unwrap();
        }
        lease.done();
        seen
    }

    pub async fn purge(policy: &Policy, subject: Option<&str>) {
        let mut lease = policy.lease().await;
        let instance = CachePolicy::new(&mut lease.store, &lease.instance).unwrap();
        instance
            .sluice_cache_cache()
            .call_purge(&mut lease.store, subject)
            .await
            .unwrap()
            .unwrap();
        lease.done();
    }

    pub const VARS: &[(&str, &str)] = &[
        (
            "cache_routes",
            "GET /v1/me=600, GET /v1/conversations=300, GET /v1/conversations/*/messages=300, POST /v1/chat/completions=3600",
        ),
        (
            "cache_invalidate_on",
            "POST /v1/conversations, POST /v1/conversations/**, DELETE /v1/conversations/**",
        ),
        ("cache_max_entry_bytes", "1024"),
    ];
}

#[tokio::test(flavor = "multi_thread")]
async fn cache_scopes_entries_to_their_principal_unless_public() {
    use cache::*;
    let policy = Policy::new("cache", VARS, memory());
    let (alice, bob) = (who("alice"), who("bob"));
    let me = head("GET", "/v1/me", &[]);
    assert_eq!(
        call(&policy, &alice, &me, "", ok("alice", None)).await,
        Seen::Miss
    );
    assert_eq!(
        call(&policy, &alice, &me, "", ok("x", None)).await,
        Seen::Hit("alice".into())
    );
    assert_eq!(
        call(&policy, &bob, &me, "", ok("bob", None)).await,
        Seen::Miss,
        "never alice's"
    );
    assert_eq!(
        call(&policy, &bob, &me, "", ok("x", None)).await,
        Seen::Hit("bob".into())
    );

    let list = head("GET", "/v1/conversations", &[]);
    assert_eq!(
        call(
            &policy,
            &alice,
            &list,
            "",
            ok("shared", Some("public, s-maxage=60"))
        )
        .await,
        Seen::Miss
    );
    assert_eq!(
        call(&policy, &bob, &list, "", ok("x", None)).await,
        Seen::Hit("shared".into())
    );

    // Not stored: private with no-store, errors, oversized bodies, uncached routes.
    let msgs = head("GET", "/v1/conversations/c1/messages", &[]);
    call(&policy, &alice, &msgs, "", ok("secret", Some("no-store"))).await;
    assert_eq!(
        call(&policy, &alice, &msgs, "", ok("fresh", None)).await,
        Seen::Miss
    );
    assert_eq!(
        call(&policy, &alice, &msgs, "", ok("x", None)).await,
        Seen::Hit("fresh".into())
    );
    let big = "x".repeat(2048);
    let models = head("GET", "/v1/conversations/c2/messages", &[]);
    call(&policy, &alice, &models, "", ok(&big, None)).await;
    assert_eq!(
        call(&policy, &alice, &models, "", ok("x", None)).await,
        Seen::Miss
    );
    assert_eq!(
        call(
            &policy,
            &alice,
            &head("GET", "/v1/models", &[]),
            "",
            ok("m", None)
        )
        .await,
        Seen::Bypass
    );

    // The client's no-cache refreshes; no-store bypasses without storing.
    let refresh = head("GET", "/v1/me", &[("cache-control", "no-cache")]);
    assert_eq!(
        call(&policy, &alice, &refresh, "", ok("alice2", None)).await,
        Seen::Bypass
    );
    assert_eq!(
        call(&policy, &alice, &me, "", ok("x", None)).await,
        Seen::Hit("alice2".into())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cache_stores_only_non_streamed_identical_completions() {
    use cache::*;
    let policy = Policy::new("cache", VARS, memory());
    let alice = who("alice");
    let chat = head("POST", "/v1/chat/completions", &[]);
    let plain = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
    let streamed = r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    assert_eq!(
        call(&policy, &alice, &chat, plain, ok("answer", None)).await,
        Seen::Miss
    );
    assert_eq!(
        call(&policy, &alice, &chat, plain, ok("x", None)).await,
        Seen::Hit("answer".into())
    );
    assert_eq!(
        call(&policy, &alice, &chat, streamed, ok("x", None)).await,
        Seen::Bypass
    );
    let other = r#"{"model":"m","messages":[{"role":"user","content":"bye"}]}"#;
    assert_eq!(
        call(&policy, &alice, &chat, other, ok("x", None)).await,
        Seen::Miss
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cache_writes_and_purges_make_entries_stale_at_once() {
    use cache::*;
    let policy = Policy::new("cache", VARS, memory());
    let (alice, bob) = (who("alice"), who("bob"));
    let list = head("GET", "/v1/conversations", &[]);
    let msgs = head("GET", "/v1/conversations/c1/messages", &[]);
    for (who, name) in [(&alice, "alice"), (&bob, "bob")] {
        call(&policy, who, &list, "", ok(&format!("{name}-list"), None)).await;
        call(&policy, who, &msgs, "", ok(&format!("{name}-msgs"), None)).await;
    }
    // A failed write invalidates nothing; a successful one, all of alice's at once.
    let post = head("POST", "/v1/conversations/c1/messages", &[]);
    let failed = Response {
        status: 500,
        headers: Vec::new(),
        body: Vec::new(),
    };
    assert_eq!(
        call(&policy, &alice, &post, "{}", failed).await,
        Seen::Bypass
    );
    assert_eq!(
        call(&policy, &alice, &list, "", ok("x", None)).await,
        Seen::Hit("alice-list".into())
    );
    let created = Response {
        status: 201,
        headers: Vec::new(),
        body: b"{}".to_vec(),
    };
    assert_eq!(
        call(&policy, &alice, &post, "{}", created).await,
        Seen::Bypass
    );
    assert_eq!(
        call(&policy, &alice, &list, "", ok("alice-list2", None)).await,
        Seen::Miss
    );
    assert_eq!(
        call(&policy, &alice, &msgs, "", ok("alice-msgs2", None)).await,
        Seen::Miss
    );
    assert_eq!(
        call(&policy, &bob, &list, "", ok("x", None)).await,
        Seen::Hit("bob-list".into()),
        "bob untouched"
    );

    // Admin purge of one subject, then of everything.
    purge(&policy, Some("bob")).await;
    assert_eq!(
        call(&policy, &bob, &list, "", ok("bob-list2", None)).await,
        Seen::Miss
    );
    assert_eq!(
        call(&policy, &alice, &list, "", ok("x", None)).await,
        Seen::Hit("alice-list2".into())
    );
    purge(&policy, None).await;
    assert_eq!(
        call(&policy, &alice, &list, "", ok("x", None)).await,
        Seen::Miss
    );
    assert_eq!(
        call(&policy, &bob, &list, "", ok("x", None)).await,
        Seen::Miss
    );
}

mod cache_property {
    use super::cache::*;
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        /// A subject reads a route; the origin would answer with the subject's own
        /// data, or with shared data marked public.
        Read {
            subject: usize,
            route: usize,
            public: bool,
        },
        Write {
            subject: usize,
        },
        Purge {
            subject: Option<usize>,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0..3usize, 0..3usize, any::<bool>()).prop_map(|(subject, route, public)| Op::Read { subject, route, public }),
            1 => (0..3usize).prop_map(|subject| Op::Write { subject }),
            1 => proptest::option::of(0..3usize).prop_map(|subject| Op::Purge { subject }),
        ]
    }

    const ROUTES: [&str; 3] = [
        "/v1/me",
        "/v1/conversations",
        "/v1/conversations/c/messages",
    ];

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
        /// Whatever the sequence of reads, writes and purges, a hit is either the
        /// reader's own data or data the origin marked public, never another
        /// subject's private answer.
        #[test]
        fn a_subject_never_receives_another_subjects_private_entry(ops in proptest::collection::vec(op(), 1..40)) {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            runtime.block_on(async {
                let policy = Policy::new("cache", VARS, memory());
                let run = unique("run");
                let subject = |i: usize| format!("{run}-s{i}");
                for op in ops {
                    match op {
                        Op::Read { subject: s, route, public } => {
                            let body = if public { format!("public {}", ROUTES[route]) } else { format!("private {}", subject(s)) };
                            let cc = public.then_some("public, s-maxage=600");
                            let seen = call(&policy, &who(&subject(s)), &head("GET", ROUTES[route], &[]), "", ok(&body, cc)).await;
                            if let Seen::Hit(got) = seen {
                                prop_assert!(got == format!("private {}", subject(s)) || got.starts_with("public "), "{} got {}", subject(s), got);
                            }
                        }
                        Op::Write { subject: s } => {
                            let created = ok("{}", None);
                            call(&policy, &who(&subject(s)), &head("POST", "/v1/conversations", &[]), "{}", created).await;
                        }
                        Op::Purge { subject: s } => purge(&policy, s.map(subject).as_deref()).await,
                    }
                }
                Ok(())
            })?;
        }
    }
}

mod auth {
    use super::auth_world::AuthPolicy;
    use super::auth_world::sluice::types::types::{Principal, RequestHead, Tier};
    use super::*;

    pub async fn authenticate(
        policy: &Policy,
        head: &RequestHead,
    ) -> Result<Principal, (u16, Vec<(String, String)>, String)> {
        let mut lease = policy.lease().await;
        let instance = AuthPolicy::new(&mut lease.store, &lease.instance).unwrap();
        let outcome = instance
            .sluice_auth_auth()
            .call_authenticate(&mut lease.store, head)
            .await
            .unwrap()
            .map_err(|d| (d.status, d.headers, String::from_utf8(d.body).unwrap()));
        lease.done();
        outcome
    }

    pub fn head(method: &str, path: &str, authorization: Option<&str>) -> RequestHead {
        RequestHead {
            method: method.into(),
            path: path.into(),
            query: None,
            headers: authorization
                .map(|a| vec![("authorization".to_string(), a.to_string())])
                .unwrap_or_default(),
            client_ip: Some("192.0.2.7".into()),
        }
    }

    pub fn tier(p: &Principal) -> Tier {
        p.tier
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn auth_admits_anonymous_routes_and_keeps_admin_routes_to_admins() {
    use auth::*;
    use auth_world::sluice::types::types::Tier;
    let user_key = "sk-user-key-000000000000";
    let admin_key = "sk-admin-key-00000000000";
    let records = format!(
        "{}:alice:premium,{}:root:admin",
        sluice_core::api_key::hash(user_key),
        sluice_core::api_key::hash(admin_key)
    );
    let policy = Policy::new(
        "auth",
        &[
            ("api_keys", &records),
            ("anonymous_routes", "GET /v1/models"),
            ("admin_routes", "* /v1/admin/**"),
        ],
        memory(),
    );
    let alice = authenticate(
        &policy,
        &head("GET", "/v1/me", Some(&format!("Bearer {user_key}"))),
    )
    .await
    .unwrap();
    assert_eq!(
        (alice.subject.as_str(), tier(&alice)),
        ("alice", Tier::Premium)
    );

    let anon = authenticate(&policy, &head("GET", "/v1/models", None))
        .await
        .unwrap();
    assert_eq!(anon.subject, "anonymous:192.0.2.7");
    assert_eq!(anon.scopes, vec!["anonymous".to_string()]);
    let (status, headers, _) = authenticate(&policy, &head("GET", "/v1/me", None))
        .await
        .unwrap_err();
    assert_eq!(status, 401);
    assert!(
        headers
            .iter()
            .any(|(n, v)| n == "www-authenticate" && v.starts_with("Bearer"))
    );

    let (status, _, body) = authenticate(
        &policy,
        &head(
            "POST",
            "/v1/admin/cache/purge",
            Some(&format!("Bearer {user_key}")),
        ),
    )
    .await
    .unwrap_err();
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("permission_error"));
    let root = authenticate(
        &policy,
        &head(
            "POST",
            "/v1/admin/cache/purge",
            Some(&format!("Bearer {admin_key}")),
        ),
    )
    .await
    .unwrap();
    assert_eq!(tier(&root), Tier::Admin);
}

/// Serves a JWKS that the test can change, counting fetches.
struct KeySetServer {
    url: String,
    origin: String,
    body: Arc<std::sync::Mutex<String>>,
    fetches: Arc<std::sync::atomic::AtomicUsize>,
}

impl KeySetServer {
    async fn start(keys: &jsonwebtoken::jwk::JwkSet) -> KeySetServer {
        use hyper::service::service_fn;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap());
        let body = Arc::new(std::sync::Mutex::new(serde_json::to_string(keys).unwrap()));
        let fetches = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (served, counted) = (body.clone(), fetches.clone());
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let (served, counted) = (served.clone(), counted.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |_req| {
                        counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let body = served.lock().unwrap().clone();
                        async move {
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                http_body_util::Full::new(bytes::Bytes::from(body)),
                            ))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        KeySetServer {
            url: format!("{origin}/.well-known/jwks.json"),
            origin,
            body,
            fetches,
        }
    }

    fn publish(&self, keys: &jsonwebtoken::jwk::JwkSet) {
        *self.body.lock().unwrap() = serde_json::to_string(keys).unwrap();
    }

    fn fetches(&self) -> usize {
        self.fetches.load(std::sync::atomic::Ordering::SeqCst)
    }
}

mod jwt_battery {
    use jsonwebtoken::jwk::{Jwk, JwkSet};
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use serde_json::json;

    pub fn pem(name: &str) -> Vec<u8> {
        std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/keys")
                .join(name),
        )
        .unwrap()
    }

    pub fn rsa(name: &str) -> EncodingKey {
        EncodingKey::from_rsa_pem(&pem(name)).unwrap()
    }

    pub fn ec(name: &str) -> EncodingKey {
        EncodingKey::from_ec_pem(&pem(name)).unwrap()
    }

    pub fn jwk(key: &EncodingKey, alg: Algorithm, kid: &str) -> Jwk {
        let mut jwk = Jwk::from_encoding_key(key, alg).unwrap();
        jwk.common.key_id = Some(kid.into());
        jwk
    }

    pub fn set(keys: Vec<Jwk>) -> JwkSet {
        JwkSet { keys }
    }

    pub fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    /// Standard claims valid now, for `sub`, with extra claims merged in.
    pub fn claims(sub: &str, extra: serde_json::Value) -> serde_json::Value {
        let mut c = json!({
            "sub": sub, "iss": "https://idp.test", "aud": "sluice",
            "exp": now() + 600, "nbf": now() - 5, "iat": now() - 5,
        });
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    }

    pub fn sign(
        alg: Algorithm,
        kid: Option<&str>,
        claims: &serde_json::Value,
        key: &EncodingKey,
    ) -> String {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_string);
        jsonwebtoken::encode(&header, claims, key).unwrap()
    }

    pub fn b64(v: &serde_json::Value) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn auth_jwt_battery() {
    use auth::*;
    use auth_world::sluice::types::types::Tier;
    use jsonwebtoken::{Algorithm, EncodingKey};
    use jwt_battery::*;
    use serde_json::json;

    let (rsa1, ec1, rsa2) = (rsa("rsa-1.pem"), ec("ec-1.pem"), rsa("rsa-2.pem"));
    let jwks = KeySetServer::start(&set(vec![
        jwk(&rsa1, Algorithm::RS256, "rsa-1"),
        jwk(&ec1, Algorithm::ES256, "ec-1"),
    ]))
    .await;
    let secret = "an-hs256-secret-of-at-least-32-bytes!!";
    let policy = Policy::with_outbound(
        "auth",
        &[
            ("jwt_hs256_secret", secret),
            ("jwks_url", &jwks.url),
            ("jwt_issuer", "https://idp.test"),
            ("jwt_audience", "sluice"),
            ("jwt_leeway_seconds", "30"),
            ("jwt_tier_claim", "plan"),
            ("jwks_refresh_interval_seconds", "3600"),
        ],
        memory(),
        std::slice::from_ref(&jwks.origin),
    );
    let bearer = |token: &str| {
        head(
            "POST",
            "/v1/chat/completions",
            Some(&format!("Bearer {token}")),
        )
    };
    let hs = EncodingKey::from_secret(secret.as_bytes());

    // Accepted: each algorithm, tier from the configured claim, scopes.
    let ok = authenticate(
        &policy,
        &bearer(&sign(
            Algorithm::HS256,
            None,
            &claims("u-hs", json!({"plan": "premium"})),
            &hs,
        )),
    )
    .await
    .unwrap();
    assert_eq!(
        (ok.subject.as_str(), tier(&ok), ok.key_id.as_deref()),
        ("u-hs", Tier::Premium, Some("jwt:hs256"))
    );
    let ok = authenticate(
        &policy,
        &bearer(&sign(
            Algorithm::RS256,
            Some("rsa-1"),
            &claims("u-rs", json!({"scope": "chat read"})),
            &rsa1,
        )),
    )
    .await
    .unwrap();
    assert_eq!(
        (ok.subject.as_str(), tier(&ok)),
        ("u-rs", Tier::Free),
        "no tier claim: free"
    );
    assert_eq!(ok.scopes, ["chat", "read"]);
    let ok = authenticate(
        &policy,
        &bearer(&sign(
            Algorithm::ES256,
            Some("ec-1"),
            &claims("u-es", json!({"plan": "admin"})),
            &ec1,
        )),
    )
    .await
    .unwrap();
    assert_eq!((ok.subject.as_str(), tier(&ok)), ("u-es", Tier::Admin));
    assert_eq!(jwks.fetches(), 1, "the key set is fetched once and cached");
    // Within the leeway.
    let late = claims("u", json!({"exp": now() - 10}));
    assert!(
        authenticate(&policy, &bearer(&sign(Algorithm::HS256, None, &late, &hs)))
            .await
            .is_ok()
    );

    let refused = |case: &'static str, token: String| {
        let policy = &policy;
        async move {
            let (status, headers, body) = authenticate(policy, &bearer(&token))
                .await
                .err()
                .unwrap_or_else(|| panic!("{case}: accepted"));
            assert_eq!(status, 401, "{case}: {body}");
            assert!(
                headers
                    .iter()
                    .any(|(n, v)| n == "www-authenticate" && v.contains("invalid_token")),
                "{case}: {headers:?}"
            );
            body
        }
    };
    refused(
        "expired",
        sign(
            Algorithm::HS256,
            None,
            &claims("u", json!({"exp": now() - 120})),
            &hs,
        ),
    )
    .await;
    refused(
        "not yet valid",
        sign(
            Algorithm::HS256,
            None,
            &claims("u", json!({"nbf": now() + 120})),
            &hs,
        ),
    )
    .await;
    refused(
        "wrong issuer",
        sign(
            Algorithm::HS256,
            None,
            &claims("u", json!({"iss": "https://evil.test"})),
            &hs,
        ),
    )
    .await;
    refused(
        "wrong audience",
        sign(
            Algorithm::HS256,
            None,
            &claims("u", json!({"aud": "other"})),
            &hs,
        ),
    )
    .await;
    refused(
        "no exp",
        sign(
            Algorithm::HS256,
            None,
            &json!({"sub": "u", "iss": "https://idp.test", "aud": "sluice"}),
            &hs,
        ),
    )
    .await;
    refused(
        "wrong secret",
        sign(
            Algorithm::HS256,
            None,
            &claims("u", json!({})),
            &EncodingKey::from_secret(b"another-secret-of-32-bytes-or-more!!"),
        ),
    )
    .await;
    refused(
        "unknown tier",
        sign(
            Algorithm::HS256,
            None,
            &claims("u", json!({"plan": "root"})),
            &hs,
        ),
    )
    .await;
    let body = refused(
        "alg none",
        format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "typ": "JWT"})),
            b64(&claims("u", json!({"plan": "admin"})))
        ),
    )
    .await;
    assert!(
        body.contains("Malformed") || body.contains("not accepted"),
        "{body}"
    );
    // Algorithm confusion: HS256 "signed" with the RSA public key as the secret.
    let public = EncodingKey::from_secret(&pem("rsa-1.pub.pem"));
    refused(
        "alg confusion",
        sign(
            Algorithm::HS256,
            Some("rsa-1"),
            &claims("u", json!({"plan": "admin"})),
            &public,
        ),
    )
    .await;
    // An ES256 header on the RSA kid, and an RS256 token without a kid.
    refused(
        "key type mismatch",
        sign(
            Algorithm::ES256,
            Some("rsa-1"),
            &claims("u", json!({})),
            &ec1,
        ),
    )
    .await;
    refused(
        "no kid",
        sign(Algorithm::RS256, None, &claims("u", json!({})), &rsa1),
    )
    .await;
    // Signed by a key the JWKS does not hold, under a known kid.
    refused(
        "foreign key",
        sign(
            Algorithm::RS256,
            Some("rsa-1"),
            &claims("u", json!({})),
            &rsa2,
        ),
    )
    .await;
    // Tampered payload.
    let good = sign(
        Algorithm::RS256,
        Some("rsa-1"),
        &claims("u", json!({"plan": "free"})),
        &rsa1,
    );
    let parts: Vec<&str> = good.split('.').collect();
    refused(
        "tampered",
        format!(
            "{}.{}.{}",
            parts[0],
            b64(&claims("u", json!({"plan": "admin"}))),
            parts[2]
        ),
    )
    .await;
    refused("malformed", "not.a.jwt".into()).await;
    refused("garbage", "eyJhbGciOiJIUzI1NiJ9.%%%.sig".into()).await;
    refused(
        "unsupported alg",
        sign(Algorithm::HS512, None, &claims("u", json!({})), &hs),
    )
    .await;
    let (status, _, _) = authenticate(&policy, &bearer(&"a".repeat(5000)))
        .await
        .unwrap_err();
    assert_eq!(status, 401, "oversized");

    // Unknown kid: one refresh, then not again within the interval.
    let before = jwks.fetches();
    refused(
        "unknown kid",
        sign(
            Algorithm::RS256,
            Some("rsa-2"),
            &claims("u", json!({})),
            &rsa2,
        ),
    )
    .await;
    refused(
        "unknown kid again",
        sign(
            Algorithm::RS256,
            Some("rsa-9"),
            &claims("u", json!({})),
            &rsa2,
        ),
    )
    .await;
    assert_eq!(
        jwks.fetches(),
        before,
        "refreshed at most once per interval (the set is fresh)"
    );

    // Key rotation: a kid the cached set lacks refreshes it (interval 0 here).
    let rotating = Policy::with_outbound(
        "auth",
        &[
            ("jwks_url", &jwks.url),
            ("jwks_refresh_interval_seconds", "0"),
        ],
        memory(),
        std::slice::from_ref(&jwks.origin),
    );
    let no_aud = |sub: &str| json!({"sub": sub, "exp": now() + 60});
    assert!(
        authenticate(
            &rotating,
            &bearer(&sign(Algorithm::RS256, Some("rsa-1"), &no_aud("a"), &rsa1))
        )
        .await
        .is_ok()
    );
    jwks.publish(&set(vec![
        jwk(&rsa1, Algorithm::RS256, "rsa-1"),
        jwk(&rsa2, Algorithm::RS256, "rsa-2"),
    ]));
    let before = jwks.fetches();
    assert!(
        authenticate(
            &rotating,
            &bearer(&sign(Algorithm::RS256, Some("rsa-2"), &no_aud("b"), &rsa2))
        )
        .await
        .is_ok()
    );
    assert_eq!(jwks.fetches(), before + 1, "one refresh for the new kid");
    assert!(
        authenticate(
            &rotating,
            &bearer(&sign(Algorithm::RS256, Some("rsa-2"), &no_aud("b"), &rsa2))
        )
        .await
        .is_ok()
    );
    assert_eq!(jwks.fetches(), before + 1, "then served from the cache");
    // HS256 is refused where no secret is configured.
    let (status, _, _) = authenticate(
        &rotating,
        &bearer(&sign(Algorithm::HS256, None, &no_aud("c"), &hs)),
    )
    .await
    .unwrap_err();
    assert_eq!(status, 401);
}

/// The same policy scenarios on every store flavour: a quota admits exactly
/// its limit with the same headers, and the first cacheable answer is a MISS,
/// then a HIT, invalidated by a write and by a purge. (Auth keeps its key and
/// JWKS lookups with `get`/`set` only, which no flavour changes.)
#[tokio::test(flavor = "multi_thread")]
async fn conformance_policies_behave_alike_on_every_store_flavour() {
    for (flavour, stores) in store_flavours() {
        {
            use rate_limit::*;
            use rate_limit_world::sluice::types::types::Tier;
            let policy = Policy::new("ratelimit", &[("rate_limit_free", "3/1m")], stores.clone());
            let who = principal(&unique("conf"), Tier::Free, &[]);
            let req = head("GET", "/v1/models", None);
            for remaining in ["2", "1", "0"] {
                let headers = check(&policy, &who, &req)
                    .await
                    .unwrap_or_else(|e| panic!("{flavour}: refused early: {e:?}"));
                assert_eq!(
                    header(&headers, "x-ratelimit-remaining"),
                    remaining,
                    "{flavour}"
                );
            }
            for _ in 0..3 {
                let (status, _, _) = check(&policy, &who, &req)
                    .await
                    .err()
                    .unwrap_or_else(|| panic!("{flavour}: admitted past the quota"));
                assert_eq!(status, 429, "{flavour}");
            }
        }
        {
            use cache::*;
            let policy = Policy::new("cache", VARS, stores.clone());
            let alice = who(&unique("conf"));
            let list = head("GET", "/v1/conversations", &[]);
            let seen = call(&policy, &alice, &list, "", ok("v1", None)).await;
            assert_eq!(seen, Seen::Miss, "{flavour}: first cacheable answer");
            let seen = call(&policy, &alice, &list, "", ok("v2", None)).await;
            assert_eq!(seen, Seen::Hit("v1".into()), "{flavour}");
            let write = head("POST", "/v1/conversations", &[]);
            let seen = call(&policy, &alice, &write, "{}", ok("{}", None)).await;
            assert_eq!(seen, Seen::Bypass, "{flavour}: a write");
            let seen = call(&policy, &alice, &list, "", ok("v3", None)).await;
            assert_eq!(seen, Seen::Miss, "{flavour}: after the write");
            let seen = call(&policy, &alice, &list, "", ok("v4", None)).await;
            assert_eq!(seen, Seen::Hit("v3".into()), "{flavour}");
            purge(&policy, Some(&alice.subject)).await;
            let seen = call(&policy, &alice, &list, "", ok("v5", None)).await;
            assert_eq!(seen, Seen::Miss, "{flavour}: after a purge");
        }
    }
}

/// Two instances on one store, 200 concurrent requests against a quota of 40,
/// on every flavour that two hosts can share.
#[tokio::test(flavor = "multi_thread")]
async fn conformance_two_instances_never_exceed_the_limit_on_any_shared_flavour() {
    use rate_limit::*;
    for (flavour, stores) in store_flavours() {
        let vars = [("rate_limit_free", "40/1h")];
        let first = Arc::new(Policy::new("ratelimit", &vars, stores.clone()));
        let second = Arc::new(Policy::new("ratelimit", &vars, stores));
        let admitted = admitted_by_two(first, second, 200).await;
        assert!(
            (36..=40).contains(&admitted),
            "{flavour}: admitted {admitted} of a quota of 40"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn auth_accepts_anthropics_x_api_key_when_there_is_no_authorization_header() {
    use auth::*;
    let alice_key = "sk-alice-key-000000000000";
    let bob_key = "sk-bob-key-00000000000000";
    let records = format!(
        "{}:alice:premium,{}:bob:free",
        sluice_core::api_key::hash(alice_key),
        sluice_core::api_key::hash(bob_key)
    );
    let policy = Policy::new("auth", &[("api_keys", &records)], memory());
    let with = |headers: &[(&str, &str)]| {
        let mut request = head("GET", "/v1/me", None);
        request.headers = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        request
    };
    let alice = authenticate(&policy, &with(&[("x-api-key", alice_key)]))
        .await
        .unwrap();
    assert_eq!(alice.subject, "alice");
    // Both sent: `Authorization` decides.
    let bearer = format!("Bearer {bob_key}");
    let both = authenticate(
        &policy,
        &with(&[("authorization", &bearer), ("x-api-key", alice_key)]),
    )
    .await
    .unwrap();
    assert_eq!(both.subject, "bob");
    for bad in ["not-a-key-or-a-jwt", "  "] {
        let (status, _, body) = authenticate(&policy, &with(&[("x-api-key", bad)]))
            .await
            .unwrap_err();
        assert_eq!(status, 401, "{bad:?}: {body}");
    }
}
