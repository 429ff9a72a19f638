//! `egress-monitor`: the binary. Parses the command line, sets up logging and dispatches.

use std::{io::IsTerminal as _, ops::ControlFlow, process::ExitCode};

use anyhow::Context as _;
use clap::Parser as _;
use monitor::{
    agent,
    cli::{Cli, Command, LogFormat},
    config::Config,
    doctor, output,
    top::TopTable,
};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli);
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            // One clear line (with its causes), not a backtrace.
            let chain: Vec<String> = e.chain().map(ToString::to_string).collect();
            eprintln!("egress-monitor: {}", chain.join(": "));
            ExitCode::FAILURE
        }
    }
}

fn init_logging(cli: &Cli) {
    let filter = cli
        .log
        .as_deref()
        .map(EnvFilter::new)
        .or_else(|| EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = Config::load(cli.config.as_deref())?;
    match cli.command {
        Command::Config => {
            print!("{}", config.to_toml());
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(args) => {
            let settings = args.collect.resolve(&config);
            let format = args.output.unwrap_or(config.agent.output);
            // One write per window, not per line: at 10k flows a second, line-buffered stdout
            // alone costs several percent of a core.
            let mut stdout = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
            let mut write_error = None;
            runtime()?.block_on(agent::run(&settings, |samples| {
                match output::write_samples(&mut stdout, format, samples) {
                    Ok(()) => ControlFlow::Continue(()),
                    Err(e) => {
                        // stdout closed (e.g. `| head`): stop cleanly, detaching everything.
                        write_error = Some(e);
                        ControlFlow::Break(())
                    }
                }
            }))?;
            if let Some(e) = write_error
                && e.kind() != std::io::ErrorKind::BrokenPipe
            {
                return Err(e).context("writing samples to stdout");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Top(args) => {
            let settings = args.collect.resolve(&config);
            let mut table = TopTable::default();
            let tty = std::io::stdout().is_terminal();
            let mut shown = 0u64;
            runtime()?.block_on(agent::run(&settings, |samples| {
                table.update(samples);
                // The agent's last poll at shutdown comes after the last refresh: not shown.
                if args.iterations.is_some_and(|n| shown >= n) {
                    return ControlFlow::Break(());
                }
                if tty {
                    // Clear the screen and home the cursor, like top.
                    print!("\x1b[H\x1b[2J");
                }
                println!("{}", table.render(args.limit));
                shown += 1;
                if args.iterations.is_some_and(|n| shown >= n) {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            }))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Doctor(args) => {
            let checks = doctor::run_checks();
            if args.json {
                println!("{}", serde_json::to_string_pretty(&checks)?);
            } else {
                print!("{}", doctor::render(&checks));
            }
            let failed = checks.iter().any(|c| c.status == doctor::Status::Fail);
            Ok(if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}
