//! Delivery from the outbox to the sinks: each sink reads the events after its own cursor,
//! sends them in its format, and moves its cursor only once they are written. A failing
//! sink keeps its backlog (logged, retried at the next round) and holds back no other sink.

use std::{
    fs::OpenOptions,
    io::Write as _,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use super::{
    Reporter,
    backoff::Backoff,
    elasticsearch::Elasticsearch,
    file::{FileSink, FileTransport},
    http::SetupError,
    settings::{SinkConfig, SinkType},
    splunk_hec::SplunkHec,
    stdout::StdoutTransport,
    syslog_sink::{Protocol, SyslogSink, SyslogTransport},
    tls,
    transport::{Sent, Transport},
    webhook::Webhook,
};
use crate::store::{Pending, Store, StoreError};

/// A sink's delivery counters, shared with the metrics endpoint.
#[derive(Debug, Default)]
pub struct SinkCounters {
    /// Events delivered.
    pub delivered: AtomicU64,
    /// Failed delivery attempts.
    pub failures: AtomicU64,
    /// Events the receiver refused for good (in the dead-letter file).
    pub rejected: AtomicU64,
    /// Events skipped because the backlog was over `max_backlog`.
    pub dropped: AtomicU64,
    /// Events waiting (after the last round).
    pub backlog: AtomicU64,
}

struct Sink {
    name: String,
    transport: Box<dyn Transport>,
    batch: usize,
    max_backlog: u64,
    backoff: Backoff,
    dead_letter: PathBuf,
    counters: Arc<SinkCounters>,
    /// Failed attempts not yet reported in the log, and when it last reported one.
    unlogged_failures: u64,
    last_failure_log: Option<Instant>,
}

/// The configured sinks with their delivery state.
pub struct Deliverer {
    sinks: Vec<Sink>,
    reporter: Reporter,
}

/// What one round did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Round {
    pub delivered: u64,
    pub failed_sinks: u64,
    pub rejected: u64,
    pub dropped: u64,
}

/// A sink's transport from validated configuration; relative file paths are under
/// `state_dir`. Fails on what can be checked before any send (unreadable CA, key or token
/// files).
fn transport(c: &SinkConfig, state_dir: &Path) -> Result<Box<dyn Transport>, DeliveryError> {
    Ok(match c.kind {
        SinkType::File => {
            let path = c.path.clone().unwrap_or_else(|| "alerts.jsonl".into());
            let path = if path.is_relative() {
                state_dir.join(path)
            } else {
                path
            };
            Box::new(FileTransport {
                file: FileSink::new(
                    path,
                    c.max_size.get_ref().as_u64(),
                    *c.keep.get_ref(),
                    c.fsync,
                ),
                format: c.format,
                network_activity: c.ocsf_network_activity,
            })
        }
        SinkType::Stdout => Box::new(StdoutTransport {
            format: c.format,
            network_activity: c.ocsf_network_activity,
        }),
        SinkType::Syslog => {
            let address = c
                .address
                .as_ref()
                .map(|a| a.get_ref().clone())
                .unwrap_or_default();
            let sink = if c.protocol == Protocol::Tls {
                let client = tls::client(&tls_files(c), &tls_server_name(c, &address))?;
                SyslogSink::tls(address, c.framing, client)
            } else {
                SyslogSink::new(address, c.protocol, c.framing)
            };
            Box::new(SyslogTransport {
                sink,
                facility: *c.facility.get_ref(),
                format: c.format,
                network_activity: c.ocsf_network_activity,
            })
        }
        SinkType::SplunkHec => Box::new(SplunkHec::new(c)?),
        SinkType::Elasticsearch => Box::new(Elasticsearch::new(c)?),
        SinkType::Webhook => Box::new(Webhook::new(c)?),
    })
}

/// The sink's TLS files (`ca_file`, `client_cert`, `client_key`).
fn tls_files(c: &SinkConfig) -> tls::TlsFiles<'_> {
    tls::TlsFiles {
        ca_file: c.ca_file.as_ref().map(|p| p.get_ref().as_path()),
        client_cert: c.client_cert.as_ref().map(|p| p.get_ref().as_path()),
        client_key: c.client_key.as_ref().map(|p| p.get_ref().as_path()),
    }
}

