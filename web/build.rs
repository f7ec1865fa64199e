//! Embeds every file under `static/` into the crate: writes `assets.rs` (a
//! sorted table of path, content type and `include_bytes!`) into OUT_DIR.
//! A file whose extension has no known content type fails the build, so
//! nothing is served with a guessed type.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::{env, fs};

fn content_type(path: &Path) -> Option<&'static str> {
    Some(match path.extension()?.to_str()? {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "json" => "application/json",
        _ => return None,
    })
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            walk(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn main() {
    let root = Path::new(&env::var("CARGO_MANIFEST_DIR").expect("manifest dir")).join("static");
    println!("cargo:rerun-if-changed={}", root.display());
    let mut files = Vec::new();
    walk(&root, &mut files);
    // Sorted by the path as served (byte order), for the binary search.
    let mut files: Vec<(String, PathBuf)> = files
        .into_iter()
        .map(|file| {
            let rel = file
                .strip_prefix(&root)
                .expect("under static/")
                .to_str()
                .expect("UTF-8 file name")
                .replace('\\', "/");
            (rel, file)
        })
        .collect();
    files.sort();
    let mut table = String::from("&[\n");
    for (rel, file) in &files {
        println!("cargo:rerun-if-changed={}", file.display());
        let ty = content_type(file)
            .unwrap_or_else(|| panic!("static/{rel}: no content type for this extension"));
        writeln!(
            table,
            "    Asset {{ path: {rel:?}, content_type: {ty:?}, bytes: include_bytes!({:?}) }},",
            file.display().to_string()
        )
        .expect("write to a String");
    }
    table.push(']');
    let out = Path::new(&env::var("OUT_DIR").expect("OUT_DIR")).join("assets.rs");
    fs::write(out, table).expect("write assets.rs");
}
