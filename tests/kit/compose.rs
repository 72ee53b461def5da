//! `docker compose` (or the older `docker-compose`) on the shipped compose file with an
//! override file a test writes, as one project whose objects are removed on drop.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use crate::kit::docker::{docker, engine_answers};
use crate::kit::docker_image::{run_with_deadline, tail};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The compose tool: `docker compose` (v2) when the CLI has it, else `docker-compose` (v1).
pub fn compose_tool() -> Option<&'static [String]> {
    static TOOL: OnceLock<Option<Vec<String>>> = OnceLock::new();
    TOOL.get_or_init(|| {
        let works = |argv: &[&str]| {
            Command::new(argv[0])
                .args(&argv[1..])
                .arg("version")
                .env_remove("DOCKER_HOST")
                .output()
                .is_ok_and(|o| o.status.success())
        };
        [&["docker", "compose"][..], &["docker-compose"][..]]
            .into_iter()
            .find(|argv| works(argv))
            .map(|argv| argv.iter().map(|s| (*s).to_string()).collect())
    })
    .as_deref()
}

/// Prints why the calling test is skipped, by name, and returns true, when no engine answers
/// or no compose tool is installed.
pub fn skip_without_compose(test: &str) -> bool {
    if !engine_answers() {
        eprintln!("SKIPPED {test}: no Docker engine answers on /var/run/docker.sock");
        return true;
    }
    if compose_tool().is_none() {
        eprintln!("SKIPPED {test}: neither `docker compose` nor `docker-compose` is installed");
        return true;
    }
    false
}

/// One compose project: `docker/docker-compose.yml` (unchanged) plus an override file.
pub struct Project {
    /// The project name (`-p`), which prefixes its containers, networks and volumes.
    pub name: String,
    files: Vec<PathBuf>,
    env: Vec<(String, String)>,
}

impl Project {
    /// The shipped compose file with `override_file` on top, as project `name`.
    pub fn new(name: &str, override_file: &Path) -> Self {
        Self {
            name: name.to_owned(),
            files: vec![
                Path::new(ROOT).join("docker/docker-compose.yml"),
                override_file.to_path_buf(),
            ],
            env: Vec::new(),
        }
    }

    /// Sets `key` in the compose tool's environment (the shipped file interpolates
    /// `GITHUB_TOKEN`).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// `compose -p NAME -f … -f …` with the project's environment.
    fn command(&self) -> Command {
        let tool = compose_tool().expect("a compose tool (checked by skip_without_compose)");
        let mut cmd = Command::new(&tool[0]);
        cmd.args(&tool[1..]).args(["-p", &self.name]);
        for file in &self.files {
            cmd.arg("-f").arg(file);
        }
        cmd.env_remove("DOCKER_HOST")
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// Runs `compose … ARGS`, killed after `limit`.
    pub fn run_within(&self, args: &[&str], limit: Duration) -> Output {
        let mut cmd = self.command();
        cmd.args(args);
        run_with_deadline(cmd, limit)
    }

    /// [`Project::run_within`] that must succeed within two minutes; its output.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run_within(args, Duration::from_secs(120));
        assert!(
            out.status.success(),
            "compose {args:?} failed:\n{}",
            tail(&out, 40)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The id of the `corral` service's container.
    pub fn container(&self) -> String {
        let out = self
            .command()
            .args(["ps", "-a", "-q", "corral"])
            .output()
            .expect("compose ps");
        let id = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .map(str::to_owned);
        id.unwrap_or_else(|| {
            panic!(
                "no corral container in project {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    /// The named volume `corral-state` of this project, as the engine names it.
    pub fn state_volume(&self) -> String {
        let listed = String::from_utf8_lossy(
            &docker(&[
                "volume",
                "ls",
                "-q",
                "--filter",
                &format!("name={}", self.name),
            ])
            .stdout,
        )
        .into_owned();
        listed
            .lines()
            .find(|v| v.ends_with("corral-state"))
            .unwrap_or_else(|| panic!("no corral-state volume of {}: {listed}", self.name))
            .to_owned()
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = self.run_within(
            &["down", "-v", "--remove-orphans", "-t", "5"],
            Duration::from_secs(120),
        );
    }
}
