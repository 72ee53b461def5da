//! `source.git` over `ssh://` end to end: an `sshd` of the test's own on 127.0.0.1 (its own
//! port, host key and authorized keys, in a temp dir) serves a bare repository; corral
//! follows pushes with `ssh_key_file`, checks the server's host key against
//! `known_hosts_file`, and neither the key's path nor its material is on any command line.
//! Skipped by name without `sshd`, or when not root (the test logs in as root, with a key
//! only: `PermitRootLogin prohibit-password`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::gitops::{error_of, idle, local_config, revision, Repo, FLEET_HEAD};
use crate::kit::container::free_port;
use crate::kit::daemon::{World, REPO};
use crate::kit::proc::wait_until;

/// The test's sshd, stopped when dropped.
struct Sshd {
    child: Child,
    log: PathBuf,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sshd_binary() -> Option<PathBuf> {
    ["/usr/sbin/sshd", "/usr/local/sbin/sshd"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// `ssh-keygen -t ed25519` into `path` (and `path.pub`); the public key line.
fn keygen(path: &Path) -> String {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "corral-test", "-f"])
        .arg(path)
        .output()
        .expect("ssh-keygen");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(path.with_extension("pub"))
        .expect("public key")
        .trim()
        .to_string()
}

/// Starts sshd on 127.0.0.1:`port` with the host key `host_key` and `authorized` as root's
/// only authorized key.
fn start_sshd(sshd: &Path, root: &Path, port: u16, host_key: &Path, authorized: &str) -> Sshd {
    let keys = root.join("authorized_keys");
    std::fs::write(&keys, format!("{authorized}\n")).expect("authorized_keys");
    let config = root.join("sshd_config");
    std::fs::write(
        &config,
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {host}\nPidFile {pid}\n\
             AuthorizedKeysFile {keys}\nPermitRootLogin prohibit-password\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n\
             StrictModes no\nLogLevel VERBOSE\n",
            host = host_key.display(),
            pid = root.join("sshd.pid").display(),
            keys = keys.display(),
        ),
    )
    .expect("sshd_config");
    // sshd's privilege separation directory (the package makes it at boot).
    std::fs::create_dir_all("/run/sshd").expect("/run/sshd");
    let log = root.join("sshd.log");
    let child = Command::new(sshd)
        .args(["-D", "-e", "-f"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("sshd log"))
        .spawn()
        .expect("start sshd");
    let server = Sshd { child, log };
    wait_until("sshd listens", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    server
}

/// Every process's command line, as text.
fn cmdlines() -> Vec<String> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .collect()
}

/// sshd, or `None` after saying why the test is skipped (never under CI).
fn sshd_or_skip(test: &str) -> Option<PathBuf> {
    let Some(sshd) = sshd_binary() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "sshd is missing under CI: .ci/run installs openssh-server"
        );
        eprintln!("skipped: {test}: sshd is not installed");
        return None;
    };
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: {test}: needs root (it logs in to its sshd as root)");
        return None;
    }
    Some(sshd)
}

/// The key's material: its base64 body lines, and the public key's.
fn key_material(key: &Path, public: &str) -> Vec<String> {
    let private = std::fs::read_to_string(key).expect("private key");
    let mut secrets: Vec<String> = private
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() > 20)
        .map(str::to_string)
        .collect();
    secrets.push(
        public
            .split_whitespace()
            .nth(1)
            .expect("base64")
            .to_string(),
    );
    secrets
}

/// Asserts no command line shows the key's path or material; whether an ssh client to the
/// server on `port` runs.
fn scan_cmdlines(key_path: &str, secrets: &[String], port: u16) -> bool {
    let mut ssh = false;
    for cmdline in cmdlines() {
        assert!(
            !cmdline.contains(key_path),
            "the key's path in argv: {cmdline}"
        );
        for s in secrets {
            assert!(
                !cmdline.contains(s.as_str()),
                "key material in argv: {cmdline}"
            );
        }
        ssh |= cmdline.starts_with("ssh ") && cmdline.contains(&format!(" {port} "));
    }
    ssh
}

#[test]
fn follows_an_ssh_source_with_a_key_file_and_known_hosts() {
    let Some(sshd) =
        sshd_or_skip("gitops_ssh::follows_an_ssh_source_with_a_key_file_and_known_hosts")
    else {
        return;
    };
    let mut world = World::new();
    let root = world.dir.path().to_path_buf();
    let keys = root.join("keys");
    std::fs::create_dir_all(&keys).expect("keys dir");
    let host_pub = keygen(&keys.join("host_ed25519"));
    let client_key = keys.join("client_ed25519");
    let client_pub = keygen(&client_key);
    let other_pub = keygen(&keys.join("other_ed25519"));
    let port = free_port();
    let server = start_sshd(&sshd, &root, port, &keys.join("host_ed25519"), &client_pub);
    let known = keys.join("known_hosts");
    std::fs::write(&known, format!("[127.0.0.1]:{port} {host_pub}\n")).expect("known_hosts");

    let repo = Repo::new(&root);
    let first = repo.push(&format!("{FLEET_HEAD}  - name: web\n    repo: {REPO}\n"));
    let source = |known: &Path| {
        format!(
            "    url: ssh://root@127.0.0.1:{port}{bare}\n    ref: main\n    path: runners/prod.yaml\n    \
             interval: 1s\n    ssh_key_file: {key}\n    known_hosts_file: {known}\n",
            bare = repo.bare.display(),
            key = client_key.display(),
            known = known.display(),
        )
    };
    std::fs::write(world.config(), local_config(&world, &source(&known))).expect("config");
    world.start();
    let secrets = key_material(&client_key, &client_pub);
    let key_path = client_key.display().to_string();
    let mut seen_ssh = false;
    let scan = || scan_cmdlines(&key_path, &secrets, port);
    world.wait_status("the first revision over ssh", |s| {
        seen_ssh |= scan();
        revision(s) == Some(first.as_str()) && idle(s, &["web"])
    });
    let second = repo.push(&format!("{FLEET_HEAD}  - name: api\n    repo: {REPO}\n"));
    world.wait_status("a push followed over ssh", |s| {
        seen_ssh |= scan();
        revision(s) == Some(second.as_str()) && idle(s, &["api"]) && s.runners.len() == 1
    });
    wait_until("an ssh client seen running", || {
        seen_ssh |= scan();
        seen_ssh
    });
    let log = std::fs::read_to_string(&server.log).expect("sshd log");
    assert!(log.contains("Accepted publickey for root"), "{log}");

    // A known_hosts without this server's key: ssh refuses the host, nothing is applied.
    let wrong = keys.join("wrong_known_hosts");
    std::fs::write(&wrong, format!("[127.0.0.1]:{port} {other_pub}\n")).expect("known_hosts");
    std::fs::write(world.config(), local_config(&world, &source(&wrong))).expect("config");
    let third = repo.push(&format!("{FLEET_HEAD}  - name: db\n    repo: {REPO}\n"));
    let s = world.wait_status("the changed host key refused", |s| {
        error_of(s).contains("Host key verification failed")
            || error_of(s).contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
    });
    assert_eq!(revision(&s), Some(second.as_str()), "not {third}");
    let config =
        std::fs::read_to_string(world.state().join("source/ssh_config")).expect("ssh_config");
    for s in &secrets {
        assert!(!config.contains(s.as_str()), "key material in ssh_config");
    }
    assert!(!config.contains("StrictHostKeyChecking"), "{config}");
    drop(server);
}
