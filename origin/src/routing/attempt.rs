//! One call's journey: the alias's deployments in order, each behind its
//! breaker and key pool, retries with backoff for retryable failures, then
//! the next deployment.

use super::keypool::{Exhausted, Lease};
use super::resilience::backoff;
use super::{Deployment, Engine, RouteError, Served};
use crate::priority::Priority;
use crate::provider::{Adjustments, ProviderError};
use secrecy::SecretString;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

impl Engine {
    /// Runs `call` against the alias's deployments until one succeeds or
    /// nothing is left to try. `used_tokens` reads how much a success cost, to
    /// correct the key's token budget.
    pub(super) async fn attempt<T, F, Fut>(
        &self,
        model: &str,
        priority: Priority,
        estimated_tokens: u32,
        call: F,
        used_tokens: impl Fn(&T) -> u32,
    ) -> Result<Served<T>, RouteError>
    where
        F: Fn(Arc<Deployment>, Option<SecretString>, Arc<Adjustments>) -> Fut,
        Fut: Future<Output = Result<T, ProviderError>>,
    {
        let policy = self.policy;
        let mut attempts = 0;
        let mut last_error: Option<ProviderError> = None;
        let mut rate_limited_for: Option<Option<Duration>> = None;
        for deployment in self.order(model)? {
            let mut tries = 0;
            while tries < policy.attempts {
                if !deployment.breaker.is_available() {
                    break;
                }
                let lease = match deployment.keys.acquire(priority, estimated_tokens) {
                    Ok(lease) => lease,
                    Err(Exhausted::Unhealthy) => break,
                    Err(Exhausted::Busy { retry_in }) => {
                        match retry_in {
                            // A key comes back soon enough to wait for within this try.
                            Some(wait)
                                if wait <= policy.backoff_max && tries + 1 < policy.attempts =>
                            {
                                tries += 1;
                                tokio::time::sleep(wait).await;
                                continue;
                            }
                            _ => {
                                rate_limited_for =
                                    Some(sooner(rate_limited_for.flatten(), retry_in));
                                break;
                            }
                        }
                    }
                };
                // The key's quota across replicas (and its hour and day windows).
                if let Some(quota) = &deployment.quota {
                    match quota
                        .take(lease.label(), estimated_tokens, crate::clock::now_ms())
                        .await
                    {
                        Ok(Ok(())) => {}
                        Ok(Err(rest)) => {
                            lease.quota_spent(rest);
                            continue;
                        }
                        Err(error) => {
                            // Fail closed: a quota that cannot be checked is not spent past.
                            tracing::warn!(event = "key_quota_unavailable", deployment = %deployment.name,
                                error = %error, "provider key quota store unreachable");
                            lease.unused();
                            last_error = Some(ProviderError::Connect(format!(
                                "provider key quota store: {error}"
                            )));
                            break;
                        }
                    }
                }
                // In half-open, only one caller gets to probe the deployment.
                if !deployment.breaker.try_acquire() {
                    lease.unused();
                    break;
                }
                tries += 1;
                attempts += 1;
                // What this attempt's provider changes of the request; only
                // the attempt that answers is reported.
                let adjusted = Arc::new(Adjustments::default());
                let outcome = timed(
                    &deployment,
                    policy.first_byte_timeout,
                    call(
                        Arc::clone(&deployment),
                        lease.secret().cloned(),
                        Arc::clone(&adjusted),
                    ),
                )
                .await;
                let error = match outcome {
                    Ok(value) => {
                        let used = used_tokens(&value);
                        if let Some(quota) = &deployment.quota {
                            let delta = i64::from(used) - i64::from(estimated_tokens);
                            if let Err(error) = quota
                                .settle_tokens(lease.label(), delta, crate::clock::now_ms())
                                .await
                            {
                                tracing::warn!(event = "key_quota_settle_failed",
                                    deployment = %deployment.name, error = %error);
                            }
                        }
                        lease.succeeded(used);
                        deployment.breaker.record_success();
                        let adjusted = adjusted.take();
                        if !adjusted.is_empty() {
                            tracing::info!(event = "request_adjusted", deployment = %deployment.name,
                                adjusted = %adjusted.join(", "),
                                "the request was changed to fit the upstream's API");
                        }
                        return Ok(Served {
                            value,
                            deployment,
                            attempts,
                            adjusted,
                        });
                    }
                    Err(error) => error,
                };
                settle_failure(&deployment, lease, &error, attempts);
                if !error.retryable() {
                    return Err(RouteError::Rejected(error));
                }
                // A rate-limited key is resting; the next try takes another key
                // at once. Anything else waits out a jittered backoff.
                let rate_limited = matches!(error, ProviderError::RateLimited { .. });
                last_error = Some(error);
                if !rate_limited && tries < policy.attempts {
                    tokio::time::sleep(backoff(tries - 1, policy.backoff_base, policy.backoff_max))
                        .await;
                }
            }
        }
        Err(exhausted(last_error, rate_limited_for))
    }
}

