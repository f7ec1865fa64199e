//! The gate in front of every operator route: who is calling (a bearer token or
//! a session cookie), whether a cookie-authenticated change really comes from
//! the coordinator's own pages (the CSRF defence), and whether the caller's
//! role is allowed by the route's rule in [`crate::auth::rules`].
//!
//! Every operator route starts with [`guard`] right after its path and method,
//! so nothing about a request (query, body) is read before it passes.

use std::convert::Infallible;
use std::net::SocketAddr;

use warp::http::{HeaderMap, Method, header};
use warp::path::FullPath;
use warp::{Filter, Rejection};

use crate::audit::{Note, Outcome};
use crate::auth::rules::{self, Access, Rule};
use crate::auth::{Caller, Role};
use crate::error::{Error, Result};
use crate::service::Coordinator;
use crate::service::access::SessionInfo;

/// The session cookie's name over plain HTTP.
pub const SESSION_COOKIE: &str = "tillswarm_session";
/// The session cookie's name where cookies are `Secure`: the `__Host-` prefix
/// makes browsers refuse one set by a sibling domain or for a narrower path.
pub const SECURE_SESSION_COOKIE: &str = "__Host-tillswarm_session";

/// The session cookie's name for a request (TLS here, or `secure_cookies`
/// behind a TLS proxy).
pub(crate) fn cookie_name(c: &Coordinator, tls: bool) -> &'static str {
    if tls || c.config().secure_cookies {
        SECURE_SESSION_COOKIE
    } else {
        SESSION_COOKIE
    }
}

/// Set by the accept loop on requests that came over TLS.
#[derive(Debug, Clone, Copy)]
pub struct OverTls;

/// The peer address as the accept loop saw it (warp's own is private to it).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

/// The client's address: ours from the accept loop, or warp's (tests).
pub(crate) fn client_addr()
-> impl Filter<Extract = (Option<SocketAddr>,), Error = Infallible> + Copy {
    warp::ext::optional::<ClientAddr>()
        .and(warp::addr::remote())
        .map(|ours: Option<ClientAddr>, warps: Option<SocketAddr>| ours.map(|a| a.0).or(warps))
}

/// Whether the request came over TLS.
pub(crate) fn over_tls() -> impl Filter<Extract = (bool,), Error = Infallible> + Copy {
    warp::ext::optional::<OverTls>().map(|t: Option<OverTls>| t.is_some())
}

/// Authenticates and authorises an operator request; extracts the [`Caller`].
pub(crate) fn guard(
    c: &Coordinator,
) -> impl Filter<Extract = (Caller,), Error = Rejection> + Clone + use<> {
    guard_with_session(c).map(|caller: Caller, _| caller)
}

/// As [`guard`], also extracting what `GET /api/v1/session` shows.
pub(crate) fn guard_with_session(
    c: &Coordinator,
) -> impl Filter<Extract = (Caller, Option<SessionInfo>), Error = Rejection> + Clone + use<> {
    let c = c.clone();
    warp::method()
        .and(warp::path::full())
        .and(warp::header::headers_cloned())
        .and(client_addr())
        .and(over_tls())
        .and_then(
            move |method: Method,
                  path: FullPath,
                  headers: HeaderMap,
                  addr: Option<SocketAddr>,
                  tls| {
                let c = c.clone();
                async move {
                    authorize(&c, method.as_str(), path.as_str(), &headers, addr, tls)
                        .await
                        .map_err(warp::reject::custom)
                }
            },
        )
        .untuple_one()
}

async fn authorize(
    c: &Coordinator,
    method: &str,
    path: &str,
    headers: &HeaderMap,
    addr: Option<SocketAddr>,
    tls: bool,
) -> Result<(Caller, Option<SessionInfo>)> {
    let client = addr.map_or_else(|| "unknown".to_owned(), |a| a.ip().to_string());
    let Some(rule) = rules::find(method, path) else {
        tracing::error!(method, path, "no access rule covers this route; refused");
        return Err(Error::forbidden(
            "no_rule",
            "no access rule covers this route",
        ));
    };
    // A login ignores an Authorization header it cannot use (a proxy's Basic
    // credentials); everywhere else a malformed one is refused.
    let bearer = match bearer_token(headers) {
        Err(_) if rule.access == Access::Public => None,
        other => other?,
    };
    let cookie = session_cookie(headers, cookie_name(c, tls));
    let by_cookie = bearer.is_none() && cookie.is_some();
    let sent_credentials = bearer.is_some() || cookie.is_some();
    let Some((actor, info)) = c.authenticate(bearer, cookie).await? else {
        if rule.access == Access::Public {
            csrf(c, rule, headers, tls, false)?;
            let caller = Caller::anonymous("", client, method, path);
            return Ok((caller, None));
        }
        return Err(unauthenticated(c, sent_credentials).await);
    };
    let caller = Caller {
        actor,
        client,
        method: method.to_owned(),
        route: path.to_owned(),
    };
    if by_cookie || rule.access == Access::Public {
        if let Err(e) = csrf(c, rule, headers, tls, by_cookie) {
            deny(c, &caller, rule, &e).await;
            return Err(e);
        }
    }
    if let Access::Role(needed) = rule.access {
        if !caller.may(needed) {
            let e = Error::forbidden(
                "forbidden",
                format!(
                    "this needs the {needed} role; {} has {}",
                    caller.actor.name,
                    caller.actor.role.unwrap_or(Role::Viewer)
                ),
            );
            deny(c, &caller, rule, &e).await;
            return Err(e);
        }
    }
    Ok((caller, Some(info)))
}

