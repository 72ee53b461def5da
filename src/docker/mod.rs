//! Docker for jobs without handing them the host: each runner with `docker.enabled` gets a
//! Unix socket of its own, `<state_dir>/docker/<name>.sock`, that only its user can open,
//! and `DOCKER_HOST` pointing at it. Behind it a proxy forwards the Engine API to the real
//! engine and, on the way:
//!
//! - labels what jobs create (containers, networks, volumes, built and imported images)
//!   with `corral.runner`, `corral.job` (the job's `Runner.Worker`) and `corral.job.name`;
//! - shows each runner only its own objects (others' are "No such …"; images nobody owns,
//!   pulled or preloaded, are shared and can be used, not removed);
//! - refuses what the runner's policy forbids, with a message the `docker` CLI prints;
//! - streams bodies and hijacked connections unchanged.
//!
//! [`Hub`] is the whole interface the controller uses: serve a runner ([`Hub::serve`]),
//! tell it a job started or ended, remove a runner, stop everything, and read the counters.
//!
//! # Layout
//! - [`route`]: which API call a request is; [`policy`]: what may pass and the labels
//!   (both pure); [`mounts`]: where bind mounts may come from and lead;
//! - [`proxy`]: one runner's HTTP server, `calls`: the calls it checks on the way, `owner`:
//!   whose an object is; [`engine`]: the real engine's socket;
//! - [`reap`]: removing what ended jobs left; [`job`]: which job a client belongs to.

mod calls;
pub mod engine;
pub mod job;
pub mod mounts;
mod owner;
pub mod policy;
pub mod proxy;
pub mod reap;
pub mod route;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use nix::unistd::{Gid, Uid};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tracing::{info, warn};

pub use crate::config::DockerPolicy;
use engine::Engine;
use mounts::{HostPaths, Mounts};
use proxy::RunnerProxy;
use reap::{Reaped, Sweep};

/// Longest path a Unix socket address holds (`sun_path` less its final NUL).
const MAX_SOCKET_PATH: usize = 107;

/// The engine socket `corral run` uses: `DOCKER_HOST` when it names a Unix socket, else
/// `/var/run/docker.sock`.
pub fn engine_socket_from_env() -> PathBuf {
    std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/var/run/docker.sock"))
}

/// What serving a runner needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerSocket {
    /// Runner name.
    pub name: String,
    /// Its user, who alone may open the socket (`None`: corral's own).
    pub owner: Option<(Uid, Gid)>,
    /// Its `_work` directory (the runner's temp, `_work/_temp`, is inside).
    pub work: PathBuf,
    /// Paths its jobs may bind-mount read-only (its `externals`).
    pub read_only: Vec<PathBuf>,
    /// Its policy.
    pub policy: DockerPolicy,
}

/// One runner's counters, for status and `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// The socket's path.
    pub socket: String,
    /// Requests the policy refused.
    pub refused: u64,
    /// Containers reaped after jobs and at removal.
    pub reaped_containers: u64,
    /// Networks reaped.
    pub reaped_networks: u64,
    /// Volumes reaped.
    pub reaped_volumes: u64,
    /// Images reaped (over the budget, dangling build steps, all at removal).
    pub reaped_images: u64,
    /// Bytes of the runner's built images kept after the last sweep.
    pub image_bytes: u64,
    /// When the last sweep ended (RFC 3339).
    pub last_reap_at: Option<String>,
}

impl Counters {
    fn add(&mut self, reaped: Reaped) {
        self.reaped_containers += reaped.containers;
        self.reaped_networks += reaped.networks;
        self.reaped_volumes += reaped.volumes;
        self.reaped_images += reaped.images;
        self.image_bytes = reaped.image_bytes;
        self.last_reap_at =
            Some(humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string());
    }
}

/// Why a runner's socket cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// The socket or its directory could not be made.
    #[error("cannot create the Docker socket `{}`", path.display())]
    Socket {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The path is too long for a Unix socket.
    #[error("the Docker socket path `{}` is longer than {MAX_SOCKET_PATH} bytes; use a shorter `state_dir`", .0.display())]
    PathTooLong(PathBuf),
}

struct Served {
    spec: RunnerSocket,
    proxy: Arc<RunnerProxy>,
    task: JoinHandle<()>,
}

/// Every runner's socket, and the engine behind them.
pub struct Hub {
    engine: Engine,
    dir: PathBuf,
    served: Mutex<BTreeMap<String, Served>>,
    /// Runners whose sweep is running, so two never overlap.
    sweeping: Arc<tokio::sync::Mutex<()>>,
    counters: Mutex<BTreeMap<String, Arc<Mutex<Counters>>>>,
    host: tokio::sync::OnceCell<HostPaths>,
}

