//! Reads the listener's stdout markers (`reference/runner-contract.md` §6) from its log:
//! online, the job it runs, how its last job ended, and why it stopped.

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::SystemTime;

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JobEnd {
    /// Job name.
    pub name: String,
    /// `Succeeded`, `Failed`, `Canceled`, …
    pub result: String,
    /// From `Running job` to `completed`, when both were seen.
    pub duration_seconds: Option<u64>,
}

/// The timestamp a marker line starts with (`2026-11-28 10:01:00Z: …`).
fn marker_time(line: &str) -> Option<SystemTime> {
    let (stamp, _) = line.split_once("Z: ")?;
    humantime::parse_rfc3339(&format!("{}Z", stamp.replacen(' ', "T", 1))).ok()
}

/// What the log said so far.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ListenerView {
    /// `Listening for Jobs` seen since the last start.
    pub online: bool,
    /// The job running now, from `Running job: X`.
    pub job: Option<String>,
    /// When it started, from the marker's timestamp.
    pub job_started: Option<SystemTime>,
    /// The last finished job.
    pub last_job: Option<JobEnd>,
    /// The runner version the listener reported.
    pub version: Option<String>,
    /// Jobs finished since the controller last took them (for metrics).
    #[serde(skip)]
    pub finished: Vec<JobEnd>,
    /// The registration was deleted on the server.
    pub registration_deleted: bool,
    /// Another session for this runner exists.
    pub session_conflict: bool,
    /// The last line on the log that looks like an error.
    pub last_error: Option<String>,
}

impl ListenerView {
    /// Applies one log line.
    pub fn apply(&mut self, line: &str) {
        // Markers carry a `yyyy-MM-dd HH:mm:ssZ: ` prefix; match on the text after it.
        let text = line
            .split_once("Z: ")
            .map_or(line, |(_, rest)| rest)
            .trim_end();
        if let Some(version) = text.strip_prefix("Current runner version:") {
            // A new listener process: what the previous one said no longer holds.
            self.restarted();
            self.version = Some(version.trim().trim_matches('\'').to_string());
        } else if text == "Listening for Jobs" {
            self.online = true;
        } else if let Some(job) = text.strip_prefix("Running job: ") {
            self.job = Some(job.to_string());
            self.job_started = marker_time(line);
        } else if let Some(rest) = text.strip_prefix("Job ") {
            if let Some((job, result)) = rest.split_once(" completed with result: ") {
                let ended = marker_time(line);
                let duration_seconds = self
                    .job_started
                    .zip(ended)
                    .and_then(|(start, end)| end.duration_since(start).ok())
                    .map(|d| d.as_secs());
                self.job = None;
                self.job_started = None;
                let end = JobEnd {
                    name: job.to_string(),
                    result: result.to_string(),
                    duration_seconds,
                };
                self.finished.push(end.clone());
                self.last_job = Some(end);
            }
        } else if text.contains("registration has been deleted from the server")
            || text.contains("no longer exists on the server")
        {
            self.registration_deleted = true;
            self.last_error = Some(text.to_string());
        } else if text.contains("A session for this runner already exists") {
            self.session_conflict = true;
            self.last_error = Some(text.to_string());
        } else if text.starts_with("An error occurred") || text.starts_with("Failed") {
            self.last_error = Some(text.to_string());
        }
    }

    /// Forgets what belonged to the previous process (called at each start).
    pub fn restarted(&mut self) {
        self.online = false;
        self.job = None;
        self.job_started = None;
        self.registration_deleted = false;
        self.session_conflict = false;
    }
}

/// Follows one log file from an offset.
#[derive(Debug, Default, Clone)]
pub struct LogTail {
    offset: u64,
    partial: String,
    /// Device and inode of the file read: a recreated log is read from its start.
    file: Option<(u64, u64)>,
}

impl LogTail {
    /// A tail starting at the end of `path`: what a previous process wrote is not news.
    pub fn at_end(path: &Path) -> Self {
        let meta = std::fs::metadata(path).ok();
        LogTail {
            offset: meta.as_ref().map_or(0, std::fs::Metadata::len),
            partial: String::new(),
            file: meta.map(|m| (m.dev(), m.ino())),
        }
    }

    /// Reads what was appended since the last call and applies every complete line.
    pub fn read_into(&mut self, path: &Path, view: &mut ListenerView) {
        let Ok(mut file) = std::fs::File::open(path) else {
            return;
        };
        let Ok(meta) = file.metadata() else {
            return;
        };
        let identity = Some((meta.dev(), meta.ino()));
        if meta.len() < self.offset || identity != self.file {
            // The log was capped, or removed and created again: start from its beginning.
            self.offset = 0;
            self.partial.clear();
            self.file = identity;
        }
        if file.seek(SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut bytes = Vec::new();
        if file.read_to_end(&mut bytes).is_err() {
            return;
        }
        self.offset += bytes.len() as u64;
        self.partial.push_str(&String::from_utf8_lossy(&bytes));
        while let Some(end) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=end).collect();
            view.apply(&line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_drive_the_view() {
        let mut view = ListenerView::default();
        for line in [
            "",
            "√ Connected to GitHub",
            "Current runner version: '2.336.0'",
            "2026-11-28 10:00:00Z: Listening for Jobs",
            "2026-11-28 10:01:00Z: Running job: build",
        ] {
            view.apply(line);
        }
        assert!(view.online);
        assert_eq!(view.job.as_deref(), Some("build"));
        view.apply("2026-11-28 10:02:00Z: Job build completed with result: Failed");
        assert_eq!(view.job, None);
        assert_eq!(
            view.last_job,
            Some(JobEnd {
                name: "build".into(),
                result: "Failed".into(),
                duration_seconds: Some(60),
            })
        );
        assert_eq!(view.version.as_deref(), Some("2.336.0"));
        view.apply("Failed to create a session. The runner registration has been deleted from the server, please re-configure.");
        assert!(view.registration_deleted);
    }

    #[test]
    fn tail_reads_only_new_complete_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("listener.log");
        std::fs::write(&log, "old: Running job: x\n").expect("write");
        let mut tail = LogTail::at_end(&log);
        let mut view = ListenerView::default();
        tail.read_into(&log, &mut view);
        assert_eq!(view.job, None, "old lines are not news");
        std::fs::write(
            &log,
            "old: Running job: x\n2026-11-28 10:01:00Z: Running job: new\n2026-11-28 10:0",
        )
        .expect("write");
        tail.read_into(&log, &mut view);
        assert_eq!(view.job.as_deref(), Some("new"));
        // Replaced by another file: read from the start.
        let other = dir.path().join("listener.log.new");
        std::fs::write(
            &other,
            "Current runner version: '2.336.0'\n2026-11-28 10:01:00Z: Listening for Jobs\n",
        )
        .expect("write");
        std::fs::rename(&other, &log).expect("rename");
        tail.read_into(&log, &mut view);
        assert!(view.online);
        assert_eq!(view.job, None, "the new process has no job");
    }
}
