//! Time as the coordinator sees it (the clock trait lives in the protocol crate,
//! shared with the node) and its RFC 3339 text form.

use std::time::UNIX_EPOCH;

pub use tillswarm_protocol::clock::{Clock, ManualClock, SystemClock};

/// RFC 3339 text (UTC, seconds) for a millisecond timestamp.
pub fn rfc3339(ms: i64) -> String {
    let t = UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Parses RFC 3339 text (e.g. `2026-11-25T02:00:00Z`) to milliseconds.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let t = humantime::parse_rfc3339_weak(text).ok()?;
    Some(t.duration_since(UNIX_EPOCH).ok()?.as_millis() as i64)
}
