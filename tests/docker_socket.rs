//! A runner's own Docker socket, through the real binary and the real engine: jobs (the
//! fake Worker's `run` steps, as the runner's user) use `docker` through `DOCKER_HOST` as a
//! workflow would. Skipped by name where no engine answers.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::{json, Value};

use crate::kit::daemon::{runner, World, REPO};
use crate::kit::docker::{
    docker, docker_ok, ensure_image, labelled, skip_without_engine, Cleanup, IMAGE,
};
use crate::kit::github::{JobSpec, JobStatus};
use crate::kit::proc::TIMEOUT;
use crate::provision::diag_text;

/// Polls `cond` every 200 ms until it holds or `timeout` passes; true when it held.
fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A runner entry with a Docker socket; its own user when the tests run as root, so the
/// socket's permissions are tested too.
fn entry(name: &str, docker: &str) -> String {
    let user = if is_root() {
        "    allow_root: false\n    isolation: user-per-runner\n"
    } else {
        ""
    };
    format!(
        "  - name: {name}\n    repo: {REPO}\n    labels: [{name}]\n{user}    docker: {docker}\n"
    )
}

/// A started corral with `entries`, its runners idle.
fn world_with(entries: &str, names: &[&str], shutdown: &str) -> World {
    let mut world = World::new();
    // Runners of their own users pass through the test's directory to their roots.
    std::fs::set_permissions(world.dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let text = world
        .config_text(entries)
        .replace(
            "shutdown_timeout: 20s",
            &format!("shutdown_timeout: {shutdown}"),
        )
        .replace(
            "github:\n",
            &format!("api:\n  listen: \"127.0.0.1:{port}\"\ngithub:\n"),
        );
    std::fs::write(world.dir.path().join("api-port"), port.to_string()).expect("write port");
    std::fs::write(world.config(), text).expect("write config");
    world.start();
    world.wait_idle(names);
    world
}

/// A job of `duration` for runner `name` running `scripts` as `run` steps.
fn queue(world: &World, name: &str, scripts: &[String], duration: Duration) -> u64 {
    // Each step is named by its script, so its outcome and output are found by the script.
    let steps: Vec<Value> = scripts
        .iter()
        .map(|s| json!({ "run": s, "name": s }))
        .collect();
    world.gh.queue_job_with_steps(
        REPO,
        &[name],
        JobSpec {
            duration,
            ..JobSpec::default()
        },
        steps,
    )
}

fn wait_done(world: &World, job: u64) -> String {
    assert!(
        world.gh.wait_until(Duration::from_secs(120), |v| v
            .job(job)
            .is_some_and(|j| j.status == JobStatus::Completed)),
        "job {job} did not complete"
    );
    world
        .gh
        .job(job)
        .and_then(|j| j.conclusion)
        .unwrap_or_default()
}

fn worker_log(world: &World, name: &str) -> String {
    diag_text(&world.runner_dir(name).join("_diag"), "Worker_")
}

/// The outcome of the `run` step `script` in the Worker log: `ok` or `error: …`.
fn outcome<'a>(log: &'a str, script: &str) -> &'a str {
    let prefix = format!("step run {script}: ");
    log.lines()
        .find_map(|l| l.split_once(&prefix).map(|(_, rest)| rest))
        .unwrap_or_else(|| panic!("no `{prefix}` line in the Worker log:\n{log}"))
}

/// Whether a `run` step printed the line `text` (the kit logs it as `out <step>: <text>`).
fn printed(log: &str, text: &str) -> bool {
    log.lines()
        .any(|l| l.contains("] out ") && l.ends_with(&format!(": {text}")))
}

fn nothing_labelled(runner: &str) -> bool {
    ["container", "network", "volume"]
        .iter()
        .all(|kind| labelled(kind, runner).is_empty())
}

fn socket(world: &World, name: &str) -> String {
    world
        .state()
        .join("docker")
        .join(format!("{name}.sock"))
        .display()
        .to_string()
}

