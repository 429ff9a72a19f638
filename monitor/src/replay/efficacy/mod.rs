//! `egress-monitor efficacy`: every scenario of the homeserver traces (see `homeserver`), for
//! a few seeds, through the detector (the `Replayer`, an in-memory store), with each alert
//! sorted into "about the scenario's event" or "false alert". The detector runs with the
//! given configuration (the embedded default unless `--config`), plus the traces'
//! `[[services]]` when it has none.

mod judge;
mod report;
#[cfg(test)]
mod tests;

use std::{
    collections::HashMap,
    sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Instant,
};

use serde::Serialize;

pub use self::{
    judge::{Brief, PEER_GRACE_SECS, SERVICE_GRACE_SECS, Target, Verdict, judge},
    report::{Report, SUMMARY_HEADER, ScenarioReport},
};
use super::{
    ReplayError, Replayer,
    homeserver::{self, DAY_SECS, Params, Population, START_SECS, Scenario},
};
use crate::{
    config::{Config, ConfigError, Origin},
    detect::alerts::{AlertEvent, AlertEventKind},
    store::Store,
};

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    pub days: u32,
    pub seeds: Vec<u64>,
    pub scenarios: Vec<Scenario>,
    pub population: Population,
    /// Runs at once (at least 1).
    pub threads: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            days: 7,
            seeds: vec![1, 2, 3],
            scenarios: Scenario::ALL.to_vec(),
            population: Population::default(),
            threads: 1,
        }
    }
}

/// One scenario with one seed.
#[derive(Clone, Debug, Serialize)]
pub struct RunResult {
    pub seed: u64,
    pub samples: u64,
    /// Distinct client addresses the service served over the trace.
    pub clients: u64,
    pub alert_events: u64,
    #[serde(flatten)]
    pub verdict: Verdict,
}

/// `config` with the traces' services when it has none of its own.
pub fn with_services(config: &Config) -> Result<Config, ConfigError> {
    let mut config = config.clone();
    if config.services.is_empty() {
        config.services = Config::parse(homeserver::SERVICES_TOML, &Origin::Embedded)?.services;
    }
    Ok(config)
}

/// The scenario's event as a judging target, for a trace of `params`.
pub fn target(scenario: Scenario, params: &Params) -> Option<Target> {
    let event = scenario.event(params)?;
    let secs = homeserver::minute_secs;
    Some(Target {
        attack: event.attack,
        service: event.service.to_owned(),
        peers: event.peers(params),
        spans: event
            .spans()
            .into_iter()
            .map(|(a, b)| (secs(a), secs(b)))
            .collect(),
        start: secs(event.start()),
    })
}

/// Replays one scenario and seed; returns the opened alert events, the sample count, the
/// alert event count and the distinct clients served.
pub fn replay(
    config: &Config,
    scenario: Scenario,
    params: &Params,
) -> Result<(Vec<AlertEvent>, u64, u64, u64), ReplayError> {
    let mut clients = std::collections::HashSet::<std::net::IpAddr>::default();
    let mut store = Store::in_memory()?;
    let mut replayer = Replayer::new(config, &mut store)?;
    let mut opened = Vec::new();
    let mut events = 0u64;
    let mut samples = 0u64;
    let mut failure = None;
    homeserver::generate(scenario, params, |batch| {
        if failure.is_some() {
            return;
        }
        samples += batch.len() as u64;
        clients.extend(
            batch
                .iter()
                .filter(|s| s.direction == Some(crate::flow::Direction::Served))
                .filter_map(|s| s.remote.map(|r| r.addr)),
        );
        let r = replayer.window(batch, &mut |e| {
            events += 1;
            if e.event == AlertEventKind::Opened {
                opened.push(e.clone());
            }
            Ok(())
        });
        if let Err(e) = r {
            failure = Some(e);
        }
    });
    if let Some(e) = failure {
        return Err(e);
    }
    Ok((opened, samples, events, clients.len() as u64))
}

/// One replay's output.
struct Replayed {
    opened: Vec<AlertEvent>,
    samples: u64,
    events: u64,
    clients: u64,
}

/// Runs every (scenario, seed) of `opts`, `opts.threads` at a time; the ordinary week of
/// each seed is always run (it tells a service rule's ordinary alerts from the event's).
pub fn run(config: &Config, opts: &Options) -> Result<Report, ReplayError> {
    let started = Instant::now();
    let mut jobs: Vec<(Scenario, u64)> = opts
        .seeds
        .iter()
        .map(|&seed| (Scenario::Normal, seed))
        .collect();
    jobs.extend(
        opts.scenarios
            .iter()
            .filter(|&&s| s != Scenario::Normal)
            .flat_map(|&s| opts.seeds.iter().map(move |&seed| (s, seed))),
    );
    let params = |seed| Params {
        days: opts.days,
        seed,
        population: opts.population,
    };
    let next = AtomicUsize::new(0);
    let slots: Mutex<Vec<Option<Result<Replayed, ReplayError>>>> =
        Mutex::new((0..jobs.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..opts.threads.clamp(1, jobs.len().max(1)) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(scenario, seed)) = jobs.get(i) else {
                        break;
                    };
                    let r = replay(config, scenario, &params(seed)).map(
                        |(opened, samples, events, clients)| Replayed {
                            opened,
                            samples,
                            events,
                            clients,
                        },
                    );
                    if let Ok(mut all) = slots.lock() {
                        all[i] = Some(r);
                    }
                }
            });
        }
    });
    let mut done: HashMap<(Scenario, u64), Replayed> = HashMap::new();
    for (job, r) in jobs.iter().zip(slots.into_inner().unwrap_or_default()) {
        if let Some(r) = r {
            done.insert(*job, r?);
        }
    }
    let judged_from = START_SECS + DAY_SECS;
    let mut scenarios = Vec::new();
    for &scenario in &opts.scenarios {
        let mut runs = Vec::new();
        for &seed in &opts.seeds {
            let (Some(r), Some(normal)) = (
                done.get(&(scenario, seed)),
                done.get(&(Scenario::Normal, seed)),
            ) else {
                continue;
            };
            let background: Vec<Brief> = normal.opened.iter().map(Brief::of).collect();
            let target = target(scenario, &params(seed));
            runs.push(RunResult {
                seed,
                samples: r.samples,
                clients: r.clients,
                alert_events: r.events,
                verdict: judge(&r.opened, target.as_ref(), judged_from, &background),
            });
        }
        let target = target(scenario, &params(opts.seeds.first().copied().unwrap_or(1)));
        scenarios.push(ScenarioReport {
            scenario: scenario.name(),
            expected_alert: target.as_ref().is_some_and(|t| t.attack),
            event: target.is_some(),
            runs,
        });
    }
    Ok(Report {
        days: opts.days,
        seeds: opts.seeds.clone(),
        seconds: started.elapsed().as_secs_f64(),
        scenarios,
    })
}
