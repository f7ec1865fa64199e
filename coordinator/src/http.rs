//! HTTP routes: the node API, the operator API, the panel, health and metrics.
//! [`routes`] builds the whole filter tree; tests drive it with `warp::test`
//! without a socket, and [`crate::server`] serves it. Every failure becomes a
//! JSON [`ApiError`] body with a stable code: 4xx for the caller's mistakes, 5xx
//! only for our own. Operator routes pass the guard (`guard.rs`) first.

use std::convert::Infallible;

use serde::Serialize;
use tillswarm_protocol::api::ApiError;
use warp::filters::BoxedFilter;
use warp::http::{StatusCode, header};
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use crate::error::{Error, Result};
use crate::metrics::Family;
use crate::service::Coordinator;

mod account;
pub mod assets;
mod events;
pub mod guard;
mod node;
pub mod openapi;
mod operator;
mod rollouts;
mod wan;

/// Largest JSON body of an ordinary request.
pub const MAX_JSON_BODY: u64 = 1 << 20;
/// Largest registry import body.
pub const MAX_IMPORT_BODY: u64 = 64 << 20;

/// The coordinator's complete route tree.
pub fn routes(c: Coordinator) -> BoxedFilter<(Response,)> {
    let metrics_sink = c.clone();
    let log = warp::log::custom(move |info| {
        metrics_sink.metrics().observe(
            Family::of(info.path()),
            info.status().as_u16(),
            info.elapsed().as_secs_f64(),
        );
    });
    let health = warp::path!("healthz").and(warp::get()).map(|| {
        let health = tillswarm_protocol::operator::Health {
            status: tillswarm_protocol::operator::HealthStatus::Ok,
        };
        json(StatusCode::OK, &health)
    });
    let metrics = {
        let c = c.clone();
        warp::path!("metrics")
            .and(warp::get())
            .and(warp::header::optional::<String>("authorization"))
            .then(move |auth: Option<String>| {
                let c = c.clone();
                async move {
                    if let Some(expected) = &c.config().metrics_token {
                        // blake3's Hash compares in constant time.
                        let sent = auth
                            .as_deref()
                            .and_then(|a| a.split_once(' '))
                            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                            .map_or("", |(_, token)| token.trim());
                        if blake3::hash(sent.as_bytes()) != blake3::hash(expected.as_bytes()) {
                            return error_response(&Error::unauthenticated(
                                "unauthenticated",
                                "/metrics needs `Authorization: Bearer <metrics token>`",
                            ));
                        }
                    }
                    match c.gauges().await {
                        Ok(g) => warp::reply::with_header(
                            c.metrics().render(&g),
                            header::CONTENT_TYPE,
                            "text/plain; version=0.0.4",
                        )
                        .into_response(),
                        Err(e) => error_response(&e),
                    }
                }
            })
    };
    let openapi = warp::path!("api" / "v1" / "openapi.json")
        .and(warp::get())
        .map(|| {
            warp::reply::with_header(openapi::DOCUMENT, header::CONTENT_TYPE, "application/json")
                .into_response()
        });
    let tree = health
        .or(metrics)
        .unify()
        .or(openapi)
        .unify()
        .or(assets::routes())
        .unify()
        .or(node::routes(c.clone()))
        .unify()
        .or(operator::routes(c))
        .unify()
        .recover(recover)
        .unify();
    // `path::full` reads the path without consuming it: the tree still routes.
    warp::path::full()
        .and(warp::header::optional::<String>("accept-encoding"))
        .and(tree)
        .then(
            |path: warp::path::FullPath, accept: Option<String>, mut r: Response| async move {
                if r.status() == StatusCode::METHOD_NOT_ALLOWED {
                    let allow = openapi::methods_of(path.as_str()).join(", ");
                    if let Ok(v) = header::HeaderValue::from_str(&allow) {
                        r.headers_mut().insert(header::ALLOW, v);
                    }
                }
                assets::gzip_if_accepted(accept.as_deref(), r).await
            },
        )
        .with(log)
        .map(Reply::into_response)
        .boxed()
}

/// A JSON response with a status.
pub(crate) fn json<T: Serialize>(status: StatusCode, body: &T) -> Response {
    warp::reply::with_status(warp::reply::json(body), status).into_response()
}

