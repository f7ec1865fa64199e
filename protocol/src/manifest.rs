//! The package manifest: what a package is, chunk by chunk, signed by the coordinator.
//!
//! A till trusts a package only through its manifest, and trusts a manifest only
//! if it verifies against the coordinator key pinned in the till's config. The
//! signature covers the manifest's *canonical encoding* (the exact bytes carried
//! on the wire), so there is nothing to re-serialise and nothing to disagree on:
//!
//! ```text
//! signed manifest = postcard { body: bytes, signature: [u8; 64] }
//! body            = "TSMF" | format version (u16 LE) | postcard(ManifestBodyV2)
//! signature       = ed25519(coordinator key, "tillswarm/manifest/v1\0" | body)
//! ```
//!
//! Decoding checks every bound before it trusts a length: chunk count, chunk sizes,
//! that the chunks add up to the size, name and version syntax, and that no byte
//! trails the body.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::Signer;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::chunking::{ChunkedFile, MAX_CHUNK};
use crate::id::{ChunkHash, PackageId};
use crate::version::Version;

/// The manifest format this build writes. It also reads format 1 (before the
/// unpacked size was declared).
pub const FORMAT_VERSION: u16 = 2;
/// Most chunks in one manifest (64 GiB at the average chunk size).
pub const MAX_CHUNKS: usize = 65_536;
/// Largest package a manifest may describe.
pub const MAX_PACKAGE_SIZE: u64 = 16 * 1024 * 1024 * 1024;
/// Longest package name.
pub const MAX_NAME_LEN: usize = 64;
/// Largest encoded signed manifest; larger input is refused before parsing.
pub const MAX_SIGNED_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

const MAGIC: &[u8; 4] = b"TSMF";
const SIGNING_DOMAIN: &[u8] = b"tillswarm/manifest/v1\0";

/// Why a manifest, key or signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// The bytes are not a manifest (bad magic, truncated, trailing bytes, bad field).
    #[error("malformed manifest: {0}")]
    Malformed(String),
    /// Written by a newer (or unknown) format.
    #[error(
        "unknown manifest format version {0} (this build reads versions 1 to {FORMAT_VERSION})"
    )]
    UnknownFormat(u16),
    /// The signature does not verify with the pinned key.
    #[error("manifest signature does not verify with the pinned coordinator key")]
    BadSignature,
    /// Well-formed but violates a limit or an internal consistency rule.
    #[error("invalid manifest: {0}")]
    Invalid(String),
    /// A key in text form could not be parsed.
    #[error("invalid key: {0}")]
    BadKey(String),
}

/// One chunk as the manifest lists it; offsets follow from the order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    /// blake3 of the chunk.
    pub hash: ChunkHash,
    /// Length in bytes (1 ..= [`MAX_CHUNK`]).
    pub length: u32,
}

/// What a package is. Build one with [`Manifest::new`], sign it with
/// [`SecretKey::sign_manifest`], and trust one only from [`SignedManifest::verify`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Package name (letters, digits, `-`, `_`, `.`), e.g. `ukm5-till`.
    pub name: String,
    /// Package version; tills only move forward unless told to roll back.
    pub version: Version,
    /// Size of the package file in bytes.
    pub size: u64,
    /// blake3 of the whole file: the package's identity.
    pub package_id: PackageId,
    /// Seconds since the Unix epoch when the coordinator ingested the package.
    pub created_unix: u64,
    /// Chunks in file order.
    pub chunks: Vec<ChunkRef>,
    /// Bytes the archive unpacks to, summed by the coordinator over every
    /// entry at upload: a till refuses to stage a package that would not fit
    /// its disk, and stops unpacking past it. `None` in format 1 manifests.
    pub unpacked_size: Option<u64>,
}

/// The canonical body of format 1. Field order is the encoding: never
/// reorder, only add a new format version.
#[derive(Serialize, Deserialize)]
struct ManifestBodyV1 {
    name: String,
    version: String,
    size: u64,
    package_id: [u8; 32],
    created_unix: u64,
    chunks: Vec<([u8; 32], u32)>,
}

/// Format 2: format 1 plus the unpacked size.
#[derive(Serialize, Deserialize)]
struct ManifestBodyV2 {
    name: String,
    version: String,
    size: u64,
    package_id: [u8; 32],
    created_unix: u64,
    chunks: Vec<([u8; 32], u32)>,
    unpacked_size: u64,
}

impl Manifest {
    /// A manifest for a chunked file, after checking the limits.
    pub fn new(
        name: &str,
        version: Version,
        file: &ChunkedFile,
        created_unix: u64,
        unpacked_size: u64,
    ) -> Result<Self, ManifestError> {
        let manifest = Self {
            name: name.to_owned(),
            version,
            size: file.size,
            package_id: file.package_id,
            created_unix,
            chunks: file
                .chunks
                .iter()
                .map(|c| ChunkRef {
                    hash: c.hash,
                    length: c.length,
                })
                .collect(),
            unpacked_size: Some(unpacked_size),
        };
        manifest.validate()?;
        Ok(manifest)
    }

