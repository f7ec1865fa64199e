//! Logging in and out: cookies, idle and absolute expiry, the slow-down of
//! repeated attempts, the first-admin hint, users managed over the API, and
//! changing one's own password.

mod common;

use common::{OWN_ORIGIN, PASSWORD, api, api_with};
use tillswarm_coordinator::Config;
use tillswarm_coordinator::auth::Role;
use warp::http::StatusCode;

#[tokio::test]
async fn a_fresh_coordinator_says_how_to_create_the_first_admin() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = tillswarm_coordinator::Coordinator::open(Config {
        data_dir: dir.path().to_path_buf(),
        ..Default::default()
    })
    .await
    .expect("open");
    let routes = tillswarm_coordinator::http::routes(c);
    let r = warp::test::request()
        .method("POST")
        .path("/api/v1/tasks")
        .header("content-type", "application/json")
        .body("{}")
        .reply(&routes)
        .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let v: serde_json::Value = serde_json::from_slice(r.body()).expect("json");
    assert_eq!(v["code"], "no_operators");
    assert!(v["message"].as_str().expect("message").contains("user add"));
}

#[tokio::test]
async fn login_sets_a_strict_cookie_and_logout_ends_the_session() {
    let api = api().await;
    api.add_user("anna", Role::Viewer).await;
    let r = api.login("anna", PASSWORD).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.json()["username"], "anna");
    assert_eq!(r.json()["role"], "viewer");
    let set = r.headers["set-cookie"].to_str().expect("cookie").to_owned();
    for part in [
        "tillswarm_session=",
        "HttpOnly",
        "SameSite=Strict",
        "Path=/",
        "Max-Age=43200",
    ] {
        assert!(set.contains(part), "{set}");
    }
    assert!(
        !set.contains("Secure"),
        "no Secure flag over plain HTTP: {set}"
    );
    let cookie = r.session_cookie().expect("cookie");
    let me = api
        .with_cookie(&cookie, "GET", "/api/v1/session", None, None, "")
        .await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.json()["auth"], "session");
    // A viewer reads but may not change.
    let r = api
        .with_cookie(&cookie, "GET", "/api/v1/devices", None, None, "")
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = api
        .with_cookie(
            &cookie,
            "POST",
            "/api/v1/groups",
            Some(OWN_ORIGIN),
            Some("application/json"),
            r#"{"name":"x"}"#,
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::FORBIDDEN, "forbidden".into())
    );
    // Logging out clears the cookie and ends the session on the server.
    let r = api
        .with_cookie(
            &cookie,
            "DELETE",
            "/api/v1/session",
            Some(OWN_ORIGIN),
            Some("application/json"),
            "",
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(
        r.headers["set-cookie"]
            .to_str()
            .expect("cookie")
            .contains("Max-Age=0")
    );
    let r = api
        .with_cookie(&cookie, "GET", "/api/v1/session", None, None, "")
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNAUTHORIZED, "invalid_credentials".into())
    );
    let rows = api.audit("&action=session").await;
    let actions: Vec<&str> = rows
        .iter()
        .rev()
        .map(|r| r["action"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(actions, ["session.login", "session.logout"]);
    assert_eq!(rows[1]["actor"], "anna");
    assert_eq!(rows[1]["role"], "viewer");
}

#[tokio::test]
async fn wrong_credentials_get_one_generic_answer_and_are_audited() {
    let api = api().await;
    api.add_user("anna", Role::Operator).await;
    let wrong_password = api.login("anna", "not the password").await;
    let unknown_user = api.login("nobody", PASSWORD).await;
    let bad_name = api.login("x y;--", PASSWORD).await;
    for r in [&wrong_password, &unknown_user, &bad_name] {
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(r.json()["message"], "wrong user name or password");
        assert!(r.headers.get("set-cookie").is_none());
    }
    let rows = api.audit("&action=session.login&outcome=denied").await;
    assert_eq!(rows.len(), 3);
    assert!(
        rows.iter()
            .any(|r| r["actor"] == "nobody" && r["actor_kind"] == "anonymous")
    );
    assert!(
        rows.iter()
            .all(|r| r["client"] == "192.0.2.10" && r["status"] == 401)
    );
    // Missing fields are a 400, not a login attempt.
    let r = api
        .send(
            warp::test::request()
                .method("POST")
                .path("/api/v1/session")
                .header("host", common::HOST)
                .header("content-type", "application/json")
                .body(r#"{"username":"anna"}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // A login form posted from a foreign page is refused (login CSRF).
    let r = api
        .send(
            warp::test::request()
                .method("POST")
                .path("/api/v1/session")
                .header("host", common::HOST)
                .header("origin", "http://evil.example")
                .header("content-type", "application/json")
                .body(format!(r#"{{"username":"anna","password":"{PASSWORD}"}}"#)),
        )
        .await;
    assert_eq!((r.status, r.code()), (StatusCode::FORBIDDEN, "csrf".into()));
}

#[tokio::test]
async fn repeated_attempts_are_slowed_per_user_and_per_address() {
    let api = api_with(Config {
        login_user_burst: 3,
        login_user_period_s: 60,
        login_client_burst: 5,
        login_client_period_s: 60,
        ..Default::default()
    })
    .await;
    api.add_user("anna", Role::Operator).await;
    for _ in 0..3 {
        assert_eq!(
            api.login("anna", "guess").await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    // The fourth attempt for anna is refused before the password is checked,
    // even with the right password.
    let r = api.login("anna", PASSWORD).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::TOO_MANY_REQUESTS, "too_many_attempts".into())
    );
    let retry: u64 = r.headers["retry-after"]
        .to_str()
        .expect("header")
        .parse()
        .expect("seconds");
    assert!((1..=61).contains(&retry), "{retry}");
    // Guessing from one address does not lock anna out: from her own
    // address her password works.
    let r = api.login_from("anna", PASSWORD, "198.51.100.7:5000").await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    // Other names from the guessing address, until the address runs out too
    // (5 attempts: the refused one counted).
    assert_eq!(
        api.login("boris", "guess").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        api.login("clara", "guess").await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    // An IPv6 client counts by its /64: a fresh address in it buys nothing.
    for i in 0..5 {
        let r = api
            .login_from("dora", "guess", &format!("[2001:db8:7:7::{i}]:1"))
            .await;
        assert_ne!(r.status, StatusCode::OK);
    }
    let r = api
        .login_from("erik", "guess", "[2001:db8:7:7::99]:1")
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    let rows = api.audit("&action=session.login").await;
    let ok: Vec<_> = rows.iter().filter(|r| r["outcome"] == "ok").collect();
    assert_eq!(ok.len(), 1);
    assert_eq!(
        (ok[0]["actor"].clone(), ok[0]["actor_kind"].clone()),
        ("anna".into(), "user".into())
    );
    assert_eq!(
        rows.len(),
        3 + 1 + 1 + 3,
        "refused (429) attempts leave no rows: {rows:#?}"
    );
}

#[tokio::test]
async fn sessions_end_when_idle_and_at_their_absolute_expiry() {
    let api = api_with(Config {
        session_idle_timeout_s: 600,
        session_max_age_s: 3600,
        ..Default::default()
    })
    .await;
    api.add_user("anna", Role::Viewer).await;
    let cookie = api
        .login("anna", PASSWORD)
        .await
        .session_cookie()
        .expect("cookie");
    let me = |c: String| {
        let api = &api;
        async move {
            api.with_cookie(&c, "GET", "/api/v1/session", None, None, "")
                .await
                .status
        }
    };
    api.clock.advance_ms(599_000);
    assert_eq!(
        me(cookie.clone()).await,
        StatusCode::OK,
        "used within the idle time"
    );
    api.clock.advance_ms(601_000);
    assert_eq!(
        me(cookie).await,
        StatusCode::UNAUTHORIZED,
        "idle for over 10 minutes"
    );
    // Kept busy, a session still ends one hour after login.
    let cookie = api
        .login("anna", PASSWORD)
        .await
        .session_cookie()
        .expect("cookie");
    for _ in 0..11 {
        api.clock.advance_ms(300_000);
        assert_eq!(me(cookie.clone()).await, StatusCode::OK);
    }
    api.clock.advance_ms(300_000);
    assert_eq!(
        me(cookie).await,
        StatusCode::UNAUTHORIZED,
        "past the absolute expiry"
    );
}

#[tokio::test]
async fn admins_manage_users_and_users_change_their_own_password() {
    let api = api().await;
    let admin = api.tokens[&Role::Admin].clone();
    let r = api
        .with_token(
            Some(&admin),
            "POST",
            "/api/v1/users",
            Some(r#"{"name":"vera","role":"approver"}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let generated = r.json()["password"]
        .as_str()
        .expect("generated password")
        .to_owned();
    assert!(generated.len() >= 20);
    let cookie = api
        .login("vera", &generated)
        .await
        .session_cookie()
        .expect("cookie");
    let elsewhere = api
        .login("vera", &generated)
        .await
        .session_cookie()
        .expect("cookie");
    // Own password: the current one must be right, the new one long enough.
    let change = |body: String| {
        let (api, cookie) = (&api, cookie.clone());
        async move {
            api.with_cookie(
                &cookie,
                "POST",
                "/api/v1/session/password",
                Some(OWN_ORIGIN),
                Some("application/json"),
                &body,
            )
            .await
        }
    };
    let r = change(format!(r#"{{"current":"wrong","password":"{PASSWORD}"}}"#)).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "wrong_password".into())
    );
    let r = change(format!(r#"{{"current":"{generated}","password":"short"}}"#)).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "weak_password".into())
    );
    let r = change(format!(
        r#"{{"current":"{generated}","password":"{PASSWORD}"}}"#
    ))
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert!(
        r.json().get("password").is_none(),
        "a chosen password is not echoed"
    );
    // A new password ends the user's other sessions and keeps this one.
    let r = api
        .with_cookie(&elsewhere, "GET", "/api/v1/session", None, None, "")
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = api
        .with_cookie(&cookie, "GET", "/api/v1/session", None, None, "")
        .await;
    assert_eq!(r.status, StatusCode::OK);
    // An admin setting it ends every session of the user.
    let r = api
        .with_token(
            Some(&admin),
            "POST",
            "/api/v1/users/vera/password",
            Some(r#"{"password":"another long password"}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = api
        .with_cookie(&cookie, "GET", "/api/v1/session", None, None, "")
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // (From another address: five attempts on vera from this one are spent,
    // own-password changes counting like logins.)
    let elsewhere_addr = "198.51.100.9:4000";
    assert_eq!(
        api.login_from("vera", "another long password", elsewhere_addr)
            .await
            .status,
        StatusCode::OK
    );
    // Listing never shows hashes; the last admin stays.
    let r = api
        .with_token(Some(&admin), "GET", "/api/v1/users", None)
        .await;
    assert!(!String::from_utf8_lossy(&r.body).contains("argon2"));
    let r = api
        .with_token(
            Some(&admin),
            "POST",
            "/api/v1/users",
            Some(r#"{"name":"root","role":"admin"}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = api
        .with_token(Some(&admin), "DELETE", "/api/v1/users/root", None)
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::CONFLICT, "last_admin".into())
    );
    let r = api
        .with_token(Some(&admin), "DELETE", "/api/v1/users/vera", None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        api.login_from("vera", "another long password", elsewhere_addr)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    for body in [
        r#"{"name":"","role":"viewer"}"#,
        r#"{"name":"a/b","role":"viewer"}"#,
        r#"{"name":"ok","role":"god"}"#,
        r#"{"name":"ok","role":"viewer","password":"short"}"#,
    ] {
        let r = api
            .with_token(Some(&admin), "POST", "/api/v1/users", Some(body))
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}");
    }
}

#[tokio::test]
async fn behind_a_tls_proxy_cookies_are_secure_and_host_bound() {
    let api = api_with(Config {
        secure_cookies: true,
        ..Default::default()
    })
    .await;
    api.add_user("anna", Role::Viewer).await;
    let r = api.login("anna", PASSWORD).await;
    let set = r.headers["set-cookie"].to_str().expect("cookie").to_owned();
    assert!(set.starts_with("__Host-tillswarm_session="), "{set}");
    assert!(set.contains("; Secure") && set.contains("Path=/"), "{set}");
    let value = r.session_cookie().expect("cookie");
    // Only the __Host- cookie counts: one planted under the plain name does not.
    let plain = api
        .with_cookie(&value, "GET", "/api/v1/session", None, None, "")
        .await;
    assert_eq!(plain.status, StatusCode::UNAUTHORIZED);
    let r = api
        .send(
            warp::test::request()
                .method("GET")
                .path("/api/v1/session")
                .header("cookie", format!("__Host-tillswarm_session={value}")),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn a_login_behind_a_basic_auth_proxy_ignores_the_basic_header() {
    let api = api().await;
    api.add_user("anna", Role::Viewer).await;
    let body = format!(r#"{{"username":"anna","password":"{PASSWORD}"}}"#);
    let r = api
        .send(
            warp::test::request()
                .method("POST")
                .path("/api/v1/session")
                .header("authorization", "Basic YW5uYTpwcm94eQ==")
                .header("content-type", "application/json")
                .body(body),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    // Elsewhere a malformed Authorization header is refused, not ignored.
    let r = api
        .send(
            warp::test::request()
                .method("GET")
                .path("/api/v1/devices")
                .header("authorization", "Basic YW5uYTpwcm94eQ=="),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn an_allowed_origin_that_is_not_an_origin_is_refused_at_start() {
    for bad in ["null", "*", "panel.example", "ftp://x", "https://u@x"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let opened = tillswarm_coordinator::Coordinator::open(Config {
            data_dir: dir.path().to_path_buf(),
            allowed_origins: vec![bad.into()],
            ..Default::default()
        })
        .await;
        assert!(opened.is_err(), "{bad} was accepted");
    }
}
