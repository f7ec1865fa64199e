//! Typed identifiers. Each id has one textual form (lowercase hex for hashes,
//! hyphenated lowercase for GUIDs), used in JSON, URLs, logs and the database.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a textual id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// A hash must be exactly 64 hexadecimal characters.
    #[error("expected 64 hex characters for a blake3 hash, got {0:?}")]
    BadHash(String),
    /// A GUID must look like `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
    #[error("expected a GUID like 123e4567-e89b-12d3-a456-426614174000, got {0:?}")]
    BadGuid(String),
    /// A name-like id (store, chain) has a restricted alphabet and length.
    #[error(
        "{kind} id must be 1 to {max} characters of letters, digits, '-', '_' or '.', got {value:?}"
    )]
    BadName {
        /// Which id was being parsed.
        kind: &'static str,
        /// Longest accepted id.
        max: usize,
        /// The refused input, cut to a sane length.
        value: String,
    },
    /// A task id is a positive decimal number.
    #[error("expected a positive task number, got {0:?}")]
    BadTask(String),
}

fn cut_for_error(s: &str) -> String {
    s.chars().take(80).collect()
}

macro_rules! hash_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// The blake3 hash of `bytes` as this id.
            pub fn of(bytes: &[u8]) -> Self {
                Self(*blake3::hash(bytes).as_bytes())
            }

            /// The raw 32 bytes.
            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }

            /// Lowercase hex, 64 characters.
            pub fn to_hex(&self) -> String {
                blake3::Hash::from_bytes(self.0).to_hex().to_string()
            }
        }

        impl From<blake3::Hash> for $name {
            fn from(h: blake3::Hash) -> Self {
                Self(*h.as_bytes())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(blake3::Hash::from_bytes(self.0).to_hex().as_str())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                // Short form keeps logs readable; Display has the full hash.
                let hex = blake3::Hash::from_bytes(self.0).to_hex();
                write!(f, concat!(stringify!($name), "({}..)"), &hex.as_str()[..12])
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                if s.len() != 64 {
                    return Err(IdError::BadHash(cut_for_error(s)));
                }
                blake3::Hash::from_hex(s)
                    .map(Self::from)
                    .map_err(|_| IdError::BadHash(cut_for_error(s)))
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                if s.is_human_readable() {
                    s.serialize_str(&self.to_hex())
                } else {
                    // A fixed-size tuple: 32 bytes on the wire, no length prefix.
                    self.0.serialize(s)
                }
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                if d.is_human_readable() {
                    let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                    s.parse().map_err(serde::de::Error::custom)
                } else {
                    let bytes = <[u8; 32]>::deserialize(d)?;
                    Ok(Self(bytes))
                }
            }
        }
    };
}

/// The JSON Schema of an id whose JSON is a string (the `schema` feature):
/// a component named `$name` unless `inline`, with an optional pattern and format.
macro_rules! string_schema {
    ($name:ident, $schema_name:literal, inline = $inline:literal, $schema:tt) => {
        #[cfg(feature = "schema")]
        impl schemars::JsonSchema for $name {
            fn inline_schema() -> bool {
                $inline
            }

            fn schema_name() -> std::borrow::Cow<'static, str> {
                $schema_name.into()
            }

            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!($schema)
            }
        }
    };
}

pub(crate) use string_schema;

hash_id!(
    /// The blake3 hash of one chunk's bytes; chunks are stored and requested by it.
    ChunkHash
);
hash_id!(
    /// A package's identity: the blake3 hash of the whole package file, exactly what
    /// `b3sum FILE` prints.
    PackageId
);
string_schema!(ChunkHash, "ChunkHash", inline = false, {
    "type": "string",
    "pattern": "^[0-9a-f]{64}$"
});
string_schema!(PackageId, "PackageId", inline = false, {
    "type": "string",
    "pattern": "^[0-9a-f]{64}$"
});

/// A till's GUID as known to its store's till server. In text (JSON, CSV, URLs)
/// only the hyphenated form is accepted, optionally in braces.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct DeviceId(pub uuid::Uuid);

impl<'de> Deserialize<'de> for DeviceId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            // Through FromStr, so JSON and CSV accept exactly what URLs accept.
            let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
            s.parse().map_err(serde::de::Error::custom)
        } else {
            uuid::Uuid::deserialize(d).map(Self)
        }
    }
}

string_schema!(DeviceId, "DeviceGuid", inline = false, {
    "type": "string",
    "format": "uuid"
});

impl DeviceId {
    /// A device id from its 16 raw bytes.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(uuid::Uuid::from_bytes(bytes))
    }

    /// The 16 raw bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceId({})", self.0.hyphenated())
    }
}

