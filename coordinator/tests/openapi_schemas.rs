//! Checks the components of the hand-written OpenAPI document
//! (`src/http/openapi.json`) against the JSON Schema that schemars derives
//! from the Rust types in `tillswarm_protocol` (`operator`, and the shared
//! ids, enums and manifest), so the document cannot drift from the types:
//!
//! - every component is in [`TABLE`] (a Rust type) or in [`NODE_API`] (the
//!   tills' own bodies), and the table names no component the document lacks;
//! - each Rust type's schema name is its component's name (so `$ref`s match);
//! - objects (with `allOf` merged, as the document composes `DeviceDetail`
//!   from `Device`, where Rust flattens): the same property names, the same
//!   required set, `additionalProperties: false` exactly where a request body
//!   denies unknown fields, and per property the same primitive type,
//!   `format: date-time`, `enum` values, array items and `$ref` target;
//!   a nullable property must be nullable on both sides when required, and
//!   may be nullable in the document only when the Rust type takes `null`;
//! - tagged unions (`oneOf`): the same variants, each compared as an object;
//! - string enums: the same values.
//!
//! Responses are compared with the schema of what the coordinator
//! serialises, request bodies with what it deserialises (a field with a
//! default is optional), bodies used both ways with both.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};
use tillswarm_coordinator::http::openapi::DOCUMENT;
use tillswarm_protocol::api::{ApiError, DeviceState, TargetState, TaskKind};
use tillswarm_protocol::manifest::{ChunkRef, Manifest, Upload};
use tillswarm_protocol::operator::accounts::*;
use tillswarm_protocol::operator::audit::AuditRecord;
use tillswarm_protocol::operator::devices::*;
use tillswarm_protocol::operator::events::Change;
use tillswarm_protocol::operator::groups::*;
use tillswarm_protocol::operator::packages::*;
use tillswarm_protocol::operator::rollouts::*;
use tillswarm_protocol::operator::tasks::*;
use tillswarm_protocol::operator::till_types::*;
use tillswarm_protocol::operator::wan::*;
use tillswarm_protocol::operator::{Health, Page};
use tillswarm_protocol::schemars::generate::SchemaSettings;
use tillswarm_protocol::schemars::{JsonSchema, SchemaGenerator};
use tillswarm_protocol::{ChunkHash, DeviceId, PackageId, Version};

/// Which way a body travels, which decides the schema compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    /// Answered by the coordinator: what it serialises.
    Response,
    /// Sent by a client: what the coordinator deserialises.
    Request,
    /// Both (a window, a wave spec): both must agree with the document.
    Both,
}

/// One component and the Rust type behind it.
struct Entry {
    /// The component's name in the document.
    name: &'static str,
    dir: Dir,
    /// Properties the document requires beyond the type: checked by the
    /// coordinator after parsing (with its own error code), not by serde.
    extra_required: &'static [&'static str],
    /// The type's schema name.
    schema_name: fn() -> String,
    /// The type's root schema under the given settings.
    root: fn(SchemaSettings) -> Value,
}

macro_rules! entry {
    ($ty:ty, $name:literal, $dir:ident) => {
        entry!($ty, $name, $dir, &[])
    };
    ($ty:ty, $name:literal, $dir:ident, $extra:expr) => {
        Entry {
            name: $name,
            dir: Dir::$dir,
            extra_required: $extra,
            schema_name: || <$ty as JsonSchema>::schema_name().into_owned(),
            root: |settings| {
                serde_json::to_value(SchemaGenerator::new(settings).into_root_schema_for::<$ty>())
                    .expect("schema as JSON")
            },
        }
    };
}

