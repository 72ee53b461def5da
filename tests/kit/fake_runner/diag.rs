//! `_diag/<Prefix>_<yyyyMMdd-HHmmss>-utc.log` plus the terminal helpers that also trace
//! every line, like the real `HostTraceListener` / `Terminal` (contract §6).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::{Mutex, OnceLock};
use std::time::SystemTime;

static LOG: OnceLock<Mutex<File>> = OnceLock::new();

/// Opens the log in append mode so two starts in the same second share one file safely.
pub fn init(dir: &Path, prefix: &str) {
    if std::fs::create_dir_all(dir).is_err() {
        return;
    }
    let name = format!("{prefix}_{}-utc.log", file_stamp());
    if let Ok(file) = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(name))
    {
        let _ = LOG.set(Mutex::new(file));
    }
}

fn write(level: &str, src: &str, msg: &str) {
    if let Some(lock) = LOG.get() {
        if let Ok(mut file) = lock.lock() {
            let _ = writeln!(file, "[{} {level} {src}] {msg}", stamp());
        }
    }
}

pub fn info(src: &str, msg: &str) {
    write("INFO", src, msg);
}

pub fn warn(src: &str, msg: &str) {
    write("WARN", src, msg);
}

/// A terminal line on stdout, flushed at once (stdout may be a pipe).
pub fn out(line: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
    write("INFO", "Terminal", &format!("WRITE LINE: {line}"));
}

/// A terminal error line on stderr.
pub fn err(line: &str) {
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "{line}");
    let _ = stderr.flush();
    write("ERR ", "Terminal", &format!("WRITE ERROR: {line}"));
}

/// `<ts>: <text>` on stdout, the form of the run markers.
pub fn out_ts(text: &str) {
    out(&format!("{}: {text}", stamp()));
}

/// UTC `yyyy-MM-dd HH:mm:ssZ` (.NET `u` format).
pub fn stamp() -> String {
    rfc3339_now().replacen('T', " ", 1)
}

/// UTC `yyyyMMdd-HHmmss`, the log file name part.
pub fn file_stamp() -> String {
    rfc3339_now()
        .trim_end_matches('Z')
        .replace(['-', ':'], "")
        .replacen('T', "-", 1)
}

/// `yyyy-MM-ddTHH:mm:ssZ`, from humantime (a dependency of the package already).
fn rfc3339_now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}
