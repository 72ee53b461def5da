//! What a runner's Docker socket costs against the engine's own socket:
//! the added latency of `docker run --rm IMAGE true`, and the throughput of `docker build`
//! on a 200 MB build context.
//!
//! `cargo bench --bench docker_socket [-- --quick]` (`--quick`: 5 runs and a 50 MB context).
//! Needs a Docker engine on `/var/run/docker.sock` and the `docker` CLI; prints a skip
//! line and exits 0 without them.

#[path = "../tests/kit/docker.rs"]
#[allow(
    dead_code,
    reason = "the benchmark uses the image part of the test kit"
)]
mod kit_docker;

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use corral::config::DockerPolicy;
use corral::docker::{Hub, RunnerSocket};

const RUNNER: &str = "bench-docker";

fn main() -> anyhow::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    if !kit_docker::engine_answers() {
        println!("SKIPPED docker_socket: no Docker engine answers on /var/run/docker.sock");
        return Ok(());
    }
    kit_docker::ensure_image();
    let work = tempfile::tempdir()?;
    let runtime = tokio::runtime::Runtime::new()?;
    let hub = Hub::new("/var/run/docker.sock", &work.path().join("state"));
    let work_dir = work.path().join("_work");
    std::fs::create_dir_all(&work_dir)?;
    let env = runtime.block_on(hub.serve(RunnerSocket {
        name: RUNNER.into(),
        owner: None,
        work: work_dir.clone(),
        read_only: Vec::new(),
        policy: DockerPolicy {
            allow_privileged: false,
            allow_host_namespaces: false,
            allow_capabilities: false,
            allow_devices: false,
            allow_mounts: Vec::new(),
            image_budget: 0,
        },
    }))?;
    let proxied = env[0].1.clone();
    let bare = "unix:///var/run/docker.sock".to_string();
    let runs = if quick { 5 } else { 20 };
    println!(
        "## docker run --rm {} true ({runs} runs each, alternating)",
        kit_docker::IMAGE
    );
    let (mut bare_times, mut proxy_times) = (Vec::new(), Vec::new());
    // One warm-up each: the first run after an idle engine is slower for both.
    time_run(&bare)?;
    time_run(&proxied)?;
    for _ in 0..runs {
        bare_times.push(time_run(&bare)?);
        proxy_times.push(time_run(&proxied)?);
    }
    let (b, p) = (summary(&mut bare_times), summary(&mut proxy_times));
    println!("| socket | median | min | max |\n|---|---|---|---|");
    println!("| engine | {:.1} ms | {:.1} ms | {:.1} ms |", b.0, b.1, b.2);
    println!(
        "| runner's (corral) | {:.1} ms | {:.1} ms | {:.1} ms |",
        p.0, p.1, p.2
    );
    println!("added latency (median): {:.1} ms", p.0 - b.0);

    let megabytes = if quick { 50 } else { 200 };
    let context = work_dir.join("context");
    write_context(&context, megabytes)?;
    println!("\n## docker build of a {megabytes} MB context (3 builds each, best)");
    let builds = 3;
    // corral labels a build: the classic builder adds a `LABEL` step for it, which costs a
    // container and a commit. The third row asks the engine for the same label, so that
    // its difference to the second is the proxy's transport alone.
    let labels = ["--label", "corral.runner=bench-docker"];
    let best = |host: &str, extra: &[&str]| -> anyhow::Result<f64> {
        let mut times = Vec::new();
        for _ in 0..builds {
            times.push(time_build(host, &context, extra)?);
        }
        Ok(times.into_iter().fold(f64::MAX, f64::min))
    };
    let rows = [
        ("engine", best(&bare, &[])?),
        ("runner's (corral)", best(&proxied, &[])?),
        ("engine, with corral's label", best(&bare, &labels)?),
    ];
    println!("| socket | time | throughput |\n|---|---|---|");
    for (label, secs) in rows {
        println!(
            "| {label} | {secs:.2} s | {:.0} MB/s |",
            f64::from(megabytes) / secs
        );
    }
    runtime.block_on(hub.remove(RUNNER));
    Ok(())
}

/// Milliseconds of one `docker run --rm IMAGE true` through `host`.
fn time_run(host: &str) -> anyhow::Result<f64> {
    let start = Instant::now();
    let out = Command::new("docker")
        .args(["run", "--rm", kit_docker::IMAGE, "true"])
        .env("DOCKER_HOST", host)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "docker run via {host}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(start.elapsed().as_secs_f64() * 1000.0)
}

/// Seconds of one `docker build` of `context` through `host`; the images it makes are
/// removed (those through corral's socket go with the runner at the end).
fn time_build(host: &str, context: &Path, extra: &[&str]) -> anyhow::Result<f64> {
    let start = Instant::now();
    let out = Command::new("docker")
        .args(["build", "-q", "--no-cache"])
        .args(extra)
        .arg(context)
        .env("DOCKER_HOST", host)
        .env("DOCKER_BUILDKIT", "0")
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "docker build via {host}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let secs = start.elapsed().as_secs_f64();
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if host.ends_with("/var/run/docker.sock") && !id.is_empty() {
        let _ = Command::new("docker")
            .args(["rmi", &id])
            .env("DOCKER_HOST", host)
            .output();
    }
    Ok(secs)
}

/// A context of `megabytes` of incompressible bytes and a Dockerfile that uses none of it
/// (the whole context is still sent and unpacked by the engine).
fn write_context(dir: &Path, megabytes: u32) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join("Dockerfile"),
        format!("FROM {}\nRUN true\n", kit_docker::IMAGE),
    )?;
    let mut file = std::io::BufWriter::new(std::fs::File::create(dir.join("blob"))?);
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut chunk = vec![0u8; 1 << 20];
    for _ in 0..megabytes {
        for byte in &mut chunk {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *byte = state as u8;
        }
        file.write_all(&chunk)?;
    }
    file.flush()?;
    Ok(())
}

/// Median, min and max, sorted in place.
fn summary(times: &mut [f64]) -> (f64, f64, f64) {
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    (median, times[0], times[times.len() - 1])
}
