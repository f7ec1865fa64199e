//! The tillswarm agent that runs on each till.
//!
//! It owns: the node config, durable local state, the coordinator client, the
//! local chunk store, fetching and staging packages, and (to come in this crate)
//! the task executor, cashier prompt, installer, drop-in folder and store swarm.
//!
//! Architecture invariants: only this crate touches libp2p; no chunk is stored,
//! advertised or served before its blake3 hash is checked; no package is staged
//! or installed before its manifest signature and whole-file hash are checked.

pub mod chunks;
pub mod client;
pub mod config;
pub mod error;
pub mod stage;
pub mod state;

pub use config::NodeConfig;
pub use error::{Error, Result};
