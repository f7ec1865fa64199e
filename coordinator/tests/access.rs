//! Who may call what. The table test walks every operation in openapi.json,
//! with no credentials, with a wrong token and with a token of each role, and
//! checks the answer against the rule table (`auth::rules::RULES`): a route
//! without a rule, or a rule without a documented route, fails it. It also
//! checks that every authenticated change leaves one audit row and a read none. Then the
//! CSRF defence (the attack from the operators issue, sent from a foreign page
//! with a session cookie), tokens (expiry, revocation) and the audit rows.

mod common;

use std::collections::BTreeSet;

use common::{OWN_ORIGIN, PASSWORD, api};
use serde_json::Value;
use tillswarm_coordinator::auth::Role;
use tillswarm_coordinator::auth::rules::{self, Access};
use tillswarm_coordinator::http::openapi::DOCUMENT;
use tillswarm_protocol::DeviceId;
use warp::http::StatusCode;

const METHODS: &[&str] = &["get", "put", "post", "delete", "patch"];

/// Every (METHOD, template, first request media type) in openapi.json.
fn operations() -> Vec<(String, String, Option<String>)> {
    let doc: Value = serde_json::from_str(DOCUMENT).expect("openapi.json");
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            if METHODS.contains(&method.as_str()) {
                let media = op["requestBody"]["content"]
                    .as_object()
                    .and_then(|c| c.keys().next().cloned());
                out.push((method.to_ascii_uppercase(), path.clone(), media));
            }
        }
    }
    out
}

