//! The till-local interface (127.0.0.1 only) between the node and the till's POS
//! software, or a person at the till:
//!
//! - `GET  /api/local/v1/status`: the node's state, the open update prompt (if
//!   any), whether the node asks the POS to leave sale mode, and the store
//!   peers it is connected to with what they hold;
//! - `POST /api/local/v1/prompt/accept` | `/prompt/decline`: the cashier's answer;
//! - `POST /api/local/v1/sale-mode/left`: the POS confirms it left sale mode;
//! - `POST /api/local/v1/install`: a manual install of the newest staged package
//!   (what `tillswarm node install` sends; the seed's `sudo ./up.sh`).
//!
//! `tillswarm node prompt accept|decline` answers the prompt from a shell.
//!
//! Every call presents the till's local secret (`local-api.secret`, see
//! [`crate::identity::local_api_secret`]) as `Authorization: Bearer <hex>`,
//! so only the node's user and the group it shares the file with can drive
//! it; and a request carrying an `Origin` header (sent by browsers, never by
//! the POS or the CLI) is refused, so a web page open on the till cannot.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tillswarm_protocol::{DeviceId, PackageId, TaskId, Version};
use tokio::sync::{Mutex, Notify};
use warp::Filter;
use warp::http::StatusCode;

/// The cashier's answer to an update prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    /// Install now.
    Accept,
    /// Not now; ask again after the next restart.
    Decline,
}

/// An open question to the cashier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prompt {
    /// The task asking.
    pub task_id: TaskId,
    /// The version on offer.
    pub version: Version,
    /// Unix ms after which the node installs without an answer.
    pub deadline_ms: i64,
}

/// What `GET /status` shows.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LocalStatus {
    /// The version running.
    pub version: Option<Version>,
    /// The open prompt.
    pub prompt: Option<Prompt>,
    /// The node asks the POS to leave sale mode (an install is about to start).
    pub leave_sale_mode: bool,
    /// What the node is doing, in words.
    pub activity: String,
    /// The store peers connected now (they passed the Hello check), by peer
    /// id; empty without a store swarm.
    #[serde(default)]
    pub peers: Vec<PeerStatus>,
}

/// A connected store peer, as `node status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    /// Its libp2p peer id.
    pub peer_id: String,
    /// Its till GUID, from its Hello.
    pub device: Option<DeviceId>,
    /// Chunks it holds, per package it announced.
    pub holds: Vec<Holding>,
}

/// How much of a package a peer holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holding {
    /// The package.
    pub package_id: PackageId,
    /// Chunks of it the peer holds.
    pub chunks: usize,
}

#[derive(Debug, Default)]
struct Inner {
    status: LocalStatus,
    answer: Option<(TaskId, Answer)>,
    sale_mode_left: bool,
    manual_install: bool,
}

/// Shared between the local HTTP interface and the agent.
#[derive(Clone, Default)]
pub struct LocalUi {
    inner: Arc<Mutex<Inner>>,
    /// Wakes the agent when someone answers.
    pub changed: Arc<Notify>,
    /// The store swarm, once it runs: its live peers are part of the status.
    net: Arc<std::sync::OnceLock<crate::swarm::StoreNet>>,
}

impl LocalUi {
    /// Opens a prompt (replacing any other).
    pub async fn ask(&self, prompt: Prompt) {
        let mut i = self.inner.lock().await;
        if i.status.prompt.as_ref().map(|p| p.task_id) != Some(prompt.task_id) {
            i.answer = None;
        }
        i.status.prompt = Some(prompt);
    }

    /// Closes the prompt.
    pub async fn close_prompt(&self) {
        let mut i = self.inner.lock().await;
        i.status.prompt = None;
        i.answer = None;
    }

    /// Takes the answer for `task`, if one came.
    pub async fn take_answer(&self, task: TaskId) -> Option<Answer> {
        let mut i = self.inner.lock().await;
        match i.answer {
            Some((t, a)) if t == task => {
                i.answer = None;
                Some(a)
            }
            _ => None,
        }
    }

    /// Records an answer to the open prompt; false when no prompt is open.
    pub async fn answer(&self, a: Answer) -> bool {
        let ok = {
            let mut i = self.inner.lock().await;
            match i.status.prompt.as_ref().map(|p| p.task_id) {
                Some(t) => {
                    i.answer = Some((t, a));
                    true
                }
                None => false,
            }
        };
        self.changed.notify_one();
        ok
    }