impl Hub {
    /// A hub for runners under `state_dir`, forwarding to the engine at `engine_socket`.
    pub fn new(engine_socket: impl Into<PathBuf>, state_dir: &Path) -> Self {
        Hub {
            engine: Engine::new(engine_socket),
            dir: state_dir.join("docker"),
            served: Mutex::new(BTreeMap::new()),
            sweeping: Arc::new(tokio::sync::Mutex::new(())),
            counters: Mutex::new(BTreeMap::new()),
            host: tokio::sync::OnceCell::new(),
        }
    }

    /// Where runner `name`'s socket is.
    pub fn socket_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.sock"))
    }

    /// The environment a runner's listener gets for its socket.
    pub fn env_for(&self, name: &str) -> Vec<(String, String)> {
        vec![(
            "DOCKER_HOST".into(),
            format!("unix://{}", self.socket_path(name).display()),
        )]
    }

    /// Serves `spec.name`'s socket (again, when its spec changed); idempotent. The first
    /// time in this corral, what jobs that are gone left behind is reaped.
    pub async fn serve(&self, spec: RunnerSocket) -> Result<Vec<(String, String)>, DockerError> {
        let name = spec.name.clone();
        if self.with_served(|s| {
            s.get(&name)
                .is_some_and(|s| s.spec == spec && !s.task.is_finished())
        }) {
            return Ok(self.env_for(&name));
        }
        let host = self
            .host
            .get_or_init(|| detect_host_paths(&self.engine))
            .await
            .clone();
        let socket = self.socket_path(&name);
        let listener = bind(&self.dir, &socket, spec.owner)?;
        let counters = self.counters_of(&name);
        lock(&counters).socket = socket.to_string_lossy().into_owned();
        let mounts = Mounts {
            runner: name.clone(),
            roots: std::iter::once(&spec.work)
                .chain(&spec.policy.allow_mounts)
                .filter_map(|p| mounts::resolve_lexically_missing(p))
                .collect(),
            read_only_roots: spec
                .read_only
                .iter()
                .filter_map(|p| mounts::resolve_lexically_missing(p))
                .collect(),
            engine_sockets: engine_socket_names(self.engine.socket()),
            own_socket: socket.clone(),
            host,
        };
        let proxy = Arc::new(RunnerProxy {
            name: name.clone(),
            policy: spec.policy.clone(),
            mounts,
            engine: self.engine.clone(),
            job_name: Mutex::new(None),
            last_job: Mutex::new(None),
            built: Arc::new(Mutex::new(BTreeSet::new())),
            counters,
        });
        let task = tokio::spawn(accept(listener, Arc::clone(&proxy)));
        let first = self.with_served(|s| {
            let first = !s.contains_key(&name);
            if let Some(old) = s.insert(name.clone(), Served { spec, proxy, task }) {
                old.task.abort();
            }
            first
        });
        info!(runner = %name, socket = %socket.display(), "serving a Docker socket");
        if first {
            self.job_ended(&name);
        }
        Ok(self.env_for(&name))
    }

    /// True while runner `name`'s socket is served.
    pub fn is_serving(&self, name: &str) -> bool {
        self.with_served(|s| s.get(name).is_some_and(|s| !s.task.is_finished()))
    }

    /// The controller saw runner `name` start job `job`: later objects carry its name.
    pub fn job_started(&self, name: &str, job: &str) {
        self.with_served(|s| {
            if let Some(served) = s.get(name) {
                *lock(&served.proxy.job_name) = Some(job.to_string());
            }
        });
    }

    /// The controller saw a job of runner `name` end: what ended jobs left is reaped in
    /// the background.
    pub fn job_ended(&self, name: &str) {
        let Some((proxy, budget)) = self.with_served(|s| {
            s.get(name).map(|served| {
                *lock(&served.proxy.job_name) = None;
                (Arc::clone(&served.proxy), served.spec.policy.image_budget)
            })
        }) else {
            return;
        };
        let (engine, lock_all) = (self.engine.clone(), Arc::clone(&self.sweeping));
        let name = name.to_string();
        tokio::spawn(async move {
            let _one_at_a_time = lock_all.lock().await;
            let built = std::mem::take(&mut *lock(&proxy.built));
            run_sweep(
                &engine,
                &name,
                Sweep::EndedJobs { budget },
                built,
                &proxy.counters,
            )
            .await;
        });
    }

    /// Runner `name` is removed: its socket closes and everything labelled with it goes.
    /// Does nothing for a runner that never had a socket.
    pub async fn remove(&self, name: &str) {
        let served = self.with_served(|s| s.remove(name));
        let socket = self.socket_path(name);
        let had_socket = served.is_some() || socket.exists();
        let built = served
            .as_ref()
            .map(|s| std::mem::take(&mut *lock(&s.proxy.built)));
        if let Some(served) = served {
            served.task.abort();
        }
        if !had_socket {
            return;
        }
        let _ = std::fs::remove_file(&socket);
        let counters = self.counters_of(name);
        let _one_at_a_time = self.sweeping.lock().await;
        run_sweep(
            &self.engine,
            name,
            Sweep::Everything,
            built.unwrap_or_default(),
            &counters,
        )
        .await;
    }

    /// corral is stopping, after its listeners: every socket closes, and what their jobs
    /// left is reaped (the jobs ended with their listeners).
    pub async fn stop_all(&self) {
        let served = self.with_served(std::mem::take);
        let _one_at_a_time = self.sweeping.lock().await;
        for (name, served) in served {
            served.task.abort();
            let built = std::mem::take(&mut *lock(&served.proxy.built));
            let budget = served.spec.policy.image_budget;
            run_sweep(
                &self.engine,
                &name,
                Sweep::EndedJobs { budget },
                built,
                &served.proxy.counters,
            )
            .await;
            let _ = std::fs::remove_file(self.socket_path(&name));
        }
    }

    /// Every runner's counters.
    pub fn counters(&self) -> BTreeMap<String, Counters> {
        lock(&self.counters)
            .iter()
            .map(|(name, c)| (name.clone(), lock(c).clone()))
            .collect()
    }

    /// Forgets the counters of runners not in `names`.
    pub fn retain_counters(&self, names: &BTreeSet<String>) {
        lock(&self.counters).retain(|n, _| names.contains(n));
    }

    fn counters_of(&self, name: &str) -> Arc<Mutex<Counters>> {
        Arc::clone(lock(&self.counters).entry(name.to_string()).or_default())
    }

    fn with_served<T>(&self, f: impl FnOnce(&mut BTreeMap<String, Served>) -> T) -> T {
        f(&mut lock(&self.served))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn run_sweep(
    engine: &Engine,
    name: &str,
    sweep: Sweep,
    built: BTreeSet<String>,
    counters: &Mutex<Counters>,
) {
    match reap::sweep(engine, name, sweep, built).await {
        Ok(reaped) => {
            if reaped
                != (Reaped {
                    image_bytes: reaped.image_bytes,
                    ..Reaped::default()
                })
            {
                info!(runner = %name, containers = reaped.containers, networks = reaped.networks,
                    volumes = reaped.volumes, images = reaped.images, "reaped what the runner's jobs left");
            }
            lock(counters).add(reaped);
        }
        Err(err) => {
            warn!(runner = %name, cause = %crate::error_chain(&err), "cannot reap the runner's Docker objects");
        }
    }
}

/// Accepts clients until the task is aborted.
async fn accept(listener: tokio::net::UnixListener, proxy: Arc<RunnerProxy>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(Arc::clone(&proxy).serve_connection(stream));
            }
            Err(err) => {
                warn!(runner = %proxy.name, cause = %err, "cannot accept on the Docker socket");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// Binds `socket` in corral's directory `dir` (not the runner's to write, so nothing can be
/// swapped in) and hands it to `owner` alone.
fn bind(
    dir: &Path,
    socket: &Path,
    owner: Option<(Uid, Gid)>,
) -> Result<tokio::net::UnixListener, DockerError> {
    if socket.as_os_str().len() > MAX_SOCKET_PATH {
        return Err(DockerError::PathTooLong(socket.to_path_buf()));
    }
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DockerError::Socket { path, source }
    };
    std::fs::create_dir_all(dir).map_err(err(dir))?;
    // Others may pass through to their own socket, not list or change the directory.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711)).map_err(err(dir))?;
    match std::fs::remove_file(socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(socket)(e)),
    }
    let listener = tokio::net::UnixListener::bind(socket).map_err(err(socket))?;
    if let Some((uid, gid)) = owner {
        nix::unistd::fchownat(
            None,
            socket,
            Some(uid),
            Some(gid),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| err(socket)(e.into()))?;
    }
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
        .map_err(err(socket))?;
    Ok(listener)
}

