//! Retry pacing: exponential backoff with full jitter, so a fleet of tills
//! that all lost the coordinator at once does not return all at once, and a
//! refused request is not repeated every tick.

use std::time::Duration;

/// When to try again after failures, doubling from `base` up to `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    /// A backoff starting at `base` and never waiting longer than `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max: max.max(base),
            failures: 0,
        }
    }

    /// The same backoff having already seen `failures` failures in a row.
    pub fn with_failures(mut self, failures: u32) -> Self {
        self.failures = failures;
        self
    }

    /// Records a success: the next failure starts from `base` again.
    pub fn succeeded(&mut self) {
        self.failures = 0;
    }

    /// Records a failure and returns how long to wait before the next try: a
    /// random share (given as `unit` in 0..1) of `base x 2^(failures - 1)`,
    /// capped at `max`, and never under `base / 2`.
    pub fn failed(&mut self, unit: f64) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let ceiling = self
            .base
            .saturating_mul(1u32 << (self.failures - 1).min(20))
            .min(self.max);
        let floor = self.base / 2;
        floor + (ceiling.saturating_sub(floor)).mul_f64(unit.clamp(0.0, 1.0))
    }
}

/// A uniform random number in 0..1 from the OS (0.5 when it has none).
pub fn unit() -> f64 {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_cap_and_reset_on_success() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let waits: Vec<Duration> = (0..10).map(|_| b.failed(1.0)).collect();
        assert_eq!(waits[0], Duration::from_secs(1));
        assert_eq!(waits[1], Duration::from_secs(2));
        assert_eq!(waits[5], Duration::from_secs(32));
        assert_eq!(waits[9], Duration::from_secs(60), "capped");
        assert_eq!(
            b.failed(0.0),
            Duration::from_millis(500),
            "never under base / 2"
        );
        b.succeeded();
        assert_eq!(b.failed(1.0), Duration::from_secs(1), "from base again");
    }

    #[test]
    fn jitter_spreads_a_fleet() {
        let waits: Vec<Duration> = (0..200)
            .map(|_| {
                let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
                for _ in 0..5 {
                    b.failed(unit());
                }
                b.failed(unit())
            })
            .collect();
        let min = waits.iter().min().copied().unwrap_or_default();
        let max = waits.iter().max().copied().unwrap_or_default();
        assert!(max - min > Duration::from_secs(20), "{min:?}..{max:?}");
        assert!(max <= Duration::from_secs(32));
    }
}
