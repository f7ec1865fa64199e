//! `tillswarm-bench chunk-sizes`: which FastCDC sizes keep a delta small.
//!
//! Offline, in memory. Version N is the large package fixture
//! ([`tillswarm_fixtures::write_large_package`], incompressible payload) of
//! `--size-mb`; N+1 rewrites ten seeded regions that together are 10% of its
//! bytes, one at a random place in each tenth of the file (ChaCha8, fixed
//! seed), the layout issue #14 measures. For each `min/avg/max` (FastCDC
//! 2020 at normalisation level 1, as the product's chunker, at other sizes)
//! both versions are cut and the bench reports what a store holding N
//! fetches for N+1 (the bytes of N+1's chunks N lacks) against the package
//! size and against the changed bytes (the bound), with the chunk count, an
//! estimate of the manifest's size and the WAN requests per package.

use std::collections::HashSet;

use anyhow::{Context, ensure};
use fastcdc::v2020;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

/// Regions N+1 rewrites.
const REGIONS: u64 = 10;
/// Share of the package they rewrite together.
const CHANGED: f64 = 0.10;
/// Bytes a chunk adds to a signed manifest: its blake3 and its length
/// (postcard varint, at most 5 bytes) and framing; an estimate.
const MANIFEST_BYTES_PER_CHUNK: u64 = 38;

/// One chunker setting, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Sizes {
    pub min: u32,
    pub avg: u32,
    pub max: u32,
}

impl std::str::FromStr for Sizes {
    type Err = String;

    /// `MIN/AVG/MAX` in KiB, e.g. `16/64/256`.
    fn from_str(s: &str) -> Result<Self, String> {
        let kib: Vec<u32> = s
            .split('/')
            .map(|p| p.trim().parse::<u32>().map_err(|e| format!("{s}: {e}")))
            .collect::<Result<_, _>>()?;
        let [min, avg, max] = kib[..] else {
            return Err(format!("{s}: want MIN/AVG/MAX in KiB"));
        };
        let sizes = Sizes {
            min: min * 1024,
            avg: avg * 1024,
            max: max * 1024,
        };
        // FastCDC 2020's own limits, and a sane order.
        let ok = (v2020::MINIMUM_MIN..=v2020::MINIMUM_MAX).contains(&sizes.min)
            && (v2020::AVERAGE_MIN..=v2020::AVERAGE_MAX).contains(&sizes.avg)
            && (v2020::MAXIMUM_MIN..=v2020::MAXIMUM_MAX).contains(&sizes.max)
            && sizes.min < sizes.avg
            && sizes.avg < sizes.max;
        if ok {
            Ok(sizes)
        } else {
            Err(format!(
                "{s}: outside FastCDC's limits or not min < avg < max"
            ))
        }
    }
}

/// The figures of one setting.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub sizes: Sizes,
    /// Chunks of N+1.
    pub chunks: usize,
    /// Bytes of N+1's chunks that N lacks.
    pub new_bytes: u64,
    /// `new_bytes` over the package size.
    pub new_fraction: f64,
    /// `new_bytes` over the changed bytes (1.0 is the bound).
    pub over_changed: f64,
    /// Estimated signed-manifest size of N+1.
    pub manifest_bytes: u64,
    /// Chunks a store holding N fetches for N+1 (WAN requests).
    pub new_chunks: usize,
}

/// What the bench measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub package_size: u64,
    pub changed_bytes: u64,
    pub regions: u64,
    pub rows: Vec<Row>,
}

/// N and N+1 of `size` bytes (see the module doc).
pub fn pair(size: u64) -> anyhow::Result<(Vec<u8>, Vec<u8>, u64)> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("n.tar");
    tillswarm_fixtures::write_large_package(&path, "1.0.0", size).context("writing the package")?;
    let old = std::fs::read(&path)?;
    let mut new = old.clone();
    let len = new.len() as u64;
    let region = ((len as f64 * CHANGED) / REGIONS as f64) as u64;
    let slot = len / REGIONS;
    ensure!(region < slot, "package too small for {REGIONS} regions");
    let mut rng = ChaCha8Rng::seed_from_u64(0x5CA7_0110);
    for r in 0..REGIONS {
        let at = (r * slot + rng.random_range(0..slot - region)) as usize;
        rng.fill(&mut new[at..at + region as usize]);
    }
    Ok((old, new, region * REGIONS))
}

