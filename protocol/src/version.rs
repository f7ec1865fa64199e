//! Package versions: dotted decimal numbers (`5.2.117`, `1.0`), compared part by
//! part as numbers. Missing trailing parts count as zero, so `1.2` and `1.2.0` are
//! the same version; the text an operator typed is kept for display.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Most parts a version may have.
pub const MAX_PARTS: usize = 6;
/// Longest version text accepted.
pub const MAX_LEN: usize = 64;

/// Why a version string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid version {text:?}: {reason} (expected dotted numbers such as 1.4.2)")]
pub struct VersionError {
    text: String,
    reason: &'static str,
}

crate::id::string_schema!(Version, "Version", inline = false, {
    "type": "string",
    "pattern": "^[0-9]+(\\.[0-9]+){0,5}$",
    "maxLength": 64
});

/// A dotted version number.
#[derive(Clone)]
pub struct Version {
    parts: Vec<u32>,
    text: String,
}

impl Version {
    /// The numeric parts, as written.
    pub fn parts(&self) -> &[u32] {
        &self.parts
    }

    /// The version as the operator wrote it.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// A string that sorts like the version (fixed-width parts), for databases.
    pub fn sort_key(&self) -> String {
        let mut key = String::with_capacity(MAX_PARTS * 11);
        for i in 0..MAX_PARTS {
            let part = self.parts.get(i).copied().unwrap_or(0);
            key.push_str(&format!("{part:010}"));
            if i + 1 < MAX_PARTS {
                key.push('.');
            }
        }
        key
    }

    /// The parts with trailing zeros removed: equal versions give equal slices.
    fn significant(&self) -> &[u32] {
        let n = self
            .parts
            .iter()
            .rposition(|&p| p != 0)
            .map_or(0, |i| i + 1);
        &self.parts[..n]
    }
}

impl FromStr for Version {
    type Err = VersionError;

    fn from_str(text: &str) -> Result<Self, VersionError> {
        let fail = |reason| VersionError {
            text: text.chars().take(MAX_LEN).collect(),
            reason,
        };
        if text.is_empty() {
            return Err(fail("it is empty"));
        }
        if text.len() > MAX_LEN {
            return Err(fail("it is too long"));
        }
        let mut parts = Vec::new();
        for part in text.split('.') {
            if parts.len() == MAX_PARTS {
                return Err(fail("it has more than 6 parts"));
            }
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(fail("each part must be a number"));
            }
            if part.len() > 1 && part.starts_with('0') {
                return Err(fail("a part has a leading zero"));
            }
            parts.push(part.parse().map_err(|_| fail("a part is too large"))?);
        }
        Ok(Self {
            parts,
            text: text.to_owned(),
        })
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        self.significant().cmp(other.significant())
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Version {}

impl Hash for Version {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.significant().hash(state);
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Version({})", self.text)
    }
}

impl Serialize for Version {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        s.parse().expect(s)
    }

    #[test]
    fn order_is_numeric() {
        assert!(v("1.10") > v("1.9"));
        assert!(v("2") > v("1.99.99"));
        assert!(v("1.0.1") > v("1"));
        assert_eq!(v("1.2"), v("1.2.0"));
        assert_eq!(v("1.2").sort_key(), v("1.2.0").sort_key());
        assert!(v("1.10").sort_key() > v("1.9").sort_key());
        assert_eq!(v("5.2.117").to_string(), "5.2.117");
    }

    #[test]
    fn refusals_say_why() {
        for bad in [
            "",
            "1..2",
            ".1",
            "1.",
            "v1.2",
            "1.2-beta",
            "01.2",
            "1.2.3.4.5.6.7",
            "99999999999",
        ] {
            let err = bad.parse::<Version>().expect_err(bad);
            assert!(err.to_string().contains("invalid version"), "{err}");
        }
        assert!("1".repeat(65).parse::<Version>().is_err());
    }
}
