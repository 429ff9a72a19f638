//! `egress-monitor`: the binary. Parses the command line, sets up logging and dispatches.

use std::{io::IsTerminal as _, ops::ControlFlow, process::ExitCode};

use anyhow::Context as _;
use clap::Parser as _;
use monitor::{
    agent, alert_output,
    cli::{Cli, Command, EfficacyArgs, LogFormat, ReplayArgs, RunArgs},
    config::Config,
    detection::LiveDetector,
    doctor,
    export::settings::SinkType,
    output,
    replay::{self, Replayer, efficacy, homeserver, synthetic},
    store::Store,
    top::TopTable,
};
use tracing_subscriber::EnvFilter;

mod alerts_cmd;
mod contain_cmd;

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
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
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
        Command::Run(args) => run_agent(config, cli.config.as_deref(), &args),
        Command::Top(args) => {
            let settings = args.collect.resolve(&config);
            let mut table = TopTable::default();
            let tty = std::io::stdout().is_terminal();
            let mut shown = 0u64;
            runtime()?.block_on(agent::run(&settings, |event| {
                // A closed terminal: stop.
                let samples = match event {
                    agent::Event::Window(samples, _) => samples,
                    // top shows; it never contains.
                    agent::Event::Attached(_) => return ControlFlow::Continue(()),
                    agent::Event::Hangup => return ControlFlow::Break(()),
                };
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
        Command::Replay(args) => replay_trace(&config, &args),
        Command::Efficacy(args) => run_efficacy(&config, &args),
        Command::Alerts(cmd) => alerts_cmd::run(&config, cmd),
        Command::Contain(cmd) => contain_cmd::run(&config, cmd),
        Command::Synthesize(args) => {
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let mut result = Ok(());
            let mut write = |batch: &[monitor::flow::FlowSample]| {
                if result.is_ok() {
                    result = output::write_samples(&mut out, output::OutputFormat::Json, batch);
                }
            };
            if args.homeserver {
                let scenario =
                    <homeserver::Scenario as clap::ValueEnum>::from_str(&args.scenario, true)
                        .map_err(|_| {
                            anyhow::anyhow!(
                                "{:?} is not a homeserver scenario (see `efficacy --help`)",
                                args.scenario
                            )
                        })?;
                let params = homeserver::Params {
                    days: args.days,
                    seed: args.seed,
                    population: args.population.population(),
                };
                homeserver::generate(scenario, &params, &mut write);
            } else {
                let scenario: synthetic::Scenario = args.scenario.parse().map_err(|_| {
                    anyhow::anyhow!(
                        "{:?} is not a scenario: normal, bulk-download, upload, slow-drip (or --homeserver)",
                        args.scenario
                    )
                })?;
                synthetic::generate(scenario, args.seed, &mut write);
            }
            match result {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    Err(e).context("writing the trace")
                }
                _ => Ok(ExitCode::SUCCESS),
            }
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

/// `run`: `config` was read from `config_path` (the embedded default when `None`), which
/// SIGHUP reads again.
fn run_agent(
    mut config: Config,
    config_path: Option<&std::path::Path>,
    args: &RunArgs,
) -> anyhow::Result<ExitCode> {
    let settings = args.collect.resolve(&config);
    let format = args.output.unwrap_or(config.agent.output);
    // Privileges first: an unprivileged start names the missing capability rather
    // than failing on the state directory.
    monitor::kernel::loader::check_privileges()?;
    let mut detection = LiveDetector::start(&config, &args.state.dir(&config), args.reset_state)?;
    if format != output::OutputFormat::None
        && config.sinks.iter().any(|s| s.kind == SinkType::Stdout)
    {
        anyhow::bail!(
            "a stdout sink is configured: samples cannot share stdout with it \
                 (run with --output none)"
        );
    }
    // One write per window, not per line: at 10k flows a second, line-buffered stdout
    // alone costs several percent of a core. Not locked without samples: a stdout
    // sink writes from its delivery thread.
    let mut stdout = (format != output::OutputFormat::None)
        .then(|| std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock()));
    let mut write_error = None;
    let max_flows = u64::from(settings.max_flows);
    let samples_on_stdout = format != output::OutputFormat::None;
    runtime()?.block_on(agent::run(&settings, |event| {
        let (samples, stats) = match event {
            agent::Event::Window(samples, stats) => (samples, stats),
            agent::Event::Attached(enforcer) => {
                detection.attach_kernel(enforcer);
                return ControlFlow::Continue(());
            }
            agent::Event::Hangup => {
                reload(config_path, &mut config, &mut detection, samples_on_stdout);
                return ControlFlow::Continue(());
            }
        };
        for e in detection.observe(samples) {
            log_alert(e);
        }
        detection.observe_collector(stats, max_flows);
        let Some(stdout) = stdout.as_mut() else {
            return ControlFlow::Continue(());
        };
        match output::write_samples(stdout, format, samples) {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => {
                // stdout closed (e.g. `| head`): stop cleanly, detaching everything.
                write_error = Some(e);
                ControlFlow::Break(())
            }
        }
    }))?;
    detection.finish();
    if let Some(e) = write_error
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        return Err(e).context("writing samples to stdout");
    }
    Ok(ExitCode::SUCCESS)
}

/// SIGHUP: the configuration file again (see `monitor::reload`); logged either way.
fn reload(
    path: Option<&std::path::Path>,
    config: &mut Config,
    detection: &mut LiveDetector,
    samples_on_stdout: bool,
) {
    match monitor::reload::on_hangup(path, config, detection, samples_on_stdout) {
        Ok(changes) => tracing::info!(
            file = %path.map_or_else(|| "(embedded default)".into(), |p| p.display().to_string()),
            changed = ?changes.applied,
            at_next_start = ?changes.at_next_start,
            open_alerts = detection.open_alerts(),
            "configuration reloaded (SIGHUP)"
        ),
        Err(e) => tracing::error!(
            error = %e,
            "configuration reload refused: the agent goes on with the previous configuration"
        ),
    }
}

/// Alerts of the live agent go to the log (stderr) until the export sinks exist; they are
/// also in the state database (`egress-monitor alerts list`).
fn log_alert(e: &monitor::detect::alerts::AlertEvent) {
    let a = &e.alert;
    tracing::warn!(
        event = e.event.name(),
        alert_id = %a.id,
        rule = a.rule.id(),
        severity = a.severity.name(),
        service = %a.service,
        peer = a.peer.as_ref().map(|p| p.addr.to_string()).unwrap_or_default(),
        bytes = a.bytes,
        window = a.window.name(),
        threshold = a.threshold.bytes,
        total_bytes = a.total_bytes,
        "alert: {}",
        alert_output::summary(a)
    );
}

/// `efficacy`: the table (or markdown, or JSON) on stdout, the run time on stderr.
fn run_efficacy(config: &Config, args: &EfficacyArgs) -> anyhow::Result<ExitCode> {
    let config = efficacy::with_services(config).context("the traces' [[services]]")?;
    let threads = args.threads.map_or_else(
        || std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        |n| n as usize,
    );
    let opts = efficacy::Options {
        days: args.days,
        seeds: args.seeds.clone(),
        scenarios: if args.scenarios.is_empty() {
            homeserver::Scenario::ALL.to_vec()
        } else {
            args.scenarios.clone()
        },
        population: args.population.population(),
        threads,
    };
    let report = efficacy::run(&config, &opts).context("running the scenarios")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if args.summary {
        if args.summary_header {
            println!("{}", efficacy::SUMMARY_HEADER);
        }
        let p = &args.population;
        let seeds: Vec<String> = args.seeds.iter().map(ToString::to_string).collect();
        let shape = format!(
            "{} / {} / {} / {}; seeds {}",
            p.nats,
            p.homes,
            p.mobiles,
            p.federation,
            seeds.join(", ")
        );
        println!("{}", report.summary_row(&shape));
    } else {
        if args.markdown {
            print!("{}", report.markdown());
        } else {
            print!("{}", report.text());
        }
        if args.details {
            print!("\n{}", report.details());
        }
    }
    let samples: u64 = report
        .scenarios
        .iter()
        .flat_map(|s| s.runs.iter().map(|r| r.samples))
        .sum();
    tracing::info!(
        runs = report.scenarios.iter().map(|s| s.runs.len()).sum::<usize>(),
        samples,
        threads,
        seconds = format!("{:.1}", report.seconds),
        "efficacy done"
    );
    Ok(ExitCode::SUCCESS)
}

fn replay_trace(config: &Config, args: &ReplayArgs) -> anyhow::Result<ExitCode> {
    let mut store = match &args.state_dir {
        Some(dir) => Store::open(dir)?,
        None => Store::in_memory()?,
    };
    let mut replayer = Replayer::new(config, &mut store)?;
    let input: Box<dyn std::io::BufRead> = if args.file.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        let file = std::fs::File::open(&args.file)
            .with_context(|| format!("opening {}", args.file.display()))?;
        Box::new(std::io::BufReader::with_capacity(1 << 20, file))
    };
    let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
    let started = std::time::Instant::now();
    replay::replay_lines(input, &mut replayer, |e| {
        alert_output::write_event(&mut stdout, args.output, e)
    })
    .with_context(|| format!("replaying {}", args.file.display()))?;
    let summary = replayer.finish()?;
    std::io::Write::flush(&mut stdout).context("writing alerts")?;
    let secs = started.elapsed().as_secs_f64();
    tracing::info!(
        lines = summary.lines,
        windows = summary.windows,
        services = summary.detector.services,
        peers = summary.detector.peers,
        learned = summary.detector.learned,
        opened = summary.opened,
        updated = summary.updated,
        resolved = summary.resolved,
        seconds = format!("{secs:.2}"),
        samples_per_second = (summary.lines as f64 / secs.max(1e-9)) as u64,
        "replay done"
    );
    Ok(ExitCode::SUCCESS)
}
