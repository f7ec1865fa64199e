//! `/api/v1/rollouts`: list, create (explicit waves or a template), get, and
//! the pause, resume, cancel and approve actions. Every route passes the
//! guard first; the rules in `auth::rules` give approve and resume to
//! approvers.

use serde::Deserialize;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection};

use super::guard::guard;
use super::operator::with;
use super::{MAX_JSON_BODY, body, error_response, json, parse_id, parse_json, refused, reply};
use crate::auth::Caller;
use crate::rollouts::{NewRollout, RolloutId};
use crate::service::{Coordinator, Paging};

/// Query of `GET /api/v1/rollouts`.
#[derive(Debug, Deserialize)]
struct RolloutFilter {
    state: Option<String>,
}

/// `POST /api/v1/rollouts/{id}/pause|resume|cancel|approve`.
fn action(
    c: &Coordinator,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone + use<> {
    let verb = warp::path("pause")
        .map(|| "pause")
        .or(warp::path("resume").map(|| "resume"))
        .unify()
        .or(warp::path("cancel").map(|| "cancel"))
        .unify()
        .or(warp::path("approve").map(|| "approve"))
        .unify();
    warp::path!("api" / "v1" / "rollouts" / String / ..)
        .and(verb)
        .and(warp::path::end())
        .and(warp::post())
        .and(guard(c))
        .and(with(c))
        .then(
            |id: String, verb: &'static str, by: Caller, c: Coordinator| async move {
                let r = async {
                    let id = refused(&c, &by, parse_id::<RolloutId>(&id, "rollout id")).await?;
                    match verb {
                        "pause" => c.pause_rollout(id, &by).await,
                        "resume" => c.resume_rollout(id, &by).await,
                        "cancel" => c.cancel_rollout(id, &by).await,
                        _ => c.approve_rollout(id, &by).await,
                    }
                };
                reply(r.await)
            },
        )
}

pub(super) fn routes(c: &Coordinator) -> BoxedFilter<(Response,)> {
    let list = warp::path!("api" / "v1" / "rollouts")
        .and(warp::get())
        .and(guard(c))
        .and(with(c))
        .and(warp::query::<RolloutFilter>())
        .and(warp::query::<Paging>())
        .then(
            |_: Caller, c: Coordinator, f: RolloutFilter, p: Paging| async move {
                reply(c.rollouts(f.state, p).await)
            },
        );
    let create = warp::path!("api" / "v1" / "rollouts")
        .and(warp::post())
        .and(guard(c))
        .and(with(c))
        .and(body(MAX_JSON_BODY))
        .then(|by: Caller, c: Coordinator, b: bytes::Bytes| async move {
            let r = async {
                let input: NewRollout = refused(&c, &by, parse_json(&b)).await?;
                c.create_rollout(input, &by).await
            };
            match r.await {
                Ok(r) => json(StatusCode::CREATED, &r),
                Err(e) => error_response(&e),
            }
        });
    let get = warp::path!("api" / "v1" / "rollouts" / String)
        .and(warp::get())
        .and(guard(c))
        .and(with(c))
        .then(|id: String, _: Caller, c: Coordinator| async move {
            match parse_id::<RolloutId>(&id, "rollout id") {
                Ok(id) => reply(c.rollout(id).await),
                Err(e) => error_response(&e),
            }
        });
    list.or(create)
        .unify()
        .or(get)
        .unify()
        .or(action(c))
        .unify()
        .boxed()
}
