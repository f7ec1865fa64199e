//! What a package archive may hold, as rules on each entry's metadata. The
//! coordinator applies them to the whole archive at upload ([`scan`]) and the
//! till again while unpacking, so neither trusts the other's check. No file
//! system access: archives are read through [`std::io::Read`] and paths are
//! judged lexically.
//!
//! A package is a tar (possibly compressed) of regular files, directories and
//! links that stay inside the tree, with a regular `up.sh` at the top. Refused:
//! absolute paths and `..`; devices, FIFOs and sparse files; links pointing out
//! of the tree; more than [`MAX_ENTRIES`] entries.

use std::path::{Component, Path};

/// Most entries in one package (bounds the inodes a package can make).
pub const MAX_ENTRIES: u64 = 200_000;
/// Longest path shown in an error (the rest is cut).
const SHOWN_PATH: usize = 120;

/// How an uploaded package is compressed, told from its first bytes (never from
/// a file name). The coordinator decompresses all of them while ingesting and
/// chunks the tar inside; tills only ever see that tar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum UploadFormat {
    /// A plain tar.
    Tar,
    /// gzip (one or more members).
    TarGz,
    /// zstd.
    TarZst,
    /// xz.
    TarXz,
}

impl UploadFormat {
    /// Bytes [`UploadFormat::detect`] wants to see (one tar header block).
    pub const SNIFF_LEN: usize = 512;

    /// The format of an upload starting with `head` (up to [`Self::SNIFF_LEN`]
    /// bytes): the compressors' magic numbers, else a tar header block whose
    /// checksum verifies.
    pub fn detect(head: &[u8]) -> Result<Self, ArchiveError> {
        if head.starts_with(&[0x1f, 0x8b]) {
            Ok(Self::TarGz)
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Ok(Self::TarZst)
        } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
            Ok(Self::TarXz)
        } else if is_tar_header(head) {
            Ok(Self::Tar)
        } else {
            Err(ArchiveError(
                "not a tar, tar.gz, tar.zst or tar.xz (told by content, not by name)".into(),
            ))
        }
    }

    /// The code a format 3 manifest carries.
    pub const fn code(self) -> u8 {
        match self {
            Self::Tar => 0,
            Self::TarGz => 1,
            Self::TarZst => 2,
            Self::TarXz => 3,
        }
    }

    /// The format a manifest's code names, if this build knows it.
    pub const fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(Self::Tar),
            1 => Some(Self::TarGz),
            2 => Some(Self::TarZst),
            3 => Some(Self::TarXz),
            _ => None,
        }
    }

    /// The usual file name suffix.
    pub const fn suffix(self) -> &'static str {
        match self {
            Self::Tar => "tar",
            Self::TarGz => "tar.gz",
            Self::TarZst => "tar.zst",
            Self::TarXz => "tar.xz",
        }
    }
}

/// Whether `block` is a tar header: 512 bytes whose checksum field matches the
/// sum of its bytes (with the field itself counted as spaces), as every tar
/// flavour (v7, ustar, GNU, pax) writes it.
fn is_tar_header(block: &[u8]) -> bool {
    let Some(block) = block.get(..512) else {
        return false;
    };
    let field = &block[148..156];
    let digits: String = field
        .iter()
        .map(|&b| b as char)
        .take_while(|c| *c != '\0')
        .collect();
    let Ok(stated) = u32::from_str_radix(digits.trim(), 8) else {
        return false;
    };
    let sum: u32 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u32::from(b)
            }
        })
        .sum();
    // An all-zero block sums to 256 with the field as spaces: not a header.
    sum == stated && block[..100].iter().any(|&b| b != 0)
}

/// An entry's type, as far as the rules care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (its target is checked).
    Symlink,
    /// A hard link to another entry (its target is checked).
    HardLink,
    /// Archive metadata that unpacks to nothing (pax headers).
    Metadata,
    /// A sparse file: refused (its logical size can dwarf its bytes).
    Sparse,
    /// A character or block device or a FIFO: refused.
    Special,
    /// Anything else: refused.
    Unknown,
}

