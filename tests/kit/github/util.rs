//! Small helpers: responses, error bodies, time formatting, ids, pagination.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};

/// Generic documentation URL GitHub puts in most error bodies.
pub const DOCS: &str = "https://docs.github.com/rest";

/// A JSON response.
pub fn json_response(status: u16, body: &Value) -> Response {
    let mut resp = Response::new(Body::from(body.to_string()));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp
}

/// An empty response (204 and friends).
pub fn empty(status: u16) -> Response {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp
}

/// `{"message", "documentation_url"}` error body.
pub fn error(status: u16, message: &str) -> Response {
    json_response(
        status,
        &json!({"message": message, "documentation_url": DOCS}),
    )
}

/// `basic-error` with the string `status` field, as 401/403 bodies carry it.
pub fn error_with_status(status: u16, message: &str, doc: &str) -> Response {
    json_response(
        status,
        &json!({"message": message, "documentation_url": doc, "status": status.to_string()}),
    )
}

/// The standard 404 body.
pub fn not_found() -> Response {
    error(404, "Not Found")
}

/// Sets a header, ignoring values that are not valid header text (never produced here).
pub fn set_header(resp: &mut Response, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        resp.headers_mut().insert(name, v);
    }
}

/// Seconds since the epoch.
pub fn epoch_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

/// Days since 1970-01-01 to (year, month, day); Howard Hinnant's `civil_from_days`.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// RFC 3339 text of `t` shifted to `offset_min` minutes east of UTC, with millis; `Z` when 0 and `!millis`.
fn format_time(time: SystemTime, offset_min: i64, millis: bool) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let local_ms = since.as_millis() as i64 + offset_min * 60_000;
    let secs = local_ms.div_euclid(1000);
    let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    let (hour, minute, second) = (sod / 3600, sod % 3600 / 60, sod % 60);
    let frac = if millis {
        format!(".{:03}", local_ms.rem_euclid(1000))
    } else {
        String::new()
    };
    let zone = if offset_min == 0 {
        "Z".to_string()
    } else {
        let sign = if offset_min < 0 { '-' } else { '+' };
        format!(
            "{sign}{:02}:{:02}",
            offset_min.abs() / 60,
            offset_min.abs() % 60
        )
    };
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}{frac}{zone}")
}

/// `expires_at` style: millis and a `-08:00` offset, like the docs' examples.
pub fn rfc3339_offset(t: SystemTime) -> String {
    format_time(t, -8 * 60, true)
}

/// `created_at` style: whole seconds, `Z`.
pub fn rfc3339_utc(t: SystemTime) -> String {
    format_time(t, 0, false)
}

/// A small xorshift generator; tokens need only be distinct, not secret.
pub struct Rng(u64);

impl Rng {
    /// Seeded from the wall clock so two fakes differ.
    pub fn new() -> Self {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_nanos() as u64;
        Self(seed | 1)
    }

    /// Next pseudo-random value.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// `len` characters of A-Z0-9.
    pub fn token(&mut self, len: usize) -> String {
        const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        (0..len)
            .map(|_| CHARS[(self.next() % CHARS.len() as u64) as usize] as char)
            .collect()
    }

    /// A GUID-shaped string.
    pub fn guid(&mut self) -> String {
        let (a, b) = (self.next(), self.next());
        format!(
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xffff,
            b >> 48,
            b & 0xffff_ffff_ffff
        )
    }
}

/// One page of a list plus its `Link` header.
pub struct Page {
    /// Items of the requested page.
    pub items: Vec<Value>,
    /// `Link` header value, when there is more than one page.
    pub link: Option<String>,
}

/// Query parameter `key` from a raw query string (no percent-decoding needed for our values).
pub fn query_param(query: Option<&str>, key: &str) -> Option<String> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == key).then(|| percent_decode(v))
    })
}

/// Minimal `%XX` and `+` decoding for query values and path segments.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Slices `all` by `per_page` (default 30, max 100) and `page` (default 1); `url` is the request URL
/// without query, used to build `Link` with every other query parameter kept.
pub fn paginate(all: Vec<Value>, url: &str, query: Option<&str>) -> Page {
    let per_page = query_param(query, "per_page")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(30)
        .clamp(1, 100);
    let page = query_param(query, "page")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    let last = all.len().div_ceil(per_page).max(1);
    let items = all
        .into_iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .collect();
    if last == 1 {
        return Page { items, link: None };
    }
    let others: Vec<&str> = query
        .unwrap_or("")
        .split('&')
        .filter(|kv| !kv.is_empty() && !kv.starts_with("page=") && !kv.starts_with("per_page="))
        .collect();
    let link_to = |p: usize, rel: &str| {
        let mut q = others
            .clone()
            .into_iter()
            .map(str::to_string)
            .collect::<Vec<_>>();
        q.push(format!("per_page={per_page}"));
        q.push(format!("page={p}"));
        format!("<{url}?{}>; rel=\"{rel}\"", q.join("&"))
    };
    let mut rels = Vec::new();
    if page > 1 {
        rels.push(link_to(page - 1, "prev"));
    }
    if page < last {
        rels.push(link_to(page + 1, "next"));
        rels.push(link_to(last, "last"));
    }
    if page > 1 {
        rels.push(link_to(1, "first"));
    }
    Page {
        items,
        link: Some(rels.join(", ")),
    }
}
