//! One runner's socket: an HTTP/1 server that forwards each Engine API call to the real
//! engine after the policy, labelling and ownership checks of [`super::policy`]. Bodies and
//! answers stream through unchanged (build contexts, logs, events); hijacked connections
//! (attach, exec) are spliced byte for byte once both sides have switched protocols.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, UPGRADE};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;

use super::engine::{full, segment, BoxError, Engine, ProxyBody};
use super::job::{self, JobKey};
use super::mounts::Mounts;
use super::policy::{self, owner_of, Refusal, Scope, BUILTIN_NETWORKS};
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

type Answer = Response<ProxyBody>;

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
            Route::Exec { id } => {
                let exec = self
                    .engine
                    .get(&format!("/exec/{}/json", segment(&id)))
                    .await?;
                let container = exec
                    .as_ref()
                    .and_then(|e| e["ContainerID"].as_str())
                    .unwrap_or_default()
                    .to_string();
                if exec.is_none() || !self.owns_container(&container).await? {
                    return Err(Denied::NotFound(format!("No such exec instance: {id}")));
                }
                self.forward(req, None).await
            }
            Route::Build => self.build(scope, req).await,
            Route::ImageCreate => self.image_create(scope, req).await,
            Route::ImageExport => {
                for (key, name) in query_pairs(req.uri()) {
                    if key == "names" {
                        self.visible_image(&name).await?;
                    }
                }
                self.forward(req, None).await
            }
            Route::Commit => self.commit(scope, req).await,
            Route::Image { name, action } => self.image_call(&name, &action, req).await,
            Route::NetworkCreate => {
                let (req, mut body) = read_json(req).await?;
                policy::network_create(&mut body, scope)?;
                self.forward_json(req, &body).await
            }
            Route::Network { id, action } => self.network_call(&id, &action, req).await,
            Route::VolumeCreate => {
                let (req, mut body) = read_json(req).await?;
                policy::volume_create(&mut body, scope)?;
                self.forward_json(req, &body).await
            }
            Route::Volume { name } => {
                self.owned_volume(&name).await?;
                self.forward(req, None).await
            }
            Route::Refused(why) => Err(Denied::Refused(Refusal(format!(
                "corral: `{} {}` is not available on a runner's Docker socket: {why}",
                req.method(),
                super::route::strip_version(req.uri().path())
            )))),
            Route::Hidden => Err(Denied::NotFound(format!(
                "no such object: {}",
                super::route::strip_version(req.uri().path())
            ))),
            Route::Unknown => Err(Denied::Refused(Refusal(format!(
                "corral: `{} {}` is not available on a runner's Docker socket",
                req.method(),
                super::route::strip_version(req.uri().path())
            )))),
        }
    }

    async fn container_create(
        &self,
        scope: &Scope<'_>,
        req: Request<Incoming>,
    ) -> Result<Answer, Denied> {
        let (req, mut body) = read_json(req).await?;
        let resolve = |source: &str, read_only: bool| self.mounts.resolve(source, read_only);
        let refs = policy::container_create(&mut body, scope, &resolve)?;
        self.check_refs(scope, &refs).await?;
        self.forward_json(req, &body).await
    }

    async fn container_call(
        &self,
        scope: &Scope<'_>,
        id: &str,
        action: &str,
        req: Request<Incoming>,
    ) -> Result<Answer, Denied> {
        let Some(container) = self.own_container(id).await? else {
            return Err(Denied::NotFound(format!("No such container: {id}")));
        };
        match action {
            "exec" => {
                let (req, body) = read_json(req).await?;
                policy::exec_create(&body, scope)?;
                return self.forward_json(req, &body).await;
            }
            "start" | "restart" => self.recheck_binds(&container)?,
            "update" => {
                let (req, body) = read_json(req).await?;
                policy::container_update(&body, has_binds(&container), scope)?;
                return self.forward_json(req, &body).await;
            }
            _ => {}
        }
        self.forward(req, None).await
    }

    /// Every bind of `container` checked again before the engine mounts it.
    fn recheck_binds(&self, container: &Value) -> Result<(), Denied> {
        let host = &container["HostConfig"];
        for bind in host["Binds"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            let mut parts = bind.splitn(3, ':');
            let source = parts.next().unwrap_or_default();
            let read_only = parts
                .nth(1)
                .is_some_and(|o| o.split(',').any(|o| o == "ro"));
            if source.starts_with('/') {
                self.mounts.recheck(source, read_only)?;
            }
        }
        for mount in host["Mounts"].as_array().into_iter().flatten() {
            if mount["Type"] == "bind" {
                let read_only = mount["ReadOnly"].as_bool() == Some(true);
                self.mounts
                    .recheck(mount["Source"].as_str().unwrap_or_default(), read_only)?;
            }
        }
        Ok(())
    }

    async fn build(&self, scope: &Scope<'_>, req: Request<Incoming>) -> Result<Answer, Denied> {
        let query = query_pairs(req.uri());
        let (query, refs) = policy::build_query(&query, scope)?;
        self.check_refs(scope, &refs).await?;
        let uri = with_query(req.uri(), &query);
        let answer = self.forward(req, Some(uri)).await?;
        Ok(self.watch_build(answer))
    }

    /// Notes the image of every build step (` ---> 0123abcd` in the stream) as it passes,
    /// for the next sweep: a build cut short leaves those images dangling.
    fn watch_build(&self, answer: Answer) -> Answer {
        let sink = Arc::clone(&self.built);
        let mut carry = String::new();
        answer.map(move |body| {
            body.map_frame(move |frame| {
                if let Some(data) = frame.data_ref() {
                    carry.push_str(&String::from_utf8_lossy(data));
                    while let Some(end) = carry.find('\n') {
                        let line: String = carry.drain(..=end).collect();
                        if let Some(id) = step_image(&line) {
                            sink.lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner)
                                .insert(id);
                        }
                    }
                    if carry.len() > 64 * 1024 {
                        carry.clear();
                    }
                }
                frame
            })
            .boxed()
        })
    }

    async fn image_create(
        &self,
        scope: &Scope<'_>,
        req: Request<Incoming>,
    ) -> Result<Answer, Denied> {
        let mut query = query_pairs(req.uri());
        let get = |k: &str| {
            query
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        let target = match (get("fromImage"), get("repo"), get("tag")) {
            (_, Some(repo), tag) | (Some(repo), None, tag) if !repo.is_empty() => Some(
                tag.filter(|t| !t.is_empty())
                    .map_or(repo.clone(), |t| format!("{repo}:{t}")),
            ),
            _ => None,
        };
        if let Some(target) = &target {
            self.tag_free(target).await?;
        }
        if get("fromSrc").is_some() {
            // An import: the image is the job's, like one it built.
            let labels: Vec<String> = scope
                .labels()
                .into_iter()
                .map(|(k, v)| format!("{k}={}", serde_json::Value::String(v)))
                .collect();
            query.push(("changes".into(), format!("LABEL {}", labels.join(" "))));
        }
        let uri = with_query(req.uri(), &query);
        self.forward(req, Some(uri)).await
    }

    async fn commit(&self, scope: &Scope<'_>, req: Request<Incoming>) -> Result<Answer, Denied> {
        let query = query_pairs(req.uri());
        let get = |k: &str| {
            query
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        let container = get("container").unwrap_or_default();
        if self.own_container(&container).await?.is_none() {
            return Err(Denied::NotFound(format!("No such container: {container}")));
        }
        if let Some(repo) = get("repo").filter(|r| !r.is_empty()) {
            let tag = get("tag").filter(|t| !t.is_empty());
            self.tag_free(&tag.map_or(repo.clone(), |t| format!("{repo}:{t}")))
                .await?;
        }
        let (req, mut body) = read_json(req).await?;
        policy::labelled(&mut body, "Labels", scope);
        self.forward_json(req, &body).await
    }

    async fn image_call(
        &self,
        name: &str,
        action: &str,
        req: Request<Incoming>,
    ) -> Result<Answer, Denied> {
        let owner = self.visible_image(name).await?;
        match action {
            "" if owner.is_none() => {
                return Err(Denied::Refused(Refusal(format!(
                    "corral: image `{name}` is shared by every runner of this host; a job cannot remove it"
                ))))
            }
            "tag" => {
                let query = query_pairs(req.uri());
                let get = |k: &str| query.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
                if let Some(repo) = get("repo") {
                    let tag = get("tag").filter(|t| !t.is_empty());
                    self.tag_free(&tag.map_or(repo.clone(), |t| format!("{repo}:{t}"))).await?;
                }
            }
            _ => {}
        }
        self.forward(req, None).await
    }

    async fn network_call(
        &self,
        id: &str,
        action: &str,
        req: Request<Incoming>,
    ) -> Result<Answer, Denied> {
        let network = self
            .engine
            .get(&format!("/networks/{}", segment(id)))
            .await?;
        let builtin = network
            .as_ref()
            .and_then(|n| n["Name"].as_str())
            .is_some_and(|n| BUILTIN_NETWORKS.contains(&n));
        let own =
            network.as_ref().and_then(|n| owner_of(n.get("Labels"))) == Some(self.name.as_str());
        if network.is_none() || !(own || builtin) {
            return Err(Denied::NotFound(format!("network {id} not found")));
        }
        if builtin
            && (req.method() == Method::DELETE
                || id == "host"
                || network.as_ref().is_some_and(|n| n["Name"] == "host") && !action.is_empty())
        {
            return Err(Denied::Refused(Refusal(format!(
                "corral: the built-in network `{id}` cannot be changed through a runner's Docker socket"
            ))));
        }
        if !action.is_empty() {
            let (req, body) = read_json(req).await?;
            let container = body["Container"].as_str().unwrap_or_default().to_string();
            if self.own_container(&container).await?.is_none() {
                return Err(Denied::NotFound(format!("No such container: {container}")));
            }
            return self.forward_json(req, &body).await;
        }
        if builtin && req.method() == Method::GET {
            // Which containers of other runners are on the default bridge is theirs to know.
            let mut network = network.unwrap_or_default();
            network["Containers"] = Value::Object(serde_json::Map::new());
            return Ok(json_answer(StatusCode::OK, &network));
        }
        self.forward(req, None).await
    }

    async fn image_list(&self, req: Request<Incoming>) -> Result<Answer, Denied> {
        let answer = self.forward(req, None).await?;
        if !answer.status().is_success() {
            return Ok(answer);
        }
        let bytes = answer
            .into_body()
            .collect()
            .await
            .map_err(|e| Denied::Engine(format!("corral: reading the engine's answer: {e}")))?
            .to_bytes();
        let mut images: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Array(Vec::new()));
        if let Some(list) = images.as_array_mut() {
            list.retain(|image| {
                owner_of(image.get("Labels")).is_none_or(|owner| owner == self.name)
            });
        }
        Ok(json_answer(StatusCode::OK, &images))
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
    async fn forward(
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
    async fn forward_json(
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
async fn read_json(req: Request<Incoming>) -> Result<(http::request::Parts, Value), Denied> {
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

fn json_answer(status: StatusCode, value: &Value) -> Answer {
    let mut answer = Response::new(full(value.to_string()));
    *answer.status_mut() = status;
    answer.headers_mut().insert(
        CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    answer
}

fn has_binds(container: &Value) -> bool {
    let host = &container["HostConfig"];
    host["Binds"].as_array().is_some_and(|b| {
        b.iter()
            .any(|b| b.as_str().is_some_and(|s| s.starts_with('/')))
    }) || host["Mounts"]
        .as_array()
        .is_some_and(|m| m.iter().any(|m| m["Type"] == "bind"))
}

/// ` ---> 0123456789ab` of a build step's stream line.
fn step_image(line: &str) -> Option<String> {
    let value: Value = serde_json::from_str(line.trim()).ok()?;
    let text = value["stream"].as_str()?;
    let id = text.trim().strip_prefix("---> ")?;
    (id.len() >= 12 && id.chars().all(|c| c.is_ascii_hexdigit())).then(|| id.to_string())
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