#[test]
fn a_job_runs_docker_run_build_compose_and_a_container_job() {
    if skip_without_engine("docker_socket::a_job_runs_docker_run_build_compose_and_a_container_job")
    {
        return;
    }
    ensure_image();
    let _cleanup = Cleanup {
        runners: vec!["dks-run".into()],
        prefix: "t23a".into(),
    };
    let mut world = world_with(&entry("dks-run", "{ enabled: true }"), &["dks-run"], "20s");
    let work = world.runner_dir("dks-run").join("_work");
    let w = work.display();
    let compose = format!(
        "services:\\n  web:\\n    image: {IMAGE}\\n    command: sleep 300\\n    volumes: [data:/data]\\nvolumes:\\n  data: {{}}\\n"
    );
    let scripts = vec![
        format!("docker run --rm {IMAGE} echo hello-from-a-container"),
        format!("echo piped-through-stdin | docker run -i --rm {IMAGE} cat"),
        format!("mkdir -p {w}/ctx && printf 'FROM {IMAGE}\\nRUN echo built > /built\\n' > {w}/ctx/Dockerfile && DOCKER_BUILDKIT=0 docker build -t t23a-img:1 {w}/ctx"),
        format!("docker run --rm -v {w}/ctx:/ctx t23a-img:1 cat /built /ctx/Dockerfile"),
        format!("mkdir -p {w}/compose && printf '{compose}' > {w}/compose/docker-compose.yml && cd {w}/compose && docker-compose -p t23a up -d && docker-compose -p t23a ps"),
        // The runner's own container-job commands: a network, the job container (with the
        // engine's socket, as the runner mounts it), a service container, exec.
        "docker network create t23a-net".to_string(),
        format!("docker create --name t23a-job --network t23a-net -v {w}:/__w -v /var/run/docker.sock:/var/run/docker.sock {IMAGE} sleep 300 && docker start t23a-job"),
        format!("docker run -d --name t23a-svc --network t23a-net {IMAGE} sh -c 'echo service-up; sleep 300'"),
        "docker exec t23a-job sh -c 'echo inside-the-job-container; ls /__w'".to_string(),
        "sleep 1; docker logs t23a-svc".to_string(),
    ];
    let job = queue(&world, "dks-run", &scripts, Duration::from_secs(4));
    // While the job runs, what it made carries the runner's label.
    assert!(
        eventually(TIMEOUT * 2, || labelled("container", "dks-run").len() >= 3),
        "the job's containers are labelled with its runner: {:?}",
        docker_ok(&["ps", "-a", "--format", "{{.Names}} {{.Labels}}"])
    );
    assert_eq!(
        wait_done(&world, job),
        "success",
        "{}",
        worker_log(&world, "dks-run")
    );
    let log = worker_log(&world, "dks-run");
    for script in &scripts {
        assert_eq!(outcome(&log, script), "ok", "{script}\n{log}");
    }
    assert!(
        log.contains("Successfully tagged t23a-img:1"),
        "the build's tag in the Worker log:\n{log}"
    );
    for text in [
        "hello-from-a-container",
        "piped-through-stdin",
        "built",
        "inside-the-job-container",
        "service-up",
    ] {
        assert!(
            printed(&log, text),
            "`{text}` printed in the Worker log:\n{log}"
        );
    }
    // After the job nothing labelled with it is left; the built image stays (the budget).
    assert!(
        eventually(TIMEOUT, || nothing_labelled("dks-run")),
        "left after the job: {:?}",
        docker_ok(&["ps", "-a", "--format", "{{.Names}} {{.Labels}}"])
    );
    assert!(docker(&["image", "inspect", "t23a-img:1"]).status.success());
    let status = world.wait_status("reaped counts in status", |s| {
        runner(s, "dks-run")
            .and_then(|r| r.docker.as_ref())
            .is_some_and(|d| {
                d.reaped_containers >= 3 && d.reaped_networks >= 2 && d.reaped_volumes >= 1
            })
    });
    let docker_status = runner(&status, "dks-run")
        .and_then(|r| r.docker.clone())
        .expect("docker");
    assert_eq!(docker_status.socket, socket(&world, "dks-run"));
    let port = std::fs::read_to_string(world.dir.path().join("api-port")).expect("port");
    let metrics = reqwest::blocking::Client::new()
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .timeout(Duration::from_secs(10))
        .send()
        .and_then(reqwest::blocking::Response::text)
        .expect("GET /metrics");
    let reaped = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(r#"corral_docker_reaped_total{runner="dks-run",kind="container"} "#)
        })
        .and_then(|n| n.parse::<u64>().ok());
    assert!(reaped.is_some_and(|n| n >= 3), "{metrics}");
    world.signal(Signal::SIGTERM);
    assert_eq!(world.corral().exit_code(), 0);
}

