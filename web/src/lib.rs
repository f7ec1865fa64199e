//! The operator web panel: static HTML, CSS and JavaScript modules, embedded
//! into the coordinator binary at build time (`build.rs` lists every file
//! under `static/`). It talks only to the operator API under `/api/v1/`.
//!
//! The coordinator serves [`INDEX_HTML`] at `/` and every asset at
//! `/panel/<path>`; the panel needs nothing from outside the binary.

/// One embedded file of the panel.
#[derive(Debug)]
pub struct Asset {
    /// Its path under `static/`, with `/` separators (e.g. `js/main.js`).
    pub path: &'static str,
    /// The `Content-Type` it is served with.
    pub content_type: &'static str,
    /// Its bytes.
    pub bytes: &'static [u8],
}

/// Every embedded file, sorted by path.
pub static ASSETS: &[Asset] = include!(concat!(env!("OUT_DIR"), "/assets.rs"));

/// The panel's entry page.
pub const INDEX_HTML: &str = include_str!("../static/index.html");

/// The asset at `path` (relative to `static/`), if there is one.
pub fn asset(path: &str) -> Option<&'static Asset> {
    ASSETS
        .binary_search_by(|a| a.path.cmp(path))
        .ok()
        .map(|i| &ASSETS[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_is_embedded_sorted_and_found() {
        assert!(ASSETS.windows(2).all(|w| w[0].path < w[1].path));
        let index = asset("index.html").expect("index.html is embedded");
        assert_eq!(index.bytes, INDEX_HTML.as_bytes());
        assert!(index.content_type.starts_with("text/html"));
        assert!(asset("no/such/file.js").is_none());
        for a in ASSETS {
            assert!(!a.path.contains(".."), "{}", a.path);
            assert_eq!(asset(a.path).map(|b| b.path), Some(a.path));
        }
    }
}
