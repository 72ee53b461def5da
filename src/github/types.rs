//! Wire types: what GitHub returns, read leniently (`reference/github-api.md` §2.0): optional
//! and unknown fields are ignored and `status` stays text, because the API does not fix its set.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::secret::Secret;

/// A registration on GitHub, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RunnerRegistration {
    /// Runner id.
    pub id: u64,
    /// Runner name.
    pub name: String,
    /// `online` / `offline` (kept as text: the API does not fix the set).
    #[serde(default)]
    pub status: String,
    /// Running a job.
    #[serde(default)]
    pub busy: bool,
    /// Its labels, read-only (default) and custom.
    #[serde(default)]
    pub labels: Vec<RunnerLabel>,
}

/// A runner label as GitHub lists it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RunnerLabel {
    /// The label.
    pub name: String,
    /// `read-only` (set at registration) or `custom`.
    #[serde(default, rename = "type")]
    pub kind: String,
}

impl RunnerRegistration {
    /// The custom labels (those a runner entry's `labels` control).
    pub fn custom_labels(&self) -> Vec<String> {
        self.labels
            .iter()
            .filter(|l| l.kind != "read-only")
            .map(|l| l.name.clone())
            .collect()
    }
}

/// A just-in-time runner configuration (`generate-jitconfig`).
#[derive(Debug, Clone)]
pub struct JitConfig {
    /// The registration it created.
    pub runner_id: u64,
    /// What the listener takes in `ACTIONS_RUNNER_INPUT_JITCONFIG`; a credential.
    pub encoded: Secret,
}

/// The primary rate-limit budget as the last response reported it (`x-ratelimit-*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateBudget {
    /// Requests per window.
    pub limit: u64,
    /// Requests left in this window.
    pub remaining: u64,
    /// When the window resets.
    #[serde(with = "rfc3339")]
    pub reset_at: SystemTime,
}

/// `SystemTime` as RFC 3339 text in status output.
mod rfc3339 {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_seconds(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_rfc3339_weak(&text).map_err(serde::de::Error::custom)
    }
}

#[derive(Deserialize)]
pub(crate) struct TokenBody {
    pub token: String,
    #[serde(default)]
    pub expires_at: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct RunnerList {
    #[serde(default)]
    pub runners: Vec<RunnerRegistration>,
}

#[derive(Deserialize)]
pub(crate) struct JitBody {
    pub runner: RunnerId,
    pub encoded_jit_config: String,
}

#[derive(Deserialize)]
pub(crate) struct RunnerId {
    pub id: u64,
}

#[derive(Deserialize)]
pub(crate) struct InstallationBody {
    pub id: u64,
}

/// Parses GitHub's RFC 3339 times, which come with fractional seconds and any offset
/// (`2020-01-22T12:13:35.123-08:00`); `humantime` reads only UTC, so the offset is applied here.
pub(crate) fn parse_time(text: &str) -> Option<SystemTime> {
    let text = text.trim();
    let base = text.get(..19)?;
    let local = humantime::parse_rfc3339_weak(base).ok()?;
    let rest = text.get(19..)?;
    let rest = rest.trim_start_matches(|c: char| c == '.' || c.is_ascii_digit());
    if rest.is_empty() || rest.eq_ignore_ascii_case("z") {
        return Some(local);
    }
    let (sign, hm) = rest.split_at(1);
    let (h, m) = hm.split_once(':')?;
    let secs = h.parse::<u64>().ok()? * 3600 + m.parse::<u64>().ok()? * 60;
    let offset = std::time::Duration::from_secs(secs);
    // A local time east of UTC (`+hh:mm`) is that much later than the same digits in UTC.
    match sign {
        "+" => local.checked_sub(offset),
        "-" => local.checked_add(offset),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_with_offsets() {
        let utc = parse_time("2020-01-22T20:13:35Z").expect("utc");
        assert_eq!(parse_time("2020-01-22T12:13:35.123-08:00"), Some(utc));
        assert_eq!(parse_time("2020-01-22T21:13:35+01:00"), Some(utc));
        assert_eq!(parse_time("not a time"), None);
    }

    #[test]
    fn budget_serializes_as_text() {
        let b = RateBudget {
            limit: 5000,
            remaining: 4999,
            reset_at: SystemTime::UNIX_EPOCH,
        };
        let v = serde_json::to_value(b).expect("json");
        assert_eq!(v["reset_at"], "1970-01-01T00:00:00Z");
        let back: RateBudget = serde_json::from_value(v).expect("back");
        assert_eq!(back, b);
    }
}
