//! Budget periods as UTC calendar windows: a day from midnight, a week from
//! Monday, a month from its first, or the whole of time. Spend is kept per
//! window, so a budget resets by a new window beginning, with nothing to sweep.

use serde::{Deserialize, Serialize};
use time::{Date, Duration, Month, OffsetDateTime, Time};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    Day,
    Week,
    Month,
    Total,
}

impl Period {
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Week => "week",
            Period::Month => "month",
            Period::Total => "total",
        }
    }

    pub fn parse(s: &str) -> Option<Period> {
        match s {
            "day" => Some(Period::Day),
            "week" => Some(Period::Week),
            "month" => Some(Period::Month),
            "total" => Some(Period::Total),
            _ => None,
        }
    }

    /// The window holding `now_ms`: its start and, but for `total`, its end
    /// (the next start), both in Unix milliseconds.
    pub fn window(self, now_ms: i64) -> Window {
        let day = date_of(now_ms);
        let (start, end) = match self {
            Period::Total => {
                return Window {
                    start_ms: 0,
                    end_ms: None,
                };
            }
            Period::Day => (day, day + Duration::days(1)),
            Period::Week => {
                let monday =
                    day - Duration::days(i64::from(day.weekday().number_days_from_monday()));
                (monday, monday + Duration::days(7))
            }
            Period::Month => {
                let first = day.replace_day(1).unwrap_or(day);
                (first, next_month(first))
            }
        };
        Window {
            start_ms: midnight_ms(start),
            end_ms: Some(midnight_ms(end)),
        }
    }
}

/// One period's span; spend rows are keyed by `start_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start_ms: i64,
    /// When the budget resets; `None` for a `total` budget, which never does.
    pub end_ms: Option<i64>,
}

fn date_of(ms: i64) -> Date {
    OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
        .date()
}

fn midnight_ms(date: Date) -> i64 {
    date.with_time(Time::MIDNIGHT).assume_utc().unix_timestamp() * 1000
}

fn next_month(first: Date) -> Date {
    let (year, month) = match first.month() {
        Month::December => (first.year() + 1, Month::January),
        m => (first.year(), m.next()),
    };
    Date::from_calendar_date(year, month, 1).unwrap_or(first)
}

/// RFC 3339 for a window's end, as refusals and reports show it.
pub fn rfc3339(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// An instant as RFC 3339, a date (`YYYY-MM-DD`, midnight UTC) or Unix milliseconds.
pub fn parse_instant(value: &str) -> Option<i64> {
    if let Ok(ms) = value.parse::<i64>() {
        return Some(ms);
    }
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = OffsetDateTime::parse(value, &Rfc3339) {
        return Some((t.unix_timestamp_nanos() / 1_000_000) as i64);
    }
    let date_format = time::macros::format_description!("[year]-[month]-[day]");
    Date::parse(value, &date_format).ok().map(midnight_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-12-02T15:30:00Z, a Wednesday.
    const WEDNESDAY: i64 = 1_796_225_400_000;

    #[test]
    fn windows_are_utc_calendar_spans() {
        assert_eq!(rfc3339(WEDNESDAY), "2026-12-02T15:30:00Z");
        let day = Period::Day.window(WEDNESDAY);
        assert_eq!(rfc3339(day.start_ms), "2026-12-02T00:00:00Z");
        assert_eq!(rfc3339(day.end_ms.unwrap()), "2026-12-03T00:00:00Z");
        let week = Period::Week.window(WEDNESDAY);
        assert_eq!(rfc3339(week.start_ms), "2026-11-30T00:00:00Z");
        assert_eq!(rfc3339(week.end_ms.unwrap()), "2026-12-07T00:00:00Z");
        let month = Period::Month.window(WEDNESDAY);
        assert_eq!(rfc3339(month.start_ms), "2026-12-01T00:00:00Z");
        assert_eq!(rfc3339(month.end_ms.unwrap()), "2027-01-01T00:00:00Z");
        assert_eq!(
            Period::Total.window(WEDNESDAY),
            Window {
                start_ms: 0,
                end_ms: None
            }
        );
    }

    #[test]
    fn instants_parse_in_three_forms() {
        assert_eq!(parse_instant("1796225400000"), Some(WEDNESDAY));
        assert_eq!(parse_instant("2026-12-02T15:30:00Z"), Some(WEDNESDAY));
        assert_eq!(
            parse_instant("2026-12-02"),
            Some(Period::Day.window(WEDNESDAY).start_ms)
        );
        assert_eq!(parse_instant("yesterday"), None);
    }

    #[test]
    fn a_window_ends_where_the_next_begins() {
        for period in [Period::Day, Period::Week, Period::Month] {
            let window = period.window(WEDNESDAY);
            let end = window.end_ms.unwrap();
            assert_eq!(period.window(end - 1), window, "{period:?}");
            assert_eq!(period.window(end).start_ms, end, "{period:?}");
        }
    }
}
