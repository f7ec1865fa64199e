//! Bad input to the rollout routes and the new task fields, over HTTP: each
//! refused request gets its 4xx with a stable code and creates nothing; an
//! approval by an operator is 403 and by an approver outside
//! `waiting_for_approval` is 409; bad time zones in a registry are refused.

mod common;

use serde_json::{Value, json};
use tillswarm_coordinator::auth::{Caller, Role};

use common::{Api, api};

async fn setup() -> (Api, String) {
    let api = api().await;
    let registry = std::fs::read(tillswarm_fixtures::dir().join("registry/sample-chain.json"))
        .expect("registry");
    api.coordinator
        .import_registry(registry, true, &Caller::system("test"))
        .await
        .expect("import");
    let bytes = tillswarm_fixtures::demo_package("1.0.0", 100_000);
    let body = futures_util::stream::iter([Ok::<_, warp::Error>(bytes::Bytes::from(bytes))]);
    let pkg = api
        .coordinator
        .upload_package("pos".into(), "1.0.0".into(), body, &Caller::system("test"))
        .await
        .expect("upload")
        .package_id;
    (api, pkg.to_hex())
}

fn wave(extra: Value) -> Value {
    let mut w = json!({"name": "W", "kind": "update", "targets": {"type": "group", "group_id": 1}});
    if let (Some(w), Some(extra)) = (w.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            w.insert(k.clone(), v.clone());
        }
    }
    w
}

#[tokio::test]
async fn bad_rollouts_are_refused_with_their_code_and_create_nothing() {
    let (api, pkg) = setup().await;
    let cases: Vec<(Value, &str)> = vec![
        (json!({"package_id": pkg, "waves": []}), "invalid_waves"),
        (json!({"package_id": pkg}), "invalid_waves"),
        (
            json!({"package_id": "ab".repeat(32), "waves": [wave(json!({}))]}),
            "unknown_package",
        ),
        (
            json!({"package_id": pkg, "waves": [wave(json!({"targets": {"type": "group", "group_id": 999}}))]}),
            "unknown_group",
        ),
        (
            json!({"package_id": pkg, "waves": [wave(json!({"gate": {"success_percent": 101}}))]}),
            "invalid_threshold",
        ),
        (
            json!({"package_id": pkg, "waves": [wave(json!({"gate": {"max_failed_percent": 150}}))]}),
            "invalid_threshold",
        ),
        (
            json!({"package_id": pkg, "waves": [wave(json!({"gate": {"max_failed": 0}}))]}),
            "invalid_threshold",
        ),
        (
            json!({"package_id": pkg, "waves": [wave(json!({"gate": {"soak_minutes": 100000}}))]}),
            "invalid_threshold",
        ),
        (
            json!({"package_id": pkg, "waves": [wave(json!({"gate": {"success_percent": -1}}))]}),
            "invalid_json",
        ),
        (
            json!({"package_id": pkg, "window": {"start": "05:00", "end": "01:00"}, "waves": [wave(json!({}))]}),
            "invalid_window",
        ),
        (
            json!({"package_id": pkg, "window": {"start": "01:00", "end": "05:00", "days": ["someday"]},
                   "waves": [wave(json!({}))]}),
            "invalid_window",
        ),
        (
            json!({"package_id": pkg, "waves": [wave(json!({"activation": {"type": "in_window"}}))]}),
            "no_window",
        ),
        (
            json!({"package_id": pkg, "waves": [wave(json!({"activation": {"type": "at", "at": "2020-01-01T00:00:00Z"}}))]}),
            "time_in_past",
        ),
        (
            json!({"package_id": pkg, "waves": [wave(json!({"activation": {"type": "at", "at": "soon"}}))]}),
            "invalid_time",
        ),
        (
            json!({"package_id": pkg, "waves": [wave(json!({"targets": {"type": "stores_percent", "percent": 0}}))]}),
            "invalid_targets",
        ),
        (
            json!({"package_id": pkg, "waves": [wave(json!({"targets": {"type": "till_number", "till_number": 0}}))]}),
            "invalid_targets",
        ),
        (
            json!({"package_id": pkg, "waves": [wave(json!({"targets": {"type": "everyone"}}))]}),
            "invalid_json",
        ),
        (
            json!({"package_id": pkg, "waves": [wave(json!({"name": " "}))]}),
            "invalid_name",
        ),
        (
            json!({"package_id": pkg, "name": "x".repeat(65), "waves": [wave(json!({}))]}),
            "invalid_name",
        ),
        (
            json!({"package_id": pkg, "store_failure_limit": 0, "waves": [wave(json!({}))]}),
            "invalid_threshold",
        ),
        (
            json!({"package_id": pkg, "waves": [wave(json!({"max_installing_per_store": 0}))]}),
            "invalid_limit",
        ),
        (
            json!({"package_id": pkg, "waves": [wave(json!({"install_retries": 11}))]}),
            "invalid_limit",
        ),
        (
            json!({"package_id": pkg, "template": "yolo"}),
            "unknown_template",
        ),
        (
            json!({"package_id": pkg, "template": "pilot-even-odd", "waves": [wave(json!({}))]}),
            "template_with_waves",
        ),
        (
            json!({"package_id": pkg, "waves": [wave(json!({})) ], "colour": "red"}),
            "invalid_json",
        ),
        (
            json!({"package_id": pkg, "waves": (0..21).map(|_| wave(json!({}))).collect::<Vec<_>>()}),
            "invalid_waves",
        ),
    ];
    for (body, code) in cases {
        let r = api
            .as_role(
                Role::Operator,
                "POST",
                "/api/v1/rollouts",
                Some(&body.to_string()),
            )
            .await;
        assert_eq!(r.status.as_u16(), 400, "{body}: {:?}", r.body);
        assert_eq!(r.code(), code, "{body}");
    }
    let list = api
        .as_role(Role::Viewer, "GET", "/api/v1/rollouts", None)
        .await;
    assert_eq!(list.json()["total"], 0, "nothing was created");
    let tasks = api
        .as_role(Role::Viewer, "GET", "/api/v1/tasks", None)
        .await;
    assert_eq!(tasks.json()["total"], 0, "no wave task either");
    for (query, status, code) in [
        ("/api/v1/rollouts?state=bogus", 400, "invalid_filter"),
        ("/api/v1/rollouts/abc", 400, "invalid_id"),
        ("/api/v1/rollouts/999", 404, "not_found"),
    ] {
        let r = api.as_role(Role::Viewer, "GET", query, None).await;
        assert_eq!(
            (r.status.as_u16(), r.code().as_str()),
            (status, code),
            "{query}"
        );
    }
}

