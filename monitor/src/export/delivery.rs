//! Delivery from the outbox to the sinks: each sink reads the events after its own cursor,
//! sends them in its format, and moves its cursor only once they are written. A failing
//! sink keeps its backlog (logged, retried at the next round) and holds back no other sink.

use std::path::Path;

use super::{
    Format, Reporter,
    file::FileSink,
    render,
    settings::{SinkConfig, SinkType},
};
use crate::store::{Store, StoreError};

/// Events taken from the outbox per sink and round.
const BATCH: usize = 500;

struct Sink {
    name: String,
    format: Format,
    transport: FileSink,
    failures: u64,
}

/// The configured sinks with their delivery state.
pub struct Deliverer {
    sinks: Vec<Sink>,
    reporter: Reporter,
}

/// What one round did, per sink.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Round {
    pub delivered: u64,
    pub failed_sinks: u64,
}

impl Deliverer {
    /// Sinks from validated configuration; relative file paths are under `state_dir`.
    pub fn new(config: &[SinkConfig], state_dir: &Path, reporter: Reporter) -> Self {
        let sinks = config
            .iter()
            .map(|c| match c.kind {
                SinkType::File => {
                    let path = c.path.clone().unwrap_or_else(|| "alerts.jsonl".into());
                    let path = if path.is_relative() {
                        state_dir.join(path)
                    } else {
                        path
                    };
                    Sink {
                        name: c.name.get_ref().clone(),
                        format: c.format,
                        transport: FileSink::new(
                            path,
                            c.max_size.get_ref().as_u64(),
                            *c.keep.get_ref(),
                            c.fsync,
                        ),
                        failures: 0,
                    }
                }
            })
            .collect();
        Self { sinks, reporter }
    }

    /// Delivers what every sink has pending (until its backlog is empty or it fails).
    pub fn round(&mut self, store: &mut Store) -> Result<Round, StoreError> {
        let mut round = Round::default();
        for sink in &mut self.sinks {
            loop {
                let pending = store.pending(&sink.name, BATCH)?;
                let Some(last) = pending.last().map(|p| p.seq) else {
                    break;
                };
                let lines: Vec<String> = pending
                    .iter()
                    .map(|p| render(sink.format, &p.event, &self.reporter))
                    .collect();
                match sink.transport.write(&lines) {
                    Ok(()) => {
                        store.advance(&sink.name, last)?;
                        round.delivered += lines.len() as u64;
                        sink.failures = 0;
                    }
                    Err(e) => {
                        sink.failures += 1;
                        round.failed_sinks += 1;
                        // Logged at the first failure and then every 60th, not per round.
                        if sink.failures % 60 == 1 {
                            tracing::error!(
                                sink = %sink.name,
                                path = %sink.transport.path().display(),
                                error = %e,
                                backlog = store.backlog(&sink.name).unwrap_or_default(),
                                "alert sink failed; its events stay queued and are retried"
                            );
                        }
                        break;
                    }
                }
                if pending.len() < BATCH {
                    break;
                }
            }
        }
        Ok(round)
    }

    /// Registers every sink's cursor (a new sink starts at the current end of the outbox).
    pub fn register(&self, store: &mut Store) -> Result<(), StoreError> {
        for sink in &self.sinks {
            store.cursor(&sink.name)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::{
        detect::alerts::AlertEvent,
        export::{fixtures, settings::default_sinks},
    };

    fn reporter() -> Reporter {
        Reporter {
            hostname: "h".into(),
            product: "egress-monitor",
            version: "0.1.0",
        }
    }

    #[test]
    fn events_reach_the_file_once_and_survive_a_failing_round() {
        let dir = std::env::temp_dir().join(format!("egress-delivery-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let mut store = Store::in_memory().unwrap();
        let mut d = Deliverer::new(&default_sinks(), &dir, reporter());
        d.register(&mut store).unwrap();
        let e = fixtures::opened();
        store.record(std::slice::from_ref(&e), &[]).unwrap();
        assert_eq!(d.round(&mut store).unwrap().delivered, 1);
        assert_eq!(d.round(&mut store).unwrap().delivered, 0, "once");
        let path = dir.join("alerts.jsonl");
        let back: AlertEvent =
            serde_json::from_str(fs::read_to_string(&path).unwrap().trim()).unwrap();
        assert_eq!(back, e);

        // The file cannot be written (a directory in its place): the event stays queued.
        fs::remove_file(&path).unwrap();
        fs::create_dir(&path).unwrap();
        let mut d = Deliverer::new(&default_sinks(), &dir, reporter());
        store.record(std::slice::from_ref(&e), &[]).unwrap();
        let r = d.round(&mut store).unwrap();
        assert_eq!((r.delivered, r.failed_sinks), (0, 1));
        assert_eq!(store.backlog("alerts-file").unwrap(), 1);
        fs::remove_dir(&path).unwrap();
        assert_eq!(d.round(&mut store).unwrap().delivered, 1, "retried");
        fs::remove_dir_all(&dir).unwrap();
    }
}