#[test]
fn another_runner_cannot_see_or_stop_its_containers() {
    if skip_without_engine("docker_socket::another_runner_cannot_see_or_stop_its_containers") {
        return;
    }
    ensure_image();
    let _cleanup = Cleanup {
        runners: vec!["dks-a".into(), "dks-b".into()],
        prefix: "t23b".into(),
    };
    let entries = format!(
        "{}{}",
        entry("dks-a", "{ enabled: true }"),
        entry("dks-b", "{ enabled: true }")
    );
    let world = world_with(&entries, &["dks-a", "dks-b"], "2s");
    let a_job = queue(
        &world,
        "dks-a",
        &[format!("docker run -d --name t23b-a {IMAGE} sleep 300")],
        Duration::from_secs(60),
    );
    assert!(
        eventually(TIMEOUT * 2, || labelled("container", "dks-a").len() == 1),
        "runner A's container runs"
    );
    let b_socket_from_a = format!("DOCKER_HOST=unix://{} docker ps", socket(&world, "dks-b"));
    let attempts = vec![
        "docker ps -a --format '{{.Names}}' | grep -c t23b-a; true".to_string(),
        "docker inspect t23b-a".to_string(),
        "docker kill t23b-a".to_string(),
        "docker logs t23b-a".to_string(),
        "docker exec t23b-a true".to_string(),
        format!("docker run --rm --volumes-from t23b-a {IMAGE} true"),
        // `rm -f` takes "No such container" for success: what counts is that A's still runs.
        "docker rm -f t23b-a".to_string(),
    ];
    let b_job = queue(&world, "dks-b", &attempts, Duration::from_millis(100));
    wait_done(&world, b_job);
    let log = worker_log(&world, "dks-b");
    assert!(
        printed(&log, "0"),
        "B's `docker ps` lists nothing of A's:\n{log}"
    );
    for script in &attempts[1..attempts.len() - 1] {
        let line = outcome(&log, script);
        assert!(
            line.starts_with("error"),
            "B may not `{script}`: {line}\n{log}"
        );
    }
    assert!(log.contains("No such container: t23b-a"), "{log}");
    let state = docker_ok(&["inspect", "--format", "{{.State.Running}}", "t23b-a"]);
    assert_eq!(state.trim(), "true", "A's container still runs");
    world.gh.cancel_job(a_job);
    wait_done(&world, a_job);
    assert!(
        eventually(TIMEOUT, || labelled("container", "dks-a").is_empty()),
        "A's container is reaped when its job ends"
    );
    if is_root() {
        // Each socket is its runner's user's alone: A's jobs cannot open B's.
        let probe = queue(
            &world,
            "dks-a",
            std::slice::from_ref(&b_socket_from_a),
            Duration::ZERO,
        );
        wait_done(&world, probe);
        let log = worker_log(&world, "dks-a");
        let line = outcome(&log, &b_socket_from_a);
        assert!(
            line.starts_with("error"),
            "A's job opened B's socket: {log}"
        );
        assert!(log.contains("permission denied"), "{log}");
    }
}

