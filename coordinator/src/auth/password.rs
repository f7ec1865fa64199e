//! Operator passwords: argon2id with OWASP's recommended parameters (19 MiB of
//! memory, 2 passes, 1 lane), stored as PHC strings, so the parameters travel
//! with each hash and can be raised later without breaking old ones.
//!
//! Hashing is deliberately slow and memory-hungry: callers run it off the async
//! executor ([`Hasher`]) with at most [`CONCURRENT_HASHES`] at once, so a flood
//! of logins cannot take every core or much memory.

use std::sync::{Arc, LazyLock};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

use crate::error::{Error, Result};

/// Shortest password an operator may choose.
pub const MIN_LEN: usize = 12;
/// Longest password accepted (argon2 takes any length; this bounds the work).
pub const MAX_LEN: usize = 1024;
/// Length of a generated password.
pub const GENERATED_LEN: usize = 24;
/// Password hashes computed at once, at most.
pub const CONCURRENT_HASHES: usize = 2;
/// Longest wait for a hashing slot before the request is turned away (503).
pub const MAX_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Letters and digits without look-alikes (0/O, 1/l/I): 56 symbols, so a
/// generated password carries 24 x log2(56) = 139 bits.
const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";

fn argon2() -> Argon2<'static> {
    // OWASP Password Storage Cheat Sheet: m = 19 MiB, t = 2, p = 1.
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes a password into a PHC string (blocking: tens of milliseconds).
pub fn hash(password: &str) -> Result<String> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt)
        .map_err(|e| Error::Internal(format!("the OS gave no randomness: {e}")))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| Error::Internal(e.to_string()))?;
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Internal(format!("hashing a password: {e}")))
}

/// Whether `password` matches the PHC string `phc` (blocking). A malformed
/// stored hash never matches.
pub fn verify(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => argon2()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// A hash of a password nobody knows: checked against when the user name is
/// unknown, so an unknown name costs as long as a wrong password and the
/// answer's timing does not tell which names exist.
pub static DECOY: LazyLock<String> = LazyLock::new(|| {
    let secret = generate().unwrap_or_else(|_| "decoy password, never used".into());
    hash(&secret).unwrap_or_default()
});

/// A new random password of [`GENERATED_LEN`] characters.
pub fn generate() -> Result<String> {
    let mut out = String::with_capacity(GENERATED_LEN);
    let mut byte = [0u8; 1];
    while out.len() < GENERATED_LEN {
        getrandom::fill(&mut byte)
            .map_err(|e| Error::Internal(format!("the OS gave no randomness: {e}")))?;
        // Rejection sampling keeps every symbol equally likely.
        let limit = (256 / ALPHABET.len()) * ALPHABET.len();
        if (byte[0] as usize) < limit {
            out.push(ALPHABET[byte[0] as usize % ALPHABET.len()] as char);
        }
    }
    Ok(out)
}

/// Refuses a chosen password that is too short or too long.
pub fn check_chosen(password: &str) -> Result<()> {
    let len = password.chars().count();
    if len < MIN_LEN {
        return Err(Error::bad(
            "weak_password",
            format!("a password needs at least {MIN_LEN} characters"),
        ));
    }
    if password.len() > MAX_LEN {
        return Err(Error::bad(
            "invalid_password",
            format!("a password is at most {MAX_LEN} bytes"),
        ));
    }
    Ok(())
}

/// Runs hashing and verification on the blocking pool, a few at a time.
#[derive(Clone)]
pub struct Hasher {
    permits: Arc<Semaphore>,
}

impl Default for Hasher {
    fn default() -> Self {
        Self {
            permits: Arc::new(Semaphore::new(CONCURRENT_HASHES)),
        }
    }
}

impl Hasher {
    /// [`hash`], off the executor.
    pub async fn hash(&self, password: String) -> Result<String> {
        self.run(move || hash(&password)).await?
    }

    /// [`verify`], off the executor; `None` checks against [`DECOY`] and fails.
    pub async fn verify(&self, password: String, phc: Option<String>) -> Result<bool> {
        self.run(move || match phc {
            Some(phc) => verify(&password, &phc),
            None => {
                let _ = verify(&password, &DECOY);
                false
            }
        })
        .await
    }

    /// Runs `f` on the blocking pool once a slot is free. The slot travels
    /// into the blocking task, so a caller that goes away (a client that hung
    /// up) does not free it while the hash still runs; waiting for a slot is
    /// bounded by [`MAX_WAIT`] (then 503).
    async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        let permit = tokio::time::timeout(MAX_WAIT, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| Error::Unavailable("too many logins at once; try again".into()))?
            .map_err(|_| Error::Internal("password hasher closed".into()))?;
        tokio::task::spawn_blocking(move || {
            let _held = permit;
            f()
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only() {
        let h = hash("correct horse battery").expect("hash");
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify("correct horse battery", &h));
        assert!(!verify("correct horse batterY", &h));
        assert!(!verify("correct horse battery", "not a hash"));
        assert_ne!(hash("correct horse battery").expect("hash"), h, "salted");
    }

    #[test]
    fn generated_passwords_are_long_and_distinct() {
        let a = generate().expect("generate");
        let b = generate().expect("generate");
        assert_eq!(a.len(), GENERATED_LEN);
        assert_ne!(a, b);
        assert!(a.bytes().all(|c| ALPHABET.contains(&c)));
        check_chosen(&a).expect("a generated password is acceptable");
    }

    #[test]
    fn chosen_passwords_have_bounds() {
        assert!(check_chosen("short").is_err());
        assert!(check_chosen(&"x".repeat(MAX_LEN + 1)).is_err());
        check_chosen("twelve chars").expect("12 characters");
    }

    #[test]
    fn the_decoy_never_matches_an_empty_password() {
        assert!(!DECOY.is_empty());
        assert!(!verify("", &DECOY));
    }
}