/// The name checked in the receiver's certificate: `server_name`, else the host of
/// `address`.
fn tls_server_name(c: &SinkConfig, address: &str) -> String {
    c.server_name
        .as_ref()
        .map_or_else(|| tls::host_of(address).to_owned(), |n| n.get_ref().clone())
}

/// The least time between two "still failing" log lines of one sink.
const FAILURE_LOG_EVERY: Duration = Duration::from_secs(60);

impl Deliverer {
    pub fn new(
        config: &[SinkConfig],
        state_dir: &Path,
        reporter: Reporter,
    ) -> Result<Self, DeliveryError> {
        let sinks = config
            .iter()
            .map(|c| {
                let transport = transport(c, state_dir).map_err(|e| DeliveryError::Setup {
                    sink: c.name.get_ref().clone(),
                    source: Box::new(e),
                })?;
                Ok((c, transport))
            })
            .collect::<Result<Vec<_>, DeliveryError>>()?;
        Ok(Self::with_transports(sinks, state_dir, reporter))
    }

    /// Sinks with transports already built (tests give scripted ones).
    pub(crate) fn with_transports<'a>(
        sinks: impl IntoIterator<Item = (&'a SinkConfig, Box<dyn Transport>)>,
        state_dir: &Path,
        reporter: Reporter,
    ) -> Self {
        let sinks = sinks
            .into_iter()
            .map(|(c, transport)| {
                let name = c.name.get_ref().clone();
                Sink {
                    dead_letter: state_dir.join("dead-letter").join(format!("{name}.jsonl")),
                    name,
                    transport,
                    batch: *c.batch_max.get_ref() as usize,
                    max_backlog: *c.max_backlog.get_ref(),
                    backoff: Backoff::new(c.retry_initial.get_ref().0, c.retry_max.get_ref().0),
                    counters: Arc::default(),
                    unlogged_failures: 0,
                    last_failure_log: None,
                }
            })
            .collect();
        Self { sinks, reporter }
    }

    /// The counters of each sink, by name.
    pub fn counters(&self) -> Vec<(String, Arc<SinkCounters>)> {
        self.sinks
            .iter()
            .map(|s| (s.name.clone(), Arc::clone(&s.counters)))
            .collect()
    }

