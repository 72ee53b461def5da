//! What a runner's jobs may ask the engine for, and the labels put on what they create.
//! Pure: request bodies and queries in, refusals or rewritten bodies out. What needs the
//! engine or the file system (is that container this runner's? where does that path
//! lead?) is handed back as [`Refs`] or done by the caller's `resolve_bind`.

mod binds;
mod host;

use serde_json::{Map, Value};

use crate::config::DockerPolicy;
use binds::{rewrite_binds, volume_driver};
use host::{host_config, network_ref};

/// The label naming the runner an object belongs to.
pub const RUNNER_LABEL: &str = "corral.runner";
/// The label naming the job (its `Runner.Worker` process) an object was made in.
pub const JOB_LABEL: &str = "corral.job";
/// The label with the job's name, when corral knew it.
pub const JOB_NAME_LABEL: &str = "corral.job.name";

/// Networks every engine has; not any runner's, and usable by all but `host`.
pub const BUILTIN_NETWORKS: [&str; 4] = ["bridge", "default", "none", "host"];

/// A request the policy refuses, with the message the `docker` CLI prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(pub String);

/// Objects a request names that must be this runner's (or shared) before it goes on.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Refs {
    /// Containers (`--volumes-from`, `--network container:…`, links, exec targets).
    pub containers: Vec<String>,
    /// User-defined networks.
    pub networks: Vec<String>,
    /// Named volumes; created with this runner's labels when missing.
    pub volumes: Vec<String>,
    /// Images used (must not be another runner's).
    pub images: Vec<String>,
    /// Image names to be written (tags): must not name another runner's image.
    pub tags: Vec<String>,
}

/// Who asks: the runner, its job, and its policy.
#[derive(Debug, Clone)]
pub struct Scope<'a> {
    /// Runner name.
    pub runner: &'a str,
    /// The job's key (its `Runner.Worker`), `none` outside a job.
    pub job: &'a str,
    /// The job's name, when the controller said.
    pub job_name: Option<&'a str>,
    /// What it may do.
    pub policy: &'a DockerPolicy,
}

impl Scope<'_> {
    /// The labels for an object created now.
    pub fn labels(&self) -> Vec<(&'static str, String)> {
        let mut labels = vec![
            (RUNNER_LABEL, self.runner.to_string()),
            (JOB_LABEL, self.job.to_string()),
        ];
        if let Some(name) = self.job_name {
            labels.push((JOB_NAME_LABEL, name.to_string()));
        }
        labels
    }

    fn refuse(&self, what: &str, setting: &str) -> Refusal {
        Refusal(format!(
            "corral: {what} is not allowed on the Docker socket of runner `{}` \
             (set `docker.{setting}: true` for it in runners.yaml to allow it)",
            self.runner
        ))
    }

    /// Sets this runner's labels in `labels` (an object or null), over any a job wrote.
    pub fn label(&self, labels: &mut Value) {
        if !labels.is_object() {
            *labels = Value::Object(Map::new());
        }
        if let Some(map) = labels.as_object_mut() {
            map.retain(|k, _| !k.starts_with("corral."));
            for (k, v) in self.labels() {
                map.insert(k.to_string(), Value::String(v));
            }
        }
    }
}

/// `POST /containers/create`: refuses what the policy forbids, labels the container, and
/// rewrites every bind source through `resolve_bind` (which refuses paths outside the
/// allowed roots). Returns the objects it names.
pub fn container_create(
    body: &mut Value,
    scope: &Scope<'_>,
    resolve_bind: &dyn Fn(&str, bool) -> Result<String, Refusal>,
) -> Result<Refs, Refusal> {
    let mut refs = Refs::default();
    if !body.is_object() {
        return Err(Refusal(
            "corral: the container's configuration is not a JSON object".into(),
        ));
    }
    if let Some(image) = body.get("Image").and_then(Value::as_str) {
        refs.images.push(image.to_string());
    }
    labelled(body, "Labels", scope);
    if !body.get("HostConfig").is_some_and(Value::is_object) {
        body["HostConfig"] = Value::Object(Map::new());
    }
    let host = &mut body["HostConfig"];
    host_config(host, scope, &mut refs)?;
    let binds = rewrite_binds(host, scope, resolve_bind, &mut refs)?;
    let restart = host
        .pointer("/RestartPolicy/Name")
        .and_then(Value::as_str)
        .unwrap_or("");
    if binds && !matches!(restart, "" | "no") {
        return Err(Refusal(format!(
            "corral: a restart policy (`--restart {restart}`) is not allowed with bind mounts \
             on the Docker socket of runner `{}`: the engine would mount them again without \
             corral checking where they lead",
            scope.runner
        )));
    }
    if let Some(endpoints) = body
        .pointer("/NetworkingConfig/EndpointsConfig")
        .and_then(Value::as_object)
    {
        for name in endpoints.keys() {
            network_ref(name, scope, &mut refs)?;
        }
    }
    Ok(refs)
}

