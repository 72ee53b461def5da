//! Runner dirs from one base (issue 3): links, atomicity, fallbacks, removal, re-base.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use corral::layout::StateLayout;
use corral::provision::{Base, BaseError, FileOps, Provisioned, Provisioner, RealOps};
use nix::unistd::{Gid, Uid};
use sha2::{Digest, Sha256};

use crate::kit::install::FakeRunnerInstall;

/// Real file operations, except the faults asked for.
#[derive(Default)]
pub struct Faulty {
    /// Every hard link fails with this errno.
    pub link_errno: Option<i32>,
    /// Every reflink fails with this errno.
    pub reflink_errno: Option<i32>,
    /// The Nth operation (from 1) fails with the errno, or panics (a crash) when `None`.
    pub nth: Option<(usize, Option<i32>)>,
    calls: AtomicUsize,
}

impl Faulty {
    fn step(&self) -> io::Result<()> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        match self.nth {
            Some((n, Some(errno))) if n == call => Err(io::Error::from_raw_os_error(errno)),
            Some((n, None)) if n == call => panic!("injected crash at file operation {n}"),
            _ => Ok(()),
        }
    }
}

impl FileOps for Faulty {
    fn hard_link(&self, src: &Path, dst: &Path) -> io::Result<()> {
        self.step()?;
        match self.link_errno {
            Some(errno) => Err(io::Error::from_raw_os_error(errno)),
            None => RealOps.hard_link(src, dst),
        }
    }
    fn reflink(&self, src: &Path, dst: &Path, mode: u32) -> io::Result<()> {
        self.step()?;
        match self.reflink_errno {
            Some(errno) => Err(io::Error::from_raw_os_error(errno)),
            None => RealOps.reflink(src, dst, mode),
        }
    }
    fn copy(&self, src: &Path, dst: &Path, mode: u32) -> io::Result<()> {
        self.step()?;
        RealOps.copy(src, dst, mode)
    }
    fn symlink(&self, target: &Path, dst: &Path) -> io::Result<()> {
        self.step()?;
        RealOps.symlink(target, dst)
    }
    fn create_dir(&self, path: &Path, mode: u32) -> io::Result<()> {
        self.step()?;
        RealOps.create_dir(path, mode)
    }
}

/// A temp dir with a tiny pristine base at `<tmp>/base` and a state dir at `<tmp>/state`.
pub struct Setup {
    /// Removed on drop.
    pub tmp: tempfile::TempDir,
    /// The base's canonical path.
    pub base: PathBuf,
    /// The state dir (not created).
    pub state: PathBuf,
}

/// A fresh [`Setup`].
pub fn setup() -> Setup {
    let tmp = tempfile::tempdir().expect("tempdir");
    let base = FakeRunnerInstall::new()
        .poll_wait_secs(1)
        .build(&tmp.path().join("base"))
        .expect("build base")
        .canonicalize()
        .expect("canonical base");
    let state = tmp.path().join("state");
    Setup { tmp, base, state }
}

impl Setup {
    /// A provisioner of the base, with real or faulty file operations.
    pub fn provisioner(&self, ops: Option<Faulty>) -> Provisioner {
        let base = Base::open(&self.base).expect("pristine base");
        let layout = StateLayout::new(&self.state);
        match ops {
            Some(ops) => Provisioner::with_ops(layout, base, None, Arc::new(ops)),
            None => Provisioner::new(layout, base, None),
        }
    }

    /// `runners/<name>`.
    pub fn root(&self, name: &str) -> PathBuf {
        self.state.join("runners").join(name)
    }

