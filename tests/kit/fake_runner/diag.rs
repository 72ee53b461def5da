//! `_diag/<Prefix>_<yyyyMMdd-HHmmss>-utc.log` plus the terminal helpers that also trace
//! every line, like the real `HostTraceListener` / `Terminal` (contract §6).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

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
    let (y, mo, d, h, mi, s) = utc_now();
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}Z")
}

/// UTC `yyyyMMdd-HHmmss`, the log file name part.
pub fn file_stamp() -> String {
    let (y, mo, d, h, mi, s) = utc_now();
    format!("{y:04}{mo:02}{d:02}-{h:02}{mi:02}{s:02}")
}

fn utc_now() -> (i64, u32, u32, u64, u64, u64) {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (y, mo, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    (y, mo, d, rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Howard Hinnant's days-to-civil algorithm; avoids a date crate.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}
