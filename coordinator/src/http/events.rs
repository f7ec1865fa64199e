//! `GET /api/v1/events`: the live change stream for the panel, as
//! server-sent events (see [`crate::events`]). Passes the guard like every
//! operator route; a stream lasts at most [`STREAM_LIFETIME`], after which
//! the browser reconnects and so shows its credential again (a logged-out
//! or expired session then gets its 401 instead of a stream).

use std::convert::Infallible;
use std::time::Duration;

use futures_util::stream::{self, Stream, StreamExt};
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::reply::Response;
use warp::sse::Event;

use super::error_response;
use super::guard::guard;
use super::operator::with;
use crate::auth::Caller;
use crate::error::Error;
use crate::events::{Next, Subscription};
use crate::service::Coordinator;

/// Longest life of one stream before the client must reconnect.
pub const STREAM_LIFETIME: Duration = Duration::from_secs(300);
/// Keep-alive comment interval (proxies close idle connections).
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How soon the browser reconnects after the stream ends.
const RECONNECT: Duration = Duration::from_secs(2);

pub(super) fn routes(c: &Coordinator) -> BoxedFilter<(Response,)> {
    warp::path!("api" / "v1" / "events")
        .and(warp::get())
        .and(guard(c))
        .and(with(c))
        .map(|_: Caller, c: Coordinator| match c.events().subscribe() {
            Some(sub) => {
                let events = warp::sse::keep_alive()
                    .interval(KEEP_ALIVE)
                    .stream(frames(sub));
                let mut r = warp::Reply::into_response(warp::sse::reply(events));
                // Nothing between here and the browser may buffer the stream.
                r.headers_mut().insert(
                    "cache-control",
                    warp::http::HeaderValue::from_static("no-store"),
                );
                r.headers_mut().insert(
                    "x-accel-buffering",
                    warp::http::HeaderValue::from_static("no"),
                );
                r
            }
            None => error_response(&Error::Unavailable(format!(
                "{} event streams are open; poll the API instead",
                crate::events::MAX_STREAMS
            ))),
        })
        .boxed()
}

/// `hello`, then one `change` per change (`resync` when some were dropped),
/// until the bus closes or the stream's lifetime is over.
fn frames(sub: Subscription) -> impl Stream<Item = Result<Event, Infallible>> + Send {
    let hello = Event::default()
        .event("hello")
        .retry(RECONNECT)
        .data(format!(r#"{{"lifetime_s":{}}}"#, STREAM_LIFETIME.as_secs()));
    let changes = stream::unfold(sub, |mut sub| async move {
        let event = match sub.next().await? {
            Next::Change(change) => Event::default()
                .event("change")
                .json_data(&change)
                .unwrap_or_else(|_| Event::default().event("resync").data("{}")),
            Next::Resync => Event::default().event("resync").data("{}"),
        };
        Some((Ok(event), sub))
    });
    let until = tokio::time::sleep(STREAM_LIFETIME);
    stream::once(async move { Ok(hello) }).chain(changes.take_until(until))
}
