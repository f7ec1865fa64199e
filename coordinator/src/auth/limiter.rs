//! Slows password guessing: login attempts are rate-limited per user name and
//! per client address with `governor`'s keyed GCRA limiters. Each attempt spends
//! one cell of both; a burst is allowed, then one attempt per period. A refused
//! attempt never reaches the (costly) password check.
//!
//! Memory: a key's state is dropped once it is back to a full burst
//! ([`LoginLimiter::forget_idle`], run by the scheduler and whenever the tables
//! grow large), so guessed user names cannot grow it without bound.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

/// Keys kept before idle ones are dropped on the spot.
const MAX_KEYS: usize = 100_000;

/// Login attempt limits.
#[derive(Debug, Clone, Copy)]
pub struct LoginLimits {
    /// Attempts in a burst for one user name.
    pub per_user_burst: u32,
    /// One more attempt per user name after this long.
    pub per_user_period: Duration,
    /// Attempts in a burst from one client address.
    pub per_client_burst: u32,
    /// One more attempt per client address after this long.
    pub per_client_period: Duration,
}

impl Default for LoginLimits {
    fn default() -> Self {
        Self {
            per_user_burst: 5,
            per_user_period: Duration::from_secs(12),
            per_client_burst: 30,
            per_client_period: Duration::from_secs(2),
        }
    }
}

/// The two keyed limiters.
pub struct LoginLimiter {
    users: DefaultKeyedRateLimiter<String>,
    clients: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
}

fn quota(burst: u32, period: Duration) -> Quota {
    let burst = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(period.max(Duration::from_millis(1)))
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(burst)
}

impl LoginLimiter {
    /// Limiters with the given limits.
    pub fn new(limits: LoginLimits) -> Self {
        Self {
            users: DefaultKeyedRateLimiter::keyed(quota(
                limits.per_user_burst,
                limits.per_user_period,
            )),
            clients: DefaultKeyedRateLimiter::keyed(quota(
                limits.per_client_burst,
                limits.per_client_period,
            )),
            clock: DefaultClock::default(),
        }
    }

    /// Spends one attempt for `user` from `client`. `Err(seconds)` when either
    /// is out of attempts: try again after that many seconds.
    pub fn attempt(&self, user: &str, client: Option<IpAddr>) -> Result<(), u64> {
        if self.users.len() + self.clients.len() > MAX_KEYS {
            self.forget_idle();
        }
        let now = self.clock.now();
        let wait = |d: Duration| d.as_secs() + 1;
        // The user first: an attempt refused for the name spends nothing of
        // the address's allowance.
        let key: String = user.chars().take(64).collect::<String>().to_lowercase();
        self.users
            .check_key(&key)
            .map_err(|n| wait(n.wait_time_from(now)))?;
        if let Some(ip) = client {
            self.clients
                .check_key(&ip)
                .map_err(|n| wait(n.wait_time_from(now)))?;
        }
        Ok(())
    }

    /// Drops the state of keys that are back to a full burst.
    pub fn forget_idle(&self) {
        self.users.retain_recent();
        self.clients.retain_recent();
        self.users.shrink_to_fit();
        self.clients.shrink_to_fit();
    }

    /// Keys held (user names + client addresses).
    pub fn len(&self) -> usize {
        self.users.len() + self.clients.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> LoginLimits {
        LoginLimits {
            per_user_burst: 3,
            per_user_period: Duration::from_secs(60),
            per_client_burst: 5,
            per_client_period: Duration::from_secs(60),
        }
    }

    #[test]
    fn a_user_name_gets_a_burst_then_waits() {
        let l = LoginLimiter::new(limits());
        let ip: IpAddr = "10.0.0.1".parse().expect("ip");
        for _ in 0..3 {
            l.attempt("Anna", Some(ip)).expect("within the burst");
        }
        let wait = l.attempt("anna", Some(ip)).expect_err("out of attempts");
        assert!((1..=61).contains(&wait), "{wait}");
        // Another name from the same address still may, until the address runs
        // out (anna's refused attempt spent none of it).
        l.attempt("boris", Some(ip)).expect("other user");
        l.attempt("clara", Some(ip))
            .expect("the address's fifth attempt");
        assert!(
            l.attempt("dora", Some(ip)).is_err(),
            "the address is out too"
        );
        assert!(
            l.attempt("dora", Some("10.0.0.2".parse().expect("ip")))
                .is_ok()
        );
    }

    #[test]
    fn idle_keys_are_forgotten() {
        let l = LoginLimiter::new(LoginLimits {
            per_user_period: Duration::from_millis(1),
            per_client_period: Duration::from_millis(1),
            ..limits()
        });
        for i in 0..50 {
            let _ = l.attempt(&format!("guess{i}"), None);
        }
        assert_eq!(l.len(), 50);
        std::thread::sleep(Duration::from_millis(20));
        l.forget_idle();
        assert!(l.is_empty(), "{} keys left", l.len());
    }
}