#[tokio::test]
async fn approving_needs_an_approver_and_a_rollout_waiting_for_one() {
    let (api, pkg) = setup().await;
    let body = json!({"package_id": pkg, "draft": true, "waves": [
        wave(json!({"gate": {"approval": true}})), wave(json!({"name": "Second"}))]});
    let r = api
        .as_role(
            Role::Operator,
            "POST",
            "/api/v1/rollouts",
            Some(&body.to_string()),
        )
        .await;
    assert_eq!(r.status.as_u16(), 201, "{:?}", r.body);
    let id = r.json()["id"].as_i64().expect("id");
    assert_eq!(r.json()["state"], "draft");
    let path = |verb: &str| format!("/api/v1/rollouts/{id}/{verb}");
    // An operator may neither approve nor start (resume) it.
    for verb in ["approve", "resume"] {
        let r = api
            .as_role(Role::Operator, "POST", &path(verb), Some("{}"))
            .await;
        assert_eq!(r.status.as_u16(), 403, "{verb}");
    }
    let r = api
        .as_role(Role::Approver, "POST", &path("approve"), Some("{}"))
        .await;
    assert_eq!((r.status.as_u16(), r.code().as_str()), (409, "not_waiting"));
    let r = api
        .as_role(Role::Operator, "POST", &path("pause"), Some("{}"))
        .await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (409, "invalid_transition"),
        "a draft cannot be paused"
    );
    let r = api
        .as_role(Role::Approver, "POST", &path("resume"), Some("{}"))
        .await;
    assert_eq!(r.status.as_u16(), 200);
    assert_eq!(r.json()["state"], "running");
    let task = r.json()["waves"][0]["task_id"]
        .as_i64()
        .expect("first wave started");
    // A rollout's task is driven by the rollout only.
    let r = api
        .as_role(
            Role::Operator,
            "DELETE",
            &format!("/api/v1/tasks/{task}"),
            None,
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (409, "rollout_task")
    );
    let r = api
        .as_role(
            Role::Operator,
            "DELETE",
            &format!("/api/v1/packages/{pkg}"),
            None,
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (409, "package_in_use")
    );
    let r = api
        .as_role(Role::Operator, "POST", &path("cancel"), Some("{}"))
        .await;
    assert_eq!(r.json()["state"], "cancelled");
    let r = api
        .as_role(Role::Operator, "POST", &path("cancel"), Some("{}"))
        .await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (409, "invalid_transition")
    );
    // Every attempt is in the audit log, the refused ones as denied.
    let rows = api.audit(&format!("&target=rollout:{id}")).await;
    let actions: Vec<_> = rows
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap_or(""),
                r["outcome"].as_str().unwrap_or(""),
            )
        })
        .collect();
    let denied = api.audit("&outcome=denied").await;
    assert!(
        denied.iter().any(|r| r["action"] == "rollout.approve"
            && r["route"] == format!("/api/v1/rollouts/{id}/approve")),
        "{denied:?}"
    );
    assert!(
        actions.contains(&("rollout.approve", "failed")),
        "{actions:?}"
    );
    assert!(actions.contains(&("rollout.resume", "ok")), "{actions:?}");
}