    /// Bounds every backlog, then delivers what every sink that is not backing off has
    /// pending (until its backlog is empty or it fails).
    pub fn round(&mut self, store: &mut Store, now: Instant) -> Result<Round, StoreError> {
        let mut round = Round::default();
        for sink in &mut self.sinks {
            // One count of the backlog per round (it scans the undelivered rows, and a dead
            // sink's round comes every second): it decides the bound, and is the gauge again
            // unless this round moved the cursor.
            let mut backlog = store.backlog(&sink.name)?;
            let moved_before = round.delivered + round.rejected + round.dropped;
            if backlog > sink.max_backlog {
                round.dropped += bound_backlog(sink, store)?;
            }
            if sink.backoff.ready(now) {
                deliver(sink, store, &self.reporter, now, &mut round)?;
            }
            if round.delivered + round.rejected + round.dropped != moved_before {
                backlog = store.backlog(&sink.name)?;
            }
            sink.counters.backlog.store(backlog, Ordering::Relaxed);
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

/// The bounded spool: over `max_backlog`, the oldest undelivered events of the sink are
/// skipped (counted and logged; they stay in the alert history, `alerts list`).
fn bound_backlog(sink: &Sink, store: &mut Store) -> Result<u64, StoreError> {
    let dropped = store.drop_oldest(&sink.name, sink.max_backlog)?;
    if dropped > 0 {
        let total = sink.counters.dropped.fetch_add(dropped, Ordering::Relaxed) + dropped;
        tracing::error!(
            sink = %sink.name,
            dropped,
            dropped_total = total,
            max_backlog = sink.max_backlog,
            "alert sink backlog full: its oldest undelivered events were skipped (they stay in \
             `egress-monitor alerts list`)"
        );
    }
    Ok(dropped)
}

fn deliver(
    sink: &mut Sink,
    store: &mut Store,
    reporter: &Reporter,
    now: Instant,
    round: &mut Round,
) -> Result<(), StoreError> {
    loop {
        let pending = store.pending(&sink.name, sink.batch)?;
        if pending.is_empty() {
            return Ok(());
        }
        let result = sink.transport.send(&pending, reporter);
        let sent = match result {
            Ok(sent) => sent,
            Err(e) => {
                failed(sink, store, now, &e.to_string(), round)?;
                return Ok(());
            }
        };
        let done = sent.done.min(pending.len());
        if let Err(e) = dead_letter(sink, &pending, &sent) {
            failed(
                sink,
                store,
                now,
                &format!("writing the dead-letter file: {e}"),
                round,
            )?;
            return Ok(());
        }
        if done > 0 {
            store.advance(&sink.name, pending[done - 1].seq)?;
            let rejected = sent.rejected.len() as u64;
            let delivered = done as u64 - rejected;
            sink.counters
                .delivered
                .fetch_add(delivered, Ordering::Relaxed);
            sink.counters
                .rejected
                .fetch_add(rejected, Ordering::Relaxed);
            round.delivered += delivered;
            round.rejected += rejected;
        }
        if done < pending.len() {
            failed(sink, store, now, "the receiver took part of a batch", round)?;
            return Ok(());
        }
        if sink.backoff.failures() > 0 {
            tracing::info!(
                sink = %sink.name,
                address = %sink.transport.target(),
                failed_attempts = sink.backoff.failures(),
                "alert sink delivers again"
            );
            sink.unlogged_failures = 0;
            sink.last_failure_log = None;
        }
        sink.backoff.succeeded();
        if pending.len() < sink.batch {
            return Ok(());
        }
    }
}

/// Counts a failed attempt and schedules the retry; logged at the first failure, then at
/// most once a minute (with how many attempts failed meanwhile).
fn failed(
    sink: &mut Sink,
    store: &mut Store,
    now: Instant,
    error: &str,
    round: &mut Round,
) -> Result<(), StoreError> {
    round.failed_sinks += 1;
    sink.counters.failures.fetch_add(1, Ordering::Relaxed);
    let retry_in = sink.backoff.failed(now);
    sink.unlogged_failures += 1;
    if sink
        .last_failure_log
        .is_none_or(|t| now.duration_since(t) >= FAILURE_LOG_EVERY)
    {
        tracing::error!(
            sink = %sink.name,
            address = %sink.transport.target(),
            error,
            failed_attempts = sink.unlogged_failures,
            consecutive_failures = sink.backoff.failures(),
            retry_in = %humantime::format_duration(Duration::from_millis(retry_in.as_millis() as u64)),
            backlog = store.backlog(&sink.name)?,
            "alert sink failed; its events stay queued and are retried"
        );
        sink.unlogged_failures = 0;
        sink.last_failure_log = Some(now);
    }
    Ok(())
}

/// Writes the events a receiver refused for good to `state.dir/dead-letter/<sink>.jsonl`
/// (synced: they leave the outbox next), with the receiver's reason.
fn dead_letter(sink: &Sink, batch: &[Pending], sent: &Sent) -> std::io::Result<()> {
    if sent.rejected.is_empty() {
        return Ok(());
    }
    let mut buf = String::new();
    for (index, reason) in &sent.rejected {
        let Some(p) = batch.get(*index) else { continue };
        let line = serde_json::json!({
            "sink": sink.name,
            "reason": reason,
            "event_id": p.event.id(),
            "event": p.event,
        });
        buf.push_str(&line.to_string());
        buf.push('\n');
        tracing::error!(
            sink = %sink.name,
            event_id = %p.event.id(),
            reason = %reason,
            file = %sink.dead_letter.display(),
            "the receiver refused an alert event for good; kept in the dead-letter file"
        );
    }
    if let Some(dir) = sink.dead_letter.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&sink.dead_letter)?;
    file.write_all(buf.as_bytes())?;
    file.sync_data()
}

#[cfg(test)]
mod tests {
    use std::{fs, time::Instant};

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
        let mut d = Deliverer::new(&default_sinks(), &dir, fixtures::reporter()).unwrap();
        d.register(&mut store).unwrap();
        let e = fixtures::opened();
        store.record(std::slice::from_ref(&e), &[]).unwrap();
        assert_eq!(d.round(&mut store, Instant::now()).unwrap().delivered, 1);
        assert_eq!(
            d.round(&mut store, Instant::now()).unwrap().delivered,
            0,
            "once"
        );
        let path = dir.join("alerts.jsonl");
        let back: AlertEvent =
            serde_json::from_str(fs::read_to_string(&path).unwrap().trim()).unwrap();
        assert_eq!(back, e);

        // The file cannot be written (a directory in its place): the event stays queued.
        fs::remove_file(&path).unwrap();
        fs::create_dir(&path).unwrap();
        let mut d = Deliverer::new(&default_sinks(), &dir, fixtures::reporter()).unwrap();
        store.record(std::slice::from_ref(&e), &[]).unwrap();
        let r = d.round(&mut store, Instant::now()).unwrap();
        assert_eq!((r.delivered, r.failed_sinks), (0, 1));
        assert_eq!(store.backlog("alerts-file").unwrap(), 1);
        fs::remove_dir(&path).unwrap();
        assert_eq!(
            d.round(&mut store, later()).unwrap().delivered,
            1,
            "retried"
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("alert sink {sink:?}")]
    Setup {
        sink: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// An HTTP sink's token, certificate or URL (the message names the key and file).
    #[error(transparent)]
    Http(#[from] SetupError),
    /// A syslog sink's TLS files (the message names the key and file).
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
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
    /// Its sinks' counters (for the metrics endpoint).
    pub counters: Vec<(String, Arc<SinkCounters>)>,
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
        let mut deliverer = Deliverer::new(config, state_dir, reporter)?;
        let counters = deliverer.counters();
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
                    if let Err(e) = deliverer.round(&mut store, std::time::Instant::now()) {
                        tracing::error!(error = %e, "reading the outbox");
                    }
                    if stop {
                        return;
                    }
                }
            })
            .map_err(DeliveryError::Spawn)?;
        Ok(Self {
            counters,
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

/// A time after any backoff of a test sink.
#[cfg(test)]
fn later() -> Instant {
    Instant::now() + Duration::from_secs(3600)
}

#[cfg(test)]
mod syslog_tests {
    use std::{net::TcpListener, thread, time::Instant};

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
        let mut d = Deliverer::new(&config.sinks, &dir, reporter.clone()).unwrap();
        d.register(&mut store).unwrap();
        store.record(&[fixtures::opened()], &[]).unwrap();
        let reader = thread::spawn(move || (read_octet_counted(&listener, 1).remove(0), listener));
        assert_eq!(d.round(&mut store, Instant::now()).unwrap().delivered, 1);
        let (msg, listener) = reader.join().unwrap();
        assert!(msg.starts_with("<107>1 "), "{msg}");
        let ocsf: serde_json::Value =
            serde_json::from_str(msg.split_once("] ").unwrap().1).unwrap();
        validate_ocsf(&ocsf).unwrap();

        // The receiver goes away: the event stays queued; a new receiver gets it.
        drop(listener);
        let mut d = Deliverer::new(&config.sinks, &dir, reporter).unwrap();
        let mut e = fixtures::opened();
        e.alert.updates = 7;
        store.record(&[e], &[]).unwrap();
        let r = d.round(&mut store, Instant::now()).unwrap();
        assert_eq!((r.delivered, r.failed_sinks), (0, 1));
        assert_eq!(store.backlog("soc").unwrap(), 1);
        let Ok(listener) = TcpListener::bind(addr) else {
            return; // the port was taken meanwhile
        };
        let reader = thread::spawn(move || read_octet_counted(&listener, 1).remove(0));
        assert_eq!(
            d.round(&mut store, Instant::now()).unwrap().delivered,
            0,
            "backing off"
        );
        assert_eq!(d.round(&mut store, later()).unwrap().delivered, 1);
        let second = reader.join().unwrap();
        assert!(second.contains("eventId=\""), "{second}");
        assert_eq!(store.backlog("soc").unwrap(), 0);
    }
}
