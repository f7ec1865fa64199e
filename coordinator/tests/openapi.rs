//! Checks the OpenAPI document served at `/api/v1/openapi.json` against the
//! routes: every documented operation must reach a route (no route-level 404 or
//! 405), and the documented operations must be exactly the routes the code
//! defines (kept by hand in [`ROUTES`]).

use std::collections::BTreeSet;

use serde_json::Value;
use tillswarm_coordinator::http::openapi::DOCUMENT;
use tillswarm_coordinator::{Config, Coordinator};
use warp::http::StatusCode;

/// Every route the code defines, as (method, OpenAPI path template), read from
/// `src/http.rs`, `src/http/node.rs`, `src/http/operator.rs`,
/// `src/http/rollouts.rs`, `src/http/wan.rs` and `src/http/account.rs`.
///
/// This list must be updated with the routes: when a route is added, removed or
/// changed, change it here and in `src/http/openapi.json`.
const ROUTES: &[(&str, &str)] = &[
    // http.rs
    ("GET", "/"),
    // http/assets.rs
    ("GET", "/panel/{path}"),
    ("GET", "/healthz"),
    ("GET", "/metrics"),
    ("GET", "/api/v1/openapi.json"),
    // http/node.rs
    ("POST", "/api/v1/node/challenge"),
    ("POST", "/api/v1/node/session"),
    ("POST", "/api/v1/node/heartbeat"),
    ("POST", "/api/v1/node/progress"),
    ("GET", "/api/v1/node/manifests/{package_id}"),
    ("GET", "/api/v1/node/chunks/{hash}"),
    // http/operator.rs: devices and stores
    ("GET", "/api/v1/devices"),
    ("POST", "/api/v1/devices/import"),
    ("GET", "/api/v1/devices/{guid}"),
    ("DELETE", "/api/v1/devices/{guid}"),
    ("POST", "/api/v1/devices/{guid}/approve"),
    ("POST", "/api/v1/devices/{guid}/reset-key"),
    ("GET", "/api/v1/stores"),
    // http/wan.rs
    ("GET", "/api/v1/stores/{id}/wan"),
    // http/events.rs
    ("GET", "/api/v1/events"),
    // http/operator.rs: groups
    ("GET", "/api/v1/groups"),
    ("POST", "/api/v1/groups"),
    ("GET", "/api/v1/groups/{id}"),
    ("PUT", "/api/v1/groups/{id}"),
    ("PATCH", "/api/v1/groups/{id}"),
    ("DELETE", "/api/v1/groups/{id}"),
    // http/operator.rs: packages
    ("GET", "/api/v1/packages"),
    ("POST", "/api/v1/packages"),
    ("GET", "/api/v1/packages/{package_id}"),
    ("DELETE", "/api/v1/packages/{package_id}"),
    ("GET", "/api/v1/packages/{package_id}/manifest"),
    ("GET", "/api/v1/packages/{package_id}/bundle"),
    // http/operator.rs: tasks
    ("GET", "/api/v1/tasks"),
    ("POST", "/api/v1/tasks"),
    ("GET", "/api/v1/tasks/{id}"),
    ("DELETE", "/api/v1/tasks/{id}"),
    ("POST", "/api/v1/tasks/{id}/group"),
    ("POST", "/api/v1/tasks/{id}/pause"),
    ("POST", "/api/v1/tasks/{id}/resume"),
    ("POST", "/api/v1/tasks/{id}/restart"),
    // http/wan.rs
    ("GET", "/api/v1/tasks/{id}/wan"),
    // http/rollouts.rs
    ("GET", "/api/v1/rollouts"),
    ("POST", "/api/v1/rollouts"),
    ("GET", "/api/v1/rollouts/{id}"),
    ("POST", "/api/v1/rollouts/{id}/pause"),
    ("POST", "/api/v1/rollouts/{id}/resume"),
    ("POST", "/api/v1/rollouts/{id}/cancel"),
    ("POST", "/api/v1/rollouts/{id}/approve"),
    // http/operator.rs: till types
    ("GET", "/api/v1/till-types"),
    ("PUT", "/api/v1/till-types/{name}"),
    // http/account.rs: the caller's session, users, tokens, the audit log
    ("POST", "/api/v1/session"),
    ("GET", "/api/v1/session"),
    ("DELETE", "/api/v1/session"),
    ("POST", "/api/v1/session/password"),
    ("GET", "/api/v1/users"),
    ("POST", "/api/v1/users"),
    ("DELETE", "/api/v1/users/{name}"),
    ("POST", "/api/v1/users/{name}/password"),
    ("GET", "/api/v1/tokens"),
    ("POST", "/api/v1/tokens"),
    ("DELETE", "/api/v1/tokens/{name}"),
    ("GET", "/api/v1/enroll-tokens"),
    ("POST", "/api/v1/enroll-tokens"),
    ("DELETE", "/api/v1/enroll-tokens/{id}"),
    ("GET", "/api/v1/audit"),
];

