//! Operator accounts over HTTP: the caller's session (log in, who am I, log
//! out, change my password), users and API tokens (admin), and the audit log
//! (admin; JSON or CSV).

use warp::filters::BoxedFilter;
use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::Response;
use warp::{Filter, Reply};

use super::guard::{
    SECURE_SESSION_COOKIE, client_addr, cookie_name, guard, guard_with_session, over_tls,
};
use super::operator::{no_content, with};
use super::{MAX_JSON_BODY, body, error_response, json, parse_json, refused, reply};
use crate::audit;
use tillswarm_protocol::operator::accounts::EnrollTokenId;

use crate::auth::Caller;
use crate::error::Error;
use crate::service::Coordinator;
use crate::service::access::{LoginInput, NewTokenInput, NewUserInput, PasswordInput, SessionInfo};
use crate::service::node_ops::NewEnrollTokenInput;

/// The `Set-Cookie` value for a session (or, with `None`, one that clears it).
fn session_cookie(c: &Coordinator, value: Option<(&str, u64)>, tls: bool) -> String {
    let name = cookie_name(c, tls);
    let secure = if name == SECURE_SESSION_COOKIE {
        "; Secure"
    } else {
        ""
    };
    match value {
        Some((v, max_age)) => {
            format!("{name}={v}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}")
        }
        None => format!("{name}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}"),
    }
}

