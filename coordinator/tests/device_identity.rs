//! Device identity over HTTP: tills log in with their own key (a signed,
//! one-time challenge) and may then speak only for themselves. Each test sends
//! what an attacker on the network, or a till gone bad, would.

mod common;

use common::{Api, api, key_of};
use serde_json::{Value, json};
use tillswarm_coordinator::auth::Role;
use tillswarm_protocol::DeviceId;
use tillswarm_protocol::manifest::SecretKey;
use tillswarm_protocol::trust::{self, Domain};
use warp::http::StatusCode;

const TILL_1: &str = "71110000-0000-0000-0000-000000000001";
const TILL_2: &str = "71110000-0000-0000-0000-000000000002";
const STRANGER: &str = "0badc0de-0000-4000-8000-000000000001";

fn guid(s: &str) -> DeviceId {
    s.parse().expect("guid")
}

async fn with_registry() -> Api {
    let api = api().await;
    let registry = std::fs::read(tillswarm_fixtures::dir().join("registry/sample-chain.json"))
        .expect("registry");
    let r = api
        .send(
            warp::test::request()
                .method("POST")
                .path("/api/v1/devices/import")
                .header("host", common::HOST)
                .header(
                    "authorization",
                    format!("Bearer {}", api.tokens[&Role::Admin]),
                )
                .header("content-type", "application/json")
                .body(registry),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    api
}

async fn post(api: &Api, path: &str, token: Option<&str>, body: Value) -> common::Reply {
    api.with_token(token, "POST", path, Some(&body.to_string()))
        .await
}

async fn challenge(api: &Api, device: &str) -> String {
    let r = post(
        api,
        "/api/v1/node/challenge",
        None,
        json!({"device_id": device}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    r.json()["challenge"]
        .as_str()
        .expect("challenge")
        .to_owned()
}

/// A login body for `device` signed by `key` over `challenge`.
fn signed_login(device: &str, key: &SecretKey, challenge: &str, enroll: Option<&str>) -> Value {
    let message = trust::login_message(&guid(device), challenge, &key.public());
    json!({
        "device_id": device,
        "public_key": key.public().to_string(),
        "challenge": challenge,
        "signature": trust::sign_bytes(key, Domain::DeviceLogin, &message),
        "enroll_token": enroll,
    })
}

/// A full login over HTTP; the answer.
async fn login(api: &Api, device: &str, key: &SecretKey, enroll: Option<&str>) -> common::Reply {
    let ch = challenge(api, device).await;
    post(
        api,
        "/api/v1/node/session",
        None,
        signed_login(device, key, &ch, enroll),
    )
    .await
}

async fn token(api: &Api, device: &str, key: &SecretKey) -> String {
    let r = login(api, device, key, None).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    r.json()["token"].as_str().expect("a token").to_owned()
}

fn heartbeat(device: &str) -> Value {
    json!({"device_id": device, "version": "1.0", "state": "ready", "ip": "10.0.0.9",
           "peer_id": null, "free_disk_bytes": 1000, "known_revision": null})
}

async fn device(api: &Api, device: &str) -> Value {
    let r = api
        .as_role(
            Role::Admin,
            "GET",
            &format!("/api/v1/devices/{device}"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    r.json()
}

#[tokio::test]
async fn a_registry_till_logs_in_and_nothing_else_opens_its_routes() {
    let api = with_registry().await;
    let key = key_of(guid(TILL_1));
    let t = token(&api, TILL_1, &key).await;
    assert!(t.starts_with("tsd_"), "{t}");
    assert_eq!(
        device(&api, TILL_1).await["public_key"],
        key.public().to_string()
    );
    let hb = post(&api, "/api/v1/node/heartbeat", Some(&t), heartbeat(TILL_1)).await;
    assert_eq!(hb.status, StatusCode::OK, "{:?}", hb.body);
    // Nothing, an operator's admin token, or a token of the right shape that
    // was never issued: 401, and the till's record is untouched.
    let before = device(&api, TILL_1).await;
    let admin = api.tokens[&Role::Admin].clone();
    let forged = format!("tsd_{}", "0".repeat(64));
    for bad in [
        None,
        Some(admin.as_str()),
        Some(forged.as_str()),
        Some("tsd_short"),
    ] {
        let mut body = heartbeat(TILL_1);
        body["ip"] = json!("10.6.6.6");
        let r = post(&api, "/api/v1/node/heartbeat", bad, body).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{bad:?}: {:?}", r.body);
    }
    assert_eq!(device(&api, TILL_1).await["ip"], before["ip"]);
    // Packages: a device token or an operator's API token; nothing else.
    let chunk = format!("/api/v1/node/chunks/{}", "0".repeat(64));
    for (credential, status) in [
        (None, StatusCode::UNAUTHORIZED),
        (Some(forged.as_str()), StatusCode::UNAUTHORIZED),
        (Some("tsw_not_a_token"), StatusCode::UNAUTHORIZED),
        (Some(t.as_str()), StatusCode::NOT_FOUND),
        (Some(admin.as_str()), StatusCode::NOT_FOUND),
    ] {
        let r = api.with_token(credential, "GET", &chunk, None).await;
        assert_eq!(r.status, status, "{credential:?}: {:?}", r.body);
    }
    // A device token opens no operator route.
    let r = api
        .with_token(Some(&t), "GET", "/api/v1/devices", None)
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_till_speaks_only_for_itself() {
    let api = with_registry().await;
    let t1 = token(&api, TILL_1, &key_of(guid(TILL_1))).await;
    token(&api, TILL_2, &key_of(guid(TILL_2))).await;
    let before = device(&api, TILL_2).await;
    let mut forged = heartbeat(TILL_2);
    forged["version"] = json!("9.9");
    let r = post(&api, "/api/v1/node/heartbeat", Some(&t1), forged).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.body);
    assert_eq!(r.json()["code"], "wrong_device");
    let report = json!({"device_id": TILL_2, "task_id": 1, "attempt": 1, "seq": 1,
        "state": "installed", "bytes_done": 0, "wan_bytes": 0, "lan_bytes": 0,
        "error": null, "log_tail": null});
    let r = post(&api, "/api/v1/node/progress", Some(&t1), report).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.body);
    assert_eq!(device(&api, TILL_2).await, before, "till 2 untouched");
}

#[tokio::test]
async fn logins_that_do_not_check_out_are_refused() {
    let api = with_registry().await;
    let key = key_of(guid(TILL_1));
    token(&api, TILL_1, &key).await;
    // Another key for a bound till.
    let thief = SecretKey::from_seed([0x66; 32]);
    let r = login(&api, TILL_1, &thief, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.json()["code"], "key_mismatch");
    // The right key, but a signature over something else.
    let ch = challenge(&api, TILL_1).await;
    let mut body = signed_login(TILL_1, &key, &ch, None);
    body["signature"] = signed_login(TILL_1, &key, "another challenge", None)["signature"].clone();
    let r = post(&api, "/api/v1/node/session", None, body).await;
    assert_eq!(r.json()["code"], "invalid_login");
    // A signed login replayed: the challenge answers once.
    let ch = challenge(&api, TILL_1).await;
    let body = signed_login(TILL_1, &key, &ch, None);
    let first = post(&api, "/api/v1/node/session", None, body.clone()).await;
    assert_eq!(first.status, StatusCode::OK);
    let replay = post(&api, "/api/v1/node/session", None, body).await;
    assert_eq!(replay.status, StatusCode::UNAUTHORIZED);
    assert_eq!(replay.json()["code"], "invalid_login");
    // A challenge made up, one issued to another till, and a stale one.
    let made_up = signed_login(TILL_1, &key, "1.2.3", None);
    let r = post(&api, "/api/v1/node/session", None, made_up).await;
    assert_eq!(r.json()["code"], "invalid_login");
    let theirs = challenge(&api, TILL_2).await;
    let r = post(
        &api,
        "/api/v1/node/session",
        None,
        signed_login(TILL_1, &key, &theirs, None),
    )
    .await;
    assert_eq!(r.json()["code"], "invalid_login");
    let ch = challenge(&api, TILL_1).await;
    api.clock.advance_ms(61_000);
    let r = post(
        &api,
        "/api/v1/node/session",
        None,
        signed_login(TILL_1, &key, &ch, None),
    )
    .await;
    assert_eq!(r.json()["code"], "invalid_login");
    // Oversized and malformed bodies.
    let mut big = signed_login(TILL_1, &key, &challenge(&api, TILL_1).await, None);
    big["enroll_token"] = json!("e".repeat(5000));
    let r = post(&api, "/api/v1/node/session", None, big).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    let mut long = signed_login(TILL_1, &key, &challenge(&api, TILL_1).await, None);
    long["enroll_token"] = json!("e".repeat(300));
    let r = post(&api, "/api/v1/node/session", None, long).await;
    assert_eq!(r.json()["code"], "invalid_login");
    let r = post(
        &api,
        "/api/v1/node/session",
        None,
        json!({"device_id": TILL_1}),
    )
    .await;
    assert_eq!(r.json()["code"], "invalid_json");
}

#[tokio::test]
async fn tokens_end_with_their_ttl_a_key_reset_or_the_device() {
    let api = with_registry().await;
    let key = key_of(guid(TILL_1));
    let beat = |t: String| {
        let api = &api;
        async move {
            post(api, "/api/v1/node/heartbeat", Some(&t), heartbeat(TILL_1))
                .await
                .status
        }
    };
    // Expiry (an hour by default).
    let t = token(&api, TILL_1, &key).await;
    api.clock.advance_ms(3_599_000);
    assert_eq!(beat(t.clone()).await, StatusCode::OK);
    api.clock.advance_ms(2_000);
    assert_eq!(beat(t).await, StatusCode::UNAUTHORIZED);
    // A key reset ends the session at once and lets a new key bind.
    let t = token(&api, TILL_1, &key).await;
    let r = api
        .as_role(
            Role::Operator,
            "POST",
            &format!("/api/v1/devices/{TILL_1}/reset-key"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "admins only");
    let r = api
        .as_role(
            Role::Admin,
            "POST",
            &format!("/api/v1/devices/{TILL_1}/reset-key"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.json()["public_key"], Value::Null);
    assert_eq!(beat(t).await, StatusCode::UNAUTHORIZED);
    let new_key = SecretKey::from_seed([0x42; 32]);
    let t = token(&api, TILL_1, &new_key).await;
    assert_eq!(beat(t.clone()).await, StatusCode::OK);
    assert_eq!(
        login(&api, TILL_1, &key, None).await.json()["code"],
        "key_mismatch"
    );
    let actions: Vec<String> = api
        .audit(&format!("&target=device:{TILL_1}"))
        .await
        .iter()
        .map(|r| {
            format!(
                "{} {}",
                r["action"].as_str().unwrap_or(""),
                r["actor_kind"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            "device.key_bind device",
            "device.reset_key token",
            "device.key_bind device"
        ],
        "newest first"
    );
    // Removing the device ends its tokens.
    let r = api
        .as_role(
            Role::Admin,
            "DELETE",
            &format!("/api/v1/devices/{TILL_1}"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(beat(t).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn strangers_wait_for_approval_or_enroll_with_a_store_token() {
    let api = with_registry().await;
    let key = SecretKey::from_seed([0x31; 32]);
    let r = login(&api, STRANGER, &key, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["approved"], false);
    assert_eq!(r.json()["token"], Value::Null);
    assert_eq!(device(&api, STRANGER).await["status"], "pending");
    let r = api
        .as_role(
            Role::Admin,
            "POST",
            &format!("/api/v1/devices/{STRANGER}/approve"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    token(&api, STRANGER, &key).await;

    // Enrollment tokens: admins make them; a new till joins its store with one.
    let body = json!({"store_id": "store-002", "expires_days": 1, "max_uses": 1}).to_string();
    let r = api
        .as_role(Role::Operator, "POST", "/api/v1/enroll-tokens", Some(&body))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = api
        .as_role(Role::Admin, "POST", "/api/v1/enroll-tokens", Some(&body))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let made = r.json();
    let secret = made["token_secret"].as_str().expect("secret").to_owned();
    let newcomer = "0badc0de-0000-4000-8000-000000000002";
    let nkey = SecretKey::from_seed([0x32; 32]);
    let r = login(&api, newcomer, &nkey, Some(&secret)).await;
    assert_eq!(r.json()["approved"], true, "{:?}", r.body);
    let d = device(&api, newcomer).await;
    assert_eq!(
        (d["status"].as_str(), d["store_id"].as_str()),
        (Some("approved"), Some("store-002"))
    );
    // Used up, then a wrong and an expired one.
    let another = "0badc0de-0000-4000-8000-000000000003";
    let r = login(&api, another, &nkey, Some(&secret)).await;
    assert_eq!(r.json()["code"], "invalid_enrollment");
    let r = login(&api, another, &nkey, Some("tse_nonsense")).await;
    assert_eq!(r.json()["code"], "invalid_enrollment");
    let body = json!({"store_id": "store-002"}).to_string();
    let r = api
        .as_role(Role::Admin, "POST", "/api/v1/enroll-tokens", Some(&body))
        .await;
    let week = r.json();
    let week_secret = week["token_secret"].as_str().expect("secret").to_owned();
    api.clock.advance_ms(7 * 86_400_000 + 1);
    let r = login(&api, another, &nkey, Some(&week_secret)).await;
    assert_eq!(r.json()["code"], "invalid_enrollment", "expired");
    // Revoked.
    let body = json!({"store_id": "store-001"}).to_string();
    let r = api
        .as_role(Role::Admin, "POST", "/api/v1/enroll-tokens", Some(&body))
        .await;
    let fresh = r.json();
    let id = fresh["id"].as_i64().expect("id");
    let r = api
        .as_role(
            Role::Admin,
            "DELETE",
            &format!("/api/v1/enroll-tokens/{id}"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let fresh_secret = fresh["token_secret"].as_str().expect("secret");
    let r = login(&api, another, &nkey, Some(fresh_secret)).await;
    assert_eq!(r.json()["code"], "invalid_enrollment", "revoked");
    // The listing never shows a secret.
    let r = api
        .as_role(Role::Admin, "GET", "/api/v1/enroll-tokens", None)
        .await;
    let listed = r.json();
    assert_eq!(listed.as_array().map(Vec::len), Some(3));
    assert!(!String::from_utf8_lossy(&r.body).contains("tse_"));
    assert_eq!(listed[2]["uses"], 1);
    // Unknown stores and silly limits are refused.
    for (body, code) in [
        (json!({"store_id": "store-404"}), "not_found"),
        (
            json!({"store_id": "store-001", "expires_days": 0}),
            "invalid_expiry",
        ),
        (
            json!({"store_id": "store-001", "expires_days": 91}),
            "invalid_expiry",
        ),
        (
            json!({"store_id": "store-001", "max_uses": 0}),
            "invalid_max_uses",
        ),
        (
            json!({"store_id": "store-001", "max_uses": 1001}),
            "invalid_max_uses",
        ),
    ] {
        let r = api
            .as_role(
                Role::Admin,
                "POST",
                "/api/v1/enroll-tokens",
                Some(&body.to_string()),
            )
            .await;
        assert_eq!(r.json()["code"], code, "{body}");
    }
}

/// A heartbeat from `device` reporting `peer_id`; the revision it names and
/// the store members its instructions list (`None`: no instructions sent).
async fn members_seen(
    api: &Api,
    device: &str,
    token: &str,
    peer_id: &str,
    known: Option<u64>,
) -> (u64, Option<Vec<(String, String)>>) {
    let mut hb = heartbeat(device);
    hb["peer_id"] = json!(peer_id);
    hb["known_revision"] = json!(known);
    let r = post(api, "/api/v1/node/heartbeat", Some(token), hb).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let body = r.json();
    let revision = body["revision"].as_u64().expect("revision");
    let members = body["trust"]["instructions"]["body"].as_str().map(|text| {
        let ins: Value = serde_json::from_str(text).expect("instructions json");
        ins["store_members"]
            .as_array()
            .expect("members")
            .iter()
            .map(|m| {
                (
                    m["device"].as_str().expect("device").to_owned(),
                    m["peer_id"].as_str().expect("peer").to_owned(),
                )
            })
            .collect()
    });
    (revision, members)
}

#[tokio::test]
async fn the_signed_store_member_list_follows_each_tills_own_reports() {
    let api = with_registry().await;
    const OTHER_STORE: &str = "71110000-0000-0000-0000-000100000001";
    let t1 = token(&api, TILL_1, &key_of(guid(TILL_1))).await;
    let t2 = token(&api, TILL_2, &key_of(guid(TILL_2))).await;
    let t3 = token(&api, OTHER_STORE, &key_of(guid(OTHER_STORE))).await;
    let pair = |d: &str, p: &str| (d.to_owned(), p.to_owned());
    let (r1, m) = members_seen(&api, TILL_1, &t1, "peer-1", None).await;
    assert_eq!(m, Some(vec![pair(TILL_1, "peer-1")]));
    // Nothing changed: no new instructions.
    let (same, m) = members_seen(&api, TILL_1, &t1, "peer-1", Some(r1)).await;
    assert_eq!((same, m), (r1, None));
    // Till 2 reports its peer id: till 1's instructions move on and list it;
    // a till of another store never appears.
    members_seen(&api, OTHER_STORE, &t3, "peer-3", None).await;
    members_seen(&api, TILL_2, &t2, "peer-2", None).await;
    let (r2, m) = members_seen(&api, TILL_1, &t1, "peer-1", Some(r1)).await;
    assert!(r2 > r1);
    assert_eq!(
        m,
        Some(vec![pair(TILL_1, "peer-1"), pair(TILL_2, "peer-2")])
    );
    // An admin resets till 2's key: it leaves the list at once.
    let r = api
        .as_role(
            Role::Admin,
            "POST",
            &format!("/api/v1/devices/{TILL_2}/reset-key"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let (r3, m) = members_seen(&api, TILL_1, &t1, "peer-1", Some(r2)).await;
    assert!(r3 > r2);
    assert_eq!(m, Some(vec![pair(TILL_1, "peer-1")]));
}
