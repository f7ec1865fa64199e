//! The operator API under `/api/v1/`: devices, stores, groups, packages, tasks
//! and till-type settings. Every route passes [`guard`] right after its path
//! and method; changes hand the [`Caller`] to the service, which audits them.

use serde::Deserialize;
use tillswarm_protocol::{DeviceId, PackageId};
use warp::filters::BoxedFilter;
use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::Response;
use warp::{Filter, Rejection};

use super::guard::guard;
use super::{
    MAX_IMPORT_BODY, MAX_JSON_BODY, body, error_response, json, parse_id, parse_json,
    parse_task_id, refuse, refused, reply,
};
use crate::auth::Caller;
use crate::devices::DeviceFilter;
use crate::error::Error;
use crate::groups::{GroupId, GroupInput};
use crate::service::{Coordinator, Paging};
use crate::tasks::TaskGroupInput;
use crate::tasks::{NewTask, TaskFilter};
use crate::till_types::TillTypeInput;

pub(super) fn with(
    c: &Coordinator,
) -> impl Filter<Extract = (Coordinator,), Error = std::convert::Infallible> + Clone + use<> {
    let c = c.clone();
    warp::any().map(move || c.clone())
}

pub(super) fn no_content(r: crate::error::Result<()>) -> Response {
    match r {
        Ok(()) => warp::reply::with_status(warp::reply(), StatusCode::NO_CONTENT).into_response(),
        Err(e) => error_response(&e),
    }
}

use warp::Reply;

/// Query of `POST /api/v1/packages`.
#[derive(Debug, Deserialize)]
struct UploadQuery {
    name: Option<String>,
    version: Option<String>,
}

pub(super) fn routes(c: Coordinator) -> BoxedFilter<(Response,)> {
    devices(&c)
        .or(groups(&c))
        .unify()
        .or(packages(&c))
        .unify()
        .or(tasks(&c))
        .unify()
        .or(super::wan::routes(&c))
        .unify()
        .or(super::rollouts::routes(&c))
        .unify()
        .or(till_types(&c))
        .unify()
        .or(super::account::routes(&c))
        .unify()
        .or(super::events::routes(&c))
        .unify()
        .boxed()
}

/// `/api/v1/devices/{guid}`, but not `/api/v1/devices/import`: a GET or DELETE
/// of that one is a 405 (it only takes POST), not a malformed GUID.
fn device_path() -> impl Filter<Extract = (String,), Error = Rejection> + Clone {
    warp::path!("api" / "v1" / "devices" / String).and_then(|id: String| async move {
        if id == "import" {
            Err(warp::reject::not_found())
        } else {
            Ok(id)
        }
    })
}

fn devices(c: &Coordinator) -> BoxedFilter<(Response,)> {
    let list = warp::path!("api" / "v1" / "devices")
        .and(warp::get())
        .and(guard(c))
        .and(with(c))
        .and(warp::query::<DeviceFilter>())
        .and(warp::query::<Paging>())
        .then(
            |_: Caller, c: Coordinator, f: DeviceFilter, p: Paging| async move {
                reply(c.devices(f, p).await)
            },
        );
    let import = warp::path!("api" / "v1" / "devices" / "import")
        .and(warp::post())
        .and(guard(c))
        .and(with(c))
        .and(warp::header::optional::<String>("content-type"))
        .and(body(MAX_IMPORT_BODY))
        .then(
            |by: Caller, c: Coordinator, ct: Option<String>, b: bytes::Bytes| async move {
                let ct = ct.unwrap_or_default().to_ascii_lowercase();
                let is_json = if ct.contains("json") {
                    true
                } else if ct.contains("csv") || ct.starts_with("text/plain") {
                    false
                } else {
                    let e = Error::bad(
                        "unsupported_media_type",
                        "send the registry as application/json or text/csv",
                    );
                    return refuse(&c, &by, e).await;
                };
                reply(c.import_registry(b.to_vec(), is_json, &by).await)
            },
        );
    let get = device_path()
        .and(warp::get())
        .and(guard(c))
        .and(with(c))
        .then(|id: String, _: Caller, c: Coordinator| async move {
            match parse_id::<DeviceId>(&id, "device GUID") {
                Ok(g) => reply(c.device_detail(g).await),
                Err(e) => error_response(&e),
            }
        });
    let approve = warp::path!("api" / "v1" / "devices" / String / "approve")
        .and(warp::post())
        .and(guard(c))
        .and(with(c))
        .then(|id: String, by: Caller, c: Coordinator| async move {
            match refused(&c, &by, parse_id::<DeviceId>(&id, "device GUID")).await {
                Ok(g) => reply(c.approve_device(g, &by).await),
                Err(e) => error_response(&e),
            }
        });
    let reset_key = warp::path!("api" / "v1" / "devices" / String / "reset-key")
        .and(warp::post())
        .and(guard(c))
        .and(with(c))
        .then(|id: String, by: Caller, c: Coordinator| async move {
            match refused(&c, &by, parse_id::<DeviceId>(&id, "device GUID")).await {
                Ok(g) => reply(c.reset_device_key(g, &by).await),
                Err(e) => error_response(&e),
            }
        });
    let delete = device_path()
        .and(warp::delete())
        .and(guard(c))
        .and(with(c))
        .then(|id: String, by: Caller, c: Coordinator| async move {
            match refused(&c, &by, parse_id::<DeviceId>(&id, "device GUID")).await {
                Ok(g) => no_content(c.delete_device(g, &by).await),
                Err(e) => error_response(&e),
            }
        });
    let stores = warp::path!("api" / "v1" / "stores")
        .and(warp::get())
        .and(guard(c))
        .and(with(c))
        .then(|_: Caller, c: Coordinator| async move { reply(c.stores().await) });
    list.or(import)
        .unify()
        .or(get)
        .unify()
        .or(approve)
        .unify()
        .or(reset_key)
        .unify()
        .or(delete)
        .unify()
        .or(stores)
        .unify()
        .boxed()
}

