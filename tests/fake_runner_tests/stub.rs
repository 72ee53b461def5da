//! Helpers of the fake runner tests: a tiny stub of the private runner service
//! (tests/kit/README.md) standing in for `FakeGitHub`, and process/wait utilities.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::unistd::Pid;
use serde_json::{json, Value};

use crate::kit::install::FakeRunnerInstall;

pub const TIMEOUT: Duration = Duration::from_secs(30);

// ---------- stub service ----------

#[derive(Default)]
pub(super) struct StubState {
    pub(super) messages: VecDeque<Value>,
    pub(super) requests: Vec<String>,
    pub(super) session_status: Option<u16>,
    /// Set to make every message poll answer 404 (registration deleted).
    pub(super) deleted: bool,
}

#[derive(Clone)]
pub(super) struct Stub {
    pub(super) port: u16,
    pub(super) state: Arc<Mutex<StubState>>,
}

impl Stub {
    pub(super) fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind stub");
        let port = listener.local_addr().expect("stub addr").port();
        let stub = Self {
            port,
            state: Arc::default(),
        };
        let server = stub.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let s = server.clone();
                std::thread::spawn(move || s.serve(conn));
            }
        });
        stub
    }

    pub(super) fn url(&self) -> String {
        format!("http://127.0.0.1:{}/owner/repo", self.port)
    }

    pub(super) fn push(&self, msg: Value) {
        self.state
            .lock()
            .expect("stub lock")
            .messages
            .push_back(msg);
    }

    pub(super) fn requests(&self) -> Vec<String> {
        self.state.lock().expect("stub lock").requests.clone()
    }

    pub(super) fn serve(&self, mut conn: TcpStream) {
        let mut reader = BufReader::new(conn.try_clone().expect("clone conn"));
        let mut head = String::new();
        let mut length = 0;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
            head.push_str(&line);
        }
        let mut body = vec![0; length];
        let _ = reader.read_exact(&mut body);
        let first = head.lines().next().unwrap_or_default().to_owned();
        let mut parts = first.split(' ');
        let (method, path) = (
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
        );
        let body = String::from_utf8_lossy(&body).into_owned();
        self.state
            .lock()
            .expect("stub lock")
            .requests
            .push(format!("{method} {path} {body}"));
        let (status, reply) = self.route(method, path, &head);
        let text = reply.map(|v| v.to_string()).unwrap_or_default();
        let _ = write!(
            conn,
            "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
            text.len()
        );
    }

    pub(super) fn route(&self, method: &str, path: &str, head: &str) -> (u16, Option<Value>) {
        let svc = format!("http://127.0.0.1:{}/_fake/", self.port);
        match (method, path.split('?').next().unwrap_or_default()) {
            ("POST", "/api/v3/actions/runner-registration") if head.contains("RemoteAuth good") => {
                (
                    200,
                    Some(
                        json!({"url": svc, "token": "svc-token", "token_schema": "OAuthAccessToken"}),
                    ),
                )
            }
            ("POST", "/api/v3/actions/runner-registration") => (
                404,
                Some(
                    json!({"message": "Not Found", "documentation_url": "https://docs.github.com/rest"}),
                ),
            ),
            ("POST", "/_fake/runners") => (
                201,
                Some(json!({"runner": {"id": 1, "name": "r1"}, "client_id": "cid-1"})),
            ),
            ("POST", "/_fake/runners/1/sessions") => {
                let status = self
                    .state
                    .lock()
                    .expect("stub lock")
                    .session_status
                    .unwrap_or(201);
                (status, Some(json!({"session_id": "s-1"})))
            }
            ("GET", "/_fake/runners/1/message")
                if self.state.lock().expect("stub lock").deleted =>
            {
                (404, None)
            }
            ("GET", "/_fake/runners/1/message") => self.poll(),
            ("DELETE" | "POST", _) => (if method == "DELETE" { 204 } else { 200 }, None),
            _ => (404, None),
        }
    }

    /// A short long poll: up to one second.
    pub(super) fn poll(&self) -> (u16, Option<Value>) {
        let deadline = Instant::now() + Duration::from_secs(1);
        while Instant::now() < deadline {
            if let Some(msg) = self.state.lock().expect("stub lock").messages.pop_front() {
                return (200, Some(msg));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        (204, None)
    }
}

// ---------- process helpers ----------

pub(super) struct Proc {
    child: Child,
    out: Arc<Mutex<String>>,
}

pub(super) fn collect(stream: impl Read + Send + 'static, into: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            let mut text = into.lock().expect("output lock");
            text.push_str(&line);
            text.push('\n');
        }
    });
}

impl Proc {
    /// Starts a program with stdout and stderr merged into one captured string.
    pub(super) fn spawn(mut cmd: Command) -> Self {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = spawn_retrying(&mut cmd);
        let out = Arc::new(Mutex::new(String::new()));
        collect(child.stdout.take().expect("stdout"), out.clone());
        collect(child.stderr.take().expect("stderr"), out.clone());
        Self { child, out }
    }

    pub(super) fn output(&self) -> String {
        self.out.lock().expect("output lock").clone()
    }

    pub(super) fn wait_for(&self, text: &str) {
        let out = self.out.clone();
        wait_until(&format!("output containing {text:?}"), || {
            out.lock().expect("output lock").contains(text)
        });
    }

    pub(super) fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    /// Exit code, with a deadline; the process is killed if it overstays.
    pub(super) fn exit_code(&mut self) -> i32 {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                std::thread::sleep(Duration::from_millis(100)); // let the readers drain
                return status.code().unwrap_or(-1);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("process did not exit in time; output:\n{}", self.output());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A binary just copied by a parallel test can be briefly held open for writing by a
/// concurrently forked child (ETXTBSY); that clears once the child execs.
fn spawn_retrying(cmd: &mut Command) -> Child {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match cmd.spawn() {
            Ok(child) => return child,
            Err(e) if e.raw_os_error() == Some(26) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("spawn {cmd:?}: {e}"),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(super) fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub(super) fn tiny(dir: &Path) -> PathBuf {
    let root = FakeRunnerInstall::new()
        .poll_wait_secs(1)
        .session_conflict_retry_secs(1)
        .build(dir)
        .expect("build fake install");
    root.canonicalize().expect("canonical root")
}

pub(super) fn listener(root: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(root.join("bin/Runner.Listener"));
    cmd.args(args).current_dir(root);
    cmd
}

pub(super) fn config_sh(root: &Path, stub: &Stub, extra: &[&str]) -> Proc {
    let mut cmd = Command::new(root.join("config.sh"));
    cmd.args(["--unattended", "--url", &stub.url(), "--name", "r1"])
        .args(extra);
    cmd.env("RUNNER_ALLOW_RUNASROOT", "1").current_dir(root);
    Proc::spawn(cmd)
}

pub(super) fn diag_text(root: &Path, prefix: &str) -> String {
    let mut text = String::new();
    for entry in std::fs::read_dir(root.join("_diag"))
        .expect("read _diag")
        .flatten()
    {
        if entry.file_name().to_string_lossy().starts_with(prefix) {
            text.push_str(&std::fs::read_to_string(entry.path()).expect("read diag log"));
        }
    }
    text
}

/// A configured install (through config.sh) talking to a fresh stub.
pub(super) fn configured(dir: &Path) -> (PathBuf, Stub) {
    let root = tiny(dir);
    let stub = Stub::start();
    let mut cfg = config_sh(&root, &stub, &["--token", "good"]);
    assert_eq!(cfg.exit_code(), 0, "{}", cfg.output());
    (root, stub)
}

pub(super) fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}