    /// Names under `runners/`.
    fn entries(&self) -> Vec<String> {
        fs::read_dir(self.state.join("runners"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Path, type, mode, owner, and content or link target of everything under `dir`, hashed.
pub fn tree_hash(dir: &Path) -> String {
    let mut lines = Vec::new();
    hash_into(dir, dir, &mut lines);
    lines.sort();
    format!("{:x}", Sha256::digest(lines.join("\n").as_bytes()))
}

fn hash_into(root: &Path, dir: &Path, lines: &mut Vec<String>) {
    for entry in fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        let meta = path.symlink_metadata().expect("lstat");
        let rel = path
            .strip_prefix(root)
            .expect("below root")
            .display()
            .to_string();
        let what = if meta.is_dir() {
            hash_into(root, &path, lines);
            "dir".to_owned()
        } else if meta.is_symlink() {
            format!("-> {}", fs::read_link(&path).expect("readlink").display())
        } else {
            format!("{:x}", Sha256::digest(fs::read(&path).expect("read")))
        };
        lines.push(format!(
            "{rel} {:o} {}:{} {what}",
            meta.mode(),
            meta.uid(),
            meta.gid()
        ));
    }
}

fn inode(path: &Path) -> (u64, u64) {
    let meta = path.symlink_metadata().expect("lstat");
    (meta.dev(), meta.ino())
}

fn files_of(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .expect("read dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.symlink_metadata().is_ok_and(|m| m.is_file()))
        .collect()
}

#[test]
fn provision_links_bin_and_top_level_and_symlinks_externals() {
    let s = setup();
    let p = s.provisioner(None);
    let Provisioned::Built(stats) = p.provision("r1").expect("provision") else {
        panic!("expected a new runner dir");
    };
    assert!(
        stats.linked > 0 && stats.copied == 0 && stats.fallback.is_none(),
        "{stats:?}"
    );
    let root = s.root("r1");
    for base_file in files_of(&s.base.join("bin"))
        .into_iter()
        .chain(files_of(&s.base))
    {
        let rel = base_file.strip_prefix(&s.base).expect("below base");
        assert_eq!(
            inode(&root.join(rel)),
            inode(&base_file),
            "{}",
            rel.display()
        );
    }
    assert_eq!(
        fs::read_link(root.join("externals")).expect("link"),
        s.base.join("externals")
    );
    assert!(root.join("_work").is_dir() && root.join("_diag").is_dir());
    // The runner finds its own root, not the base's.
    let out = Command::new(root.join("bin/Runner.Listener"))
        .arg("--version")
        .current_dir(&root)
        .output()
        .expect("run the listener");
    assert!(out.status.success(), "{out:?}");
    let log = diag_text(&root.join("_diag"), "Runner_");
    assert!(
        log.contains(&format!(
            "Well known directory 'Root': '{}'",
            root.display()
        )),
        "{log}"
    );
    assert!(!s.base.join("_diag").exists());
    assert_eq!(p.provision("r1").expect("again"), Provisioned::AlreadyThere);
    let usage = p.disk_usage("r1").expect("usage");
    assert!(
        usage.unique_bytes > 0 && usage.unique_bytes <= 64 * 1024,
        "{usage:?}"
    );
    assert!(usage.shared_bytes > usage.unique_bytes, "{usage:?}");
}

/// Text of every `_diag` log whose name starts with `prefix`; empty when `_diag` is gone: an ephemeral runner's directory may be rebuilt as soon as its
/// job ends.
pub fn diag_text(diag: &Path, prefix: &str) -> String {
    let Ok(entries) = fs::read_dir(diag) else {
        return String::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .map(|e| fs::read_to_string(e.path()).expect("read log"))
        .collect()
}

#[test]
fn provision_gives_root_work_and_diag_to_the_owner() {
    if !nix::unistd::geteuid().is_root() {
        return; // chown to another user needs root
    }
    let s = setup();
    let base = Base::open(&s.base).expect("base");
    let owner = (Uid::from_raw(4242), Gid::from_raw(4243));
    let p = Provisioner::new(StateLayout::new(&s.state), base, Some(owner));
    p.provision("r1").expect("provision");
    let root = s.root("r1");
    for own in [root.join("_work"), root.join("_diag")] {
        let meta = fs::metadata(&own).expect("stat");
        assert_eq!((meta.uid(), meta.gid()), (4242, 4243), "{}", own.display());
    }
    // The root stays root's, with the runner's group and the sticky bit: the runner adds
    // its own files but cannot rename `bin/`, `config.sh` or `externals`.
    let meta = fs::metadata(&root).expect("stat");
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o7777),
        (0, 4243, 0o1770)
    );
    assert_eq!(fs::metadata(root.join("bin")).expect("stat").uid(), 0);
}

#[test]
fn non_pristine_base_is_refused_with_every_offending_path() {
    let s = setup();
    for file in [".runner", ".credentials_rsaparams", ".env", "run-helper.sh"] {
        fs::write(s.base.join(file), "x").expect("write");
    }
    for dir in ["_diag", "bin.2.300.0"] {
        fs::create_dir(s.base.join(dir)).expect("mkdir");
    }
    fs::remove_dir_all(s.base.join("externals")).expect("rm externals");
    fs::remove_file(s.base.join("bin/Runner.Listener")).expect("rm listener");
    let err = Base::open(&s.base).expect_err("refused");
    let BaseError::NotPristine { offending, .. } = &err else {
        panic!("{err}");
    };
    assert_eq!(offending.len(), 8, "{offending:?}");
    let text = err.to_string();
    for name in [
        "`.runner`",
        "`.credentials_rsaparams`",
        "`.env`",
        "`run-helper.sh`",
        "`_diag`",
        "`bin.2.300.0`",
        "`externals`",
        "`bin/Runner.Listener`",
    ] {
        assert!(text.contains(name), "{name} in {text}");
    }
}

#[test]
fn interrupted_provision_leaves_only_a_leftover_that_the_next_pass_removes() {
    let s = setup();
    let crash = Faulty {
        nth: Some((6, None)),
        ..Faulty::default()
    };
    let p = s.provisioner(Some(crash));
    let crashed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| p.provision("r1")));
    assert!(crashed.is_err(), "the injected crash happened");
    assert!(!s.root("r1").exists());
    let entries = s.entries();
    assert!(
        entries.len() == 1 && entries[0].starts_with(".tmp-r1-"),
        "{entries:?}"
    );
    let p = s.provisioner(None);
    assert_eq!(p.remove_leftovers().expect("cleanup"), 1);
    assert!(matches!(p.provision("r1"), Ok(Provisioned::Built(_))));
    assert_eq!(s.entries(), ["r1"]);
}

#[test]
fn failed_provision_cleans_up_after_itself() {
    let s = setup();
    let full = Faulty {
        nth: Some((8, Some(nix::libc::ENOSPC))),
        ..Faulty::default()
    };
    let err = s
        .provisioner(Some(full))
        .provision("r1")
        .expect_err("disk full");
    assert!(err.to_string().starts_with("failed to "), "{err}");
    assert!(s.entries().is_empty(), "{:?}", s.entries());
}

#[test]
fn hard_link_refused_falls_back_to_reflink_or_copy_and_says_why() {
    let s = setup();
    let exdev = Faulty {
        link_errno: Some(nix::libc::EXDEV),
        ..Faulty::default()
    };
    let Provisioned::Built(stats) = s
        .provisioner(Some(exdev))
        .provision("r1")
        .expect("provision")
    else {
        panic!("expected a new runner dir");
    };
    assert_eq!(stats.linked, 0);
    assert!(stats.reflinked + stats.copied > 0, "{stats:?}");
    let why = stats.fallback.expect("reported");
    assert!(why.contains("os error 18"), "{why}");
    let listener = s.root("r1").join("bin/Runner.Listener");
    assert_ne!(inode(&listener), inode(&s.base.join("bin/Runner.Listener")));
    assert_eq!(
        fs::read(&listener).expect("read"),
        fs::read(s.base.join("bin/Runner.Listener")).expect("read")
    );
    assert_eq!(
        fs::metadata(&listener).expect("stat").permissions().mode() & 0o777,
        0o755
    );
    // protected_hardlinks (EPERM) on a file system without reflink: a plain copy.
    let eperm = Faulty {
        link_errno: Some(nix::libc::EPERM),
        reflink_errno: Some(nix::libc::EOPNOTSUPP),
        ..Faulty::default()
    };
    let Provisioned::Built(stats) = s
        .provisioner(Some(eperm))
        .provision("r2")
        .expect("provision")
    else {
        panic!("expected a new runner dir");
    };
    assert!(
        stats.linked == 0 && stats.reflinked == 0 && stats.copied > 0,
        "{stats:?}"
    );
    assert!(stats.fallback.expect("reported").contains("copied instead"));
}

#[test]
fn deprovision_never_follows_externals_or_planted_links() {
    let s = setup();
    let p = s.provisioner(None);
    p.provision("r1").expect("provision");
    let before = tree_hash(&s.base);
    let outside = s.tmp.path().join("outside");
    fs::create_dir_all(outside.join("keep")).expect("mkdir");
    fs::write(outside.join("keep/precious"), "data").expect("write");
    let root = s.root("r1");
    std::os::unix::fs::symlink(&outside, root.join("_work/x")).expect("plant dir link");
    std::os::unix::fs::symlink(outside.join("keep/precious"), root.join("_work/f"))
        .expect("plant file link");
    p.deprovision("r1").expect("deprovision");
    assert!(!root.exists());
    assert!(s.entries().is_empty(), "{:?}", s.entries());
    assert_eq!(
        fs::read_to_string(outside.join("keep/precious")).expect("kept"),
        "data"
    );
    assert_eq!(tree_hash(&s.base), before);
    p.deprovision("r1").expect("absent is success");
    assert!(
        p.remove_leftover(&s.base).is_err(),
        "only runners/.tmp-* may be removed"
    );
}

#[test]
fn rebase_keeps_identity_and_optionally_work() {
    let s = setup();
    let p = s.provisioner(None);
    p.provision("r1").expect("provision");
    let root = s.root("r1");
    for id in [".runner", ".credentials", ".credentials_rsaparams"] {
        fs::write(root.join(id), format!("{id} of r1")).expect("write identity");
    }
    fs::create_dir_all(root.join("_work/repo")).expect("mkdir");
    fs::write(root.join("_work/repo/file"), "work").expect("write");
    let v2 = FakeRunnerInstall::new()
        .version("2.999.0")
        .build(&s.tmp.path().join("base-v2"))
        .expect("build v2")
        .canonicalize()
        .expect("canonical");
    let new_base = Base::open(&v2).expect("v2 base");
    assert!(matches!(
        p.rebase("r1", &new_base, true),
        Ok(Provisioned::Built(_))
    ));
    assert_eq!(
        fs::read_link(root.join("externals")).expect("link"),
        v2.join("externals")
    );
    assert_eq!(
        inode(&root.join("bin/Runner.Listener")),
        inode(&v2.join("bin/Runner.Listener"))
    );
    for id in [".runner", ".credentials", ".credentials_rsaparams"] {
        assert_eq!(
            fs::read_to_string(root.join(id)).expect("kept"),
            format!("{id} of r1")
        );
    }
    assert_eq!(
        fs::read_to_string(root.join("_work/repo/file")).expect("kept"),
        "work"
    );
    assert_eq!(s.entries(), ["r1"], "the old root is gone");
    assert_eq!(
        p.rebase("r1", &new_base, true).expect("again"),
        Provisioned::AlreadyThere
    );
    // Back onto the first base, without the workspace.
    p.rebase("r1", p.base(), false).expect("rebase back");
    assert!(root.join(".runner").exists() && root.join("_work").is_dir());
    assert!(!root.join("_work/repo").exists());
}

#[test]
fn protect_makes_the_base_root_owned_and_read_only() {
    if !nix::unistd::geteuid().is_root() {
        return; // only root protects a base
    }
    let s = setup();
    std::os::unix::fs::chown(s.base.join("bin/Runner.Worker"), Some(4242), Some(4242))
        .expect("chown");
    let base = Base::open(&s.base).expect("base");
    assert!(base.protect().expect("protect"));
    assert!(
        !base.protect().expect("protect again"),
        "nothing left to change"
    );
    let mut stack = vec![s.base.clone()];
    while let Some(path) = stack.pop() {
        let meta = path.symlink_metadata().expect("lstat");
        assert_eq!(meta.uid(), 0, "{}", path.display());
        if meta.is_dir() {
            stack.extend(
                fs::read_dir(&path)
                    .expect("read")
                    .flatten()
                    .map(|e| e.path()),
            );
        }
        if !meta.is_symlink() {
            assert_eq!(meta.mode() & 0o222, 0, "{}", path.display());
        }
    }
    let p = Provisioner::new(StateLayout::new(&s.state), base, None);
    assert!(matches!(p.provision("r1"), Ok(Provisioned::Built(_))));
}
