//! Per till type update settings (the seed's `update.conf` on the till
//! server): `autoUpdateTimeout` in minutes, or unset for "never ask, manual
//! install only". The type named `*` is the default for types without their own.

use serde::{Deserialize, Serialize};

/// One till type's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct TillType {
    /// Type name (`*` for the default).
    pub name: String,
    /// Minutes to wait for the cashier before installing; `null`: never ask.
    pub auto_update_timeout_minutes: Option<u32>,
    /// Tills of this type in the registry.
    pub tills: u64,
}

/// The settings body of `PUT /api/v1/till-types/{name}`. The field is required:
/// `null` means "never ask", so leaving it out must not silently mean that.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
// schemars takes the field's own deserializer for an optional one; it is not.
#[cfg_attr(
    feature = "schema",
    schemars(extend("required" = ["auto_update_timeout_minutes"]))
)]
#[serde(deny_unknown_fields)]
pub struct TillTypeInput {
    /// Minutes, or `null` to never ask (the setting commented out).
    #[serde(deserialize_with = "required_nullable")]
    pub auto_update_timeout_minutes: Option<u32>,
}

/// A field that must be present but may be `null` (serde treats a missing
/// `Option` as `None` unless the field has its own deserializer).
fn required_nullable<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    Option::<u32>::deserialize(d)
}
