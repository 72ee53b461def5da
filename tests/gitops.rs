//! `source.git` end to end (hermetic): a bare repository on disk followed over `file://`,
//! the real binary, the fake GitHub. Pushes converge; an invalid commit is refused with its
//! commit id and position while the last good one stays; a fix applies; a forced push is
//! followed; an unreachable remote keeps the last good revision, also across a restart.
//! An https token is handed to git by askpass and never shows in any process's argv.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use corral::status::{State, Status};
use nix::sys::signal::Signal;

use crate::kit::daemon::{runner, World, PAT, REPO};
use crate::kit::proc::wait_until;

pub const FLEET_HEAD: &str = "defaults:\n  allow_root: true\n  drain_timeout: 30s\nrunners:\n";

pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A bare repository `fleet.git` and a work tree `work` that pushes to it.
pub struct Repo {
    pub bare: PathBuf,
    pub work: PathBuf,
}

impl Repo {
    pub fn new(root: &Path) -> Self {
        let bare = root.join("fleet.git");
        let work = root.join("work");
        std::fs::create_dir_all(&work).expect("work dir");
        git(root, &["init", "-q", "--bare", "fleet.git"]);
        git(&work, &["init", "-q"]);
        git(&work, &["checkout", "-q", "-b", "main"]);
        let url = format!("file://{}", bare.display());
        git(&work, &["remote", "add", "origin", &url]);
        Repo { bare, work }
    }

    fn url(&self) -> String {
        format!("file://{}", self.bare.display())
    }

    /// Commits `text` as `runners/prod.yaml` and pushes; returns the commit id.
    pub fn push(&self, text: &str) -> String {
        let dir = self.work.join("runners");
        std::fs::create_dir_all(&dir).expect("runners dir");
        std::fs::write(dir.join("prod.yaml"), text).expect("write fleet file");
        git(&self.work, &["add", "-A"]);
        git(
            &self.work,
            &["commit", "-q", "--allow-empty", "-m", "change"],
        );
        git(&self.work, &["push", "-q", "origin", "main"]);
        git(&self.work, &["rev-parse", "HEAD"])
    }
}

pub fn local_config(world: &World, source: &str) -> String {
    format!(
        "base:\n  path: ./base\nstate_dir: ./state\nresync_interval: 2s\nshutdown_timeout: 20s\n\
         github:\n  url: {web}\n  api_url: {api}\n  token_env: GITHUB_TOKEN\n\
         source:\n  git:\n{source}",
        web = world.gh.web_url(),
        api = world.gh.api_url(),
    )
}

pub fn revision(s: &Status) -> Option<&str> {
    s.source.as_ref().and_then(|src| src.revision.as_deref())
}

pub fn error_of(s: &Status) -> &str {
    s.source
        .as_ref()
        .and_then(|src| src.error.as_deref())
        .unwrap_or_default()
}

pub fn idle(s: &Status, names: &[&str]) -> bool {
    names
        .iter()
        .all(|n| runner(s, n).is_some_and(|r| r.state == State::Idle))
}

fn names(s: &Status) -> Vec<String> {
    s.runners.iter().map(|r| r.name.clone()).collect()
}

