//! Priority classes shared by generation (key reserve) and the job queue.

use serde::{Deserialize, Serialize};

/// Sent by clients as `x-sluice-priority`; `normal` when absent.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Low,
    #[default]
    Normal,
    High,
    Critical,
}

impl Priority {
    pub const HEADER: &'static str = "x-sluice-priority";

    pub fn parse(text: &str) -> Option<Priority> {
        match text.trim().to_ascii_lowercase().as_str() {
            "low" => Some(Priority::Low),
            "normal" => Some(Priority::Normal),
            "high" => Some(Priority::High),
            "critical" => Some(Priority::Critical),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Normal => "normal",
            Priority::High => "high",
            Priority::Critical => "critical",
        }
    }

    /// The queue's order: lower ranks are claimed first.
    pub fn rank(self) -> i64 {
        match self {
            Priority::Critical => 0,
            Priority::High => 1,
            Priority::Normal => 2,
            Priority::Low => 3,
        }
    }

    pub fn from_rank(rank: i64) -> Priority {
        match rank {
            0 => Priority::Critical,
            1 => Priority::High,
            3 => Priority::Low,
            _ => Priority::Normal,
        }
    }
}