/// The response for an error (with `Retry-After` on a 429 and
/// `WWW-Authenticate` on a 401).
pub(crate) fn error_response(e: &Error) -> Response {
    let (status, body) = e.to_response_parts();
    let mut r = json(status, &body);
    match e {
        Error::TooManyAttempts { retry_after_s } => {
            if let Ok(v) = header::HeaderValue::from_str(&retry_after_s.to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        Error::Unavailable(_) => {
            r.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        Error::Unauthenticated { .. } => {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"tillswarm\""),
            );
        }
        _ => {}
    }
    r
}

/// 200 with the value as JSON, or the error's response.
pub(crate) fn reply<T: Serialize>(r: Result<T>) -> Response {
    match r {
        Ok(v) => json(StatusCode::OK, &v),
        Err(e) => error_response(&e),
    }
}

/// Parses a JSON object body into `T`; the message names the offending field.
/// Only objects are accepted: serde would otherwise take a struct's fields as a
/// positional array, which no client means.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| Error::bad("invalid_json", format!("invalid JSON body: {e}")))?;
    let kind = match &value {
        serde_json::Value::Object(_) => return from_value(value),
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
    };
    Err(Error::bad(
        "invalid_json",
        format!("invalid JSON body: invalid type: expected an object, got {kind}"),
    ))
}

/// Converts parsed JSON into `T`, naming the offending field on failure.
pub(crate) fn from_value<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            Error::bad("invalid_json", format!("invalid JSON body: {}", e.inner()))
        } else {
            Error::bad(
                "invalid_json",
                format!("invalid JSON body at `{path}`: {}", e.inner()),
            )
        }
    })
}

/// Records a change refused before it reached the service (a malformed id or
/// body; the service audits its own failures) as a failed change. Only for
/// callers who passed a change route's guard, so the rows are bounded by
/// authenticated requests.
async fn audit_refusal(c: &Coordinator, by: &crate::auth::Caller, e: &Error) {
    if let Some(rule) = crate::auth::rules::find(&by.method, &by.route) {
        c.audit_failure(by, rule.action, crate::audit::Note::default(), e)
            .await;
    }
}

/// Passes `r` through, auditing it when it is an error ([`audit_refusal`]).
pub(crate) async fn refused<T>(
    c: &Coordinator,
    by: &crate::auth::Caller,
    r: Result<T>,
) -> Result<T> {
    if let Err(e) = &r {
        audit_refusal(c, by, e).await;
    }
    r
}

/// The response for a change refused before the service, audited.
pub(crate) async fn refuse(c: &Coordinator, by: &crate::auth::Caller, e: Error) -> Response {
    audit_refusal(c, by, &e).await;
    error_response(&e)
}

/// Parses a path segment, turning a malformed id into a 400.
pub(crate) fn parse_id<T: std::str::FromStr>(text: &str, what: &str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    text.parse()
        .map_err(|e: T::Err| Error::bad("invalid_id", format!("invalid {what} {text:?}: {e}")))
}

/// A task id from a path: any decimal `i64`, as the database numbers tasks
/// (`0` or a negative number is a task that does not exist: 404, not 400).
pub(crate) fn parse_task_id(text: &str) -> Result<tillswarm_protocol::TaskId> {
    parse_id::<i64>(text, "task id").map(|id| tillswarm_protocol::TaskId(id as u64))
}

/// How long a request body may pause before it is refused (408), unless the
/// accept loop set another [`BodyIdle`] on the request; so a slow client cannot
/// hold a request open by trickling its body.
pub const BODY_IDLE: std::time::Duration = std::time::Duration::from_secs(30);

/// Slowest average rate a body may arrive at once its first pause limit has
/// passed: a body trickled a byte at a time within the pause limit still ends.
pub const MIN_BODY_RATE: u64 = 16 << 10;

/// The body pause limit for a request, set by the accept loop from its options.
#[derive(Debug, Clone, Copy)]
pub struct BodyIdle(pub std::time::Duration);

/// The body pause limit of this request.
pub(crate) fn body_idle() -> impl Filter<Extract = (std::time::Duration,), Error = Infallible> + Copy
{
    warp::ext::optional::<BodyIdle>().map(|b: Option<BodyIdle>| b.map_or(BODY_IDLE, |b| b.0))
}

/// A body capped at `limit` bytes (by `Content-Length` and as received), read
/// with the body pause limit between pieces.
pub(crate) fn body(
    limit: u64,
) -> impl Filter<Extract = (bytes::Bytes,), Error = Rejection> + Clone {
    warp::body::content_length_limit(limit)
        .and(body_idle())
        .and(warp::body::stream())
        .and_then(move |idle, stream| async move {
            collect_body(stream, limit, idle)
                .await
                .map_err(warp::reject::custom)
        })
}

