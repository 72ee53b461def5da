//! The real Docker Engine, over its Unix socket: one HTTP/1 connection per request (upgrades
//! consume theirs), and the few JSON calls the proxy and the reaper make themselves.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// Any error a body may carry.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type of everything the proxy sends and answers.
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// The API version corral's own calls use: the engine's minimum for everything used here.
const API: &str = "/v1.41";

/// Why the engine could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Its socket refused or is missing.
    #[error("cannot connect to the Docker engine at `{}`", path.display())]
    Connect {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP exchange failed.
    #[error("the Docker engine's connection failed")]
    Http(#[source] hyper::Error),
    /// It answered with an error.
    #[error("the Docker engine answered {status}: {message}")]
    Status {
        /// HTTP status.
        status: StatusCode,
        /// Its `message`.
        message: String,
    },
}

/// A body of bytes.
pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// The engine's socket.
#[derive(Debug, Clone)]
pub struct Engine {
    socket: PathBuf,
}

impl Engine {
    /// The engine listening on `socket`.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Engine {
            socket: socket.into(),
        }
    }

    /// Its socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends `req` on a connection of its own; the connection serves an upgrade too.
    pub async fn send(&self, req: Request<ProxyBody>) -> Result<Response<Incoming>, EngineError> {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|source| EngineError::Connect {
                path: self.socket.clone(),
                source,
            })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(EngineError::Http)?;
        tokio::spawn(async move {
            if let Err(err) = conn.with_upgrades().await {
                tracing::debug!(cause = %err, "engine connection ended");
            }
        });
        sender.send_request(req).await.map_err(EngineError::Http)
    }

    /// `method path` with a JSON `body`; the answer's JSON, `None` for 404.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Option<Value>, EngineError> {
        let bytes = body.map(Value::to_string).unwrap_or_default();
        let req = Request::builder()
            .method(method)
            .uri(format!("{API}{path}"))
            .header(http::header::HOST, "docker")
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(full(bytes))
            .map_err(|e| EngineError::Status {
                status: StatusCode::BAD_REQUEST,
                message: e.to_string(),
            })?;
        let resp = self.send(req).await?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(EngineError::Http)?
            .to_bytes();
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(EngineError::Status {
                status,
                message: value["message"].as_str().map_or_else(
                    || String::from_utf8_lossy(&bytes).into_owned(),
                    str::to_string,
                ),
            });
        }
        Ok(Some(value))
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Result<Option<Value>, EngineError> {
        self.call(Method::GET, path, None).await
    }

    /// `DELETE path`; true when it was there.
    pub async fn delete(&self, path: &str) -> Result<bool, EngineError> {
        Ok(self.call(Method::DELETE, path, None).await?.is_some())
    }
}

/// A path segment, percent-encoded (names may hold `/` and `:`).
pub fn segment(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}
