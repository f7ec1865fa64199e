//! The access rule of every operator route, in one table.
//!
//! The HTTP guard looks each operator request up here by method and path: the
//! rule says whether it is public or which role it needs, and which bodies a
//! cookie-authenticated change may carry (the CSRF defence). A request no rule
//! covers is refused to everyone, so a route added without a rule cannot be
//! reached; `coordinator/tests/access.rs` walks every operation in openapi.json
//! with each role against this table.

use super::Role;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone (logging in).
    Public,
    /// Callers whose role includes this one.
    Role(Role),
}

/// What a state-changing request may carry when it comes with a session cookie.
/// Each is a content type a foreign web page cannot send without the browser
/// asking the coordinator first (a CORS preflight, which it never grants).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// A read; nothing is checked.
    None,
    /// `application/json` (also for changes without a body).
    Json,
    /// A package upload: `application/octet-stream`.
    Upload,
    /// A registry import: `application/json` or `text/csv`.
    Registry,
}

impl Body {
    /// Whether a request with this `Content-Type` essence may pass.
    pub fn accepts(self, essence: &str) -> bool {
        match self {
            Body::None => true,
            Body::Json => essence == "application/json",
            Body::Upload => essence == "application/octet-stream",
            Body::Registry => essence == "application/json" || essence == "text/csv",
        }
    }
}

/// One route's rule.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    /// HTTP method.
    pub method: &'static str,
    /// Path template as in openapi.json (`{name}` matches one segment).
    pub path: &'static str,
    /// Who may call it.
    pub access: Access,
    /// What a cookie-authenticated change may carry.
    pub body: Body,
    /// The audit log's name for the action.
    pub action: &'static str,
    /// The status of a success (recorded in the audit row of a change).
    pub ok: u16,
}

const fn rule(
    method: &'static str,
    path: &'static str,
    access: Access,
    body: Body,
    action: &'static str,
) -> Rule {
    // Deletions answer 204; creations (named so) 201; the rest 200.
    let ok = if matches!(method.as_bytes(), b"DELETE") {
        204
    } else if ends_with(action, "create")
        || ends_with(action, "add")
        || ends_with(action, "upload")
        || ends_with(action, "group")
    {
        201
    } else {
        200
    };
    Rule {
        method,
        path,
        access,
        body,
        action,
        ok,
    }
}

const fn ends_with(s: &str, suffix: &str) -> bool {
    let (s, suffix) = (s.as_bytes(), suffix.as_bytes());
    if s.len() < suffix.len() {
        return false;
    }
    let mut i = 0;
    while i < suffix.len() {
        if s[s.len() - suffix.len() + i] != suffix[i] {
            return false;
        }
        i += 1;
    }
    true
}

use Access::{Public, Role as R};
use Body::{Json, None as Read, Registry, Upload};
use Role::{Admin, Approver, Operator, Viewer};

