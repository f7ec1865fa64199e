//! HTTP routes: the node API, the operator API, the panel, health and metrics.
//! [`routes`] builds the whole filter tree; tests drive it with `warp::test`
//! without a socket. Every failure becomes a JSON [`ApiError`] body with a
//! stable code: 4xx for the caller's mistakes, 5xx only for our own.

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

mod node;
pub mod openapi;
mod operator;

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
    let health = warp::path!("healthz")
        .and(warp::get())
        .map(|| json(StatusCode::OK, &serde_json::json!({"status": "ok"})));
    let metrics = {
        let c = c.clone();
        warp::path!("metrics").and(warp::get()).then(move || {
            let c = c.clone();
            async move {
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
    let panel = warp::path::end()
        .and(warp::get())
        .map(|| warp::reply::html(tillswarm_web::INDEX_HTML).into_response());
    health
        .or(metrics)
        .unify()
        .or(openapi)
        .unify()
        .or(panel)
        .unify()
        .or(node::routes(c.clone()))
        .unify()
        .or(operator::routes(c))
        .unify()
        .recover(recover)
        .unify()
        .with(log)
        .map(Reply::into_response)
        .boxed()
}

/// A JSON response with a status.
pub(crate) fn json<T: Serialize>(status: StatusCode, body: &T) -> Response {
    warp::reply::with_status(warp::reply::json(body), status).into_response()
}

/// The response for an error.
pub(crate) fn error_response(e: &Error) -> Response {
    let (status, body) = e.to_response_parts();
    json(status, &body)
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

/// Parses a path segment, turning a malformed id into a 400.
pub(crate) fn parse_id<T: std::str::FromStr>(text: &str, what: &str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    text.parse()
        .map_err(|e: T::Err| Error::bad("invalid_id", format!("invalid {what} {text:?}: {e}")))
}

/// A JSON body capped at `limit` bytes.
pub(crate) fn body(
    limit: u64,
) -> impl Filter<Extract = (bytes::Bytes,), Error = Rejection> + Clone {
    warp::body::content_length_limit(limit).and(warp::body::bytes())
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
