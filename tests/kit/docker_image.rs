//! The corral image for container tests, built from the repository's Dockerfile once per test
//! run and kept between runs under a tag naming a hash of everything the build reads.
//!
//! - The base images the Dockerfile's `FROM` lines name come from `docker/make-images.sh`
//!   (no registry answers), run here when the engine lacks one.
//! - The runner release is baked from the kit's fake release server: the build gets
//!   `RUNNER_DOWNLOAD_URL` (the fake's template) and `RUNNER_SHA256`, as a mirror user would,
//!   and runs with the host's network so that its `RUN` steps reach the fake on the host's
//!   loopback. Nothing else of the build leaves the machine but cargo's crates.io requests.
//! - Tag: `<prefix>corral:<hash>` with `CORRAL_TEST_DOCKER_PREFIX` set (a developer sharing
//!   an engine, e.g. `h18-`), else `corral-test/corral:<hash>` (CI). A new build removes the
//!   repository's other tags that no container uses.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::kit::docker::{docker, docker_ok};
use crate::kit::github::FakeGitHub;
use crate::kit::install::FakeRunnerInstall;
use crate::kit::tarball::{sha256_hex, tar_gz_of_dir};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The runner release the image bakes: `base.version` of docker/config/runners.yaml and the
/// Dockerfile's `RUNNER_VERSION` default (tests/ship.rs keeps the two equal).
pub const RELEASE: &str = "2.336.0";

/// What the Dockerfile's build reads from the repository (its `COPY` sources and context).
const INPUTS: [&str; 7] = [
    "Dockerfile",
    ".dockerignore",
    "Cargo.toml",
    "Cargo.lock",
    "src",
    "docker/bake-runner.sh",
    "docker/config",
];

/// The prefix of every Docker object a test names: `CORRAL_TEST_DOCKER_PREFIX`, else
/// `corral-test-`.
pub fn prefix() -> String {
    std::env::var("CORRAL_TEST_DOCKER_PREFIX")
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "corral-test-".into())
}

/// The image repository of the test builds.
fn repository() -> String {
    match std::env::var("CORRAL_TEST_DOCKER_PREFIX") {
        Ok(p) if !p.is_empty() => format!("{p}corral"),
        _ => "corral-test/corral".into(),
    }
}

/// The fake runner release (the kit's fake install, quick polls) as a `.tar.gz`; the same
/// bytes every run, so the image's tag stays the same while the fake runner does.
pub fn release_tarball() -> &'static [u8] {
    static TARBALL: OnceLock<Vec<u8>> = OnceLock::new();
    TARBALL.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let tree = FakeRunnerInstall::new()
            .version(RELEASE)
            .poll_wait_secs(1)
            .session_conflict_retry_secs(1)
            .build(&dir.path().join("runner"))
            .expect("fake release tree");
        tar_gz_of_dir(&tree).expect("tarball")
    })
}

/// Publishes [`release_tarball`] as [`RELEASE`] on `gh`, with its digest.
pub fn publish_release(gh: &FakeGitHub) {
    let bytes = release_tarball().to_vec();
    let digest = format!("sha256:{}", sha256_hex(&bytes));
    gh.add_runner_release(RELEASE, bytes, Some(digest));
}

/// The default build (`RUNNER_GID` left alone): its tag.
pub fn corral_image() -> String {
    corral_image_with(&[])
}

/// The build with `args` (`--build-arg` pairs besides the release's): its tag. Builds run
/// one at a time; each set of arguments is built at most once per test run.
pub fn corral_image_with(args: &[(&str, &str)]) -> String {
    static BUILT: OnceLock<Mutex<HashMap<String, String>>> = OnceLock::new();
    let key = format!("{args:?}");
    let mut built = BUILT
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(tag) = built.get(&key) {
        return tag.clone();
    }
    ensure_base_images();
    let sha = sha256_hex(release_tarball());
    let hash = inputs_hash(&sha);
    let tag = if args.is_empty() {
        format!("{}:{hash}", repository())
    } else {
        let digest = sha256_hex(format!("{args:?}").as_bytes());
        format!("{}:{hash}-{}", repository(), &digest[..8])
    };
    if !docker(&["image", "inspect", &tag]).status.success() {
        build(&tag, &sha, args);
    }
    built.insert(key, tag.clone());
    drop(built);
    remove_stale_tags(&hash);
    tag
}

/// Runs `docker/make-images.sh` unless the engine has every base image.
pub fn ensure_base_images() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let have = ["debian:bookworm-slim", "rust:1-bookworm"]
            .iter()
            .all(|i| docker(&["image", "inspect", i]).status.success());
        if have {
            return;
        }
        let mut cmd = Command::new("bash");
        cmd.arg(Path::new(ROOT).join("docker/make-images.sh"));
        let out = run_with_deadline(cmd, Duration::from_secs(30 * 60));
        assert!(
            out.status.success(),
            "docker/make-images.sh failed:\n{}",
            tail(&out, 40)
        );
    });
}

