//! Staging version N+1 from the trees this till already staged (N): a file
//! whose bytes, size, mode and time are unchanged is hard-linked from N's
//! tree instead of written again, so a 10% delta writes about 10% of the tree.
//!
//! Nothing of N is trusted. Its files are opened beneath its folder without
//! following any symbolic link (`openat2` with `RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS`), and a candidate is linked only after every byte of
//! it compared equal to the entry streaming out of N+1's verified content; the
//! link names the very inode that was compared (`/proc/self/fd`). A file
//! that differs is written whole, its equal prefix copied from the candidate.
//!
//! A linked file shares its inode with N's tree: staged trees are read-only
//! (an `up.sh` that edits its own files in place would change N's too).

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::{Mode, SFlag, fchmod, fstat, fstatat, futimens};
use nix::sys::time::TimeSpec;
use nix::unistd::linkat;
use tillswarm_protocol::Version;

use super::{STAGED_MARKER, read_full};

/// Most earlier trees searched for a file.
const MAX_SEEDS: usize = 2;
/// Bytes compared (and, after a difference, copied) at a time.
const PIECE: usize = 128 * 1024;

/// What reuse did while staging one tree.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReuseStats {
    /// Files hard-linked from an earlier tree.
    pub files_linked: u64,
    /// Their bytes.
    pub bytes_linked: u64,
    /// Files written with a prefix copied from an earlier tree's file.
    pub files_patched: u64,
}

/// The staged trees a new staging may take files from, and its own folder.
pub struct Reuse {
    seeds: Vec<OwnedFd>,
    partial: OwnedFd,
    /// What was reused so far.
    pub stats: ReuseStats,
}

fn beneath(dir: impl AsFd, path: &Path, flags: OFlag) -> nix::Result<OwnedFd> {
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
    openat2(dir, path, how)
}

impl Reuse {
    /// The staged trees under `update_dir` (those with a staging marker, not
    /// `partial` or hidden), newest version first, at most [`MAX_SEEDS`].
    /// `None` when there are none or the kernel lacks `openat2`.
    pub fn open(update_dir: &Path, partial: &Path) -> Option<Self> {
        let mut found: Vec<(Version, PathBuf)> = std::fs::read_dir(update_dir)
            .ok()?
            .filter_map(|e| {
                let e = e.ok()?;
                let name = e.file_name().into_string().ok()?;
                let version: Version = name.parse().ok()?;
                let dir = e.path();
                dir.join(STAGED_MARKER).is_file().then_some((version, dir))
            })
            .collect();
        found.sort_by(|a, b| b.0.cmp(&a.0));
        let seeds: Vec<OwnedFd> = found
            .iter()
            .take(MAX_SEEDS)
            .filter_map(|(_, dir)| File::open(dir).ok().map(OwnedFd::from))
            .collect();
        if seeds.is_empty() {
            return None;
        }
        let partial = File::open(partial).ok().map(OwnedFd::from)?;
        // Probe openat2 once (Linux 5.6+); without it, no reuse.
        beneath(&partial, Path::new("."), OFlag::O_PATH | OFlag::O_DIRECTORY).ok()?;
        Some(Self {
            seeds,
            partial,
            stats: ReuseStats::default(),
        })
    }

    /// Places the regular file at `path` (relative, already checked by the
    /// archive rules) from an earlier tree when one holds a candidate: same
    /// size, mode and time. Returns false, without reading `data`, when there
    /// is none or the folder it goes in is not there yet (the caller unpacks
    /// the entry itself); true once the file is in place, linked or written.
    pub fn place(
        &mut self,
        path: &Path,
        mode: u32,
        mtime: i64,
        size: u64,
        data: &mut dyn Read,
    ) -> io::Result<bool> {
        let (Some(name), parent) = (path.file_name(), path.parent()) else {
            return Ok(false);
        };
        let parent = match parent {
            Some(p) if !p.as_os_str().is_empty() => {
                match beneath(&self.partial, p, OFlag::O_PATH | OFlag::O_DIRECTORY) {
                    Ok(fd) => fd,
                    Err(_) => return Ok(false),
                }
            }
            _ => self.partial.try_clone()?,
        };
        // Already unpacked (a tar may repeat a path): let tar replace it.
        if fstatat(&parent, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW).is_ok() {
            return Ok(false);
        }
        let Some(candidate) = self.candidate(path, mode, mtime, size) else {
            return Ok(false);
        };
        let candidate = File::from(candidate);
        // Compare piece by piece; at the first difference, write the file.
        let mut ours = vec![0u8; PIECE];
        let mut theirs = vec![0u8; PIECE];
        let mut at = 0u64;
        while at < size {
            let want = (size - at).min(PIECE as u64) as usize;
            let got = read_full(data, &mut ours[..want])?;
            if got != want {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let same = candidate.read_exact_at(&mut theirs[..want], at).is_ok()
                && ours[..want] == theirs[..want];
            if !same {
                self.write(
                    &parent,
                    name,
                    mode,
                    mtime,
                    &candidate,
                    at,
                    &ours[..want],
                    data,
                )?;
                self.stats.files_patched += u64::from(at > 0);
                return Ok(true);
            }
            at += want as u64;
        }
        let proc_path = format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&candidate)
        );
        match linkat(
            &parent,
            proc_path.as_str(),
            &parent,
            name,
            nix::fcntl::AtFlags::AT_SYMLINK_FOLLOW,
        ) {
            Ok(()) => {
                self.stats.files_linked += 1;
                self.stats.bytes_linked += size;
            }
            // Another filesystem, or no /proc: the candidate equals the
            // entry, so copy it.
            Err(_) => self.write(
                &parent,
                name,
                mode,
                mtime,
                &candidate,
                size,
                &[],
                &mut io::empty(),
            )?,
        }
        Ok(true)
    }

    /// The first earlier tree's file at `path` that could be this entry.
    fn candidate(&self, path: &Path, mode: u32, mtime: i64, size: u64) -> Option<OwnedFd> {
        self.seeds.iter().find_map(|seed| {
            let fd = beneath(seed, path, OFlag::O_RDONLY).ok()?;
            let st = fstat(&fd).ok()?;
            let regular =
                SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFREG;
            let fits = regular
                && st.st_size as u64 == size
                && st.st_mode & 0o7777 == mode
                && st.st_mtime == mtime;
            fits.then_some(fd)
        })
    }

    /// Writes the file: `prefix` bytes copied from `candidate` (they compared
    /// equal), then `piece`, then the rest of `data`; with `mode` and `mtime`.
    #[allow(clippy::too_many_arguments)]
    fn write(
        &self,
        parent: &OwnedFd,
        name: &std::ffi::OsStr,
        mode: u32,
        mtime: i64,
        candidate: &File,
        prefix: u64,
        piece: &[u8],
        data: &mut dyn Read,
    ) -> io::Result<()> {
        let how = OpenHow::new()
            .flags(
                OFlag::O_WRONLY
                    | OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
            )
            .mode(Mode::from_bits_truncate(0o600))
            .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
        let mut out = File::from(openat2(parent, name, how)?);
        let mut buf = vec![0u8; PIECE];
        let mut at = 0u64;
        while at < prefix {
            let n = (prefix - at).min(PIECE as u64) as usize;
            candidate.read_exact_at(&mut buf[..n], at)?;
            out.write_all(&buf[..n])?;
            at += n as u64;
        }
        out.write_all(piece)?;
        io::copy(data, &mut out)?;
        let time = TimeSpec::new(mtime, 0);
        futimens(&out, &time, &time)?;
        fchmod(&out, Mode::from_bits_truncate(mode))?;
        Ok(())
    }
}