    /// Checks limits and consistency; every decoded manifest passes through here.
    pub fn validate(&self) -> Result<(), ManifestError> {
        validate_name(&self.name)?;
        if self.size > MAX_PACKAGE_SIZE {
            return Err(ManifestError::Invalid(format!(
                "package size {} exceeds the limit of {MAX_PACKAGE_SIZE} bytes",
                self.size
            )));
        }
        if self.chunks.len() > MAX_CHUNKS {
            return Err(ManifestError::Invalid(format!(
                "{} chunks exceed the limit of {MAX_CHUNKS}",
                self.chunks.len()
            )));
        }
        let mut total = 0u64;
        for (i, c) in self.chunks.iter().enumerate() {
            if c.length == 0 || c.length as usize > MAX_CHUNK {
                return Err(ManifestError::Invalid(format!(
                    "chunk {i} has length {}, outside 1..={MAX_CHUNK}",
                    c.length
                )));
            }
            total += u64::from(c.length);
        }
        if total != self.size {
            return Err(ManifestError::Invalid(format!(
                "chunks add up to {total} bytes but the package size is {}",
                self.size
            )));
        }
        Ok(())
    }

    /// Offsets of each chunk in the file, in order.
    pub fn chunk_offsets(&self) -> impl Iterator<Item = (u64, &ChunkRef)> {
        self.chunks.iter().scan(0u64, |at, c| {
            let here = *at;
            *at += u64::from(c.length);
            Some((here, c))
        })
    }

    /// The canonical bytes the signature covers: format 2, or format 1 for a
    /// manifest without an unpacked size (one read from format 1).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let chunks = self.chunks.iter().map(|c| (c.hash.0, c.length)).collect();
        let (format, encoded) = match self.unpacked_size {
            Some(unpacked_size) => {
                let body = ManifestBodyV2 {
                    name: self.name.clone(),
                    version: self.version.as_str().to_owned(),
                    size: self.size,
                    package_id: self.package_id.0,
                    created_unix: self.created_unix,
                    chunks,
                    unpacked_size,
                };
                (FORMAT_VERSION, postcard::to_stdvec(&body))
            }
            None => {
                let body = ManifestBodyV1 {
                    name: self.name.clone(),
                    version: self.version.as_str().to_owned(),
                    size: self.size,
                    package_id: self.package_id.0,
                    created_unix: self.created_unix,
                    chunks,
                };
                (1, postcard::to_stdvec(&body))
            }
        };
        let mut out = Vec::with_capacity(64 + self.chunks.len() * 37);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&format.to_le_bytes());
        // Serialising plain owned data into a Vec cannot fail.
        out.extend_from_slice(&encoded.unwrap_or_default());
        out
    }

    /// Parses canonical bytes (no signature check: use [`SignedManifest::verify`]).
    fn from_canonical_bytes(bytes: &[u8]) -> Result<Self, ManifestError> {
        let rest = bytes
            .strip_prefix(MAGIC)
            .ok_or_else(|| ManifestError::Malformed("missing TSMF magic".into()))?;
        if rest.len() < 2 {
            return Err(ManifestError::Malformed(
                "truncated before format version".into(),
            ));
        }
        let format = u16::from_le_bytes([rest[0], rest[1]]);
        let malformed = |e: postcard::Error| ManifestError::Malformed(e.to_string());
        let (body, unpacked_size, trailing): (ManifestBodyV1, Option<u64>, &[u8]) = match format {
            1 => {
                let (b, t) = postcard::take_from_bytes(&rest[2..]).map_err(malformed)?;
                (b, None, t)
            }
            2 => {
                let (b, t): (ManifestBodyV2, &[u8]) =
                    postcard::take_from_bytes(&rest[2..]).map_err(malformed)?;
                let v1 = ManifestBodyV1 {
                    name: b.name,
                    version: b.version,
                    size: b.size,
                    package_id: b.package_id,
                    created_unix: b.created_unix,
                    chunks: b.chunks,
                };
                (v1, Some(b.unpacked_size), t)
            }
            other => return Err(ManifestError::UnknownFormat(other)),
        };
        if !trailing.is_empty() {
            return Err(ManifestError::Malformed(format!(
                "{} trailing bytes after the manifest",
                trailing.len()
            )));
        }
        let version = body
            .version
            .parse()
            .map_err(|e: crate::version::VersionError| ManifestError::Invalid(e.to_string()))?;
        let manifest = Self {
            name: body.name,
            version,
            size: body.size,
            package_id: PackageId(body.package_id),
            created_unix: body.created_unix,
            chunks: body
                .chunks
                .into_iter()
                .map(|(hash, length)| ChunkRef {
                    hash: ChunkHash(hash),
                    length,
                })
                .collect(),
            unpacked_size,
        };
        manifest.validate()?;
        Ok(manifest)
    }
}

