//! `corral::bases`: installing runner releases from the fake GitHub on loopback — checksums,
//! faults, archives that try to escape, `latest`, digests from the release asset.

use std::fs;
use std::future::Future;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use corral::bases::{resolve, BaseStore, BasesError, Release};
use corral::provision::Base;
use tempfile::TempDir;

use crate::kit::github::{DownloadFault, FakeGitHub};
use crate::kit::install::FakeRunnerInstall;
use crate::kit::proc::TIMEOUT;
use crate::kit::tarball::{malicious_tar_gz, sha256_hex, tar_gz_of_dir, Evil};

pub const V: &str = "2.336.0";

/// A fake GitHub, a state dir and a sentinel dir beside it that no install may touch.
pub struct Env {
    pub tmp: TempDir,
    pub state: PathBuf,
    pub outside: PathBuf,
    pub gh: FakeGitHub,
    pub store: BaseStore,
}

impl Env {
    pub fn new() -> Self {
        let tmp = TempDir::new().expect("temp dir");
        let state = tmp.path().join("state");
        let outside = tmp.path().join("outside");
        fs::create_dir_all(&outside).expect("sentinel dir");
        fs::write(outside.join("secret"), "secret").expect("sentinel file");
        let store = BaseStore::new(&state).expect("store");
        Self {
            tmp,
            state,
            outside,
            gh: FakeGitHub::start(),
            store,
        }
    }

    /// Publishes `version` with the fake runner tarball and its digest.
    pub fn publish(&self, version: &str) {
        let bytes = runner_tarball().to_vec();
        let digest = Some(format!("sha256:{}", sha256_hex(&bytes)));
        self.gh.add_runner_release(version, bytes, digest);
    }

    pub async fn release(
        &self,
        version: &str,
        sha256: Option<&str>,
    ) -> Result<Release, BasesError> {
        let template = self.gh.download_url_template();
        resolve(&self.gh.api_url(), version, "x64", &template, sha256).await
    }

    pub async fn install(&self, version: &str) -> Result<PathBuf, BasesError> {
        let release = self.release(version, None).await?;
        self.store.install(&release).await
    }

    /// Names directly under `<state>/bases` (none when it does not exist).
    pub fn bases_entries(&self) -> Vec<String> {
        let Ok(entries) = fs::read_dir(self.store.root()) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// The sentinel dir holds only its untouched `secret`, linked once.
    pub fn assert_outside_untouched(&self) {
        let names: Vec<_> = fs::read_dir(&self.outside)
            .expect("sentinel dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["secret"], "something was written outside");
        let secret = self.outside.join("secret");
        assert_eq!(fs::read_to_string(&secret).expect("secret"), "secret");
        assert_eq!(fs::metadata(&secret).expect("secret").nlink(), 1);
        assert!(!self.tmp.path().join("pwned").exists());
    }
}

/// The tarball of a tiny fake runner install, built once per test binary.
pub fn runner_tarball() -> &'static [u8] {
    static TARBALL: OnceLock<Vec<u8>> = OnceLock::new();
    TARBALL.get_or_init(|| {
        let dir = TempDir::new().expect("temp dir");
        let root = FakeRunnerInstall::new()
            .build(&dir.path().join("runner"))
            .expect("fake install");
        tar_gz_of_dir(&root).expect("tarball")
    })
}

/// Runs `f` with the kit's deadline.
pub async fn within<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(TIMEOUT, f)
        .await
        .expect("test deadline")
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[tokio::test]
async fn installs_a_release_with_modes_symlinks_and_manifest() {
    within(async {
        let env = Env::new();
        env.publish(V);
        let path = env.install(V).await.expect("install");
        assert_eq!(path, env.state.join("bases").join(V));
        Base::open(&path).expect("a pristine runner base");
        let listener = fs::metadata(path.join("bin/Runner.Listener")).expect("listener");
        assert_eq!(listener.mode() & 0o111, 0o111, "executable bits kept");
        let npm = path.join("externals/node20/bin/npm");
        assert!(fs::symlink_metadata(&npm)
            .expect("npm")
            .file_type()
            .is_symlink());
        assert_eq!(
            fs::read_link(&npm).expect("npm link"),
            Path::new("../lib/node_modules/npm/bin/npm-cli.js")
        );
        assert!(npm.is_file(), "the link resolves inside the tree");
        if is_root() {
            assert_eq!(listener.mode() & 0o222, 0, "read-only as root");
            assert_eq!(listener.uid(), 0);
            let bin = fs::metadata(path.join("bin")).expect("bin");
            assert_eq!(bin.permissions().mode() & 0o222, 0);
        }
        assert_eq!(env.store.verify(V).expect("verify"), []);
        assert_eq!(env.bases_entries(), [V, &format!("{V}.manifest.json")]);
        let listed = env.store.list().expect("list");
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].version, V);
        assert!(listed[0].bytes > 1000);
        let downloads: Vec<_> = env
            .gh
            .requests()
            .into_iter()
            .filter(|r| r.path.starts_with("/_downloads/"))
            .collect();
        assert_eq!(downloads.len(), 1);
        assert!(
            !downloads[0]
                .headers
                .iter()
                .any(|(k, _)| k == "authorization"),
            "no token to a download host"
        );
    })
    .await;
}

#[tokio::test]
async fn a_second_install_is_a_no_op() {
    within(async {
        let env = Env::new();
        env.publish(V);
        let first = env.install(V).await.expect("install");
        let second = env.install(V).await.expect("install again");
        assert_eq!(first, second);
        assert_eq!(env.gh.download_count(), 1);
    })
    .await;
}