const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

fn document() -> Value {
    serde_json::from_str(DOCUMENT).expect("openapi.json is valid JSON")
}

/// Every (METHOD, path template) the document lists, with its operation.
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let paths = doc["paths"].as_object().expect("paths is an object");
    let mut out = Vec::new();
    for (path, item) in paths {
        let item = item.as_object().expect("a path item is an object");
        for (key, op) in item {
            if METHODS.contains(&key.as_str()) {
                out.push((key.to_ascii_uppercase(), path.clone(), op.clone()));
            }
        }
    }
    out
}

/// A valid-looking but unknown value for a path parameter.
fn sample(param: &str) -> &'static str {
    match param {
        "guid" => "00000000-0000-0000-0000-000000000000",
        "package_id" | "hash" => "0000000000000000000000000000000000000000000000000000000000000000",
        "id" => "999999",
        "name" => "standard",
        "path" => "js/no-such-module.js",
        other => panic!("no sample value for path parameter {other:?}: add one to sample()"),
    }
}

fn path_params(template: &str) -> Vec<&str> {
    template
        .split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .collect()
}

fn concrete(template: &str) -> String {
    template
        .split('/')
        .map(
            |seg| match seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(param) => sample(param),
                None => seg,
            },
        )
        .collect::<Vec<_>>()
        .join("/")
}

/// Resolves a local `#/...` reference.
fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let pointer = r.strip_prefix('#').expect("only local references");
            doc.pointer(pointer)
                .unwrap_or_else(|| panic!("dangling reference {r}"))
        }
        None => v,
    }
}

fn collect_refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::Object(map) => {
            for (k, x) in map {
                if k == "$ref" {
                    out.push(x.as_str().expect("$ref is a string"));
                } else {
                    collect_refs(x, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|x| collect_refs(x, out)),
        _ => {}
    }
}

#[test]
fn document_is_openapi_3() {
    let doc = document();
    let version = doc["openapi"].as_str().expect("openapi is a string");
    assert!(version.starts_with("3."), "openapi is {version:?}");
    assert!(
        doc["info"]["description"]
            .as_str()
            .is_some_and(|d| !d.is_empty()),
        "info.description is missing"
    );
    assert!(doc["info"]["title"].is_string());
    assert!(doc["info"]["version"].is_string());
    assert!(
        doc["components"]["schemas"]
            .as_object()
            .is_some_and(|s| !s.is_empty())
    );
}

#[test]
fn references_and_path_parameters_are_consistent() {
    let doc = document();
    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    assert!(!refs.is_empty());
    for r in refs {
        let pointer = r
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("non-local $ref {r}"));
        assert!(doc.pointer(pointer).is_some(), "dangling $ref {r}");
    }
    for (method, path, op) in operations(&doc) {
        let declared: BTreeSet<String> = op["parameters"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|p| resolve(&doc, p))
            .filter(|p| p["in"] == "path")
            .map(|p| {
                assert_eq!(
                    p["required"], true,
                    "{method} {path}: path params are required"
                );
                p["name"].as_str().expect("parameter name").to_owned()
            })
            .collect();
        let in_template: BTreeSet<String> =
            path_params(&path).into_iter().map(str::to_owned).collect();
        assert_eq!(declared, in_template, "{method} {path}: path parameters");
        assert!(
            op["responses"].as_object().is_some_and(|r| !r.is_empty()),
            "{method} {path}: no responses"
        );
    }
}

