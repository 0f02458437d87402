//! The semantic completion cache: a non-streamed completion is answered from
//! an earlier one when the prompts' embeddings are close enough (cosine
//! similarity at or above the threshold). Entries are scoped to the principal
//! and to everything in the request but its messages (model, temperature,
//! max tokens, ...), so an answer is never shared across callers or reused
//! for a request shaped differently. Each scope keeps a bounded number of
//! entries, oldest dropped first; scopes themselves are bounded by moka.

use crate::config::SemanticCacheConfig;
use crate::openai::{ChatMessage, ChatRequest, ChatResponse, Role};
use crate::priority::Priority;
use crate::routing::Engine;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Entry {
    vector: Vec<f32>,
    body: Arc<ChatResponse>,
    stored: Instant,
}

type Scope = Arc<Mutex<VecDeque<Entry>>>;

/// What a miss remembers, to store the answer under once it exists.
pub struct Pending {
    scope: [u8; 32],
    vector: Vec<f32>,
}

pub enum Lookup {
    Hit {
        body: Arc<ChatResponse>,
        similarity: f32,
    },
    Miss(Pending),
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct SemanticStats {
    pub hits: u64,
    pub misses: u64,
    /// Lookups given up because the embeddings call failed.
    pub errors: u64,
}

pub struct SemanticCache {
    engine: Arc<Engine>,
    model: String,
    threshold: f32,
    per_scope: usize,
    ttl: Duration,
    scopes: moka::sync::Cache<[u8; 32], Scope>,
    hits: AtomicU64,
    misses: AtomicU64,
    errors: AtomicU64,
}

/// The text whose meaning is compared: every message, with its role.
fn prompt_text(request: &ChatRequest) -> String {
    let mut text = String::new();
    for message in &request.messages {
        text.push_str(&format!("{:?}: {}\n", message.role, message.text()));
    }
    text
}

/// Only text is compared, so a message with anything else (an image, a tool
/// call or result) makes the request ineligible.
fn is_plain_text(message: &ChatMessage) -> bool {
    let parts_are_text = match message.content() {
        Some(serde_json::Value::Array(parts)) => parts.iter().all(|p| p["type"] == "text"),
        _ => true,
    };
    parts_are_text
        && message.tool_calls().is_empty()
        && !matches!(message.role, Role::Tool | Role::Function)
}

/// Principal plus every field but the messages (and `stream`, `user`).
fn scope_of(subject: &str, request: &ChatRequest) -> [u8; 32] {
    let mut shape = request.clone();
    shape.messages.clear();
    for field in ["stream", "stream_options", "user"] {
        shape.extra.remove(field);
    }
    let mut hash = Sha256::new();
    hash.update(subject.as_bytes());
    hash.update([0]);
    hash.update(serde_json::to_vec(&shape).unwrap_or_default());
    hash.finalize().into()
}

pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() || a.is_empty() {
        return 0.0;
    }
    let (mut dot, mut norm_a, mut norm_b) = (0.0_f32, 0.0_f32, 0.0_f32);
    for (x, y) in a.iter().zip(b) {
        dot += x * y;
        norm_a += x * x;
        norm_b += y * y;
    }
    if norm_a == 0.0 || norm_b == 0.0 {
        return 0.0;
    }
    dot / (norm_a.sqrt() * norm_b.sqrt())
}

impl SemanticCache {
    /// `None` when no embeddings model is configured (the cache is off).
    pub fn new(engine: Arc<Engine>, config: &SemanticCacheConfig) -> Option<SemanticCache> {
        let model = config.embeddings_model.clone()?;
        Some(SemanticCache {
            engine,
            model,
            threshold: config.threshold,
            per_scope: config.max_entries_per_scope.max(1),
            ttl: Duration::from_secs(config.ttl_secs),
            scopes: moka::sync::Cache::builder()
                .max_capacity(config.max_scopes)
                .time_to_idle(Duration::from_secs(config.ttl_secs))
                .build(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        })
    }

    /// Whether this request may be answered from (and stored in) the cache:
    /// not for tool calls or several choices, whose answers are not text.
    pub fn eligible(request: &ChatRequest) -> bool {
        !request.is_stream()
            && !request.extra.contains_key("tools")
            && !request.extra.contains_key("functions")
            && request.messages.iter().all(is_plain_text)
            && request.extra.get("n").is_none_or(|n| n.as_u64() == Some(1))
    }

    pub fn stats(&self) -> SemanticStats {
        SemanticStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
        }
    }