/// Sets this runner's labels in `body[key]`; a body that is not an object becomes one.
pub fn labelled(body: &mut Value, key: &str, scope: &Scope<'_>) {
    if !body.is_object() {
        *body = Value::Object(Map::new());
    }
    scope.label(&mut body[key]);
}

/// `POST /volumes/create`.
pub fn volume_create(body: &mut Value, scope: &Scope<'_>) -> Result<(), Refusal> {
    volume_driver(body.get("Driver"), body.get("DriverOpts"), scope)?;
    labelled(body, "Labels", scope);
    Ok(())
}

/// `POST /networks/create`: bridge networks (and others with host namespaces allowed).
pub fn network_create(body: &mut Value, scope: &Scope<'_>) -> Result<(), Refusal> {
    let driver = body.get("Driver").and_then(Value::as_str).unwrap_or("");
    if !matches!(driver, "" | "bridge") && !scope.policy.allow_host_namespaces {
        return Err(scope.refuse(
            &format!("a network with the `{driver}` driver"),
            "allow_host_namespaces",
        ));
    }
    labelled(body, "Labels", scope);
    Ok(())
}

/// `POST /containers/{id}/exec`.
pub fn exec_create(body: &Value, scope: &Scope<'_>) -> Result<(), Refusal> {
    if body.get("Privileged").and_then(Value::as_bool) == Some(true)
        && !scope.policy.allow_privileged
    {
        return Err(scope.refuse("`docker exec --privileged`", "allow_privileged"));
    }
    Ok(())
}

/// `POST /containers/{id}/update`: a restart policy on a container with bind mounts.
pub fn container_update(body: &Value, has_binds: bool, scope: &Scope<'_>) -> Result<(), Refusal> {
    let restart = body
        .pointer("/RestartPolicy/Name")
        .and_then(Value::as_str)
        .unwrap_or("");
    if has_binds && !matches!(restart, "" | "no") {
        return Err(Refusal(format!(
            "corral: a restart policy is not allowed for a container with bind mounts on the Docker socket of runner `{}`",
            scope.runner
        )));
    }
    Ok(())
}

/// The query of `POST /build`: no host network, no cgroup parent; this runner's labels;
/// intermediate containers always removed. Returns the new query and the tags it writes.
pub fn build_query(
    query: &[(String, String)],
    scope: &Scope<'_>,
) -> Result<(Vec<(String, String)>, Refs), Refusal> {
    let mut refs = Refs::default();
    let mut out = Vec::new();
    let mut labels = Value::Null;
    for (key, value) in query {
        match key.as_str() {
            "networkmode" if value == "host" && !scope.policy.allow_host_namespaces => {
                return Err(scope.refuse("`docker build --network=host`", "allow_host_namespaces"));
            }
            "networkmode" if value.starts_with("container:") => {
                refs.containers
                    .push(value.trim_start_matches("container:").to_string());
                out.push((key.clone(), value.clone()));
            }
            "cgroupparent" if !value.is_empty() => {
                return Err(Refusal(format!(
                    "corral: `--cgroup-parent` is not allowed on the Docker socket of runner `{}`",
                    scope.runner
                )));
            }
            "labels" => labels = serde_json::from_str(value).unwrap_or(Value::Null),
            "rm" | "forcerm" => {}
            "t" => {
                refs.tags.push(value.clone());
                out.push((key.clone(), value.clone()));
            }
            _ => out.push((key.clone(), value.clone())),
        }
    }
    scope.label(&mut labels);
    // The classic builder adds one `LABEL` step (a container and a commit, ~1 s) per label;
    // images are kept by the runner's budget, not by job, so the runner's label suffices.
    if let Some(map) = labels.as_object_mut() {
        map.remove(JOB_LABEL);
        map.remove(JOB_NAME_LABEL);
    }
    out.push(("labels".into(), labels.to_string()));
    // A cancelled or failed build leaves no intermediate container behind.
    out.push(("rm".into(), "1".into()));
    out.push(("forcerm".into(), "1".into()));
    Ok((out, refs))
}

