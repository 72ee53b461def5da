//! The real Docker engine for tests: is one answering, a tiny test image made once from
//! Debian's `busybox-static`, and a guard that removes every object a test labelled or
//! named with its prefix, even when the test fails.
//!
//! The corral image itself and compose projects on the shipped compose file are beside it,
//! in `docker_image.rs` and `compose.rs` (issue 18's container tests).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The test image: a static busybox with `sh`, `sleep`, `true`, … in `/bin`.
pub const IMAGE: &str = "corral-test/busybox:1";

/// Runs `docker args…` against the engine (`DOCKER_HOST` unset: the host's socket).
pub fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .env_remove("DOCKER_HOST")
        .output()
        .unwrap_or_else(|e| panic!("run docker {args:?}: {e}"))
}

/// The output of a `docker` command that must succeed.
pub fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// True when a Docker engine answers on the host's socket and the CLI is installed.
pub fn engine_answers() -> bool {
    Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .env_remove("DOCKER_HOST")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Prints why the calling test is skipped, by name, and returns true, when no engine answers.
pub fn skip_without_engine(test: &str) -> bool {
    if engine_answers() {
        return false;
    }
    eprintln!("SKIPPED {test}: no Docker engine answers on /var/run/docker.sock");
    true
}

/// Makes [`IMAGE`] unless the engine has it: busybox from `/bin/busybox` when that one is
/// static, else from Debian's `busybox-static` package (`apt-get download`).
pub fn ensure_image() {
    if docker(&["image", "inspect", IMAGE]).status.success() {
        return;
    }
    let work = tempfile::tempdir().expect("temp dir");
    let busybox = static_busybox(work.path());
    let rootfs = work.path().join("rootfs.tar");
    write_rootfs(&busybox, &rootfs);
    let rootfs = rootfs.to_string_lossy().into_owned();
    docker_ok(&[
        "import",
        "--change",
        "ENV PATH=/bin",
        "--change",
        "CMD [\"/bin/sh\"]",
        &rootfs,
        IMAGE,
    ]);
}

fn static_busybox(work: &Path) -> PathBuf {
    let installed = Path::new("/bin/busybox");
    let is_static = Command::new("ldd").arg(installed).output().is_ok_and(|o| {
        !o.status.success() || String::from_utf8_lossy(&o.stdout).contains("not a dynamic")
    });
    if installed.exists() && is_static {
        return installed.to_path_buf();
    }
    let download = || {
        Command::new("apt-get")
            .args(["download", "busybox-static"])
            .current_dir(work)
            .output()
            .expect("run apt-get download busybox-static")
    };
    let mut fetched = download();
    if !fetched.status.success() {
        // A fresh machine may have no package lists yet.
        let _ = Command::new("apt-get").args(["update", "-qq"]).status();
        fetched = download();
    }
    assert!(
        fetched.status.success(),
        "the test image needs a static busybox: install `busybox-static` or let `apt-get download busybox-static` work: {}",
        String::from_utf8_lossy(&fetched.stderr)
    );
    let deb = std::fs::read_dir(work)
        .expect("read temp dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .expect("the downloaded .deb");
    let out = work.join("deb");
    let status = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&out)
        .status()
        .expect("run dpkg-deb");
    assert!(status.success(), "dpkg-deb -x {}", deb.display());
    out.join("bin/busybox")
}

/// A root file system of `bin/busybox` and its applets, `tmp/` and a root user.
fn write_rootfs(busybox: &Path, tar_path: &Path) {
    let file = std::fs::File::create(tar_path).expect("create rootfs.tar");
    let mut tar = tar::Builder::new(file);
    let dir = |tar: &mut tar::Builder<std::fs::File>, path: &str, mode: u32| {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(mode);
        header.set_size(0);
        tar.append_data(&mut header, path, std::io::empty())
            .expect("append dir");
    };
    dir(&mut tar, "bin", 0o755);
    dir(&mut tar, "tmp", 0o1777);
    dir(&mut tar, "etc", 0o755);
    let bytes = std::fs::read(busybox).expect("read busybox");
    let mut header = tar::Header::new_gnu();
    header.set_mode(0o755);
    header.set_size(bytes.len() as u64);
    tar.append_data(&mut header, "bin/busybox", bytes.as_slice())
        .expect("append busybox");
    for applet in [
        "sh", "true", "sleep", "cat", "echo", "ls", "touch", "id", "dd", "head",
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_mode(0o777);
        header.set_size(0);
        tar.append_link(&mut header, format!("bin/{applet}"), "busybox")
            .expect("append applet");
    }
    let passwd = b"root:x:0:0:root:/:/bin/sh\n";
    let mut header = tar::Header::new_gnu();
    header.set_mode(0o644);
    header.set_size(passwd.len() as u64);
    tar.append_data(&mut header, "etc/passwd", &passwd[..])
        .expect("append passwd");
    tar.finish().expect("finish rootfs.tar");
}

/// IDs of the engine's objects of `kind` (`container`, `network`, `volume`, `image`)
/// labelled `corral.runner=<runner>`.
pub fn labelled(kind: &str, runner: &str) -> Vec<String> {
    let filter = format!("label=corral.runner={runner}");
    let args: Vec<&str> = match kind {
        "container" => vec!["ps", "-aq", "--filter", &filter],
        "network" => vec!["network", "ls", "-q", "--filter", &filter],
        "volume" => vec!["volume", "ls", "-q", "--filter", &filter],
        _ => vec!["images", "-q", "--filter", &filter],
    };
    docker_ok(&args)
        .lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect()
}

/// Removes, on drop, every object labelled with one of `runners` and every container,
/// network, volume and image tag whose name starts with `prefix`.
pub struct Cleanup {
    /// Runner names whose labelled objects go.
    pub runners: Vec<String>,
    /// The test's name prefix.
    pub prefix: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for runner in &self.runners {
            for id in labelled("container", runner) {
                let _ = docker(&["rm", "-f", "-v", &id]);
            }
            for id in labelled("network", runner) {
                let _ = docker(&["network", "rm", &id]);
            }
            for id in labelled("volume", runner) {
                let _ = docker(&["volume", "rm", "-f", &id]);
            }
            for id in labelled("image", runner) {
                let _ = docker(&["rmi", "-f", &id]);
            }
        }
        let named = |args: &[&str]| -> Vec<String> {
            String::from_utf8_lossy(&docker(args).stdout)
                .lines()
                .filter(|l| l.starts_with(&self.prefix))
                .map(str::to_string)
                .collect()
        };
        for name in named(&["ps", "-a", "--format", "{{.Names}}"]) {
            let _ = docker(&["rm", "-f", "-v", &name]);
        }
        for name in named(&["network", "ls", "--format", "{{.Name}}"]) {
            let _ = docker(&["network", "rm", &name]);
        }
        for name in named(&["volume", "ls", "--format", "{{.Name}}"]) {
            let _ = docker(&["volume", "rm", "-f", &name]);
        }
        for name in named(&["images", "--format", "{{.Repository}}:{{.Tag}}"]) {
            let _ = docker(&["rmi", "-f", &name]);
        }
    }
}