/// Every operator component (and the shared ids, enums and the manifest the
/// operator bodies refer to) with its Rust type.
const TABLE: &[Entry] = &[
    // shared
    entry!(ApiError, "ApiError", Response),
    entry!(DeviceId, "DeviceGuid", Both),
    entry!(PackageId, "PackageId", Both),
    entry!(ChunkHash, "ChunkHash", Both),
    entry!(Version, "Version", Both),
    entry!(TaskKind, "TaskKind", Both),
    entry!(TargetState, "TargetState", Both),
    entry!(DeviceState, "DeviceState", Both),
    entry!(Manifest, "Manifest", Response),
    entry!(ChunkRef, "ChunkRef", Response),
    entry!(Upload, "Upload", Response),
    entry!(Health, "Health", Response),
    // devices and stores
    entry!(Device, "Device", Response),
    entry!(Page<Device>, "DevicePage", Response),
    entry!(DeviceDetail, "DeviceDetail", Response),
    entry!(VersionChange, "VersionChange", Response),
    entry!(DeviceTaskOutcome, "DeviceTaskOutcome", Response),
    entry!(Store, "Store", Response),
    entry!(RegistryEntry, "RegistryEntry", Request),
    entry!(ImportSummary, "ImportSummary", Response),
    // groups
    entry!(Group, "Group", Response),
    entry!(GroupInput, "GroupInput", Request),
    // A new group is a GroupInput whose name the coordinator requires
    // (a missing one is `invalid_group`, not a JSON error).
    entry!(GroupInput, "NewGroup", Request, &["name"]),
    // packages
    entry!(Package, "Package", Response),
    entry!(Page<Package>, "PackagePage", Response),
    entry!(PackageDetail, "PackageDetail", Response),
    // tasks
    entry!(NewTask, "NewTask", Request),
    entry!(TaskSummary, "TaskSummary", Response),
    entry!(Page<TaskSummary>, "TaskSummaryPage", Response),
    entry!(TargetDetail, "TargetDetail", Response),
    entry!(StoreTraffic, "StoreTraffic", Response),
    entry!(TaskDetail, "TaskDetail", Response),
    entry!(TaskGroupInput, "TaskGroupInput", Request),
    entry!(Window, "Window", Both),
    entry!(AttemptLog, "AttemptLog", Response),
    entry!(StoreWindow, "StoreWindow", Response),
    // till types
    entry!(TillType, "TillType", Response),
    entry!(TillTypeInput, "TillTypeInput", Request),
    // accounts and audit
    entry!(Role, "Role", Both),
    entry!(LoginInput, "LoginInput", Request),
    entry!(SessionInfo, "SessionInfo", Response),
    entry!(PasswordInput, "PasswordInput", Request),
    entry!(User, "User", Response),
    entry!(UserWithPassword, "UserWithPassword", Response),
    entry!(NewUserInput, "NewUserInput", Request),
    entry!(Token, "Token", Response),
    entry!(NewToken, "NewToken", Response),
    entry!(NewTokenInput, "NewTokenInput", Request),
    entry!(AuditRecord, "AuditRecord", Response),
    entry!(Page<AuditRecord>, "AuditRecordPage", Response),
    entry!(EnrollToken, "EnrollToken", Response),
    entry!(NewEnrollToken, "NewEnrollToken", Response),
    entry!(NewEnrollTokenInput, "NewEnrollTokenInput", Request),
    // rollouts
    entry!(WaveTargets, "WaveTargets", Both),
    entry!(Activation, "Activation", Both),
    entry!(Gate, "Gate", Both),
    entry!(WaveSpec, "WaveSpec", Both),
    entry!(TemplateOptions, "TemplateOptions", Request),
    entry!(NewRollout, "NewRollout", Request),
    entry!(WaveView, "WaveView", Response),
    entry!(PausedStore, "PausedStore", Response),
    entry!(Rollout, "Rollout", Response),
    entry!(Page<Rollout>, "RolloutPage", Response),
    // WAN report
    entry!(TaskWan, "TaskWan", Response),
    entry!(StoreWan, "StoreWan", Response),
    entry!(DuplicateChunk, "DuplicateChunk", Response),
    entry!(ChunkFetcher, "ChunkFetcher", Response),
    entry!(UnconnectedTill, "UnconnectedTill", Response),
    entry!(StoreWanHistory, "StoreWanHistory", Response),
    entry!(StoreTaskWan, "StoreTaskWan", Response),
    // the live stream
    entry!(Change, "Change", Response),
];

