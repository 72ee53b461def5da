//! `resources`, `clean` and `leftovers` as written (issue 22, DESIGN.md §6): what a runner's
//! cgroup limits, and what corral cleans after each of its jobs.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::config::{patterns, rules};

/// `resources`, as written.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourcesSpec {
    /// CPUs the runner and its jobs may use at once, e.g. `2` or `0.5`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.01, max = 4096))]
    pub cpu: Option<serde_json::Number>,
    /// Memory the runner and its jobs may use, e.g. `4GiB` (a plain number is bytes); past
    /// it the kernel's OOM killer ends the largest process, usually the job's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Size>,
    /// Processes and threads the runner and its jobs may have at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 4_194_304))]
    pub pids: Option<u32>,
}

/// A size: a whole number of bytes, or a number with a unit (`512MiB`, `4GiB`, `10 GB`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Size(pub String);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Size;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a size such as `4GiB`, or a number of bytes")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Size, E> {
                Ok(Size(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Size, E> {
                Ok(Size(v.to_string()))
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl JsonSchema for Size {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Size".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "anyOf": [
                {"type": "integer", "minimum": rules::MIN_MEMORY},
                {"type": "string", "pattern": patterns::SIZE}
            ]
        })
    }
}

/// `clean`: what corral removes from a persistent runner's directory after each job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Clean {
    /// Nothing (the runner's own clean-up only).
    #[default]
    None,
    /// Everything a job left in `_work`, but the tool cache `_work/_tool` and the runner's
    /// bookkeeping `_work/_PipelineMapping`.
    Workspace,
}

/// `leftovers`: processes a job leaves running when it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Leftovers {
    /// Killed once the job's `Runner.Worker` has exited (default).
    #[default]
    Kill,
    /// Kept until the runner is removed or stopped (a service jobs share on purpose).
    Keep,
}
