//! The operator web panel served at `/` and `/panel/...`: it is the page and
//! its modules, it is self-contained (works offline, no external resources),
//! it never parses API data as HTML, and every `/api/v1/...` call in its
//! modules names a method and path that `openapi.json` documents (the OpenAPI
//! test in turn ties the document to the routes), so a renamed or removed
//! route cannot silently break the panel.

use std::collections::BTreeSet;

use serde_json::Value;
use tillswarm_coordinator::http::openapi::DOCUMENT;
use tillswarm_coordinator::{Config, Coordinator};
use warp::http::{StatusCode, header};

/// GETs `/` from a coordinator in a temporary folder; returns the page.
async fn served_panel() -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let coordinator = Coordinator::open(Config {
        data_dir: dir.path().to_path_buf(),
        ..Default::default()
    })
    .await
    .expect("open coordinator");
    let routes = tillswarm_coordinator::http::routes(coordinator);
    let res = warp::test::request()
        .method("GET")
        .path("/")
        .reply(&routes)
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let ct = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(ct.starts_with("text/html"), "content type {ct:?}");
    String::from_utf8(res.body().to_vec()).expect("the page is UTF-8")
}

/// Every embedded file of the panel that holds code or markup, by path.
fn sources() -> Vec<(&'static str, &'static str)> {
    tillswarm_web::ASSETS
        .iter()
        .filter(|a| {
            [".html", ".js", ".mjs", ".css"]
                .iter()
                .any(|e| a.path.ends_with(e))
        })
        .map(|a| (a.path, std::str::from_utf8(a.bytes).expect("UTF-8 source")))
        .collect()
}

/// One API use found in the page: method and path with `{}` for parameters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Use {
    method: String,
    path: String,
}

/// Finds every `/api/v1/...` path in `text` with the method it is called with.
///
/// A use must look like `api("METHOD", "/api/v1/...")` (also with `'` or
/// backquotes), `open("METHOD", "/api/v1/...")` (the upload's
/// XMLHttpRequest), `href="/api/v1/..."` (a plain GET link, also assigned
/// in code) or `new EventSource("/api/v1/...")` (the live stream, a GET). A path ends at
/// a quote, `?`, whitespace or `<`; `${...}` interpolations become `{}`.
/// Returns the uses and a description of every occurrence that matches none of
/// these forms.
fn api_uses(text: &str) -> (Vec<Use>, Vec<String>) {
    let bytes = text.as_bytes();
    let mut uses = Vec::new();
    let mut unrecognized = Vec::new();
    let mut from = 0;
    while let Some(found) = text[from..].find("/api/v1/") {
        let start = from + found;
        let (path, end) = read_path(text, start);
        from = end.max(start + 1);
        match method_before(bytes, start) {
            Some(method) => uses.push(Use { method, path }),
            None => {
                let line = text[..start].matches('\n').count() + 1;
                let lo = text[..start]
                    .char_indices()
                    .rev()
                    .nth(40)
                    .map_or(0, |(i, _)| i);
                unrecognized.push(format!("line {line}: {:?}", &text[lo..end.min(text.len())]));
            }
        }
    }
    (uses, unrecognized)
}