fn concrete(template: &str) -> String {
    template
        .split('/')
        .map(|seg| match seg {
            "{guid}" => "00000000-0000-0000-0000-000000000000",
            "{package_id}" | "{hash}" => {
                "0000000000000000000000000000000000000000000000000000000000000000"
            }
            "{id}" => "999999",
            "{name}" => "nobody",
            other => other,
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Operator routes are under /api/v1/, except the tills' API and the document.
fn is_operator_route(template: &str) -> bool {
    template.starts_with("/api/v1/")
        && !template.starts_with("/api/v1/node/")
        && template != "/api/v1/openapi.json"
}

/// The tills' routes that need a device token (all but logging in).
fn is_device_route(template: &str) -> bool {
    template.starts_with("/api/v1/node/")
        && !matches!(template, "/api/v1/node/challenge" | "/api/v1/node/session")
}

/// Rows in the audit log.
async fn audit_rows(api: &common::Api) -> u64 {
    let r = api
        .as_role(Role::Admin, "GET", "/api/v1/audit?per_page=1", None)
        .await;
    r.json()["total"].as_u64().expect("total")
}

#[tokio::test]
async fn every_documented_route_answers_each_role_as_its_rule_says() {
    let api = api().await;
    // The event stream would otherwise stay open for its whole lifetime:
    // closed, it answers its `hello` and ends (the guard runs as before).
    api.coordinator.events().close();
    let device = common::device_token(&api.coordinator, DeviceId::from_bytes([0x11; 16])).await;
    let mut failures = Vec::new();
    let mut covered = BTreeSet::new();
    let ops = operations();
    assert!(
        ops.len() > 40,
        "the document lists {} operations",
        ops.len()
    );
    for (method, template, media) in ops {
        let path = concrete(&template);
        let body = media.as_ref().map(|_| "{}");
        let send = |token: Option<String>| {
            let (method, path, media) = (method.clone(), path.clone(), media.clone());
            let api = &api;
            async move {
                let mut req = warp::test::request()
                    .method(&method)
                    .path(&path)
                    .header("host", common::HOST);
                if let Some(t) = token {
                    req = req.header("authorization", format!("Bearer {t}"));
                }
                if let (Some(m), Some(b)) = (media, body) {
                    req = req.header("content-type", m).body(b);
                }
                api.send(req).await.status
            }
        };
        let rule = rules::find(&method, &path);
        if !is_operator_route(&template) {
            if rule.is_some() {
                failures.push(format!(
                    "{method} {template}: not an operator route but has a rule"
                ));
            }
            let status = send(None).await;
            if !is_device_route(&template) {
                if matches!(status.as_u16(), 401 | 403) {
                    failures.push(format!("{method} {template}: open route answered {status}"));
                }
                continue;
            }
            // A till's route: its device token opens it. Packages (manifests,
            // chunks) are also open to any operator's API token; what a till
            // says about itself is not.
            if status != StatusCode::UNAUTHORIZED {
                failures.push(format!(
                    "{method} {template}: answered {status} without a token"
                ));
            }
            let reads_packages = method == "GET";
            for role in [Role::Viewer, Role::Admin] {
                let operator = send(Some(api.tokens[&role].clone())).await;
                if reads_packages == (operator == StatusCode::UNAUTHORIZED) {
                    failures.push(format!(
                        "{method} {template}: answered {operator} to a {role} token"
                    ));
                }
            }
            let till = send(Some(device.clone())).await;
            if matches!(till.as_u16(), 401 | 403) {
                failures.push(format!(
                    "{method} {template}: refused a device token ({till})"
                ));
            }
            continue;
        }
        let Some(rule) = rule else {
            failures.push(format!(
                "{method} {template}: operator route without a rule"
            ));
            continue;
        };
        if rule.path != template {
            failures.push(format!(
                "{method} {template}: matched the rule for {}",
                rule.path
            ));
        }
        covered.insert((rule.method, rule.path));
        let before = audit_rows(&api).await;
        let anonymous = send(None).await;
        let wrong = send(Some("tsw_0000".into())).await;
        if audit_rows(&api).await != before {
            failures.push(format!(
                "{method} {template}: an unauthenticated call left an audit row"
            ));
        }
        match rule.access {
            Access::Public => {
                if matches!(anonymous.as_u16(), 401 | 403) {
                    failures.push(format!("{method} {template}: public, answered {anonymous}"));
                }
            }
            Access::Role(needed) => {
                if anonymous != StatusCode::UNAUTHORIZED {
                    failures.push(format!("{method} {template}: anonymous got {anonymous}"));
                }
                if wrong != StatusCode::UNAUTHORIZED {
                    failures.push(format!("{method} {template}: a wrong token got {wrong}"));
                }
                for role in Role::ALL {
                    let before = audit_rows(&api).await;
                    let status = send(Some(api.tokens[&role].clone())).await;
                    // Every authenticated change leaves exactly one row (done,
                    // failed or refused); a read leaves none.
                    let rows = audit_rows(&api).await - before;
                    let expected = u64::from(rules::is_change(&method));
                    if rows != expected {
                        failures.push(format!(
                            "{method} {template}: {role} ({status}) left {rows} audit rows, not {expected}"
                        ));
                    }
                    let allowed = role >= needed;
                    let ok = if allowed {
                        !matches!(status.as_u16(), 401 | 403)
                    } else {
                        status == StatusCode::FORBIDDEN
                    };
                    if !ok {
                        failures.push(format!(
                            "{method} {template}: {role} (needs {needed}) got {status}"
                        ));
                    }
                }
            }
        }
    }
    for r in rules::RULES {
        if !covered.contains(&(r.method, r.path)) {
            failures.push(format!(
                "rule {} {} has no documented operation",
                r.method, r.path
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "access table:\n{}",
        failures.join("\n")
    );
}

#[tokio::test]
async fn the_attack_from_a_foreign_page_is_refused_and_bearer_requests_are_exempt() {
    let api = api().await;
    api.add_user("olga", Role::Operator).await;
    let cookie = api
        .login("olga", PASSWORD)
        .await
        .session_cookie()
        .expect("session cookie");
    let task = r#"{"kind":"forced_update","package_id":"0000000000000000000000000000000000000000000000000000000000000000","group_id":1}"#;
    // The issue's attack: text/plain from http://evil.example.
    let r = api
        .with_cookie(
            &cookie,
            "POST",
            "/api/v1/tasks",
            Some("http://evil.example"),
            Some("text/plain"),
            task,
        )
        .await;
    assert_eq!((r.status, r.code()), (StatusCode::FORBIDDEN, "csrf".into()));
    // JSON but from another origin; a form's content type from our own origin;
    // no Origin or Referer at all.
    let r = api
        .with_cookie(
            &cookie,
            "POST",
            "/api/v1/tasks",
            Some("http://evil.example"),
            Some("application/json"),
            task,
        )
        .await;
    assert_eq!(r.code(), "csrf");
    let r = api
        .with_cookie(
            &cookie,
            "POST",
            "/api/v1/tasks",
            Some(OWN_ORIGIN),
            Some("application/x-www-form-urlencoded"),
            task,
        )
        .await;
    assert_eq!(r.code(), "csrf");
    let r = api
        .with_cookie(
            &cookie,
            "POST",
            "/api/v1/tasks",
            None,
            Some("application/json"),
            task,
        )
        .await;
    assert_eq!(r.code(), "csrf");
    // Package upload, the issue's first request, from a foreign page.
    let r = api
        .with_cookie(
            &cookie,
            "POST",
            "/api/v1/packages?name=evil&version=9.9.9",
            Some("http://evil.example"),
            Some("text/plain"),
            "x",
        )
        .await;
    assert_eq!((r.status, r.code()), (StatusCode::FORBIDDEN, "csrf".into()));
    // From the panel itself the same request passes the guard (and fails on
    // its content: the package does not exist).
    let r = api
        .with_cookie(
            &cookie,
            "POST",
            "/api/v1/tasks",
            Some(OWN_ORIGIN),
            Some("application/json"),
            task,
        )
        .await;
    assert_eq!(r.code(), "unknown_package", "{:?}", r.body);
    // A Referer of our own origin stands in for a missing Origin.
    let mut req = warp::test::request()
        .method("DELETE")
        .path("/api/v1/groups/999")
        .header("host", common::HOST)
        .header("cookie", format!("tillswarm_session={cookie}"))
        .header("referer", format!("{OWN_ORIGIN}/#/groups"))
        .header("content-type", "application/json");
    req = req.body("");
    assert_eq!(api.send(req).await.status, StatusCode::NOT_FOUND);
    // Reads need no CSRF proof.
    let r = api
        .with_cookie(
            &cookie,
            "GET",
            "/api/v1/tasks",
            Some("http://evil.example"),
            None,
            "",
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    // A bearer token is exempt: a foreign page cannot attach it.
    let r = api
        .with_token(
            Some(&api.tokens[&Role::Operator]),
            "POST",
            "/api/v1/tasks",
            Some(task),
        )
        .await;
    assert_eq!(r.code(), "unknown_package", "{:?}", r.body);
    // Every refused change is in the audit log, with who and from where.
    let denied = api.audit("&outcome=denied").await;
    let csrf: Vec<&Value> = denied.iter().filter(|r| r["detail"] == "csrf").collect();
    assert_eq!(csrf.len(), 5, "{denied:#?}");
    assert!(
        csrf.iter()
            .all(|r| r["actor"] == "olga" && r["client"] == "192.0.2.10")
    );
}

#[tokio::test]
async fn an_allowed_origin_may_make_changes_with_a_session() {
    let api = common::api_with(tillswarm_coordinator::Config {
        allowed_origins: vec!["https://panel.chain.example/".into()],
        ..Default::default()
    })
    .await;
    api.add_user("olga", Role::Operator).await;
    let cookie = api
        .login("olga", PASSWORD)
        .await
        .session_cookie()
        .expect("cookie");
    let r = api
        .with_cookie(
            &cookie,
            "DELETE",
            "/api/v1/groups/999",
            Some("https://panel.chain.example"),
            Some("application/json"),
            "",
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{:?}", r.body);
}

#[tokio::test]
async fn tokens_fail_from_the_request_after_revocation_or_expiry() {
    let api = api().await;
    let admin = api.tokens[&Role::Admin].clone();
    let r = api
        .with_token(
            Some(&admin),
            "POST",
            "/api/v1/tokens",
            Some(r#"{"name":"ci","role":"operator","expires_days":1}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let created = r.json();
    let secret = created["token_secret"].as_str().expect("secret").to_owned();
    assert!(secret.starts_with("tsw_") && secret.len() >= 4 + 32);
    let listed = api
        .with_token(Some(&admin), "GET", "/api/v1/tokens", None)
        .await;
    assert!(
        !String::from_utf8_lossy(&listed.body).contains(&secret),
        "a listing never shows a secret"
    );
    let whoami = |s: String| {
        let api = &api;
        async move {
            api.with_token(Some(&s), "GET", "/api/v1/session", None)
                .await
        }
    };
    let r = whoami(secret.clone()).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        (r.json()["username"].clone(), r.json()["auth"].clone()),
        ("ci".into(), "token".into())
    );
    // Expiry: one day later it no longer works.
    api.clock.advance_ms(86_400_000);
    assert_eq!(
        whoami(secret.clone()).await.status,
        StatusCode::UNAUTHORIZED
    );
    // Revocation: effective on the next request.
    let r = api
        .with_token(
            Some(&admin),
            "POST",
            "/api/v1/tokens",
            Some(r#"{"name":"ci2","role":"operator"}"#),
        )
        .await;
    let second = r.json()["token_secret"]
        .as_str()
        .expect("secret")
        .to_owned();
    assert_eq!(whoami(second.clone()).await.status, StatusCode::OK);
    let r = api
        .with_token(Some(&admin), "DELETE", "/api/v1/tokens/ci2", None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = whoami(second).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNAUTHORIZED, "invalid_credentials".into())
    );
    assert!(r.headers.contains_key("www-authenticate"));
    // Bad token requests are refused with a clear error.
    for body in [
        r#"{"name":"x y","role":"operator"}"#,
        r#"{"name":"x","role":"root"}"#,
        r#"{"name":"x","role":"viewer","expires_days":0}"#,
        r#"{"name":"x","role":"viewer","expires_days":3651}"#,
        r#"{"name":"x","role":"viewer","extra":1}"#,
    ] {
        let r = api
            .with_token(Some(&admin), "POST", "/api/v1/tokens", Some(body))
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {:?}", r.body);
    }
    let r = api
        .with_token(
            Some(&admin),
            "POST",
            "/api/v1/tokens",
            Some(r#"{"name":"CI","role":"viewer"}"#),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::CONFLICT, "token_exists".into())
    );
}

#[tokio::test]
async fn each_change_is_audited_with_its_actor_and_reads_are_not() {
    let api = api().await;
    let before = api.audit("").await.len();
    for path in [
        "/api/v1/groups",
        "/api/v1/tasks",
        "/api/v1/devices",
        "/api/v1/stores",
    ] {
        assert_eq!(
            api.as_role(Role::Viewer, "GET", path, None).await.status,
            StatusCode::OK
        );
    }
    assert_eq!(
        api.audit("").await.len(),
        before,
        "reads leave no audit rows"
    );
    let r = api
        .as_role(
            Role::Operator,
            "POST",
            "/api/v1/groups",
            Some(r#"{"name":"pilot"}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let id = r.json()["id"].as_i64().expect("id");
    let r = api
        .as_role(
            Role::Operator,
            "DELETE",
            &format!("/api/v1/groups/{id}"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    // A failed change and a refused one are recorded too.
    let r = api
        .as_role(
            Role::Operator,
            "POST",
            "/api/v1/groups",
            Some(r#"{"name":"All"}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let r = api
        .as_role(
            Role::Viewer,
            "POST",
            "/api/v1/groups",
            Some(r#"{"name":"x"}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let rows = api.audit("&action=group").await;
    let seen: Vec<(String, String, String, i64, String)> = rows
        .iter()
        .rev()
        .map(|r| {
            (
                r["action"].as_str().unwrap_or_default().to_owned(),
                r["outcome"].as_str().unwrap_or_default().to_owned(),
                r["actor"].as_str().unwrap_or_default().to_owned(),
                r["status"].as_i64().unwrap_or_default(),
                r["target"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let target = format!("group:{id}");
    assert_eq!(
        seen,
        [
            (
                "group.create".into(),
                "ok".into(),
                "operator-token".into(),
                201,
                target.clone()
            ),
            (
                "group.delete".into(),
                "ok".into(),
                "operator-token".into(),
                204,
                target
            ),
            (
                "group.create".into(),
                "failed".into(),
                "operator-token".into(),
                409,
                String::new()
            ),
            (
                "group.create".into(),
                "denied".into(),
                "viewer-token".into(),
                403,
                String::new()
            ),
        ]
    );
    assert!(
        rows.iter()
            .all(|r| r["actor_kind"] == "token" && r["client"] == "192.0.2.10")
    );
    // CSV export of the same rows, and filters that are refused.
    let r = api
        .as_role(
            Role::Admin,
            "GET",
            "/api/v1/audit?format=csv&action=group",
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.headers["content-type"]
            .to_str()
            .expect("ct")
            .starts_with("text/csv")
    );
    let text = String::from_utf8_lossy(&r.body);
    assert_eq!(text.lines().count(), 5, "{text}");
    for bad in [
        "?since=yesterday",
        "?outcome=maybe",
        "?format=xml",
        "?per_page=0",
        "?colour=red",
    ] {
        let r = api
            .as_role(Role::Admin, "GET", &format!("/api/v1/audit{bad}"), None)
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
    }
}

#[tokio::test]
async fn metrics_are_open_unless_a_metrics_token_is_set() {
    let open = api().await;
    let r = open.with_token(None, "GET", "/metrics", None).await;
    assert_eq!(r.status, StatusCode::OK);
    let api = common::api_with(tillswarm_coordinator::Config {
        metrics_token: Some("scrape-secret".into()),
        ..Default::default()
    })
    .await;
    for (token, expected) in [
        (None, StatusCode::UNAUTHORIZED),
        (Some("wrong"), StatusCode::UNAUTHORIZED),
        (
            Some(api.tokens[&Role::Admin].as_str()),
            StatusCode::UNAUTHORIZED,
        ),
        (Some("scrape-secret"), StatusCode::OK),
    ] {
        let r = api.with_token(token, "GET", "/metrics", None).await;
        assert_eq!(r.status, expected, "{token:?}");
    }
    // /healthz stays open whatever is set.
    assert_eq!(
        api.with_token(None, "GET", "/healthz", None).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn the_scheduler_purges_audit_rows_past_retention_and_ended_sessions() {
    let api = common::api_with(tillswarm_coordinator::Config {
        audit_retention_days: 2,
        ..Default::default()
    })
    .await;
    api.add_user("olga", Role::Operator).await;
    let cookie = api
        .login("olga", PASSWORD)
        .await
        .session_cookie()
        .expect("cookie");
    let r = api
        .as_role(
            Role::Operator,
            "POST",
            "/api/v1/groups",
            Some(r#"{"name":"old"}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let old = api.audit("").await.len();
    assert!(old >= 3, "user add, login, group create");
    // Three days on: the first tick purges rows older than two days.
    api.clock.advance_ms(3 * 86_400_000);
    let r = api
        .as_role(
            Role::Operator,
            "POST",
            "/api/v1/groups",
            Some(r#"{"name":"new"}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    api.coordinator.tick().await.expect("tick");
    let rows = api.audit("").await;
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(rows[0]["target"], format!("group:{}", r.json()["id"]));
    let r = api
        .with_cookie(&cookie, "GET", "/api/v1/session", None, None, "")
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}
