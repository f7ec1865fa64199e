//! Slows password guessing with `governor`'s keyed GCRA limiters, checked
//! before the (costly) password check:
//!
//! - per client address: every login attempt from it, whatever the name;
//! - per user name from one client address: every attempt on that name.
//!
//! A burst is allowed, then one attempt per period. There is deliberately no
//! limit per user name alone: it would let anyone lock a user out by guessing
//! at their name from elsewhere (the strong-password rule and argon2 make a
//! guess from many addresses slow anyway). An IPv6 client counts by its /64,
//! the block one subscriber usually holds, so fresh addresses do not buy fresh
//! attempts.
//!
//! Memory: a key's state is dropped once it is back to a full burst
//! ([`LoginLimiter::forget_idle`], run by the scheduler, and at most once a
//! second when the tables grow past [`MAX_KEYS`]); past that, new keys are
//! refused rather than stored.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

/// Keys kept before idle ones are dropped; past it after a clean-up, attempts
/// that would add a key are refused.
pub const MAX_KEYS: usize = 200_000;

/// Login attempt limits.
#[derive(Debug, Clone, Copy)]
pub struct LoginLimits {
    /// Attempts in a burst on one user name from one client address.
    pub per_user_burst: u32,
    /// One more such attempt after this long.
    pub per_user_period: Duration,
    /// Attempts in a burst from one client address.
    pub per_client_burst: u32,
    /// One more attempt from it after this long.
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

/// A client address as the limiter counts it: IPv4 whole, IPv6 by its /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientKey(u128);

impl ClientKey {
    /// The key of `ip` (`None`: an unknown peer, all counted together).
    pub fn of(ip: Option<IpAddr>) -> Self {
        match ip {
            None => Self(0),
            Some(IpAddr::V4(v4)) => Self(u128::from(u32::from(v4))),
            Some(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                Some(v4) => Self(u128::from(u32::from(v4))),
                None => Self(u128::from(v6) & !((1u128 << 64) - 1) | 1 << 32),
            },
        }
    }
}

/// The two keyed limiters.
pub struct LoginLimiter {
    pairs: DefaultKeyedRateLimiter<(String, ClientKey)>,
    clients: DefaultKeyedRateLimiter<ClientKey>,
    clock: DefaultClock,
    last_cleanup: Mutex<Option<Instant>>,
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
            pairs: DefaultKeyedRateLimiter::keyed(quota(
                limits.per_user_burst,
                limits.per_user_period,
            )),
            clients: DefaultKeyedRateLimiter::keyed(quota(
                limits.per_client_burst,
                limits.per_client_period,
            )),
            clock: DefaultClock::default(),
            last_cleanup: Mutex::new(None),
        }
    }

    /// Spends one attempt on `user` from `client`. `Err(seconds)` when the
    /// address, or this name from it, is out of attempts.
    pub fn attempt(&self, user: &str, client: Option<IpAddr>) -> Result<(), u64> {
        if self.len() > MAX_KEYS {
            self.clean_up_at_most_every_second();
            if self.len() > MAX_KEYS {
                tracing::warn!(
                    keys = self.len(),
                    "login limiter full; refusing new attempts"
                );
                return Err(1);
            }
        }
        let now = self.clock.now();
        let wait = |d: Duration| d.as_secs() + 1;
        // The address first: one already out of attempts adds no name keys.
        let client = ClientKey::of(client);
        self.clients
            .check_key(&client)
            .map_err(|n| wait(n.wait_time_from(now)))?;
        let name: String = user.chars().take(64).collect::<String>().to_lowercase();
        self.pairs
            .check_key(&(name, client))
            .map_err(|n| wait(n.wait_time_from(now)))
    }

    fn clean_up_at_most_every_second(&self) {
        let mut last = self
            .last_cleanup
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
            return;
        }
        *last = Some(Instant::now());
        drop(last);
        self.forget_idle();
    }

    /// Drops the state of keys that are back to a full burst.
    pub fn forget_idle(&self) {
        self.pairs.retain_recent();
        self.clients.retain_recent();
        self.pairs.shrink_to_fit();
        self.clients.shrink_to_fit();
    }

    /// Keys held (name-and-address pairs + addresses).
    pub fn len(&self) -> usize {
        self.pairs.len() + self.clients.len()
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

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().expect("ip"))
    }

    #[test]
    fn a_name_from_one_address_gets_a_burst_then_waits() {
        let l = LoginLimiter::new(limits());
        for _ in 0..3 {
            l.attempt("Anna", ip("10.0.0.1")).expect("within the burst");
        }
        let wait = l
            .attempt("anna", ip("10.0.0.1"))
            .expect_err("out of attempts");
        assert!((1..=61).contains(&wait), "{wait}");
        // Guessing from elsewhere does not lock anna out of her own address.
        assert!(l.attempt("anna", ip("10.0.0.2")).is_ok());
        // The address runs out too, whatever the names.
        l.attempt("boris", ip("10.0.0.1"))
            .expect("the address's fifth attempt");
        assert!(
            l.attempt("clara", ip("10.0.0.1")).is_err(),
            "the address is out"
        );
    }

    #[test]
    fn an_ipv6_client_counts_by_its_64() {
        let l = LoginLimiter::new(limits());
        for i in 0..5 {
            l.attempt(&format!("u{i}"), ip(&format!("2001:db8:1:2::{i:x}")))
                .expect("within the /64's burst");
        }
        assert!(
            l.attempt("u9", ip("2001:db8:1:2:ffff::1")).is_err(),
            "same /64"
        );
        assert!(
            l.attempt("u9", ip("2001:db8:1:3::1")).is_ok(),
            "another /64"
        );
        assert_ne!(ClientKey::of(ip("0.0.0.1")), ClientKey::of(ip("::1")));
        assert_eq!(
            ClientKey::of(ip("10.1.2.3")),
            ClientKey::of(ip("::ffff:10.1.2.3"))
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
            let _ = l.attempt(&format!("guess{i}"), ip(&format!("10.0.1.{i}")));
        }
        assert_eq!(l.len(), 100);
        std::thread::sleep(Duration::from_millis(20));
        l.forget_idle();
        assert!(l.is_empty(), "{} keys left", l.len());
    }
}
