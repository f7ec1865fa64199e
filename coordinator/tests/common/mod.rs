//! Shared by the access tests: a coordinator in a temporary folder behind its
//! route tree, with a token per role, and requests driven through `warp::test`.

#![allow(dead_code)]

pub mod fleet;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;
use tillswarm_coordinator::auth::{Caller, Role};
use tillswarm_coordinator::clock::ManualClock;
use tillswarm_coordinator::service::access::{NewTokenInput, NewUserInput};
use tillswarm_coordinator::{Config, Coordinator};
use tillswarm_protocol::DeviceId;
use tillswarm_protocol::api::DeviceLogin;
use tillswarm_protocol::manifest::SecretKey;
use tillswarm_protocol::trust::{self, Domain};
use warp::filters::BoxedFilter;
use warp::http::{HeaderMap, StatusCode};
use warp::reply::Response;

/// Where the tests pretend the coordinator is reached.
pub const HOST: &str = "hq.example:8080";
/// The coordinator's own origin for [`HOST`] over plain HTTP.
pub const OWN_ORIGIN: &str = "http://hq.example:8080";
/// A password every test user gets.
pub const PASSWORD: &str = "correct horse battery staple";

/// A coordinator, its routes, a manual clock and one admin-made token per role.
pub struct Api {
    pub dir: tempfile::TempDir,
    pub coordinator: Coordinator,
    pub routes: BoxedFilter<(Response,)>,
    pub clock: Arc<ManualClock>,
    pub tokens: BTreeMap<Role, String>,
}

/// A response with its body collected.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: bytes::Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{} answered a non-JSON body ({e}): {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn code(&self) -> String {
        self.json()["code"].as_str().unwrap_or_default().to_owned()
    }

    /// The session cookie's value from `Set-Cookie`, if one is set.
    pub fn session_cookie(&self) -> Option<String> {
        let v = self.headers.get("set-cookie")?.to_str().ok()?;
        let (pair, _) = v.split_once(';')?;
        let (_, value) = pair.split_once('=')?;
        Some(value.to_owned())
    }
}

pub async fn api() -> Api {
    api_with(Config::default()).await
}

pub async fn api_with(config: Config) -> Api {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let coordinator = Coordinator::open_with_clock(
        Config {
            data_dir: dir.path().to_path_buf(),
            ..config
        },
        clock.clone(),
    )
    .await
    .expect("open coordinator");
    let mut tokens = BTreeMap::new();
    for role in Role::ALL {
        let t = coordinator
            .create_token(
                NewTokenInput {
                    name: format!("{role}-token"),
                    role,
                    expires_days: None,
                },
                &Caller::system("test"),
            )
            .await
            .expect("token");
        tokens.insert(role, t.token_secret);
    }
    Api {
        routes: tillswarm_coordinator::http::routes(coordinator.clone()),
        dir,
        coordinator,
        clock,
        tokens,
    }
}

/// Till `d`'s device key (deterministic, from its GUID).
pub fn key_of(d: DeviceId) -> SecretKey {
    let mut seed = [7u8; 32];
    seed[..16].copy_from_slice(d.as_bytes());
    SecretKey::from_seed(seed)
}

/// Logs `d` in with [`key_of`] as its node does: a device token, or `None`
/// while it waits for approval.
pub async fn log_in(c: &Coordinator, d: DeviceId) -> Option<String> {
    let challenge = c.device_challenge(d).expect("challenge").challenge;
    let key = key_of(d);
    let message = trust::login_message(&d, &challenge, &key.public());
    c.device_login(
        DeviceLogin {
            device_id: d,
            public_key: key.public(),
            signature: trust::sign_bytes(&key, Domain::DeviceLogin, &message),
            challenge,
            enroll_token: None,
        },
        "127.0.0.1".into(),
    )
    .await
    .expect("login")
    .token
}

/// A device token of `d`, admitting it first if it is new (it logs in and
/// waits, then an admin approves it).
pub async fn device_token(c: &Coordinator, d: DeviceId) -> String {
    if let Some(t) = log_in(c, d).await {
        return t;
    }
    c.approve_device(d, &Caller::system("test"))
        .await
        .expect("approve");
    log_in(c, d).await.expect("approved")
}

impl Api {
    pub async fn send(&self, req: warp::test::RequestBuilder) -> Reply {
        self.send_from(req, "192.0.2.10:40000").await
    }

    /// A request from the client address `addr`.
    pub async fn send_from(&self, req: warp::test::RequestBuilder, addr: &str) -> Reply {
        let r = req
            .remote_addr(addr.parse().expect("addr"))
            .reply(&self.routes)
            .await;
        let (parts, body) = r.into_parts();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    /// A request with a bearer token (or none).
    pub async fn with_token(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Reply {
        let mut req = warp::test::request()
            .method(method)
            .path(path)
            .header("host", HOST);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        self.send(req).await
    }

    /// A request as `role`'s token.
    pub async fn as_role(&self, role: Role, method: &str, path: &str, body: Option<&str>) -> Reply {
        self.with_token(Some(&self.tokens[&role]), method, path, body)
            .await
    }

    /// Adds a user with [`PASSWORD`].
    pub async fn add_user(&self, name: &str, role: Role) {
        self.coordinator
            .add_user(
                NewUserInput {
                    name: name.into(),
                    role,
                    password: Some(PASSWORD.into()),
                },
                &Caller::system("test"),
            )
            .await
            .expect("add user");
    }

    /// Logs in as the browser on the coordinator's own pages would.
    pub async fn login(&self, name: &str, password: &str) -> Reply {
        self.login_from(name, password, "192.0.2.10:40000").await
    }

    /// [`Api::login`] from the client address `addr`.
    pub async fn login_from(&self, name: &str, password: &str, addr: &str) -> Reply {
        let body = serde_json::json!({"username": name, "password": password}).to_string();
        self.send_from(
            warp::test::request()
                .method("POST")
                .path("/api/v1/session")
                .header("host", HOST)
                .header("origin", OWN_ORIGIN)
                .header("content-type", "application/json")
                .body(body),
            addr,
        )
        .await
    }

    /// A request with a session cookie; `origin` and `content_type` as given.
    pub async fn with_cookie(
        &self,
        cookie: &str,
        method: &str,
        path: &str,
        origin: Option<&str>,
        content_type: Option<&str>,
        body: &str,
    ) -> Reply {
        let mut req = warp::test::request()
            .method(method)
            .path(path)
            .header("host", HOST)
            .header("cookie", format!("tillswarm_session={cookie}"));
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        self.send(req.body(body)).await
    }

    /// The audit log, newest first (as the admin token reads it).
    pub async fn audit(&self, query: &str) -> Vec<Value> {
        let r = self
            .as_role(
                Role::Admin,
                "GET",
                &format!("/api/v1/audit?per_page=1000{query}"),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        r.json()["items"].as_array().expect("items").clone()
    }
}