    /// The closest earlier answer at or above the threshold, or what to store
    /// the coming answer under; `None` when the embedding could not be had.
    pub async fn lookup(
        &self,
        subject: &str,
        request: &ChatRequest,
        priority: Priority,
    ) -> Option<Lookup> {
        let inputs = Arc::new(vec![prompt_text(request)]);
        let vector = match self.engine.embed(&self.model, inputs, priority).await {
            Ok(served) => served.value.vectors.into_iter().next()?,
            Err(e) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("sluice_semantic_cache_requests_total", "result" => "error")
                    .increment(1);
                tracing::warn!(event = "semantic_cache_embedding_failed", error = %e,
                    "answering without the semantic cache");
                return None;
            }
        };
        let scope = scope_of(subject, request);
        let best = self.scopes.get(&scope).and_then(|entries| {
            let entries = entries.lock().unwrap_or_else(|e| e.into_inner());
            entries
                .iter()
                .filter(|e| e.stored.elapsed() < self.ttl)
                .map(|e| (cosine(&vector, &e.vector), &e.body))
                .filter(|(similarity, _)| *similarity >= self.threshold)
                .max_by(|a, b| a.0.total_cmp(&b.0))
                .map(|(similarity, body)| (similarity, Arc::clone(body)))
        });
        Some(match best {
            Some((similarity, body)) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("sluice_semantic_cache_requests_total", "result" => "hit")
                    .increment(1);
                Lookup::Hit { body, similarity }
            }
            None => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("sluice_semantic_cache_requests_total", "result" => "miss")
                    .increment(1);
                Lookup::Miss(Pending { scope, vector })
            }
        })
    }

    pub fn store(&self, pending: Pending, body: &ChatResponse) {
        let entries = self.scopes.get_with(pending.scope, Scope::default);
        let mut entries = entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|e| e.stored.elapsed() < self.ttl);
        if entries.len() >= self.per_scope {
            entries.pop_front();
        }
        entries.push_back(Entry {
            vector: pending.vector,
            body: Arc::new(body.clone()),
            stored: Instant::now(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_of_a_vector_with_itself_is_one_and_with_its_opposite_minus_one() {
        let v = [0.3, -1.0, 2.0];
        assert!((cosine(&v, &v) - 1.0).abs() < 1e-6);
        let opposite: Vec<f32> = v.iter().map(|x| -x).collect();
        assert!((cosine(&v, &opposite) + 1.0).abs() < 1e-6);
        assert_eq!(cosine(&v, &[0.0, 0.0, 0.0]), 0.0);
        assert_eq!(cosine(&v, &[1.0]), 0.0, "different lengths never match");
    }

    fn request(body: serde_json::Value) -> ChatRequest {
        serde_json::from_value(body).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn scopes_differ_by_principal_and_by_request_shape_but_not_by_messages() {
        let a = request(
            serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "a"}]}),
        );
        let b = request(
            serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "b"}]}),
        );
        let hot = request(
            serde_json::json!({"model": "m", "temperature": 1.5, "messages": [{"role": "user", "content": "a"}]}),
        );
        assert_eq!(scope_of("alice", &a), scope_of("alice", &b));
        assert_ne!(scope_of("alice", &a), scope_of("bob", &a));
        assert_ne!(scope_of("alice", &a), scope_of("alice", &hot));
    }

    #[test]
    fn tool_calls_and_several_choices_are_not_cached() {
        let plain = request(serde_json::json!({"model": "m", "messages": []}));
        let tools = request(serde_json::json!({"model": "m", "messages": [], "tools": []}));
        let many = request(serde_json::json!({"model": "m", "messages": [], "n": 2}));
        let stream = request(serde_json::json!({"model": "m", "messages": [], "stream": true}));
        assert!(SemanticCache::eligible(&plain));
        assert!(!SemanticCache::eligible(&tools));
        assert!(!SemanticCache::eligible(&many));
        assert!(!SemanticCache::eligible(&stream));
    }
}
