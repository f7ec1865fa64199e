//! The node API under `/api/v1/node/`: device login (challenge, session), then,
//! with the device token, heartbeats, progress reports, manifests and chunks
//! (with HTTP Range support, so an interrupted chunk can resume). Each chunk
//! served to a till is recorded for the WAN diagnostics ([`crate::wan`]).

use std::net::SocketAddr;

use tillswarm_protocol::api::{
    CHUNK_ENCODING, ChallengeRequest, DeviceLogin, HeartbeatRequest, ProgressReport,
};
use tillswarm_protocol::{ChunkHash, PackageId};
use warp::filters::BoxedFilter;
use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::Response;
use warp::{Filter, Reply};

use super::{MAX_JSON_BODY, body, error_response, parse_id, parse_json, reply};
use crate::error::{Error, Result};
use crate::service::Coordinator;
use crate::wan::ChunkServed;

pub(super) fn routes(c: Coordinator) -> BoxedFilter<(Response,)> {
    let with = move || {
        let c = c.clone();
        warp::any().map(move || c.clone())
    };
    let challenge = warp::path!("api" / "v1" / "node" / "challenge")
        .and(warp::post())
        .and(with())
        .and(body(MAX_LOGIN_BODY))
        .then(|c: Coordinator, b: bytes::Bytes| async move {
            let r = parse_json::<ChallengeRequest>(&b)
                .and_then(|req| c.device_challenge(req.device_id));
            reply(r)
        });
    let session = warp::path!("api" / "v1" / "node" / "session")
        .and(warp::post())
        .and(with())
        .and(super::guard::client_addr())
        .and(body(MAX_LOGIN_BODY))
        .then(
            |c: Coordinator, addr: Option<SocketAddr>, b: bytes::Bytes| async move {
                let r = async {
                    let login: DeviceLogin = parse_json(&b)?;
                    let client = addr.map_or_else(|| "unknown".to_owned(), |a| a.ip().to_string());
                    c.device_login(login, client).await
                };
                reply(r.await)
            },
        );
    let heartbeat = warp::path!("api" / "v1" / "node" / "heartbeat")
        .and(warp::post())
        .and(with())
        .and(device_token())
        .and(super::guard::client_addr())
        .and(body(MAX_JSON_BODY))
        .then(
            |c: Coordinator, token: String, addr: Option<SocketAddr>, b: bytes::Bytes| async move {
                let r = async {
                    let req: HeartbeatRequest = parse_json(&b)?;
                    c.heartbeat(token, req, addr.map(|a| a.ip().to_string()))
                        .await
                };
                reply(r.await)
            },
        );
    let progress = warp::path!("api" / "v1" / "node" / "progress")
        .and(warp::post())
        .and(with())
        .and(device_token())
        .and(body(MAX_JSON_BODY))
        .then(
            |c: Coordinator, token: String, b: bytes::Bytes| async move {
                let r = async {
                    let report: ProgressReport = parse_json(&b)?;
                    c.report(token, report).await
                };
                reply(r.await)
            },
        );
    let manifest = warp::path!("api" / "v1" / "node" / "manifests" / String)
        .and(warp::get())
        .and(with())
        .and(fetch_token())
        .then(|id: String, c: Coordinator, token: String| async move {
            let r = async {
                c.authorize_fetch(token).await?;
                let id: PackageId = parse_id(&id, "package id")?;
                c.signed_manifest(id).await
            };
            match r.await {
                Ok(bytes) => octets(bytes),
                Err(e) => error_response(&e),
            }
        });
    let chunk = warp::path!("api" / "v1" / "node" / "chunks" / String)
        .and(warp::get())
        .and(with())
        .and(fetch_token())
        .and(warp::header::optional::<String>("range"))
        .and(warp::header::optional::<String>(CHUNK_ENCODING))
        .then(
            |hash: String,
             c: Coordinator,
             token: String,
             range: Option<String>,
             encoding: Option<String>| async move {
                let r = async {
                    let device = c.authorize_fetch(token).await?;
                    let zstd = encoding.is_some_and(|e| e.split(',').any(|v| v.trim() == "zstd"));
                    let (response, served) = serve_chunk(&c, &hash, range.as_deref(), zstd).await?;
                    if let (Some(device), Some(served)) = (device, served) {
                        c.record_chunk_served(device, served).await;
                    }
                    Ok::<_, Error>(response)
                };
                match r.await {
                    Ok(r) => r,
                    Err(e) => error_response(&e),
                }
            },
        );
    challenge
        .or(session)
        .unify()
        .or(heartbeat)
        .unify()
        .or(progress)
        .unify()
        .or(manifest)
        .unify()
        .or(chunk)
        .unify()
        .boxed()
}

/// Largest body of a challenge or login request.
const MAX_LOGIN_BODY: u64 = 4 << 10;

/// The device token of a node request, refused (401) before the body is read
/// when it is missing or not shaped like one. Whether it is live, and its
/// device's, is checked in the database job that acts on the request.
fn device_token() -> impl Filter<Extract = (String,), Error = warp::Rejection> + Copy {
    bearer(crate::device_auth::is_device_token)
}

