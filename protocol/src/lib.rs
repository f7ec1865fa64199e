//! The tillswarm vocabulary, shared by the coordinator, the till node and the bench.
//!
//! This crate owns every type that crosses a process boundary and every rule about
//! bytes that both ends must agree on:
//!
//! - [`id`]: typed identifiers (chunk hash, package id, device GUID, store, chain, task);
//! - [`chunking`]: content-defined chunking (FastCDC) plus blake3 hashing in one pass;
//! - [`chunk_codec`]: chunks kept and sent raw or zstd-compressed, decoded under a length cap;
//! - [`manifest`]: the signed package manifest and its canonical encoding;
//! - [`archive`]: what a package archive may hold (checked at upload and unpack);
//! - [`bundle`]: the manual-path bundle (key chain, signed manifest, package) and its check;
//! - [`trust`]: the chain of trust from the coordinator's root key to a till's
//!   instructions (root and online keys, timestamps, signed instructions);
//! - [`version`]: dotted version numbers and their order;
//! - [`wire`]: peer-to-peer messages between tills, with hard size caps;
//! - [`api`]: the JSON bodies exchanged between nodes and the coordinator;
//! - [`operator`]: the JSON bodies of the coordinator's operator API (devices,
//!   groups, packages, tasks, rollouts, WAN reports, accounts, audit, till
//!   types), with typed ids and enums for closed sets of names.
//!
//! With the `schema` feature (off by default, so tills never build it) the
//! API types also derive a JSON Schema (schemars), which the coordinator's
//! tests compare with its hand-written OpenAPI document.
//!
//! Architecture invariant: this crate does no IO of its own. It reads through
//! [`std::io::Read`] where it must and knows nothing of sockets, files, tokio or SQLite,
//! so every rule here is testable on plain bytes.

pub mod api;
pub mod archive;
pub mod bundle;
pub mod chunk_codec;
pub mod chunking;
pub mod clock;
pub mod id;
pub mod manifest;
pub mod operator;
pub mod trust;
pub mod version;
pub mod wire;

/// The JSON Schema crate the `schema` feature derives with, for the checks
/// that use it.
#[cfg(feature = "schema")]
pub use schemars;

pub use chunking::{ChunkInfo, ChunkedFile, Chunker, chunk_reader};
pub use id::{ChainId, ChunkHash, DeviceId, IdError, PackageId, StoreId, TaskId};
pub use manifest::{Manifest, ManifestError, SignedManifest};
pub use version::{Version, VersionError};