    /// Asks the POS to leave sale mode and forgets earlier confirmations.
    pub async fn request_leave_sale_mode(&self, on: bool) {
        let mut i = self.inner.lock().await;
        i.status.leave_sale_mode = on;
        i.sale_mode_left = false;
    }

    /// Whether the POS confirmed it left sale mode.
    pub async fn sale_mode_left(&self) -> bool {
        self.inner.lock().await.sale_mode_left
    }

    /// The POS confirms it left sale mode; false when nobody asked it to.
    pub async fn confirm_sale_mode_left(&self) -> bool {
        let ok = {
            let mut i = self.inner.lock().await;
            if i.status.leave_sale_mode {
                i.sale_mode_left = true;
            }
            i.status.leave_sale_mode
        };
        self.changed.notify_one();
        ok
    }

    /// Requests a manual install.
    pub async fn request_manual_install(&self) {
        self.inner.lock().await.manual_install = true;
        self.changed.notify_one();
    }

    /// Whether a manual install has been requested and not yet taken.
    pub async fn manual_install_requested(&self) -> bool {
        self.inner.lock().await.manual_install
    }

    /// Takes a pending manual-install request.
    pub async fn take_manual_install(&self) -> bool {
        std::mem::take(&mut self.inner.lock().await.manual_install)
    }

    /// Updates what `/status` shows.
    pub async fn set_activity(&self, version: Option<Version>, activity: impl Into<String>) {
        let mut i = self.inner.lock().await;
        i.status.version = version;
        i.status.activity = activity.into();
    }

    /// Shows the store swarm's live peers in the status from now on.
    pub fn attach_net(&self, net: crate::swarm::StoreNet) {
        let _ = self.net.set(net);
    }

    /// The current status.
    pub async fn status(&self) -> LocalStatus {
        let mut status = self.inner.lock().await.status.clone();
        if let Some(net) = self.net.get() {
            status.peers = net
                .view()
                .into_iter()
                .map(|(id, p)| {
                    let mut holds: Vec<Holding> = p
                        .holds
                        .into_iter()
                        .map(|(package_id, have)| Holding {
                            package_id,
                            chunks: have.len(),
                        })
                        .collect();
                    holds.sort_by_key(|h| h.package_id.to_hex());
                    PeerStatus {
                        peer_id: id.to_string(),
                        device: p.device,
                        holds,
                    }
                })
                .collect();
            status.peers.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
        }
        status
    }

