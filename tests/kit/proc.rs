//! Child processes for tests, and waiting with a deadline.
//!
//! Tests run in parallel in one binary, so everything here is per-process and nothing blocks
//! forever: every wait has [`TIMEOUT`] as its deadline and fails the test with what it was
//! waiting for.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

/// The deadline of every wait in this module.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// How often conditions are re-checked.
const TICK: Duration = Duration::from_millis(20);

/// A running child with stdout and stderr captured into one string; killed when dropped.
pub struct Proc {
    child: Child,
    out: Arc<Mutex<String>>,
    /// Set when the child leads its own process group, so drop reaps its descendants too.
    group: bool,
}

impl Proc {
    /// Starts `cmd` (stdin from `/dev/null`, stdout and stderr merged in arrival order by line).
    pub fn spawn(cmd: Command) -> Self {
        Self::start(cmd, false)
    }

    /// Like [`Proc::spawn`], but the child leads a new process group: [`Proc::signal_group`]
    /// then acts like Ctrl-C on a terminal, and drop kills the whole tree (e.g. `run.sh` →
    /// `run-helper.sh` → `Runner.Listener` → `Runner.Worker`), not only the script.
    pub fn spawn_group(mut cmd: Command) -> Self {
        cmd.process_group(0);
        Self::start(cmd, true)
    }

    fn start(mut cmd: Command, group: bool) -> Self {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = spawn_retrying(&mut cmd);
        let out = Arc::new(Mutex::new(String::new()));
        collect(child.stdout.take().expect("stdout is piped"), out.clone());
        collect(child.stderr.take().expect("stderr is piped"), out.clone());
        Self { child, out, group }
    }

    /// Everything printed so far.
    pub fn output(&self) -> String {
        self.out.lock().expect("output lock").clone()
    }

    /// Waits until the output contains `text`.
    pub fn wait_for(&self, text: &str) {
        let out = self.out.clone();
        wait_until(&format!("output containing {text:?}"), || {
            out.lock().expect("output lock").contains(text)
        });
    }

    /// The child's pid.
    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    /// Sends `sig` to the child only.
    pub fn signal(&self, sig: Signal) {
        kill(self.pid(), sig).expect("signal the child");
    }

    /// Sends `sig` to the child's whole process group (needs [`Proc::spawn_group`]).
    pub fn signal_group(&self, sig: Signal) {
        assert!(self.group, "signal_group needs Proc::spawn_group");
        killpg(self.pid(), sig).expect("signal the child's group");
    }

    /// Exit code (`-1` if killed by a signal), with a deadline; the child is killed and the
    /// test fails with its output if it overstays.
    pub fn exit_code(&mut self) -> i32 {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                // The readers hold the pipes; they finish once every writer (grandchildren
                // included) has closed them, which a dead child does not guarantee at once.
                std::thread::sleep(Duration::from_millis(100));
                return status.code().unwrap_or(-1);
            }
            if Instant::now() > deadline {
                self.kill();
                panic!("process did not exit in time; output:\n{}", self.output());
            }
            std::thread::sleep(TICK);
        }
    }

    fn kill(&mut self) {
        if self.group {
            let _ = killpg(self.pid(), Signal::SIGKILL);
        }
        let _ = self.child.kill();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        let _ = self.child.wait();
    }
}

/// Appends each line of `stream` to `into` from a thread of its own.
fn collect(stream: impl Read + Send + 'static, into: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            let mut text = into.lock().expect("output lock");
            text.push_str(&line);
            text.push('\n');
        }
    });
}

/// Spawns `cmd`, retrying on `ETXTBSY`: a binary just copied by a parallel test can be briefly
/// held open for writing by a child that another thread forked meanwhile; that clears as soon
/// as the child execs.
pub fn spawn_retrying(cmd: &mut Command) -> Child {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match cmd.spawn() {
            Ok(child) => return child,
            Err(e)
                if e.raw_os_error() == Some(nix::errno::Errno::ETXTBSY as i32)
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(TICK);
            }
            Err(e) => panic!("spawn {cmd:?}: {e}"),
        }
    }
}

/// Polls `cond` until it holds; fails the test naming `what` after [`TIMEOUT`].
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(TICK);
    }
}
