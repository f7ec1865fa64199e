//! `GET /api/v1/tasks/{id}/wan`: a task's WAN diagnostics per store (see
//! [`crate::wan::report`]); `GET /api/v1/stores/{id}/wan`: a store's WAN
//! bytes per recent task ([`crate::wan::store`]). Passes the guard first, as every operator route.

use warp::Filter;
use warp::filters::BoxedFilter;
use warp::reply::Response;

use super::guard::guard;
use super::operator::with;
use super::{error_response, parse_task_id, reply};
use crate::auth::Caller;
use crate::service::Coordinator;
use crate::wan::report::WanQuery;
use crate::wan::store::StoreWanQuery;

pub(super) fn routes(c: &Coordinator) -> BoxedFilter<(Response,)> {
    warp::path!("api" / "v1" / "tasks" / String / "wan")
        .and(warp::get())
        .and(guard(c))
        .and(with(c))
        .and(warp::query::<WanQuery>())
        .then(
            |id: String, _: Caller, c: Coordinator, q: WanQuery| async move {
                match parse_task_id(&id) {
                    Ok(id) => reply(c.task_wan(id, q).await),
                    Err(e) => error_response(&e),
                }
            },
        )
        .or(warp::path!("api" / "v1" / "stores" / String / "wan")
            .and(warp::get())
            .and(guard(c))
            .and(with(c))
            .and(warp::query::<StoreWanQuery>())
            .then(
                |store: String, _: Caller, c: Coordinator, q: StoreWanQuery| async move {
                    reply(c.store_wan(store, q).await)
                },
            ))
        .unify()
        .boxed()
}
