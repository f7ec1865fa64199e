//! The chain of trust from the coordinator to a till, after TUF's design with
//! two roles: an offline-capable **root** key certifies an **online** key with
//! an expiry, and the online key signs everything a till acts on.
//!
//! ```text
//! pinned root (node config) --RootRotation*--> current root
//!   current root --OnlineKey(serial, not_after)--> online key
//!     online key --Timestamp(device, revision, expires)--> freshness (every poll)
//!     online key --Instructions(device, revision, expires, assignments, settings)
//!     online key --manifests--> packages
//! ```
//!
//! A till checks, in TUF's client order: root rotations (each signed by the
//! root before it, versions consecutive), then the online key's certificate
//! (by the current root, serial never lower than seen, not expired), then the
//! timestamp (its device, revision never lower than acted on, not expired),
//! then the instructions (same device and revision as the timestamp, not
//! expired), and only then manifests (by the certified online key). That
//! defeats: arbitrary instructions (signatures), rollback and replay (revision
//! and serial never go back), freeze (expiry: a till whose newest timestamp
//! expired says so instead of acting), mix-and-match (instructions bound to a
//! device and revision; manifests to the package id an instruction names) and
//! a stolen online key once rotated (serials).
//!
//! Signed documents travel as `{ body, signature }` where `body` is JSON text
//! and `signature` is hex ed25519 over a per-kind domain and the body bytes:
//! the signed bytes travel as they are, nothing is re-serialised. Pure: no
//! clock of its own (callers pass `now`), no IO.

use ed25519_dalek::Signer;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::api::{Assignment, TillSettings};
use crate::id::DeviceId;
use crate::manifest::{PublicKey, SecretKey};

/// Largest signed document accepted (instructions with hundreds of tasks).
pub const MAX_SIGNED_LEN: usize = 1 << 20;
/// Most root rotations a till applies from one answer.
pub const MAX_ROTATIONS: usize = 64;

/// What a signature is over: each kind of document has its own domain, so a
/// signature made for one can never pass as another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Domain {
    /// A new root, signed by the previous one.
    RootRotation,
    /// The online key's certificate, signed by the root.
    OnlineKey,
    /// A till's freshness statement, signed by the online key.
    Timestamp,
    /// A till's instructions, signed by the online key.
    Instructions,
    /// A till proving it holds its device key (login).
    DeviceLogin,
}

impl Domain {
    fn prefix(self) -> &'static [u8] {
        match self {
            Domain::RootRotation => b"tillswarm/root-rotation/v1\0",
            Domain::OnlineKey => b"tillswarm/online-key/v1\0",
            Domain::Timestamp => b"tillswarm/timestamp/v1\0",
            Domain::Instructions => b"tillswarm/instructions/v1\0",
            Domain::DeviceLogin => b"tillswarm/device-login/v1\0",
        }
    }
}

