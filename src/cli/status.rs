//! `corral status` and `corral logs`: what the daemon wrote, read without it (status from
//! its API when it serves one).

use std::io::Write;
use std::path::Path;

use super::{load_or_report, ExitStatus};
use crate::config;
use crate::layout::StateLayout;

/// `corral status`: the controller's last `status.json`, as a table or JSON.
pub fn status(
    path: &Path,
    json: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> std::io::Result<ExitStatus> {
    let (state_dir, api) = match config::load(path) {
        Ok(desired) => (desired.state_dir, desired.api),
        Err(errors) => {
            writeln!(err, "{errors}")?;
            // An invalid edit leaves the controller running on the last good file; its
            // status says so. Find it where the file still says it is.
            let Some(found) = config::status_locations(path) else {
                return Ok(1);
            };
            writeln!(
                err,
                "{}: showing the running controller's status",
                path.display()
            )?;
            found
        }
    };
    let live = api.as_ref().and_then(|api| match live_status(api) {
        Ok(status) => Some(status),
        Err(e) => {
            let _ = writeln!(
                err,
                "status API at {} did not answer ({e}); reading status.json",
                api.listen
            );
            None
        }
    });
    let file = StateLayout::new(&state_dir).status_file();
    let status = match live.map_or_else(|| crate::status::read(&file), Ok) {
        Ok(status) => status,
        Err(e) => {
            writeln!(
                err,
                "{}: no status yet ({e}); is `corral run` running?",
                file.display()
            )?;
            return Ok(1);
        }
    };
    if json {
        serde_json::to_writer_pretty(&mut *out, &status)?;
        writeln!(out)?;
    } else {
        crate::status::write_table(&status, out)?;
    }
    Ok(0)
}

/// The controller's status from its live API (`GET /status`).
fn live_status(api: &config::Api) -> Result<crate::status::Status, String> {
    let token = api
        .token
        .as_ref()
        .map(crate::secret::read)
        .transpose()
        .map_err(|e| e.to_string())?;
    // An API listening on every address is reached through loopback.
    let mut addr = api.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(5))
            .build()
            .map_err(|e| e.to_string())?;
        let mut request = client.get(format!("http://{addr}/status"));
        if let Some(token) = &token {
            request = request.bearer_auth(token.expose());
        }
        let response = request
            .send()
            .await
            .map_err(|e| e.without_url().to_string())?;
        if !response.status().is_success() {
            return Err(format!("HTTP {}", response.status()));
        }
        response
            .json()
            .await
            .map_err(|e| e.without_url().to_string())
    })
}

/// `corral logs`: a runner's listener log, and with `follow` what is appended to it.
pub fn logs(
    path: &Path,
    runner: &str,
    follow: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> std::io::Result<ExitStatus> {
    let Some(desired) = load_or_report(path, err)? else {
        return Ok(1);
    };
    let log = StateLayout::new(&desired.state_dir).listener_log(runner);
    let mut offset = match std::fs::read(&log) {
        Ok(bytes) => {
            out.write_all(&bytes)?;
            bytes.len() as u64
        }
        Err(e) => {
            writeln!(
                err,
                "{}: no listener log for runner `{runner}` ({e})",
                log.display()
            )?;
            return Ok(1);
        }
    };
    if follow {
        loop {
            out.flush()?;
            std::thread::sleep(std::time::Duration::from_millis(200));
            offset = copy_new(&log, offset, out)?;
        }
    }
    Ok(0)
}

/// Writes what `log` gained past `offset`; a log that was capped starts again from 0.
fn copy_new(log: &Path, offset: u64, out: &mut dyn Write) -> std::io::Result<u64> {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut file) = std::fs::File::open(log) else {
        return Ok(offset);
    };
    let len = file.metadata()?.len();
    let from = if len < offset { 0 } else { offset };
    file.seek(SeekFrom::Start(from))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    out.write_all(&bytes)?;
    Ok(from + bytes.len() as u64)
}
