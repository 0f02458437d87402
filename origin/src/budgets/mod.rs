//! Spend control: hard USD budgets on keys, users and teams (a key's calls
//! count against its own budget, its user's and its user's team's), each per
//! day, week, month or in total.
//!
//! Every call to a model reserves its worst-case cost on each budget that
//! applies before it is sent upstream, and settles to its actual cost when it
//! ends ([`Hold`]). The reservation is atomic in the database (see
//! [`store`]), so what is spent can never pass a hard limit however many
//! requests and origin processes race for the last cents. A refusal names the
//! budget, its limit, its spend and when it resets. Soft thresholds log an
//! event, count a metric and, with a webhook configured, POST one notice per
//! threshold and period window, once across all processes.

pub mod handlers;
pub mod period;
pub mod report;
pub mod store;

use crate::clock::now_ms;
use crate::config::BudgetsConfig;
use crate::db::Db;
use period::rfc3339;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use store::{Budget, BudgetStore, Exceeded, HeldWindow, Standing, StoreError};

/// Who a call is charged to: the signed caller and the key it used.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Payer {
    pub subject: String,
    pub key_id: Option<String>,
}

impl Payer {
    pub fn of(who: &sluice_core::identity::Identity) -> Payer {
        Payer {
            subject: who.sub.clone(),
            key_id: who.kid.clone(),
        }
    }
}

/// The budgets that apply to a payer and its team, as last read.
struct Lookup {
    team: Option<String>,
    budgets: Vec<Budget>,
}

/// What a reservation is sized with (`[budgets]` in the config).
#[derive(Debug, Clone)]
pub struct BudgetSettings {
    /// Output tokens reserved for, and set as the cap of, a request that sets none.
    pub default_output_tokens: u32,
    /// Prompt tokens counted per image part, whose size the gateway cannot see.
    pub image_tokens: u32,
    pub soft_thresholds: Vec<f64>,
    pub webhook_url: Option<String>,
    pub hold_ttl: Duration,
    /// How long a process reuses what it read of budget definitions and team
    /// membership (spend itself is never cached).
    pub definitions_ttl: Duration,
}