/// The earlier of two optional waits.
fn sooner(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// One upstream call bounded by the first-byte timeout, timed by outcome
/// (whole answers, or the head of a stream: time to first byte).
async fn timed<T>(
    deployment: &Deployment,
    first_byte_timeout: Duration,
    call: impl Future<Output = Result<T, ProviderError>>,
) -> Result<T, ProviderError> {
    let started = Instant::now();
    let outcome = tokio::time::timeout(first_byte_timeout, call)
        .await
        .unwrap_or(Err(ProviderError::Timeout("before the first byte")));
    metrics::histogram!("sluice_upstream_request_duration_seconds",
        "deployment" => deployment.name.clone(),
        "outcome" => outcome.as_ref().map_or_else(failure_kind, |_| "ok"))
    .record(started.elapsed().as_secs_f64());
    outcome
}

/// A failed call's consequences: logged and counted, the key rested or
/// released, the deployment's breaker told whether it was an outage.
fn settle_failure(deployment: &Deployment, lease: Lease<'_>, error: &ProviderError, attempt: u32) {
    tracing::info!(event = "upstream_attempt_failed", deployment = %deployment.name,
        key = %lease.label(), attempt, error = %error, "upstream call failed");
    metrics::counter!("sluice_upstream_failures_total",
        "deployment" => deployment.name.clone(), "kind" => failure_kind(error))
    .increment(1);
    match error {
        ProviderError::RateLimited { retry_after, .. } => lease.rate_limited(*retry_after),
        ProviderError::Unauthorized { .. } => lease.failed(),
        e if e.is_outage() => lease.failed(),
        _ => lease.released(),
    }
    if error.is_outage() {
        if deployment.breaker.record_failure() {
            tracing::warn!(event = "deployment_breaker_opened", deployment = %deployment.name,
                "deployment circuit opened");
        }
    } else {
        deployment.breaker.record_success();
    }
}

/// Why nothing answered, once every deployment has been tried.
fn exhausted(
    last_error: Option<ProviderError>,
    rate_limited_for: Option<Option<Duration>>,
) -> RouteError {
    match (last_error, rate_limited_for) {
        (Some(ProviderError::RateLimited { retry_after, .. }), _) => RouteError::RateLimited {
            retry_in: rate_limited_for.flatten().or(retry_after),
        },
        (None, Some(retry_in)) => RouteError::RateLimited { retry_in },
        (Some(error), _) => RouteError::Unavailable(error),
        (None, None) => RouteError::NoHealthyDeployment,
    }
}

pub(super) fn failure_kind(error: &ProviderError) -> &'static str {
    match error {
        ProviderError::RateLimited { .. } => "rate_limited",
        ProviderError::Unauthorized { .. } => "unauthorized",
        ProviderError::Rejected { .. } => "rejected",
        ProviderError::Unavailable { .. } => "unavailable",
        ProviderError::Timeout(_) => "timeout",
        ProviderError::Connect(_) => "connect",
        ProviderError::Protocol(_) => "protocol",
        ProviderError::Unsupported(_) => "unsupported",
    }
}
