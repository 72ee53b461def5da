//! What `/proc` says about processes: the fields of `/proc/<pid>/stat` corral acts on
//! (parent, process group, session, terminal, start time), every live pid, and the clock
//! that start times are measured in.
//!
//! A pid alone never names a process to corral: a pid is reused once its process is gone,
//! so every record pairs it with the start time read here.

use std::path::Path;

/// The fields of one `/proc/<pid>/stat` line corral needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat<'a> {
    /// The command name (up to 15 bytes, any bytes).
    pub comm: &'a str,
    /// Parent pid.
    pub ppid: i32,
    /// Process group id.
    pub pgrp: i32,
    /// Session id.
    pub session: i32,
    /// The controlling terminal's device number, 0 for none.
    pub tty_nr: i32,
    /// Start time in clock ticks since boot.
    pub start_time: u64,
}

/// Parses the text of `/proc/<pid>/stat`.
pub fn parse_stat(stat: &str) -> Option<Stat<'_>> {
    // The command name may contain spaces and parentheses: fields start after the last `)`.
    let close = stat.rfind(')')?;
    let comm = &stat[stat.find('(')? + 1..close];
    // After the name: field 3 (state) is index 0, then ppid, pgrp, session, tty_nr; field 22
    // (starttime) is index 19.
    let mut fields = stat[close + 1..].split_whitespace();
    let ppid = fields.nth(1)?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    let session = fields.next()?.parse().ok()?;
    let tty_nr = fields.next()?.parse().ok()?;
    let start_time = fields.nth(14)?.parse().ok()?;
    Some(Stat {
        comm,
        ppid,
        pgrp,
        session,
        tty_nr,
        start_time,
    })
}

/// Reads `/proc/<pid>/stat` into `buf` and parses it; `None` once the process is gone.
pub fn read_stat(pid: i32, buf: &mut String) -> Option<Stat<'_>> {
    buf.clear();
    let mut file = std::fs::File::open(format!("/proc/{pid}/stat")).ok()?;
    std::io::Read::read_to_string(&mut file, buf).ok()?;
    parse_stat(buf)
}

/// The process start time in clock ticks since boot, from `/proc/<pid>/stat`.
pub fn process_start_time(pid: i32) -> Option<u64> {
    let mut buf = String::new();
    Some(read_stat(pid, &mut buf)?.start_time)
}

/// Every pid in `/proc` now (processes come and go meanwhile).
pub fn pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// Clock ticks per second of start times: 100 on every Linux corral runs on (`USER_HZ`).
pub const TICKS_PER_SECOND: u64 = 100;

/// Now, in the clock of start times (ticks since boot): a process that starts later has a
/// larger start time.
pub fn now_ticks() -> Option<u64> {
    uptime_ticks(Path::new("/proc/uptime"))
}

fn uptime_ticks(path: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let seconds = text.split_whitespace().next()?;
    let (whole, frac) = seconds.split_once('.').unwrap_or((seconds, "0"));
    let frac: String = frac.chars().chain("00".chars()).take(2).collect();
    Some(whole.parse::<u64>().ok()? * TICKS_PER_SECOND + frac.parse::<u64>().ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_survive_odd_command_names() {
        let stat = "42 (a) b (c)) S 7 40 39 34817 -1 0 0 0 0 0 1 2 0 0 20 0 1 0 12345 0 0";
        let parsed = parse_stat(stat).expect("parses");
        assert_eq!(parsed.comm, "a) b (c)");
        assert_eq!(parsed.ppid, 7);
        assert_eq!(parsed.pgrp, 40);
        assert_eq!(parsed.session, 39);
        assert_eq!(parsed.tty_nr, 34817);
        assert_eq!(parsed.start_time, 12345);
    }

    #[test]
    fn own_stat_is_readable_and_now_is_later() {
        let me = std::process::id() as i32;
        let start = process_start_time(me).expect("own start time");
        assert!(now_ticks().expect("uptime") >= start);
        assert_eq!(process_start_time(-1), None);
        assert!(pids().contains(&me));
    }

    #[test]
    fn uptime_in_ticks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("uptime");
        std::fs::write(&file, "3512.47 7001.20\n").expect("write");
        assert_eq!(uptime_ticks(&file), Some(351_247));
        std::fs::write(&file, "12.5 1.0\n").expect("write");
        assert_eq!(uptime_ticks(&file), Some(1250));
    }
}
