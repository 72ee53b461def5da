//! The runner's command line rules (contract §3.1): leading commands, `--name value` pairs,
//! flags, first value wins, case-insensitive, `ACTIONS_RUNNER_INPUT_<NAME>` env equivalents.

use std::collections::{BTreeSet, HashMap};

use crate::diag;

pub const USAGE: &str = "Commands:
 ./config.sh         Configures the runner
 ./config.sh remove  Unconfigures the runner
 ./run.sh            Runs the runner interactively. Does not require any options.

Options:
 --help     Prints the help for each command
 --version  Prints the runner version
 --commit   Prints the runner commit
 --check    Check the runner's network connectivity with GitHub server

Config Options:
 --unattended           Disable interactive prompts for missing arguments. Defaults will be used for missing options
 --url string           Repository to add the runner to. Required if unattended
 --token string         Registration token. Required if unattended
 --name string          Name of the runner to configure (default is the host name)
 --runnergroup string   Name of the runner group to add this runner to (defaults to the default runner group)
 --labels string        Custom labels that will be added to the runner. This option is mandatory if --no-default-labels is used.
 --no-default-labels    Disables adding the default labels: 'self-hosted,Linux,X64'
 --local                Removes the runner config files from your local machine. Used as an option to the remove command
 --work string          Relative runner work directory (default _work)
 --replace              Replace any existing runner with the same name (default false)
 --pat                  GitHub personal access token with repo scope. Used for checking network connectivity when executing `./run.sh --check`
 --disableupdate        Disable self-hosted runner automatic update to the latest released version`
 --ephemeral            Configure the runner to only take one job and then let the service un-configure the runner after the job finishes (default false)";

const COMMANDS: [&str; 4] = ["configure", "remove", "run", "warmup"];
const FLAGS_ALL: [&str; 4] = ["help", "version", "commit", "check"];
const ARGS_CHECK: [&str; 2] = ["url", "pat"];
const CONFIGURE_FLAGS: [&str; 7] = [
    "unattended",
    "replace",
    "ephemeral",
    "disableupdate",
    "no-default-labels",
    "runasservice",
    "generateserviceconfig",
];
const CONFIGURE_ARGS: [&str; 12] = [
    "url",
    "token",
    "pat",
    "name",
    "labels",
    "runnergroup",
    "work",
    "auth",
    "username",
    "monitorsocketaddress",
    "windowslogonaccount",
    "windowslogonpassword",
];
const ENV_PREFIX: &str = "ACTIONS_RUNNER_INPUT_";

pub struct Command {
    /// The first command, lower-cased; `None` means the default (`run`).
    pub verb: Option<String>,
    args: HashMap<String, String>,
    flags: BTreeSet<String>,
    env_args: HashMap<String, String>,
}

impl Command {
    /// Parses `argv` and consumes (removes from the process env) every
    /// `ACTIONS_RUNNER_INPUT_*` variable, so children never see them.
    pub fn parse(argv: &[String]) -> Self {
        let mut commands = Vec::new();
        let mut values = HashMap::new();
        let mut flags = BTreeSet::new();
        let mut scope: Option<String> = None;
        let mut seen_option = false;
        for arg in argv {
            if arg == "/?" {
                flags.insert("help".to_owned());
            } else if let Some(name) = arg.strip_prefix("--") {
                seen_option = true;
                let name = name.trim().to_lowercase();
                flags.insert(name.clone());
                scope = Some(name);
            } else if !seen_option {
                commands.push(arg.trim().to_lowercase());
            } else if let Some(name) = scope.take() {
                // A value starting with '-' is not a value (contract §3.1).
                if !arg.starts_with('-') && !values.contains_key(&name) {
                    flags.remove(&name);
                    values.insert(name, arg.trim().to_owned());
                }
            }
        }
        Self {
            verb: commands.into_iter().next(),
            args: values,
            flags,
            env_args: take_env_inputs(),
        }
    }

    /// A non-empty argument value, from the command line first, then the env.
    pub fn arg(&self, name: &str) -> Option<String> {
        self.args
            .get(name)
            .or_else(|| self.env_args.get(name))
            .filter(|v| !v.is_empty())
            .cloned()
    }

    /// Where a given secret input came from, for tests to see that none was in argv:
    /// `("token", "argv")` or `("token", "ACTIONS_RUNNER_INPUT_TOKEN")`.
    pub fn secret_sources(&self) -> Vec<(&'static str, String)> {
        ["token", "pat", "jitconfig"]
            .into_iter()
            .filter_map(|name| {
                if self.args.contains_key(name) {
                    Some((name, "argv".to_owned()))
                } else if self.env_args.contains_key(name) {
                    Some((name, format!("{ENV_PREFIX}{}", name.to_uppercase())))
                } else {
                    None
                }
            })
            .collect()
    }

    /// A flag from the command line, or an env equivalent that parses as `true`.
    pub fn flag(&self, name: &str) -> bool {
        self.flags.contains(name)
            || self
                .env_args
                .get(name)
                .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }

    /// Unknown options only warn (stderr) and the command goes on.
    pub fn warn_unknown(&self) {
        let cmd = self.verb.as_deref().unwrap_or("run");
        let (flags, values): (&[&str], &[&str]) = match cmd {
            "configure" => (&CONFIGURE_FLAGS, &CONFIGURE_ARGS),
            "remove" => (&["local"], &["token", "pat"]),
            "run" => (&["once"], &["jitconfig", "startuptype"]),
            _ => (&[], &[]),
        };
        let known = |n: &str| {
            FLAGS_ALL.contains(&n)
                || ARGS_CHECK.contains(&n)
                || flags.contains(&n)
                || values.contains(&n)
        };
        let unknown: Vec<&str> = self
            .flags
            .iter()
            .chain(self.args.keys())
            .map(String::as_str)
            .filter(|n| !known(n))
            .collect();
        if !unknown.is_empty() && COMMANDS.contains(&cmd) {
            diag::err(&format!(
                "Unrecognized command-line input arguments for command {cmd}: '{}'. For usage refer to: .\\config.cmd --help or ./config.sh --help",
                unknown.join(", ")
            ));
        }
    }
}

fn take_env_inputs() -> HashMap<String, String> {
    let mut found = HashMap::new();
    for (key, value) in std::env::vars_os() {
        let Some(key) = key.to_str().map(str::to_owned) else {
            continue;
        };
        if key.len() > ENV_PREFIX.len() && key.to_uppercase().starts_with(ENV_PREFIX) {
            let name = key[ENV_PREFIX.len()..].to_lowercase();
            found.insert(name, value.to_string_lossy().trim().to_owned());
            // Still single-threaded here: main parses before spawning anything.
            std::env::remove_var(&key);
        }
    }
    found
}