/// Reads a path template from `start`; returns it normalised and where it ends.
fn read_path(text: &str, start: usize) -> (String, usize) {
    let bytes = text.as_bytes();
    let mut out = String::new();
    let mut i = start;
    while i < bytes.len() {
        let c = bytes[i];
        if c == b'$' && bytes.get(i + 1) == Some(&b'{') {
            // Skip the interpolation, nested braces included.
            let mut depth = 0usize;
            while i < bytes.len() {
                match bytes[i] {
                    b'{' => depth += 1,
                    b'}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            out.push_str("{}");
            i += 1;
            continue;
        }
        if matches!(c, b'"' | b'\'' | b'`' | b'?' | b'<' | b')' | b',') || c.is_ascii_whitespace() {
            break;
        }
        out.push(c as char);
        i += 1;
    }
    (out, i)
}

/// The method of the call whose path literal starts at `start`, if the text
/// before it is `api(` or `open(` with a quoted method, or `href=`.
fn method_before(bytes: &[u8], start: usize) -> Option<String> {
    let quote = *bytes.get(start.checked_sub(1)?)?;
    if !matches!(quote, b'"' | b'\'' | b'`') {
        return None;
    }
    let mut i = start - 1;
    let before = |i: usize| &bytes[..i];
    let head = before(skip_space_back(bytes, i));
    let assigned = head
        .strip_suffix(b"=")
        .map(|h| &h[..skip_space_back(h, h.len())]);
    if assigned.is_some_and(|h| h.ends_with(b"href")) || head.ends_with(b"EventSource(") {
        return Some("GET".to_owned());
    }
    // `, ` between the method and the path.
    i = skip_space_back(bytes, i);
    if i == 0 || bytes[i - 1] != b',' {
        return None;
    }
    i = skip_space_back(bytes, i - 1);
    // The quoted method.
    let q = *bytes.get(i.checked_sub(1)?)?;
    if !matches!(q, b'"' | b'\'' | b'`') {
        return None;
    }
    let close = i - 1;
    let open = bytes[..close].iter().rposition(|&b| b == q)?;
    let method = std::str::from_utf8(&bytes[open + 1..close]).ok()?;
    if !matches!(method, "GET" | "POST" | "PUT" | "PATCH" | "DELETE") {
        return None;
    }
    let i = skip_space_back(bytes, open);
    let head = before(i);
    if head.ends_with(b"api(") || head.ends_with(b".open(") {
        Some(method.to_owned())
    } else {
        None
    }
}

fn skip_space_back(bytes: &[u8], mut i: usize) -> usize {
    while i > 0 && bytes[i - 1].is_ascii_whitespace() {
        i -= 1;
    }
    i
}

/// `{name}` segments become `{}`.
fn normalise(template: &str) -> String {
    template
        .split('/')
        .map(|s| {
            if s.starts_with('{') && s.ends_with('}') {
                "{}"
            } else {
                s
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Every documented (METHOD, normalised path).
fn documented() -> BTreeSet<(String, String)> {
    let doc: Value = serde_json::from_str(DOCUMENT).expect("openapi.json is JSON");
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            out.insert((method.to_ascii_uppercase(), normalise(path)));
        }
    }
    out
}

/// The problems with a page's API uses: undocumented calls and unrecognised
/// occurrences.
fn check(text: &str) -> (Vec<Use>, Vec<String>) {
    let known = documented();
    let (uses, mut problems) = api_uses(text);
    for u in &uses {
        if !known.contains(&(u.method.clone(), u.path.clone())) {
            problems.push(format!(
                "{} {} is not in openapi.json (documented: {:?})",
                u.method,
                u.path,
                known
                    .iter()
                    .filter(|(_, p)| p.starts_with("/api/v1/") && !p.starts_with("/api/v1/node"))
                    .map(|(m, p)| format!("{m} {p}"))
                    .collect::<Vec<_>>()
            ));
        }
    }
    (uses, problems)
}

#[tokio::test]
async fn the_root_serves_the_panel() {
    let page = served_panel().await;
    assert!(page.starts_with("<!doctype html>"), "not an HTML document");
    assert!(page.contains("<title>tillswarm operator panel</title>"));
    for view in [
        "overview",
        "stores",
        "groups",
        "packages",
        "tasks",
        "rollout",
        "till-types",
        "audit",
    ] {
        assert!(
            page.contains(&format!("data-view=\"{view}\"")),
            "the panel has no {view} view"
        );
    }
    assert_eq!(page, tillswarm_web::INDEX_HTML);
}

#[test]
fn the_panel_is_self_contained_and_builds_no_html_from_data() {
    let files = sources();
    assert!(files.len() > 10, "the panel's modules: {}", files.len());
    for (path, text) in files {
        // The SVG namespace is a name, not a download.
        let lower = text
            .to_ascii_lowercase()
            .replace("\"http://www.w3.org/2000/svg\"", "\"svg-ns\"");
        // Works offline: no external script, style, font or image.
        for needle in [
            "http://", "https://", "//cdn", "@import", "<img", "<iframe", "import(",
        ] {
            assert!(
                !lower.contains(needle),
                "{path} refers to an outside resource ({needle})"
            );
        }
        assert!(
            !lower.contains("url(")
                || lower.matches("url(").count() == lower.matches("url(data:").count(),
            "{path}: a CSS url() to a file"
        );
        // Modules import only the panel's own modules, by relative path.
        for needle in ["from \"", "import \""] {
            for (i, _) in lower.match_indices(needle) {
                let target = &lower[i + needle.len()..];
                assert!(
                    target.starts_with("./") || target.starts_with("../"),
                    "{path}: imports {:?}",
                    &target[..target.find('"').unwrap_or(0)]
                );
            }
        }
        // Device names, logs and error messages come from outside: they must
        // only reach the page as text, never be parsed as HTML or code.
        for needle in [
            "innerhtml",
            "outerhtml",
            "insertadjacenthtml",
            "document.write",
            "eval(",
            "new function",
            "srcdoc",
            "settimeout(\"",
        ] {
            assert!(!lower.contains(needle), "{path} uses {needle}");
        }
    }
    // The page itself: links and scripts only to the panel's own files, no
    // inline code (the Content Security Policy would refuse it anyway).
    let lower = tillswarm_web::INDEX_HTML.to_ascii_lowercase();
    for (i, _) in lower.match_indices("<link") {
        let tag = &lower[i..i + lower[i..].find('>').expect("a closed tag")];
        assert!(
            tag.contains("href=\"data:") || tag.contains("href=\"/panel/"),
            "an outside link: {tag}"
        );
    }
    for (i, _) in lower.match_indices("<script") {
        let tag = &lower[i..i + lower[i..].find('>').expect("a closed tag")];
        assert!(
            tag.contains("type=\"module\"") && tag.contains("src=\"/panel/js/"),
            "{tag}"
        );
        let asset = tag
            .split("src=\"/panel/")
            .nth(1)
            .and_then(|r| r.split('"').next());
        assert!(
            asset.and_then(tillswarm_web::asset).is_some(),
            "{tag}: not embedded"
        );
    }
    assert_eq!(
        lower.matches("</script>").count(),
        lower.matches("<script").count()
    );
    assert!(!lower.contains("<style"), "inline style in the page");
    assert!(
        !lower.contains(" onclick=") && !lower.contains(" onload="),
        "inline handler"
    );
}

#[tokio::test]
async fn every_api_call_of_the_panel_is_documented() {
    let (mut uses, mut problems) = (Vec::new(), Vec::new());
    for (path, text) in sources() {
        let (u, p) = check(text);
        uses.extend(u);
        problems.extend(p.into_iter().map(|p| format!("{path}: {p}")));
    }
    assert!(
        problems.is_empty(),
        "API uses of the panel that openapi.json does not document:\n{}",
        problems.join("\n")
    );
    let distinct: BTreeSet<Use> = uses.into_iter().collect();
    // What the operator must be able to do; each needs its call.
    let required = [
        ("GET", "/api/v1/devices"),
        ("POST", "/api/v1/devices/{}/approve"),
        ("GET", "/api/v1/stores"),
        ("GET", "/api/v1/groups"),
        ("POST", "/api/v1/groups"),
        ("GET", "/api/v1/groups/{}"),
        ("PATCH", "/api/v1/groups/{}"),
        ("DELETE", "/api/v1/groups/{}"),
        ("GET", "/api/v1/packages"),
        ("POST", "/api/v1/packages"),
        ("DELETE", "/api/v1/packages/{}"),
        ("GET", "/api/v1/tasks"),
        ("POST", "/api/v1/tasks"),
        ("GET", "/api/v1/tasks/{}"),
        ("DELETE", "/api/v1/tasks/{}"),
        ("POST", "/api/v1/tasks/{}/pause"),
        ("POST", "/api/v1/tasks/{}/resume"),
        ("POST", "/api/v1/tasks/{}/restart"),
        ("POST", "/api/v1/tasks/{}/group"),
        ("GET", "/api/v1/till-types"),
        ("PUT", "/api/v1/till-types/{}"),
        ("GET", "/api/v1/events"),
        ("GET", "/api/v1/audit"),
        ("GET", "/api/v1/stores/{}/wan"),
        ("GET", "/api/v1/tasks/{}/wan"),
        ("GET", "/api/v1/devices/{}"),
        ("GET", "/api/v1/rollouts"),
        ("POST", "/api/v1/rollouts"),
    ];
    let missing: Vec<_> = required
        .iter()
        .filter(|(m, p)| {
            !distinct.contains(&Use {
                method: (*m).to_owned(),
                path: (*p).to_owned(),
            })
        })
        .collect();
    assert!(
        missing.is_empty(),
        "the panel never calls {missing:?}; found {distinct:?}"
    );
}

#[test]
fn the_check_catches_undocumented_and_unrecognised_calls() {
    // Guards the test above: each of these must be reported.
    let bad = [
        // An action the API does not have.
        "api(\"POST\", `/api/v1/tasks/${t.id}/frobnicate`)",
        // A documented path with a method it does not take.
        "api(\"PUT\", \"/api/v1/tasks\")",
        // Concatenation leaves a trailing slash that matches nothing.
        "api(\"GET\", \"/api/v1/devices/\" + guid)",
        // A call the checker cannot read the method of.
        "fetch(\"/api/v1/tasks\")",
        // A renamed route.
        "api('GET', '/api/v1/till_types')",
    ];
    for snippet in bad {
        let (_, problems) = check(snippet);
        assert_eq!(problems.len(), 1, "{snippet}: {problems:?}");
    }
    let good = "api(\"POST\", `/api/v1/devices/${encodeURIComponent(d.guid)}/approve`); \
                xhr.open(\"POST\", \"/api/v1/packages?\" + q); \
                api(\"GET\", \"/api/v1/tasks\", { query: { page } }); \
                <a href=\"/api/v1/openapi.json\"> \
                csv.href = \"/api/v1/audit?format=csv&\" + q; \
                new EventSource(\"/api/v1/events\");";
    let (uses, problems) = check(good);
    assert!(problems.is_empty(), "{problems:?}");
    let got: Vec<String> = uses
        .iter()
        .map(|u| format!("{} {}", u.method, u.path))
        .collect();
    assert_eq!(
        got,
        [
            "POST /api/v1/devices/{}/approve",
            "POST /api/v1/packages",
            "GET /api/v1/tasks",
            "GET /api/v1/openapi.json",
            "GET /api/v1/audit",
            "GET /api/v1/events",
        ]
    );
}