/// Every operator route. Reads need `viewer`; changes to groups, packages, tasks
/// and till types need `operator`; users, tokens, devices, the registry and the
/// audit log need `admin`.
pub const RULES: &[Rule] = &[
    // The caller's own session.
    rule("POST", "/api/v1/session", Public, Json, "session.login"),
    rule("GET", "/api/v1/session", R(Viewer), Read, "session.get"),
    rule(
        "DELETE",
        "/api/v1/session",
        R(Viewer),
        Json,
        "session.logout",
    ),
    rule(
        "POST",
        "/api/v1/session/password",
        R(Viewer),
        Json,
        "session.password",
    ),
    // Devices and stores.
    rule("GET", "/api/v1/devices", R(Viewer), Read, "device.list"),
    rule(
        "GET",
        "/api/v1/devices/{guid}",
        R(Viewer),
        Read,
        "device.get",
    ),
    rule(
        "POST",
        "/api/v1/devices/import",
        R(Admin),
        Registry,
        "registry.import",
    ),
    rule(
        "POST",
        "/api/v1/devices/{guid}/approve",
        R(Admin),
        Json,
        "device.approve",
    ),
    rule(
        "POST",
        "/api/v1/devices/{guid}/reset-key",
        R(Admin),
        Json,
        "device.reset_key",
    ),
    rule(
        "DELETE",
        "/api/v1/devices/{guid}",
        R(Admin),
        Json,
        "device.delete",
    ),
    rule("GET", "/api/v1/stores", R(Viewer), Read, "store.list"),
    rule(
        "GET",
        "/api/v1/stores/{id}/wan",
        R(Viewer),
        Read,
        "store.wan",
    ),
    rule("GET", "/api/v1/events", R(Viewer), Read, "event.stream"),
    // Groups.
    rule("GET", "/api/v1/groups", R(Viewer), Read, "group.list"),
    rule("GET", "/api/v1/groups/{id}", R(Viewer), Read, "group.get"),
    rule("POST", "/api/v1/groups", R(Operator), Json, "group.create"),
    rule(
        "PUT",
        "/api/v1/groups/{id}",
        R(Operator),
        Json,
        "group.update",
    ),
    rule(
        "PATCH",
        "/api/v1/groups/{id}",
        R(Operator),
        Json,
        "group.update",
    ),
    rule(
        "DELETE",
        "/api/v1/groups/{id}",
        R(Operator),
        Json,
        "group.delete",
    ),
    // Packages.
    rule("GET", "/api/v1/packages", R(Viewer), Read, "package.list"),
    rule(
        "GET",
        "/api/v1/packages/{package_id}",
        R(Viewer),
        Read,
        "package.get",
    ),
    rule(
        "GET",
        "/api/v1/packages/{package_id}/manifest",
        R(Viewer),
        Read,
        "package.manifest",
    ),
    rule(
        "GET",
        "/api/v1/packages/{package_id}/bundle",
        R(Operator),
        Read,
        "package.export",
    ),
    rule(
        "POST",
        "/api/v1/packages",
        R(Operator),
        Upload,
        "package.upload",
    ),
    rule(
        "DELETE",
        "/api/v1/packages/{package_id}",
        R(Operator),
        Json,
        "package.delete",
    ),
    // Rollouts. Resuming accepts the failures that paused a rollout and
    // approving opens a gate: both need an approver.
    rule("GET", "/api/v1/rollouts", R(Viewer), Read, "rollout.list"),
    rule(
        "GET",
        "/api/v1/rollouts/{id}",
        R(Viewer),
        Read,
        "rollout.get",
    ),
    rule(
        "POST",
        "/api/v1/rollouts",
        R(Operator),
        Json,
        "rollout.create",
    ),
    rule(
        "POST",
        "/api/v1/rollouts/{id}/pause",
        R(Operator),
        Json,
        "rollout.pause",
    ),
    rule(
        "POST",
        "/api/v1/rollouts/{id}/cancel",
        R(Operator),
        Json,
        "rollout.cancel",
    ),
    rule(
        "POST",
        "/api/v1/rollouts/{id}/resume",
        R(Approver),
        Json,
        "rollout.resume",
    ),
    rule(
        "POST",
        "/api/v1/rollouts/{id}/approve",
        R(Approver),
        Json,
        "rollout.approve",
    ),
    // Tasks.
    rule("GET", "/api/v1/tasks", R(Viewer), Read, "task.list"),
    rule("GET", "/api/v1/tasks/{id}", R(Viewer), Read, "task.get"),
    rule("GET", "/api/v1/tasks/{id}/wan", R(Viewer), Read, "task.wan"),
    rule("POST", "/api/v1/tasks", R(Operator), Json, "task.create"),
    rule(
        "DELETE",
        "/api/v1/tasks/{id}",
        R(Operator),
        Json,
        "task.delete",
    ),
    rule(
        "POST",
        "/api/v1/tasks/{id}/group",
        R(Operator),
        Json,
        "task.group",
    ),
    rule(
        "POST",
        "/api/v1/tasks/{id}/pause",
        R(Operator),
        Json,
        "task.pause",
    ),
    rule(
        "POST",
        "/api/v1/tasks/{id}/resume",
        R(Operator),
        Json,
        "task.resume",
    ),
    rule(
        "POST",
        "/api/v1/tasks/{id}/restart",
        R(Operator),
        Json,
        "task.restart",
    ),
    // Till types.
    rule(
        "GET",
        "/api/v1/till-types",
        R(Viewer),
        Read,
        "till_type.list",
    ),
    rule(
        "PUT",
        "/api/v1/till-types/{name}",
        R(Operator),
        Json,
        "till_type.set",
    ),
    // Users, tokens and the audit log.
    rule("GET", "/api/v1/users", R(Admin), Read, "user.list"),
    rule("POST", "/api/v1/users", R(Admin), Json, "user.add"),
    rule(
        "DELETE",
        "/api/v1/users/{name}",
        R(Admin),
        Json,
        "user.remove",
    ),
    rule(
        "POST",
        "/api/v1/users/{name}/password",
        R(Admin),
        Json,
        "user.passwd",
    ),
    rule("GET", "/api/v1/tokens", R(Admin), Read, "token.list"),
    rule("POST", "/api/v1/tokens", R(Admin), Json, "token.create"),
    rule(
        "DELETE",
        "/api/v1/tokens/{name}",
        R(Admin),
        Json,
        "token.revoke",
    ),
    rule(
        "GET",
        "/api/v1/enroll-tokens",
        R(Admin),
        Read,
        "enroll_token.list",
    ),
    rule(
        "POST",
        "/api/v1/enroll-tokens",
        R(Admin),
        Json,
        "enroll_token.create",
    ),
    rule(
        "DELETE",
        "/api/v1/enroll-tokens/{id}",
        R(Admin),
        Json,
        "enroll_token.revoke",
    ),
    rule("GET", "/api/v1/audit", R(Admin), Read, "audit.list"),
];

