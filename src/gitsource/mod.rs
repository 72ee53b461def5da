//! Fetching the `source.git` repository (DESIGN.md §6) with the `git` command.
//!
//! Why the command and not gix or git2: the command is what users already have configured
//! and debug with (ssh, proxies, `https` CA bundles all behave as in their shell), it speaks
//! every transport (`https://`, `ssh://`, `file://`) and shallow fetch without extra native
//! libraries in the build (git2 links libgit2 + OpenSSL/libssh2; gix's shallow and https
//! support need large feature sets), and each fetch is a child process corral can bound with a
//! deadline and kill, so a hung remote never blocks the controller.
//!
//! git runs with a cleared environment but for `PATH`, `HOME`, the proxy variables
//! (`HTTPS_PROXY`, `NO_PROXY`, …), the CA bundle ones (`SSL_CERT_FILE`, `GIT_SSL_CAINFO`, …) and
//! `SSH_AUTH_SOCK`, and without the user's global or system git config (a credential helper
//! there could store the token on disk).
//!
//! Credentials never reach argv, a URL or a log: git runs with a cleared environment; an https
//! token is handed over by an askpass script (written by corral, holding no secret) that prints
//! the token from a variable set only in that git child's environment, or from the token file;
//! for an `ssh://` URL ssh runs as `ssh -F <state_dir>/source/ssh_config`, a file corral writes
//! naming the key (`ssh_key_file`) and the `known_hosts` file (`known_hosts_file`), so not even
//! the key's path is on a command line. Host keys are checked as ssh always does
//! (`StrictHostKeyChecking` stays ssh's default, and `BatchMode` refuses an unknown host): a
//! `known_hosts_file` of the source's own, else ssh's own files. ssh finds `~` from the
//! password database, not `HOME`.
//!
//! Each fetch is shallow (`--depth 1`) into the bare repository `<state_dir>/source/repo.git`;
//! the commit is `FETCH_HEAD`, the file is read with `git cat-file` from that commit, so a
//! revision is one commit's file, whole. A forced push is followed: what counts is the commit
//! `ref` names now, not how it got there. A deleted `ref` is an error (the last good revision
//! stays in force).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;

use crate::config::{Fleet, GitSource};

mod command;
mod error;

use command::{git, run};
pub use error::GitSourceError;

/// Longest a single git command may run.
pub const FETCH_DEADLINE: Duration = Duration::from_secs(120);
/// First retry after a failed fetch; doubles up to the interval.
const FIRST_RETRY: Duration = Duration::from_secs(1);

/// The outcome of one fetch, for the controller.
#[derive(Debug)]
pub struct Fetched {
    /// When the fetch ended.
    pub at: SystemTime,
    /// The commit's file, or why there is none.
    pub result: Result<Fleet, GitSourceError>,
}

