//! `egress-monitor alerts ...`: reads and changes the state database. Works while the agent
//! runs: it takes acknowledgements, suppressions and learned peers from the database.

use std::{io::Write, process::ExitCode};

use anyhow::Context as _;
use jiff::Timestamp;
use monitor::{
    alert_output,
    cli::{AlertsCommand, AlertsListArgs, AlertsSuppressArgs, StateArgs, StatusArg},
    config::Config,
    detect::alerts::{AlertStatus, Suppression},
    store::{AlertFilter, Store},
};

pub fn run(config: &Config, cmd: AlertsCommand) -> anyhow::Result<ExitCode> {
    let now = Timestamp::now();
    let mut stdout = std::io::stdout().lock();
    match cmd {
        AlertsCommand::List(args) => list(config, args, &mut stdout)?,
        AlertsCommand::Show { id, json, state } => {
            let store = Store::open_existing(&state.dir(config))?;
            let alert = store.find_alert(&id)?;
            let history = store.alert_history(alert.id)?;
            if json {
                let doc = serde_json::json!({ "alert": alert, "history": history });
                writeln!(stdout, "{}", serde_json::to_string_pretty(&doc)?)?;
            } else {
                write!(stdout, "{}", alert_output::detail(&alert, &history))?;
            }
        }
        AlertsCommand::Ack { id, learn, state } => {
            let mut store = Store::open_existing(&state.dir(config))?;
            let alert = store.acknowledge(&id, learn, now)?;
            writeln!(stdout, "acknowledged {}", alert_output::summary(&alert))?;
            if learn && let Some(p) = &alert.peer {
                writeln!(stdout, "learned {} for service {}", p.addr, alert.service)?;
            }
        }
        AlertsCommand::Suppress(args) => suppress(config, &args, now, &mut stdout)?,
        AlertsCommand::Suppressions { json, state } => {
            suppressions(config, json, &state, now, &mut stdout)?;
        }
        AlertsCommand::Unsuppress { id, state } => {
            let mut store = Store::open_existing(&state.dir(config))?;
            store.lift_suppression(id, now)?;
            writeln!(stdout, "suppression {id} lifted")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn list(config: &Config, args: AlertsListArgs, stdout: &mut impl Write) -> anyhow::Result<()> {
    let store = Store::open_existing(&args.state.dir(config))?;
    let list = store.list_alerts(&AlertFilter {
        status: args.status.map(|s| match s {
            StatusArg::Open => AlertStatus::Open,
            StatusArg::Resolved => AlertStatus::Resolved,
        }),
        rule: args.rule,
        service: args.service,
        limit: args.limit,
    })?;
    for a in &list {
        if args.json {
            serde_json::to_writer(&mut *stdout, a)?;
            writeln!(stdout)?;
        } else {
            let status = a.status.name();
            writeln!(
                stdout,
                "{} {status:<8} {}",
                a.opened_at,
                alert_output::summary(a)
            )?;
        }
    }
    if list.is_empty() && !args.json {
        eprintln!("no alerts in {}", store.path().display());
    }
    Ok(())
}

fn suppress(
    config: &Config,
    args: &AlertsSuppressArgs,
    now: Timestamp,
    stdout: &mut impl Write,
) -> anyhow::Result<()> {
    let mut store = Store::open_existing(&args.state.dir(config))?;
    let until = args
        .duration
        .map(|d| now.checked_add(d))
        .transpose()
        .context("suppression end is out of range")?;
    let suppression = match &args.id {
        Some(id) => {
            let a = store.find_alert(id)?;
            Suppression {
                rule: Some(a.rule),
                service: Some(a.service.clone()),
                peer: a.peer.as_ref().map(|p| p.addr),
                until,
            }
        }
        None => Suppression {
            rule: args.rule,
            service: args.service.clone(),
            peer: args.peer,
            until,
        },
    };
    let closed = store.suppress(suppression.clone(), args.reason.as_deref(), now)?;
    writeln!(
        stdout,
        "suppressed rule={} service={} peer={} until={} ({} open alert(s) closed)",
        suppression.rule.map_or("*", |r| r.id()),
        suppression.service.as_deref().unwrap_or("*"),
        suppression.peer.map_or("*".into(), |p| p.to_string()),
        suppression
            .until
            .map_or("forever".into(), |u| u.to_string()),
        closed.len()
    )?;
    Ok(())
}

fn suppressions(
    config: &Config,
    json: bool,
    state: &StateArgs,
    now: Timestamp,
    stdout: &mut impl Write,
) -> anyhow::Result<()> {
    let store = Store::open_existing(&state.dir(config))?;
    for s in store.list_suppressions(now)? {
        if json {
            serde_json::to_writer(&mut *stdout, &s)?;
            writeln!(stdout)?;
        } else {
            let q = &s.suppression;
            writeln!(
                stdout,
                "{:>4} rule={} service={} peer={} until={} since={}{}",
                s.id,
                q.rule.map_or("*", |r| r.id()),
                q.service.as_deref().unwrap_or("*"),
                q.peer.map_or("*".into(), |p| p.to_string()),
                q.until.map_or("forever".into(), |u| u.to_string()),
                s.created_at,
                s.reason
                    .map(|r| format!(" reason={r:?}"))
                    .unwrap_or_default()
            )?;
        }
    }
    Ok(())
}
