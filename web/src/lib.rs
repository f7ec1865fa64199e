//! The operator web panel: static HTML, CSS and JavaScript, embedded into the
//! coordinator binary. It talks only to the operator API under `/api/v1/`.

/// The panel's entry page.
pub const INDEX_HTML: &str = include_str!("../static/index.html");
