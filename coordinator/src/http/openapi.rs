//! The OpenAPI 3 document served at `/api/v1/openapi.json`. A test checks that
//! every route it lists answers (not 404) and that it lists every route.

/// The document, as JSON text.
pub const DOCUMENT: &str = include_str!("openapi.json");