/// Records a refused change in the audit log (reads are not recorded).
async fn deny(c: &Coordinator, caller: &Caller, rule: &Rule, e: &Error) {
    if rules::is_change(&caller.method) {
        let mut note = Note::default();
        note.detail(e.code());
        c.audit(
            caller,
            rule.action,
            note,
            Outcome::Denied,
            e.status().as_u16(),
        )
        .await;
    }
}

async fn unauthenticated(c: &Coordinator, sent_credentials: bool) -> Error {
    if sent_credentials {
        return Error::unauthenticated(
            "invalid_credentials",
            "the session has ended, or the API token is invalid, expired or revoked; log in again",
        );
    }
    if matches!(c.has_users().await, Ok(false)) {
        return Error::unauthenticated(
            "no_operators",
            "no operator account exists yet; on the coordinator's machine run \
             `tillswarm coordinator user add NAME --role admin --data DIR`",
        );
    }
    Error::unauthenticated(
        "unauthenticated",
        "log in (POST /api/v1/session) or send an API token (Authorization: Bearer ...)",
    )
}

/// The bearer token, if an `Authorization` header is sent; any other scheme,
/// or a header that is not text, is refused rather than ignored.
fn bearer_token(headers: &HeaderMap) -> Result<Option<String>> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or_default().trim();
    match text.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(Some(token.trim().to_owned()))
        }
        _ => Err(Error::unauthenticated(
            "invalid_credentials",
            "send API tokens as `Authorization: Bearer <token>`",
        )),
    }
}

/// The value of the session cookie `name`, if the request carries one.
fn session_cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value.trim().to_owned())
}

/// The CSRF defence for a change. A change made with a session cookie (or a
/// login) must carry a content type a foreign page cannot send without a CORS
/// preflight, and come from the coordinator's own origin (or an allowed one):
/// `Origin`, else `Referer`, must be present for cookie changes and must match.
/// Bearer-token requests never get here: a foreign page cannot attach them.
fn csrf(
    c: &Coordinator,
    rule: &Rule,
    headers: &HeaderMap,
    tls: bool,
    by_cookie: bool,
) -> Result<()> {
    if !rules::is_change(rule.method) {
        return Ok(());
    }
    let essence = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    if !rule.body.accepts(&essence) {
        return Err(Error::forbidden(
            "csrf",
            "a change made from a browser session must be sent as application/json \
             (package uploads: application/octet-stream; registry imports: text/csv)",
        ));
    }
    let origin = match headers.get(header::ORIGIN) {
        // A present but unusable Origin (`null`, garbage) matches nothing.
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(normalize_origin)
                .unwrap_or_default(),
        ),
        None => headers
            .get(header::REFERER)
            .and_then(|v| v.to_str().ok())
            .and_then(origin_of),
    };
    let Some(origin) = origin else {
        if by_cookie {
            return Err(Error::forbidden(
                "csrf",
                "a change made from a browser session needs an Origin or Referer header",
            ));
        }
        return Ok(());
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let own = normalize_origin(&format!("{}://{host}", if tls { "https" } else { "http" }));
    let allowed = !origin.is_empty()
        && (own.as_deref() == Some(origin.as_str())
            || c.config()
                .allowed_origins
                .iter()
                .any(|o| normalize_origin(o).as_deref() == Some(origin.as_str())));
    if !allowed {
        return Err(Error::forbidden(
            "csrf",
            "this change comes from a page of another origin; only the coordinator's own \
             pages (and --allowed-origin) may make changes with a session",
        ));
    }
    Ok(())
}

/// The origin of a URL (`scheme://host[:port]`, normalised), if it has one.
fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    normalize_origin(&format!("{scheme}://{authority}"))
}

/// An origin in the one form compared: lower case, the default port left
/// out, nothing after the authority. `None` for anything else (`null`, `*`,
/// user info, another scheme than http or https).
pub fn normalize_origin(origin: &str) -> Option<String> {
    let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
    let (scheme, authority) = origin.split_once("://")?;
    let default_port = match scheme {
        "http" => ":80",
        "https" => ":443",
        _ => return None,
    };
    if authority.is_empty() || authority.contains(['/', '?', '#', '@', ' ']) {
        return None;
    }
    let authority = authority.strip_suffix(default_port).unwrap_or(authority);
    Some(format!("{scheme}://{authority}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use warp::http::HeaderValue;

    #[test]
    fn origins_come_from_referers() {
        assert_eq!(
            origin_of("https://hq.example:8443/tasks?x=1").as_deref(),
            Some("https://hq.example:8443")
        );
        assert_eq!(origin_of("http://a/").as_deref(), Some("http://a"));
        assert_eq!(origin_of("nonsense"), None);
        assert_eq!(origin_of("http:///x"), None);
        assert_eq!(
            normalize_origin("HTTPS://HQ.example:443/").as_deref(),
            Some("https://hq.example")
        );
        assert_eq!(
            normalize_origin("http://hq:8080").as_deref(),
            Some("http://hq:8080")
        );
        for bad in ["null", "*", "file://x", "https://user@hq", "https://"] {
            assert_eq!(normalize_origin(bad), None, "{bad}");
        }
    }

    #[test]
    fn cookies_and_bearers_are_read_strictly() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; tillswarm_session=abc ; b=2"),
        );
        assert_eq!(session_cookie(&h, SESSION_COOKIE).as_deref(), Some("abc"));
        assert_eq!(session_cookie(&h, SECURE_SESSION_COOKIE), None);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer tsw_x"),
        );
        assert_eq!(bearer_token(&h).expect("ok").as_deref(), Some("tsw_x"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic YTpi"),
        );
        assert!(
            bearer_token(&h).is_err(),
            "another scheme is refused, not ignored"
        );
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert!(bearer_token(&h).is_err());
    }
}