/// Whether a method changes state (and so is audited and CSRF-checked).
pub fn is_change(method: &str) -> bool {
    matches!(method, "POST" | "PUT" | "PATCH" | "DELETE")
}

/// The status a successful request answers with, for its audit row; 0 when
/// the caller is not an HTTP request (the CLI, the coordinator itself).
pub fn ok_status(method: &str, route: &str) -> u16 {
    find(method, route).map_or(0, |r| r.ok)
}

/// The rule for a request, if any: among the rules whose method and template
/// match, the one with the most literal segments (`/devices/import` before
/// `/devices/{guid}`).
pub fn find(method: &str, path: &str) -> Option<&'static Rule> {
    // One trailing slash is the same route to warp (`path::end` accepts it).
    let path = path.strip_suffix('/').unwrap_or(path);
    let segments: Vec<&str> = path.split('/').collect();
    RULES
        .iter()
        .filter(|r| r.method == method)
        .filter_map(|r| {
            let template: Vec<&str> = r.path.split('/').collect();
            if template.len() != segments.len() {
                return None;
            }
            let mut literals = 0;
            for (t, s) in template.iter().zip(&segments) {
                if t.starts_with('{') {
                    if s.is_empty() {
                        return None;
                    }
                } else if t == s {
                    literals += 1;
                } else {
                    return None;
                }
            }
            Some((literals, r))
        })
        .max_by_key(|(literals, _)| *literals)
        .map(|(_, r)| r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_specific_rule_wins() {
        let r = find("POST", "/api/v1/devices/import").expect("rule");
        assert_eq!(r.action, "registry.import");
        let r = find("DELETE", "/api/v1/devices/abc").expect("rule");
        assert_eq!(r.access, Access::Role(Role::Admin));
        let r = find("POST", "/api/v1/tasks/7/pause").expect("rule");
        assert_eq!(r.access, Access::Role(Role::Operator));
        assert!(find("POST", "/api/v1/tasks/7/explode").is_none());
        assert!(find("GET", "/api/v1/devices//").is_none());
        assert!(find("GET", "/api/v1/devices/").is_some());
        assert!(find("PATCH", "/api/v1/tasks/7").is_none());
    }

    #[test]
    fn success_statuses_follow_the_routes() {
        assert_eq!(ok_status("POST", "/api/v1/tasks"), 201);
        assert_eq!(ok_status("POST", "/api/v1/tasks/3/group"), 201);
        assert_eq!(ok_status("POST", "/api/v1/tasks/3/pause"), 200);
        assert_eq!(ok_status("DELETE", "/api/v1/tasks/3"), 204);
        assert_eq!(ok_status("POST", "/api/v1/session"), 200);
        assert_eq!(ok_status("POST", "/api/v1/packages"), 201);
        assert_eq!(ok_status("CLI", "coordinator user add"), 0);
    }

    #[test]
    fn every_change_has_a_content_rule_and_every_rule_is_unique() {
        let mut seen = std::collections::BTreeSet::new();
        for r in RULES {
            assert!(
                seen.insert((r.method, r.path)),
                "{} {} twice",
                r.method,
                r.path
            );
            assert_eq!(
                is_change(r.method),
                r.body != Body::None,
                "{} {}",
                r.method,
                r.path
            );
        }
    }

    #[test]
    fn bodies_a_foreign_form_can_send_are_never_accepted() {
        for body in [Body::Json, Body::Upload, Body::Registry] {
            for simple in [
                "text/plain",
                "application/x-www-form-urlencoded",
                "multipart/form-data",
                "",
            ] {
                assert!(!body.accepts(simple), "{body:?} accepts {simple:?}");
            }
        }
    }
}
