//! Disk and time per runner for four ways of building runner dirs from one base.
//!
//! `cargo bench --bench provision` builds a base with the real runner's shape (≈9,100 files,
//! ≈389 MB, ≈900 directories, mostly in `externals/`) and provisions 1, 10 and 50 runners with
//! each strategy; `-- --quick` uses a tenth of the shape and 1, 5 runners (CI, under a minute).
//! Extra disk is the allocated blocks of every inode under `runners/` the base does not hold,
//! each inode once, directories and symlinks included (`du`-like).

#[allow(dead_code, reason = "the bench uses only the builder of the test kit")]
#[path = "../tests/kit/install.rs"]
mod install;

use std::fs;
use std::io;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use corral::layout::StateLayout;
use corral::provision::{allocated_outside, Base, Provisioner};
use install::{FakeRunnerInstall, Shape};

const MIB: u64 = 1024 * 1024;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Strategy {
    Corral,
    BinLinksOnly,
    Original,
    HardLinkTree,
    FullCopy,
}

impl Strategy {
    const ALL: [Strategy; 5] = [
        Strategy::Corral,
        Strategy::BinLinksOnly,
        Strategy::Original,
        Strategy::HardLinkTree,
        Strategy::FullCopy,
    ];

    fn label(self) -> &'static str {
        match self {
            Strategy::Corral => "corral (links bin/ + top, externals symlink)",
            Strategy::BinLinksOnly => "hard-link bin/ alone (reference)",
            Strategy::Original => "original (copy all but externals, symlink it)",
            Strategy::HardLinkTree => "full hard-link tree (cp -al)",
            Strategy::FullCopy => "full copy (cp -a)",
        }
    }
}

struct Row {
    strategy: Strategy,
    runners: usize,
    per_runner: Duration,
    extra_per_runner: u64,
}

fn main() -> io::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let (shape, counts): (Shape, &[usize]) = if quick {
        let shape = Shape::Custom {
            bin_files: 39,
            bin_bytes: 5 * MIB,
            externals_dirs: 90,
            externals_files: 870,
            externals_bytes: 34 * MIB,
        };
        (shape, &[1, 5])
    } else {
        (Shape::RealRunner, &[1, 10, 50])
    };
    let work = tempfile::tempdir()?;
    let base_dir = FakeRunnerInstall::new()
        .shape(shape)
        .build(&work.path().join("base"))?;
    let base_dir = base_dir.canonicalize()?;
    let (files, dirs, bytes) = count(&base_dir)?;
    println!(
        "base: {files} files, {dirs} directories, {:.0} MB; {} cores; {}",
        mb(bytes),
        std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        if quick { "quick" } else { "full" }
    );
    let mut rows = Vec::new();
    for strategy in Strategy::ALL {
        for &n in counts {
            let state = work.path().join("state");
            rows.push(measure(strategy, n, &base_dir, &state)?);
            fs::remove_dir_all(&state)?;
        }
    }
    print_table(&rows);
    Ok(())
}

fn measure(strategy: Strategy, n: usize, base: &Path, state: &Path) -> io::Result<Row> {
    let runners = state.join("runners");
    fs::create_dir_all(&runners)?;
    let provisioner = Provisioner::new(StateLayout::new(state), open_base(base)?, None);
    // Dirty pages of the previous round are written out before the clock starts.
    run(Command::new("sync"))?;
    let start = Instant::now();
    for i in 0..n {
        let name = format!("r{i}");
        let dst = runners.join(&name);
        match strategy {
            Strategy::Corral => {
                provisioner.provision(&name).map_err(io::Error::other)?;
            }
            Strategy::BinLinksOnly => link_bin(base, &dst)?,
            Strategy::Original => copy_but_externals(base, &dst)?,
            Strategy::HardLinkTree => cp(&["-al"], base, &dst)?,
            Strategy::FullCopy => cp(&["-a"], base, &dst)?,
        }
    }
    let elapsed = start.elapsed();
    let extra = allocated_outside(base, &runners)?;
    Ok(Row {
        strategy,
        runners: n,
        per_runner: elapsed / n as u32,
        extra_per_runner: extra / n as u64,
    })
}

