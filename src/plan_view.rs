//! What `corral plan` shows: the planner's steps turned into one line per runner, the way
//! `terraform plan` reads. Pure: steps and names in, a [`PlanView`] out; no I/O.
//!
//! ```text
//! + web-1: provision, register, start (new runner)
//! ~ web-2: restart (settings changed)
//! - old-1: deregister, stop, deprovision (draining until its job ends)
//! = web-3
//! Plan: 1 to add, 1 to change, 1 to drain, 0 to remove.
//! ```
//!
//! `--json` prints the same view (README, "corral plan --json").

use std::collections::BTreeSet;
use std::fmt::Write as _;

use serde::Serialize;

use crate::reconcile::{Action, StartReason};

/// What happens to one runner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    /// Created: provisioned, registered and started.
    Add,
    /// Kept, with something done to it (restart, new base, labels, start again).
    Change,
    /// Removed from the file: deregistered after its job, then stopped and deleted.
    Drain,
    /// Deleted without a registration to drain.
    Remove,
    /// Nothing to do.
    Unchanged,
}

impl Change {
    /// The sign `terraform plan` would print.
    pub fn sign(self) -> char {
        match self {
            Change::Add => '+',
            Change::Change => '~',
            Change::Drain | Change::Remove => '-',
            Change::Unchanged => '=',
        }
    }

    /// The ANSI colour of the line.
    fn colour(self) -> &'static str {
        match self {
            Change::Add => "\x1b[32m",
            Change::Change => "\x1b[33m",
            Change::Drain | Change::Remove => "\x1b[31m",
            Change::Unchanged => "\x1b[2m",
        }
    }
}

/// One runner's line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunnerPlan {
    /// Runner name.
    pub name: String,
    /// What happens to it.
    pub change: Change,
    /// The sign of the line: `+`, `~`, `-` or `=`.
    pub sign: String,
    /// The steps, in order (`provision`, `register`, `start`, …).
    pub steps: Vec<String>,
    /// Why, in words (`new runner`, `settings changed`, `listener not running`, …).
    pub reasons: Vec<String>,
}

/// A release the host downloads before the steps can run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fetch {
    /// The runner release.
    pub version: String,
    /// Where it is downloaded from (the template filled in, `{arch}` left as is).
    pub url: String,
}

/// Counts for the summary line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub add: usize,
    pub change: usize,
    pub drain: usize,
    pub remove: usize,
    pub unchanged: usize,
    /// Steps about no runner: leftovers and orphaned registrations to delete.
    pub cleanup: usize,
}

/// The whole plan as shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlanView {
    /// Releases to download first.
    pub fetch: Vec<Fetch>,
    /// Every runner of the file on this host, and every runner on disk leaving it, by name.
    pub runners: Vec<RunnerPlan>,
    /// Steps about no runner (`remove leftover …`, `delete orphan registration …`).
    pub cleanup: Vec<String>,
    /// The counts.
    pub summary: Summary,
    /// The `source.git` revision planned (the one kept under `state_dir`: `plan` does not
    /// fetch), as `status` shows it; absent without a source.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<PlanSource>,
}

/// `source` in the plan: the repository followed and the revision in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlanSource {
    /// Repository URL.
    pub url: String,
    /// Branch, tag or commit followed.
    #[serde(rename = "ref")]
    pub git_ref: String,
    /// The file inside the repository.
    pub path: String,
    /// The 40-hex commit in force; `null` before the first good fetch.
    pub revision: Option<String>,
}

impl PlanView {
    /// The view of `actions` for the runners `wanted` (the file's, on this host), with
    /// `fetch` to download first.
    pub fn new(actions: &[Action], wanted: &BTreeSet<String>, fetch: Vec<Fetch>) -> Self {
        let mut names: BTreeSet<&str> = wanted.iter().map(String::as_str).collect();
        names.extend(actions.iter().filter_map(Action::runner));
        let runners: Vec<RunnerPlan> = names
            .into_iter()
            .map(|name| {
                let own: Vec<&Action> = actions
                    .iter()
                    .filter(|a| a.runner() == Some(name))
                    .collect();
                runner_plan(name, &own, wanted.contains(name))
            })
            .collect();
        let cleanup: Vec<String> = actions
            .iter()
            .filter(|a| a.runner().is_none())
            .map(ToString::to_string)
            .collect();
        let mut summary = Summary {
            cleanup: cleanup.len(),
            ..Summary::default()
        };
        for r in &runners {
            *match r.change {
                Change::Add => &mut summary.add,
                Change::Change => &mut summary.change,
                Change::Drain => &mut summary.drain,
                Change::Remove => &mut summary.remove,
                Change::Unchanged => &mut summary.unchanged,
            } += 1;
        }
        PlanView {
            fetch,
            runners,
            cleanup,
            summary,
            source: None,
        }
    }

    /// Whether anything would change.
    pub fn changes(&self) -> bool {
        let s = &self.summary;
        s.add + s.change + s.drain + s.remove + s.cleanup > 0 || !self.fetch.is_empty()
    }