impl FromStr for DeviceId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        // Only the hyphenated form (optionally in braces, as Windows tools write it):
        // one textual form keeps registry imports and URLs unambiguous.
        let inner = s
            .strip_prefix('{')
            .and_then(|t| t.strip_suffix('}'))
            .unwrap_or(s);
        if inner.len() != 36 {
            return Err(IdError::BadGuid(cut_for_error(s)));
        }
        uuid::Uuid::try_parse(inner)
            .map(Self)
            .map_err(|_| IdError::BadGuid(cut_for_error(s)))
    }
}

macro_rules! name_id {
    ($(#[$meta:meta])* $name:ident, $kind:literal) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Longest accepted id, in bytes.
            pub const MAX_LEN: usize = 64;

            /// Checks and wraps `s`.
            pub fn new(s: impl Into<String>) -> Result<Self, IdError> {
                let s = s.into();
                let ok = !s.is_empty()
                    && s.len() <= Self::MAX_LEN
                    && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
                if ok {
                    Ok(Self(s))
                } else {
                    Err(IdError::BadName { kind: $kind, max: Self::MAX_LEN, value: cut_for_error(&s) })
                }
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.0)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        /// Compares with the id's text.
        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::new(s).map_err(serde::de::Error::custom)
            }
        }
    };
}

name_id!(
    /// A store, as named by the chain's store registry (e.g. `store-017`).
    StoreId,
    "store"
);
string_schema!(StoreId, "StoreId", inline = true, {
    "type": "string",
    "pattern": "^[A-Za-z0-9._-]{1,64}$"
});
name_id!(
    /// A retail chain; peers of different chains never talk to each other.
    ChainId,
    "chain"
);

/// A task, numbered by the coordinator.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Debug)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(transparent)]
pub struct TaskId(pub u64);

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for TaskId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        match s.parse::<u64>() {
            Ok(n) if n > 0 && !s.starts_with('+') => Ok(Self(n)),
            _ => Err(IdError::BadTask(cut_for_error(s))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_hex_round_trip_and_refusals() {
        let h = ChunkHash::of(b"abc");
        let text = h.to_string();
        assert_eq!(text, blake3::hash(b"abc").to_hex().as_str());
        assert_eq!(text.parse::<ChunkHash>(), Ok(h));
        assert!("zz".parse::<ChunkHash>().is_err());
        assert!(text[..63].parse::<ChunkHash>().is_err());
        assert!(format!("{text}0").parse::<ChunkHash>().is_err());
        let json = serde_json::to_string(&h).expect("serialize");
        assert_eq!(json, format!("\"{text}\""));
        assert_eq!(serde_json::from_str::<ChunkHash>(&json).expect("parse"), h);
    }

    #[test]
    fn guid_forms() {
        let g: DeviceId = "123E4567-E89B-12D3-A456-426614174000"
            .parse()
            .expect("guid");
        assert_eq!(g.to_string(), "123e4567-e89b-12d3-a456-426614174000");
        assert_eq!(
            "{123e4567-e89b-12d3-a456-426614174000}".parse::<DeviceId>(),
            Ok(g)
        );
        assert!(
            "123e4567e89b12d3a456426614174000"
                .parse::<DeviceId>()
                .is_err()
        );
        assert!("not-a-guid".parse::<DeviceId>().is_err());
        assert!(serde_json::from_str::<DeviceId>("\"x\"").is_err());
        // Other textual forms uuid knows are refused everywhere, not only in URLs.
        assert!(serde_json::from_str::<DeviceId>("\"123e4567e89b12d3a456426614174000\"").is_err());
        assert!(
            serde_json::from_str::<DeviceId>("\"urn:uuid:123e4567-e89b-12d3-a456-426614174000\"")
                .is_err()
        );
        let back: DeviceId =
            serde_json::from_str(&serde_json::to_string(&g).expect("json")).expect("parse");
        assert_eq!(back, g);
    }

    #[test]
    fn name_ids_are_restricted() {
        assert!(StoreId::new("store-017").is_ok());
        assert!(StoreId::new("").is_err());
        assert!(StoreId::new("a/b").is_err());
        assert!(StoreId::new("x".repeat(65)).is_err());
        assert!(serde_json::from_str::<ChainId>("\"has space\"").is_err());
    }

    #[test]
    fn task_ids() {
        assert_eq!("42".parse::<TaskId>(), Ok(TaskId(42)));
        assert!("0".parse::<TaskId>().is_err());
        assert!("-1".parse::<TaskId>().is_err());
        assert!("+1".parse::<TaskId>().is_err());
    }
}
