//! The node's error type.

/// Everything that can go wrong on a till.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The config file is missing or wrong.
    #[error("config: {0}")]
    Config(String),
    /// The coordinator could not be reached or answered an error.
    #[error("coordinator: {0}")]
    Coordinator(String),
    /// The coordinator knows the till but an operator has not approved it yet.
    #[error("waiting for an operator to approve this till")]
    Pending,
    /// A manifest, chunk or package failed verification.
    #[error("verification failed: {0}")]
    Verify(String),
    /// Installing failed.
    #[error("install: {0}")]
    Install(String),
    /// The node's database failed.
    #[error("state database: {0}")]
    Db(#[from] rusqlite::Error),
    /// A filesystem failure.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// Result with the node's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