/// The fetch task of one source, and how to ask it to fetch now.
pub struct Follower {
    /// The source it follows (revision ignored).
    pub source: GitSource,
    kick: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Follower {
    /// Starts fetching `source` into `<state_dir>/source`, at once and then every interval;
    /// each result is handed to `deliver`, which says whether anyone still listens (`false`
    /// ends the task). A callback rather than the controller's channel, so this module does
    /// not depend on the controller that wraps each result into its own trigger.
    pub fn spawn(
        source: GitSource,
        state_dir: &Path,
        deliver: impl FnMut(Fetched) -> bool + Send + 'static,
        kick: Arc<Notify>,
    ) -> Self {
        let dir = state_dir.join("source");
        let task = tokio::spawn(follow(source.clone(), dir, deliver, kick.clone()));
        Follower { source, kick, task }
    }

    /// Fetches now (a push webhook).
    pub fn fetch_now(&self) {
        self.kick.notify_one();
    }

    /// Stops fetching and returns once the task has ended.
    pub async fn stop(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn follow(
    source: GitSource,
    dir: PathBuf,
    mut deliver: impl FnMut(Fetched) -> bool,
    kick: Arc<Notify>,
) {
    let mut failures: u32 = 0;
    loop {
        let result = fetch(&source, &dir, FETCH_DEADLINE).await;
        let wait = match &result {
            Ok(_) => {
                failures = 0;
                source.interval
            }
            Err(err) => {
                failures = failures.saturating_add(1);
                let wait = retry_after(failures, source.interval);
                tracing::warn!(url = %source.url, git_ref = %source.git_ref, cause = %crate::error_chain(err), retry_in = ?wait,
                    "cannot fetch the source; the last good revision stays in force");
                wait
            }
        };
        let fetched = Fetched {
            at: SystemTime::now(),
            result,
        };
        if !deliver(fetched) {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = kick.notified() => {}
        }
    }
}

/// The wait after `failures` failed fetches in a row: 1 s doubling, at most `interval`.
pub fn retry_after(failures: u32, interval: Duration) -> Duration {
    let doubled = FIRST_RETRY.saturating_mul(1u32 << failures.saturating_sub(1).min(20));
    doubled.min(interval)
}

/// Fetches `source`'s `ref` (shallow) into the bare repository under `dir` and reads its file.
pub async fn fetch(
    source: &GitSource,
    dir: &Path,
    deadline: Duration,
) -> Result<Fleet, GitSourceError> {
    std::fs::create_dir_all(dir).map_err(|source| GitSourceError::Local {
        what: "create",
        path: dir.to_path_buf(),
        source,
    })?;
    let repo = dir.join("repo.git");
    if !repo.join("HEAD").exists() {
        let _ = std::fs::remove_dir_all(&repo);
        let mut init = git(source, dir)?;
        init.arg("init").arg("--bare").arg("-q").arg(&repo);
        run(init, deadline, "git init").await?;
    }
    let commit = fetch_ref(source, dir, &repo, deadline).await?;
    keep_only(source, dir, &repo, &commit, deadline).await?;
    let mut show = git(source, dir)?;
    show.arg("-C")
        .arg(&repo)
        .args(["cat-file", "blob"])
        .arg(format!("{commit}:{}", source.path));
    let bytes =
        run(show, deadline, "git cat-file")
            .await
            .map_err(|err| GitSourceError::NoFile {
                commit: commit.clone(),
                path: source.path.clone(),
                source: Box::new(err),
            })?;
    let text = String::from_utf8(bytes).map_err(|_| GitSourceError::NotText {
        commit: commit.clone(),
        path: source.path.clone(),
    })?;
    Ok(Fleet { commit, text })
}

/// Fetches `ref` into `repo`; returns the commit it names now.
async fn fetch_ref(
    source: &GitSource,
    dir: &Path,
    repo: &Path,
    deadline: Duration,
) -> Result<String, GitSourceError> {
    let mut fetch = git(source, dir)?;
    fetch
        .arg("-C")
        .arg(repo)
        .args(["fetch", "--depth", "1", "--no-tags", "--force", "--quiet"])
        .arg(&source.url)
        .arg(&source.git_ref);
    run(fetch, deadline, "git fetch").await.map_err(|err| {
        if err.is_missing_ref() {
            GitSourceError::RefGone {
                git_ref: source.git_ref.clone(),
                source: Box::new(err),
            }
        } else {
            err
        }
    })?;
    let mut parse = git(source, dir)?;
    parse
        .arg("-C")
        .arg(repo)
        .args(["rev-parse", "--verify", "--quiet", "FETCH_HEAD^{commit}"]);
    let commit = String::from_utf8_lossy(&run(parse, deadline, "git rev-parse").await?)
        .trim()
        .to_string();
    if commit.len() != 40 || !commit.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(GitSourceError::NotACommit(commit));
    }
    Ok(commit)
}

/// Keeps `commit` by a ref and, when it is new, drops every other object, so the clone
/// holds one commit's objects however long it is followed.
async fn keep_only(
    source: &GitSource,
    dir: &Path,
    repo: &Path,
    commit: &str,
    deadline: Duration,
) -> Result<(), GitSourceError> {
    // A ref keeps the commit through gc; the shallow clone then holds one commit's objects.
    let before = std::fs::read_to_string(repo.join("refs/corral/fetched")).unwrap_or_default();
    if before.trim() == commit {
        return Ok(());
    }
    let mut keep = git(source, dir)?;
    keep.arg("-C")
        .arg(repo)
        .args(["update-ref", "refs/corral/fetched", commit]);
    run(keep, deadline, "git update-ref").await?;
    let mut gc = git(source, dir)?;
    gc.arg("-C")
        .arg(repo)
        .args(["gc", "--quiet", "--prune=now"]);
    if let Err(err) = run(gc, deadline, "git gc").await {
        tracing::debug!(cause = %crate::error_chain(&err), "git gc of the source clone failed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_to_the_interval() {
        let i = Duration::from_secs(60);
        assert_eq!(retry_after(1, i), Duration::from_secs(1));
        assert_eq!(retry_after(2, i), Duration::from_secs(2));
        assert_eq!(retry_after(4, i), Duration::from_secs(8));
        assert_eq!(retry_after(30, i), i);
    }

    /// A repository at `dir/remote` with one commit holding `runners.yaml` on `main`.
    fn remote_with_one_commit(dir: &Path) -> String {
        let git = |args: &[&str]| {
            let out = std::process::Command::new("git")
                .args(["-c", "user.name=t", "-c", "user.email=t@t", "-C"])
                .arg(dir.join("remote"))
                .args(args)
                .output()
                .expect("git runs");
            assert!(out.status.success(), "git {args:?}: {out:?}");
        };
        std::fs::create_dir_all(dir.join("remote")).expect("mkdir");
        git(&["init", "-q", "-b", "main"]);
        std::fs::write(dir.join("remote/runners.yaml"), "runners: []\n").expect("write");
        git(&["add", "runners.yaml"]);
        git(&["commit", "-q", "-m", "one"]);
        format!("file://{}", dir.join("remote").display())
    }

    async fn fetch_bounded(source: &GitSource, clone: &Path) -> Result<Fleet, GitSourceError> {
        let deadline = Duration::from_secs(30);
        tokio::time::timeout(Duration::from_secs(60), fetch(source, clone, deadline))
            .await
            .expect("git ends in time")
    }

    #[tokio::test]
    async fn each_failure_is_its_own_error_with_gits_report_as_the_cause() {
        let dir = tempfile::tempdir().expect("tempdir");
        let source = GitSource {
            url: remote_with_one_commit(dir.path()),
            git_ref: "main".into(),
            path: "runners.yaml".into(),
            interval: Duration::from_secs(60),
            credential: None,
            known_hosts: None,
            revision: None,
        };
        let clone = dir.path().join("clone");

        let fleet = fetch_bounded(&source, &clone).await;
        assert_eq!(fleet.expect("fetched").text, "runners: []\n");

        let gone = GitSource {
            git_ref: "gone".into(),
            ..source.clone()
        };
        let err = fetch_bounded(&gone, &clone).await;
        let err = err.expect_err("no such ref");
        assert!(
            matches!(&err, GitSourceError::RefGone { git_ref, source }
                if git_ref == "gone" && matches!(**source, GitSourceError::Failed { what: "git fetch", .. })),
            "{err:?}"
        );
        let text = crate::error_chain(&err);
        assert!(
            text.starts_with("`gone` is not in the repository (deleted?): git fetch failed"),
            "{text}"
        );

        let elsewhere = GitSource {
            path: "missing.yaml".into(),
            ..source
        };
        let err = fetch_bounded(&elsewhere, &clone).await;
        let err = err.expect_err("no such file");
        assert!(
            matches!(&err, GitSourceError::NoFile { path, .. } if path == "missing.yaml"),
            "{err:?}"
        );
        assert!(
            crate::error_chain(&err).contains(": git cat-file failed"),
            "{err:?}"
        );
    }
}