fn with_cookie(mut r: Response, cookie: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

pub(super) fn routes(c: &Coordinator) -> BoxedFilter<(Response,)> {
    session(c)
        .or(users(c))
        .unify()
        .or(tokens(c))
        .unify()
        .or(enroll_tokens(c))
        .unify()
        .or(audit_log(c))
        .unify()
        .boxed()
}

fn session(c: &Coordinator) -> BoxedFilter<(Response,)> {
    let login = warp::path!("api" / "v1" / "session")
        .and(warp::post())
        .and(guard(c))
        .and(with(c))
        .and(client_addr())
        .and(over_tls())
        .and(body(MAX_JSON_BODY))
        .then(
            |by: Caller,
             c: Coordinator,
             addr: Option<std::net::SocketAddr>,
             tls: bool,
             b: bytes::Bytes| async move {
                let r = async {
                    let input: LoginInput = parse_json(&b)?;
                    let replaces = by.actor.session.clone();
                    let by = Caller::anonymous(&input.username, by.client, &by.method, &by.route);
                    c.login(input, addr.map(|a| a.ip()), replaces, &by).await
                };
                match r.await {
                    Ok(login) => with_cookie(
                        json(StatusCode::OK, &login.info),
                        &session_cookie(&c, Some((&login.cookie, login.max_age_s)), tls),
                    ),
                    Err(e) => error_response(&e),
                }
            },
        );
    let whoami = warp::path!("api" / "v1" / "session")
        .and(warp::get())
        .and(guard_with_session(c))
        .map(|_: Caller, info: Option<SessionInfo>| reply(Ok(info)));
    let logout = warp::path!("api" / "v1" / "session")
        .and(warp::delete())
        .and(guard(c))
        .and(with(c))
        .and(over_tls())
        .then(|by: Caller, c: Coordinator, tls: bool| async move {
            match c.logout(&by).await {
                Ok(()) => with_cookie(no_content(Ok(())), &session_cookie(&c, None, tls)),
                Err(e) => error_response(&e),
            }
        });
    let password = warp::path!("api" / "v1" / "session" / "password")
        .and(warp::post())
        .and(guard(c))
        .and(with(c))
        .and(body(MAX_JSON_BODY))
        .then(|by: Caller, c: Coordinator, b: bytes::Bytes| async move {
            let r = async {
                let input: PasswordInput = refused(&c, &by, parse_json(&b)).await?;
                c.change_own_password(input, &by).await
            };
            reply(r.await)
        });
    login
        .or(whoami)
        .unify()
        .or(logout)
        .unify()
        .or(password)
        .unify()
        .boxed()
}

fn users(c: &Coordinator) -> BoxedFilter<(Response,)> {
    let list = warp::path!("api" / "v1" / "users")
        .and(warp::get())
        .and(guard(c))
        .and(with(c))
        .then(|_: Caller, c: Coordinator| async move { reply(c.users().await) });
    let add = warp::path!("api" / "v1" / "users")
        .and(warp::post())
        .and(guard(c))
        .and(with(c))
        .and(body(MAX_JSON_BODY))
        .then(|by: Caller, c: Coordinator, b: bytes::Bytes| async move {
            let r = async {
                let input: NewUserInput = refused(&c, &by, parse_json(&b)).await?;
                c.add_user(input, &by).await
            };
            match r.await {
                Ok(u) => json(StatusCode::CREATED, &u),
                Err(e) => error_response(&e),
            }
        });
    let remove = warp::path!("api" / "v1" / "users" / String)
        .and(warp::delete())
        .and(guard(c))
        .and(with(c))
        .then(|name: String, by: Caller, c: Coordinator| async move {
            match refused(&c, &by, super::operator::percent_decode(&name)).await {
                Ok(name) => no_content(c.remove_user(name, &by).await),
                Err(e) => error_response(&e),
            }
        });
    let passwd = warp::path!("api" / "v1" / "users" / String / "password")
        .and(warp::post())
        .and(guard(c))
        .and(with(c))
        .and(body(MAX_JSON_BODY))
        .then(
            |name: String, by: Caller, c: Coordinator, b: bytes::Bytes| async move {
                let r = async {
                    let name = refused(&c, &by, super::operator::percent_decode(&name)).await?;
                    let input: PasswordInput = refused(&c, &by, parse_json(&b)).await?;
                    c.set_password(name, input.password, "user.passwd", &by)
                        .await
                };
                reply(r.await)
            },
        );
    list.or(add)
        .unify()
        .or(remove)
        .unify()
        .or(passwd)
        .unify()
        .boxed()
}

fn tokens(c: &Coordinator) -> BoxedFilter<(Response,)> {
    let list = warp::path!("api" / "v1" / "tokens")
        .and(warp::get())
        .and(guard(c))
        .and(with(c))
        .then(|_: Caller, c: Coordinator| async move { reply(c.tokens().await) });
    let create = warp::path!("api" / "v1" / "tokens")
        .and(warp::post())
        .and(guard(c))
        .and(with(c))
        .and(body(MAX_JSON_BODY))
        .then(|by: Caller, c: Coordinator, b: bytes::Bytes| async move {
            let r = async {
                let input: NewTokenInput = refused(&c, &by, parse_json(&b)).await?;
                c.create_token(input, &by).await
            };
            match r.await {
                Ok(t) => json(StatusCode::CREATED, &t),
                Err(e) => error_response(&e),
            }
        });
    let revoke = warp::path!("api" / "v1" / "tokens" / String)
        .and(warp::delete())
        .and(guard(c))
        .and(with(c))
        .then(|name: String, by: Caller, c: Coordinator| async move {
            match refused(&c, &by, super::operator::percent_decode(&name)).await {
                Ok(name) => no_content(c.revoke_token(name, &by).await),
                Err(e) => error_response(&e),
            }
        });
    list.or(create).unify().or(revoke).unify().boxed()
}

fn enroll_tokens(c: &Coordinator) -> BoxedFilter<(Response,)> {
    let list = warp::path!("api" / "v1" / "enroll-tokens")
        .and(warp::get())
        .and(guard(c))
        .and(with(c))
        .then(|_: Caller, c: Coordinator| async move { reply(c.enroll_tokens().await) });
    let create = warp::path!("api" / "v1" / "enroll-tokens")
        .and(warp::post())
        .and(guard(c))
        .and(with(c))
        .and(body(MAX_JSON_BODY))
        .then(|by: Caller, c: Coordinator, b: bytes::Bytes| async move {
            let r = async {
                let input: NewEnrollTokenInput = refused(&c, &by, parse_json(&b)).await?;
                c.create_enroll_token(input, &by).await
            };
            match r.await {
                Ok(t) => json(StatusCode::CREATED, &t),
                Err(e) => error_response(&e),
            }
        });
    let revoke = warp::path!("api" / "v1" / "enroll-tokens" / String)
        .and(warp::delete())
        .and(guard(c))
        .and(with(c))
        .then(|id: String, by: Caller, c: Coordinator| async move {
            let id = id.parse::<EnrollTokenId>().map_err(|_| {
                Error::bad(
                    "invalid_id",
                    format!("enrollment token id {id:?} is not a number"),
                )
            });
            match refused(&c, &by, id).await {
                Ok(id) => no_content(c.revoke_enroll_token(id, &by).await),
                Err(e) => error_response(&e),
            }
        });
    list.or(create).unify().or(revoke).unify().boxed()
}

fn audit_log(c: &Coordinator) -> BoxedFilter<(Response,)> {
    warp::path!("api" / "v1" / "audit")
        .and(warp::get())
        .and(guard(c))
        .and(with(c))
        .and(warp::query::<audit::Filter>())
        .then(|_: Caller, c: Coordinator, f: audit::Filter| async move {
            let csv = f.format.as_deref() == Some("csv");
            let page = match c.audit_log(f).await {
                Ok(p) => p,
                Err(e) => return error_response(&e),
            };
            if !csv {
                return json(StatusCode::OK, &page);
            }
            match audit::to_csv(&page.items) {
                Ok(text) => {
                    let r = warp::reply::with_header(
                        text,
                        header::CONTENT_TYPE,
                        "text/csv; charset=utf-8",
                    );
                    warp::reply::with_header(
                        r,
                        header::CONTENT_DISPOSITION,
                        "attachment; filename=\"tillswarm-audit.csv\"",
                    )
                    .into_response()
                }
                Err(e) => error_response(&e),
            }
        })
        .boxed()
}
