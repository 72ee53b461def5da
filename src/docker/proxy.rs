//! One runner's socket: an HTTP/1 server that forwards each Engine API call to the real
//! engine after the policy, labelling and ownership checks of [`super::policy`]. Bodies and
//! answers stream through unchanged (build contexts, logs, events); hijacked connections
//! (attach, exec) are spliced byte for byte once both sides have switched protocols.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, UPGRADE};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;

use super::engine::{full, BoxError, Engine, ProxyBody};
use super::job::{self, JobKey};
use super::mounts::Mounts;
use super::policy::{self, Refusal, Scope};
use super::route::{route, Route};
use super::{Counters, DockerPolicy};

/// Largest JSON body the proxy reads to check (a container's configuration).
const MAX_JSON_BODY: usize = 4 * 1024 * 1024;

/// What one runner's socket knows.
pub struct RunnerProxy {
    /// Runner name.
    pub name: String,
    /// Its policy.
    pub policy: DockerPolicy,
    /// Its bind mount rules.
    pub mounts: Mounts,
    /// The engine.
    pub engine: Engine,
    /// The job running now, by name, as the controller last said.
    pub job_name: Mutex<Option<String>>,
    /// The last job a connection came from.
    pub last_job: Mutex<Option<JobKey>>,
    /// Images builds made on the way (intermediate layers), removed when left dangling.
    pub built: Arc<Mutex<BTreeSet<String>>>,
    /// What was refused and reaped.
    pub counters: Arc<Mutex<Counters>>,
}

pub(super) type Answer = Response<ProxyBody>;

impl RunnerProxy {
    /// The job a client with process id `pid` runs in.
    pub fn job_of(&self, pid: Option<i32>) -> String {
        let mut last = self
            .last_job
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(key) = pid.and_then(job::worker_of) {
            *last = Some(key);
            return key.to_string();
        }
        match *last {
            Some(key) if key.alive() => key.to_string(),
            _ => job::NO_JOB.to_string(),
        }
    }

