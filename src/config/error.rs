//! Config errors: each names the file, the position, the field path and the offending value.

use std::fmt;
use std::path::{Path, PathBuf};

use super::tree::Position;

/// One problem in `runners.yaml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The config file.
    pub file: PathBuf,
    /// Where in the file, when the YAML gives a position.
    pub pos: Option<Position>,
    /// The field path (`runners[0].labels[2]`); empty for the whole file.
    pub path: String,
    /// What is wrong, quoting the offending value.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(pos) = self.pos {
            write!(f, ":{pos}")?;
        }
        if !self.path.is_empty() {
            write!(f, ": {}", self.path)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found in one config file, in file order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, err) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{err}")?;
        }
        Ok(())
    }
}

impl ConfigErrors {
    /// How many problems there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there is none (never the case for a returned error).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// `serde_yaml`'s message is `path: text at line L column C`; split it into our fields.
pub(super) fn serde_error(err: &serde_yaml::Error, path: &Path) -> ConfigError {
    let text = err.to_string();
    let text = match text.rfind(" at line ") {
        Some(cut) if err.location().is_some() => text[..cut].to_string(),
        _ => text,
    };
    let (field, message) = match text.split_once(": ") {
        Some((field, message)) if !field.contains(' ') => (field.to_string(), message.to_string()),
        _ => (String::new(), text),
    };
    ConfigError {
        file: path.to_path_buf(),
        pos: err.location().map(|l| Position {
            line: l.line(),
            column: l.column(),
        }),
        path: field,
        message,
    }
}