#[test]
fn follows_pushes_refuses_bad_commits_and_survives_a_lost_remote() {
    let mut world = World::new();
    let repo = Repo::new(world.dir.path());
    let two = format!("{FLEET_HEAD}  - name: web\n    repo: {REPO}\n    count: 2\n");
    let first = repo.push(&two);
    std::fs::write(
        world.config(),
        local_config(
            &world,
            &format!(
                "    url: {}\n    ref: main\n    path: runners/prod.yaml\n    interval: 1s\n",
                repo.url()
            ),
        ),
    )
    .expect("write config");
    world.start();
    let s = world.wait_status("the first revision applied", |s| {
        revision(s) == Some(first.as_str()) && idle(s, &["web-1", "web-2"])
    });
    let src = s.source.as_ref().expect("source in status");
    assert_eq!(src.git_ref, "main");
    assert_eq!(src.url, repo.url());
    assert!(src.fetched_at.is_some() && src.error.is_none(), "{src:?}");

    // An invalid commit: refused with its id and position, the last good one stays.
    let bad = repo.push(&format!(
        "{FLEET_HEAD}  - name: web\n    repo: {REPO}\n    count: 2\n    lables: [x]\n"
    ));
    let s = world.wait_status("the bad commit refused", |s| error_of(s).contains(&bad));
    let err = error_of(&s);
    assert!(
        err.contains("runners/prod.yaml:8:5") && err.contains("lables"),
        "names the file, line and column: {err}"
    );
    assert_eq!(revision(&s), Some(first.as_str()), "the last good stays");
    assert!(idle(&s, &["web-1", "web-2"]), "{:?}", names(&s));

    // A host field in the repository's file is refused too, naming the field.
    let host = repo.push(&format!("state_dir: /tmp/x\n{two}"));
    let s = world.wait_status("the host field refused", |s| error_of(s).contains(&host));
    let err = error_of(&s);
    assert!(
        err.contains("runners/prod.yaml:1:1: state_dir") && err.contains("host field"),
        "{err}"
    );

    // A fix applies.
    let pushed = std::time::Instant::now();
    let fix = repo.push(&format!("{FLEET_HEAD}  - name: api\n    repo: {REPO}\n"));
    let s = world.wait_status("the fix applied", |s| {
        revision(s) == Some(fix.as_str()) && idle(s, &["api"]) && s.runners.len() == 1
    });
    assert!(s.source.as_ref().is_some_and(|x| x.error.is_none()));
    eprintln!(
        "interval 1s: a push converged (api idle, web gone) after {:?}",
        pushed.elapsed()
    );

    // A forced push back to the first commit is followed.
    git(&repo.work, &["reset", "-q", "--hard", &first]);
    git(&repo.work, &["push", "-q", "--force", "origin", "main"]);
    world.wait_status("the forced push followed", |s| {
        revision(s) == Some(first.as_str()) && idle(s, &["web-1", "web-2"]) && s.runners.len() == 2
    });

    // The remote goes away: the last good revision stays, the error says why.
    let gone = world.dir.path().join("fleet.git.gone");
    std::fs::rename(&repo.bare, &gone).expect("hide the remote");
    let s = world.wait_status("the fetch failure reported", |s| {
        error_of(s).starts_with("fetch failed")
    });
    assert_eq!(revision(&s), Some(first.as_str()));
    assert!(idle(&s, &["web-1", "web-2"]));

    // A restart without the remote applies the kept revision.
    world.signal(Signal::SIGTERM);
    assert_eq!(world.corral().exit_code(), 0, "{}", world.corral().output());
    std::fs::remove_file(world.state().join("status.json")).expect("old status removed");
    world.start();
    let s = world.wait_status("the kept revision applied after a restart", |s| {
        revision(s) == Some(first.as_str()) && idle(s, &["web-1", "web-2"])
    });
    assert!(s.source.as_ref().is_some_and(|x| x.error.is_some()));

    // The remote is back: the deleted branch is an error, the kept revision stays.
    std::fs::rename(&gone, &repo.bare).expect("restore the remote");
    git(&repo.bare, &["update-ref", "-d", "refs/heads/main"]);
    let s = world.wait_status("the deleted ref reported", |s| {
        error_of(s).contains("deleted?")
    });
    assert_eq!(revision(&s), Some(first.as_str()));
    let log = world.corral().output();
    assert!(!log.contains(PAT), "the PAT never reaches the log");
}