/// The tills' own components (`/api/v1/node/...`, `protocol::api` and
/// `protocol::trust`), outside the operator contract checked here.
const NODE_API: &[&str] = &[
    "TillSettings",
    "HeartbeatRequest",
    "Assignment",
    "HeartbeatResponse",
    "ProgressReport",
    "ReportOutcome",
    "Signed",
    "TrustBundle",
    "ChallengeRequest",
    "Challenge",
    "DeviceLogin",
    "DeviceSession",
];

fn document_components() -> Map<String, Value> {
    let doc: Value = serde_json::from_str(DOCUMENT).expect("openapi.json is JSON");
    doc["components"]["schemas"]
        .as_object()
        .expect("components.schemas")
        .clone()
}

/// One side's schemas: the component (or root) and the named schemas it refers to.
struct Side<'a> {
    what: &'a str,
    defs: &'a Map<String, Value>,
}

impl Side<'_> {
    fn resolve<'v>(&'v self, schema: &'v Value) -> &'v Value {
        match schema.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let name = ref_name(r);
                self.defs
                    .get(name)
                    .unwrap_or_else(|| panic!("{}: no schema {name}", self.what))
            }
            None => schema,
        }
    }
}

fn ref_name(r: &str) -> &str {
    r.rsplit('/').next().unwrap_or(r)
}

/// A property as compared: primitive shape or a reference to an object.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Shape {
    /// A named object (a component on both sides).
    Object(String),
    /// Anything else, by its JSON type.
    Prim {
        ty: String,
        date_time: bool,
        values: Option<BTreeSet<String>>,
        items: Option<Box<Shape>>,
    },
}

/// Whether a (resolved) schema is an object or a union of objects.
fn is_objectish(s: &Value) -> bool {
    s.get("properties").is_some()
        || s.get("allOf").is_some()
        || s.get("oneOf")
            .and_then(Value::as_array)
            .is_some_and(|v| v.iter().any(|x| x.get("properties").is_some()))
        || s.get("type").and_then(Value::as_str) == Some("object")
            && s.get("additionalProperties")
                .is_none_or(|a| a.as_bool() == Some(false))
}

/// The non-null values of an `enum` (or of a `oneOf` of one-value enums).
fn enum_values(s: &Value) -> Option<BTreeSet<String>> {
    let text = |v: &Value| match v {
        Value::String(t) => Some(t.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    };
    if let Some(values) = s.get("enum").and_then(Value::as_array) {
        return Some(values.iter().filter_map(text).collect());
    }
    if let Some(c) = s.get("const") {
        return Some(text(c).into_iter().collect());
    }
    let one_of = s.get("oneOf").and_then(Value::as_array)?;
    let mut out = BTreeSet::new();
    for v in one_of {
        out.extend(enum_values(v)?);
    }
    Some(out)
}

/// Strips nullability (`nullable`, a one-element `allOf`, `anyOf` with
/// null) and says whether it was there.
fn unwrap_nullable(s: &Value) -> (&Value, bool) {
    let mut nullable = s.get("nullable").and_then(Value::as_bool) == Some(true);
    if s.get("type")
        .and_then(Value::as_array)
        .is_some_and(|t| t.iter().any(|x| x == "null"))
    {
        nullable = true;
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        if let Some(parts) = s.get(key).and_then(Value::as_array) {
            let non_null: Vec<&Value> = parts.iter().filter(|p| !is_null(p)).collect();
            if non_null.len() < parts.len() {
                nullable = true;
            }
            if non_null.len() == 1 && (key != "oneOf" || non_null[0].get("$ref").is_some()) {
                let (inner, n) = unwrap_nullable(non_null[0]);
                return (inner, nullable || n);
            }
        }
    }
    (s, nullable)
}

/// A schema that only admits `null`.
fn is_null(s: &Value) -> bool {
    s.get("type").and_then(Value::as_str) == Some("null")
        || s.get("enum")
            .and_then(Value::as_array)
            .is_some_and(|v| v.iter().all(Value::is_null))
}

fn shape(side: &Side<'_>, s: &Value) -> (Shape, bool) {
    let (s, nullable) = unwrap_nullable(s);
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        let target = side.resolve(s);
        if is_objectish(target) {
            return (Shape::Object(ref_name(r).to_owned()), nullable);
        }
        let (inner, n) = shape(side, target);
        return (inner, nullable || n);
    }
    let ty = match s.get("type") {
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or("?")
            .to_owned(),
        _ if s.get("oneOf").is_some() || s.get("enum").is_some() || s.get("const").is_some() => {
            "string".into()
        }
        _ => "?".into(),
    };
    let items = (ty == "array").then(|| Box::new(shape(side, &s["items"]).0));
    let shape = Shape::Prim {
        date_time: s.get("format").and_then(Value::as_str) == Some("date-time"),
        values: enum_values(s),
        ty,
        items,
    };
    (shape, nullable)
}