fn open_base(base: &Path) -> io::Result<Base> {
    Base::open(base).map_err(io::Error::other)
}

fn link_bin(base: &Path, dst: &Path) -> io::Result<()> {
    fs::create_dir_all(dst.join("bin"))?;
    for entry in fs::read_dir(base.join("bin"))? {
        let entry = entry?;
        fs::hard_link(entry.path(), dst.join("bin").join(entry.file_name()))?;
    }
    Ok(())
}

fn copy_but_externals(base: &Path, dst: &Path) -> io::Result<()> {
    fs::create_dir(dst)?;
    let mut cmd = Command::new("cp");
    cmd.arg("-a");
    for entry in fs::read_dir(base)? {
        let entry = entry?;
        if entry.file_name() != "externals" {
            cmd.arg(entry.path());
        }
    }
    run(cmd.arg(dst))?;
    std::os::unix::fs::symlink(base.join("externals"), dst.join("externals"))
}

fn cp(flags: &[&str], base: &Path, dst: &Path) -> io::Result<()> {
    let mut cmd = Command::new("cp");
    cmd.args(flags).arg(base.join(".")).arg(dst);
    run(&mut cmd)
}

fn run(mut cmd: impl std::borrow::BorrowMut<Command>) -> io::Result<()> {
    let status = cmd.borrow_mut().status()?;
    if status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "{:?} failed: {status}",
            cmd.borrow_mut()
        )))
    }
}

/// (files and symlinks, directories, apparent bytes) under `dir`, `dir` not counted.
fn count(dir: &Path) -> io::Result<(usize, usize, u64)> {
    let mut total = (0, 0, 0);
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let meta = path.symlink_metadata()?;
        if meta.is_dir() {
            let (f, d, b) = count(&path)?;
            total = (total.0 + f, total.1 + d + 1, total.2 + b);
        } else {
            total = (total.0 + 1, total.1, total.2 + meta.len());
        }
    }
    Ok(total)
}

#[allow(clippy::cast_precision_loss, reason = "display only")]
fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

fn print_table(rows: &[Row]) {
    println!(
        "\n| strategy | runners | time per runner | extra disk per runner |\n|---|---:|---:|---:|"
    );
    for r in rows {
        println!(
            "| {} | {} | {:.2} ms | {} |",
            r.strategy.label(),
            r.runners,
            r.per_runner.as_secs_f64() * 1e3,
            human(r.extra_per_runner)
        );
    }
    let largest = rows.iter().map(|r| r.runners).max().unwrap_or(1);
    let at = |s: Strategy| {
        rows.iter()
            .find(|r| r.strategy == s && r.runners == largest)
    };
    if let (Some(c), Some(b), Some(o), Some(h)) = (
        at(Strategy::Corral),
        at(Strategy::BinLinksOnly),
        at(Strategy::Original),
        at(Strategy::HardLinkTree),
    ) {
        let ratio = |x: &Row| x.per_runner.as_secs_f64() / c.per_runner.as_secs_f64();
        println!(
            "\nat {largest} runners: corral's extra disk {} per runner (target ≤ 64 KiB); \
             original {:.1}× and cp -al {:.1}× slower (target ≥ 10×); \
             {:.2}× the time of hard-linking bin/ alone (target ≤ 2×)",
            human(c.extra_per_runner),
            ratio(o),
            ratio(h),
            1.0 / ratio(b),
        );
    }
}

#[allow(clippy::cast_precision_loss, reason = "display only")]
fn human(bytes: u64) -> String {
    if bytes >= MIB {
        format!("{:.1} MiB", bytes as f64 / MIB as f64)
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}
