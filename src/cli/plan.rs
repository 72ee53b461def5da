//! `corral plan`: what the controller would do now, without doing it.

use std::io::{IsTerminal, Write};
use std::path::Path;

use super::check::{write_containment, write_left_out};
use super::{load_or_report_on, ExitStatus};
use crate::config;
use crate::layout::StateLayout;
use crate::observe;
use crate::plan_view::{Fetch, PlanSource, PlanView};
use crate::reconcile;

/// `corral plan`'s options.
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct PlanOptions {
    /// Print the plan as JSON (the schema is in the README).
    #[arg(long)]
    pub json: bool,
    /// Exit 0 when nothing would change, 2 when something would (1 is an error).
    #[arg(long)]
    pub detailed_exitcode: bool,
}

/// `corral plan`: one line per runner of host `host` with what would change and why, the
/// releases to fetch first and a summary; then what the file has that this host leaves out.
/// Coloured when stdout is a terminal and `NO_COLOR` is not set.
pub fn plan(
    path: &Path,
    host: &str,
    options: PlanOptions,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> std::io::Result<ExitStatus> {
    let Some(desired) = load_or_report_on(path, host, err)? else {
        return Ok(1);
    };
    let observed = observe::observe(&StateLayout::new(&desired.state_dir));
    // Pools as they would be without queued jobs: `plan` does not ask GitHub.
    let desired = crate::scale::effective(&desired, &observed);
    let actions = reconcile::plan(&desired, &observed);
    let wanted = desired.runners.keys().cloned().collect();
    let mut view = PlanView::new(&actions, &wanted, releases_to_fetch(&desired));
    view.source = desired.source.as_ref().map(|src| PlanSource {
        url: src.url.clone(),
        git_ref: src.git_ref.clone(),
        path: src.path.clone(),
        revision: src.revision.clone(),
    });
    if options.json {
        serde_json::to_writer_pretty(&mut *out, &view)?;
        writeln!(out)?;
    } else {
        let colour = std::io::stdout().is_terminal()
            && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        out.write_all(view.text(colour).as_bytes())?;
        write_left_out(&desired, out)?;
        write_containment(&desired, out)?;
        if let Some(src) = &desired.source {
            // `plan` does not fetch: it plans the revision kept under state_dir.
            writeln!(
                out,
                "source: {} {} {} at {}",
                src.url,
                src.git_ref,
                src.path,
                src.revision
                    .as_deref()
                    .unwrap_or("(no revision fetched yet: no runners)")
            )?;
        }
    }
    Ok(if options.detailed_exitcode && view.changes() {
        2
    } else {
        0
    })
}

/// The pinned releases the file names that are not installed under `<state_dir>/bases`.
fn releases_to_fetch(desired: &config::Desired) -> Vec<Fetch> {
    let mut versions = std::collections::BTreeSet::new();
    if let config::BaseSource::Version { version, .. } = &desired.base {
        versions.insert(version.clone());
    }
    versions.extend(desired.runners.values().filter_map(|r| r.version.clone()));
    let bases = desired.state_dir.join("bases");
    versions
        .into_iter()
        .filter(|v| v != "latest" && !bases.join(v).is_dir())
        .map(|version| Fetch {
            url: desired
                .download_url
                .replace("{version}", &version)
                .replace("{arch}", crate::bases::runner_arch().unwrap_or("{arch}")),
            version,
        })
        .collect()
}
