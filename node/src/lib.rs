//! The tillswarm agent that runs on each till.
//!
//! It will own: the node config, durable local state, the coordinator client, the
//! store swarm (mDNS discovery and libp2p chunk exchange), the local chunk store,
//! the task executor (Download, Update, Forced update), the cashier prompt, the
//! installer (`up.sh`, reboot) and the manual drop-in folder `update/<version>`.
//!
//! Architecture invariant: only this crate touches libp2p; no chunk is stored,
//! advertised or served before its blake3 hash is checked, and no package is
//! installed before its manifest signature and whole-file hash are checked.