/// Why an entry is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ArchiveError(pub String);

/// The path for a message: printable characters only, cut short, so no raw
/// bytes of an archive ever reach a log or an API answer.
pub fn shown(path: &Path) -> String {
    let text = path.to_string_lossy();
    let mut out: String = text
        .chars()
        .flat_map(char::escape_default)
        .take(SHOWN_PATH)
        .collect();
    if text.chars().flat_map(char::escape_default).count() > SHOWN_PATH {
        out.push('…');
    }
    out
}

/// Whether `path` stays inside the tree: relative, no `..`, not empty.
fn inside(path: &Path) -> bool {
    let mut normal = 0;
    for c in path.components() {
        match c {
            Component::Normal(_) => normal += 1,
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    normal > 0
}

/// Whether a symlink at `at` pointing to `target` resolves inside the tree
/// (lexically: `..` may climb only as far as the tree's top).
fn link_stays_inside(at: &Path, target: &Path) -> bool {
    let mut depth: i64 = at
        .parent()
        .map(|p| {
            p.components()
                .filter(|c| matches!(c, Component::Normal(_)))
                .count() as i64
        })
        .unwrap_or(0);
    for c in target.components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

/// Whether `path` names the package's top-level `up.sh`.
pub fn is_up_sh(path: &Path) -> bool {
    let mut names = path
        .components()
        .filter(|c| !matches!(c, Component::CurDir));
    matches!(names.next(), Some(Component::Normal(n)) if n == "up.sh") && names.next().is_none()
}

/// Checks one entry: its path, its type and, for links, where they point.
pub fn check_entry(path: &Path, kind: EntryKind, link: Option<&Path>) -> Result<(), ArchiveError> {
    let refuse = |why: &str| Err(ArchiveError(format!("entry {:?}: {why}", shown(path))));
    if kind == EntryKind::Metadata {
        return Ok(());
    }
    // `tar -C dir -cf x.tar .` starts with the tree's own top, `./`.
    let is_top =
        path.components().next().is_some() && path.components().all(|c| c == Component::CurDir);
    if kind == EntryKind::Dir && is_top {
        return Ok(());
    }
    if !inside(path) {
        return refuse("absolute paths and `..` are not allowed");
    }
    match kind {
        EntryKind::File | EntryKind::Dir | EntryKind::Metadata => {}
        EntryKind::Symlink => match link {
            Some(target) if link_stays_inside(path, target) => {}
            _ => return refuse("a link may only point inside the package"),
        },
        EntryKind::HardLink => match link {
            Some(target) if inside(target) => {}
            _ => return refuse("a link may only point inside the package"),
        },
        EntryKind::Sparse => return refuse("sparse files are not allowed"),
        EntryKind::Special => return refuse("devices and FIFOs are not allowed"),
        EntryKind::Unknown => return refuse("unknown entry type"),
    }
    if is_up_sh(path) && kind != EntryKind::File {
        return refuse("up.sh must be a regular file");
    }
    Ok(())
}

/// Keeps the running totals of a whole archive: entries, unpacked bytes,
/// whether `up.sh` was seen, against a cap on the unpacked size.
#[derive(Debug, Clone)]
pub struct Tally {
    /// Entries seen.
    pub entries: u64,
    /// Bytes of regular files (what unpacking writes).
    pub unpacked_bytes: u64,
    /// Whether a regular top-level `up.sh` was seen.
    pub has_up_sh: bool,
    max_unpacked: u64,
}

impl Tally {
    /// Totals that refuse an archive unpacking to more than `max_unpacked` bytes.
    pub fn new(max_unpacked: u64) -> Self {
        Self {
            entries: 0,
            unpacked_bytes: 0,
            has_up_sh: false,
            max_unpacked,
        }
    }

    /// Checks an entry (see [`check_entry`]) and adds it; `size` is the
    /// number of bytes it unpacks to. Refuses before the cap is passed.
    pub fn add(
        &mut self,
        path: &Path,
        kind: EntryKind,
        link: Option<&Path>,
        size: u64,
    ) -> Result<(), ArchiveError> {
        check_entry(path, kind, link)?;
        self.entries += 1;
        if self.entries > MAX_ENTRIES {
            return Err(ArchiveError(format!("more than {MAX_ENTRIES} entries")));
        }
        if kind == EntryKind::File {
            self.unpacked_bytes = self.unpacked_bytes.saturating_add(size);
            if self.unpacked_bytes > self.max_unpacked {
                return Err(ArchiveError(format!(
                    "it unpacks to more than {} bytes",
                    self.max_unpacked
                )));
            }
            if is_up_sh(path) {
                self.has_up_sh = true;
            }
        }
        Ok(())
    }

    /// The verdict once every entry was added.
    pub fn finish(&self) -> Result<u64, ArchiveError> {
        if !self.has_up_sh {
            return Err(ArchiveError(if self.entries == 0 {
                "expected a tar archive holding up.sh".into()
            } else {
                "the archive has no up.sh at its top level".into()
            }));
        }
        Ok(self.unpacked_bytes)
    }
}

/// The rules' view of a tar entry type.
pub fn kind_of(t: tar::EntryType) -> EntryKind {
    use tar::EntryType as T;
    match t {
        T::Regular | T::Continuous => EntryKind::File,
        T::Directory => EntryKind::Dir,
        T::Symlink => EntryKind::Symlink,
        T::Link => EntryKind::HardLink,
        T::XHeader | T::XGlobalHeader | T::GNULongName | T::GNULongLink => EntryKind::Metadata,
        T::GNUSparse => EntryKind::Sparse,
        T::Char | T::Block | T::Fifo => EntryKind::Special,
        _ => EntryKind::Unknown,
    }
}

/// Reads a whole (already decompressed) tar stream and applies the rules to
/// every entry; returns the unpacked size. Stops at the first refusal.
pub fn scan<R: std::io::Read>(reader: R, max_unpacked: u64) -> Result<u64, ArchiveError> {
    let broken = |e: std::io::Error| ArchiveError(format!("broken tar: {e}"));
    let mut archive = tar::Archive::new(reader);
    let mut tally = Tally::new(max_unpacked);
    for entry in archive.entries().map_err(broken)? {
        let entry = entry.map_err(broken)?;
        let header = entry.header();
        let kind = kind_of(header.entry_type());
        let size = header.size().map_err(broken)?;
        let path = entry.path().map_err(broken)?.into_owned();
        let link = entry.link_name().map_err(broken)?.map(|l| l.into_owned());
        tally.add(&path, kind, link.as_deref(), size)?;
    }
    tally.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_formats_are_told_by_content() {
        let mut tar = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(3);
        header.set_mode(0o755);
        header.set_cksum();
        tar.append_data(&mut header, "up.sh", &b"x\n\n"[..])
            .expect("append");
        let tar = tar.into_inner().expect("tar");
        assert_eq!(UploadFormat::detect(&tar), Ok(UploadFormat::Tar));
        assert_eq!(
            UploadFormat::detect(&[0x1f, 0x8b, 8, 0]),
            Ok(UploadFormat::TarGz)
        );
        assert_eq!(
            UploadFormat::detect(&[0x28, 0xb5, 0x2f, 0xfd, 0]),
            Ok(UploadFormat::TarZst)
        );
        assert_eq!(
            UploadFormat::detect(b"\xfd7zXZ\0\0"),
            Ok(UploadFormat::TarXz)
        );
        // A tar header with one byte changed fails its checksum.
        let mut bent = tar.clone();
        bent[0] ^= 1;
        for bad in [
            &bent[..],
            b"PK\x03\x04zip",
            b"BZh91AY",
            &[0u8; 512],
            b"#!/bin/sh\n",
            &[],
        ] {
            assert!(
                UploadFormat::detect(bad).is_err(),
                "{:?}",
                &bad[..bad.len().min(8)]
            );
        }
        for f in [
            UploadFormat::Tar,
            UploadFormat::TarGz,
            UploadFormat::TarZst,
            UploadFormat::TarXz,
        ] {
            assert_eq!(UploadFormat::from_code(f.code()), Some(f));
        }
        assert_eq!(UploadFormat::from_code(4), None);
    }

    fn p(s: &str) -> &Path {
        Path::new(s)
    }

    #[test]
    fn paths_must_stay_inside() {
        use EntryKind::*;
        for ok in ["up.sh", "./up.sh", "bin/app", "./a/./b"] {
            check_entry(p(ok), File, None).expect(ok);
        }
        for bad in ["/etc/passwd", "../x", "a/../../x", "a/..", "", "."] {
            assert!(check_entry(p(bad), File, None).is_err(), "{bad}");
        }
        check_entry(p("./"), Dir, None).expect("the tree's top");
        assert!(check_entry(p("/"), Dir, None).is_err());
    }

    #[test]
    fn links_must_point_inside_and_up_sh_must_be_a_file() {
        use EntryKind::*;
        check_entry(p("lib/libx.so"), Symlink, Some(p("libx.so.1"))).expect("sibling");
        check_entry(p("a/b/c"), Symlink, Some(p("../../d"))).expect("climbs to the top");
        check_entry(p("a/link"), Symlink, Some(p("../x"))).expect("resolves to x at the top");
        for target in ["/etc/shadow", "../../../etc/shadow", "../../x"] {
            assert!(
                check_entry(p("a/link"), Symlink, Some(p(target))).is_err(),
                "{target}"
            );
        }
        assert!(check_entry(p("x"), Symlink, None).is_err());
        check_entry(p("hard"), HardLink, Some(p("bin/app"))).expect("inside");
        assert!(check_entry(p("hard"), HardLink, Some(p("/etc/shadow"))).is_err());
        assert!(check_entry(p("up.sh"), Symlink, Some(p("bin/real.sh"))).is_err());
        assert!(check_entry(p("./up.sh"), Dir, None).is_err());
        check_entry(p("sub/up.sh"), Symlink, Some(p("x"))).expect("only the top one counts");
        for kind in [Sparse, Special, Unknown] {
            assert!(check_entry(p("f"), kind, None).is_err(), "{kind:?}");
        }
    }

    #[test]
    fn the_tally_caps_the_unpacked_size_and_wants_up_sh() {
        let mut t = Tally::new(100);
        t.add(p("up.sh"), EntryKind::File, None, 40).expect("up.sh");
        t.add(p("data"), EntryKind::File, None, 60)
            .expect("at the cap");
        assert_eq!(t.finish().expect("verdict"), 100);
        assert!(
            t.add(p("more"), EntryKind::File, None, 1).is_err(),
            "over the cap"
        );
        let mut none = Tally::new(100);
        none.add(p("data"), EntryKind::File, None, 1).expect("data");
        assert!(none.finish().is_err(), "no up.sh");
    }

    #[test]
    fn messages_never_carry_raw_bytes() {
        let weird = Path::new("a\u{1b}[31mred\n/../x");
        let e = check_entry(weird, EntryKind::File, None).expect_err("refused");
        assert!(!e.0.contains('\u{1b}') && !e.0.contains('\n'), "{e}");
        let long = "x".repeat(500);
        let e = check_entry(Path::new(&format!("/{long}")), EntryKind::File, None)
            .expect_err("refused");
        assert!(e.0.len() < 250, "{}", e.0.len());
    }
}