/// The bearer token of a manifest or chunk request: a device token or an
/// operator's API token (packages are the chain's, so either may read them).
fn fetch_token() -> impl Filter<Extract = (String,), Error = warp::Rejection> + Copy {
    bearer(|t| !t.is_empty() && t.len() <= 256)
}

/// A bearer token `shaped` accepts, else 401 before anything else is read.
fn bearer(
    shaped: fn(&str) -> bool,
) -> impl Filter<Extract = (String,), Error = warp::Rejection> + Copy {
    warp::header::headers_cloned().and_then(move |headers: warp::http::HeaderMap| async move {
        let missing = || {
            warp::reject::custom(Error::unauthenticated(
                "unauthenticated",
                "node requests need a device token: POST /api/v1/node/challenge, sign it, \
                 POST /api/v1/node/session, then send `Authorization: Bearer <token>`",
            ))
        };
        let auth = headers.get(header::AUTHORIZATION).ok_or_else(missing)?;
        match auth.to_str().unwrap_or_default().trim().split_once(' ') {
            Some((scheme, token))
                if scheme.eq_ignore_ascii_case("bearer") && shaped(token.trim()) =>
            {
                Ok(token.trim().to_owned())
            }
            _ => Err(warp::reject::custom(Error::unauthenticated(
                "invalid_device_token",
                "send the device token from POST /api/v1/node/session as \
                 `Authorization: Bearer tsd_...`",
            ))),
        }
    })
}

fn octets(bytes: Vec<u8>) -> Response {
    let mut r = Response::new(bytes.into());
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    r
}

/// Parses a single `bytes=a-b`, `bytes=a-` or `bytes=-n` range against `size`.
pub(crate) fn parse_range(spec: &str, size: u64) -> Result<(u64, u64)> {
    let bad = || {
        Error::bad(
            "invalid_range",
            format!("unsupported Range {spec:?}; use bytes=START-END"),
        )
    };
    let spec = spec.trim().strip_prefix("bytes=").ok_or_else(bad)?;
    if spec.contains(',') {
        return Err(bad());
    }
    let (a, b) = spec.split_once('-').ok_or_else(bad)?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: u64 = n.parse().map_err(|_| bad())?;
            (size.saturating_sub(n), size)
        }
        (s, "") => (s.parse().map_err(|_| bad())?, size),
        (s, e) => {
            let s: u64 = s.parse().map_err(|_| bad())?;
            let e: u64 = e.parse().map_err(|_| bad())?;
            if e < s {
                return Err(bad());
            }
            (s, e.saturating_add(1).min(size))
        }
    };
    if start >= size || start >= end {
        return Err(Error::bad(
            "range_not_satisfiable",
            format!("range {spec} is outside the chunk of {size} bytes"),
        ));
    }
    Ok((start, end))
}

/// A chunk (or the range of it asked for) and, unless the range could not
/// be served, what was sent: its stored zstd frame when the till accepts
/// `zstd`, else its content; the answer's [`CHUNK_ENCODING`] says which (a
/// range is of the form sent).
async fn serve_chunk(
    c: &Coordinator,
    hash: &str,
    range: Option<&str>,
    zstd: bool,
) -> Result<(Response, Option<ChunkServed>)> {
    let hash: ChunkHash = parse_id(hash, "chunk hash")?;
    let (data, compressed) = c.chunk(hash, zstd).await?;
    let encoding = HeaderValue::from_static(if compressed { "zstd" } else { "raw" });
    let Some(range) = range else {
        let served = ChunkServed {
            hash,
            offset: 0,
            bytes: data.len() as u64,
        };
        let mut r = octets(data);
        r.headers_mut().insert(CHUNK_ENCODING, encoding);
        return Ok((r, Some(served)));
    };
    let size = data.len() as u64;
    let (start, end) = match parse_range(range, size) {
        Ok(r) => r,
        Err(
            e @ Error::BadRequest {
                code: "range_not_satisfiable",
                ..
            },
        ) => {
            let mut r = error_response(&e);
            *r.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return Ok((r, None));
        }
        Err(e) => return Err(e),
    };
    let data = data[start as usize..end as usize].to_vec();
    let served = ChunkServed {
        hash,
        offset: start,
        bytes: data.len() as u64,
    };
    let mut r = octets(data);
    r.headers_mut().insert(CHUNK_ENCODING, encoding);
    *r.status_mut() = StatusCode::PARTIAL_CONTENT;
    if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{size}", end - 1)) {
        r.headers_mut().insert(header::CONTENT_RANGE, v);
    }
    Ok((r.into_response(), Some(served)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100).expect("range"), (0, 10));
        assert_eq!(parse_range("bytes=90-", 100).expect("range"), (90, 100));
        assert_eq!(parse_range("bytes=-10", 100).expect("range"), (90, 100));
        assert_eq!(parse_range("bytes=95-200", 100).expect("range"), (95, 100));
        assert!(parse_range("bytes=100-", 100).is_err());
        assert!(parse_range("bytes=5-1", 100).is_err());
        assert!(parse_range("bytes=0-1,3-4", 100).is_err());
        assert!(parse_range("items=0-1", 100).is_err());
    }
}
