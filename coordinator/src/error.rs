//! The coordinator's one error type and its mapping to HTTP, in one place.

use tillswarm_protocol::api::ApiError;
use warp::http::StatusCode;

/// Everything that can go wrong in the coordinator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The caller sent something unacceptable (400).
    #[error("{message}")]
    BadRequest {
        /// Stable machine-readable code.
        code: &'static str,
        /// What is wrong, for a person.
        message: String,
    },
    /// The named thing does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the current state (409).
    #[error("{message}")]
    Conflict {
        /// Stable machine-readable code.
        code: &'static str,
        /// What conflicts, for a person.
        message: String,
    },
    /// No valid credentials came with the request (401).
    #[error("{message}")]
    Unauthenticated {
        /// Stable machine-readable code.
        code: &'static str,
        /// What is missing or wrong, for a person (never which part was wrong).
        message: String,
    },
    /// The caller is known but may not do this (403).
    #[error("{message}")]
    Forbidden {
        /// Stable machine-readable code.
        code: &'static str,
        /// Why, for a person.
        message: String,
    },
    /// Too many attempts; try again after `retry_after_s` seconds (429).
    #[error("too many attempts; try again in {retry_after_s} s")]
    TooManyAttempts {
        /// Seconds until the next attempt may succeed (the `Retry-After` header).
        retry_after_s: u64,
    },
    /// The client stopped sending its request body (408).
    #[error("{0}")]
    Timeout(String),
    /// The body is larger than allowed (413).
    #[error("{0}")]
    TooLarge(String),
    /// The body's content type is not one this route reads (415).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The coordinator is too busy for this now; try again shortly (503).
    #[error("{0}")]
    Unavailable(String),
    /// A database failure (500, details only in the log).
    #[error("database: {0}")]
    Db(#[from] crate::db::sql::Error),
    /// A filesystem failure (500, details only in the log).
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// Anything else unexpected (500, details only in the log).
    #[error("internal: {0}")]
    Internal(String),
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::Db(e.into())
    }
}

/// A name outside one of the protocol's closed sets: a role an operator typed
/// is a bad request (`invalid_role`); any other (read back from the
/// database, say) is an internal error.
impl From<tillswarm_protocol::operator::UnknownName> for Error {
    fn from(e: tillswarm_protocol::operator::UnknownName) -> Self {
        if e.kind == "role" {
            Error::bad(
                "invalid_role",
                "the role must be one of viewer, operator, approver, admin",
            )
        } else {
            Error::Internal(e.to_string())
        }
    }
}

/// Result with the coordinator's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A 400 with a code and message.
    pub fn bad(code: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            message: message.into(),
        }
    }

    /// A 401 with a code and message.
    pub fn unauthenticated(code: &'static str, message: impl Into<String>) -> Self {
        Self::Unauthenticated {
            code,
            message: message.into(),
        }
    }

    /// A 403 with a code and message.
    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::Forbidden {
            code,
            message: message.into(),
        }
    }

    /// The HTTP status this error is answered with (without logging anything).
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthenticated { .. } => StatusCode::UNAUTHORIZED,
            Self::Forbidden { .. } => StatusCode::FORBIDDEN,
            Self::TooManyAttempts { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Db(_) | Self::Io(_) | Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable code a client sees (`internal` for our own failures).
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest { code, .. }
            | Self::Unauthenticated { code, .. }
            | Self::Forbidden { code, .. }
            | Self::Conflict { code, .. } => code,
            Self::TooManyAttempts { .. } => "too_many_attempts",
            Self::NotFound(_) => "not_found",
            Self::Timeout(_) => "timeout",
            Self::TooLarge(_) => "too_large",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::Unavailable(_) => "unavailable",
            Self::Db(_) | Self::Io(_) | Self::Internal(_) => "internal",
        }
    }

    /// A 409 with a code and message.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::Conflict {
            code,
            message: message.into(),
        }
    }

    /// The HTTP status and the JSON body a client sees. Internal errors get a
    /// generic body; their details go to the log.
    pub fn to_response_parts(&self) -> (StatusCode, ApiError) {
        let message = match self {
            Self::Db(_) | Self::Io(_) | Self::Internal(_) => {
                tracing::error!(error = %self, "internal error");
                "internal error; see the coordinator log".to_owned()
            }
            other => other.to_string(),
        };
        (
            self.status(),
            ApiError {
                code: self.code().to_owned(),
                message,
            },
        )
    }
}

impl warp::reject::Reject for Error {}
