//! The node's error type.

/// Everything that can go wrong on a till.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The config file is missing or wrong.
    #[error("config: {0}")]
    Config(String),
    /// The coordinator answered with an error, or with something unusable.
    #[error("coordinator: {0}")]
    Coordinator(String),
    /// The coordinator could not be reached (or the connection broke).
    #[error("coordinator unreachable: {0}")]
    Unreachable(#[source] reqwest::Error),
    /// The coordinator knows the till but an operator has not approved it yet.
    #[error("waiting for an operator to approve this till")]
    Pending,
    /// The store swarm stopped or could not start.
    #[error("store swarm: {0}")]
    Swarm(String),
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

impl Error {
    /// True when trying the same work again cannot help: the bytes or the
    /// package are wrong (verification), or the package cannot be installed
    /// here (does not fit, not staged). Everything else (the coordinator
    /// away, a disk hiccup, the swarm restarting) is worth a later retry.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Error::Verify(_) | Error::Install(_))
    }
}

/// Result with the node's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bad_bytes_and_uninstallable_packages_are_permanent() {
        assert!(Error::Verify("hash".into()).is_permanent());
        assert!(Error::Install("does not fit".into()).is_permanent());
        for passing in [
            Error::Coordinator("503".into()),
            Error::Pending,
            Error::Swarm("stopped".into()),
            Error::Io(std::io::Error::other("disk")),
            Error::Config("x".into()),
        ] {
            assert!(!passing.is_permanent(), "{passing}");
        }
    }

    #[test]
    fn an_unreachable_coordinator_keeps_its_cause() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        // Nothing listens on port 9 of loopback.
        let client = crate::tls::http_client(None)
            .expect("tls")
            .build()
            .expect("client");
        let cause = rt
            .block_on(client.get("http://127.0.0.1:9/").send())
            .expect_err("refused");
        let e = Error::Unreachable(cause);
        assert!(!e.is_permanent());
        assert!(std::error::Error::source(&e).is_some());
    }
}
