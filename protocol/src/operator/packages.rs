//! Uploaded packages as operators see them.

use serde::{Deserialize, Serialize};

use crate::archive::UploadFormat;
use crate::id::PackageId;
use crate::manifest::Manifest;

/// A package as operators see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Package {
    /// blake3 of the content, the uncompressed tar (what `b3sum` prints of
    /// it): the package's identity on tills.
    pub package_id: PackageId,
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Size of the content (the uncompressed tar) in bytes.
    pub size: u64,
    /// blake3 of the uploaded file (what `b3sum` prints of the `.tar.gz`).
    pub upload_id: PackageId,
    /// Size of the uploaded file in bytes.
    pub upload_size: u64,
    /// How the upload was compressed (`tar`, `tar_gz`, `tar_zst`, `tar_xz`);
    /// `null` for packages from before content chunking.
    pub upload_format: Option<UploadFormat>,
    /// Bytes its chunks take as stored and sent (compressed chunks count
    /// their zstd frames): what crosses a store's WAN link once.
    pub wire_size: u64,
    /// Number of chunks.
    pub chunk_count: u64,
    /// When it was uploaded (RFC 3339).
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date-time")))]
    pub created: String,
    /// Unfinished tasks that use it (it cannot be deleted while > 0).
    pub active_tasks: u64,
    /// Whether it is the newest version of its name.
    pub newest: bool,
    /// Who uploaded it (a user or token name); `null` when unknown (uploaded
    /// before this was kept, and its audit row is gone).
    pub uploaded_by: Option<String>,
}

/// A package with its decoded manifest (`GET /api/v1/packages/{package_id}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PackageDetail {
    /// The listing fields.
    #[serde(flatten)]
    pub package: Package,
    /// The verified manifest.
    pub manifest: Manifest,
}