/// The names a job may use for the engine's socket in a bind mount.
fn engine_socket_names(engine: &Path) -> Vec<PathBuf> {
    let mut names = vec![
        PathBuf::from("/var/run/docker.sock"),
        PathBuf::from("/run/docker.sock"),
        engine.to_path_buf(),
    ];
    if let Ok(real) = std::fs::canonicalize(engine) {
        names.push(real);
    }
    names
}

/// corral's volumes as the engine's host sees them, when corral runs in a container.
async fn detect_host_paths(engine: &Engine) -> HostPaths {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let Some(id) = mounts::container_id(&mountinfo) else {
        return HostPaths::default();
    };
    let mounts = match engine.get(&format!("/containers/{id}/json")).await {
        Ok(Some(me)) => me["Mounts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| {
                Some((
                    PathBuf::from(m["Destination"].as_str()?),
                    PathBuf::from(m["Source"].as_str()?),
                ))
            })
            .collect(),
        other => {
            warn!(container = %id, answer = ?other.map(|_| ()), "corral runs in a container the engine does not show; bind mounts from jobs are refused");
            Vec::new()
        }
    };
    info!(container = %id, volumes = mounts.len(), "corral runs in a container: job bind mounts are translated to host paths");
    HostPaths {
        mounts,
        in_container: true,
    }
    .sorted()
}