/// A digest of the build's inputs: the files it reads and the release (a tag adds one of
/// the build arguments).
fn inputs_hash(release_sha: &str) -> String {
    let mut files = Vec::new();
    for input in INPUTS {
        collect_files(&Path::new(ROOT).join(input), &mut files);
    }
    files.sort();
    let mut hasher = Sha256::new();
    for file in files {
        let rel = file.strip_prefix(ROOT).expect("under the repository");
        hasher.update(rel.to_string_lossy().as_bytes());
        hasher.update([0]);
        hasher.update(fs::read(&file).expect("read a build input"));
        hasher.update([0]);
    }
    hasher.update(format!("release {RELEASE} {release_sha}"));
    sha256_hex(&hasher.finalize())[..16].to_owned()
}

fn collect_files(path: &Path, files: &mut Vec<PathBuf>) {
    if path.is_dir() {
        for entry in fs::read_dir(path).expect("read a build input directory") {
            collect_files(&entry.expect("entry").path(), files);
        }
    } else {
        files.push(path.to_path_buf());
    }
}

/// `docker build` of the repository's Dockerfile, the release baked from a fake release
/// server on loopback, which must see exactly one download.
fn build(tag: &str, release_sha: &str, args: &[(&str, &str)]) {
    let gh = FakeGitHub::start();
    publish_release(&gh);
    let template = gh.download_url_template();
    let mut cmd = Command::new("docker");
    // Host networking: the fake listens on the host's 127.0.0.1, where the bake step's
    // `corral base install` must reach it.
    // --force-rm: a failed step leaves no container behind.
    cmd.args(["build", "--force-rm", "--network", "host", "-t", tag])
        .args(["--build-arg", &format!("RUNNER_VERSION={RELEASE}")])
        .args(["--build-arg", &format!("RUNNER_SHA256={release_sha}")])
        .args(["--build-arg", &format!("RUNNER_DOWNLOAD_URL={template}")]);
    for (name, value) in args {
        cmd.args(["--build-arg", &format!("{name}={value}")]);
    }
    cmd.arg(ROOT).env_remove("DOCKER_HOST");
    let started = Instant::now();
    let before = dangling();
    let out = run_with_deadline(cmd, Duration::from_secs(40 * 60));
    assert!(
        out.status.success(),
        "docker build failed:\n{}",
        tail(&out, 60)
    );
    keep_one_build_stage(&before);
    eprintln!("built {tag} in {:.0?} (args {args:?})", started.elapsed());
    assert_eq!(
        gh.download_count(),
        1,
        "the bake step downloads the release once, from RUNNER_DOWNLOAD_URL"
    );
}

/// Removes the test repository's tags of other inputs than `hash` (no `-f`: one a container
/// still uses stays).
fn remove_stale_tags(hash: &str) {
    let repo = repository();
    let listed = docker_ok(&["images", &repo, "--format", "{{.Tag}}"]);
    for tag in listed.lines().filter(|t| !t.starts_with(hash)) {
        let _ = docker(&["rmi", &format!("{repo}:{tag}")]);
    }
}

/// Untagged top-level images (`<none>`), by id.
fn dangling() -> Vec<String> {
    docker_ok(&["images", "-q", "--no-trunc", "--filter", "dangling=true"])
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The classic builder keeps the build stage's last image untagged: the cache of the next
/// build, a few hundred MB each time the sources change. Keeps the newest one the test
/// builds made (recorded in cargo's test temp dir) and removes the ones before it; its
/// ancestors, the crates' layer among them, stay while it does.
fn keep_one_build_stage(before: &[String]) {
    let made: Vec<String> = dangling()
        .into_iter()
        .filter(|id| !before.contains(id))
        .collect();
    if made.is_empty() {
        return;
    }
    let record = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "container-build-stage-{}.txt",
        repository().replace(['/', ':'], "_")
    ));
    for old in fs::read_to_string(&record).unwrap_or_default().lines() {
        if !made.iter().any(|m| m == old) {
            let _ = docker(&["rmi", old]);
        }
    }
    let _ = fs::write(&record, made.join("\n"));
}

/// Runs `cmd` (output to a temp file), killed when `limit` passes.
pub fn run_with_deadline(mut cmd: Command, limit: Duration) -> Output {
    let log = tempfile::NamedTempFile::new().expect("log file");
    let file = || log.reopen().expect("reopen the log");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(file())
        .stderr(file())
        .spawn()
        .unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let text = fs::read_to_string(log.path()).unwrap_or_default();
            panic!("{cmd:?} did not finish within {limit:?}:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    Output {
        status,
        stdout: fs::read(log.path()).unwrap_or_default(),
        stderr: Vec::new(),
    }
}

/// The last `n` lines of what `out` printed.
pub fn tail(out: &Output, n: usize) -> String {
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