#[test]
fn local_file_with_a_source_refuses_runners_and_inline_credentials() {
    let world = World::new();
    let text = format!(
        "{}runners:\n  - name: web\n    repo: {REPO}\n",
        local_config(
            &world,
            "    url: https://user:secret@example.com/fleet.git\n    path: fleet.yaml\n    token: abc\n"
        )
    );
    std::fs::write(world.config(), text).expect("write config");
    let out = crate::kit::cmd::run(world.dir.path(), &["check", "-c", "runners.yaml"]);
    let (stdout, stderr) = crate::kit::cmd::texts(&out);
    let all = format!("{stdout}{stderr}");
    assert!(!out.status.success(), "{all}");
    assert!(
        all.contains("source.git.token: `token` would put a secret in the file"),
        "{all}"
    );
    let out_fixed = all.replace("secret@", "");
    assert!(out_fixed.len() <= all.len());
    let text = format!(
        "{}runners:\n  - name: web\n    repo: {REPO}\n",
        local_config(
            &world,
            "    url: https://user:secret@example.com/fleet.git\n    path: fleet.yaml\n"
        )
    );
    std::fs::write(world.config(), text).expect("write config");
    let out = crate::kit::cmd::run(world.dir.path(), &["check", "-c", "runners.yaml"]);
    let (stdout, stderr) = crate::kit::cmd::texts(&out);
    let all = format!("{stdout}{stderr}");
    assert!(
        all.contains("source.git.url: the URL carries credentials"),
        "{all}"
    );
    assert!(
        all.contains(": runners: `runners` belongs in the repository's file `fleet.yaml`"),
        "{all}"
    );
}

/// A `git` in front of the real one: records its argv, asks askpass for the password the way
/// git does for an https remote, records what it got, and fetches from the bare repository.
fn fake_git(bin: &Path, log: &Path, bare: &Path) {
    let real = String::from_utf8(
        Command::new("sh")
            .args(["-c", "command -v git"])
            .output()
            .expect("which git")
            .stdout,
    )
    .expect("utf-8");
    let script = format!(
        "#!/bin/sh\n\
         printf '%s\\n' \"$*\" >> '{log}/argv'\n\
         if [ \"$3\" = fetch ]; then\n\
           \"$GIT_ASKPASS\" \"Password for 'https://x-access-token@git.invalid': \" > '{log}/askpass-out'\n\
           sleep 1\n\
           last=\"\"; for a; do last=\"$a\"; done\n\
           exec {real} -C \"$2\" fetch --depth 1 --no-tags --force --quiet 'file://{bare}' \"$last\"\n\
         fi\n\
         exec {real} \"$@\"\n",
        log = log.display(),
        bare = bare.display(),
        real = real.trim(),
    );
    std::fs::create_dir_all(bin).expect("bin dir");
    let path = bin.join("git");
    std::fs::write(&path, script).expect("write fake git");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

#[test]
fn an_https_token_goes_through_askpass_never_argv() {
    const TOKEN: &str = "fleet_tok_Zq8wV3nB1xK7";
    let mut world = World::new();
    let repo = Repo::new(world.dir.path());
    let first = repo.push(&format!("{FLEET_HEAD}  - name: web\n    repo: {REPO}\n"));
    let bin = world.dir.path().join("bin");
    let log = world.dir.path().join("gitlog");
    std::fs::create_dir_all(&log).expect("log dir");
    fake_git(&bin, &log, &repo.bare);
    std::fs::write(
        world.config(),
        local_config(
            &world,
            "    url: https://git.invalid/fleet.git\n    ref: main\n    path: runners/prod.yaml\n    interval: 1s\n    token_env: FLEET_TOKEN\n",
        ),
    )
    .expect("write config");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    world.start_with_env(&[("FLEET_TOKEN", TOKEN), ("PATH", &path)]);
    // While fetches run, no process's command line holds the token.
    let mut seen_git = false;
    wait_until("a few fetches", || {
        for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            assert!(!cmdline.contains(TOKEN), "token in argv: {cmdline}");
            seen_git |= cmdline.contains("fetch --depth 1");
        }
        std::fs::read_to_string(log.join("argv")).is_ok_and(|t| t.matches(" fetch ").count() >= 3)
    });
    assert!(seen_git, "a fetch was seen running");
    world.wait_status("the revision applied", |s| {
        revision(s) == Some(first.as_str()) && idle(s, &["web"])
    });
    // Each fetch rewrites the file (truncated first): read it once a fetch has written it.
    wait_until("git got the token from askpass", || {
        std::fs::read_to_string(log.join("askpass-out")).is_ok_and(|t| t.trim() == TOKEN)
    });
    let argv = std::fs::read_to_string(log.join("argv")).expect("argv log");
    assert!(!argv.contains(TOKEN), "{argv}");
    let askpass = std::fs::read_to_string(world.state().join("source/askpass")).expect("askpass");
    assert!(
        !askpass.contains(TOKEN),
        "the askpass script holds no secret"
    );
    let status = std::fs::read_to_string(world.state().join("status.json")).expect("status");
    assert!(!status.contains(TOKEN));
    let output = world.corral().output();
    assert!(!output.contains(TOKEN), "the token never reaches the log");
}

