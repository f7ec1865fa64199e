//! The package manifest: what a package is, chunk by chunk, signed by the coordinator.
//!
//! A till trusts a package only through its manifest, and trusts a manifest only
//! if it verifies against the coordinator key pinned in the till's config. The
//! signature covers the manifest's *canonical encoding* (the exact bytes carried
//! on the wire), so there is nothing to re-serialise and nothing to disagree on:
//!
//! ```text
//! signed manifest = postcard { body: bytes, signature: [u8; 64] }
//! body            = "TSMF" | format version (u16 LE) | postcard(ManifestBodyV3)
//! signature       = ed25519(coordinator key, "tillswarm/manifest/v1\0" | body)
//! ```
//!
//! Format 3 describes the package's *content*: the uncompressed tar, whatever
//! the operator uploaded (`.tar`, `.tar.gz`, `.tar.zst`, `.tar.xz`), cut by
//! [`Chunker::V2`], with each chunk's stored length when it is kept
//! zstd-compressed. It also names the upload (its blake3, size and format) for
//! operators. Formats 1 and 2 (the uploaded file itself, cut by
//! [`Chunker::V1`], no compressed chunks) stay readable and re-encode to the
//! same bytes.
//!
//! Decoding checks every bound before it trusts a length: chunk count, chunk sizes,
//! that the chunks add up to the size, name and version syntax, and that no byte
//! trails the body.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::Signer;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::archive::UploadFormat;
use crate::chunking::{ChunkedFile, Chunker};
use crate::id::{ChunkHash, PackageId};
use crate::version::Version;

/// The manifest format this build writes. It also reads format 1 (before the
/// unpacked size was declared) and 2 (before content chunking).
pub const FORMAT_VERSION: u16 = 3;
/// Most chunks in one manifest (16 GiB at [`Chunker::V2`]'s average).
pub const MAX_CHUNKS: usize = 131_072;
/// Largest package a manifest may describe.
pub const MAX_PACKAGE_SIZE: u64 = 16 * 1024 * 1024 * 1024;
/// Longest package name.
pub const MAX_NAME_LEN: usize = 64;
/// Largest encoded signed manifest; larger input is refused before parsing
/// ([`MAX_CHUNKS`] format 3 chunks take at most 5.5 MiB).
pub const MAX_SIGNED_MANIFEST_BYTES: usize = 8 * 1024 * 1024;

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
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ChunkRef {
    /// blake3 of the chunk's (uncompressed) bytes.
    pub hash: ChunkHash,
    /// Length in bytes (1 ..= the chunker's maximum).
    pub length: u32,
    /// Length of the zstd frame it is stored and sent as, always below
    /// `length`; 0 when it travels raw (always, before format 3).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub zstd_len: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl ChunkRef {
    /// Bytes it takes on the wire and in a chunk store.
    pub fn wire_len(&self) -> u32 {
        if self.zstd_len > 0 {
            self.zstd_len
        } else {
            self.length
        }
    }
}

/// What the operator uploaded, for format 3 manifests (before it, the upload
/// was the content).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Upload {
    /// blake3 of the uploaded file (what `b3sum` prints of the `.tar.gz`).
    pub id: PackageId,
    /// Its size in bytes.
    pub size: u64,
    /// How it was compressed.
    pub format: UploadFormat,
}

/// What a package is. Build one with [`Manifest::new`], sign it with
/// [`SecretKey::sign_manifest`], and trust one only from [`SignedManifest::verify`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Manifest {
    /// Package name (letters, digits, `-`, `_`, `.`), e.g. `ukm5-till`.
    pub name: String,
    /// Package version; tills only move forward unless told to roll back.
    pub version: Version,
    /// Size of the content in bytes: the uncompressed tar (format 3), or the
    /// uploaded file (formats 1 and 2).
    pub size: u64,
    /// blake3 of the content: the package's identity.
    pub package_id: PackageId,
    /// Seconds since the Unix epoch when the coordinator ingested the package.
    pub created_unix: u64,
    /// Chunks in file order.
    pub chunks: Vec<ChunkRef>,
    /// Bytes the archive unpacks to, summed by the coordinator over every
    /// entry at upload: a till refuses to stage a package that would not fit
    /// its disk, and stops unpacking past it. `None` in format 1 manifests.
    pub unpacked_size: Option<u64>,
    /// The uploaded file; `Some` exactly in format 3 manifests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload: Option<Upload>,
    /// The chunker that cut the content.
    #[serde(default = "chunker_v1", skip_serializing_if = "is_v1")]
    pub chunker: Chunker,
}

