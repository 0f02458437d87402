//! Spend reports from the usage records: totals grouped by key, user, team,
//! model or day, and a daily series per group, as JSON or CSV.

use crate::db::Db;
use serde::{Deserialize, Serialize};
use sqlx::Row;

const DAY_MS: i64 = 86_400_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    Key,
    User,
    Team,
    Model,
    Day,
}

impl GroupBy {
    /// The column grouped on, as text on both databases.
    fn column(self) -> &'static str {
        match self {
            GroupBy::Key => "key_id",
            GroupBy::User => "subject",
            GroupBy::Team => "team_id",
            GroupBy::Model => "model",
            GroupBy::Day => "CAST(created_at_ms / 86400000 AS TEXT)",
        }
    }
}

/// Which records a report reads: `[from_ms, to_ms)` and optional filters.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub from_ms: i64,
    pub to_ms: i64,
    pub subject: Option<String>,
    pub key_id: Option<String>,
    pub team_id: Option<String>,
    pub model: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Totals {
    pub requests: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cost_usd: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupRow {
    /// The key, user, team, model or day (`YYYY-MM-DD`); `null` for records
    /// without one (a call made without a key, a user in no team).
    pub group: Option<String>,
    #[serde(flatten)]
    pub totals: Totals,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Point {
    pub day: String,
    pub group: Option<String>,
    #[serde(flatten)]
    pub totals: Totals,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub object: &'static str,
    pub group_by: GroupBy,
    pub from: String,
    pub to: String,
    pub total: Totals,
    /// Groups, costliest first.
    pub rows: Vec<GroupRow>,
    /// Each group's spend per UTC day, oldest first.
    pub series: Vec<Point>,
}

pub async fn report(db: &Db, group_by: GroupBy, filter: &Filter) -> Result<Report, sqlx::Error> {
    let (conditions, binds) = conditions(filter);
    let sums = "COUNT(*) AS requests, CAST(COALESCE(SUM(prompt_tokens), 0) AS BIGINT) AS prompt_tokens, \
                CAST(COALESCE(SUM(completion_tokens), 0) AS BIGINT) AS completion_tokens, \
                CAST(COALESCE(SUM(cost_microdollars), 0) AS BIGINT) AS cost";
    let total_sql = format!("SELECT {sums} FROM usage_records WHERE {conditions}");
    let rows_sql = format!(
        "SELECT {} AS grp, {sums} FROM usage_records WHERE {conditions} GROUP BY grp ORDER BY cost DESC, grp",
        group_by.column()
    );
    let series_sql = format!(
        "SELECT CAST(created_at_ms / 86400000 AS TEXT) AS day, {} AS grp, {sums} FROM usage_records \
         WHERE {conditions} GROUP BY day, grp ORDER BY day, grp",
        group_by.column()
    );
    let total = totals(&bound(sqlx::query(&total_sql), &binds).fetch_one(db).await?)?;
    let mut rows = Vec::new();
    for row in bound(sqlx::query(&rows_sql), &binds).fetch_all(db).await? {
        let group: Option<String> = row.try_get("grp")?;
        rows.push(GroupRow {
            group: group.map(|g| label(group_by, g)),
            totals: totals(&row)?,
        });
    }
    let mut series = Vec::new();
    for row in bound(sqlx::query(&series_sql), &binds)
        .fetch_all(db)
        .await?
    {
        let day: String = row.try_get("day")?;
        let group: Option<String> = row.try_get("grp")?;
        series.push(Point {
            day: label(GroupBy::Day, day),
            group: group.map(|g| label(group_by, g)),
            totals: totals(&row)?,
        });
    }
    Ok(Report {
        object: "spend_report",
        group_by,
        from: super::period::rfc3339(filter.from_ms),
        to: super::period::rfc3339(filter.to_ms),
        total,
        rows,
        series,
    })
}

/// The report's rows as CSV: `group,requests,prompt_tokens,completion_tokens,cost_usd`,
/// or, with `series`, one line per day and group with `day` first.
pub fn csv(report: &Report, series: bool) -> String {
    let mut out = String::new();
    let field = |s: &str| {
        if s.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    };
    let line = |t: &Totals| {
        format!(
            "{},{},{},{:.6}",
            t.requests, t.prompt_tokens, t.completion_tokens, t.cost_usd
        )
    };
    if series {
        out.push_str("day,group,requests,prompt_tokens,completion_tokens,cost_usd\n");
        for p in &report.series {
            let group = field(p.group.as_deref().unwrap_or(""));
            out.push_str(&format!("{},{group},{}\n", p.day, line(&p.totals)));
        }
    } else {
        out.push_str("group,requests,prompt_tokens,completion_tokens,cost_usd\n");
        for r in &report.rows {
            let group = field(r.group.as_deref().unwrap_or(""));
            out.push_str(&format!("{group},{}\n", line(&r.totals)));
        }
    }
    out
}

pub async fn delete_usage_before(db: &Db, before_ms: i64) -> Result<u64, sqlx::Error> {
    Ok(
        sqlx::query("DELETE FROM usage_records WHERE created_at_ms < $1")
            .bind(before_ms)
            .execute(db)
            .await?
            .rows_affected(),
    )
}

enum Bind {
    Int(i64),
    Text(String),
}

fn conditions(filter: &Filter) -> (String, Vec<Bind>) {
    let mut sql = String::from("created_at_ms >= $1 AND created_at_ms < $2");
    let mut binds = vec![Bind::Int(filter.from_ms), Bind::Int(filter.to_ms)];
    for (column, value) in [
        ("subject", &filter.subject),
        ("key_id", &filter.key_id),
        ("team_id", &filter.team_id),
        ("model", &filter.model),
    ] {
        if let Some(value) = value {
            binds.push(Bind::Text(value.clone()));
            sql.push_str(&format!(" AND {column} = ${}", binds.len()));
        }
    }
    (sql, binds)
}

fn bound<'q>(
    mut query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    binds: &'q [Bind],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    for bind in binds {
        query = match bind {
            Bind::Int(n) => query.bind(*n),
            Bind::Text(s) => query.bind(s.as_str()),
        };
    }
    query
}