impl BudgetSettings {
    pub fn from_config(config: &BudgetsConfig) -> BudgetSettings {
        BudgetSettings {
            default_output_tokens: config.default_output_tokens,
            image_tokens: config.image_tokens,
            soft_thresholds: config.soft_thresholds.clone(),
            webhook_url: config.webhook_url.clone(),
            hold_ttl: Duration::from_secs(config.hold_ttl_secs),
            definitions_ttl: Duration::from_millis(config.definitions_cache_ms),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BudgetError {
    #[error("{0}")]
    Exceeded(Box<Refusal>),
    #[error("budget store: {0}")]
    Store(#[from] StoreError),
}

/// A budget that refused a call: what the 429 says.
#[derive(Debug, Clone)]
pub struct Refusal(pub Exceeded);

impl Refusal {
    /// Seconds until the budget resets (`Retry-After`); `None` for a total budget.
    pub fn retry_after_secs(&self, now: i64) -> Option<u64> {
        let end = self.0.standing.window.end_ms?;
        Some(((end - now).max(0) as u64).div_ceil(1000).max(1))
    }

    /// The `budget` object of the error body: the budget as it stood, and
    /// what this request asked for.
    pub fn details(&self) -> serde_json::Value {
        let mut details = handlers::standing_json(&self.0.standing);
        details["requested_usd"] = usd(self.0.requested_microdollars).into();
        details
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = &self.0.standing;
        write!(
            f,
            "The {} budget of {} `{}` is exhausted: limit ${:.6} per {}, spent ${:.6}, held by \
             requests in flight ${:.6}; this request may cost up to ${:.6}",
            s.budget.period.as_str(),
            s.budget.scope.as_str(),
            s.budget.scope_id,
            usd(s.budget.limit_microdollars),
            s.budget.period.as_str(),
            usd(s.spent_microdollars),
            usd(s.reserved_microdollars),
            usd(self.0.requested_microdollars),
        )?;
        match s.window.end_ms {
            Some(end) => write!(f, "; it resets at {}.", rfc3339(end)),
            None => write!(f, "; it does not reset."),
        }
    }
}

pub fn usd(microdollars: i64) -> f64 {
    microdollars as f64 / 1e6
}

pub fn microdollars(usd: f64) -> i64 {
    (usd * 1e6).round() as i64
}

/// What the tightest budget has left, for the response headers.
#[derive(Debug, Clone, PartialEq)]
pub struct Remaining {
    pub scope: store::Scope,
    pub id: String,
    pub remaining_microdollars: i64,
}

impl Remaining {
    fn tightest<'a>(standings: impl Iterator<Item = (&'a Budget, i64)>) -> Option<Remaining> {
        standings
            .min_by_key(|(_, left)| *left)
            .map(|(budget, left)| Remaining {
                scope: budget.scope,
                id: budget.scope_id.clone(),
                remaining_microdollars: left.max(0),
            })
    }
}

#[derive(Clone)]
pub struct Budgets {
    /// `None` in the stand-alone simulator, which has no database: nothing
    /// is budgeted there.
    store: Option<BudgetStore>,
    settings: Arc<BudgetSettings>,
    lookups: moka::future::Cache<Payer, Arc<Lookup>>,
    webhook: reqwest::Client,
}

impl Budgets {
    pub fn new(db: Db, postgres: bool, settings: BudgetSettings) -> Budgets {
        Budgets::with_store(Some(BudgetStore::new(db, postgres)), settings)
    }

    /// Budgets that never apply (the stand-alone simulator).
    pub fn none(settings: BudgetSettings) -> Budgets {
        Budgets::with_store(None, settings)
    }

    fn with_store(store: Option<BudgetStore>, settings: BudgetSettings) -> Budgets {
        Budgets {
            store,
            lookups: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(settings.definitions_ttl)
                .build(),
            settings: Arc::new(settings),
            webhook: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap_or_default(),
        }
    }

    pub fn store(&self) -> Option<&BudgetStore> {
        self.store.as_ref()
    }

    pub fn settings(&self) -> &BudgetSettings {
        &self.settings
    }

    /// Forgets what was read of definitions and membership, after this
    /// process changed them (other processes see it within `definitions_ttl`).
    pub fn invalidate(&self) {
        self.lookups.invalidate_all();
    }

    /// The payer's team and the budgets that apply to it, read now.
    async fn read(store: &BudgetStore, payer: &Payer) -> Result<Lookup, StoreError> {
        let team = store.team_of(&payer.subject).await?;
        let budgets = store
            .budgets_of(payer.key_id.as_deref(), &payer.subject, team.as_deref())
            .await?;
        Ok(Lookup { team, budgets })
    }

    /// As [`Self::read`], reused for `definitions_ttl`.
    async fn lookup(&self, payer: &Payer) -> Result<Arc<Lookup>, StoreError> {
        let Some(store) = &self.store else {
            return Ok(Arc::new(Lookup {
                team: None,
                budgets: Vec::new(),
            }));
        };
        if let Some(found) = self.lookups.get(payer).await {
            return Ok(found);
        }
        let lookup = Arc::new(Self::read(store, payer).await?);
        self.lookups
            .insert(payer.clone(), Arc::clone(&lookup))
            .await;
        Ok(lookup)
    }

    /// The payer's team and its budgets as they stand now (`GET /v1/usage`).
    pub async fn standings_of(
        &self,
        payer: &Payer,
    ) -> Result<(Option<String>, Vec<Standing>), StoreError> {
        let Some(store) = &self.store else {
            return Ok((None, Vec::new()));
        };
        let Lookup { team, budgets } = Self::read(store, payer).await?;
        let standings = store.standings(&budgets, now_ms()).await?;
        Ok((team, standings))
    }

    /// Reserves `worst_case_usd` on every budget of `payer`. A payer with no
    /// budget gets a hold that reserves nothing.
    /// `worst_case_usd` is only computed when a budget applies.
    pub async fn reserve(
        &self,
        payer: Payer,
        worst_case_usd: impl FnOnce() -> f64,
    ) -> Result<Hold, BudgetError> {
        let lookup = self.lookup(&payer).await?;
        let mut hold = Hold {
            budgets: self.clone(),
            team: lookup.team.clone(),
            payer,
            open: None,
        };
        let Some(store) = self.store.as_ref().filter(|_| !lookup.budgets.is_empty()) else {
            return Ok(hold);
        };
        // Rounded up: a reservation is never below what it covers.
        let amount = (worst_case_usd() * 1e6).ceil().max(0.0) as i64;
        let id = uuid::Uuid::new_v4().simple().to_string();
        let ttl_ms = self.settings.hold_ttl.as_millis() as i64;
        match store
            .reserve(&id, &lookup.budgets, amount, now_ms(), ttl_ms)
            .await?
        {
            Ok(standings) => {
                let windows = standings
                    .iter()
                    .map(|s| HeldWindow {
                        scope: s.budget.scope,
                        id: s.budget.scope_id.clone(),
                        start: s.window.start_ms,
                    })
                    .collect();
                hold.open = Some(OpenHold {
                    id,
                    amount,
                    windows,
                    standings,
                });
                Ok(hold)
            }
            Err(exceeded) => {
                let s = &exceeded.standing;
                metrics::counter!("sluice_budget_refusals_total", "scope" => s.budget.scope.as_str())
                    .increment(1);
                tracing::info!(event = "budget_refused", scope = s.budget.scope.as_str(),
                    id = %s.budget.scope_id, limit_microdollars = s.budget.limit_microdollars,
                    spent_microdollars = s.spent_microdollars,
                    reserved_microdollars = s.reserved_microdollars,
                    requested_microdollars = amount, "budget refused a call");
                Err(BudgetError::Exceeded(Box::new(Refusal(exceeded))))
            }
        }
    }

    /// Releases reservations whose process never settled them, and, when
    /// `retention` is set, deletes usage records older than it. Runs forever.
    pub async fn sweep_forever(self, retention: Option<Duration>) {
        let Some(store) = self.store else { return };
        let mut every = tokio::time::interval(Duration::from_secs(30));
        loop {
            every.tick().await;
            match store.sweep(now_ms()).await {
                Ok(0) => {}
                Ok(n) => {
                    metrics::counter!("sluice_budget_holds_expired_total").increment(n);
                    tracing::warn!(
                        event = "budget_holds_expired",
                        holds = n,
                        "reservations released after their TTL"
                    );
                }
                Err(e) => tracing::warn!(event = "budget_sweep_failed", error = %e),
            }
            if let Some(retention) = retention {
                let before = now_ms() - retention.as_millis() as i64;
                if let Err(e) = report::delete_usage_before(store.db(), before).await {
                    tracing::warn!(event = "usage_retention_failed", error = %e);
                }
            }
        }
    }

    async fn notify_thresholds(
        &self,
        windows: &[HeldWindow],
        budgets: &[Budget],
        after: &[(i64, i64, i64)],
    ) {
        for ((window, budget), (spent, _, notified)) in windows.iter().zip(budgets).zip(after) {
            let limit = budget.limit_microdollars;
            for (i, threshold) in self.settings.soft_thresholds.iter().enumerate() {
                let bit = 1i64 << i;
                let reached = limit > 0 && (*spent as f64) >= threshold * limit as f64;
                if !reached || notified & bit != 0 {
                    continue;
                }
                let Some(store) = &self.store else { return };
                match store.mark_notified(window, bit).await {
                    Ok(true) => self.notice(budget, window, *threshold, *spent),
                    Ok(false) => {}
                    Err(e) => tracing::warn!(event = "budget_notice_failed", error = %e),
                }
            }
        }
    }

    fn notice(&self, budget: &Budget, window: &HeldWindow, threshold: f64, spent: i64) {
        let end = budget.period.window(window.start).end_ms;
        let body = json!({
            "type": "budget.threshold_reached",
            "scope": budget.scope.as_str(),
            "id": budget.scope_id,
            "period": budget.period.as_str(),
            "threshold": threshold,
            "limit_usd": usd(budget.limit_microdollars),
            "spent_usd": usd(spent),
            "period_start": rfc3339(window.start),
            "resets_at": end.map(rfc3339),
        });
        tracing::warn!(event = "budget_threshold", scope = budget.scope.as_str(),
            id = %budget.scope_id, threshold, spent_microdollars = spent,
            limit_microdollars = budget.limit_microdollars, "budget soft threshold reached");
        metrics::counter!("sluice_budget_thresholds_total", "scope" => budget.scope.as_str())
            .increment(1);
        if let Some(url) = self.settings.webhook_url.clone() {
            let client = self.webhook.clone();
            tokio::spawn(async move {
                let sent = client.post(&url).json(&body).send().await;
                match sent.and_then(reqwest::Response::error_for_status) {
                    Ok(_) => {}
                    Err(e) => tracing::warn!(event = "budget_webhook_failed", error = %e,
                        "budget notice not delivered"),
                }
            });
        }
    }
}

struct OpenHold {
    id: String,
    amount: i64,
    windows: Vec<HeldWindow>,
    standings: Vec<Standing>,
}

/// One call's reservation, settled with [`Hold::settle`]; dropped unsettled
/// (the call failed before it cost anything) it is released.
pub struct Hold {
    budgets: Budgets,
    pub payer: Payer,
    pub team: Option<String>,
    open: Option<OpenHold>,
}

impl Hold {
    /// Whether a budget applies, so the output cap must be enforced.
    pub fn is_open(&self) -> bool {
        self.open.is_some()
    }

    /// The reserved amount in USD (0 with no budget).
    pub fn reserved_usd(&self) -> f64 {
        self.open.as_ref().map_or(0.0, |o| usd(o.amount))
    }

    /// What the tightest budget had left before this call.
    pub fn remaining_before(&self) -> Option<Remaining> {
        let open = self.open.as_ref()?;
        Remaining::tightest(
            open.standings
                .iter()
                .map(|s| (&s.budget, s.remaining_microdollars() + open.amount)),
        )
    }

    /// Charges `cost_usd` and releases the reservation; what the tightest
    /// budget has left after. A store failure is logged and counted: the
    /// reservation then stays until the sweeper releases it, and the cost is
    /// in the usage records.
    pub async fn settle(mut self, cost_usd: f64) -> Option<Remaining> {
        let open = self.open.take()?;
        let spent = microdollars(cost_usd);
        if spent > open.amount {
            metrics::counter!("sluice_budget_overshoot_microdollars_total")
                .increment((spent - open.amount) as u64);
            tracing::warn!(
                event = "budget_overshoot",
                reserved_microdollars = open.amount,
                spent_microdollars = spent,
                "a call cost more than its reservation"
            );
        }
        let store = self.budgets.store.as_ref()?;
        match store
            .settle(&open.id, &open.windows, open.amount, spent)
            .await
        {
            Ok(after) => {
                let budgets: Vec<Budget> =
                    open.standings.iter().map(|s| s.budget.clone()).collect();
                self.budgets
                    .notify_thresholds(&open.windows, &budgets, &after)
                    .await;
                Remaining::tightest(
                    budgets.iter().zip(&after).map(|(b, (spent, reserved, _))| {
                        (b, b.limit_microdollars - spent - reserved)
                    }),
                )
            }
            Err(e) => {
                metrics::counter!("sluice_budget_settle_failures_total").increment(1);
                tracing::error!(event = "budget_settle_failed", error = %e, hold = %open.id,
                    "reservation left to expire");
                None
            }
        }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        // Outside a runtime (a test's teardown) the sweeper releases it.
        if let Some(open) = self.open.take()
            && let Some(store) = self.budgets.store.clone()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                if let Err(e) = store.settle(&open.id, &open.windows, open.amount, 0).await {
                    tracing::warn!(event = "budget_release_failed", error = %e,
                        "reservation left to expire");
                }
            });
        }
    }
}