fn groups(c: &Coordinator) -> BoxedFilter<(Response,)> {
    let list = warp::path!("api" / "v1" / "groups")
        .and(warp::get())
        .and(guard(c))
        .and(with(c))
        .then(|_: Caller, c: Coordinator| async move { reply(c.groups().await) });
    let create = warp::path!("api" / "v1" / "groups")
        .and(warp::post())
        .and(guard(c))
        .and(with(c))
        .and(body(MAX_JSON_BODY * 8))
        .then(|by: Caller, c: Coordinator, b: bytes::Bytes| async move {
            let r = async {
                c.create_group(refused(&c, &by, parse_json(&b)).await?, &by)
                    .await
            };
            match r.await {
                Ok(g) => json(StatusCode::CREATED, &g),
                Err(e) => error_response(&e),
            }
        });
    let get = warp::path!("api" / "v1" / "groups" / String)
        .and(warp::get())
        .and(guard(c))
        .and(with(c))
        .then(|id: String, _: Caller, c: Coordinator| async move {
            match parse_id::<GroupId>(&id, "group id") {
                Ok(id) => reply(c.group(id).await),
                Err(e) => error_response(&e),
            }
        });
    let update = warp::path!("api" / "v1" / "groups" / String)
        .and(warp::patch().or(warp::put()).unify())
        .and(guard(c))
        .and(with(c))
        .and(body(MAX_JSON_BODY * 8))
        .then(
            |id: String, by: Caller, c: Coordinator, b: bytes::Bytes| async move {
                let r = async {
                    let id = refused(&c, &by, parse_id::<GroupId>(&id, "group id")).await?;
                    let input: GroupInput = refused(&c, &by, parse_json(&b)).await?;
                    c.update_group(id, input, &by).await
                };
                reply(r.await)
            },
        );
    let delete = warp::path!("api" / "v1" / "groups" / String)
        .and(warp::delete())
        .and(guard(c))
        .and(with(c))
        .then(|id: String, by: Caller, c: Coordinator| async move {
            match refused(&c, &by, parse_id::<GroupId>(&id, "group id")).await {
                Ok(id) => no_content(c.delete_group(id, &by).await),
                Err(e) => error_response(&e),
            }
        });
    list.or(create)
        .unify()
        .or(get)
        .unify()
        .or(update)
        .unify()
        .or(delete)
        .unify()
        .boxed()
}

