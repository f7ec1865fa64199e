//! The operator API's JSON bodies: everything the coordinator's `/api/v1/...`
//! routes take and answer, except the tills' own `/api/v1/node/...` routes
//! (their bodies live in [`crate::api`], as does [`ApiError`], which every
//! route answers on failure).
//!
//! These types are the contract: the coordinator serialises them, the command
//! line and the tests read them, and with the `schema` feature each derives a
//! JSON Schema (schemars) that the coordinator's tests compare with the
//! hand-written `openapi.json`. Ids are typed, closed sets of names are enums
//! (their JSON is the snake_case name), timestamps are RFC 3339 text.
//!
//! - [`devices`]: tills, stores, the registry import, a till's history;
//! - [`groups`]: groups of tills;
//! - [`packages`]: uploaded packages;
//! - [`tasks`]: tasks, their targets and maintenance windows;
//! - [`rollouts`]: rollouts in waves with gates;
//! - [`wan`]: a task's WAN report per store, a store's WAN bytes per task;
//! - [`events`]: the live change stream's changes;
//! - [`accounts`]: sessions, users, API tokens, enrollment tokens;
//! - [`audit`]: the audit log;
//! - [`till_types`]: per till type settings.

use serde::{Deserialize, Serialize};

pub use crate::api::ApiError;

pub mod accounts;
pub mod audit;
pub mod devices;
pub mod events;
pub mod groups;
pub mod packages;
pub mod rollouts;
pub mod tasks;
pub mod till_types;
pub mod wan;

/// A name outside a closed set (an enum's text form), e.g. a role read back
/// from the database that no [`accounts::Role`] has.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a known {kind}; expected one of {expected}")]
pub struct UnknownName {
    /// What was being parsed, e.g. `role`.
    pub kind: &'static str,
    /// The refused text (cut to 80 characters).
    pub value: String,
    /// The accepted names, comma separated.
    pub expected: &'static str,
}

/// A closed set of names: an enum whose JSON (and database) form is a fixed
/// text per variant, with `as_str`, `ALL`, `Display` and a strict `FromStr`.
macro_rules! names {
    (
        $(#[$meta:meta])*
        pub enum $name:ident ($kind:literal) {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash,
            serde::Serialize, serde::Deserialize,
        )]
        #[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
        pub enum $name {
            $( $(#[$vmeta])* #[serde(rename = $text)] $variant, )+
        }

        impl $name {
            /// Every variant, in order.
            pub const ALL: [Self; [$($text),+].len()] = [$(Self::$variant),+];

            /// The name used in JSON and the database.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( Self::$variant => $text, )+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        /// Compares with the name used in JSON and the database.
        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::operator::UnknownName;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $( $text => Ok(Self::$variant), )+
                    _ => Err($crate::operator::UnknownName {
                        kind: $kind,
                        value: s.chars().take(80).collect(),
                        expected: concat!($($text, " "),+).trim_ascii_end(),
                    }),
                }
            }
        }
    };
}
pub(crate) use names;

/// A number the coordinator's database gives a row: a typed id, its JSON a
/// plain integer.
macro_rules! row_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash,
            serde::Serialize, serde::Deserialize,
        )]
        #[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
        #[serde(transparent)]
        pub struct $name(pub i64);

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}", self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = std::num::ParseIntError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                s.parse().map(Self)
            }
        }
    };
}
pub(crate) use row_id;

/// One page of a listing (`?page=2&per_page=50`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(rename = "{T}Page"))]
pub struct Page<T> {
    /// The items on this page.
    pub items: Vec<T>,
    /// Items across all pages.
    pub total: u64,
    /// 1-based page number.
    pub page: u64,
    /// Page size.
    pub per_page: u64,
}

names! {
    /// The answer of `GET /healthz`.
    pub enum HealthStatus ("health status") {
        /// The coordinator answers.
        Ok = "ok",
    }
}

/// Body of `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Health {
    /// Always `ok` when it answers.
    pub status: HealthStatus,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_refuse_strangers() {
        let h = Health {
            status: HealthStatus::Ok,
        };
        assert_eq!(
            serde_json::to_string(&h).expect("json"),
            r#"{"status":"ok"}"#
        );
        assert_eq!("ok".parse::<HealthStatus>(), Ok(HealthStatus::Ok));
        let err = "OK".parse::<HealthStatus>().expect_err("case matters");
        assert_eq!(err.kind, "health status");
        assert_eq!(err.expected, "ok");
        assert!(serde_json::from_str::<HealthStatus>("\"fine\"").is_err());
    }
}