fn totals(row: &sqlx::any::AnyRow) -> Result<Totals, sqlx::Error> {
    Ok(Totals {
        requests: row.try_get("requests")?,
        prompt_tokens: row.try_get("prompt_tokens")?,
        completion_tokens: row.try_get("completion_tokens")?,
        cost_usd: super::usd(row.try_get("cost")?),
    })
}

/// A day number (days since the epoch, as text) as `YYYY-MM-DD`; other groups as they are.
fn label(group_by: GroupBy, value: String) -> String {
    match (group_by, value.parse::<i64>()) {
        (GroupBy::Day, Ok(day)) => super::period::rfc3339(day * DAY_MS)[..10].to_string(),
        _ => value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_what_needs_it() {
        let report = Report {
            object: "spend_report",
            group_by: GroupBy::Model,
            from: String::new(),
            to: String::new(),
            total: Totals::default(),
            rows: vec![GroupRow {
                group: Some("a,\"b\"".into()),
                totals: Totals {
                    requests: 2,
                    prompt_tokens: 10,
                    completion_tokens: 5,
                    cost_usd: 0.25,
                },
            }],
            series: vec![],
        };
        assert_eq!(
            csv(&report, false),
            "group,requests,prompt_tokens,completion_tokens,cost_usd\n\"a,\"\"b\"\"\",2,10,5,0.250000\n"
        );
    }

    #[test]
    fn day_numbers_read_as_dates() {
        assert_eq!(label(GroupBy::Day, "20790".into()), "2026-12-03");
        assert_eq!(label(GroupBy::Model, "20790".into()), "20790");
    }
}
