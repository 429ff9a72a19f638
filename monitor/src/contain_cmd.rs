//! `egress-monitor contain ...`: lists, starts and lifts containments in the state database.
//! Works while the agent runs, as `alerts ack` does: the CLI checks the rails, stores the
//! step with its event (exported by the agent's sinks) and leaves an operator action that the
//! agent applies at its next poll.

use std::{io::Write, process::ExitCode};

use anyhow::{Context as _, bail};
use jiff::{SignedDuration, Timestamp};
use monitor::{
    cli::{ContainAddArgs, ContainCommand},
    config::Config,
    contain::{
        policy::{Refusal, check_rails},
        record::{
            Action, Containment, ContainmentEvent, ContainmentEventKind, ContainmentState, Decider,
            Enforcement, Start,
        },
        settings::Mode,
    },
    detect::classes::{Classifier, DestinationClass},
    detection::configured_services,
    store::Store,
};

pub fn run(config: &Config, cmd: ContainCommand) -> anyhow::Result<ExitCode> {
    let mut stdout = std::io::stdout().lock();
    match cmd {
        ContainCommand::List {
            all,
            limit,
            json,
            state,
        } => {
            let store = Store::open_existing(&state.dir(config))?;
            let list = store.list_containments(!all, limit)?;
            for c in &list {
                if json {
                    serde_json::to_writer(&mut stdout, c)?;
                    writeln!(stdout)?;
                } else {
                    writeln!(stdout, "{}", line(c))?;
                }
            }
            if list.is_empty() && !json {
                eprintln!(
                    "no {}containments in {}",
                    if all { "" } else { "active " },
                    store.path().display()
                );
            }
        }
        ContainCommand::Show { id, json, state } => {
            let store = Store::open_existing(&state.dir(config))?;
            let c = store.find_containment(&id)?;
            let history = store.containment_history(c.id)?;
            if json {
                let doc = serde_json::json!({ "containment": c, "history": history });
                writeln!(stdout, "{}", serde_json::to_string_pretty(&doc)?)?;
            } else {
                writeln!(stdout, "{}", line(&c))?;
                writeln!(stdout, "  reason: {}", c.reason)?;
                for e in &history {
                    writeln!(
                        stdout,
                        "  {} {:<8} {}",
                        e.at,
                        e.event.name(),
                        e.containment
                            .end_reason
                            .as_deref()
                            .unwrap_or(&e.containment.decided_by.name())
                    )?;
                }
            }
        }
        ContainCommand::Add(args) => add(config, &args, &mut stdout)?,
        ContainCommand::Lift { id, reason, state } => {
            let mut store = Store::open_existing(&state.dir(config))?;
            let mut c = store.find_containment(&id)?;
            if !c.is_active() {
                bail!(
                    "containment {} is already {} ({})",
                    c.id,
                    c.state.name(),
                    c.end_reason.as_deref().unwrap_or("no reason recorded")
                );
            }
            let now = Timestamp::now();
            let by = operator();
            c.state = ContainmentState::Lifted;
            c.ended_at = Some(now);
            c.end_reason = Some(reason.unwrap_or_else(|| "lifted by an operator".to_owned()));
            c.ended_by = Some(by);
            let event = ContainmentEvent {
                event: ContainmentEventKind::Lifted,
                at: now,
                containment: c,
            };
            store.operator_lift(&event)?;
            writeln!(stdout, "lifted {}", line(&event.containment))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn add(config: &Config, args: &ContainAddArgs, stdout: &mut impl Write) -> anyhow::Result<()> {
    let settings = &config.containment;
    if settings.mode == Mode::Off {
        bail!("containment.mode is \"off\" in the configuration: nothing can be contained");
    }
    // Created if the agent never ran here: it takes the containment in when it starts.
    let mut store = Store::open(&args.state.dir(config))?;
    let configured = configured_services(config).any(|s| s == args.service);
    let class = if let Some(class) =
        Classifier::new(&config.destinations).protects_any(&args.service, &args.peer)
    {
        class
    } else if let Some(learned) = store.learned_within(&args.service, &args.peer)? {
        eprintln!("{learned} is a learned destination of {}", args.service);
        DestinationClass::Learned
    } else {
        DestinationClass::Unknown
    };
    let active = store
        .list_containments(true, usize::MAX >> 1)?
        .into_iter()
        .filter(|c| c.service == args.service)
        .collect::<Vec<_>>();
    if let Some(c) = active.iter().find(|c| c.target.contains(&args.peer)) {
        bail!("already contained: {}", line(c));
    }
    if let Err(refusal) = check_rails(settings, configured, class, active.len()) {
        bail!(
            "refused: {} ({})",
            refusal.explain(settings.max_per_service()),
            match refusal {
                Refusal::NotConfigured => "add it to [[services]]",
                Refusal::KillSwitch => "turn containment.kill_switch off",
                Refusal::Protected(_) => "the rails protect it",
                Refusal::TooMany => "lift one first",
            }
        );
    }
    let now = Timestamp::now();
    let ttl = SignedDuration::try_from(args.duration).context("--for is out of range")?;
    let action = match args.rate {
        Some(bytes_per_sec) => Action::Throttle { bytes_per_sec },
        None => Action::Block,
    };
    // Enforced only where the agent enforces: it says so when it adopts the containment.
    let enforcement = if settings.mode == Mode::Enforce {
        Enforcement::Enforced
    } else {
        Enforcement::DryRun
    };
    let c = Containment::start(Start {
        service: args.service.clone(),
        target: args.peer,
        action,
        enforcement,
        alert: None,
        reason: args.reason.clone(),
        decided_by: operator(),
        at: now,
        expires_at: now.checked_add(ttl).context("--for is out of range")?,
    });
    let event = ContainmentEvent {
        event: ContainmentEventKind::Started,
        at: now,
        containment: c,
    };
    store.operator_contain(&event)?;
    writeln!(stdout, "started {}", line(&event.containment))?;
    if enforcement == Enforcement::DryRun {
        writeln!(
            stdout,
            "containment.mode is \"dry_run\": recorded and exported, no packet is touched"
        )?;
    }
    Ok(())
}

/// One line per containment.
fn line(c: &Containment) -> String {
    let until = match c.state {
        ContainmentState::Active => format!("until {}", c.expires_at),
        _ => format!(
            "{} {}",
            c.state.name(),
            c.ended_at.map_or_else(String::new, |t| t.to_string())
        ),
    };
    format!(
        "{} {} {} -> {} {} (by {}{}) {}",
        c.id,
        c.verb(),
        c.service,
        c.target,
        until,
        c.decided_by.name(),
        c.alert_id
            .map(|a| format!(", alert {a}"))
            .unwrap_or_default(),
        if c.dropped_packets > 0 {
            format!(
                "dropped {} B in {} packets",
                c.dropped_bytes, c.dropped_packets
            )
        } else {
            String::new()
        }
    )
    .trim_end()
    .to_owned()
}

/// Who runs the command: the user behind sudo, else the login of this uid.
fn operator() -> Decider {
    let uid = nix::unistd::getuid();
    let user = std::env::var("SUDO_USER")
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(|| {
            nix::unistd::User::from_uid(uid)
                .ok()
                .flatten()
                .map(|u| u.name)
        })
        .unwrap_or_else(|| format!("uid {uid}"));
    Decider::Operator { user }
}