/// Why a document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustError {
    /// Not well-formed (bad JSON, hex, sizes).
    #[error("malformed {0}")]
    Malformed(String),
    /// The signature does not verify with the key that must have made it.
    #[error("{0}: signature does not verify")]
    BadSignature(&'static str),
    /// Signed for another till.
    #[error("instructions for another device")]
    WrongDevice,
    /// Older than what the till already acted on (replay or rollback).
    #[error("{what} {got} is older than {have}, already seen")]
    Rollback {
        /// Which counter.
        what: &'static str,
        /// The document's.
        got: u64,
        /// The till's.
        have: u64,
    },
    /// Past its expiry (freeze).
    #[error("{0} expired")]
    Expired(&'static str),
    /// Root rotations out of order.
    #[error("root rotation {got} does not follow root version {have}")]
    RotationGap {
        /// The rotation's version.
        got: u64,
        /// The till's root version.
        have: u64,
    },
    /// A timestamp and instructions that do not belong together.
    #[error("instructions revision {got} do not match timestamp revision {want}")]
    Mismatch {
        /// The instructions'.
        got: u64,
        /// The timestamp's.
        want: u64,
    },
}

/// A signed document as it travels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signed {
    /// The document, as JSON text (exactly the bytes signed).
    pub body: String,
    /// ed25519 signature, 128 hex digits.
    pub signature: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in text.as_bytes().chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

fn message(domain: Domain, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(domain.prefix().len() + body.len());
    m.extend_from_slice(domain.prefix());
    m.extend_from_slice(body);
    m
}

/// Signs raw bytes in a domain; returns the hex signature.
pub fn sign_bytes(key: &SecretKey, domain: Domain, body: &[u8]) -> String {
    hex(&key.signing_key().sign(&message(domain, body)).to_bytes())
}

/// Whether `signature` (hex) is `key`'s over `body` in `domain`.
pub fn verify_bytes(key: &PublicKey, domain: Domain, body: &[u8], signature: &str) -> bool {
    let Some(sig) = unhex::<64>(signature) else {
        return false;
    };
    let Ok(vk) = ed25519_dalek::VerifyingKey::from_bytes(&key.0) else {
        return false;
    };
    vk.verify_strict(
        &message(domain, body),
        &ed25519_dalek::Signature::from_bytes(&sig),
    )
    .is_ok()
}

impl Signed {
    /// Signs `doc` (as JSON) in `domain`.
    pub fn sign<T: Serialize>(key: &SecretKey, domain: Domain, doc: &T) -> Self {
        // Serialising plain data to JSON cannot fail.
        let body = serde_json::to_string(doc).unwrap_or_default();
        let signature = sign_bytes(key, domain, body.as_bytes());
        Self { body, signature }
    }

    /// The document, if `key` signed it in `domain`.
    pub fn open<T: DeserializeOwned>(
        &self,
        key: &PublicKey,
        domain: Domain,
        what: &'static str,
    ) -> Result<T, TrustError> {
        if self.body.len() > MAX_SIGNED_LEN {
            return Err(TrustError::Malformed(format!("{what}: too large")));
        }
        if !verify_bytes(key, domain, self.body.as_bytes(), &self.signature) {
            return Err(TrustError::BadSignature(what));
        }
        serde_json::from_str(&self.body).map_err(|e| TrustError::Malformed(format!("{what}: {e}")))
    }
}

/// A new root, signed by the root before it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootRotation {
    /// The new root's version (the first root is version 1).
    pub version: u64,
    /// The new root public key.
    pub new_root: PublicKey,
}

/// The root's certificate of the online key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnlineKey {
    /// The version of the root that signed it.
    pub root_version: u64,
    /// Increases with every online key; a till never accepts a lower one.
    pub serial: u64,
    /// The online public key.
    pub key: PublicKey,
    /// Unix seconds after which the certificate is void.
    pub not_after_unix: u64,
}

/// A till's freshness statement, signed at every poll.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timestamp {
    /// The till.
    pub device: DeviceId,
    /// The revision of its current instructions.
    pub revision: u64,
    /// Unix seconds after which the till must not act on it.
    pub expires_unix: u64,
}

/// What a till is to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instructions {
    /// The till.
    pub device: DeviceId,
    /// Increases whenever the till's assignments or settings change.
    pub revision: u64,
    /// Unix seconds when signed.
    pub issued_unix: u64,
    /// Unix seconds after which the till must not act on them.
    pub expires_unix: u64,
    /// Its tasks, each with kind, package, version, time and rollback flag.
    pub assignments: Vec<Assignment>,
    /// Its till type's settings (`autoUpdateTimeout`).
    pub settings: TillSettings,
    /// The tills of its store that may share chunks with it: each one's GUID
    /// and the libp2p peer id it reported over its own authenticated
    /// heartbeat (at most [`MAX_STORE_MEMBERS`]). Empty: no list.
    #[serde(default)]
    pub store_members: Vec<StoreMember>,
    /// Where the till may fetch chunks without the coordinator: a CDN or the
    /// chunk bucket's endpoint, an `http(s)://` URL under which a chunk is
    /// `<first two hex digits>/<hex>`, or `<hex>.zst` when the manifest lists
    /// it as a zstd frame. Chunks are checked against the signed manifest
    /// wherever they come from; the coordinator remains the fallback.
    #[serde(default)]
    pub chunk_base_url: Option<String>,
}

