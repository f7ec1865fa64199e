//! Store-local maintenance windows: local clock times and weekdays, evaluated
//! in each store's IANA time zone (jiff, with its zone database compiled in),
//! so "01:00-05:00" means 01:00 in Moscow for a Moscow store and 01:00 in
//! Yekaterinburg for a Yekaterinburg one, across DST changes.

use jiff::civil::{Date, Time, Weekday};
use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned};

use crate::error::{Error, Result};

pub use tillswarm_protocol::operator::tasks::Window;

const DAYS: [(&str, Weekday); 7] = [
    ("mon", Weekday::Monday),
    ("tue", Weekday::Tuesday),
    ("wed", Weekday::Wednesday),
    ("thu", Weekday::Thursday),
    ("fri", Weekday::Friday),
    ("sat", Weekday::Saturday),
    ("sun", Weekday::Sunday),
];

/// A checked window, ready to evaluate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    start: Time,
    end: Time,
    /// Bit `i` set: the window starts on `DAYS[i]`.
    days: u8,
    crosses_midnight: bool,
}

/// One occurrence of a window, as Unix milliseconds `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// First instant inside.
    pub start_ms: i64,
    /// First instant after.
    pub end_ms: i64,
}

impl Span {
    /// Whether `now_ms` falls inside.
    pub fn contains(&self, now_ms: i64) -> bool {
        (self.start_ms..self.end_ms).contains(&now_ms)
    }
}

fn parse_hhmm(field: &str, text: &str) -> Result<Time> {
    let bad = || {
        Error::bad(
            "invalid_window",
            format!("window {field} must be HH:MM (00:00-23:59), got {text:?}"),
        )
    };
    let (h, m) = text.trim().split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let h: i8 = h.parse().map_err(|_| bad())?;
    let m: i8 = m.parse().map_err(|_| bad())?;
    Time::new(h, m, 0, 0).map_err(|_| bad())
}

/// Checking a [`Window`] (a protocol type) into a [`Rule`].
pub trait WindowRule {
    /// Checks the window: times, days, and the midnight rule.
    fn rule(&self) -> Result<Rule>;
}

impl WindowRule for Window {
    fn rule(&self) -> Result<Rule> {
        let start = parse_hhmm("start", &self.start)?;
        let end = parse_hhmm("end", &self.end)?;
        if start == end {
            return Err(Error::bad(
                "invalid_window",
                "window start and end are the same time",
            ));
        }
        if (end < start) != self.crosses_midnight {
            return Err(Error::bad(
                "invalid_window",
                if end < start {
                    format!(
                        "window end {} is before its start {}: set crosses_midnight to end the next day",
                        self.end, self.start
                    )
                } else {
                    "crosses_midnight is set but the window ends after it starts on the same day"
                        .to_owned()
                },
            ));
        }
        let mut days = 0u8;
        for d in &self.days {
            let i = DAYS
                .iter()
                .position(|(name, _)| d.trim().eq_ignore_ascii_case(name))
                .ok_or_else(|| {
                    Error::bad(
                        "invalid_window",
                        format!("window day {d:?} is not one of mon tue wed thu fri sat sun"),
                    )
                })?;
            days |= 1 << i;
        }
        Ok(Rule {
            start,
            end,
            days: if days == 0 { 0x7f } else { days },
            crosses_midnight: self.crosses_midnight,
        })
    }
}

impl Rule {
    fn starts_on(&self, day: Weekday) -> bool {
        let i = DAYS.iter().position(|(_, w)| *w == day).unwrap_or(0);
        self.days & (1 << i) != 0
    }

    /// The occurrence that contains `now_ms`, or else the next one, in `tz`.
    /// A local time that a DST change skips moves forward by the gap (RFC
    /// 5545, as calendars do); a repeated one is its first occurrence.
    pub fn current_or_next(&self, tz: &TimeZone, now_ms: i64) -> Option<Span> {
        let now = Timestamp::from_millisecond(now_ms).ok()?;
        let today = now.to_zoned(tz.clone()).date();
        // From yesterday (a window crossing midnight may still be open) to a
        // week ahead.
        let mut day = today.yesterday().ok()?;
        for _ in 0..9 {
            if self.starts_on(day.weekday()) {
                if let Some(span) = self.on(tz, day) {
                    if span.end_ms > now_ms {
                        return Some(span);
                    }
                }
            }
            day = day.tomorrow().ok()?;
        }
        None
    }

    /// Whether `now_ms` is inside an occurrence in `tz`.
    pub fn is_open(&self, tz: &TimeZone, now_ms: i64) -> bool {
        self.current_or_next(tz, now_ms)
            .is_some_and(|s| s.contains(now_ms))
    }

    fn on(&self, tz: &TimeZone, day: Date) -> Option<Span> {
        let end_day = if self.crosses_midnight {
            day.tomorrow().ok()?
        } else {
            day
        };
        let start = tz.to_zoned(day.to_datetime(self.start)).ok()?;
        let end = tz.to_zoned(end_day.to_datetime(self.end)).ok()?;
        let span = Span {
            start_ms: start.timestamp().as_millisecond(),
            end_ms: end.timestamp().as_millisecond(),
        };
        (span.end_ms > span.start_ms).then_some(span)
    }
}

/// The zone named `name`, or `fallback` when the name is empty.
pub fn zone(name: &str, fallback: &TimeZone) -> Result<TimeZone> {
    if name.trim().is_empty() {
        return Ok(fallback.clone());
    }
    TimeZone::get(name.trim()).map_err(|_| {
        Error::bad(
            "unknown_time_zone",
            format!("{name:?} is not an IANA time zone (like Europe/Moscow)"),
        )
    })
}

