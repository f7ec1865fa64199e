//! The panel's files and gzip for every compressible answer.
//!
//! `/` is the panel's page, `/panel/<path>` its modules, styles and images,
//! all embedded in the binary by `tillswarm-web`. They are sent with an
//! ETag (a `304` when the browser's copy is current) and a Content Security
//! Policy that runs only the panel's own scripts.
//!
//! [`gzip_if_accepted`] compresses JSON, HTML, JavaScript, CSS, CSV and
//! text answers of known length for clients that accept gzip; streams
//! (chunks, bundles, the event stream) are left as they are.

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::LazyLock;

use http_body_util::BodyExt as _;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::Response;

use super::error_response;
use crate::error::Error;

/// Only the panel's own scripts and styles run; no frames, no plugins, and
/// network requests only to this coordinator. Inline `style` attributes are
/// allowed (the panel sets widths of progress bars that way), inline scripts
/// are not.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// Smallest body worth compressing.
const MIN_GZIP: u64 = 1024;
/// Largest body compressed in memory (larger ones are sent as they are).
const MAX_GZIP: u64 = 32 << 20;

/// Each asset's ETag: its blake3, quoted.
static ETAGS: LazyLock<HashMap<&'static str, String>> = LazyLock::new(|| {
    tillswarm_web::ASSETS
        .iter()
        .map(|a| {
            let hash = blake3::hash(a.bytes).to_hex();
            (a.path, format!("\"{}\"", &hash[..32]))
        })
        .collect()
});

pub(super) fn routes() -> BoxedFilter<(Response,)> {
    let index = warp::path::end()
        .and(warp::get())
        .and(warp::header::optional::<String>("if-none-match"))
        .map(|seen: Option<String>| serve("index.html", seen.as_deref()));
    let files = warp::path("panel")
        .and(warp::path::tail())
        .and(warp::get())
        .and(warp::header::optional::<String>("if-none-match"))
        .map(|tail: warp::path::Tail, seen: Option<String>| serve(tail.as_str(), seen.as_deref()));
    index.or(files).unify().boxed()
}

/// One embedded file (or 404), with caching and security headers.
fn serve(path: &str, if_none_match: Option<&str>) -> Response {
    let Some(asset) = tillswarm_web::asset(path) else {
        return error_response(&Error::NotFound(format!("no panel file {path:?}")));
    };
    let etag = &ETAGS[asset.path];
    let fresh = if_none_match.is_some_and(|seen| {
        seen.split(',')
            .any(|t| t.trim().trim_start_matches("W/") == etag)
    });
    let mut r = if fresh {
        warp::reply::with_status(warp::reply(), StatusCode::NOT_MODIFIED).into_response()
    } else {
        let mut r = Response::new(asset.bytes.into());
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        );
        r
    };
    let h = r.headers_mut();
    // Revalidated on every load, so a new coordinator's panel is picked up
    // at once; an unchanged file costs a 304.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    r
}

use warp::Reply as _;

/// Whether an `Accept-Encoding` value accepts gzip (`gzip` or `*` without
/// `q=0`).
pub fn accepts_gzip(accept: &str) -> bool {
    accept.split(',').any(|item| {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or_default().trim();
        let refused = parts.any(|p| {
            p.trim()
                .strip_prefix("q=")
                .and_then(|q| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        !refused && (coding.eq_ignore_ascii_case("gzip") || coding == "*")
    })
}

fn compressible(content_type: &str) -> bool {
    let ct = content_type.to_ascii_lowercase();
    [
        "application/json",
        "text/html",
        "text/javascript",
        "text/css",
        "text/csv",
        "text/plain",
    ]
    .iter()
    .any(|t| ct.starts_with(t))
        || ct.starts_with("image/svg+xml")
}

/// `r`, gzip-compressed when the client accepts it and the body is worth it.
pub(super) async fn gzip_if_accepted(accept: Option<&str>, mut r: Response) -> Response {
    let Some(ct) = r
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .filter(|ct| compressible(ct))
        .map(str::to_owned)
    else {
        return r;
    };
    // Caches must keep the compressed and the plain answer apart.
    r.headers_mut()
        .insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    let size = http_body::Body::size_hint(r.body()).exact();
    if !accept.is_some_and(accepts_gzip)
        || r.headers().contains_key(header::CONTENT_ENCODING)
        || !size.is_some_and(|n| (MIN_GZIP..=MAX_GZIP).contains(&n))
    {
        return r;
    }
    let (mut parts, body) = r.into_parts();
    let plain = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => return error_response(&Error::Internal(format!("reading a {ct} answer: {e}"))),
    };
    let compress = move || {
        let mut gz = flate2::write::GzEncoder::new(
            Vec::with_capacity(plain.len() / 3),
            flate2::Compression::new(6),
        );
        gz.write_all(&plain).and_then(|()| gz.finish())
    };
    let packed = if size.unwrap_or(0) <= 256 << 10 {
        compress()
    } else {
        match tokio::task::spawn_blocking(compress).await {
            Ok(packed) => packed,
            Err(e) => Err(std::io::Error::other(e)),
        }
    };
    match packed {
        Ok(packed) => {
            parts.headers.remove(header::CONTENT_LENGTH);
            parts
                .headers
                .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            Response::from_parts(parts, bytes::Bytes::from(packed).into())
        }
        Err(e) => error_response(&Error::Internal(format!("gzip: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_encoding_is_parsed() {
        assert!(accepts_gzip("gzip"));
        assert!(accepts_gzip("gzip, deflate, br, zstd"));
        assert!(accepts_gzip("br;q=1.0, GZIP;q=0.5"));
        assert!(accepts_gzip("*"));
        assert!(!accepts_gzip("gzip;q=0"));
        assert!(!accepts_gzip("br, deflate"));
        assert!(!accepts_gzip("identity"));
        assert!(!accepts_gzip(""));
    }
}
