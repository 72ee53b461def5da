//! `FakeRunnerInstall`: a runner base on disk with the official tarball layout
//! (reference/runner-contract.md §1, §9.1) whose Listener/Worker are `corral-fake-runner`.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

/// How big the install is.
#[derive(Clone, Debug)]
pub enum Shape {
    /// Only the files the contract requires.
    Tiny,
    /// About the real linux-x64 runner: `bin/` 389 files ≈ 50 MB, `externals/` ≈ 8,700 files
    /// in ≈ 900 directories ≈ 339 MB (contract §1).
    RealRunner,
    /// Totals for `bin/` and `externals/`, required files included.
    Custom {
        bin_files: usize,
        bin_bytes: u64,
        externals_dirs: usize,
        externals_files: usize,
        externals_bytes: u64,
    },
}

#[derive(Clone, Debug)]
pub struct FakeRunnerInstall {
    shape: Shape,
    version: String,
    session_conflict_retry_secs: Option<u64>,
    poll_wait_secs: Option<u64>,
    runner_binary: Option<PathBuf>,
}

const MIB: u64 = 1024 * 1024;
const SCRIPTS: [(&str, &str); 5] = [
    ("config.sh", include_str!("scripts/config.sh")),
    ("run.sh", include_str!("scripts/run.sh")),
    ("env.sh", include_str!("scripts/env.sh")),
    (
        "run-helper.sh.template",
        include_str!("scripts/run-helper.sh.template"),
    ),
    ("safe_sleep.sh", include_str!("scripts/safe_sleep.sh")),
];
const STUB_LIBS: [&str; 3] = [
    "libcoreclr.so",
    "libSystem.Security.Cryptography.Native.OpenSsl.so",
    "libSystem.IO.Compression.Native.so",
];
const SVC_TEMPLATE: &str = "#!/bin/bash\n# fake systemd.svc.sh.template (corral test kit)\nSVC_NAME=\"{{SvcNameVar}}\"\nSVC_DESCRIPTION=\"{{SvcDescription}}\"\necho \"fake svc.sh: $SVC_NAME ($SVC_DESCRIPTION) $*\"\n";
const NODE_SCRIPT: &str = "#!/bin/sh\n# fake node (corral test kit)\necho v20.20.2\n";
const NPM_CLI: &str = "#!/usr/bin/env node\n// fake npm-cli.js (corral test kit)\n";

/// The fake Listener/Worker binary built by cargo for this test run. Cargo names it only to
/// integration tests and benches; an example (`examples/demo.rs`) passes its own with
/// [`FakeRunnerInstall::runner_binary`].
pub fn fake_runner_binary() -> PathBuf {
    match option_env!("CARGO_BIN_EXE_corral-fake-runner") {
        Some(path) => PathBuf::from(path),
        None => {
            panic!("cargo names corral-fake-runner only to tests and benches: use runner_binary")
        }
    }
}

impl Default for FakeRunnerInstall {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeRunnerInstall {
    /// A tiny install reporting version 2.336.0; other knobs left to the fake's defaults.
    pub fn new() -> Self {
        Self {
            shape: Shape::Tiny,
            version: "2.336.0".to_owned(),
            session_conflict_retry_secs: None,
            poll_wait_secs: None,
            runner_binary: None,
        }
    }

    pub fn shape(mut self, s: Shape) -> Self {
        self.shape = s;
        self
    }

    pub fn version(mut self, v: &str) -> Self {
        v.clone_into(&mut self.version);
        self
    }

    pub fn session_conflict_retry_secs(mut self, s: u64) -> Self {
        self.session_conflict_retry_secs = Some(s);
        self
    }

    pub fn poll_wait_secs(mut self, s: u64) -> Self {
        self.poll_wait_secs = Some(s);
        self
    }

    /// The `corral-fake-runner` to copy in, instead of the one cargo built for this test.
    pub fn runner_binary(mut self, path: &Path) -> Self {
        self.runner_binary = Some(path.to_path_buf());
        self
    }

    /// The `bin/fake-runner.json` this install gets.
    pub fn knobs_json(&self) -> String {
        let mut knobs = serde_json::json!({ "version": self.version });
        if let Some(s) = self.session_conflict_retry_secs {
            knobs["session_conflict_retry_secs"] = s.into();
        }
        if let Some(s) = self.poll_wait_secs {
            knobs["poll_wait_secs"] = s.into();
        }
        knobs.to_string()
    }

