//! Time as the coordinator sees it (the clock trait lives in the protocol crate,
//! shared with the node) and its RFC 3339 text form.

use std::time::UNIX_EPOCH;

pub use tillswarm_protocol::clock::{Clock, ManualClock, SystemClock};

/// RFC 3339 text (UTC, seconds) for a millisecond timestamp.
pub fn rfc3339(ms: i64) -> String {
    let t = UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Parses RFC 3339 text to milliseconds: `2026-11-25T02:00:00Z`, with an offset
/// (`2026-11-25T05:00:00+03:00`), or without a zone (taken as UTC).
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let text = text.trim();
    // humantime reads only `Z` or no zone: apply a numeric offset ourselves.
    let (local, offset_ms) = match text
        .len()
        .checked_sub(6)
        .and_then(|i| text.get(i..).map(|o| (i, o)))
    {
        Some((i, o))
            if (o.starts_with('+') || o.starts_with('-'))
                && o.as_bytes()[3] == b':'
                && text[..i].contains('T') =>
        {
            let hours: i64 = o[1..3].parse().ok()?;
            let minutes: i64 = o[4..6].parse().ok()?;
            if hours > 23 || minutes > 59 {
                return None;
            }
            let sign = if o.starts_with('-') { -1 } else { 1 };
            (&text[..i], sign * (hours * 60 + minutes) * 60_000)
        }
        _ => (text, 0),
    };
    let t = humantime::parse_rfc3339_weak(local).ok()?;
    Some(t.duration_since(UNIX_EPOCH).ok()?.as_millis() as i64 - offset_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_with_offsets() {
        let z = parse_rfc3339("2026-11-25T02:00:00Z").expect("z");
        assert_eq!(parse_rfc3339("2026-11-25T05:00:00+03:00"), Some(z));
        assert_eq!(parse_rfc3339("2026-11-24T21:30:00-04:30"), Some(z));
        assert_eq!(parse_rfc3339("2026-11-25T02:00:00"), Some(z));
        assert_eq!(rfc3339(z), "2026-11-25T02:00:00Z");
        assert_eq!(parse_rfc3339("2026-11-25T05:00:00+33:00"), None);
        assert_eq!(parse_rfc3339("tomorrow"), None);
    }
}
