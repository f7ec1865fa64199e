//! The seed's manual path: support hands out a package, someone puts it in the
//! till's `<update_root>/update/` folder, and a few minutes later the till
//! offers it to the cashier. This module scans that folder.
//!
//! What is offered:
//!
//! - a signed **bundle** (`*.tsb`, from `tillswarm package export`): checked
//!   like the coordinator's answers (key chain from the pinned root, signed
//!   manifest, every chunk), its chunks kept, its package staged as a verified
//!   `update/<version>/`; the file is then renamed `*.tsb.staged`, or
//!   `*.tsb.refused` with a warning to the coordinator;
//! - a loose folder `update/<version>/` holding an `up.sh` (or one tar holding
//!   one), which nothing signed: only with `allow_unsigned_dropin`. Otherwise
//!   it is refused once: a [`REFUSED_MARKER`] file in it says why, and the
//!   coordinator hears of it.
//!
//! A folder is never a candidate when its name is not a version newer than the
//! running one, when it is hidden (`.1.2.partial` is ours, in progress), or when
//! the node staged it (it carries [`STAGED_MARKER`]).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tillswarm_protocol::bundle::{self, BundleError};
use tillswarm_protocol::trust::TrustState;
use tillswarm_protocol::{PackageId, Version};

use crate::chunks::ChunkStore;
use crate::error::{Error, Result};
use crate::stage::{self, STAGED_MARKER};
use crate::state::State;

/// The file put in a loose folder that was refused.
pub const REFUSED_MARKER: &str = "TILLSWARM-REFUSED.txt";

/// A bundle modified this recently may still be being copied: it waits.
const SETTLE: Duration = Duration::from_secs(5);

/// What a scan works with.
pub struct Scan<'a> {
    /// `<update_root>/update`.
    pub update_dir: &'a Path,
    /// The version the till runs.
    pub installed: Option<&'a Version>,
    /// The till's trust in the coordinator's keys (not changed by a bundle).
    pub trust: &'a TrustState,
    /// Unix seconds now.
    pub now_unix: u64,
    /// The till's chunk store.
    pub store: &'a ChunkStore,
    /// Free bytes on the update volume less the reserve, when known.
    pub room: Option<u64>,
    /// Whether loose, unsigned folders may be offered.
    pub allow_unsigned: bool,
    /// Where the offer is recorded.
    pub state: &'a State,
}