/// Checks a package name: 1 to 64 of letters, digits, `-`, `_`, `.`.
pub fn validate_name(name: &str) -> Result<(), ManifestError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(ManifestError::Invalid(format!(
            "package name must be 1 to {MAX_NAME_LEN} characters of letters, digits, '-', '_' or '.', got {:?}",
            name.chars().take(80).collect::<String>()
        )))
    }
}

/// A manifest's canonical bytes with the coordinator's signature over them.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedManifest {
    /// Canonical manifest bytes.
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    /// ed25519 signature over the signing domain and `body`.
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

impl fmt::Debug for SignedManifest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedManifest")
            .field("body_len", &self.body.len())
            .finish_non_exhaustive()
    }
}

impl SignedManifest {
    /// The transportable encoding (what the coordinator serves and tills store).
    pub fn to_bytes(&self) -> Vec<u8> {
        postcard::to_stdvec(self).unwrap_or_default()
    }

    /// Parses the transportable encoding, refusing oversized input up front.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ManifestError> {
        if bytes.len() > MAX_SIGNED_MANIFEST_BYTES {
            return Err(ManifestError::Malformed(format!(
                "{} bytes exceed the limit of {MAX_SIGNED_MANIFEST_BYTES}",
                bytes.len()
            )));
        }
        let (signed, trailing): (Self, &[u8]) = postcard::take_from_bytes(bytes)
            .map_err(|e| ManifestError::Malformed(e.to_string()))?;
        if !trailing.is_empty() {
            return Err(ManifestError::Malformed(
                "trailing bytes after the signed manifest".into(),
            ));
        }
        Ok(signed)
    }

    /// Decodes and validates the body without checking the signature. Only for
    /// the coordinator re-signing manifests from its own database after a key
    /// rotation: a till never calls it (use [`SignedManifest::verify`]).
    pub fn body_unverified(&self) -> Result<Manifest, ManifestError> {
        Manifest::from_canonical_bytes(&self.body)
    }

    /// Checks the signature with the pinned key, then decodes and validates the body.
    /// This is the only way a till obtains a [`Manifest`] it may act on.
    pub fn verify(&self, key: &PublicKey) -> Result<Manifest, ManifestError> {
        let signature = ed25519_dalek::Signature::from_slice(&self.signature)
            .map_err(|_| ManifestError::BadSignature)?;
        let verifying = ed25519_dalek::VerifyingKey::from_bytes(&key.0)
            .map_err(|_| ManifestError::BadKey("not a valid ed25519 public key".into()))?;
        let mut message = Vec::with_capacity(SIGNING_DOMAIN.len() + self.body.len());
        message.extend_from_slice(SIGNING_DOMAIN);
        message.extend_from_slice(&self.body);
        verifying
            .verify_strict(&message, &signature)
            .map_err(|_| ManifestError::BadSignature)?;
        Manifest::from_canonical_bytes(&self.body)
    }
}

/// The coordinator's signing key. Keep it secret: whoever holds it can make tills
/// install anything.
pub struct SecretKey(ed25519_dalek::SigningKey);

impl SecretKey {
    /// A key from 32 secret random bytes (the caller provides the randomness, so
    /// this crate stays free of IO).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self(ed25519_dalek::SigningKey::from_bytes(&seed))
    }

    /// The key itself, for the other signatures of this crate.
    pub(crate) fn signing_key(&self) -> &ed25519_dalek::SigningKey {
        &self.0
    }

    /// The 32 secret bytes, for storing the key.
    pub fn to_seed(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The matching public key, to pin on tills.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key().to_bytes())
    }

    /// Signs a manifest's canonical encoding.
    pub fn sign_manifest(&self, manifest: &Manifest) -> SignedManifest {
        let body = manifest.canonical_bytes();
        let mut message = Vec::with_capacity(SIGNING_DOMAIN.len() + body.len());
        message.extend_from_slice(SIGNING_DOMAIN);
        message.extend_from_slice(&body);
        let signature = self.0.sign(&message).to_bytes().to_vec();
        SignedManifest { body, signature }
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey(public {})", self.public())
    }
}

/// The coordinator's public key as pinned on tills; text form is 64 hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(pub [u8; 32]);

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl FromStr for PublicKey {
    type Err = ManifestError;
    fn from_str(s: &str) -> Result<Self, ManifestError> {
        let hash: ChunkHash = s
            .trim()
            .parse()
            .map_err(|_| ManifestError::BadKey("expected 64 hex characters".into()))?;
        ed25519_dalek::VerifyingKey::from_bytes(&hash.0)
            .map_err(|_| ManifestError::BadKey("not a valid ed25519 public key".into()))?;
        Ok(Self(hash.0))
    }
}

impl Serialize for PublicKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