fn packages(c: &Coordinator) -> BoxedFilter<(Response,)> {
    let list = warp::path!("api" / "v1" / "packages")
        .and(warp::get())
        .and(guard(c))
        .and(with(c))
        .and(warp::query::<Paging>())
        .then(|_: Caller, c: Coordinator, p: Paging| async move { reply(c.packages(p).await) });
    let limit = c.config().max_package_bytes;
    let upload =
        warp::path!("api" / "v1" / "packages")
            .and(warp::post())
            .and(guard(c))
            .and(with(c))
            .and(warp::query::<UploadQuery>())
            .and(warp::header::optional::<u64>("content-length"))
            .and(super::body_idle())
            .and(warp::body::stream())
            .then(
                move |by: Caller,
                      c: Coordinator,
                      q: UploadQuery,
                      len: Option<u64>,
                      idle,
                      stream| async move {
                    let (Some(name), Some(version)) = (q.name, q.version) else {
                        let e = Error::bad(
                            "invalid_package",
                            "name and version are required query parameters",
                        );
                        return refuse(&c, &by, e).await;
                    };
                    if len.is_some_and(|l| l > limit) {
                        let e = Error::TooLarge(format!("packages are limited to {limit} bytes"));
                        return refuse(&c, &by, e).await;
                    }
                    let stream = Box::pin(super::idle_limited(stream, idle));
                    match c.upload_package(name, version, stream, &by).await {
                        Ok(p) => json(StatusCode::CREATED, &p),
                        Err(e) => error_response(&e),
                    }
                },
            );
    let get = warp::path!("api" / "v1" / "packages" / String)
        .and(warp::get())
        .and(guard(c))
        .and(with(c))
        .then(|id: String, _: Caller, c: Coordinator| async move {
            match parse_id::<PackageId>(&id, "package id") {
                Ok(id) => reply(c.package(id).await),
                Err(e) => error_response(&e),
            }
        });
    let manifest = warp::path!("api" / "v1" / "packages" / String / "manifest")
        .and(warp::get())
        .and(guard(c))
        .and(with(c))
        .then(|id: String, _: Caller, c: Coordinator| async move {
            let r = async {
                let id = parse_id::<PackageId>(&id, "package id")?;
                c.signed_manifest(id).await
            };
            match r.await {
                Ok(bytes) => warp::reply::with_header(
                    bytes,
                    header::CONTENT_TYPE,
                    "application/octet-stream",
                )
                .into_response(),
                Err(e) => error_response(&e),
            }
        });
    let bundle = warp::path!("api" / "v1" / "packages" / String / "bundle")
        .and(warp::get())
        .and(guard(c))
        .and(with(c))
        .then(|id: String, _: Caller, c: Coordinator| async move {
            let r = async {
                let id = parse_id::<PackageId>(&id, "package id")?;
                c.export_bundle(id).await
            };
            match r.await {
                Ok(b) => bundle_response(b),
                Err(e) => error_response(&e),
            }
        });
    let delete = warp::path!("api" / "v1" / "packages" / String)
        .and(warp::delete())
        .and(guard(c))
        .and(with(c))
        .then(|id: String, by: Caller, c: Coordinator| async move {
            match refused(&c, &by, parse_id::<PackageId>(&id, "package id")).await {
                Ok(id) => no_content(c.delete_package(id, &by).await),
                Err(e) => error_response(&e),
            }
        });
    list.or(upload)
        .unify()
        .or(get)
        .unify()
        .or(manifest)
        .unify()
        .or(bundle)
        .unify()
        .or(delete)
        .unify()
        .boxed()
}

/// `POST /api/v1/tasks/{id}/pause|resume|restart`.
fn task_action(
    c: &Coordinator,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone + use<> {
    let verb = warp::path("pause")
        .map(|| "pause")
        .or(warp::path("resume").map(|| "resume"))
        .unify()
        .or(warp::path("restart").map(|| "restart"))
        .unify();
    warp::path!("api" / "v1" / "tasks" / String / ..)
        .and(verb)
        .and(warp::path::end())
        .and(warp::post())
        .and(guard(c))
        .and(with(c))
        .then(
            |id: String, verb: &'static str, by: Caller, c: Coordinator| async move {
                let r = async {
                    let id = refused(&c, &by, parse_task_id(&id)).await?;
                    match verb {
                        "pause" => c.pause_task(id, &by).await,
                        "resume" => c.resume_task(id, &by).await,
                        _ => c.restart_task(id, &by).await,
                    }
                };
                reply(r.await)
            },
        )
}

