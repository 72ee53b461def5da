//! A duration written the humantime way (`15m`, `1h 30m`, `90s`).
//!
//! The model keeps the text as written and validation parses it, so a bad value is reported
//! with its own position and field path like every other rule.

use std::borrow::Cow;
use std::fmt;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

/// A duration in `runners.yaml`, e.g. `drain_timeout: 15m`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(transparent)]
pub struct Duration(String);

impl Duration {
    /// The duration, or a message quoting the bad text.
    pub fn parse(&self) -> Result<std::time::Duration, String> {
        humantime::parse_duration(&self.0).map_err(|err| {
            format!(
                "invalid duration `{}`: {err} (write it like `90s`, `15m` or `1h 30m`)",
                self.0
            )
        })
    }
}

impl From<&str> for Duration {
    fn from(text: &str) -> Self {
        Duration(text.to_string())
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A duration such as `90s`, `15m` or `1h 30m`.",
            "pattern": super::patterns::DURATION,
            "examples": ["15m"]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_humantime() {
        let d = Duration::from("1h 30m");
        assert_eq!(d.parse(), Ok(std::time::Duration::from_secs(5400)));
        let err = Duration::from("soon").parse().expect_err("not a duration");
        assert!(err.contains("invalid duration `soon`"), "{err}");
    }
}