    /// The text `corral plan` prints, with ANSI colours when `colour`.
    pub fn text(&self, colour: bool) -> String {
        let paint = |change: Change, line: &str| {
            if colour {
                format!("{}{line}\x1b[0m", change.colour())
            } else {
                line.to_string()
            }
        };
        let mut out = String::new();
        for fetch in &self.fetch {
            let _ = writeln!(
                out,
                "fetch first: runner release {} from {}",
                fetch.version, fetch.url
            );
        }
        for line in &self.cleanup {
            let _ = writeln!(out, "{}", paint(Change::Remove, &format!("- {line}")));
        }
        for r in &self.runners {
            let mut line = format!("{} {}", r.sign, r.name);
            if !r.steps.is_empty() {
                let _ = write!(line, ": {}", r.steps.join(", "));
            }
            if !r.reasons.is_empty() {
                let _ = write!(line, " ({})", r.reasons.join("; "));
            }
            let _ = writeln!(out, "{}", paint(r.change, &line));
        }
        let s = &self.summary;
        if self.changes() {
            let _ = writeln!(
                out,
                "Plan: {} to add, {} to change, {} to drain, {} to remove.",
                s.add,
                s.change,
                s.drain,
                s.remove + s.cleanup
            );
        } else {
            let _ = writeln!(
                out,
                "No changes: {} runner(s) as the file says.",
                s.unchanged
            );
        }
        out
    }
}

/// One runner's line from its steps; `wanted` when the file has it on this host.
fn runner_plan(name: &str, own: &[&Action], wanted: bool) -> RunnerPlan {
    let has = |f: fn(&Action) -> bool| own.iter().any(|a| f(a));
    let change = if own.is_empty() {
        Change::Unchanged
    } else if !wanted {
        if has(|a| matches!(a, Action::Deregister { .. })) {
            Change::Drain
        } else {
            Change::Remove
        }
    } else if has(|a| matches!(a, Action::Provision { .. }))
        && !has(|a| matches!(a, Action::Deprovision { .. }))
    {
        Change::Add
    } else {
        Change::Change
    };
    let mut reasons: Vec<String> = Vec::new();
    let mut reason = |text: &str| {
        if !reasons.iter().any(|r| r == text) {
            reasons.push(text.to_string());
        }
    };
    match change {
        Change::Add => reason("new runner"),
        Change::Drain => reason("out of the file: draining until its job ends"),
        Change::Remove => reason("out of the file"),
        Change::Change | Change::Unchanged => {}
    }
    for action in own {
        match action {
            Action::Restart { .. } => reason("settings changed"),
            Action::Rebase { .. } => reason("new base release"),
            Action::SyncLabels { .. } => reason("labels changed"),
            Action::Forget { .. } => reason("registration deleted on GitHub"),
            Action::Start {
                reason: StartReason::NotRunning,
                ..
            } => reason("listener not running: crashed or exited"),
            Action::Deprovision { .. } if wanted => reason("directory rebuilt"),
            _ => {}
        }
    }
    RunnerPlan {
        name: name.to_string(),
        change,
        sign: change.sign().to_string(),
        steps: own.iter().map(|a| step(a)).collect(),
        reasons,
    }
}

/// A step's short name.
fn step(action: &Action) -> String {
    match action {
        Action::Provision { .. } => "provision",
        Action::Register { .. } => "register",
        Action::Start { .. } => "start",
        Action::Restart { .. } => "restart",
        Action::Deregister { .. } => "deregister",
        Action::Stop { .. } => "stop",
        Action::Deprovision { .. } => "deprovision",
        Action::SyncLabels { .. } => "set labels",
        Action::Rebase { .. } => "move to the new base",
        Action::Forget { .. } => "forget registration",
        Action::RemoveLeftover { .. } | Action::DeleteOrphan { .. } => "clean up",
    }
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(n: &str) -> String {
        n.to_string()
    }

    #[test]
    fn lines_signs_and_summary() {
        let actions = vec![
            Action::Provision { runner: name("a") },
            Action::Register { runner: name("a") },
            Action::Start {
                runner: name("a"),
                reason: StartReason::New,
            },
            Action::Restart { runner: name("b") },
            Action::Deregister {
                runner: name("gone"),
            },
            Action::Stop {
                runner: name("gone"),
            },
            Action::Deprovision {
                runner: name("gone"),
            },
        ];
        let wanted: BTreeSet<String> = ["a", "b", "c"].into_iter().map(name).collect();
        let view = PlanView::new(&actions, &wanted, Vec::new());
        assert_eq!(
            view.text(false),
            "+ a: provision, register, start (new runner)\n\
             ~ b: restart (settings changed)\n\
             = c\n\
             - gone: deregister, stop, deprovision (out of the file: draining until its job ends)\n\
             Plan: 1 to add, 1 to change, 1 to drain, 0 to remove.\n"
        );
        assert!(view.changes());
        let json = serde_json::to_value(&view).expect("json");
        assert!(json.get("source").is_none(), "no source, no key: {json}");
        assert!(view.text(true).contains("\x1b[32m+ a"));
        let idle = PlanView::new(&[], &wanted, Vec::new());
        assert!(!idle.changes());
        assert_eq!(
            idle.text(false),
            "= a\n= b\n= c\nNo changes: 3 runner(s) as the file says.\n"
        );
    }
}
