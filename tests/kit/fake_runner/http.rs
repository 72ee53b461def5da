//! A minimal blocking HTTP/1.1 client for the loopback fake service: one request per
//! connection (`Connection: close`), JSON bodies, `Content-Length` or chunked replies.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// `http://host[:port]/path?query` → (host, port, path).
pub fn split_url(url: &str) -> io::Result<(String, u16, String)> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        bad(format!(
            "only http:// URLs are supported by the fake runner: {url}"
        ))
    })?;
    let (authority, path) = rest
        .find('/')
        .map_or((rest, "/"), |i| (&rest[..i], &rest[i..]));
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().map_err(|_| bad(format!("bad port in {url}")))?),
        None => (authority, 80),
    };
    Ok((host.to_owned(), port, path.to_owned()))
}

fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// Sends one request; `timeout` bounds connect, each read and each write.
pub fn request(
    method: &str,
    url: &str,
    auth: Option<&str>,
    body: Option<&serde_json::Value>,
    timeout: Duration,
) -> io::Result<Response> {
    let (host, port, path) = split_url(url)?;
    let addr = (host.as_str(), port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| bad(format!("cannot resolve {host}")))?;
    let mut stream = TcpStream::connect_timeout(&addr, timeout.min(Duration::from_secs(10)))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let payload = body.map(ToString::to_string).unwrap_or_default();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: GitHubActionsRunner-linux-x64/fake\r\nAccept: application/json\r\nConnection: close\r\nContent-Length: {}\r\n",
        payload.len()
    );
    if body.is_some() {
        head.push_str("Content-Type: application/json\r\n");
    }
    if let Some(auth) = auth {
        head = format!("{head}Authorization: {auth}\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(payload.as_bytes())?;
    stream.flush()?;
    let mut raw = Vec::new();
    read_response(&mut stream, &mut raw)?;
    parse(&raw)
}

/// Reads until EOF, or until a complete `Content-Length` body is in (some servers keep
/// the socket open briefly despite `Connection: close`).
fn read_response(stream: &mut TcpStream, raw: &mut Vec<u8>) -> io::Result<()> {
    let mut buf = [0_u8; 8192];
    loop {
        // A read interrupted by a signal or a cgroup freeze is retried, as the .NET runtime
        // the real runner uses does.
        let n = match stream.read(&mut buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => other?,
        };
        if n == 0 {
            return Ok(());
        }
        raw.extend_from_slice(&buf[..n]);
        if let Some(end) = header_end(raw) {
            let head = String::from_utf8_lossy(&raw[..end]).to_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            if length.is_some_and(|len| raw.len() >= end + 4 + len) {
                return Ok(());
            }
        }
    }
}

fn header_end(raw: &[u8]) -> Option<usize> {
    raw.windows(4).position(|w| w == b"\r\n\r\n")
}

fn parse(raw: &[u8]) -> io::Result<Response> {
    let end = header_end(raw).ok_or_else(|| bad("truncated HTTP response".to_owned()))?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("bad HTTP status line".to_owned()))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut resp = Response {
        status,
        headers,
        body: String::new(),
    };
    let tail = &raw[end + 4..];
    let body = if resp
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        dechunk(tail)
    } else if let Some(len) = resp
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    {
        tail[..len.min(tail.len())].to_vec()
    } else {
        tail.to_vec()
    };
    resp.body = String::from_utf8_lossy(&body).into_owned();
    Ok(resp)
}

fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&rest[..eol]);
        let size_hex = size_text.split(';').next().unwrap_or("0").trim();
        let Ok(size) = usize::from_str_radix(size_hex, 16) else {
            break;
        };
        rest = &rest[eol + 2..];
        if size == 0 || rest.len() < size {
            break;
        }
        out.extend_from_slice(&rest[..size]);
        rest = rest.get(size + 2..).unwrap_or_default();
    }
    out
}

/// `404` → `NotFound` / `Not Found`, the two spellings .NET prints.
pub fn reason(status: u16) -> (&'static str, &'static str) {
    match status {
        400 => ("BadRequest", "Bad Request"),
        401 => ("Unauthorized", "Unauthorized"),
        403 => ("Forbidden", "Forbidden"),
        404 => ("NotFound", "Not Found"),
        409 => ("Conflict", "Conflict"),
        422 => ("UnprocessableEntity", "Unprocessable Entity"),
        500 => ("InternalServerError", "Internal Server Error"),
        503 => ("ServiceUnavailable", "Service Unavailable"),
        _ => ("Unknown", "Unknown"),
    }
}
