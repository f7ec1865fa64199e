//! The OpenAPI 3 document served at `/api/v1/openapi.json`. Tests check that
//! every route it lists answers (not 404), that it lists every route, and that
//! each operator route's access follows the rule table. The router also reads
//! it to name the allowed methods of a path in the `Allow` header of a 405.

use std::sync::LazyLock;

/// The document, as JSON text.
pub const DOCUMENT: &str = include_str!("openapi.json");

/// Each documented path template with its methods (upper case).
static TEMPLATES: LazyLock<Vec<(Vec<String>, Vec<String>)>> = LazyLock::new(|| {
    let doc: serde_json::Value = serde_json::from_str(DOCUMENT).unwrap_or_default();
    let mut out = Vec::new();
    if let Some(paths) = doc["paths"].as_object() {
        for (template, item) in paths {
            let segments = template.split('/').map(str::to_owned).collect();
            let mut methods: Vec<String> = item
                .as_object()
                .map(|ops| {
                    ops.keys()
                        .filter(|k| {
                            matches!(k.as_str(), "get" | "put" | "post" | "delete" | "patch")
                        })
                        .map(|k| k.to_ascii_uppercase())
                        .collect()
                })
                .unwrap_or_default();
            methods.sort();
            out.push((segments, methods));
        }
    }
    out
});

/// The methods (sorted) documented for the template that `path` fills in (literal
/// segments preferred over parameters); empty if none matches.
pub fn methods_of(path: &str) -> Vec<String> {
    // One trailing slash is the same route (as for the access rules).
    let path = path.strip_suffix('/').unwrap_or(path);
    let segments: Vec<&str> = path.split('/').collect();
    TEMPLATES
        .iter()
        .filter(|(template, _)| {
            template.len() == segments.len()
                && template
                    .iter()
                    .zip(&segments)
                    .all(|(t, s)| (t.starts_with('{') && !s.is_empty()) || t == s)
        })
        .max_by_key(|(template, _)| template.iter().filter(|t| !t.starts_with('{')).count())
        .map(|(_, methods)| methods.clone())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_methods_come_from_the_document() {
        assert_eq!(
            methods_of("/api/v1/session"),
            ["DELETE", "GET", "POST"].map(String::from)
        );
        assert_eq!(
            methods_of("/api/v1/groups/7"),
            ["DELETE", "GET", "PATCH", "PUT"].map(String::from)
        );
        assert_eq!(
            methods_of("/api/v1/devices/import"),
            ["POST"].map(String::from)
        );
        assert!(methods_of("/nowhere").is_empty());
        assert_eq!(methods_of("/api/v1/stores/"), ["GET"].map(String::from));
    }
}