fn chunker_v1() -> Chunker {
    Chunker::V1
}

fn is_v1(c: &Chunker) -> bool {
    *c == Chunker::V1
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

/// Format 3: the content (an uncompressed tar) cut by a named chunker, the
/// stored zstd length of each chunk (0: raw), and the upload it came from.
#[derive(Serialize, Deserialize)]
struct ManifestBodyV3 {
    name: String,
    version: String,
    created_unix: u64,
    size: u64,
    package_id: [u8; 32],
    upload_size: u64,
    upload_id: [u8; 32],
    upload_format: u8,
    chunker: u8,
    chunks: Vec<([u8; 32], u32, u32)>,
    unpacked_size: u64,
}

impl Manifest {
    /// A format 3 manifest for content cut by `chunker`, with each chunk's
    /// stored zstd length (0: raw) in `zstd_lens`, after checking the limits.
    #[allow(clippy::too_many_arguments)]
    pub fn new_content(
        name: &str,
        version: Version,
        content: &ChunkedFile,
        chunker: Chunker,
        zstd_lens: &[u32],
        created_unix: u64,
        unpacked_size: u64,
        upload: Upload,
    ) -> Result<Self, ManifestError> {
        if zstd_lens.len() != content.chunks.len() {
            return Err(ManifestError::Invalid(format!(
                "{} stored lengths for {} chunks",
                zstd_lens.len(),
                content.chunks.len()
            )));
        }
        let manifest = Self {
            name: name.to_owned(),
            version,
            size: content.size,
            package_id: content.package_id,
            created_unix,
            chunks: content
                .chunks
                .iter()
                .zip(zstd_lens)
                .map(|(c, &zstd_len)| ChunkRef {
                    hash: c.hash,
                    length: c.length,
                    zstd_len,
                })
                .collect(),
            unpacked_size: Some(unpacked_size),
            upload: Some(upload),
            chunker,
        };
        manifest.validate()?;
        Ok(manifest)
    }

    /// A format 2 manifest: the uploaded file itself cut by [`Chunker::V1`],
    /// no compressed chunks. What coordinators wrote before format 3; kept
    /// for tests of old manifests and for fixtures.
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
                    zstd_len: 0,
                })
                .collect(),
            unpacked_size: Some(unpacked_size),
            upload: None,
            chunker: Chunker::V1,
        };
        manifest.validate()?;
        Ok(manifest)
    }

    /// The manifest format its canonical bytes take.
    pub fn format(&self) -> u16 {
        match (self.upload, self.unpacked_size) {
            (Some(_), _) => 3,
            (None, Some(_)) => 2,
            (None, None) => 1,
        }
    }

    /// Bytes of all chunks as stored and sent.
    pub fn wire_size(&self) -> u64 {
        self.chunks.iter().map(|c| u64::from(c.wire_len())).sum()
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
        if self.upload.is_some() && self.unpacked_size.is_none() {
            return Err(ManifestError::Invalid(
                "a format 3 manifest must declare its unpacked size".into(),
            ));
        }
        if self.upload.is_none() && self.chunker != Chunker::V1 {
            return Err(ManifestError::Invalid(
                "formats 1 and 2 are cut by chunker 1 only".into(),
            ));
        }
        let max = self.chunker.max();
        let mut total = 0u64;
        for (i, c) in self.chunks.iter().enumerate() {
            if c.length == 0 || c.length as usize > max {
                return Err(ManifestError::Invalid(format!(
                    "chunk {i} has length {}, outside 1..={max}",
                    c.length
                )));
            }
            if c.zstd_len > 0 && (self.upload.is_none() || c.zstd_len >= c.length) {
                return Err(ManifestError::Invalid(format!(
                    "chunk {i} is stored as {} compressed bytes for {} bytes: \
                     compressed chunks exist only in format 3 and are smaller than their content",
                    c.zstd_len, c.length
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

    /// The canonical bytes the signature covers, in [`Manifest::format`]: a
    /// manifest read from format 1 or 2 encodes to the bytes it was read from.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let chunks = || self.chunks.iter().map(|c| (c.hash.0, c.length)).collect();
        let (format, encoded) = match (self.upload, self.unpacked_size) {
            (Some(upload), unpacked_size) => {
                let body = ManifestBodyV3 {
                    name: self.name.clone(),
                    version: self.version.as_str().to_owned(),
                    created_unix: self.created_unix,
                    size: self.size,
                    package_id: self.package_id.0,
                    upload_size: upload.size,
                    upload_id: upload.id.0,
                    upload_format: upload.format.code(),
                    chunker: self.chunker.code(),
                    chunks: self
                        .chunks
                        .iter()
                        .map(|c| (c.hash.0, c.length, c.zstd_len))
                        .collect(),
                    unpacked_size: unpacked_size.unwrap_or(0),
                };
                (3u16, postcard::to_stdvec(&body))
            }
            (None, Some(unpacked_size)) => {
                let body = ManifestBodyV2 {
                    name: self.name.clone(),
                    version: self.version.as_str().to_owned(),
                    size: self.size,
                    package_id: self.package_id.0,
                    created_unix: self.created_unix,
                    chunks: chunks(),
                    unpacked_size,
                };
                (2, postcard::to_stdvec(&body))
            }
            (None, None) => {
                let body = ManifestBodyV1 {
                    name: self.name.clone(),
                    version: self.version.as_str().to_owned(),
                    size: self.size,
                    package_id: self.package_id.0,
                    created_unix: self.created_unix,
                    chunks: chunks(),
                };
                (1, postcard::to_stdvec(&body))
            }
        };
        let mut out = Vec::with_capacity(128 + self.chunks.len() * 42);
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
        let body = &rest[2..];
        let (manifest, trailing): (Self, &[u8]) = match format {
            1 => {
                let (b, t): (ManifestBodyV1, &[u8]) =
                    postcard::take_from_bytes(body).map_err(malformed)?;
                let chunks = b.chunks.into_iter().map(raw_chunk).collect();
                let m = Self::old(
                    b.name,
                    &b.version,
                    b.size,
                    b.package_id,
                    b.created_unix,
                    chunks,
                    None,
                )?;
                (m, t)
            }
            2 => {
                let (b, t): (ManifestBodyV2, &[u8]) =
                    postcard::take_from_bytes(body).map_err(malformed)?;
                let chunks = b.chunks.into_iter().map(raw_chunk).collect();
                let unpacked = Some(b.unpacked_size);
                let m = Self::old(
                    b.name,
                    &b.version,
                    b.size,
                    b.package_id,
                    b.created_unix,
                    chunks,
                    unpacked,
                )?;
                (m, t)
            }
            3 => {
                let (b, t): (ManifestBodyV3, &[u8]) =
                    postcard::take_from_bytes(body).map_err(malformed)?;
                let format = UploadFormat::from_code(b.upload_format).ok_or_else(|| {
                    ManifestError::Invalid(format!("unknown upload format {}", b.upload_format))
                })?;
                let chunker = Chunker::from_code(b.chunker).ok_or_else(|| {
                    ManifestError::Invalid(format!("unknown chunker {}", b.chunker))
                })?;
                let m = Self {
                    name: b.name,
                    version: parse_version(&b.version)?,
                    size: b.size,
                    package_id: PackageId(b.package_id),
                    created_unix: b.created_unix,
                    chunks: b
                        .chunks
                        .into_iter()
                        .map(|(hash, length, zstd_len)| ChunkRef {
                            hash: ChunkHash(hash),
                            length,
                            zstd_len,
                        })
                        .collect(),
                    unpacked_size: Some(b.unpacked_size),
                    upload: Some(Upload {
                        id: PackageId(b.upload_id),
                        size: b.upload_size,
                        format,
                    }),
                    chunker,
                };
                (m, t)
            }
            other => return Err(ManifestError::UnknownFormat(other)),
        };
        if !trailing.is_empty() {
            return Err(ManifestError::Malformed(format!(
                "{} trailing bytes after the manifest",
                trailing.len()
            )));
        }
        manifest.validate()?;
        Ok(manifest)
    }

    /// A format 1 or 2 manifest from its decoded fields.
    fn old(
        name: String,
        version: &str,
        size: u64,
        package_id: [u8; 32],
        created_unix: u64,
        chunks: Vec<ChunkRef>,
        unpacked_size: Option<u64>,
    ) -> Result<Self, ManifestError> {
        Ok(Self {
            name,
            version: parse_version(version)?,
            size,
            package_id: PackageId(package_id),
            created_unix,
            chunks,
            unpacked_size,
            upload: None,
            chunker: Chunker::V1,
        })
    }
}

fn raw_chunk((hash, length): ([u8; 32], u32)) -> ChunkRef {
    ChunkRef {
        hash: ChunkHash(hash),
        length,
        zstd_len: 0,
    }
}

fn parse_version(text: &str) -> Result<Version, ManifestError> {
    text.parse()
        .map_err(|e: crate::version::VersionError| ManifestError::Invalid(e.to_string()))
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
