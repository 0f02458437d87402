//! The admin API for teams, membership, budgets and spend reports (admin
//! tier, through the edge), and `GET /v1/usage`, a caller's own spend and
//! budgets. Handlers extract, call the budget store, and map.

use super::period::{Period, parse_instant, rfc3339};
use super::report::{self, Filter, GroupBy};
use super::store::{Budget, Scope, Standing, StoreError};
use super::{Budgets, Payer, microdollars, usd};
use crate::clock::now_ms;
use crate::http::{ApiError, require_admin};
use crate::http::{ApiJson, ApiPath, ApiQuery, check_name};
use axum::extract::{FromRef, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use sluice_core::identity::Identity;

pub fn router<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    Budgets: FromRef<S>,
    crate::http::BodyLimit: FromRef<S>,
{
    Router::new()
        .route("/v1/admin/teams", get(list_teams).post(create_team))
        .route("/v1/admin/teams/{id}", get(get_team).delete(delete_team))
        .route(
            "/v1/admin/teams/{id}/members/{subject}",
            put(add_member).delete(remove_member),
        )
        .route("/v1/admin/budgets", get(list_budgets))
        .route(
            "/v1/admin/budgets/{scope}/{id}",
            put(set_budget).get(get_budget).delete(delete_budget),
        )
        .route("/v1/admin/spend", get(spend_report))
        .route("/v1/usage", get(own_usage))
}

impl From<super::BudgetError> for ApiError {
    fn from(e: super::BudgetError) -> ApiError {
        match e {
            super::BudgetError::Exceeded(refusal) => ApiError::InsufficientQuota {
                message: refusal.to_string(),
                budget: Box::new(refusal.details()),
                retry_after_secs: refusal.retry_after_secs(now_ms()),
            },
            super::BudgetError::Store(e) => e.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::NotFound(_) => ApiError::NotFound,
            StoreError::Sql(e) => ApiError::Database(Box::new(e)),
        }
    }
}

/// The store behind the admin routes (every origin with a database has one).
fn store(budgets: &Budgets) -> Result<&super::store::BudgetStore, ApiError> {
    budgets.store().ok_or(ApiError::NotFound)
}

fn invalid(message: impl Into<String>, param: &str) -> ApiError {
    ApiError::InvalidRequest {
        message: message.into(),
        param: Some(param.into()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTeam {
    id: String,
    #[serde(default)]
    name: String,
}

async fn create_team(
    State(budgets): State<Budgets>,
    Extension(who): Extension<Identity>,
    ApiJson(body): ApiJson<CreateTeam>,
) -> Result<Response, ApiError> {
    require_admin(&who)?;
    check_name(&body.id, "id")?;
    let team = store(&budgets)?.create_team(&body.id, &body.name).await?;
    budgets.invalidate();
    Ok((StatusCode::CREATED, Json(team_json(&team))).into_response())
}

fn team_json(team: &super::store::Team) -> Value {
    json!({ "object": "team", "id": team.id, "name": team.name, "members": team.members,
            "created_at_ms": team.created_at_ms })
}

async fn list_teams(
    State(budgets): State<Budgets>,
    Extension(who): Extension<Identity>,
) -> Result<Json<Value>, ApiError> {
    require_admin(&who)?;
    let teams = store(&budgets)?.teams().await?;
    let data: Vec<Value> = teams.iter().map(team_json).collect();
    Ok(Json(json!({ "object": "list", "data": data })))
}

async fn get_team(
    State(budgets): State<Budgets>,
    Extension(who): Extension<Identity>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    require_admin(&who)?;
    Ok(Json(team_json(&store(&budgets)?.team(&id).await?)))
}

async fn delete_team(
    State(budgets): State<Budgets>,
    Extension(who): Extension<Identity>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    require_admin(&who)?;
    store(&budgets)?.delete_team(&id).await?;
    budgets.invalidate();
    Ok(Json(json!({ "object": "team", "id": id, "deleted": true })))
}

async fn add_member(
    State(budgets): State<Budgets>,
    Extension(who): Extension<Identity>,
    ApiPath((id, subject)): ApiPath<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    require_admin(&who)?;
    check_name(&subject, "subject")?;
    if subject.starts_with("anonymous:") {
        return Err(invalid("Anonymous callers cannot join a team.", "subject"));
    }
    store(&budgets)?.add_member(&id, &subject).await?;
    budgets.invalidate();
    Ok(Json(team_json(&store(&budgets)?.team(&id).await?)))
}

async fn remove_member(
    State(budgets): State<Budgets>,
    Extension(who): Extension<Identity>,
    ApiPath((id, subject)): ApiPath<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    require_admin(&who)?;
    store(&budgets)?.remove_member(&id, &subject).await?;
    budgets.invalidate();
    Ok(Json(team_json(&store(&budgets)?.team(&id).await?)))
}

fn scope_of(scope: &str) -> Result<Scope, ApiError> {
    Scope::parse(scope).ok_or_else(|| invalid("The scope must be key, user or team.", "scope"))
}

/// A budget as the admin API, `GET /v1/usage` and refusals show it.
pub fn standing_json(s: &Standing) -> Value {
    json!({
        "object": "budget",
        "scope": s.budget.scope.as_str(),
        "id": s.budget.scope_id,
        "period": s.budget.period.as_str(),
        "limit_usd": usd(s.budget.limit_microdollars),
        "spent_usd": usd(s.spent_microdollars),
        "reserved_usd": usd(s.reserved_microdollars),
        "remaining_usd": usd(s.remaining_microdollars()),
        "period_start": rfc3339(s.window.start_ms),
        "resets_at": s.window.end_ms.map(rfc3339),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetBudget {
    period: Period,
    limit_usd: f64,
}

async fn set_budget(
    State(budgets): State<Budgets>,
    Extension(who): Extension<Identity>,
    ApiPath((scope, id)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<SetBudget>,
) -> Result<Json<Value>, ApiError> {
    require_admin(&who)?;
    let scope = scope_of(&scope)?;
    check_name(&id, "id")?;
    if !body.limit_usd.is_finite() || body.limit_usd < 0.0 || body.limit_usd > 1e12 {
        return Err(invalid(
            "`limit_usd` must be a number from 0 to 1e12.",
            "limit_usd",
        ));
    }
    let budget = Budget {
        scope,
        scope_id: id,
        period: body.period,
        limit_microdollars: microdollars(body.limit_usd),
    };
    store(&budgets)?.set_budget(&budget).await?;
    budgets.invalidate();
    let standing = store(&budgets)?.standings(&[budget], now_ms()).await?;
    Ok(Json(standing_json(&standing[0])))
}

async fn get_budget(
    State(budgets): State<Budgets>,
    Extension(who): Extension<Identity>,
    ApiPath((scope, id)): ApiPath<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    require_admin(&who)?;
    let scope = scope_of(&scope)?;
    let all = store(&budgets)?.budgets().await?;
    let budget = all
        .into_iter()
        .find(|b| b.scope == scope && b.scope_id == id)
        .ok_or(ApiError::NotFound)?;
    let standing = store(&budgets)?.standings(&[budget], now_ms()).await?;
    Ok(Json(standing_json(&standing[0])))
}

async fn delete_budget(
    State(budgets): State<Budgets>,
    Extension(who): Extension<Identity>,
    ApiPath((scope, id)): ApiPath<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    require_admin(&who)?;
    let scope = scope_of(&scope)?;
    store(&budgets)?.delete_budget(scope, &id).await?;
    budgets.invalidate();
    Ok(Json(
        json!({ "object": "budget", "scope": scope.as_str(), "id": id, "deleted": true }),
    ))
}

async fn list_budgets(
    State(budgets): State<Budgets>,
    Extension(who): Extension<Identity>,
) -> Result<Json<Value>, ApiError> {
    require_admin(&who)?;
    let all = store(&budgets)?.budgets().await?;
    let standings = store(&budgets)?.standings(&all, now_ms()).await?;
    let data: Vec<Value> = standings.iter().map(standing_json).collect();
    Ok(Json(json!({ "object": "list", "data": data })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpendQuery {
    group_by: Option<GroupBy>,
    from: Option<String>,
    to: Option<String>,
    subject: Option<String>,
    key_id: Option<String>,
    team_id: Option<String>,
    model: Option<String>,
    format: Option<String>,
    /// CSV only: the daily series instead of the grouped totals.
    #[serde(default)]
    series: bool,
}

/// `from`/`to` (see [`parse_instant`]), `default` when absent.
fn instant(value: Option<&str>, default: i64, param: &str) -> Result<i64, ApiError> {
    match value {
        None => Ok(default),
        Some(value) => parse_instant(value).ok_or_else(|| {
            invalid(
                format!("`{param}` must be RFC 3339, YYYY-MM-DD or Unix milliseconds."),
                param,
            )
        }),
    }
}

pub const THIRTY_DAYS_MS: i64 = 30 * 86_400_000;

async fn spend_report(
    State(budgets): State<Budgets>,
    Extension(who): Extension<Identity>,
    ApiQuery(query): ApiQuery<SpendQuery>,
) -> Result<Response, ApiError> {
    require_admin(&who)?;
    let now = now_ms();
    let to = instant(query.to.as_deref(), now + 1, "to")?;
    let filter = Filter {
        from_ms: instant(query.from.as_deref(), to - THIRTY_DAYS_MS, "from")?,
        to_ms: to,
        subject: query.subject,
        key_id: query.key_id,
        team_id: query.team_id,
        model: query.model,
    };
    let group_by = query.group_by.unwrap_or(GroupBy::Model);
    let report = report::report(store(&budgets)?.db(), group_by, &filter)
        .await
        .map_err(|e| ApiError::Database(Box::new(e)))?;
    match query.format.as_deref() {
        None | Some("json") => Ok(Json(report).into_response()),
        Some("csv") => {
            let mut response = report::csv(&report, query.series).into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/csv; charset=utf-8"),
            );
            Ok(response)
        }
        Some(_) => Err(invalid("`format` must be json or csv.", "format")),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    from: Option<String>,
    to: Option<String>,
}

/// `GET /v1/usage`: the caller's budgets as they stand and its own spend
/// by model and day (30 days by default).
async fn own_usage(
    State(budgets): State<Budgets>,
    Extension(who): Extension<Identity>,
    ApiQuery(query): ApiQuery<UsageQuery>,
) -> Result<Json<Value>, ApiError> {
    let payer = Payer::of(&who);
    let (team, standings) = budgets.standings_of(&payer).await?;
    let now = now_ms();
    let to = instant(query.to.as_deref(), now + 1, "to")?;
    let filter = Filter {
        from_ms: instant(query.from.as_deref(), to - THIRTY_DAYS_MS, "from")?,
        to_ms: to,
        subject: Some(who.sub.clone()),
        ..Filter::default()
    };
    let spend = report::report(store(&budgets)?.db(), GroupBy::Model, &filter)
        .await
        .map_err(|e| ApiError::Database(Box::new(e)))?;
    let data: Vec<Value> = standings.iter().map(standing_json).collect();
    Ok(Json(json!({
        "object": "usage",
        "subject": who.sub,
        "key_id": who.kid,
        "team_id": team,
        "budgets": data,
        "spend": spend,
    })))
}

/// What the admin listener's spend view (`/spend`) shows: every budget as
/// it stands, the ten costliest teams, users and keys of the last 30 days,
/// and spend per day by model.
pub async fn spend_view(budgets: &Budgets) -> Result<Value, ApiError> {
    let store = store(budgets)?;
    let now = now_ms();
    let all = store.budgets().await?;
    let standings: Vec<Value> = store
        .standings(&all, now)
        .await?
        .iter()
        .map(standing_json)
        .collect();
    let filter = Filter {
        from_ms: now - THIRTY_DAYS_MS,
        to_ms: now + 1,
        ..Filter::default()
    };
    let database = |e: sqlx::Error| ApiError::Database(Box::new(e));
    let mut top = serde_json::Map::new();
    for (name, group_by) in [
        ("team", GroupBy::Team),
        ("user", GroupBy::User),
        ("key", GroupBy::Key),
    ] {
        let report = report::report(store.db(), group_by, &filter)
            .await
            .map_err(database)?;
        let rows: Vec<_> = report.rows.into_iter().take(10).collect();
        top.insert(name.into(), json!(rows));
    }
    let by_model = report::report(store.db(), GroupBy::Model, &filter)
        .await
        .map_err(database)?;
    Ok(json!({
        "generated_at": rfc3339(now),
        "budgets": standings,
        "top": top,
        "total": by_model.total,
        "series": by_model.series,
    }))
}