/// Longest [`Instructions::chunk_base_url`], in bytes.
pub const MAX_CHUNK_BASE_URL: usize = 512;

/// Whether `url` can be a [`Instructions::chunk_base_url`]: `http://` or
/// `https://` and a host, printable ASCII without spaces, no query or
/// fragment, no trailing slash, at most [`MAX_CHUNK_BASE_URL`] bytes.
pub fn is_chunk_base_url(url: &str) -> bool {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/'))
        && url.len() <= MAX_CHUNK_BASE_URL
        && url.bytes().all(|b| b.is_ascii_graphic())
        && !url.contains(['?', '#'])
        && !url.ends_with('/')
}

/// Most entries of [`Instructions::store_members`].
pub const MAX_STORE_MEMBERS: usize = 1024;

/// One till of a store, as the coordinator vouches for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreMember {
    /// Its GUID.
    pub device: DeviceId,
    /// Its libp2p peer id (base58 text).
    pub peer_id: String,
    /// Where its store swarm listens, as it reported over its own
    /// authenticated heartbeat (at most [`crate::api::MAX_SWARM_ADDRS`]):
    /// the store's tills dial these besides what mDNS finds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addrs: Vec<std::net::SocketAddr>,
}

/// Everything a till needs to check its instructions from its pinned root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustBundle {
    /// Root rotations since version 1, oldest first.
    pub rotations: Vec<Signed>,
    /// The online key's certificate by the current root.
    pub online_key: Signed,
    /// This poll's freshness statement.
    pub timestamp: Signed,
    /// The instructions, when the till's revision is not current.
    pub instructions: Option<Signed>,
}

/// What a till has accepted so far (it persists this).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustState {
    /// The current root key.
    pub root: PublicKey,
    /// Its version (1 for the pinned one).
    pub root_version: u64,
    /// The online key in force, with its serial and expiry.
    pub online: Option<OnlineKey>,
    /// The revision of the instructions acted on (0: none yet).
    pub revision: u64,
    /// When the newest accepted timestamp expires (unix seconds).
    pub fresh_until_unix: u64,
}

impl TrustState {
    /// The state of a till that knows only its pinned root.
    pub fn pinned(root: PublicKey) -> Self {
        Self {
            root,
            root_version: 1,
            online: None,
            revision: 0,
            fresh_until_unix: 0,
        }
    }

    /// Applies root rotations newer than the current root, each signed by
    /// the root before it; older ones (already applied) are skipped.
    pub fn rotate_root(&mut self, rotations: &[Signed]) -> Result<(), TrustError> {
        if rotations.len() > MAX_ROTATIONS {
            return Err(TrustError::Malformed("too many root rotations".into()));
        }
        let mut next = self.clone();
        for (i, signed) in rotations.iter().enumerate() {
            // Rotation i installs root version i + 2.
            let version = i as u64 + 2;
            if version <= next.root_version {
                continue;
            }
            let r: RootRotation = signed.open(&next.root, Domain::RootRotation, "root rotation")?;
            if r.version != next.root_version + 1 || r.version != version {
                return Err(TrustError::RotationGap {
                    got: r.version,
                    have: next.root_version,
                });
            }
            next.root = r.new_root;
            next.root_version = r.version;
            // An online key certified by a retired root counts no more.
            next.online = None;
        }
        *self = next;
        Ok(())
    }

    /// Accepts the online key's certificate if the current root signed it,
    /// its serial is not below the one held and it has not expired.
    pub fn accept_online_key(
        &mut self,
        signed: &Signed,
        now_unix: u64,
    ) -> Result<PublicKey, TrustError> {
        let cert: OnlineKey =
            signed.open(&self.root, Domain::OnlineKey, "online key certificate")?;
        if cert.root_version != self.root_version {
            return Err(TrustError::BadSignature("online key certificate"));
        }
        if let Some(held) = &self.online {
            if cert.serial < held.serial {
                return Err(TrustError::Rollback {
                    what: "online key serial",
                    got: cert.serial,
                    have: held.serial,
                });
            }
        }
        if now_unix >= cert.not_after_unix {
            return Err(TrustError::Expired("online key certificate"));
        }
        let key = cert.key;
        self.online = Some(cert);
        Ok(key)
    }

