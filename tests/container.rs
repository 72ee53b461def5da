//! The container, for real (issue 18): the image built from the repository's Dockerfile on the
//! machine's engine, run with the shipped compose file and an override file each test writes
//! (tests/kit/container.rs; host networking, the fake GitHub on the host's loopback).
//! Skipped by name where no engine or compose tool answers; `.ci/run` fails in that case, so CI
//! always runs them.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::kit::compose::skip_without_compose;
use crate::kit::container::{
    assert_one_listener_each, base_config, text, yaml, Ctr, Spec, NAMES, WAIT,
};
use crate::kit::daemon::{World, REPO};
use crate::kit::docker::{docker, docker_ok, ensure_image, IMAGE};
use crate::kit::docker_image::{corral_image, corral_image_with};
use crate::kit::github::{JobSpec, JobStatus, RunnerStatus};
/// Test 1: the image builds from the Dockerfile; `check`, `plan` and the baked release work
/// on a mounted config; the runner's libraries are there.
#[test]
fn image_builds_and_checks_plans_a_mounted_config() {
    if skip_without_compose("container::image_builds_and_checks_plans_a_mounted_config") {
        return;
    }
    let image = corral_image();
    let world = World::new();
    let etc = world.dir.path().join("etc");
    fs::create_dir(&etc).expect("config dir");
    fs::write(etc.join("runners.yaml"), yaml(&base_config(&world, 9180))).expect("config");
    let mount = format!("{}:/etc/corral:ro", etc.display());
    let run = |args: &[&str]| {
        let mut all = vec!["run", "--rm", "-v", mount.as_str(), image.as_str()];
        all.extend_from_slice(args);
        docker(&all)
    };
    let out = run(&["check"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("/etc/corral/runners.yaml: ok, 2 runners"),
        "{}",
        text(&out)
    );
    let out = run(&["plan"]);
    let plan = text(&out);
    assert!(out.status.success(), "{plan}");
    assert!(plan.contains("ci-1") && plan.contains("ci-2"), "{plan}");
    // The release is baked into the image's state directory: nothing to fetch.
    assert!(!plan.contains("fetch first"), "{plan}");
    let out = run(&["base", "verify"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("2.336.0: ok"), "{}", text(&out));

    fs::write(
        etc.join("runners.yaml"),
        "state_dir: /var/lib/corral\nrunners:\n  - name: ../up\n    repo: o/r\n",
    )
    .expect("bad config");
    let out = run(&["check"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("/etc/corral/runners.yaml"),
        "{}",
        text(&out)
    );

    // What the official runner loads (reference/runner-contract.md §3).
    let out = docker(&["run", "--rm", "--entrypoint", "ldconfig", &image, "-p"]);
    let libs = text(&out);
    for lib in ["libicuuc", "libkrb5", "liblttng-ust", "libssl", "libz"] {
        assert!(libs.contains(lib), "{lib} missing from the image");
    }
    let size = docker_ok(&["image", "inspect", "-f", "{{.Size}}", &image]);
    eprintln!(
        "image {image}: {} MB on disk",
        size.trim().parse::<u64>().unwrap_or(0) >> 20
    );
}

/// Test 2: compose brings the runners online; tini is PID 1, corral root, listeners uid 1001.
#[test]
fn compose_brings_runners_online_under_tini_as_uid_1001() {
    if skip_without_compose("container::compose_brings_runners_online_under_tini_as_uid_1001") {
        return;
    }
    let started = Instant::now();
    let ctr = Ctr::up("online", Spec::new());
    ctr.wait_idle(&NAMES);
    eprintln!(
        "up to {} runners idle: {:.1?}",
        NAMES.len(),
        started.elapsed()
    );
    assert!(
        ctr.world.gh.wait_until(WAIT, |v| v
            .runners(REPO)
            .iter()
            .filter(|r| r.status == RunnerStatus::Online)
            .count()
            == 2),
        "both runners online on the fake"
    );
    let procs = ctr.procs();
    let init = procs.iter().find(|p| p.pid == 1).expect("PID 1");
    assert!(init.cmd.starts_with("/usr/bin/tini -- "), "{procs:#?}");
    let corral: Vec<_> = procs
        .iter()
        .filter(|p| p.cmd.starts_with("/usr/local/bin/corral run"))
        .collect();
    assert_eq!(corral.len(), 1, "{procs:#?}");
    assert_eq!(
        (corral[0].uid, corral[0].ppid),
        (0, 1),
        "corral: root, tini's child"
    );
    let listeners = ctr.listeners();
    assert_eq!(listeners.len(), 2, "{procs:#?}");
    assert!(listeners.iter().all(|p| p.uid == 1001), "{listeners:#?}");
}

/// Test 3: a save by rename converges within seconds; an invalid save keeps the last good
/// file in force and shows in `corral status` inside.
#[test]
fn a_renamed_save_converges_and_an_invalid_one_keeps_the_last_good() {
    if skip_without_compose(
        "container::a_renamed_save_converges_and_an_invalid_one_keeps_the_last_good",
    ) {
        return;
    }
    let ctr = Ctr::up("edit", Spec::new());
    ctr.wait_idle(&NAMES);
    let mut config = base_config(&ctr.world, ctr.port);
    config["runners"][0]["count"] = 3.into();
    let saved = Instant::now();
    ctr.save(&yaml(&config));
    let status = ctr.wait_idle(&["ci-1", "ci-2", "ci-3"]);
    eprintln!("save to ci-3 idle: {:.1?}", saved.elapsed());
    let pids: Vec<_> = status
        .runners
        .iter()
        .map(|r| (r.name.clone(), r.pid))
        .collect();
    let ids = ctr.registrations();

    config["runners"][0]["count"] = "three".into();
    ctr.save(&yaml(&config));
    let mut last = None;
    ctr.wait("the config error in corral status", || {
        last = ctr.status();
        last.as_ref().is_some_and(|s| s.config_error.is_some())
    });
    let status = last.expect("status");
    let error = status.config_error.clone().expect("config error");
    assert!(error.contains("count"), "{error}");
    let table = ctr.exec(&["corral", "status"]);
    assert!(
        text(&table).contains("config error (last good config still in force)"),
        "{}",
        text(&table)
    );
    let now: Vec<_> = status
        .runners
        .iter()
        .map(|r| (r.name.clone(), r.pid))
        .collect();
    assert_eq!(now, pids, "no runner touched by the invalid save");
    assert_eq!(ctr.registrations(), ids);
    assert_eq!(ctr.listeners().len(), 3);
}

/// Test 4: `compose stop` while a job runs: the job succeeds, corral exits 0 within the
/// grace; `up` again reuses every registration and downloads nothing.
#[test]
fn compose_stop_lets_the_job_finish_and_up_reuses_the_registrations() {
    if skip_without_compose(
        "container::compose_stop_lets_the_job_finish_and_up_reuses_the_registrations",
    ) {
        return;
    }
    let ctr = Ctr::up("stop", Spec::new());
    ctr.wait_idle(&NAMES);
    let ids = ctr.registrations();
    let container = ctr.id();
    let job = ctr.world.gh.queue_job(
        REPO,
        &["docker-host"],
        JobSpec {
            duration: Duration::from_secs(6),
            ..JobSpec::default()
        },
    );
    assert!(ctr.world.gh.wait_until(WAIT, |v| v
        .job(job)
        .is_some_and(|j| j.status == JobStatus::InProgress)));
    // No `-t`: the shipped stop_grace_period applies (11m; corral must be done long before).
    let stopping = Instant::now();
    let out = ctr.project.run_within(&["stop"], Duration::from_secs(300));
    assert!(out.status.success(), "{}", text(&out));
    eprintln!(
        "compose stop with a busy runner: {:.1?}",
        stopping.elapsed()
    );
    assert_eq!(ctr.inspect("{{.State.ExitCode}}"), "0", "{}", ctr.logs());
    let done = ctr.world.gh.job(job).expect("job");
    assert_eq!(
        (done.status, done.conclusion.as_deref()),
        (JobStatus::Completed, Some("success")),
        "{}",
        ctr.logs()
    );

    ctr.project.ok(&["up", "-d", "--no-build"]);
    assert_eq!(ctr.id(), container, "the same container started again");
    ctr.wait_idle(&NAMES);
    assert_eq!(ctr.registrations(), ids, "none leaked, none duplicated");
    assert_eq!(ctr.world.gh.download_count(), 0, "nothing downloaded");
    assert_eq!(ctr.listeners().len(), 2);
}

/// Test 5: `docker kill`, then `up`: every runner back with its registration, one listener each.
#[test]
fn docker_kill_then_up_brings_each_runner_back_once() {
    if skip_without_compose("container::docker_kill_then_up_brings_each_runner_back_once") {
        return;
    }
    let ctr = Ctr::up("kill", Spec::new());
    ctr.wait_idle(&NAMES);
    let ids = ctr.registrations();
    docker_ok(&["kill", &ctr.id()]);
    assert_eq!(ctr.inspect("{{.State.Running}}"), "false");
    ctr.project.ok(&["up", "-d", "--no-build"]);
    ctr.wait_idle(&NAMES);
    // Give a duplicate listener time to show up before counting.
    ctr.wait("fake runners online", || {
        ctr.world
            .gh
            .runners(REPO)
            .iter()
            .all(|r| r.status == RunnerStatus::Online)
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(ctr.registrations(), ids, "the same registrations");
    let listeners = ctr.listeners();
    assert_one_listener_each(&listeners, &NAMES);
}

/// Test 6: a new named volume is seeded with the baked release; a bind-mounted state
/// directory downloads and verifies it at start.
#[test]
fn a_new_volume_is_seeded_and_a_bind_mount_downloads() {
    if skip_without_compose("container::a_new_volume_is_seeded_and_a_bind_mount_downloads") {
        return;
    }
    let ctr = Ctr::up("seed", Spec::new());
    ctr.wait_idle(&NAMES);
    assert_eq!(
        ctr.world.gh.download_count(),
        0,
        "the seeded release is used"
    );
    let out = ctr.exec(&["corral", "base", "verify"]);
    assert!(text(&out).contains("2.336.0: ok"), "{}", text(&out));
    drop(ctr);

    let dir = tempfile::tempdir().expect("temp dir");
    let state = dir.path().join("state");
    fs::create_dir(&state).expect("state dir");
    let ctr = Ctr::up(
        "bind",
        Spec::new().service(&format!("      - {}:/var/lib/corral\n", state.display())),
    );
    ctr.wait_idle(&NAMES);
    assert_eq!(ctr.world.gh.download_count(), 1, "downloaded at start");
    assert!(state.join("bases/2.336.0/bin/Runner.Listener").is_file());
    let out = ctr.exec(&["corral", "base", "verify"]);
    assert!(text(&out).contains("2.336.0: ok"), "{}", text(&out));
}

/// Test 7: the image's HEALTHCHECK turns the container healthy.
#[test]
fn healthcheck_turns_the_container_healthy() {
    if skip_without_compose("container::healthcheck_turns_the_container_healthy") {
        return;
    }
    // Only the interval changes (30 s in the image); the check itself is the image's.
    let ctr = Ctr::up(
        "health",
        Spec::new().service("    healthcheck:\n      interval: 1s\n"),
    );
    let test = ctr.inspect("{{json .Config.Healthcheck.Test}}");
    assert!(test.contains("CORRAL_HEALTH_URL"), "{test}");
    ctr.wait("healthy", || {
        ctr.inspect("{{.State.Health.Status}}") == "healthy"
    });
    let last = ctr.inspect("{{with index .State.Health.Log 0}}{{.ExitCode}}{{end}}");
    assert_eq!(last, "0");
}

/// Test 8: jobs that leave a zombie and an orphan: tini reaps them; nothing accumulates.
#[test]
fn tini_reaps_what_20_jobs_leave_behind() {
    if skip_without_compose("container::tini_reaps_what_20_jobs_leave_behind") {
        return;
    }
    let ctr = Ctr::up("reap", Spec::new());
    ctr.wait_idle(&NAMES);
    let baseline = ctr.procs().len();
    // The step's shell ends at once, leaving `sleep 1` behind (an orphan, reparented to PID
    // 1) with an unwaited child that exits first (a zombie until `sleep 1` ends, then
    // reparented too). The job lasts longer than both, so nothing of corral's end-of-job
    // cleanup kills them: tini must reap them.
    let script = "sh -c 'sleep 0.2 & exec sleep 1' & true";
    let jobs: Vec<u64> = (0..20)
        .map(|_| {
            ctr.world.gh.queue_job_with_steps(
                REPO,
                &["docker-host"],
                JobSpec {
                    duration: Duration::from_millis(1600),
                    ..JobSpec::default()
                },
                vec![serde_json::json!({ "run": script, "name": "leave" })],
            )
        })
        .collect();
    let (mut orphans, mut zombies) = (0, 0);
    ctr.wait("20 jobs done", || {
        let procs = ctr.procs();
        orphans += procs
            .iter()
            .filter(|p| p.ppid == 1 && p.cmd == "sleep 1")
            .count();
        zombies += procs.iter().filter(|p| p.state == 'Z').count();
        jobs.iter().all(|j| {
            ctr.world
                .gh
                .job(*j)
                .is_some_and(|j| j.status == JobStatus::Completed)
        })
    });
    eprintln!("seen: {orphans} orphans under tini, {zombies} zombies");
    assert!(orphans > 0, "the jobs left orphans under PID 1");
    assert!(zombies > 0, "the jobs left zombies");
    for job in &jobs {
        let job = ctr.world.gh.job(*job).expect("job");
        assert_eq!(job.conclusion.as_deref(), Some("success"));
    }
    let mut last = Vec::new();
    ctr.wait("no zombie, nothing left", || {
        last = ctr.procs();
        last.iter().all(|p| p.state != 'Z') && last.len() == baseline
    });
}

/// The override's mounts for Docker in jobs: the engine's socket, and a Docker CLI (a
/// derived image would install one; the host's static CLI stands in for it).
fn docker_mounts() -> String {
    format!(
        "      - /var/run/docker.sock:/var/run/docker.sock\n      - {}:/usr/local/bin/docker:ro\n",
        which("docker").display()
    )
}

/// A job whose step runs `docker run --rm IMAGE true`; its conclusion.
fn docker_job(ctr: &Ctr) -> Option<String> {
    let script = format!("docker run --rm {IMAGE} true && echo container-ran");
    let job = ctr.world.gh.queue_job_with_steps(
        REPO,
        &["docker-host"],
        JobSpec::default(),
        vec![serde_json::json!({ "run": script, "name": "docker" })],
    );
    ctr.wait("the docker job done", || {
        ctr.world
            .gh
            .job(job)
            .is_some_and(|j| j.status == JobStatus::Completed)
    });
    ctr.world.gh.job(job).and_then(|j| j.conclusion)
}

/// Test 9: Docker for jobs, as the README says: the socket mounted and `RUNNER_GID` set, a
/// job runs `docker run --rm`; without `RUNNER_GID` the engine refuses the runner's user.
#[test]
fn jobs_use_the_mounted_socket_only_with_runner_gid() {
    if skip_without_compose("container::jobs_use_the_mounted_socket_only_with_runner_gid") {
        return;
    }
    ensure_image();
    let gid = fs::metadata("/var/run/docker.sock")
        .expect("the engine's socket")
        .gid()
        .to_string();
    let ctr = Ctr::up(
        "sock",
        Spec {
            image: corral_image_with(&[("RUNNER_GID", &gid)]),
            ..Spec::new().service(&docker_mounts())
        },
    );
    ctr.wait_idle(&NAMES);
    assert_eq!(
        docker_job(&ctr).as_deref(),
        Some("success"),
        "{}",
        ctr.worker_logs()
    );
    assert!(ctr.worker_logs().contains("container-ran"));
    drop(ctr);

    let ctr = Ctr::up("nosock", Spec::new().service(&docker_mounts()));
    ctr.wait_idle(&NAMES);
    assert_eq!(docker_job(&ctr).as_deref(), Some("failure"));
    let logs = ctr.worker_logs();
    assert!(logs.contains("permission denied"), "{logs}");
    assert!(!logs.contains("container-ran"), "{logs}");
}

/// Docker for jobs the other way the README gives for the container: `docker: { enabled:
/// true }` with the engine's socket mounted and no `RUNNER_GID`; corral, root in the
/// container, serves each runner a socket of its own.
#[test]
fn a_runner_socket_of_its_own_works_inside_the_container() {
    if skip_without_compose("container::a_runner_socket_of_its_own_works_inside_the_container") {
        return;
    }
    ensure_image();
    let ctr = Ctr::up(
        "ownsock",
        Spec::new().service(&docker_mounts()).edit(|c| {
            c["defaults"]["docker"] = serde_yaml::from_str("{enabled: true}").expect("YAML");
        }),
    );
    ctr.wait_idle(&NAMES);
    assert_eq!(
        docker_job(&ctr).as_deref(),
        Some("success"),
        "{}",
        ctr.worker_logs()
    );
    let logs = ctr.worker_logs();
    assert!(logs.contains("container-ran"), "{logs}");
}

fn which(program: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(program))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| panic!("{program} is not on PATH"))
}
