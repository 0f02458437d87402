//! Identical requests in flight at once share one upstream call: the first
//! makes it, the rest wait for its answer.

use super::{Answer, Engine, INFLIGHT_SWEEP_AT, RouteError, Served, SharedAnswer};
use crate::openai::ChatRequest;
use crate::priority::Priority;
use futures::FutureExt;
use futures::future::WeakShared;
use std::sync::Arc;

impl Engine {
    /// A non-streamed chat completion. With `coalesce_key`, identical requests
    /// in flight at once share one upstream call (the key should cover the
    /// caller and the whole request).
    pub async fn complete(
        self: &Arc<Self>,
        request: Arc<ChatRequest>,
        priority: Priority,
        coalesce_key: Option<[u8; 32]>,
    ) -> Result<(Served<Answer>, bool), RouteError> {
        let Some(key) = coalesce_key else {
            return self
                .complete_once(request, priority)
                .await
                .map(|a| (a, false));
        };
        let (shared, joined) = {
            let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
            match inflight.get(&key).and_then(WeakShared::upgrade) {
                Some(shared) => (shared, true),
                None => {
                    if inflight.len() >= INFLIGHT_SWEEP_AT {
                        inflight.retain(|_, weak| weak.upgrade().is_some());
                    }
                    let engine = Arc::clone(self);
                    let shared: SharedAnswer =
                        async move { engine.complete_once(request, priority).await }
                            .boxed()
                            .shared();
                    if let Some(weak) = shared.downgrade() {
                        inflight.insert(key, weak);
                    }
                    (shared, false)
                }
            }
        };
        let result = shared.clone().await;
        // The first waiter to finish retires the entry: later requests are new calls.
        let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
        if inflight
            .get(&key)
            .and_then(WeakShared::upgrade)
            .is_none_or(|current| current.ptr_eq(&shared))
        {
            inflight.remove(&key);
        }
        result.map(|answer| (answer, joined))
    }
}