#[tokio::test]
async fn a_checksum_mismatch_installs_nothing() {
    within(async {
        let env = Env::new();
        env.publish(V);
        let wrong = "0".repeat(64);
        let release = env.release(V, Some(&wrong)).await.expect("resolve");
        let err = env.store.install(&release).await.expect_err("mismatch");
        let text = err.to_string();
        assert!(matches!(err, BasesError::Checksum { .. }), "{err:?}");
        assert!(
            text.contains(&wrong) && text.contains(&sha256_hex(runner_tarball())),
            "{text}"
        );
        assert_eq!(
            env.bases_entries(),
            Vec::<String>::new(),
            "download removed"
        );
    })
    .await;
}

#[tokio::test]
async fn wrong_bytes_from_the_server_are_refused() {
    within(async {
        let env = Env::new();
        env.publish(V);
        env.gh.push_download_fault(DownloadFault::WrongBytes);
        let err = env.install(V).await.expect_err("wrong bytes");
        assert!(matches!(err, BasesError::Checksum { .. }), "{err:?}");
        assert_eq!(env.bases_entries(), Vec::<String>::new());
        // The next download is good.
        env.install(V).await.expect("install after the fault");
    })
    .await;
}

#[tokio::test]
async fn a_truncated_download_installs_nothing() {
    within(async {
        let env = Env::new();
        env.publish(V);
        env.gh.push_download_fault(DownloadFault::Truncated);
        let err = env.install(V).await.expect_err("truncated");
        assert!(
            matches!(err, BasesError::Http { .. } | BasesError::Truncated { .. }),
            "{err:?}"
        );
        assert_eq!(env.bases_entries(), Vec::<String>::new());
        env.gh.push_download_fault(DownloadFault::Status(500));
        let err = env.install(V).await.expect_err("500");
        assert!(
            matches!(err, BasesError::Status { status: 500, .. }),
            "{err:?}"
        );
        assert_eq!(env.bases_entries(), Vec::<String>::new());
    })
    .await;
}

#[tokio::test]
async fn archives_that_escape_are_refused_and_write_nothing_outside() {
    within(async {
        let env = Env::new();
        let cases = [
            (Evil::ParentDir, "outside/pwned", "`..`"),
            (Evil::Absolute, "/pwned", "absolute path"),
            (Evil::SymlinkOut, "./escape", "outside"),
            (Evil::SymlinkChain, "./b", "outside"),
            (Evil::HardLinkOut, "./stolen", "hard link"),
            (Evil::Fifo, "./bin/pipe", "fifo"),
        ];
        for (i, (evil, entry, reason)) in cases.into_iter().enumerate() {
            let version = format!("2.0.{i}");
            let bytes = malicious_tar_gz(evil, &env.outside).expect("archive");
            let release = Release {
                version: version.clone(),
                url: format!(
                    "{}/_downloads/actions-runner-linux-x64-{version}.tar.gz",
                    env.gh.web_url()
                ),
                sha256: Some(sha256_hex(&bytes)),
            };
            env.gh.add_runner_release(&version, bytes, None);
            let err = env.store.install(&release).await.expect_err("refused");
            let BasesError::UnsafeEntry {
                entry: name,
                reason: why,
            } = &err
            else {
                panic!("{evil:?}: {err:?}");
            };
            assert!(
                name.contains(entry) && why.contains(reason),
                "{evil:?}: {err}"
            );
            env.assert_outside_untouched();
            assert_eq!(env.bases_entries(), Vec::<String>::new(), "{evil:?}");
        }
    })
    .await;
}

#[tokio::test]
async fn latest_resolves_through_the_releases_api() {
    within(async {
        let env = Env::new();
        env.publish(V);
        env.publish("2.337.1");
        env.gh.set_latest("2.337.1");
        let release = env.release("latest", None).await.expect("resolve latest");
        assert_eq!(release.version, "2.337.1");
        assert!(release
            .url
            .ends_with("/_downloads/actions-runner-linux-x64-2.337.1.tar.gz"));
        assert_eq!(
            release.sha256.as_deref(),
            Some(sha256_hex(runner_tarball()).as_str())
        );
        let path = env.store.install(&release).await.expect("install latest");
        assert!(path.ends_with("2.337.1"));
    })
    .await;
}

#[tokio::test]
async fn the_digest_comes_from_config_else_the_asset_else_it_is_refused() {
    within(async {
        let env = Env::new();
        env.publish(V);
        let from_asset = env.release(V, None).await.expect("resolve");
        assert_eq!(
            from_asset.sha256.as_deref(),
            Some(sha256_hex(runner_tarball()).as_str())
        );

        let bytes = runner_tarball().to_vec();
        env.gh.add_runner_release("2.300.0", bytes, None);
        let err = env
            .release("2.300.0", None)
            .await
            .expect_err("no digest anywhere");
        assert!(matches!(err, BasesError::NoChecksum { .. }), "{err:?}");
        assert!(err.to_string().contains("base.sha256"), "{err}");

        let sha = sha256_hex(runner_tarball()).to_uppercase();
        let from_config = env.release("2.300.0", Some(&sha)).await.expect("resolve");
        assert_eq!(from_config.sha256, Some(sha.to_lowercase()));
        env.store.install(&from_config).await.expect("install");

        let err = env
            .release("2.999.0", None)
            .await
            .expect_err("unknown release");
        assert!(
            matches!(err, BasesError::Status { status: 404, .. }),
            "{err:?}"
        );
    })
    .await;
}
