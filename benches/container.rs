//! The container on the machine's engine: the image's size (on disk, and as `docker save |
//! gzip`), the time from `docker compose up -d` to every runner online, and corral's memory
//! inside, idle with its runners. The image is the one the container tests build (the
//! repository's Dockerfile, the fake runner release baked in); the compose project is the
//! shipped file with the tests' override (tests/kit/container.rs, host networking).
//!
//! `cargo bench --bench container [-- --quick]` (`--quick`: 2 starts instead of 5, 5 s idle
//! instead of 30). Needs a Docker engine and a compose tool; prints a skip line and exits 0
//! without them. Set `CORRAL_TEST_DOCKER_PREFIX` on a shared engine, as for the tests.

#![allow(
    clippy::cast_precision_loss,
    reason = "byte and millisecond counts are far below 2^52"
)]

#[path = "../tests/kit/mod.rs"]
mod kit;

use std::process::Command;
use std::time::{Duration, Instant};

use kit::compose::compose_tool;
use kit::container::{Ctr, Spec, NAMES};
use kit::docker::{docker_ok, engine_answers};
use kit::docker_image::corral_image;

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    if !engine_answers() || compose_tool().is_none() {
        println!("SKIPPED container: no Docker engine or compose tool answers");
        return;
    }
    let (starts, idle) = if quick { (2, 5) } else { (5, 30) };
    let image = corral_image();
    let on_disk: u64 = docker_ok(&["image", "inspect", "-f", "{{.Size}}", &image])
        .trim()
        .parse()
        .expect("image size");
    let gzipped = gzip_size(&image);

    let mut online = Vec::new();
    let mut memory = None;
    for run in 0..starts {
        let started = Instant::now();
        let ctr = Ctr::up(&format!("bench{run}"), Spec::new());
        ctr.wait_idle(&NAMES);
        online.push(started.elapsed().as_secs_f64());
        if run + 1 == starts {
            std::thread::sleep(Duration::from_secs(idle));
            memory = Some(corral_memory(&ctr));
        }
    }
    online.sort_by(f64::total_cmp);
    let (rss, peak) = memory.expect("measured on the last start");

    println!(
        "container, {} runners, {}",
        NAMES.len(),
        if quick { "quick" } else { "full" }
    );
    println!("| measure | value |");
    println!("|---|---:|");
    println!(
        "| image on disk (`docker image inspect`) | {:.1} MB |",
        mb(on_disk)
    );
    println!("| image, `docker save \\| gzip` | {:.1} MB |", mb(gzipped));
    println!(
        "| `compose up -d` → {} runners online, median of {starts} | {:.1} s |",
        NAMES.len(),
        online[online.len() / 2]
    );
    println!(
        "| `compose up -d` → {} runners online, slowest | {:.1} s |",
        NAMES.len(),
        online[online.len() - 1]
    );
    println!(
        "| corral's RSS inside after {idle} s idle | {:.1} MiB |",
        rss as f64 / 1024.0
    );
    println!(
        "| corral's peak RSS inside | {:.1} MiB |",
        peak as f64 / 1024.0
    );
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1_000_000.0
}

/// Bytes of `docker save IMAGE | gzip`.
fn gzip_size(image: &str) -> u64 {
    let out = Command::new("sh")
        .arg("-c")
        .arg("docker save \"$0\" | gzip | wc -c")
        .arg(image)
        .output()
        .expect("docker save | gzip");
    assert!(out.status.success(), "docker save failed");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("byte count")
}

/// corral's `VmRSS` and `VmHWM` inside the container, in KiB.
fn corral_memory(ctr: &Ctr) -> (u64, u64) {
    let corral = ctr
        .procs()
        .into_iter()
        .find(|p| p.cmd.starts_with("/usr/local/bin/corral run"))
        .expect("corral runs");
    let out = ctr.exec(&["cat", &format!("/proc/{}/status", corral.pid)]);
    let status = String::from_utf8_lossy(&out.stdout).into_owned();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} in {status}"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}