#[test]
fn a_signed_push_delivery_fetches_at_once() {
    const SECRET: &str = "gitops-hook-secret";
    let mut world = World::new();
    let repo = Repo::new(world.dir.path());
    let first = repo.push(&format!("{FLEET_HEAD}  - name: web\n    repo: {REPO}\n"));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let api = format!(
        "api:\n  listen: \"127.0.0.1:{port}\"\n  token_env: API_TOKEN\n  webhook_secret_env: HOOK_SECRET\n"
    );
    std::fs::write(
        world.config(),
        format!(
            "{api}{}",
            local_config(
                &world,
                &format!(
                    "    url: {}\n    ref: main\n    path: runners/prod.yaml\n    interval: 1h\n",
                    repo.url()
                )
            )
        ),
    )
    .expect("write config");
    world.start_with_env(&[("HOOK_SECRET", SECRET), ("API_TOKEN", "api-token")]);
    world.wait_status("the first revision", |s| {
        revision(s) == Some(first.as_str())
    });
    let second = repo.push(&format!("{FLEET_HEAD}  - name: api\n    repo: {REPO}\n"));
    let deliver = |body: &str, signature: &str| {
        reqwest::blocking::Client::new()
            .post(format!("http://127.0.0.1:{port}/webhook"))
            .header("X-GitHub-Event", "push")
            .header("X-GitHub-Delivery", "p-1")
            .header("X-Hub-Signature-256", signature)
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .timeout(std::time::Duration::from_secs(10))
            .send()
            .expect("POST /webhook")
            .status()
            .as_u16()
    };
    // A push to another repository and a forged one change nothing.
    let other =
        r#"{"ref":"refs/heads/main","repository":{"clone_url":"https://example.com/o/other.git"}}"#;
    let sig = corral::api::signature(SECRET.as_bytes(), other.as_bytes());
    assert_eq!(deliver(other, &sig), 202);
    let body = format!(
        r#"{{"ref":"refs/heads/main","repository":{{"clone_url":"{}"}}}}"#,
        repo.url()
    );
    let forged = corral::api::signature(b"nope", body.as_bytes());
    assert_eq!(deliver(&body, &forged), 401);
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(
        world.status().as_ref().and_then(revision),
        Some(first.as_str()),
        "nothing fetched yet (the interval is an hour)"
    );
    let good = corral::api::signature(SECRET.as_bytes(), body.as_bytes());
    let sent = std::time::Instant::now();
    assert_eq!(deliver(&body, &good), 202);
    world.wait_status("the pushed revision in force", |s| {
        revision(s) == Some(second.as_str())
    });
    let in_force = sent.elapsed();
    world.wait_status("the pushed revision applied", |s| {
        revision(s) == Some(second.as_str()) && idle(s, &["api"])
    });
    eprintln!(
        "push webhook: revision in force after {in_force:?}, its runner idle after {:?}",
        sent.elapsed()
    );
}

