//! The runner's config files under Root (contract §7) and their local cleanup.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::diag;

const BOM: &str = "\u{feff}";

/// What `run` needs from `.runner` and `.credentials`.
pub struct Settings {
    pub agent_id: u64,
    pub agent_name: String,
    pub server_url: String,
    pub work_folder: String,
    pub ephemeral: bool,
    pub client_id: String,
}

/// Parses a JSON file that may start with a UTF-8 BOM.
pub fn read_json(path: &Path) -> Option<Value> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(text.trim_start_matches(BOM)).ok()
}

/// Reading is case-insensitive in the real runner; the fake only needs camelCase or any case.
fn field<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    v.as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

pub fn load(root: &Path) -> Option<Settings> {
    let runner = read_json(&root.join(".runner"))?;
    let creds = read_json(&root.join(".credentials"))?;
    let str_of = |v: &Value, k: &str| field(v, k).and_then(Value::as_str).map(str::to_owned);
    let agent_id = field(&runner, "agentId").and_then(|v| {
        v.as_u64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
    })?;
    let client_id = field(&creds, "data").and_then(|d| str_of(d, "clientId"))?;
    let server_url = str_of(&runner, "serverUrl")?;
    Some(Settings {
        agent_id,
        agent_name: str_of(&runner, "agentName").unwrap_or_default(),
        server_url: with_slash(&server_url),
        work_folder: str_of(&runner, "workFolder").unwrap_or_else(|| "_work".to_owned()),
        ephemeral: field(&runner, "ephemeral")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        client_id,
    })
}

pub fn with_slash(url: &str) -> String {
    if url.ends_with('/') {
        url.to_owned()
    } else {
        format!("{url}/")
    }
}

/// `Root/<workFolder>`, or the folder itself when absolute.
pub fn work_dir(root: &Path, work_folder: &str) -> PathBuf {
    root.join(work_folder)
}

/// Writes `.runner`/`.credentials` style JSON: delete first (a new inode, so a hard-linked
/// base is never written through), UTF-8 with BOM like `File.WriteAllText(.., UTF8)`.
pub fn write_json_bom(path: &Path, value: &Value) -> std::io::Result<()> {
    let _ = std::fs::remove_file(path);
    let text = serde_json::to_string_pretty(value).map_err(std::io::Error::other)?;
    std::fs::write(path, format!("{BOM}{text}"))
}

/// `DeleteLocalRunnerConfig`: the two printed files, then the silent ones.
pub fn delete_local_config(root: &Path) {
    for name in [".credentials", ".runner"] {
        let path = root.join(name);
        if path.exists() {
            let _ = std::fs::remove_file(&path);
            diag::out(&format!("√ Removed {name}"));
        } else {
            diag::out(&format!("Does not exist. Skipping Removing {name}"));
        }
    }
    for name in [
        ".credentials_migrated",
        ".credentials_rsaparams",
        ".runner_migrated",
    ] {
        let _ = std::fs::remove_file(root.join(name));
    }
}

/// The API base for a `--url` (github-api.md §1.1): hosted hosts use `api.<host>`,
/// anything else (including the loopback fake) `<scheme>://<host>/api/v3`.
pub fn api_base(url: &str) -> Option<(String, Vec<String>)> {
    let (scheme, rest) = url.split_once("://")?;
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return None;
    }
    let (authority, path) = rest
        .find('/')
        .map_or((rest, ""), |i| (&rest[..i], &rest[i..]));
    if authority.is_empty() {
        return None;
    }
    let segments = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    let host = authority
        .split(':')
        .next()
        .unwrap_or_default()
        .to_lowercase();
    let hosted = matches!(
        host.as_str(),
        "github.com" | "www.github.com" | "github.localhost"
    ) || host.ends_with(".ghe.localhost")
        || host.ends_with(".ghe.com");
    let base = if hosted {
        format!("{scheme}://api.{}", authority.trim_start_matches("www."))
    } else {
        format!("{scheme}://{authority}/api/v3")
    };
    Some((base, segments))
}

/// A stable-enough unique string for ids the fake invents (no rand crate).
pub fn pseudo_random(len: usize) -> Vec<u8> {
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
        ^ u64::from(std::process::id()).rotate_left(32);
    (0..len)
        .map(|_| {
            // xorshift64*: good enough for fake key material.
            seed ^= seed >> 12;
            seed ^= seed << 25;
            seed ^= seed >> 27;
            (seed.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
        })
        .collect()
}
