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
    /// The body is larger than allowed (413).
    #[error("{0}")]
    TooLarge(String),
    /// The body's content type is not one this route reads (415).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// A database failure (500, details only in the log).
    #[error("database: {0}")]
    Db(#[from] rusqlite::Error),
    /// A filesystem failure (500, details only in the log).
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// Anything else unexpected (500, details only in the log).
    #[error("internal: {0}")]
    Internal(String),
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
        let (status, code, message) = match self {
            Self::BadRequest { code, message } => (StatusCode::BAD_REQUEST, *code, message.clone()),
            Self::NotFound(m) => (StatusCode::NOT_FOUND, "not_found", m.clone()),
            Self::Conflict { code, message } => (StatusCode::CONFLICT, *code, message.clone()),
            Self::TooLarge(m) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large", m.clone()),
            Self::UnsupportedMediaType(m) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                m.clone(),
            ),
            Self::Db(_) | Self::Io(_) | Self::Internal(_) => {
                tracing::error!(error = %self, "internal error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error; see the coordinator log".to_owned(),
                )
            }
        };
        (
            status,
            ApiError {
                code: code.to_owned(),
                message,
            },
        )
    }
}

impl warp::reject::Reject for Error {}