#[test]
fn status_table_and_plan_show_the_revision() {
    let mut world = World::new();
    let repo = Repo::new(world.dir.path());
    let first = repo.push(&format!("{FLEET_HEAD}  - name: web\n    repo: {REPO}\n"));
    std::fs::write(
        world.config(),
        local_config(
            &world,
            &format!(
                "    url: {}\n    path: runners/prod.yaml\n    interval: 1s\n",
                repo.url()
            ),
        ),
    )
    .expect("write config");
    world.start();
    world.wait_status("the revision applied", |s| {
        revision(s) == Some(first.as_str()) && idle(s, &["web"])
    });
    let out = crate::kit::cmd::run(world.dir.path(), &["status", "-c", "runners.yaml"]);
    let (table, _) = crate::kit::cmd::texts(&out);
    assert!(
        table.contains(&format!(
            "source: {} HEAD runners/prod.yaml at {first}",
            repo.url()
        )),
        "{table}"
    );
    let out = crate::kit::cmd::run(
        world.dir.path(),
        &["status", "-c", "runners.yaml", "--json"],
    );
    let (json, _) = crate::kit::cmd::texts(&out);
    let v: serde_json::Value = serde_json::from_str(&json).expect("status json");
    assert_eq!(v["source"]["revision"], first.as_str());
    assert_eq!(v["source"]["ref"], "HEAD");
    assert!(
        v["source"]["fetched_at"].is_string() && v["source"]["error"].is_null(),
        "{v}"
    );
    let out = crate::kit::cmd::run(world.dir.path(), &["plan", "-c", "runners.yaml"]);
    let (plan, _) = crate::kit::cmd::texts(&out);
    assert!(plan.contains(&format!("at {first}")), "{plan}");
    // `plan --json` carries the same revision in a top-level `source`, shaped as status's.
    let out = crate::kit::cmd::run(world.dir.path(), &["plan", "-c", "runners.yaml", "--json"]);
    let (json, _) = crate::kit::cmd::texts(&out);
    let v: serde_json::Value = serde_json::from_str(&json).expect("plan json");
    assert_eq!(v["source"]["revision"], first.as_str(), "{v}");
    assert_eq!(v["source"]["url"], repo.url().as_str());
    assert_eq!(v["source"]["ref"], "HEAD");
    assert_eq!(v["source"]["path"], "runners/prod.yaml");
}

/// The https server of `tests/kit/scripts/git_https_server.py`, stopped when dropped.
struct HttpsServer {
    child: std::process::Child,
    port: u16,
}

impl Drop for HttpsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Starts the https git server on loopback serving the repositories under `root`, with a
/// fresh self-signed certificate; returns it and the certificate's path.
fn start_https_server(root: &Path, token: &str) -> (HttpsServer, PathBuf) {
    let cert = root.join("cert.pem");
    let key = root.join("key.pem");
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let port_file = root.join("https-port");
    let log = root.join("https-log");
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kit/scripts/git_https_server.py");
    let child = Command::new("python3")
        .arg(script)
        .args([root, &port_file, &cert, &key, &log])
        .env("FLEET_TOKEN", token)
        .spawn()
        .expect("start the https git server");
    let mut server = HttpsServer { child, port: 0 };
    wait_until("the https server's port", || port_file.exists());
    server.port = std::fs::read_to_string(&port_file)
        .expect("port")
        .trim()
        .parse()
        .expect("a port");
    (server, cert)
}

