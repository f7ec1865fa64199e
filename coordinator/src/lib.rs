//! The head-office service of tillswarm.
//!
//! It will own: the SQLite database (devices, groups, packages, tasks, till-type
//! settings), package ingestion into a content-addressed chunk store, the manifest
//! signing key, the task scheduler, the node-facing API (heartbeats, assignments,
//! progress, manifests, chunks), the operator API under `/api/v1/`, serving the web
//! panel, and metrics.
//!
//! Architecture invariant: only this crate touches the server's SQLite database.
