//! `egress-monitor replay FILE`: recorded `FlowSample`s (the JSON lines `run --output json`
//! prints) through the detector on the samples' own time, with alerts printed. No root, no
//! kernel: the detector is the same code the agent runs.

pub mod efficacy;
pub mod homeserver;
pub mod synthetic;

use std::{
    collections::HashMap,
    io::{self, BufRead},
    sync::Arc,
};

use serde::Serialize;
use thiserror::Error;

use crate::{
    config::Config,
    detect::{Detector, DetectorStats, alerts::AlertEvent},
    flow::{FlowSample, Owner},
    store::{Store, StoreError},
};

#[derive(Debug, Error)]
pub enum ReplayError {
    #[error("reading the trace")]
    Read(#[source] io::Error),
    #[error("line {line}: not a FlowSample: {source}")]
    Parse {
        line: u64,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("writing alerts")]
    Write(#[source] io::Error),
}

/// What a replay did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ReplaySummary {
    pub lines: u64,
    pub windows: u64,
    pub detector: DetectorStats,
    pub opened: u64,
    pub updated: u64,
    pub resolved: u64,
}

/// Feeds windows of samples to the detector and the store, in time order as given.
pub struct Replayer<'a> {
    detector: Detector,
    store: &'a mut Store,
    events: Vec<AlertEvent>,
    pub summary: ReplaySummary,
}

impl<'a> Replayer<'a> {
    /// A detector for `config`, loaded from `store` (learning survives across replays that
    /// share a state directory).
    pub fn new(config: &Config, store: &'a mut Store) -> Result<Self, ReplayError> {
        let mut detector = Detector::new(config);
        // Simulated time: every stored suppression is loaded; expired ones drop out as the trace's
        // time passes them.
        store.load_into(&mut detector, jiff::Timestamp::UNIX_EPOCH)?;
        Ok(Self {
            detector,
            store,
            events: Vec::new(),
            summary: ReplaySummary::default(),
        })
    }

    /// One window: detect, store, hand the alert events to `sink`.
    pub fn window(
        &mut self,
        samples: &[FlowSample],
        sink: &mut impl FnMut(&AlertEvent) -> io::Result<()>,
    ) -> Result<(), ReplayError> {
        self.summary.windows += 1;
        self.events.clear();
        self.detector.observe(samples, &mut self.events);
        let learned = self.detector.take_learned();
        self.store.record(&self.events, &learned)?;
        for e in &self.events {
            match e.event {
                crate::detect::alerts::AlertEventKind::Opened => self.summary.opened += 1,
                crate::detect::alerts::AlertEventKind::Updated => self.summary.updated += 1,
                crate::detect::alerts::AlertEventKind::Resolved => self.summary.resolved += 1,
                _ => {}
            }
            sink(e).map_err(ReplayError::Write)?;
        }
        Ok(())
    }

    /// Saves the detector's windows and baselines (end of a replay with `--state`).
    pub fn finish(mut self) -> Result<ReplaySummary, ReplayError> {
        self.store.checkpoint(&mut self.detector)?;
        self.summary.detector = self.detector.stats.clone();
        Ok(self.summary)
    }
}

/// Reads JSON lines, groups consecutive samples with the same window end, and replays them.
/// Identical owners are shared (as the agent shares them), so the detector's per-owner cache
/// works on replayed data too.
pub fn replay_lines(
    input: impl BufRead,
    replayer: &mut Replayer<'_>,
    mut sink: impl FnMut(&AlertEvent) -> io::Result<()>,
) -> Result<(), ReplayError> {
    let mut owners: HashMap<Owner, Arc<Owner>> = HashMap::new();
    let mut batch: Vec<FlowSample> = Vec::new();
    for (i, line) in input.lines().enumerate() {
        let line = line.map_err(ReplayError::Read)?;
        let n = i as u64 + 1;
        if line.trim().is_empty() {
            continue;
        }
        let mut sample: FlowSample =
            serde_json::from_str(&line).map_err(|source| ReplayError::Parse { line: n, source })?;
        replayer.summary.lines += 1;
        let shared = owners
            .entry((*sample.owner).clone())
            .or_insert_with(|| sample.owner.clone());
        sample.owner = shared.clone();
        if batch
            .last()
            .is_some_and(|last| last.window_end != sample.window_end)
        {
            replayer.window(&batch, &mut sink)?;
            batch.clear();
        }
        batch.push(sample);
        if owners.len() > 100_000 {
            owners.clear();
        }
    }
    if !batch.is_empty() {
        replayer.window(&batch, &mut sink)?;
    }
    Ok(())
}

#[cfg(test)]
mod scenarios;