#[tokio::test]
async fn bad_task_windows_limits_and_store_zones_are_refused() {
    let (api, pkg) = setup().await;
    for (extra, code) in [
        (
            json!({"window": {"start": "22:00", "end": "04:00"}}),
            "invalid_window",
        ),
        (
            json!({"window": {"start": "01:00", "end": "05:00", "crosses_midnight": true}}),
            "invalid_window",
        ),
        (
            json!({"window": {"start": "25:00", "end": "05:00"}}),
            "invalid_window",
        ),
        (json!({"max_installing_per_store": 0}), "invalid_limit"),
        (json!({"install_retries": 11}), "invalid_limit"),
    ] {
        let mut body = json!({"kind": "forced_update", "package_id": pkg, "group_id": 1});
        for (k, v) in extra.as_object().expect("object") {
            body[k] = v.clone();
        }
        let r = api
            .as_role(
                Role::Operator,
                "POST",
                "/api/v1/tasks",
                Some(&body.to_string()),
            )
            .await;
        assert_eq!(
            (r.status.as_u16(), r.code()),
            (400, code.to_owned()),
            "{body}"
        );
    }
    let ok = json!({"kind": "forced_update", "package_id": pkg, "group_id": 1,
        "window": {"start": "22:00", "end": "04:00", "crosses_midnight": true, "days": ["fri", "sat"]},
        "max_installing_per_store": 2, "install_retries": 3});
    let r = api
        .as_role(
            Role::Operator,
            "POST",
            "/api/v1/tasks",
            Some(&ok.to_string()),
        )
        .await;
    assert_eq!(r.status.as_u16(), 201, "{:?}", r.body);
    let windows = r.json()["windows"].as_array().map_or(0, Vec::len);
    assert_eq!(
        windows, 0,
        "creation answers without the time-dependent part"
    );
    let id = r.json()["id"].as_i64().expect("id");
    let r = api
        .as_role(Role::Viewer, "GET", &format!("/api/v1/tasks/{id}"), None)
        .await;
    assert_eq!(
        r.json()["windows"].as_array().map_or(0, Vec::len),
        2,
        "one per store"
    );
    let registry = json!([{"guid": "71110000-0000-0000-0000-00ff00000001", "till_name": "T", "till_number": 1,
        "store_id": "store-x", "store_name": "X", "store_address": "", "till_type": "standard",
        "time_zone": "Europe/Atlantis"}]);
    let r = api
        .as_role(
            Role::Admin,
            "POST",
            "/api/v1/devices/import",
            Some(&registry.to_string()),
        )
        .await;
    assert_eq!(r.status.as_u16(), 400, "{:?}", r.body);
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap_or("")
            .contains("Europe/Atlantis")
    );
}
