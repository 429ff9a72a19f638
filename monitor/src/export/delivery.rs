//! Delivery from the outbox to the sinks: each sink reads the events after its own cursor,
//! sends them in its format, and moves its cursor only once they are written. A failing
//! sink keeps its backlog (logged, retried at the next round) and holds back no other sink.

use std::path::Path;

use super::{
    Format, Reporter,
    file::FileSink,
    render,
    settings::{SinkConfig, SinkType},
    syslog::{Payload, message},
    syslog_sink::SyslogSink,
};
use crate::store::{Store, StoreError};

/// Events taken from the outbox per sink and round.
const BATCH: usize = 500;

enum Transport {
    File(FileSink),
    Syslog { sink: SyslogSink, facility: u8 },
}

impl Transport {
    fn target(&self) -> String {
        match self {
            Self::File(f) => f.path().display().to_string(),
            Self::Syslog { sink, .. } => sink.address().to_owned(),
        }
    }
}

struct Sink {
    name: String,
    format: Format,
    transport: Transport,
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
            .map(|c| {
                let transport = match c.kind {
                    SinkType::File => {
                        let path = c.path.clone().unwrap_or_else(|| "alerts.jsonl".into());
                        let path = if path.is_relative() {
                            state_dir.join(path)
                        } else {
                            path
                        };
                        Transport::File(FileSink::new(
                            path,
                            c.max_size.get_ref().as_u64(),
                            *c.keep.get_ref(),
                            c.fsync,
                        ))
                    }
                    SinkType::Syslog => Transport::Syslog {
                        sink: SyslogSink::new(
                            c.address
                                .as_ref()
                                .map(|a| a.get_ref().clone())
                                .unwrap_or_default(),
                            c.protocol,
                            c.framing,
                        ),
                        facility: *c.facility.get_ref(),
                    },
                };
                Sink {
                    name: c.name.get_ref().clone(),
                    format: c.format,
                    transport,
                    failures: 0,
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
                let sent = match &mut sink.transport {
                    Transport::File(file) => {
                        let lines: Vec<String> = pending
                            .iter()
                            .map(|p| render(sink.format, &p.event, &self.reporter))
                            .collect();
                        file.write(&lines).map(|()| lines.len())
                    }
                    Transport::Syslog {
                        sink: syslog,
                        facility,
                    } => {
                        let payload = Payload::Format(sink.format);
                        let messages: Vec<String> = pending
                            .iter()
                            .map(|p| message(&p.event, &self.reporter, *facility, payload))
                            .collect();
                        syslog.send(&messages).map(|()| messages.len())
                    }
                };
                match sent {
                    Ok(count) => {
                        store.advance(&sink.name, last)?;
                        round.delivered += count as u64;
                        sink.failures = 0;
                    }
                    Err(e) => {
                        sink.failures += 1;
                        round.failed_sinks += 1;
                        // Logged at the first failure and then every 60th, not per round.
                        if sink.failures % 60 == 1 {
                            tracing::error!(
                                sink = %sink.name,
                                target = %sink.transport.target(),
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

    #[test]
    fn events_reach_the_file_once_and_survive_a_failing_round() {
        let dir = std::env::temp_dir().join(format!("egress-delivery-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let mut store = Store::in_memory().unwrap();
        let mut d = Deliverer::new(&default_sinks(), &dir, fixtures::reporter());
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
        let mut d = Deliverer::new(&default_sinks(), &dir, fixtures::reporter());
        store.record(std::slice::from_ref(&e), &[]).unwrap();
        let r = d.round(&mut store).unwrap();
        assert_eq!((r.delivered, r.failed_sinks), (0, 1));
        assert_eq!(store.backlog("alerts-file").unwrap(), 1);
        fs::remove_dir(&path).unwrap();
        assert_eq!(d.round(&mut store).unwrap().delivered, 1, "retried");
        fs::remove_dir_all(&dir).unwrap();
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("starting the alert delivery thread")]
    Spawn(#[source] std::io::Error),
}

/// Why the delivery thread wakes up.
enum Wake {
    /// New events were stored.
    Kick,
    /// Deliver what is left and stop.
    Stop,
}

/// Delivery off the agent's poll loop: a thread with its own database connection (WAL lets
/// it read while the detector writes), woken after every stored window and every second,
/// so a slow sink delays only its own deliveries, never detection.
pub struct DeliveryThread {
    wake: std::sync::mpsc::Sender<Wake>,
    handle: Option<std::thread::JoinHandle<()>>,
}

/// How long `stop` waits for the last round before giving up (the outbox keeps the rest).
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

impl DeliveryThread {
    /// Opens its own connection to `state_dir/state.db` and starts delivering.
    pub fn start(
        config: &[SinkConfig],
        state_dir: &Path,
        reporter: Reporter,
    ) -> Result<Self, DeliveryError> {
        let mut store = Store::open(state_dir)?;
        let mut deliverer = Deliverer::new(config, state_dir, reporter);
        deliverer.register(&mut store)?;
        let (wake, rx) = std::sync::mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("alert-delivery".into())
            .spawn(move || {
                loop {
                    let stop = match rx.recv_timeout(std::time::Duration::from_secs(1)) {
                        Ok(Wake::Stop) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                            true
                        }
                        Ok(Wake::Kick) | Err(std::sync::mpsc::RecvTimeoutError::Timeout) => false,
                    };
                    if let Err(e) = deliverer.round(&mut store) {
                        tracing::error!(error = %e, "reading the outbox");
                    }
                    if stop {
                        return;
                    }
                }
            })
            .map_err(DeliveryError::Spawn)?;
        Ok(Self {
            wake,
            handle: Some(handle),
        })
    }

    /// New events are in the outbox.
    pub fn kick(&self) {
        let _ = self.wake.send(Wake::Kick);
    }

    /// Delivers what is pending and stops (waits at most `STOP_GRACE`; what is left stays in
    /// the outbox for the next start).
    pub fn stop(mut self) {
        let _ = self.wake.send(Wake::Stop);
        if let Some(handle) = self.handle.take() {
            let deadline = std::time::Instant::now() + STOP_GRACE;
            while !handle.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            if handle.is_finished() {
                let _ = handle.join();
            } else {
                tracing::warn!("alert delivery still busy at stop; the rest stays queued");
            }
        }
    }
}

#[cfg(test)]
mod thread_tests {
    use std::{fs, time::Duration};

    use super::*;
    use crate::export::{fixtures, settings::default_sinks};

    #[test]
    fn the_thread_delivers_what_another_connection_stored() {
        let dir =
            std::env::temp_dir().join(format!("egress-delivery-thread-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let mut writer = Store::open(&dir).unwrap();
        let reporter = fixtures::reporter();
        let thread = DeliveryThread::start(&default_sinks(), &dir, reporter).unwrap();
        writer.record(&[fixtures::opened()], &[]).unwrap();
        thread.kick();
        let path = dir.join("alerts.jsonl");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .count()
            < 1
        {
            assert!(std::time::Instant::now() < deadline, "not delivered");
            std::thread::sleep(Duration::from_millis(20));
        }
        // Stored just before stop: still delivered by the last round.
        writer.record(&[fixtures::opened()], &[]).unwrap();
        thread.stop();
        assert_eq!(fs::read_to_string(&path).unwrap().lines().count(), 2);
        fs::remove_dir_all(&dir).unwrap();
    }
}

#[cfg(test)]
mod syslog_tests {
    use std::{net::TcpListener, thread};

    use super::*;
    use crate::{
        config::{Config, Origin},
        export::{fixtures, syslog_sink::receiver::read_octet_counted},
        schema_check::validate_ocsf,
    };

    #[test]
    fn ocsf_over_syslog_tcp_from_the_outbox_and_after_an_outage() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let config = Config::parse(
            &format!(
                "[[sinks]]\nname = \"soc\"\ntype = \"syslog\"\naddress = \"{addr}\"\nformat = \"ocsf\"\n"
            ),
            &Origin::Embedded,
        )
        .unwrap();
        let reporter = fixtures::reporter();
        let mut store = Store::in_memory().unwrap();
        let dir = std::env::temp_dir();
        let mut d = Deliverer::new(&config.sinks, &dir, reporter.clone());
        d.register(&mut store).unwrap();
        store.record(&[fixtures::opened()], &[]).unwrap();
        let reader = thread::spawn(move || (read_octet_counted(&listener, 1).remove(0), listener));
        assert_eq!(d.round(&mut store).unwrap().delivered, 1);
        let (msg, listener) = reader.join().unwrap();
        assert!(msg.starts_with("<107>1 "), "{msg}");
        let ocsf: serde_json::Value =
            serde_json::from_str(msg.split_once("] ").unwrap().1).unwrap();
        validate_ocsf(&ocsf).unwrap();

        // The receiver goes away: the event stays queued; a new receiver gets it.
        drop(listener);
        let mut d = Deliverer::new(&config.sinks, &dir, reporter);
        let mut e = fixtures::opened();
        e.alert.updates = 7;
        store.record(&[e], &[]).unwrap();
        let r = d.round(&mut store).unwrap();
        assert_eq!((r.delivered, r.failed_sinks), (0, 1));
        assert_eq!(store.backlog("soc").unwrap(), 1);
        let Ok(listener) = TcpListener::bind(addr) else {
            return; // the port was taken meanwhile
        };
        let reader = thread::spawn(move || read_octet_counted(&listener, 1).remove(0));
        assert_eq!(d.round(&mut store).unwrap().delivered, 1);
        let second = reader.join().unwrap();
        assert!(second.contains("eventId=\""), "{second}");
        assert_eq!(store.backlog("soc").unwrap(), 0);
    }
}