/// Cuts `data` with `sizes`; the chunks' blake3 and lengths.
fn cut(data: &[u8], sizes: Sizes) -> Vec<(blake3::Hash, u32)> {
    v2020::FastCDC::with_level(
        data,
        sizes.min,
        sizes.avg,
        sizes.max,
        v2020::Normalization::Level1,
    )
    .map(|c| {
        let bytes = &data[c.offset..c.offset + c.length];
        (blake3::hash(bytes), c.length as u32)
    })
    .collect()
}

/// Measures every setting on the pair.
pub fn measure(old: &[u8], new: &[u8], changed: u64, settings: &[Sizes]) -> Report {
    let rows = settings
        .iter()
        .map(|&sizes| {
            let held: HashSet<blake3::Hash> = cut(old, sizes).into_iter().map(|(h, _)| h).collect();
            let chunks = cut(new, sizes);
            let mut fetched = HashSet::new();
            let mut new_bytes = 0u64;
            for (hash, len) in &chunks {
                if !held.contains(hash) && fetched.insert(*hash) {
                    new_bytes += u64::from(*len);
                }
            }
            Row {
                sizes,
                chunks: chunks.len(),
                new_bytes,
                new_fraction: new_bytes as f64 / new.len() as f64,
                over_changed: new_bytes as f64 / changed.max(1) as f64,
                manifest_bytes: chunks.len() as u64 * MANIFEST_BYTES_PER_CHUNK,
                new_chunks: fetched.len(),
            }
        })
        .collect();
    Report {
        package_size: new.len() as u64,
        changed_bytes: changed,
        regions: REGIONS,
        rows,
    }
}

/// Prints the report as a table.
pub fn print(r: &Report) {
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    println!(
        "package {:.1} MiB; N+1 rewrites {} regions, {:.1} MiB ({:.1}%) in all",
        mib(r.package_size),
        r.regions,
        mib(r.changed_bytes),
        100.0 * r.changed_bytes as f64 / r.package_size as f64
    );
    println!(
        "{:>16}  {:>7}  {:>10}  {:>8}  {:>9}  {:>11}  {:>10}",
        "min/avg/max KiB", "chunks", "new MiB", "x size", "x changed", "WAN chunks", "manifest"
    );
    for row in &r.rows {
        let s = row.sizes;
        println!(
            "{:>16}  {:>7}  {:>10.2}  {:>8.4}  {:>9.2}  {:>11}  {:>8} KiB",
            format!("{}/{}/{}", s.min / 1024, s.avg / 1024, s.max / 1024),
            row.chunks,
            mib(row.new_bytes),
            row.new_fraction,
            row.over_changed,
            row.new_chunks,
            row.manifest_bytes / 1024
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_kib_and_refuse_nonsense() {
        let s: Sizes = "16/64/256".parse().expect("sizes");
        assert_eq!((s.min, s.avg, s.max), (16 << 10, 64 << 10, 256 << 10));
        for bad in ["64/16/256", "16/64", "a/b/c", "0/64/256", "16/64/999999"] {
            assert!(bad.parse::<Sizes>().is_err(), "{bad}");
        }
    }

    #[test]
    fn smaller_chunks_fetch_less_of_a_scattered_delta_but_never_less_than_it_changed() {
        let (old, new, changed) = pair(8 << 20).expect("pair");
        assert_eq!(old.len(), new.len());
        let differing = old.iter().zip(&new).filter(|(a, b)| a != b).count() as f64;
        // Random bytes over random bytes: all but 1/256 of them differ.
        assert!(differing > 0.99 * changed as f64 && differing <= changed as f64);
        let small: Sizes = "16/64/256".parse().expect("sizes");
        let large: Sizes = "256/1024/4096".parse().expect("sizes");
        let r = measure(&old, &new, changed, &[small, large]);
        let (s, l) = (&r.rows[0], &r.rows[1]);
        assert!(s.new_bytes >= changed - changed / 100, "{s:?}");
        assert!(s.new_bytes < l.new_bytes, "{s:?} vs {l:?}");
        assert!(s.chunks > l.chunks);
        // A store holding N+1 already fetches nothing.
        let same = measure(&new, &new, changed, &[small]);
        assert_eq!(same.rows[0].new_bytes, 0);
    }
}