#[test]
fn privileged_host_mounts_and_host_pid_are_refused() {
    if skip_without_engine("docker_socket::privileged_host_mounts_and_host_pid_are_refused") {
        return;
    }
    ensure_image();
    let _cleanup = Cleanup {
        runners: vec!["dks-pol".into()],
        prefix: "t23c".into(),
    };
    let world = world_with(&entry("dks-pol", "{ enabled: true }"), &["dks-pol"], "2s");
    let work = world.runner_dir("dks-pol").join("_work");
    let w = work.display();
    let refused = [
        (format!("docker run --rm --privileged {IMAGE} true"), "`--privileged` is not allowed on the Docker socket of runner `dks-pol` (set `docker.allow_privileged: true`"),
        (format!("docker run --rm -v /:/host {IMAGE} true"), "bind mounts from `/` are not allowed on the Docker socket of runner `dks-pol`"),
        (format!("docker run --rm --pid=host {IMAGE} true"), "`--pid=host` is not allowed"),
        (format!("ln -sfn / {w}/escape && docker run --rm -v {w}/escape:/host {IMAGE} true"), "are not allowed on the Docker socket"),
        (format!("docker run --rm --cap-add SYS_ADMIN {IMAGE} true"), "`--cap-add` is not allowed"),
        ("docker volume create --opt type=none --opt o=bind --opt device=/ t23c-vol".to_string(), "backed by a host path"),
    ];
    let scripts: Vec<String> = refused.iter().map(|(s, _)| s.clone()).collect();
    let job = queue(&world, "dks-pol", &scripts, Duration::from_millis(100));
    assert_eq!(wait_done(&world, job), "failure");
    let log = worker_log(&world, "dks-pol");
    for (script, message) in &refused {
        assert!(
            outcome(&log, script).starts_with("error"),
            "{script} was refused"
        );
        assert!(
            log.contains(&format!("Error response from daemon: corral: {message}"))
                || log.contains(message),
            "the docker CLI prints `{message}`:\n{log}"
        );
    }
    assert!(nothing_labelled("dks-pol"));
}

#[test]
fn a_job_killed_mid_build_leaves_nothing_after_the_runner_is_stopped() {
    if skip_without_engine(
        "docker_socket::a_job_killed_mid_build_leaves_nothing_after_the_runner_is_stopped",
    ) {
        return;
    }
    ensure_image();
    let _cleanup = Cleanup {
        runners: vec!["dks-kill".into()],
        prefix: "t23d".into(),
    };
    let mut world = world_with(
        &entry("dks-kill", "{ enabled: true, image_budget: 0 }"),
        &["dks-kill"],
        "1s",
    );
    let w = world.runner_dir("dks-kill").join("_work");
    let w = w.display();
    let scripts = vec![
        format!("docker run -d --name t23d-side {IMAGE} sleep 300 && docker network create t23d-net && docker volume create t23d-vol"),
        format!("mkdir -p {w}/slow && printf 'FROM {IMAGE}\\nRUN echo t23d-one > /one\\nRUN sleep 123\\n' > {w}/slow/Dockerfile && DOCKER_BUILDKIT=0 docker build -t t23d-img:1 {w}/slow"),
    ];
    let job = queue(&world, "dks-kill", &scripts, Duration::from_secs(1));
    let building = || {
        String::from_utf8_lossy(&docker(&["ps", "--no-trunc", "--format", "{{.Command}}"]).stdout)
            .contains("sleep 123")
    };
    assert!(
        eventually(TIMEOUT * 3, building),
        "the build reached `RUN sleep 123`"
    );
    assert!(!labelled("container", "dks-kill").is_empty());
    let _ = job;
    world.signal(Signal::SIGTERM);
    assert_eq!(world.corral().exit_code(), 0, "corral stopped");
    let started = Instant::now();
    assert!(
        eventually(Duration::from_secs(60), || nothing_labelled("dks-kill")
            && !building()),
        "left after the runner stopped: {}",
        docker_ok(&[
            "ps",
            "-a",
            "--no-trunc",
            "--format",
            "{{.Names}} {{.Command}} {{.Labels}}"
        ])
    );
    // The build's finished step (`echo t23d-one`) left no dangling image either.
    let dangling = docker_ok(&["images", "-q", "--no-trunc", "--filter", "dangling=true"]);
    for id in dangling.lines() {
        let cmd = docker_ok(&[
            "image",
            "inspect",
            "--format",
            "{{json .ContainerConfig.Cmd}}",
            id,
        ]);
        assert!(
            !cmd.contains("t23d-one"),
            "a step image of the killed build is left: {id}"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[test]
fn docker_settings_are_checked_and_documented_in_errors() {
    let text = "base:\n  path: ./base\nrunners:\n  - name: a\n    repo: o/r\n    docker: { enabled: true, image_budget: lots }\n";
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("runners.yaml");
    std::fs::write(&path, text).expect("write");
    let errors = corral::config::load(&path).expect_err("a bad budget");
    let message = errors.to_string();
    assert!(
        message.contains("runners[0].docker.image_budget")
            && message.contains("`lots` is not a size"),
        "{message}"
    );
}