impl Scan<'_> {
    /// Stages what was dropped in, offers the newest newer package as the
    /// drop-in task, and returns warnings for the coordinator. Blocking: run
    /// it off the executor.
    pub fn run(&self) -> Result<Vec<String>> {
        let mut warnings = Vec::new();
        let mut candidates: Vec<(Version, PackageId)> = Vec::new();
        let mut settled: Vec<PathBuf> = Vec::new();
        for path in self.bundles() {
            match self.take_bundle(&path) {
                Ok(found) => {
                    candidates.extend(found);
                    settled.push(path);
                }
                Err(e) => {
                    let name = file_name(&path);
                    tracing::warn!(bundle = %name, error = %e, "refused a dropped-in bundle");
                    warnings.push(format!("dropin_refused {name}: {e}"));
                    let _ = fs::rename(&path, with_suffix(&path, "refused"));
                }
            }
        }
        for (version, dir) in self.loose_folders() {
            if dir.join(REFUSED_MARKER).exists() {
                continue;
            }
            let outcome = if self.allow_unsigned {
                self.take_loose(&dir)
            } else {
                Err("nothing signed it; drop the signed bundle (.tsb, from `tillswarm package export`) into update/ instead".into())
            };
            match outcome {
                Ok(Some(id)) => candidates.push((version, id)),
                Ok(None) => {}
                Err(why) => {
                    tracing::warn!(folder = %dir.display(), reason = %why, "refused a drop-in folder");
                    let _ = fs::write(
                        dir.join(REFUSED_MARKER),
                        format!("tillswarm did not offer this folder: {why}\n"),
                    );
                    let kind = if self.allow_unsigned {
                        "dropin_refused"
                    } else {
                        "unsigned_dropin_refused"
                    };
                    warnings.push(format!("{kind} {version}: {why}"));
                }
            }
        }
        let newest = candidates
            .into_iter()
            .filter(|(v, _)| self.installed.is_none_or(|i| v > i))
            .max_by(|a, b| a.0.cmp(&b.0));
        if let Some((version, id)) = newest {
            if self.state.offer_drop_in_blocking(&version, &id)? {
                tracing::info!(%version, "package dropped into the update folder; offering it");
            }
        }
        // Renamed only once the offer is recorded: a crash before re-reads it.
        for path in settled {
            let _ = fs::rename(&path, with_suffix(&path, "staged"));
        }
        Ok(warnings)
    }

    /// The `*.tsb` regular files (not links) that stopped changing.
    fn bundles(&self) -> Vec<PathBuf> {
        let Ok(entries) = fs::read_dir(self.update_dir) else {
            return Vec::new();
        };
        let mut out: Vec<PathBuf> = entries
            .flatten()
            .filter(|e| {
                e.path().extension().and_then(|x| x.to_str()) == Some(bundle::EXTENSION)
                    && e.metadata().is_ok_and(|m| {
                        m.is_file()
                            && m.modified()
                                .ok()
                                .and_then(|t| SystemTime::now().duration_since(t).ok())
                                .is_some_and(|age| age >= SETTLE)
                    })
            })
            .map(|e| e.path())
            .collect();
        out.sort();
        out
    }

    /// Checks a bundle, keeps its chunks and stages its package. `None` when
    /// it holds a version not newer than the running one.
    fn take_bundle(&self, path: &Path) -> Result<Option<(Version, PackageId)>> {
        let file = fs::File::open(path)?;
        let length = file.metadata()?.len();
        if self.room.is_some_and(|room| length > room) {
            return Err(Error::Verify(format!(
                "the bundle holds {length} bytes, more than the room on this till"
            )));
        }
        let manifest = bundle::read(
            std::io::BufReader::with_capacity(1 << 16, file),
            self.trust,
            self.now_unix,
            |chunk, bytes| {
                self.store
                    .put(&chunk.hash, bytes)
                    .map_err(std::io::Error::other)
            },
        )
        .map_err(|e| match e {
            BundleError::Io(e) => Error::Io(e),
            other => Error::Verify(other.to_string()),
        })?;
        if self.installed.is_some_and(|i| manifest.version <= *i) {
            return Err(Error::Verify(format!(
                "{} is not newer than the running version",
                manifest.version
            )));
        }
        let room = self.room.map(|r| r.saturating_sub(length));
        let cap = stage::unpack_cap(&manifest, room)?;
        stage::stage(&manifest, self.store, self.update_dir, cap)?;
        Ok(Some((manifest.version.clone(), manifest.package_id)))
    }

    /// Visible folders named by a version newer than the running one that the
    /// node did not stage.
    fn loose_folders(&self) -> Vec<(Version, PathBuf)> {
        let Ok(entries) = fs::read_dir(self.update_dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|entry| {
                let version: Version = entry.file_name().to_str()?.parse().ok()?;
                let dir = entry.path();
                let foreign = dir.is_dir() && !dir.join(STAGED_MARKER).exists();
                let newer = self.installed.is_none_or(|i| version > *i);
                (foreign && newer).then_some((version, dir))
            })
            .collect()
    }

    /// A loose folder's identity (blake3 of its `up.sh`); a lone `.tar` or
    /// `.tar.gz` in it is unpacked first, under the package archive rules and
    /// within the room on the till, all or nothing. `None`: not a package
    /// (yet).
    fn take_loose(&self, dir: &Path) -> std::result::Result<Option<PackageId>, String> {
        if !dir.join("up.sh").is_file() {
            let Ok(entries) = fs::read_dir(dir) else {
                return Ok(None);
            };
            let archives: Vec<_> = entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    let n = p.to_string_lossy();
                    n.ends_with(".tar") || n.ends_with(".tar.gz") || n.ends_with(".tgz")
                })
                .collect();
            let [archive] = archives.as_slice() else {
                return Ok(None);
            };
            unpack_into(archive, dir, self.room.unwrap_or(u64::MAX)).map_err(|e| e.to_string())?;
        }
        Ok(fs::read(dir.join("up.sh"))
            .ok()
            .map(|script| PackageId::of(&script)))
    }
}

/// Unpacks `archive` into a hidden sibling of `dir`, then moves what came
/// out into `dir`: a refused archive leaves nothing behind.
fn unpack_into(archive: &Path, dir: &Path, cap: u64) -> Result<()> {
    let name = dir.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.with_file_name(format!(".{name}.unpacking"));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp)?;
    let unpacked = fs::File::open(archive)
        .map_err(Error::from)
        .and_then(|mut f| stage::unpack(&mut f, &tmp, cap, true, None));
    let moved = unpacked.and_then(|()| {
        for entry in fs::read_dir(&tmp)? {
            let entry = entry?;
            fs::rename(entry.path(), dir.join(entry.file_name()))?;
        }
        Ok(())
    });
    let _ = fs::remove_dir_all(&tmp);
    moved
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".");
    name.push(suffix);
    PathBuf::from(name)
}

#[cfg(test)]
mod tests;