fn tasks(c: &Coordinator) -> BoxedFilter<(Response,)> {
    let list = warp::path!("api" / "v1" / "tasks")
        .and(warp::get())
        .and(guard(c))
        .and(with(c))
        .and(warp::query::<TaskFilter>())
        .and(warp::query::<Paging>())
        .then(
            |_: Caller, c: Coordinator, f: TaskFilter, p: Paging| async move {
                reply(c.tasks(f, p).await)
            },
        );
    let create = warp::path!("api" / "v1" / "tasks")
        .and(warp::post())
        .and(guard(c))
        .and(with(c))
        .and(body(MAX_JSON_BODY))
        .then(|by: Caller, c: Coordinator, b: bytes::Bytes| async move {
            let r = async {
                let input: NewTask = refused(&c, &by, parse_json(&b)).await?;
                c.create_task(input, &by).await
            };
            match r.await {
                Ok(t) => json(StatusCode::CREATED, &t),
                Err(e) => error_response(&e),
            }
        });
    let get = warp::path!("api" / "v1" / "tasks" / String)
        .and(warp::get())
        .and(guard(c))
        .and(with(c))
        .then(|id: String, _: Caller, c: Coordinator| async move {
            match parse_task_id(&id) {
                Ok(id) => reply(c.task(id).await),
                Err(e) => error_response(&e),
            }
        });
    let delete = warp::path!("api" / "v1" / "tasks" / String)
        .and(warp::delete())
        .and(guard(c))
        .and(with(c))
        .then(|id: String, by: Caller, c: Coordinator| async move {
            match refused(&c, &by, parse_task_id(&id)).await {
                Ok(id) => no_content(c.delete_task(id, &by).await),
                Err(e) => error_response(&e),
            }
        });
    let group = warp::path!("api" / "v1" / "tasks" / String / "group")
        .and(warp::post())
        .and(guard(c))
        .and(with(c))
        .and(body(MAX_JSON_BODY))
        .then(
            |id: String, by: Caller, c: Coordinator, b: bytes::Bytes| async move {
                let r = async {
                    let id = refused(&c, &by, parse_task_id(&id)).await?;
                    let input: TaskGroupInput = refused(&c, &by, parse_json(&b)).await?;
                    let states = input.states.unwrap_or_else(|| vec!["failed".into()]);
                    let group = GroupInput {
                        name: Some(input.name),
                        description: input.description,
                        members: None,
                    };
                    c.group_from_task(id, states, group, &by).await
                };
                match r.await {
                    Ok(g) => json(StatusCode::CREATED, &g),
                    Err(e) => error_response(&e),
                }
            },
        );
    list.or(create)
        .unify()
        .or(get)
        .unify()
        .or(delete)
        .unify()
        .or(group)
        .unify()
        .or(task_action(c))
        .unify()
        .boxed()
}

fn till_types(c: &Coordinator) -> BoxedFilter<(Response,)> {
    let list = warp::path!("api" / "v1" / "till-types")
        .and(warp::get())
        .and(guard(c))
        .and(with(c))
        .then(|_: Caller, c: Coordinator| async move { reply(c.till_types().await) });
    let set = warp::path!("api" / "v1" / "till-types" / String)
        .and(warp::put())
        .and(guard(c))
        .and(with(c))
        .and(body(MAX_JSON_BODY))
        .then(
            |name: String, by: Caller, c: Coordinator, b: bytes::Bytes| async move {
                let r = async {
                    let name = refused(&c, &by, percent_decode(&name)).await?;
                    let input: TillTypeInput = refused(&c, &by, parse_json(&b)).await?;
                    c.set_till_type(name, input, &by).await
                };
                reply(r.await)
            },
        );
    list.or(set).unify().boxed()
}

/// Decodes `%XX` escapes in a path segment (till type names may hold spaces or
/// `*`); refuses escapes that do not decode to UTF-8.
pub(super) fn percent_decode(s: &str) -> crate::error::Result<String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| {
            Error::bad(
                "invalid_id",
                "the name in the path is not valid UTF-8 once decoded",
            )
        })
}

/// A bundle export as a download of known length.
fn bundle_response(b: crate::service::package_ops::ExportedBundle) -> Response {
    let mut rx = b.body;
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let mut r = warp::reply::stream(stream).into_response();
    let headers = r.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-tar"),
    );
    if let Ok(v) = HeaderValue::from_str(&b.length.to_string()) {
        headers.insert(header::CONTENT_LENGTH, v);
    }
    // The name is built from a checked package name and version: no quotes.
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{}\"", b.file_name)) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    r
}