/// The `filters` query value with this runner's label added (both of the engine's forms:
/// `{"label": ["k=v"]}` and `{"label": {"k=v": true}}`).
pub fn with_runner_filter(filters: Option<&str>, runner: &str) -> String {
    let mut value: Value = filters
        .and_then(|f| serde_json::from_str(f).ok())
        .filter(Value::is_object)
        .unwrap_or_else(|| Value::Object(Map::new()));
    let wanted = format!("{RUNNER_LABEL}={runner}");
    match value.get_mut("label") {
        Some(Value::Array(list)) => list.push(Value::String(wanted)),
        Some(Value::Object(map)) => {
            map.insert(wanted, Value::Bool(true));
        }
        _ => value["label"] = Value::Array(vec![Value::String(wanted)]),
    }
    value.to_string()
}

/// The `corral.runner` label of an object's labels (`Config.Labels`, `Labels`).
pub fn owner_of(labels: Option<&Value>) -> Option<&str> {
    labels?.get(RUNNER_LABEL)?.as_str()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn policy() -> DockerPolicy {
        DockerPolicy {
            allow_privileged: false,
            allow_host_namespaces: false,
            allow_capabilities: false,
            allow_devices: false,
            allow_mounts: Vec::new(),
            image_budget: 0,
        }
    }

    fn scope(policy: &DockerPolicy) -> Scope<'_> {
        Scope {
            runner: "web-1",
            job: "42-7",
            job_name: Some("build"),
            policy,
        }
    }

    fn under_work(source: &str, _read_only: bool) -> Result<String, Refusal> {
        if source.starts_with("/w/") {
            Ok(format!("/real{source}"))
        } else {
            Err(Refusal(format!("outside: {source}")))
        }
    }

    fn create(body: Value, policy: &DockerPolicy) -> Result<(Value, Refs), Refusal> {
        let mut body = body;
        let refs = container_create(&mut body, &scope(policy), &under_work)?;
        Ok((body, refs))
    }

    #[test]
    fn labels_and_rewrites_a_plain_container() {
        let (body, refs) = create(
            json!({"Image": "img", "Labels": {"corral.runner": "other", "mine": "1"},
                   "HostConfig": {"Binds": ["/w/src:/src:ro", "cache:/cache"],
                                  "NetworkMode": "ci-net", "VolumesFrom": ["db:ro"]}}),
            &policy(),
        )
        .expect("allowed");
        assert_eq!(body["Labels"]["corral.runner"], "web-1");
        assert_eq!(body["Labels"]["corral.job"], "42-7");
        assert_eq!(body["Labels"]["corral.job.name"], "build");
        assert_eq!(body["Labels"]["mine"], "1");
        assert_eq!(body["HostConfig"]["Binds"][0], "/real/w/src:/src:ro");
        assert_eq!(refs.volumes, vec!["cache"]);
        assert_eq!(refs.networks, vec!["ci-net"]);
        assert_eq!(refs.containers, vec!["db"]);
        assert_eq!(refs.images, vec!["img"]);
    }

    #[test]
    fn refuses_what_the_policy_forbids() {
        let p = policy();
        for (host, needle) in [
            (json!({"Privileged": true}), "`--privileged`"),
            (json!({"PidMode": "host"}), "`--pid=host`"),
            (json!({"NetworkMode": "host"}), "`--network=host`"),
            (json!({"IpcMode": "host"}), "`--ipc=host`"),
            (json!({"CapAdd": ["SYS_ADMIN"]}), "`--cap-add`"),
            (
                json!({"Devices": [{"PathOnHost": "/dev/sda"}]}),
                "`--device`",
            ),
            (
                json!({"SecurityOpt": ["seccomp=unconfined"]}),
                "seccomp=unconfined",
            ),
            (json!({"Binds": ["/:/host"]}), "outside: /"),
            (
                json!({"Mounts": [{"Type": "bind", "Source": "/etc", "Target": "/e"}]}),
                "outside: /etc",
            ),
            (
                json!({"Mounts": [{"Type": "volume", "Source": "v", "Target": "/v",
                    "VolumeOptions": {"DriverConfig": {"Options": {"type": "none", "o": "bind", "device": "/"}}}}]}),
                "host path or device",
            ),
            (
                json!({"Binds": ["/w/x:/x"], "RestartPolicy": {"Name": "always"}}),
                "restart policy",
            ),
            (json!({"CgroupParent": "/"}), "--cgroup-parent"),
        ] {
            let err = create(json!({"Image": "i", "HostConfig": host}), &p)
                .expect_err(needle)
                .0;
            assert!(err.contains(needle), "{err} should name {needle}");
        }
        let err = create(
            json!({"Image": "i", "HostConfig": {"Privileged": true}}),
            &p,
        )
        .expect_err("privileged")
        .0;
        assert!(
            err.contains("runner `web-1`") && err.contains("docker.allow_privileged"),
            "{err}"
        );
    }

    #[test]
    fn allowances_open_each_switch() {
        let p = DockerPolicy {
            allow_privileged: true,
            allow_host_namespaces: true,
            allow_capabilities: true,
            allow_devices: true,
            ..policy()
        };
        create(
            json!({"Image": "i", "HostConfig": {"Privileged": true, "PidMode": "host",
                "NetworkMode": "host", "CapAdd": ["NET_ADMIN"], "Devices": [{}]}}),
            &p,
        )
        .expect("allowed by the policy");
    }

    #[test]
    fn volumes_networks_exec_and_builds() {
        let p = policy();
        let s = scope(&p);
        let mut tmpfs = json!({"Name": "t", "DriverOpts": {"type": "tmpfs", "device": "tmpfs"}});
        volume_create(&mut tmpfs, &s).expect("tmpfs is fine");
        assert_eq!(tmpfs["Labels"]["corral.runner"], "web-1");
        let mut host_dir =
            json!({"Name": "h", "DriverOpts": {"type": "none", "o": "bind", "device": "/"}});
        assert!(volume_create(&mut host_dir, &s).is_err());
        let mut macvlan = json!({"Name": "n", "Driver": "macvlan"});
        assert!(network_create(&mut macvlan, &s).is_err());
        let mut bridge = json!({"Name": "n"});
        network_create(&mut bridge, &s).expect("bridge");
        assert_eq!(bridge["Labels"]["corral.job"], "42-7");
        assert!(exec_create(&json!({"Privileged": true}), &s).is_err());
        exec_create(&json!({"Cmd": ["true"]}), &s).expect("plain exec");
        let query = vec![
            ("t".to_string(), "app:1".to_string()),
            ("labels".to_string(), r#"{"a":"b"}"#.to_string()),
            ("rm".to_string(), "0".to_string()),
        ];
        let (out, refs) = build_query(&query, &s).expect("build");
        assert_eq!(refs.tags, vec!["app:1"]);
        let labels = out
            .iter()
            .find(|(k, _)| k == "labels")
            .expect("labels")
            .1
            .clone();
        let labels: Value = serde_json::from_str(&labels).expect("json");
        assert_eq!(labels["a"], "b");
        assert_eq!(labels["corral.runner"], "web-1");
        assert!(
            labels.get("corral.job").is_none(),
            "one label step, not three"
        );
        assert!(out.contains(&("forcerm".into(), "1".into())));
        assert!(!out.contains(&("rm".into(), "0".into())));
        let host = vec![("networkmode".to_string(), "host".to_string())];
        assert!(build_query(&host, &s).is_err());
        let joined = vec![("networkmode".to_string(), "container:db".to_string())];
        let (_, refs) = build_query(&joined, &s).expect("checked as a ref");
        assert_eq!(refs.containers, vec!["db"]);
    }

    #[test]
    fn filters_gain_the_runner_label() {
        assert_eq!(
            with_runner_filter(None, "r"),
            r#"{"label":["corral.runner=r"]}"#
        );
        let list: Value =
            serde_json::from_str(&with_runner_filter(Some(r#"{"label":["a=b"]}"#), "r"))
                .expect("json");
        assert_eq!(list["label"], json!(["a=b", "corral.runner=r"]));
        let map: Value = serde_json::from_str(&with_runner_filter(
            Some(r#"{"label":{"a=b":true},"status":["exited"]}"#),
            "r",
        ))
        .expect("json");
        assert_eq!(map["label"]["corral.runner=r"], true);
        assert_eq!(map["status"], json!(["exited"]));
    }
}
