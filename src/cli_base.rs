//! `corral base …`: installing, listing, verifying and pruning runner releases from the
//! command line. The config file gives `state_dir`, `github.api_url` and the `base.*` fields.

use std::io::{IsTerminal, Write};

use crate::bases::{self, BaseStore, BasesError};
use crate::cli::{BaseCommand, ExitStatus};
use crate::config::{self, BaseSource, Desired};
use crate::layout::StateLayout;

const DEFAULT_API_URL: &str = "https://api.github.com";

/// Runs one `corral base` command.
pub async fn run(
    command: BaseCommand,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> std::io::Result<ExitStatus> {
    let path = match &command {
        BaseCommand::Install { config, .. }
        | BaseCommand::List { config }
        | BaseCommand::Verify { config, .. }
        | BaseCommand::Prune { config } => config.config.clone(),
    };
    let desired = match config::load(&path) {
        Ok(desired) => desired,
        Err(errors) => {
            writeln!(err, "{errors}")?;
            return Ok(1);
        }
    };
    let result = match command {
        BaseCommand::Install { version, .. } => install(&desired, &version, out).await,
        BaseCommand::List { .. } => list(&desired, out),
        BaseCommand::Verify { version, .. } => verify(&desired, version.as_deref(), out),
        BaseCommand::Prune { .. } => prune(&desired, out),
    };
    match result {
        Ok(code) => Ok(code),
        Err(Failure::Io(e)) => Err(e),
        Err(Failure::Bases(e)) => {
            writeln!(err, "corral: {}", crate::error_chain(&e))?;
            Ok(1)
        }
    }
}

enum Failure {
    Io(std::io::Error),
    Bases(BasesError),
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::Io(e)
    }
}

impl From<BasesError> for Failure {
    fn from(e: BasesError) -> Self {
        Failure::Bases(e)
    }
}

async fn install(desired: &Desired, version: &str, out: &mut dyn Write) -> Result<u8, Failure> {
    let api = desired
        .github
        .as_ref()
        .map_or(DEFAULT_API_URL, |g| g.api_url.as_str());
    // A digest belongs to one release: only the configured one.
    let sha256 = match &desired.base {
        BaseSource::Version {
            version: configured,
            sha256,
            ..
        } if configured == version => sha256.as_deref(),
        _ => None,
    };
    let arch = bases::runner_arch()?;
    let release = bases::resolve(api, version, arch, &desired.download_url, sha256).await?;
    let mut store = BaseStore::new(&desired.state_dir)?;
    if std::io::stderr().is_terminal() {
        store = store.with_progress_bar();
    }
    store.remove_leftovers()?;
    let path = store.install(&release).await?;
    writeln!(out, "{} installed at {}", release.version, path.display())?;
    Ok(0)
}

fn list(desired: &Desired, out: &mut dyn Write) -> Result<u8, Failure> {
    let store = BaseStore::new(&desired.state_dir)?;
    let installed = store.list()?;
    if installed.is_empty() {
        writeln!(
            out,
            "no runner releases installed under {}",
            store.root().display()
        )?;
    }
    let users = store.in_use(&StateLayout::new(&desired.state_dir));
    for base in installed {
        let (mib, tenths) = (base.bytes >> 20, ((base.bytes % (1 << 20)) * 10) >> 20);
        let used_by = users
            .get(&base.version)
            .map_or_else(|| "unused".to_string(), |names| names.join(","));
        writeln!(
            out,
            "{}\t{mib}.{tenths} MiB\t{}\t{used_by}",
            base.version,
            base.path.display()
        )?;
    }
    Ok(0)
}

fn verify(desired: &Desired, version: Option<&str>, out: &mut dyn Write) -> Result<u8, Failure> {
    let store = BaseStore::new(&desired.state_dir)?;
    let versions: Vec<String> = match version {
        Some(v) => vec![v.to_owned()],
        None => store.list()?.into_iter().map(|b| b.version).collect(),
    };
    let mut status = 0;
    for version in versions {
        let diffs = store.verify(&version)?;
        if diffs.is_empty() {
            writeln!(out, "{version}: ok")?;
            continue;
        }
        status = 1;
        writeln!(out, "{version}: {} difference(s)", diffs.len())?;
        for diff in diffs {
            writeln!(out, "  {diff}")?;
        }
    }
    Ok(status)
}

fn prune(desired: &Desired, out: &mut dyn Write) -> Result<u8, Failure> {
    let store = BaseStore::new(&desired.state_dir)?;
    let mut keep: Vec<String> = store
        .in_use(&StateLayout::new(&desired.state_dir))
        .into_keys()
        .collect();
    keep.extend(
        desired
            .bases_in_use()
            .into_iter()
            .chain([desired.base.clone()])
            .filter_map(|base| match base {
                BaseSource::Version { version, .. } => Some(version),
                BaseSource::Path(_) => None,
            }),
    );
    let keep: Vec<&str> = keep.iter().map(String::as_str).collect();
    let removed = store.prune(&keep)?;
    if removed.is_empty() {
        writeln!(out, "nothing to prune")?;
    }
    for version in removed {
        writeln!(out, "removed {version}")?;
    }
    Ok(0)
}