/// `ms` as local RFC 3339 text in `tz` (`2026-12-02T01:00:00+03:00`).
pub fn local_text(tz: &TimeZone, ms: i64) -> String {
    Timestamp::from_millisecond(ms)
        .map(|t| {
            let z: Zoned = t.to_zoned(tz.clone());
            z.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::parse_rfc3339;

    fn ms(text: &str) -> i64 {
        parse_rfc3339(text).expect("time")
    }

    fn night() -> Rule {
        Window {
            start: "01:00".into(),
            end: "05:00".into(),
            days: vec![],
            crosses_midnight: false,
        }
        .rule()
        .expect("rule")
    }

    #[test]
    fn one_local_window_opens_at_each_stores_own_clock() {
        let now = ms("2026-12-01T12:00:00Z");
        let at = |zone: &str| {
            let tz = TimeZone::get(zone).expect("zone");
            night().current_or_next(&tz, now).expect("next")
        };
        // 01:00 local on 2 December: UTC+3, UTC+4 and UTC+5.
        assert_eq!(at("Europe/Moscow").start_ms, ms("2026-12-01T22:00:00Z"));
        assert_eq!(at("Europe/Samara").start_ms, ms("2026-12-01T21:00:00Z"));
        assert_eq!(
            at("Asia/Yekaterinburg").start_ms,
            ms("2026-12-01T20:00:00Z")
        );
        let tz = TimeZone::get("Europe/Moscow").expect("zone");
        assert!(night().is_open(&tz, ms("2026-12-01T23:30:00Z")));
        assert!(
            !night().is_open(&tz, ms("2026-12-02T02:00:00Z")),
            "05:00 local"
        );
        assert_eq!(
            local_text(&tz, ms("2026-12-01T22:00:00Z")),
            "2026-12-02T01:00:00+03:00"
        );
    }

    #[test]
    fn windows_keep_local_time_across_dst_changes() {
        let berlin = TimeZone::get("Europe/Berlin").expect("zone");
        // 29 March 2026: 02:00 CET jumps to 03:00 CEST; the window lasts 3 h.
        let spring = night()
            .current_or_next(&berlin, ms("2026-03-28T12:00:00Z"))
            .expect("next");
        assert_eq!(spring.start_ms, ms("2026-03-29T00:00:00Z"), "01:00 CET");
        assert_eq!(spring.end_ms, ms("2026-03-29T03:00:00Z"), "05:00 CEST");
        // 25 October 2026: 03:00 CEST falls back to 02:00 CET; it lasts 5 h.
        let autumn = night()
            .current_or_next(&berlin, ms("2026-10-24T12:00:00Z"))
            .expect("next");
        assert_eq!(autumn.start_ms, ms("2026-10-24T23:00:00Z"), "01:00 CEST");
        assert_eq!(autumn.end_ms, ms("2026-10-25T04:00:00Z"), "05:00 CET");
        // A window inside the skipped hour moves forward by the gap (RFC
        // 5545): 03:10-03:50 CEST that day.
        let gap = Window {
            start: "02:10".into(),
            end: "02:50".into(),
            days: vec![],
            crosses_midnight: false,
        }
        .rule()
        .expect("rule");
        let next = gap
            .current_or_next(&berlin, ms("2026-03-28T12:00:00Z"))
            .expect("next");
        assert_eq!(next.start_ms, ms("2026-03-29T01:10:00Z"));
        assert_eq!(next.end_ms, ms("2026-03-29T01:50:00Z"));
    }

    #[test]
    fn days_and_midnight_are_followed() {
        let tz = TimeZone::get("Europe/Moscow").expect("zone");
        let weekend = Window {
            start: "22:00".into(),
            end: "04:00".into(),
            days: vec!["sat".into(), "Sun".into()],
            crosses_midnight: true,
        }
        .rule()
        .expect("rule");
        // Tuesday 1 December 2026 -> Saturday 5 December 22:00 MSK.
        let next = weekend
            .current_or_next(&tz, ms("2026-12-01T12:00:00Z"))
            .expect("next");
        assert_eq!(next.start_ms, ms("2026-12-05T19:00:00Z"));
        assert_eq!(next.end_ms, ms("2026-12-06T01:00:00Z"));
        // Monday 02:00 MSK is still inside Sunday's window.
        assert!(weekend.is_open(&tz, ms("2026-12-06T23:00:00Z")));
    }

    #[test]
    fn bad_windows_are_refused() {
        let w = |start: &str, end: &str, days: &[&str], crosses: bool| Window {
            start: start.into(),
            end: end.into(),
            days: days.iter().map(|d| (*d).to_owned()).collect(),
            crosses_midnight: crosses,
        };
        for bad in [
            w("05:00", "01:00", &[], false),
            w("01:00", "05:00", &[], true),
            w("01:00", "01:00", &[], false),
            w("24:00", "05:00", &[], false),
            w("1:00", "05:00", &[], false),
            w("01:60", "05:00", &[], false),
            w("01:00", "05:00", &["someday"], false),
            w("aa:bb", "05:00", &[], false),
        ] {
            assert!(bad.rule().is_err(), "{bad:?} accepted");
        }
        assert!(w("22:00", "04:00", &["mon"], true).rule().is_ok());
        assert!(zone("Mars/Olympus", &TimeZone::UTC).is_err());
        assert_eq!(zone("", &TimeZone::UTC).expect("fallback"), TimeZone::UTC);
    }
}
