//! Single-value rules shared by validation: names, labels, repositories, URLs, sizes.

/// Longest runner name: the directory name and GitHub name.
pub const MAX_NAME_LEN: usize = 64;
/// Longest label the runner accepts (`reference/runner-contract.md` §3.2).
pub const MAX_LABEL_LEN: usize = 256;
/// Most labels a runner may carry (`generate-jitconfig` allows 100).
pub const MAX_LABELS: usize = 100;
/// Least memory a runner can start in (the listener alone needs more than this).
pub const MIN_MEMORY: u64 = 1 << 20;

/// `[A-Za-z0-9][A-Za-z0-9._-]{0,63}`.
pub fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if first_ok && rest_ok && name.len() <= MAX_NAME_LEN {
        Ok(())
    } else {
        Err(format!(
            "invalid runner name {name:?}: use 1 to {MAX_NAME_LEN} letters, digits, `.`, `_` or `-`, starting with a letter or digit"
        ))
    }
}

/// A host id as `hosts` and `--host-id` take it: a host name, so letters, digits, `.`, `_`
/// and `-`, at most 253 characters.
pub fn check_host_id(host: &str) -> Result<(), String> {
    let ok = !host.is_empty()
        && host.len() <= 253
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid host id {host:?}: use 1 to 253 letters, digits, `.`, `_` or `-`"
        ))
    }
}

/// A label as `config.sh --labels` takes it.
pub fn check_label(label: &str) -> Result<(), String> {
    if label.trim().is_empty() {
        Err("a label may not be empty".to_string())
    } else if label.contains(',') {
        Err(format!(
            "label {label:?} contains a comma, which `--labels` would split"
        ))
    } else if label.chars().count() > MAX_LABEL_LEN {
        Err(format!(
            "label {label:?} is longer than {MAX_LABEL_LEN} characters"
        ))
    } else if label != label.trim() {
        Err(format!("label {label:?} has leading or trailing spaces"))
    } else if label.chars().any(invisible) {
        Err(format!(
            "label {label:?} contains an invisible or control character"
        ))
    } else if label.chars().any(|c| c.is_ascii_alphabetic()) && label.chars().any(look_alike) {
        Err(format!(
            "label {label:?} mixes Latin letters with Cyrillic or Greek ones that look the same: a workflow's `runs-on` would never match it"
        ))
    } else {
        Ok(())
    }
}

/// Control, zero-width and bidirectional formatting characters: they make two labels that
/// print the same differ.
fn invisible(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2064}' | '\u{feff}' | '\u{00ad}')
}

/// Cyrillic and Greek letters, the usual stand-ins for Latin ones (`а`, `е`, `о`, `р`, `ο`…).
fn look_alike(c: char) -> bool {
    matches!(c, '\u{0370}'..='\u{03ff}' | '\u{0400}'..='\u{04ff}')
}

/// An environment variable name.
pub fn check_env_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!("invalid environment variable name {name:?}"))
    }
}

/// A Unix user name.
pub fn check_user(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-'))
        && name.len() <= 32;
    if ok {
        Ok(())
    } else {
        Err(format!("invalid user name {name:?}"))
    }
}

/// An absolute `http`/`https` URL, returned without a trailing slash.
/// A runner release as written: `2.329.0` or `latest`.
pub fn check_version(version: &str) -> Result<(), String> {
    let numeric = version.split('.').count() == 3
        && version
            .split('.')
            .all(|p| !p.is_empty() && p.chars().all(|ch| ch.is_ascii_digit()));
    if numeric || version == "latest" {
        Ok(())
    } else {
        Err(format!(
            "version {version:?} must be a release such as `2.329.0`, or `latest`"
        ))
    }
}

pub fn check_url(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("{url:?} is not an absolute http(s) URL"))?;
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(format!("{url:?} has no host"));
    }
    Ok(url.trim_end_matches('/').to_string())
}

/// The REST API base for a web URL, by the runner's own rule (`reference/github-api.md` §1.1).
pub fn api_url_for(web_url: &str) -> String {
    let (scheme, rest) = web_url.split_once("://").unwrap_or(("https", web_url));
    let host = rest.split('/').next().unwrap_or_default();
    let hosted = matches!(host, "github.com" | "www.github.com" | "github.localhost")
        || host.ends_with(".ghe.com")
        || host.ends_with(".ghe.localhost");
    if hosted {
        format!("{scheme}://api.{}", host.trim_start_matches("www."))
    } else {
        format!("{web_url}/api/v3")
    }
}

