//! The `corral` binary: parses arguments, sets up logging, runs a command.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use corral::cli::{self, Cli, Command, LogFormat};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let args = Cli::parse();
    init_tracing(args.log_format);
    match run(args.command) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("corral: {err:#}");
            ExitCode::from(1)
        }
    }
}

fn run(command: Command) -> anyhow::Result<u8> {
    // Unlocked handles: each write takes the lock for itself. Holding `stderr().lock()` for
    // the whole command deadlocked `corral base install`: the unpack step runs on a blocking
    // thread whose log lines wait for that lock while the main thread waits for the unpack.
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    let code = match command {
        Command::Check { config, file } => {
            let path = file.as_ref().unwrap_or(&config.config);
            cli::check(path, &config.host_id(), &mut out, &mut err)?
        }
        Command::Plan { config, options } => cli::plan(
            &config.config,
            &config.host_id(),
            options,
            &mut out,
            &mut err,
        )?,
        Command::Status { config, json } => cli::status(&config.config, json, &mut out, &mut err)?,
        Command::Schema => cli::schema(&mut out)?,
        Command::Logs {
            config,
            runner,
            follow,
        } => cli::logs(&config.config, &runner, follow, &mut out, &mut err)?,
        Command::Base { command } => {
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(corral::cli_base::run(command, &mut out, &mut err))?
        }
        Command::Run { config } => {
            let runtime = tokio::runtime::Runtime::new()?;
            let host = config.host_id();
            if let Err(message) = corral::config::check_host_id(&host) {
                anyhow::bail!("--host-id: {message}");
            }
            runtime.block_on(corral::controller::run(&config.config, &host))?;
            0
        }
    };
    Ok(code)
}

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only on a terminal: journald, docker logs and files get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