#[test]
fn documented_routes_equal_the_route_list() {
    let doc = document();
    let documented: BTreeSet<(String, String)> = operations(&doc)
        .into_iter()
        .map(|(m, p, _)| (m, p))
        .collect();
    let listed: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    assert_eq!(listed.len(), ROUTES.len(), "ROUTES lists a route twice");
    let undocumented: Vec<_> = listed.difference(&documented).collect();
    let unknown: Vec<_> = documented.difference(&listed).collect();
    assert!(
        undocumented.is_empty() && unknown.is_empty(),
        "routes missing from openapi.json: {undocumented:?}; documented but not in ROUTES: {unknown:?}"
    );
}

#[tokio::test]
async fn every_documented_route_answers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let coordinator = Coordinator::open(Config {
        data_dir: dir.path().to_path_buf(),
        ..Default::default()
    })
    .await
    .expect("open coordinator");
    let routes = tillswarm_coordinator::http::routes(coordinator);
    let doc = document();
    let ops = operations(&doc);
    assert!(!ops.is_empty(), "the document lists no operation");
    let mut failures = Vec::new();
    for (method, template, op) in ops {
        let path = concrete(&template);
        let mut req = warp::test::request().method(&method).path(&path);
        if matches!(method.as_str(), "POST" | "PUT" | "PATCH") {
            // The first media type the document gives for the body, if any.
            let content_type = op["requestBody"]["content"]
                .as_object()
                .and_then(|c| c.keys().next().cloned())
                .unwrap_or_else(|| "application/json".to_owned());
            // `body` also sets Content-Length.
            req = req.header("content-type", content_type).body("{}");
        }
        let res = req.reply(&routes).await;
        let status = res.status();
        let body = String::from_utf8_lossy(res.body()).into_owned();
        if status == StatusCode::METHOD_NOT_ALLOWED {
            failures.push(format!("{method} {path}: 405 {body}"));
        } else if status == StatusCode::NOT_FOUND {
            match serde_json::from_str::<Value>(&body) {
                Ok(v) if v["code"] == "not_found" && v["message"] != "no such route" => {}
                _ => failures.push(format!("{method} {path}: 404 {body}")),
            }
        }
        if template == "/api/v1/openapi.json" {
            assert_eq!(status, StatusCode::OK);
            assert_eq!(body, DOCUMENT, "the served document is openapi.json");
        }
    }
    assert!(
        failures.is_empty(),
        "documented routes that the router does not serve:\n{}",
        failures.join("\n")
    );
}

#[tokio::test]
async fn an_undocumented_path_is_a_route_level_404() {
    // Guards the check above: the marker it looks for is what the router sends.
    let dir = tempfile::tempdir().expect("tempdir");
    let coordinator = Coordinator::open(Config {
        data_dir: dir.path().to_path_buf(),
        ..Default::default()
    })
    .await
    .expect("open coordinator");
    let routes = tillswarm_coordinator::http::routes(coordinator);
    let res = warp::test::request()
        .method("POST")
        .path("/api/v1/tasks/999999/frobnicate")
        .body("{}")
        .reply(&routes)
        .await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let v: Value = serde_json::from_slice(res.body()).expect("json error body");
    assert_eq!(v["code"], "not_found");
    assert_eq!(v["message"], "no such route");
}
