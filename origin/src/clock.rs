//! Wall-clock time in the two units the origin stores and signs with. One
//! place, so tests and every module agree on what "now" is.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch: OpenAI's `created`, the edge signature's timestamp.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Milliseconds since the Unix epoch, the unit of every `*_at_ms` column.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