/// An object's properties, required set and `additionalProperties: false`,
/// with `allOf` parts (and references among them) merged.
struct Flat {
    props: BTreeMap<String, Value>,
    required: BTreeSet<String>,
    closed: bool,
}

fn flatten(side: &Side<'_>, s: &Value) -> Flat {
    let s = side.resolve(s);
    let mut flat = Flat {
        props: BTreeMap::new(),
        required: BTreeSet::new(),
        closed: s.get("additionalProperties").and_then(Value::as_bool) == Some(false),
    };
    if let Some(parts) = s.get("allOf").and_then(Value::as_array) {
        for part in parts {
            let f = flatten(side, part);
            flat.props.extend(f.props);
            flat.required.extend(f.required);
            flat.closed |= f.closed;
        }
    }
    if let Some(props) = s.get("properties").and_then(Value::as_object) {
        flat.props
            .extend(props.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    if let Some(req) = s.get("required").and_then(Value::as_array) {
        flat.required
            .extend(req.iter().filter_map(Value::as_str).map(str::to_owned));
    }
    flat
}

/// Compares one object (a component, or one variant of a union).
fn compare_object(
    what: &str,
    rust: (&Side<'_>, &Value),
    api: (&Side<'_>, &Value),
    entry: &Entry,
    errors: &mut Vec<String>,
) {
    let r = flatten(rust.0, rust.1);
    let a = flatten(api.0, api.1);
    let r_names: BTreeSet<&String> = r.props.keys().collect();
    let a_names: BTreeSet<&String> = a.props.keys().collect();
    for p in r_names.difference(&a_names) {
        errors.push(format!(
            "{what}: property {p} is in the Rust type, not in openapi.json"
        ));
    }
    for p in a_names.difference(&r_names) {
        errors.push(format!(
            "{what}: property {p} is in openapi.json, not in the Rust type"
        ));
    }
    let mut r_required = r.required.clone();
    r_required.extend(entry.extra_required.iter().map(|s| (*s).to_owned()));
    if r_required != a.required {
        errors.push(format!(
            "{what}: required {:?} in Rust, {:?} in openapi.json",
            r_required, a.required
        ));
    }
    if entry.dir != Dir::Response && r.closed != a.closed {
        errors.push(format!(
            "{what}: additionalProperties false: {} in Rust, {} in openapi.json",
            r.closed, a.closed
        ));
    }
    for (name, rs) in &r.props {
        let Some(as_) = a.props.get(name) else {
            continue;
        };
        let (r_shape, r_null) = shape(rust.0, rs);
        let (a_shape, a_null) = shape(api.0, as_);
        if r_shape != a_shape {
            errors.push(format!(
                "{what}.{name}: {r_shape:?} in Rust, {a_shape:?} in openapi.json"
            ));
        }
        if a_null && !r_null {
            errors.push(format!(
                "{what}.{name}: nullable in openapi.json, but the Rust type refuses null"
            ));
        }
        let checked_by_coordinator = entry.extra_required.contains(&name.as_str());
        if r_required.contains(name) && r_null && !a_null && !checked_by_coordinator {
            errors.push(format!(
                "{what}.{name}: always present and may be null in Rust, not nullable in openapi.json"
            ));
        }
    }
}

/// The tag value of a union variant (`type: {enum: [...]}`).
fn tag(side: &Side<'_>, variant: &Value) -> String {
    let flat = flatten(side, variant);
    flat.props
        .get("type")
        .and_then(enum_values)
        .map(|v| v.into_iter().collect::<Vec<_>>().join(","))
        .unwrap_or_default()
}

fn compare(entry: &Entry, rust_root: &Value, components: &Map<String, Value>) -> Vec<String> {
    let mut errors = Vec::new();
    let what = entry.name;
    let empty = Map::new();
    let rust_defs = rust_root
        .pointer("/components/schemas")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let rust = Side {
        what: "Rust",
        defs: rust_defs,
    };
    let api = Side {
        what: "openapi.json",
        defs: components,
    };
    let a = &components[entry.name];
    let r = rust_root;
    let r_union = r.get("oneOf").is_some_and(|_| is_objectish(r));
    let a_union = a.get("oneOf").is_some();
    if r_union || a_union {
        let variants = |side: &Side<'_>, s: &Value| -> BTreeMap<String, Value> {
            s.get("oneOf")
                .and_then(Value::as_array)
                .map(|v| v.iter().map(|x| (tag(side, x), x.clone())).collect())
                .unwrap_or_default()
        };
        let rv = variants(&rust, r);
        let av = variants(&api, a);
        let rk: Vec<&String> = rv.keys().collect();
        let ak: Vec<&String> = av.keys().collect();
        if rk != ak {
            errors.push(format!(
                "{what}: variants {rk:?} in Rust, {ak:?} in openapi.json"
            ));
        }
        for (t, rs) in &rv {
            if let Some(as_) = av.get(t) {
                let w = format!("{what}[{t}]");
                compare_object(&w, (&rust, rs), (&api, as_), entry, &mut errors);
            }
        }
    } else if is_objectish(r) || is_objectish(a) {
        compare_object(what, (&rust, r), (&api, a), entry, &mut errors);
    } else {
        let (rs, _) = shape(&rust, r);
        let (as_, _) = shape(&api, a);
        if rs != as_ {
            errors.push(format!("{what}: {rs:?} in Rust, {as_:?} in openapi.json"));
        }
    }
    errors
}

fn check(entries: &[Entry], components: &Map<String, Value>) -> Vec<String> {
    let mut errors = Vec::new();
    for entry in entries {
        if !components.contains_key(entry.name) {
            errors.push(format!("{}: no such component in openapi.json", entry.name));
            continue;
        }
        let schema_name = (entry.schema_name)();
        if schema_name != entry.name && entry.extra_required.is_empty() {
            errors.push(format!(
                "{}: the Rust type's schema is named {schema_name}",
                entry.name
            ));
        }
        let contracts: &[SchemaSettings] = match entry.dir {
            Dir::Response => &[SchemaSettings::openapi3().for_serialize()],
            Dir::Request => &[SchemaSettings::openapi3().for_deserialize()],
            Dir::Both => &[
                SchemaSettings::openapi3().for_deserialize(),
                SchemaSettings::openapi3().for_serialize(),
            ],
        };
        for (i, settings) in contracts.iter().enumerate() {
            let root = (entry.root)(settings.clone());
            for e in compare(entry, &root, components) {
                // A body used both ways: the document states what a client may
                // send; what the coordinator sends may only add required fields.
                let serialized_extra = entry.dir == Dir::Both && i == 1 && e.contains("required");
                if !serialized_extra {
                    errors.push(e);
                }
            }
        }
    }
    errors
}

#[test]
fn every_component_has_a_rust_type() {
    let components = document_components();
    let covered: BTreeSet<&str> = TABLE
        .iter()
        .map(|e| e.name)
        .chain(NODE_API.iter().copied())
        .collect();
    let missing: Vec<&String> = components
        .keys()
        .filter(|k| !covered.contains(k.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "components of openapi.json without a Rust type in tests/openapi_schemas.rs: {missing:?}"
    );
    let stale: Vec<&&str> = NODE_API
        .iter()
        .filter(|n| !components.contains_key(**n))
        .collect();
    assert!(
        stale.is_empty(),
        "NODE_API names missing components: {stale:?}"
    );
}

#[test]
fn components_match_the_rust_types() {
    let errors = check(TABLE, &document_components());
    assert!(
        errors.is_empty(),
        "openapi.json disagrees with the Rust types:\n{}",
        errors.join("\n")
    );
}

/// The comparison catches a renamed, added or optional property, a changed
/// type or enum value, on either side (the document edited here in memory).
#[test]
fn the_check_fails_on_drift() {
    let base = document_components();
    assert!(check(TABLE, &base).is_empty(), "the baseline must pass");
    let only = |name: &str| -> Vec<&Entry> { TABLE.iter().filter(|e| e.name == name).collect() };
    let drift = |edit: &dyn Fn(&mut Map<String, Value>), name: &str| -> Vec<String> {
        let mut doc = base.clone();
        edit(&mut doc);
        let entries: Vec<Entry> = only(name)
            .into_iter()
            .map(|e| Entry {
                name: e.name,
                dir: e.dir,
                extra_required: e.extra_required,
                schema_name: e.schema_name,
                root: e.root,
            })
            .collect();
        check(&entries, &doc)
    };
    type Edit = Box<dyn Fn(&mut Map<String, Value>)>;
    let cases: Vec<(&str, &str, Edit)> = vec![
        (
            "renamed property",
            "Store",
            Box::new(|d| {
                let props = d["Store"]["properties"].as_object_mut().expect("props");
                let v = props.remove("time_zone").expect("time_zone");
                props.insert("timezone".into(), v);
            }),
        ),
        (
            "added property",
            "Token",
            Box::new(|d| {
                d["Token"]["properties"]["scope"] = serde_json::json!({"type": "string"});
            }),
        ),
        (
            "made optional",
            "User",
            Box::new(|d| {
                let req = d["User"]["required"].as_array_mut().expect("required");
                req.retain(|r| r != "sessions");
            }),
        ),
        (
            "changed type",
            "PausedStore",
            Box::new(|d| {
                d["PausedStore"]["properties"]["reason"] = serde_json::json!({"type": "integer"});
            }),
        ),
        (
            "enum value",
            "Rollout",
            Box::new(|d| {
                d["Rollout"]["properties"]["state"]["enum"]
                    .as_array_mut()
                    .expect("enum")
                    .push("archived".into());
            }),
        ),
        (
            "timestamp format",
            "VersionChange",
            Box::new(|d| {
                d["VersionChange"]["properties"]["at"] = serde_json::json!({"type": "string"});
            }),
        ),
        (
            "nullable not taken",
            "LoginInput",
            Box::new(|d| {
                d["LoginInput"]["properties"]["password"]["nullable"] = true.into();
            }),
        ),
        (
            "reference target",
            "DeviceDetail",
            Box::new(|d| {
                d["DeviceDetail"]["allOf"][1]["properties"]["versions"]["items"] =
                    serde_json::json!({"$ref": "#/components/schemas/DeviceTaskOutcome"});
            }),
        ),
        (
            "allOf part",
            "NewToken",
            Box::new(|d| {
                d["NewToken"]["allOf"][0] =
                    serde_json::json!({"$ref": "#/components/schemas/User"});
            }),
        ),
        (
            "union variant",
            "Activation",
            Box::new(|d| {
                d["Activation"]["oneOf"]
                    .as_array_mut()
                    .expect("oneOf")
                    .pop();
            }),
        ),
        (
            "unknown fields",
            "NewTask",
            Box::new(|d| {
                d["NewTask"]
                    .as_object_mut()
                    .expect("object")
                    .remove("additionalProperties");
            }),
        ),
    ];
    for (what, name, edit) in cases {
        let errors = drift(&*edit, name);
        assert!(!errors.is_empty(), "{what} in {name} went unnoticed");
    }
}