    /// The online key in force, if its certificate is accepted and current.
    pub fn online_key(&self, now_unix: u64) -> Option<PublicKey> {
        self.online
            .as_ref()
            .filter(|c| now_unix < c.not_after_unix)
            .map(|c| c.key)
    }

    /// Accepts a timestamp for `device`: by the online key, revision not
    /// below the one acted on, not expired. Records its expiry.
    pub fn accept_timestamp(
        &mut self,
        signed: &Signed,
        device: &DeviceId,
        now_unix: u64,
    ) -> Result<Timestamp, TrustError> {
        let key = self
            .online_key(now_unix)
            .ok_or(TrustError::Expired("online key certificate"))?;
        let ts: Timestamp = signed.open(&key, Domain::Timestamp, "timestamp")?;
        if ts.device != *device {
            return Err(TrustError::WrongDevice);
        }
        if ts.revision < self.revision {
            return Err(TrustError::Rollback {
                what: "revision",
                got: ts.revision,
                have: self.revision,
            });
        }
        if now_unix >= ts.expires_unix {
            return Err(TrustError::Expired("timestamp"));
        }
        self.fresh_until_unix = self.fresh_until_unix.max(ts.expires_unix);
        Ok(ts)
    }

    /// Accepts instructions that match an accepted timestamp: same device and
    /// revision, by the online key, not expired. Moves the revision on.
    pub fn accept_instructions(
        &mut self,
        signed: &Signed,
        timestamp: &Timestamp,
        now_unix: u64,
    ) -> Result<Instructions, TrustError> {
        let key = self
            .online_key(now_unix)
            .ok_or(TrustError::Expired("online key certificate"))?;
        let ins: Instructions = signed.open(&key, Domain::Instructions, "instructions")?;
        if ins.device != timestamp.device {
            return Err(TrustError::WrongDevice);
        }
        if ins.revision != timestamp.revision {
            return Err(TrustError::Mismatch {
                got: ins.revision,
                want: timestamp.revision,
            });
        }
        if ins.revision < self.revision {
            return Err(TrustError::Rollback {
                what: "revision",
                got: ins.revision,
                have: self.revision,
            });
        }
        if now_unix >= ins.expires_unix {
            return Err(TrustError::Expired("instructions"));
        }
        self.revision = ins.revision;
        Ok(ins)
    }

    /// Whether the newest timestamp has expired: the till is cut off from
    /// fresh instructions (withheld, or the coordinator is away for long).
    pub fn is_stale(&self, now_unix: u64) -> bool {
        now_unix >= self.fresh_until_unix
    }

    /// Checks a whole bundle in order and moves the state on; returns the
    /// instructions when the bundle carried new ones. Nothing changes on a
    /// refusal.
    pub fn accept(
        &mut self,
        bundle: &TrustBundle,
        device: &DeviceId,
        now_unix: u64,
    ) -> Result<Option<Instructions>, TrustError> {
        let mut next = self.clone();
        next.rotate_root(&bundle.rotations)?;
        next.accept_online_key(&bundle.online_key, now_unix)?;
        let ts = next.accept_timestamp(&bundle.timestamp, device, now_unix)?;
        let instructions = match &bundle.instructions {
            Some(signed) => Some(next.accept_instructions(signed, &ts, now_unix)?),
            None => None,
        };
        *self = next;
        Ok(instructions)
    }
}

/// What a till signs to prove it holds its device key.
pub fn login_message(device: &DeviceId, challenge: &str, public_key: &PublicKey) -> Vec<u8> {
    format!("{device}\n{challenge}\n{public_key}").into_bytes()
}

#[cfg(test)]
mod tests;
