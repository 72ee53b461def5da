//! `examples/kubernetes/` as a cluster would take it: every manifest passes the Kubernetes
//! API schemas offline (`kubernetes-validate` from `PyPI`, which ships them, in `--strict` mode
//! so an unknown field fails), and by parsing: the `DaemonSet`'s grace period outlasts the
//! `ConfigMap`'s `shutdown_timeout`, the host id is the node's name, the token comes from a
//! Secret as a file, the config is a directory mount, and the `ConfigMap`'s `runners.yaml`
//! passes `corral check`. Without `kubernetes-validate` its test says `skipped` by name
//! (under CI it fails: `.ci/run` installs it).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_yaml::Value;

use crate::kit::cmd;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// A recent Kubernetes release whose schemas `kubernetes-validate` ships.
const KUBERNETES_VERSION: &str = "1.35.0";
/// Time past `shutdown_timeout` the pod needs to stop idle runners and deregister.
const STOP_MARGIN_SECS: u64 = 30;
/// Files in the directory that are not Kubernetes API objects.
const NOT_MANIFESTS: [&str; 1] = ["kustomization.yaml"];

fn dir() -> PathBuf {
    Path::new(ROOT).join("examples/kubernetes")
}

/// Every `*.yaml` in the directory but the kustomization, sorted.
fn manifests() -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir())
        .expect("examples/kubernetes")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .filter(|p| !NOT_MANIFESTS.iter().any(|n| p.ends_with(n)))
        .collect();
    found.sort();
    found
}

fn load(name: &str) -> Value {
    let text = std::fs::read_to_string(dir().join(name)).expect(name);
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn str_of<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what} is a string: {v:?}"))
}

/// The `DaemonSet`'s pod spec and its `corral` container.
fn pod() -> (Value, Value) {
    let ds = load("daemonset.yaml");
    assert_eq!(ds["kind"], "DaemonSet");
    let spec = ds["spec"]["template"]["spec"].clone();
    let container = spec["containers"]
        .as_sequence()
        .and_then(|c| c.iter().find(|c| c["name"] == "corral"))
        .expect("a container named corral")
        .clone();
    (spec, container)
}

/// Each `ConfigMap` variant's `runners.yaml`, written to a temp dir, by file name.
fn configmap_configs(tmp: &Path) -> Vec<(String, PathBuf)> {
    ["configmap.yaml", "configmap-git.yaml"]
        .into_iter()
        .map(|name| {
            let cm = load(name);
            assert_eq!(cm["kind"], "ConfigMap", "{name}");
            let text = str_of(&cm["data"]["runners.yaml"], "data.runners.yaml");
            let path = tmp.join(name.replace(".yaml", "")).join("runners.yaml");
            std::fs::create_dir_all(path.parent().expect("parent")).expect("dir");
            std::fs::write(&path, text).expect("write runners.yaml");
            (name.to_string(), path)
        })
        .collect()
}

#[test]
fn kubernetes_manifests_pass_the_api_schemas_offline() {
    if !crate::ship_unit::have(
        "kubernetes-validate",
        "kubernetes_manifests_pass_the_api_schemas_offline",
    ) {
        return;
    }
    let files = manifests();
    assert!(files.len() >= 4, "{files:?}");
    let out = Command::new("kubernetes-validate")
        .args(["--strict", "--kubernetes-version", KUBERNETES_VERSION])
        .args(&files)
        .output()
        .expect("kubernetes-validate");
    let (stdout, stderr) = cmd::texts(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    // A kind it has no schema for only warns: every file must have been checked for real.
    for file in &files {
        let name = file.display().to_string();
        assert!(
            stdout
                .lines()
                .any(|l| l.contains(&name) && l.contains("passed for resource")),
            "{name} was not validated against a schema:\n{stdout}{stderr}"
        );
    }
    assert!(!stdout.contains("WARN"), "{stdout}");
}

#[test]
fn kustomization_lists_the_manifests_that_exist() {
    let k = load("kustomization.yaml");
    assert_eq!(k["kind"], "Kustomization");
    let listed: Vec<&str> = k["resources"]
        .as_sequence()
        .expect("resources")
        .iter()
        .map(|r| str_of(r, "a resource"))
        .collect();
    for name in &listed {
        assert!(dir().join(name).is_file(), "{name} is listed but missing");
    }
    // Every manifest but the git variant (an alternative to configmap.yaml) is applied.
    for file in manifests() {
        let name = file
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        assert!(
            listed.contains(&name.as_str()) || name == "configmap-git.yaml",
            "{name} is not in kustomization.yaml"
        );
    }
}

#[test]
fn configmap_runners_yaml_passes_corral_check() {
    let tmp = tempfile::tempdir().expect("temp dir");
    for (name, path) in configmap_configs(tmp.path()) {
        let out = cmd::run(tmp.path(), &["check", &path.display().to_string()]);
        let (stdout, stderr) = cmd::texts(&out);
        assert_eq!(out.status.code(), Some(0), "{name}:\n{stdout}{stderr}");
    }
}

#[test]
fn grace_period_outlasts_shutdown_timeout_and_host_id_is_the_node() {
    let (spec, container) = pod();
    let grace = spec["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("terminationGracePeriodSeconds");
    let tmp = tempfile::tempdir().expect("temp dir");
    for (name, path) in configmap_configs(tmp.path()) {
        let desired =
            corral::config::load_on(&path, "node-a").unwrap_or_else(|e| panic!("{name}: {e}"));
        let timeout = desired.shutdown_timeout.as_secs();
        assert!(
            grace >= timeout + STOP_MARGIN_SECS,
            "{name}: terminationGracePeriodSeconds {grace} must exceed shutdown_timeout \
             {timeout}s by {STOP_MARGIN_SECS}s"
        );
    }
    let env = container["env"].as_sequence().expect("env");
    let host = env
        .iter()
        .find(|e| e["name"] == "CORRAL_HOST_ID")
        .expect("CORRAL_HOST_ID in the container's env");
    assert_eq!(
        host["valueFrom"]["fieldRef"]["fieldPath"], "spec.nodeName",
        "{host:?}"
    );
    // The node name reaches `hosts`: the example's entries run on the node they name.
    let (_, path) = &configmap_configs(tmp.path())[0];
    let desired = corral::config::load_on(path, "node-a").expect("configmap.yaml");
    let names: Vec<&String> = desired.runners.keys().collect();
    assert_eq!(names, ["build-a-1", "build-a-2"], "on node-a");
}

/// The volume named `name` in the pod spec.
fn volume<'a>(spec: &'a Value, name: &str) -> &'a Value {
    spec["volumes"]
        .as_sequence()
        .and_then(|v| v.iter().find(|v| v["name"] == name))
        .unwrap_or_else(|| panic!("volume {name}"))
}

