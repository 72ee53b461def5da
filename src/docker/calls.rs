//! The calls the proxy does more than forward: creating and acting on containers, execs,
//! builds, images and networks, each checked against the runner's policy and ownership.

use std::sync::Arc;

use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::Value;

use super::engine::segment;
use super::policy::{self, owner_of, Refusal, Scope, BUILTIN_NETWORKS};
use super::proxy::{json_answer, query_pairs, read_json, with_query, Answer, Denied, RunnerProxy};

impl RunnerProxy {
    /// `POST /networks/create` and `POST /volumes/create`: the body checked and labelled by
    /// `check`.
    pub(super) async fn create(
        &self,
        scope: &Scope<'_>,
        req: Request<Incoming>,
        check: fn(&mut Value, &Scope<'_>) -> Result<(), Refusal>,
    ) -> Result<Answer, Denied> {
        let (req, mut body) = read_json(req).await?;
        check(&mut body, scope)?;
        self.forward_json(req, &body).await
    }

    /// A call on an exec instance: only one of this runner's containers.
    pub(super) async fn exec_call(
        &self,
        id: &str,
        req: Request<Incoming>,
    ) -> Result<Answer, Denied> {
        let exec = self
            .engine
            .get(&format!("/exec/{}/json", segment(id)))
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

    /// `GET /images/get`: every image named must be visible to this runner.
    pub(super) async fn image_export(&self, req: Request<Incoming>) -> Result<Answer, Denied> {
        for (key, name) in query_pairs(req.uri()) {
            if key == "names" {
                self.visible_image(&name).await?;
            }
        }
        self.forward(req, None).await
    }

    pub(super) async fn container_create(
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

    pub(super) async fn container_call(
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

    pub(super) async fn build(
        &self,
        scope: &Scope<'_>,
        req: Request<Incoming>,
    ) -> Result<Answer, Denied> {
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

    pub(super) async fn image_create(
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

    pub(super) async fn commit(
        &self,
        scope: &Scope<'_>,
        req: Request<Incoming>,
    ) -> Result<Answer, Denied> {
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

    pub(super) async fn image_call(
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

    pub(super) async fn network_call(
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

    pub(super) async fn image_list(&self, req: Request<Incoming>) -> Result<Answer, Denied> {
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