    /// The local HTTP routes, open to callers presenting `secret`.
    pub fn routes(&self, secret: [u8; 32]) -> warp::filters::BoxedFilter<(warp::reply::Response,)> {
        use warp::Reply;
        let ui = self.clone();
        let expected = blake3::hash(hex(&secret).as_bytes());
        let with = move || {
            let ui = ui.clone();
            warp::any().map(move || ui.clone())
        };
        let guard = warp::header::optional::<String>("origin")
            .and(warp::header::optional::<String>("authorization"))
            .and_then(move |origin: Option<String>, auth: Option<String>| async move {
                if origin.is_some() {
                    return Err(warp::reject::custom(Refused(
                        StatusCode::FORBIDDEN,
                        "requests from web pages are refused",
                    )));
                }
                let given = auth.as_deref().and_then(|a| a.strip_prefix("Bearer ")).unwrap_or("");
                // blake3::Hash compares in constant time.
                if blake3::hash(given.trim().as_bytes()) != expected {
                    return Err(warp::reject::custom(Refused(
                        StatusCode::UNAUTHORIZED,
                        "send the till's local secret (local-api.secret) as Authorization: Bearer",
                    )));
                }
                Ok(())
            })
            .untuple_one();
        let status = warp::path!("api" / "local" / "v1" / "status")
            .and(warp::get())
            .and(with())
            .then(
                |ui: LocalUi| async move { warp::reply::json(&ui.status().await).into_response() },
            );
        let prompt = warp::path!("api" / "local" / "v1" / "prompt" / String)
            .and(warp::post())
            .and(with())
            .then(|verb: String, ui: LocalUi| async move {
                let answer = match verb.as_str() {
                    "accept" => Answer::Accept,
                    "decline" => Answer::Decline,
                    _ => {
                        return reply(
                            StatusCode::NOT_FOUND,
                            "use /prompt/accept or /prompt/decline",
                        );
                    }
                };
                if ui.answer(answer).await {
                    reply(StatusCode::OK, "answer recorded")
                } else {
                    reply(StatusCode::CONFLICT, "no update prompt is open")
                }
            });
        let sale = warp::path!("api" / "local" / "v1" / "sale-mode" / "left")
            .and(warp::post())
            .and(with())
            .then(|ui: LocalUi| async move {
                if ui.confirm_sale_mode_left().await {
                    reply(StatusCode::OK, "confirmed")
                } else {
                    reply(
                        StatusCode::CONFLICT,
                        "the node did not ask to leave sale mode",
                    )
                }
            });
        let install = warp::path!("api" / "local" / "v1" / "install")
            .and(warp::post())
            .and(with())
            .then(|ui: LocalUi| async move {
                ui.request_manual_install().await;
                reply(StatusCode::ACCEPTED, "manual install requested")
            });
        guard
            .and(
                status
                    .or(prompt)
                    .unify()
                    .or(sale)
                    .unify()
                    .or(install)
                    .unify(),
            )
            .recover(|r: warp::Rejection| async move {
                Ok::<_, std::convert::Infallible>(match r.find::<Refused>() {
                    Some(Refused(status, message)) => reply(*status, message),
                    None if r.find::<warp::reject::MethodNotAllowed>().is_some() => {
                        reply(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
                    }
                    None if r.is_not_found() => reply(StatusCode::NOT_FOUND, "no such route"),
                    None => reply(StatusCode::BAD_REQUEST, "bad request"),
                })
            })
            .unify()
            .boxed()
    }
}

/// The secret as callers send it: 64 lowercase hex digits.
pub fn hex(secret: &[u8; 32]) -> String {
    tillswarm_protocol::ChunkHash(*secret).to_hex()
}

/// A request the guard turned away.
#[derive(Debug)]
struct Refused(StatusCode, &'static str);

impl warp::reject::Reject for Refused {}

fn reply(status: StatusCode, message: &str) -> warp::reply::Response {
    use warp::Reply;
    warp::reply::with_status(
        warp::reply::json(&serde_json::json!({ "message": message })),
        status,
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: [u8; 32] = [7; 32];

    async fn call(method: &str, path: &str, headers: &[(&str, String)]) -> StatusCode {
        let ui = LocalUi::default();
        let mut req = warp::test::request().method(method).path(path);
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        req.reply(&ui.routes(SECRET)).await.status()
    }

    fn bearer(secret: &[u8; 32]) -> (&'static str, String) {
        ("authorization", format!("Bearer {}", hex(secret)))
    }

    #[tokio::test]
    async fn only_callers_with_the_secret_are_served() {
        let status = "/api/local/v1/status";
        let install = "/api/local/v1/install";
        assert_eq!(
            call("GET", status, &[bearer(&SECRET)]).await,
            StatusCode::OK
        );
        assert_eq!(
            call("POST", install, &[bearer(&SECRET)]).await,
            StatusCode::ACCEPTED
        );
        for headers in [
            vec![],
            vec![bearer(&[8; 32])],
            vec![("authorization", hex(&SECRET))],
            vec![("authorization", "Bearer ".into())],
        ] {
            assert_eq!(
                call("POST", install, &headers).await,
                StatusCode::UNAUTHORIZED
            );
            assert_eq!(
                call("GET", status, &headers).await,
                StatusCode::UNAUTHORIZED
            );
        }
    }

    #[tokio::test]
    async fn a_web_page_cannot_drive_the_node_even_with_the_secret() {
        for origin in ["http://evil.example", "null", "http://127.0.0.1:7781"] {
            let headers = [bearer(&SECRET), ("origin", origin.to_string())];
            let code = call("POST", "/api/local/v1/install", &headers).await;
            assert_eq!(code, StatusCode::FORBIDDEN, "{origin}");
        }
    }

    #[tokio::test]
    async fn an_install_request_reaches_the_agent_only_when_admitted() {
        let ui = LocalUi::default();
        let routes = ui.routes(SECRET);
        let refused = warp::test::request()
            .method("POST")
            .path("/api/local/v1/install")
            .header("origin", "http://evil.example")
            .reply(&routes)
            .await;
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        assert!(!ui.take_manual_install().await);
        let (k, v) = bearer(&SECRET);
        let admitted = warp::test::request()
            .method("POST")
            .path("/api/local/v1/install")
            .header(k, v)
            .reply(&routes)
            .await;
        assert_eq!(admitted.status(), StatusCode::ACCEPTED);
        assert!(ui.take_manual_install().await);
    }
}