#[test]
fn fetches_over_https_on_loopback_with_the_token_from_askpass() {
    const TOKEN: &str = "fleet_https_tok_Pq93XaL0";
    if !have("python3") || !have("openssl") {
        eprintln!("skipped: python3 and openssl are needed for the https git server");
        return;
    }
    let mut world = World::new();
    let root = world.dir.path().to_path_buf();
    let repo = Repo::new(&root);
    let first = repo.push(&format!("{FLEET_HEAD}  - name: web\n    repo: {REPO}\n"));
    let (server, cert) = start_https_server(&root, TOKEN);
    let log = root.join("https-log");
    let token_file = root.join("fleet-token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("token file");
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    std::fs::write(
        world.config(),
        local_config(
            &world,
            &format!(
                "    url: https://127.0.0.1:{}/fleet.git\n    ref: main\n    path: runners/prod.yaml\n    interval: 1s\n    token_file: ./fleet-token\n",
                server.port
            ),
        ),
    )
    .expect("write config");
    let ca = cert.display().to_string();
    world.start_with_env(&[("GIT_SSL_CAINFO", &ca)]);
    let scan = || {
        for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
            if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
                let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                assert!(!cmdline.contains(TOKEN), "token in argv: {cmdline}");
            }
        }
    };
    let s = world.wait_status("the revision fetched over https", |s| {
        scan();
        revision(s) == Some(first.as_str()) && idle(s, &["web"])
    });
    assert!(
        s.source.as_ref().is_some_and(|x| x.error.is_none()),
        "{:?}",
        s.source
    );
    let hits = std::fs::read_to_string(&log).expect("server log");
    assert!(hits.contains("POST /fleet.git/git-upload-pack"), "{hits}");

    // A wrong token: the fetch fails, the last good revision stays.
    std::fs::write(&token_file, "wrong\n").expect("token file");
    let second = repo.push(&format!("{FLEET_HEAD}  - name: api\n    repo: {REPO}\n"));
    let s = world.wait_status("the refused credential reported", |s| {
        scan();
        s.source
            .as_ref()
            .and_then(|x| x.error.as_deref())
            .is_some_and(|e| e.starts_with("fetch failed"))
    });
    assert_eq!(revision(&s), Some(first.as_str()));
    // The right token again: the new commit applies.
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("token file");
    world.wait_status("the second revision over https", |s| {
        revision(s) == Some(second.as_str()) && idle(s, &["api"])
    });
    let output = world.corral().output();
    assert!(!output.contains(TOKEN), "the token never reaches the log");
    let status = std::fs::read_to_string(world.state().join("status.json")).expect("status");
    assert!(!status.contains(TOKEN));
    drop(server);
}

#[test]
fn until_the_first_revision_nothing_is_removed() {
    let mut world = World::new();
    world.write_config(&format!("  - name: web\n    repo: {REPO}\n"));
    world.start();
    let pid = world.wait_idle(&["web"])[0];
    // The runner list moves to a repository corral cannot reach yet.
    let repo_root = world.dir.path().join("later");
    std::fs::create_dir_all(&repo_root).expect("dir");
    let url = format!("file://{}", repo_root.join("fleet.git").display());
    std::fs::write(
        world.config(),
        local_config(
            &world,
            &format!(
                "    url: {url}\n    ref: main\n    path: runners/prod.yaml\n    interval: 1s\n"
            ),
        ),
    )
    .expect("write config");
    let s = world.wait_status("the unreachable source reported", |s| {
        s.source
            .as_ref()
            .and_then(|x| x.error.as_deref())
            .is_some_and(|e| e.starts_with("fetch failed"))
    });
    assert_eq!(revision(&s), None);
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(world.wait_idle(&["web"]), [pid], "the runner is left alone");
    // The repository appears with the same entry: it is adopted as it is.
    let repo = Repo::new(&repo_root);
    let first = repo.push(&format!("{FLEET_HEAD}  - name: web\n    repo: {REPO}\n"));
    world.wait_status("the first revision", |s| {
        revision(s) == Some(first.as_str())
    });
    assert_eq!(world.wait_idle(&["web"]), [pid], "same listener");
}