/// Refuses a repository URL on another host than `github.url` when corral holds a GitHub
/// credential: corral mints tokens for the repository on `github.url`'s API, and `config.sh`
/// hands them to the host of the repository's URL.
pub fn check_repo_host(url: &str, web_url: &str) -> Result<(), String> {
    let origin = |u: &str| {
        let (scheme, rest) = u.split_once("://").unwrap_or(("", u));
        let host = rest.split('/').next().unwrap_or_default();
        format!(
            "{}://{}",
            scheme.to_ascii_lowercase(),
            host.to_ascii_lowercase()
        )
    };
    if origin(url) == origin(web_url) {
        return Ok(());
    }
    Err(format!(
        "repo {url:?} is not on github.url {web_url:?}: corral's tokens go only to the configured GitHub host"
    ))
}

/// Splits a repository given as `owner/repo` or as its URL into owner, name and web URL.
/// `web_url` is the GitHub web URL used for the `owner/repo` form.
pub fn parse_repo(text: &str, web_url: &str) -> Result<(String, String, String), String> {
    let (base, path) = if text.contains("://") {
        let url = check_url(text).map_err(|e| format!("repo {e}"))?;
        let (scheme, rest) = url.split_once("://").unwrap_or_default();
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        (format!("{scheme}://{host}"), path.to_string())
    } else {
        (web_url.to_string(), text.to_string())
    };
    let path = path.trim_end_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path);
    let parts: Vec<&str> = path.split('/').collect();
    let [owner, name] = parts[..] else {
        return Err(format!(
            "repo {text:?} must be `owner/repo` or `https://github.com/owner/repo`"
        ));
    };
    let owner_ok = !owner.is_empty()
        && owner.len() <= 39
        && !owner.starts_with('-')
        && owner.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    let name_ok = !name.is_empty()
        && name.len() <= 100
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !owner_ok || !name_ok {
        return Err(format!(
            "repo {text:?} is not a valid GitHub owner/repository"
        ));
    }
    Ok((
        owner.to_string(),
        name.to_string(),
        format!("{base}/{owner}/{name}"),
    ))
}

/// `512MiB`, `10GB`, `0`: a byte count with an optional SI (`kB`, `MB`, `GB`, `TB`) or
/// binary (`KiB`, `MiB`, `GiB`, `TiB`) unit.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let unit = unit.trim();
    let factor: u64 = match unit {
        "" | "B" => 1,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        _ => {
            return Err(format!(
                "`{text}` is not a size: write a number with B, kB, MB, GB, TB, KiB, MiB, GiB or TiB (e.g. `10GiB`)"
            ))
        }
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(factor))
        .ok_or_else(|| {
            format!("`{text}` is not a size: write a whole number and a unit (e.g. `10GiB`)")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name("web-1.a_b").is_ok());
        for bad in ["", "..", "-x", "a/b", "a b", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn labels() {
        for good in ["gpu", "linux-x64", "café", "ГПУ", "日本"] {
            assert!(check_label(good).is_ok(), "{good:?} should pass");
        }
        for bad in [
            "g\u{0440}u",
            "gpu\u{200b}",
            "\u{202e}upg",
            "a\tb",
            "\u{03bf}s",
        ] {
            assert!(check_label(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn api_urls_follow_the_runner_rule() {
        assert_eq!(api_url_for("https://github.com"), "https://api.github.com");
        assert_eq!(
            api_url_for("https://acme.ghe.com"),
            "https://api.acme.ghe.com"
        );
        assert_eq!(
            api_url_for("https://ghe.example.com"),
            "https://ghe.example.com/api/v3"
        );
        assert_eq!(
            api_url_for("http://127.0.0.1:8080"),
            "http://127.0.0.1:8080/api/v3"
        );
    }

    #[test]
    fn repos() {
        let gh = "https://github.com";
        assert_eq!(
            parse_repo("o/r", gh).expect("short form"),
            ("o".into(), "r".into(), "https://github.com/o/r".into())
        );
        assert_eq!(
            parse_repo("https://ghe.example.com/o/r.git/", gh)
                .expect("url form")
                .2,
            "https://ghe.example.com/o/r"
        );
        for bad in [
            "o",
            "o/r/x",
            "/r",
            "o/..",
            "https://github.com/o",
            "ftp://x/o/r",
        ] {
            assert!(parse_repo(bad, gh).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("0"), Ok(0));
        assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("10 GB"), Ok(10_000_000_000));
        assert!(parse_bytes("ten")
            .expect_err("not a size")
            .contains("`ten` is not a size"));
        assert!(parse_bytes("1.5GiB").is_err());
        assert!(parse_bytes("99999999999TiB").is_err());
    }
}