    /// Serves one client connection until it closes.
    pub async fn serve_connection(self: Arc<Self>, stream: tokio::net::UnixStream) {
        let pid = stream.peer_cred().ok().and_then(|c| c.pid());
        let job = Arc::new(self.job_of(pid));
        let this = Arc::clone(&self);
        let service = hyper::service::service_fn(move |req| {
            let (this, job) = (Arc::clone(&this), Arc::clone(&job));
            async move { Ok::<_, Infallible>(this.handle(&job, req).await) }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        if let Err(err) = conn.await {
            tracing::debug!(runner = %self.name, cause = %err, "docker client connection ended");
        }
    }

    async fn handle(&self, job: &str, req: Request<Incoming>) -> Answer {
        let job_name = self
            .job_name
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let scope = Scope {
            runner: &self.name,
            job,
            job_name: job_name.as_deref(),
            policy: &self.policy,
        };
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let answer = match self.dispatch(&scope, route(&method, &path), req).await {
            Ok(answer) => answer,
            Err(Denied::Refused(Refusal(message))) => {
                self.count(|c| c.refused += 1);
                tracing::info!(runner = %self.name, %method, %path, %message, "docker request refused");
                error(StatusCode::FORBIDDEN, &message)
            }
            Err(Denied::NotFound(message)) => error(StatusCode::NOT_FOUND, &message),
            Err(Denied::Engine(message)) => error(StatusCode::BAD_GATEWAY, &message),
        };
        answer
    }

    fn count(&self, f: impl FnOnce(&mut Counters)) {
        f(&mut self
            .counters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner));
    }

    async fn dispatch(
        &self,
        scope: &Scope<'_>,
        route: Route,
        req: Request<Incoming>,
    ) -> Result<Answer, Denied> {
        match route {
            Route::Pass | Route::Session | Route::BuildPrune | Route::ImageLoad => {
                self.forward(req, None).await
            }
            Route::Events
            | Route::ContainerList
            | Route::ContainerPrune
            | Route::NetworkList
            | Route::NetworkPrune
            | Route::VolumeList
            | Route::VolumePrune
            | Route::ImagePrune => {
                let uri = self.filtered_uri(req.uri());
                self.forward(req, Some(uri)).await
            }
            Route::ImageList => self.image_list(req).await,
            Route::ContainerCreate => self.container_create(scope, req).await,
            Route::Container { id, action } => self.container_call(scope, &id, &action, req).await,
            Route::Exec { id } => self.exec_call(&id, req).await,
            Route::Build => self.build(scope, req).await,
            Route::ImageCreate => self.image_create(scope, req).await,
            Route::ImageExport => self.image_export(req).await,
            Route::Commit => self.commit(scope, req).await,
            Route::Image { name, action } => self.image_call(&name, &action, req).await,
            Route::NetworkCreate => self.create(scope, req, policy::network_create).await,
            Route::Network { id, action } => self.network_call(&id, &action, req).await,
            Route::VolumeCreate => self.create(scope, req, policy::volume_create).await,
            Route::Volume { name } => {
                self.owned_volume(&name).await?;
                self.forward(req, None).await
            }
            Route::Refused(why) => Err(unavailable(&req, Some(why))),
            Route::Hidden => Err(Denied::NotFound(format!(
                "no such object: {}",
                super::route::strip_version(req.uri().path())
            ))),
            Route::Unknown => Err(unavailable(&req, None)),
        }
    }

    fn filtered_uri(&self, uri: &Uri) -> String {
        let mut query = query_pairs(uri);
        let filters = query
            .iter()
            .position(|(k, _)| k == "filters")
            .map(|i| query.remove(i).1);
        query.push((
            "filters".into(),
            policy::with_runner_filter(filters.as_deref(), &self.name),
        ));
        with_query(uri, &query)
    }

    /// Sends `req` on as it is, with `uri` in place of its own when given; a switch of
    /// protocols is spliced.
    pub(super) async fn forward(
        &self,
        mut req: Request<Incoming>,
        uri: Option<String>,
    ) -> Result<Answer, Denied> {
        let downstream = req
            .headers()
            .contains_key(UPGRADE)
            .then(|| hyper::upgrade::on(&mut req));
        let (mut parts, incoming) = req.into_parts();
        set_uri(&mut parts, uri)?;
        let mut answer = self
            .engine
            .send(Request::from_parts(
                parts,
                incoming.map_err(BoxError::from).boxed(),
            ))
            .await?;
        if answer.status() == StatusCode::SWITCHING_PROTOCOLS {
            if let Some(downstream) = downstream {
                let upstream = hyper::upgrade::on(&mut answer);
                tokio::spawn(splice(downstream, upstream));
            }
        }
        Ok(answer.map(|b| b.map_err(BoxError::from).boxed()))
    }

    /// Sends a request whose JSON body was read (and perhaps rewritten) as `body`.
    pub(super) async fn forward_json(
        &self,
        mut parts: http::request::Parts,
        body: &Value,
    ) -> Result<Answer, Denied> {
        let bytes = Bytes::from(body.to_string());
        parts.headers.insert(CONTENT_LENGTH, bytes.len().into());
        parts.headers.remove(http::header::TRANSFER_ENCODING);
        let answer = self
            .engine
            .send(Request::from_parts(parts, full(bytes)))
            .await?;
        Ok(answer.map(|b| b.map_err(BoxError::from).boxed()))
    }
}

/// A call no runner's socket offers, with why when the route says.
fn unavailable(req: &Request<Incoming>, why: Option<&str>) -> Denied {
    let call = format!(
        "`{} {}`",
        req.method(),
        super::route::strip_version(req.uri().path())
    );
    Denied::Refused(Refusal(match why {
        Some(why) => {
            format!("corral: {call} is not available on a runner's Docker socket: {why}")
        }
        None => format!("corral: {call} is not available on a runner's Docker socket"),
    }))
}

fn set_uri(parts: &mut http::request::Parts, uri: Option<String>) -> Result<(), Denied> {
    if let Some(uri) = uri {
        parts.uri = uri
            .parse()
            .map_err(|e| Denied::Engine(format!("corral: bad request path: {e}")))?;
    }
    Ok(())
}

/// Why a request goes no further.
#[derive(Debug)]
pub(super) enum Denied {
    /// The policy forbids it.
    Refused(Refusal),
    /// It names what this runner cannot see.
    NotFound(String),
    /// The engine could not be asked.
    Engine(String),
}

impl From<Refusal> for Denied {
    fn from(r: Refusal) -> Self {
        Denied::Refused(r)
    }
}

impl From<super::engine::EngineError> for Denied {
    fn from(e: super::engine::EngineError) -> Self {
        Denied::Engine(format!("corral: {}", crate::error_chain(&e)))
    }
}

/// Copies both ways between the client and the engine once both have upgraded.
async fn splice(downstream: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
    let (down, up) = match tokio::try_join!(downstream, upstream) {
        Ok(pair) => pair,
        Err(err) => {
            tracing::debug!(cause = %err, "docker upgrade failed");
            return;
        }
    };
    let (mut down, mut up) = (TokioIo::new(down), TokioIo::new(up));
    if let Err(err) = tokio::io::copy_bidirectional(&mut down, &mut up).await {
        tracing::debug!(cause = %err, "hijacked docker connection ended");
    }
}

/// The request's head and its JSON body (up to [`MAX_JSON_BODY`]); an empty body is `{}`.
pub(super) async fn read_json(
    req: Request<Incoming>,
) -> Result<(http::request::Parts, Value), Denied> {
    let (parts, body) = req.into_parts();
    let bytes = http_body_util::Limited::new(body, MAX_JSON_BODY)
        .collect()
        .await
        .map_err(|e| Denied::Refused(Refusal(format!("corral: cannot read the request: {e}"))))?
        .to_bytes();
    let value = if bytes.iter().all(u8::is_ascii_whitespace) {
        Value::Object(serde_json::Map::new())
    } else {
        serde_json::from_slice(&bytes).map_err(|e| {
            Denied::Refused(Refusal(format!(
                "corral: the request body is not JSON: {e}"
            )))
        })?
    };
    Ok((parts, value))
}

fn error(status: StatusCode, message: &str) -> Answer {
    json_answer(status, &serde_json::json!({ "message": message }))
}

pub(super) fn json_answer(status: StatusCode, value: &Value) -> Answer {
    let mut answer = Response::new(full(value.to_string()));
    *answer.status_mut() = status;
    answer.headers_mut().insert(
        CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    answer
}

/// The query of `uri`, decoded, in order.
pub fn query_pairs(uri: &Uri) -> Vec<(String, String)> {
    form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// `uri`'s path with `query`.
pub fn with_query(uri: &Uri, query: &[(String, String)]) -> String {
    let encoded = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(query)
        .finish();
    format!("{}?{encoded}", uri.path())
}