/// `stream` with each piece awaited at most `idle`, and after the first
/// `idle` an average of at least [`MIN_BODY_RATE`]; either failing ends it with
/// an error (an upload trickled a byte at a time still ends).
pub(crate) fn idle_limited<S, B, E>(
    stream: S,
    idle: std::time::Duration,
) -> impl futures_util::Stream<Item = std::result::Result<B, String>> + Send
where
    S: futures_util::Stream<Item = std::result::Result<B, E>> + Send + 'static,
    E: std::fmt::Display,
    B: bytes::Buf + Send,
{
    use futures_util::StreamExt;
    let start = tokio::time::Instant::now();
    futures_util::stream::unfold(Some((Box::pin(stream), 0u64)), move |state| async move {
        let (mut stream, received) = state?;
        let item = match tokio::time::timeout(idle, stream.next()).await {
            Err(_) => return Some((Err(format!("the body paused for over {idle:?}")), None)),
            Ok(None) => return None,
            Ok(Some(item)) => item,
        };
        let piece = match item {
            Ok(piece) => piece,
            Err(e) => return Some((Err(e.to_string()), None)),
        };
        let received = received + piece.remaining() as u64;
        let late = start.elapsed().saturating_sub(idle).as_secs();
        if received < late.saturating_mul(MIN_BODY_RATE) {
            let slow = format!("the body came slower than {MIN_BODY_RATE} bytes a second");
            return Some((Err(slow), None));
        }
        Some((Ok(piece), Some((stream, received))))
    })
}

async fn collect_body<S, B>(
    stream: S,
    limit: u64,
    idle: std::time::Duration,
) -> Result<bytes::Bytes>
where
    S: futures_util::Stream<Item = std::result::Result<B, warp::Error>>,
    B: bytes::Buf,
{
    use bytes::BufMut;
    use futures_util::StreamExt;
    let mut stream = std::pin::pin!(stream);
    let mut out = bytes::BytesMut::new();
    // The whole body: the pause limit plus its size at the slowest rate.
    let deadline =
        tokio::time::Instant::now() + idle + std::time::Duration::from_secs(limit / MIN_BODY_RATE);
    loop {
        let wait = idle.min(deadline.saturating_duration_since(tokio::time::Instant::now()));
        let piece = tokio::time::timeout(wait, stream.next())
            .await
            .map_err(|_| Error::Timeout("the request body stalled or came too slowly".into()))?;
        match piece {
            None => return Ok(out.freeze()),
            Some(Err(e)) => {
                return Err(Error::bad(
                    "invalid_body",
                    format!("the request body could not be read: {e}"),
                ));
            }
            Some(Ok(piece)) => {
                if (out.len() + piece.remaining()) as u64 > limit {
                    return Err(Error::TooLarge(format!(
                        "the request body is larger than {limit} bytes"
                    )));
                }
                out.put(piece);
            }
        }
    }
}

async fn recover(err: Rejection) -> std::result::Result<Response, Infallible> {
    let (status, code, message) = if err.is_not_found() {
        (
            StatusCode::NOT_FOUND,
            "not_found",
            "no such route".to_owned(),
        )
    } else if err.find::<warp::reject::PayloadTooLarge>().is_some() {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            "the request body is too large".to_owned(),
        )
    } else if err.find::<warp::reject::LengthRequired>().is_some() {
        (
            StatusCode::LENGTH_REQUIRED,
            "length_required",
            "a Content-Length header is required".to_owned(),
        )
    } else if let Some(e) = err.find::<warp::reject::InvalidQuery>() {
        (
            StatusCode::BAD_REQUEST,
            "invalid_query",
            format!("invalid query string: {e}"),
        )
    } else if let Some(e) = err.find::<warp::reject::InvalidHeader>() {
        (StatusCode::BAD_REQUEST, "invalid_header", e.to_string())
    } else if let Some(e) = err.find::<warp::reject::MissingHeader>() {
        (StatusCode::BAD_REQUEST, "missing_header", e.to_string())
    } else if err.find::<warp::reject::UnsupportedMediaType>().is_some() {
        (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "unsupported content type".to_owned(),
        )
    } else if let Some(e) = err.find::<Error>() {
        return Ok(error_response(e));
    } else if err.find::<warp::reject::MethodNotAllowed>().is_some() {
        // Last: a sibling route on the same path (GET beside POST) always adds a
        // MethodNotAllowed, which must not hide the real reason (413, 411, 400).
        (
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "method not allowed on this route".to_owned(),
        )
    } else {
        tracing::warn!(rejection = ?err, "unhandled rejection");
        (
            StatusCode::BAD_REQUEST,
            "bad_request",
            "the request could not be handled".to_owned(),
        )
    };
    Ok(json(
        status,
        &ApiError {
            code: code.to_owned(),
            message,
        },
    ))
}