/// The mount of the container whose `mountPath` holds `path`, and its volume.
fn mount_of<'a>(spec: &'a Value, container: &'a Value, path: &str) -> (&'a Value, &'a Value) {
    let mount = container["volumeMounts"]
        .as_sequence()
        .expect("volumeMounts")
        .iter()
        .find(|m| {
            Path::new(path).starts_with(str_of(&m["mountPath"], "mountPath"))
                && m["mountPath"] != "/"
        })
        .unwrap_or_else(|| panic!("no mount holds {path}"));
    (mount, volume(spec, str_of(&mount["name"], "mount name")))
}

#[test]
fn token_config_and_state_come_from_a_secret_a_configmap_dir_and_the_node() {
    let (spec, container) = pod();
    let tmp = tempfile::tempdir().expect("temp dir");
    let (_, path) = &configmap_configs(tmp.path())[0];
    let config: Value =
        serde_yaml::from_str(&std::fs::read_to_string(path).expect("runners.yaml")).expect("yaml");
    let token = str_of(&config["github"]["token_file"], "github.token_file");
    let (mount, vol) = mount_of(&spec, &container, token);
    assert!(vol["secret"]["secretName"].is_string(), "{vol:?}");
    assert_eq!(mount["readOnly"], true);
    // The config: the ConfigMap as a directory (a subPath mount never sees an update).
    let cfg_env = container["env"]
        .as_sequence()
        .and_then(|e| e.iter().find(|e| e["name"] == "CORRAL_CONFIG"))
        .expect("CORRAL_CONFIG");
    let cfg = str_of(&cfg_env["value"], "CORRAL_CONFIG");
    let (mount, vol) = mount_of(&spec, &container, cfg);
    assert_eq!(vol["configMap"]["name"], "corral-config");
    assert!(mount.get("subPath").is_none(), "{mount:?}");
    assert_eq!(
        Path::new(str_of(&mount["mountPath"], "mountPath")),
        Path::new(cfg).parent().expect("dir")
    );
    let args: Vec<&str> = container["args"]
        .as_sequence()
        .expect("args")
        .iter()
        .map(|a| str_of(a, "arg"))
        .collect();
    assert!(args.windows(2).any(|w| w == ["-c", cfg]), "{args:?}");
    // State on the node, where runners.yaml says.
    let state = str_of(&config["state_dir"], "state_dir");
    let (_, vol) = mount_of(&spec, &container, state);
    assert!(
        str_of(&vol["hostPath"]["path"], "hostPath.path").starts_with("/var/lib/corral"),
        "{vol:?}"
    );
    // No env literal that could be a secret, and no secret material in any file.
    for e in container["env"].as_sequence().expect("env") {
        let name = str_of(&e["name"], "env name").to_ascii_uppercase();
        if ["TOKEN", "SECRET", "PASSWORD", "KEY", "PAT"]
            .iter()
            .any(|w| name.contains(w))
        {
            assert!(e.get("value").is_none(), "a literal secret in env: {e:?}");
        }
    }
    for file in std::fs::read_dir(dir()).expect("dir").flatten() {
        let text = std::fs::read_to_string(file.path()).expect("text");
        for marker in ["ghp_", "github_pat_", "ghs_", "-----BEGIN", "kind: Secret"] {
            assert!(
                !text.contains(marker),
                "{}: `{marker}`",
                file.path().display()
            );
        }
    }
}

#[test]
fn pod_security_is_restricted_as_far_as_corral_runs() {
    let (spec, container) = pod();
    let sc = &container["securityContext"];
    assert_eq!(
        spec["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["privileged"], false);
    assert_eq!(sc["capabilities"]["drop"], Value::from(vec!["ALL"]));
    let added: Vec<&str> = sc["capabilities"]["add"]
        .as_sequence()
        .expect("capabilities.add")
        .iter()
        .map(|c| str_of(c, "capability"))
        .collect();
    let allowed = [
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "SETUID",
        "SETGID",
        "KILL",
    ];
    for cap in &added {
        assert!(allowed.contains(cap), "{cap} is not one corral needs");
    }
    assert_eq!(spec["automountServiceAccountToken"], false);
    for probe in ["livenessProbe", "readinessProbe"] {
        let command: Vec<&str> = container[probe]["exec"]["command"]
            .as_sequence()
            .unwrap_or_else(|| panic!("{probe}.exec.command"))
            .iter()
            .map(|c| str_of(c, "command"))
            .collect();
        assert!(
            command
                .iter()
                .any(|c| c.starts_with("http://127.0.0.1:9180/")),
            "{probe}: {command:?}"
        );
    }
    assert!(container["resources"]["limits"]["memory"].is_string());
}