    /// Creates `dir` (and parents) with the layout and returns it.
    pub fn build(&self, dir: &Path) -> io::Result<PathBuf> {
        fs::create_dir_all(dir)?;
        for (name, text) in SCRIPTS {
            write_file(&dir.join(name), text.as_bytes(), 0o755)?;
        }
        write_file(
            &dir.join("run-helper.cmd.template"),
            b"@echo off\r\nrem Windows leftover\r\n",
            0o644,
        )?;
        let bin = dir.join("bin");
        fs::create_dir_all(&bin)?;
        let binary = self
            .runner_binary
            .clone()
            .unwrap_or_else(fake_runner_binary);
        for name in ["Runner.Listener", "Runner.Worker"] {
            fs::copy(&binary, bin.join(name))?;
            fs::set_permissions(bin.join(name), fs::Permissions::from_mode(0o755))?;
        }
        write_file(
            &bin.join("fake-runner.json"),
            self.knobs_json().as_bytes(),
            0o644,
        )?;
        write_file(
            &bin.join("systemd.svc.sh.template"),
            SVC_TEMPLATE.as_bytes(),
            0o644,
        )?;
        for lib in STUB_LIBS {
            write_file(&bin.join(lib), b"fake shared object (not ELF)\n", 0o644)?;
        }
        let node_bin = dir.join("externals/node20/bin");
        let npm_bin = dir.join("externals/node20/lib/node_modules/npm/bin");
        fs::create_dir_all(&node_bin)?;
        fs::create_dir_all(&npm_bin)?;
        write_file(&node_bin.join("node"), NODE_SCRIPT.as_bytes(), 0o755)?;
        write_file(&npm_bin.join("npm-cli.js"), NPM_CLI.as_bytes(), 0o755)?;
        symlink(
            "../lib/node_modules/npm/bin/npm-cli.js",
            node_bin.join("npm"),
        )?;
        if let Some((bin_files, bin_bytes, ext_dirs, ext_files, ext_bytes)) = self.totals() {
            fill_bin(&bin, bin_files, bin_bytes)?;
            fill_externals(&dir.join("externals"), ext_dirs, ext_files, ext_bytes)?;
        }
        Ok(dir.to_path_buf())
    }

    fn totals(&self) -> Option<(usize, u64, usize, usize, u64)> {
        match self.shape {
            Shape::Tiny => None,
            Shape::RealRunner => Some((389, 50 * MIB, 900, 8_700, 339 * MIB)),
            Shape::Custom {
                bin_files,
                bin_bytes,
                externals_dirs,
                externals_files,
                externals_bytes,
            } => Some((
                bin_files,
                bin_bytes,
                externals_dirs,
                externals_files,
                externals_bytes,
            )),
        }
    }
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    fs::write(path, bytes)?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

/// Files and bytes already under `dir` (recursively, symlinks not followed).
fn usage(dir: &Path) -> io::Result<(usize, u64)> {
    let mut files = 0;
    let mut bytes = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.path().symlink_metadata()?;
        if meta.is_dir() {
            let (f, b) = usage(&entry.path())?;
            files += f;
            bytes += b;
        } else {
            files += 1;
            bytes += meta.len();
        }
    }
    Ok((files, bytes))
}

/// Tops `bin/` up with `.dll` fillers to the requested totals.
fn fill_bin(bin: &Path, files: usize, bytes: u64) -> io::Result<()> {
    let (have_files, have_bytes) = usage(bin)?;
    let paths: Vec<PathBuf> = (0..files.saturating_sub(have_files))
        .map(|i| bin.join(format!("Fake.Assembly{i:04}.dll")))
        .collect();
    write_fillers(&paths, bytes.saturating_sub(have_bytes))
}

/// Adds directories split between `node20` and `node24` trees, files spread over them.
fn fill_externals(ext: &Path, dirs: usize, files: usize, bytes: u64) -> io::Result<()> {
    let (have_files, have_bytes) = usage(ext)?;
    let extra_dirs = dirs.saturating_sub(count_dirs(ext)?).max(1);
    let dir_paths: Vec<PathBuf> = (0..extra_dirs)
        .map(|i| {
            let node = if i % 2 == 0 { "node20" } else { "node24" };
            ext.join(format!("{node}/lib/node_modules/fake-pkg-{i:04}"))
        })
        .collect();
    for d in &dir_paths {
        fs::create_dir_all(d)?;
    }
    let paths: Vec<PathBuf> = (0..files.saturating_sub(have_files))
        .map(|i| dir_paths[i % dir_paths.len()].join(format!("file{i:05}.js")))
        .collect();
    write_fillers(&paths, bytes.saturating_sub(have_bytes))
}

fn count_dirs(dir: &Path) -> io::Result<usize> {
    let mut n = 1;
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.symlink_metadata()?.is_dir() {
            n += count_dirs(&path)?;
        }
    }
    Ok(n)
}

/// Real, deterministic, non-sparse content, written from one shared buffer.
fn write_fillers(paths: &[PathBuf], total: u64) -> io::Result<()> {
    if paths.is_empty() {
        return Ok(());
    }
    let pattern = pattern(4 * MIB as usize);
    let n = paths.len() as u64;
    for (i, path) in paths.iter().enumerate() {
        let i = i as u64;
        let mut left = total / n + u64::from(i < total % n);
        let mut file = io::BufWriter::with_capacity(MIB as usize, fs::File::create(path)?);
        let mut offset = (i as usize * 4099) % pattern.len();
        while left > 0 {
            let take = (pattern.len() - offset).min(left as usize);
            file.write_all(&pattern[offset..offset + take])?;
            left -= take as u64;
            offset = 0;
        }
        file.flush()?;
    }
    Ok(())
}

fn pattern(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}
