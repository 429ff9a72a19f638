//! Detection inside the running agent: the pure detector plus what a live host needs around
//! it: the state database (alerts and learning written as they happen, windows checkpointed
//! every `state.checkpoint_every` and on stop), operators' decisions taken from the database
//! while running, and the allowlist's host names re-resolved in a background thread.

use std::{
    net::{IpAddr, ToSocketAddrs as _},
    path::{Path, PathBuf},
    sync::{Arc, mpsc},
    thread,
    time::{Duration, Instant},
};

use ipnet::IpNet;
use jiff::Timestamp;

use crate::{
    collector::CollectorStats,
    config::Config,
    contain::{
        kernel::{Enforcer, KernelAction, KernelRule},
        policy::ContainmentBook,
        record::{Action, Containment, ContainmentEvent, Decider},
        settings::Mode,
    },
    detect::{Detector, alerts::AlertEvent},
    export::{
        Reporter,
        delivery::{DeliveryError, DeliveryThread},
    },
    kernel::loader::error_chain,
    metrics::{
        Metrics,
        server::{MetricsServer, ServerError},
    },
    store::{self, OperatorAction, Store, StoreError},
};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Delivery(#[from] DeliveryError),
    #[error(transparent)]
    Metrics(#[from] ServerError),
}

pub struct LiveDetector {
    detector: Detector,
    store: Store,
    /// One delivery thread per sink: a hung receiver delays only its own sink.
    delivery: Vec<DeliveryThread>,
    events: Vec<AlertEvent>,
    checkpoint_every: Duration,
    keep_resolved: Duration,
    last_checkpoint: Instant,
    /// The end of the host's learning period as last saved (0: none yet).
    learning_saved: u64,
    resolved: Option<mpsc::Receiver<(String, Vec<IpAddr>)>>,
    /// Store writes that failed (logged each time; the alerts were still printed).
    pub store_errors: u64,
    /// Rate-limited openings already reported in the log.
    rate_limited_logged: u64,
    last_rate_log: Option<Instant>,
    /// The Prometheus endpoint and what it serves (with `[metrics] listen`).
    metrics: Option<(Arc<Metrics>, MetricsServer)>,
    state_dir: PathBuf,
    /// What is contained, decided from the alerts under `[containment]`'s rails.
    containments: ContainmentBook,
    contain_events: Vec<ContainmentEvent>,
    /// The kernel's containment maps (none: the kernel refused enforcement, or not attached).
    enforcer: Option<Box<Enforcer>>,
    /// Rules the kernel holds after the last apply.
    applied_rules: usize,
    /// What each prefix containment leaves alone (its known peers), fixed when first applied.
    exemptions: std::collections::HashMap<uuid::Uuid, Vec<IpNet>>,
}

/// The kernel's id of a containment: its UUID's first 8 bytes (unique among the few active).
fn kernel_id(id: uuid::Uuid) -> u64 {
    let b = id.as_bytes();
    u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

/// A throttle's bucket: half a second of the rate (measured on loopback: a bucket much
/// smaller than the sender's timer-driven retries starves the flow below its rate), at
/// least 64 KiB.
fn burst_for(bytes_per_sec: u64) -> u64 {
    (bytes_per_sec / 2).max(64 << 10)
}

/// Most containments read back from the database at start (the rails allow far fewer).
const MAX_STORED_ACTIVE: usize = 4096;
/// A prefix containment leaves alone the service's peers inside it that are learned or were
/// first met this long before it started (its established users behind the same provider
/// /24), each as an exempted address...
const KNOWN_FOR_SECS: u64 = 3600;
/// ... at most this many: a prefix holding more of them is mostly the service's own users,
/// and its containment is lifted rather than throttling them.
const MAX_EXEMPT: usize = 64;

/// The names of `[[services]]`: the only services the rails let be contained.
pub fn configured_services(config: &Config) -> impl Iterator<Item = String> + '_ {
    config.services.iter().map(|s| s.name.get_ref().clone())
}

impl LiveDetector {
    /// Opens the state in `state_dir` (moving an old one aside first with `reset`), loads what
    /// was learned, and starts resolving allowlisted host names.
    pub fn start(config: &Config, state_dir: &Path, reset: bool) -> Result<Self, StartError> {
        if reset && let Some(moved) = store::reset(state_dir, Timestamp::now())? {
            tracing::warn!(
                moved_to = %moved.display(),
                "--reset-state: the previous state database was moved aside; starting empty"
            );
        }
        let mut store = Store::open(state_dir)?;
        let delivery = start_delivery(&config.sinks, state_dir)?;
        let metrics = match config.metrics.address() {
            Some(addr) => {
                let metrics = Arc::new(Metrics::default());
                for thread in &delivery {
                    metrics.add_sinks(thread.counters.iter().cloned());
                }
                let server = MetricsServer::start(addr, Arc::clone(&metrics))?;
                Some((metrics, server))
            }
            None => None,
        };
        let mut detector = Detector::new(config);
        let restored = store.load_into(&mut detector, Timestamp::now())?;
        tracing::info!(
            path = %store.path().display(),
            services = restored.services,
            learned = restored.learned,
            peers = restored.peers,
            open_alerts = restored.open_alerts,
            suppressions = restored.suppressions,
            learning_period = %humantime::format_duration(config.detect.learning_period.get_ref().0),
            "detector state loaded"
        );
        let hosts = detector.classifier_mut().hosts_to_resolve();
        let resolved = (!hosts.is_empty())
            .then(|| spawn_resolver(hosts, config.destinations.resolve_every.get_ref().0));
        let learning_saved = detector.host_learn_until();
        let containments =
            ContainmentBook::new(config.containment.clone(), configured_services(config));
        Ok(Self {
            detector,
            store,
            delivery,
            events: Vec::new(),
            checkpoint_every: config.state.checkpoint_every.get_ref().0,
            keep_resolved: config.state.keep_resolved.get_ref().0,
            last_checkpoint: Instant::now(),
            learning_saved,
            resolved,
            store_errors: 0,
            rate_limited_logged: 0,
            last_rate_log: None,
            metrics,
            state_dir: state_dir.to_owned(),
            containments,
            contain_events: Vec::new(),
            enforcer: None,
            applied_rules: 0,
            exemptions: std::collections::HashMap::new(),
        })
    }

    /// Applies a reloaded configuration (see [`crate::reload`]): the detector takes the new
    /// settings and keeps its state; allowlisted names are resolved again when the
    /// destinations changed; sinks and the metrics endpoint restart when theirs changed. If
    /// the new sinks cannot start, the previous ones are started again and the error is
    /// returned; everything else is applied either way.
    pub fn reload(&mut self, old: &Config, new: &Config) -> Result<(), StartError> {
        self.detector.reconfigure(new);
        self.contain_events.clear();
        self.containments.reconfigure(
            new.containment.clone(),
            configured_services(new),
            Timestamp::now(),
            &mut self.contain_events,
        );
        self.record_containments();
        self.enforce();
        if old.destinations != new.destinations {
            let hosts = self.detector.classifier_mut().hosts_to_resolve();
            // Dropping the old receiver ends the old resolver thread at its next result.
            self.resolved = (!hosts.is_empty())
                .then(|| spawn_resolver(hosts, new.destinations.resolve_every.get_ref().0));
        }
        self.checkpoint_every = new.state.checkpoint_every.get_ref().0;
        self.keep_resolved = new.state.keep_resolved.get_ref().0;
        if old.metrics != new.metrics {
            // The old endpoint goes first: the new one may listen on the same address.
            let counters = self.metrics.take().map(|(metrics, _server)| metrics);
            if let Some(addr) = new.metrics.address() {
                let metrics = counters.unwrap_or_default();
                let server = MetricsServer::start(addr, Arc::clone(&metrics))?;
                self.metrics = Some((metrics, server));
            }
        }
        let mut result = Ok(());
        if old.sinks != new.sinks {
            // Stopped before the new ones start: two threads must never deliver for one
            // sink name. Their cursors are in the database: nothing is sent twice or lost.
            for thread in self.delivery.drain(..) {
                thread.stop();
            }
            self.delivery = match start_delivery(&new.sinks, &self.state_dir) {
                Ok(threads) => threads,
                Err(e) => {
                    result = Err(e.into());
                    start_delivery(&old.sinks, &self.state_dir).unwrap_or_else(|e| {
                        tracing::error!(
                            error = %error_chain(&e),
                            "the previous sinks cannot start again either: alert events stay \
                             in the outbox until the next reload or restart"
                        );
                        Vec::new()
                    })
                }
            };
        }
        if let Some((metrics, _)) = &self.metrics {
            metrics.set_sinks(
                self.delivery
                    .iter()
                    .flat_map(|t| t.counters.iter().cloned()),
            );
        }
        // Events stored while no thread ran are delivered now.
        for thread in &self.delivery {
            thread.kick();
        }
        result
    }

    /// Open alerts (they survive reloads and restarts).
    pub fn open_alerts(&self) -> usize {
        self.detector.book().open_alerts().count()
    }

    /// One poll window: operator actions and resolutions first, then detection; the events
    /// are stored before they are returned.
    pub fn observe(&mut self, samples: &[crate::flow::FlowSample]) -> &[AlertEvent] {
        self.apply_resolutions();
        self.apply_operator_actions();
        self.events.clear();
        self.detector.observe(samples, &mut self.events);
        let learned = self.detector.take_learned();
        if let Err(e) = self.store.record(&self.events, &learned) {
            self.store_error("recording alerts", &e);
        }
        for e in &self.events {
            self.containments
                .on_alert(e, e.at, &mut self.contain_events);
        }
        self.containments
            .tick(Timestamp::now(), &mut self.contain_events);
        self.record_containments();
        self.enforce();
        self.deliver();
        if let Some((metrics, _)) = &self.metrics {
            metrics.update_detection(&self.detector, &self.events);
        }
        // The host's learning period starts with its first sample ever: saved at once, so an
        // agent killed before its first checkpoint does not start learning again (an agent
        // made to crash over and over would otherwise never leave its learning period).
        let learning_started = self.learning_saved == 0 && self.detector.host_learn_until() > 0;
        if learning_started || self.last_checkpoint.elapsed() >= self.checkpoint_every {
            self.checkpoint();
        }
        let limited = self.detector.book().stats.rate_limited;
        // At most one line a minute: a storm of conditions must not become a storm of logs.
        if limited > self.rate_limited_logged
            && self
                .last_rate_log
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(60))
        {
            self.last_rate_log = Some(Instant::now());
            tracing::warn!(
                deferred = limited - self.rate_limited_logged,
                total = limited,
                "alerts.max_new_per_minute reached: new alerts wait for the next minute"
            );
            self.rate_limited_logged = limited;
        }
        &self.events
    }

    /// The collector's totals for the metrics endpoint (after each poll).
    pub fn observe_collector(&self, stats: &CollectorStats, max_flows: u64) {
        if let Some((metrics, _)) = &self.metrics {
            metrics.update_collector(stats, max_flows);
        }
    }

    /// The metrics endpoint's address, when it runs.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.metrics.as_ref().map(|(_, server)| server.addr())
    }

    /// The agent attached its programs: containments are enforced from now on if the kernel
    /// took the enforcing programs (else `enforce` decides in dry run), and the active ones
    /// stored before a restart are taken back in.
    pub fn attach_kernel(&mut self, enforcer: Option<Box<Enforcer>>) {
        let enforces = enforcer.is_some();
        if !enforces && self.containments.settings().mode == Mode::Enforce {
            tracing::error!(
                "containment.mode = \"enforce\" but this kernel refused the enforcing \
                 programs (see `egress-monitor doctor`): containments are decided in dry run"
            );
        }
        self.enforcer = enforcer;
        self.containments.set_kernel_enforces(enforces);
        match self.store.list_containments(true, MAX_STORED_ACTIVE) {
            Ok(list) => {
                for c in list {
                    self.containments.adopt(c);
                }
            }
            Err(e) => self.store_error("reading stored containments", &e),
        }
        match self.store.spared_alerts() {
            Ok(ids) => ids.into_iter().for_each(|a| self.containments.spare(a)),
            Err(e) => self.store_error("reading lifted containments", &e),
        }
        if !self.containments.active().is_empty() {
            tracing::info!(
                active = self.containments.active().len(),
                enforced = self.containments.enforced().count(),
                "containments restored from the state database (each until its TTL unless \
                 its alert renews it)"
            );
        }
        self.enforce();
    }

    /// Makes the kernel's rules the enforced containments (the Enforcer writes nothing when
    /// they are unchanged), and reads back what it held back.
    fn enforce(&mut self) {
        if self.enforcer.is_none() {
            return;
        }
        let enforced: Vec<Containment> = self.containments.enforced().cloned().collect();
        self.exemptions
            .retain(|id, _| enforced.iter().any(|c| c.id == *id));
        let mut rules = Vec::new();
        let mut too_known = Vec::new();
        for c in &enforced {
            let cgroups = self.detector.service_cgroups(&c.service).to_vec();
            let same_key = |r: &KernelRule| {
                r.network == c.target && r.cgroups.iter().any(|g| cgroups.contains(g))
            };
            if cgroups.is_empty() || rules.iter().any(same_key) {
                // No socket of the service seen yet: applied once it sends. (The same network
                // twice, which the book does not start, would be one kernel key.)
                continue;
            }
            let exempt = self.exemptions_of(c);
            if exempt.len() > MAX_EXEMPT {
                too_known.push(c.id);
                continue;
            }
            rules.push(KernelRule {
                id: kernel_id(c.id),
                cgroups,
                network: c.target,
                action: match c.action {
                    Action::Throttle { bytes_per_sec } => KernelAction::Throttle {
                        bytes_per_sec,
                        burst_bytes: burst_for(bytes_per_sec),
                    },
                    Action::Block => KernelAction::Block,
                },
                exempt,
            });
        }
        if !too_known.is_empty() {
            let reason = format!(
                "the prefix holds more than {MAX_EXEMPT} of the service's known peers: its own \
                 users are not contained"
            );
            for id in too_known {
                self.containments.lift(
                    id,
                    &reason,
                    &Decider::Policy,
                    Timestamp::now(),
                    &mut self.contain_events,
                );
            }
            self.record_containments();
        }
        if rules.is_empty() && self.applied_rules == 0 {
            return;
        }
        let Some(enforcer) = self.enforcer.as_mut() else {
            return;
        };
        if let Err(e) = enforcer.apply(&rules) {
            tracing::error!(error = %error_chain(&e), "containment rules not applied in the kernel");
            return;
        }
        self.applied_rules = rules.len();
        match enforcer.stats() {
            Ok(stats) => {
                let ids: Vec<(u64, uuid::Uuid)> = self
                    .containments
                    .active()
                    .iter()
                    .map(|c| (kernel_id(c.id), c.id))
                    .collect();
                for (kid, s) in stats {
                    if let Some((_, id)) = ids.iter().find(|(k, _)| *k == kid) {
                        self.containments
                            .set_dropped(*id, s.dropped_bytes, s.dropped_packets);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %error_chain(&e), "containment counters unreadable"),
        }
    }

    /// The addresses a prefix containment leaves alone (none for a single address), found
    /// once in the detector's peer table and kept for the containment's life.
    fn exemptions_of(&mut self, c: &Containment) -> Vec<IpNet> {
        if c.target.prefix_len() == c.target.max_prefix_len() {
            return Vec::new();
        }
        if let Some(e) = self.exemptions.get(&c.id) {
            return e.clone();
        }
        let started = u64::try_from(c.started_at.as_second()).unwrap_or(0);
        let exempt: Vec<IpNet> = self
            .detector
            .known_peers_in(&c.service, &c.target, (started, KNOWN_FOR_SECS), MAX_EXEMPT)
            .into_iter()
            .map(IpNet::from)
            .collect();
        if !exempt.is_empty() && exempt.len() <= MAX_EXEMPT {
            tracing::info!(
                containment = %c.id,
                network = %c.target,
                exempt = exempt.len(),
                "the prefix's known peers are left alone"
            );
        }
        self.exemptions.insert(c.id, exempt.clone());
        exempt
    }

    /// The containments (for the kernel and the metrics).
    pub fn containments(&self) -> &ContainmentBook {
        &self.containments
    }

    pub fn containments_mut(&mut self) -> &mut ContainmentBook {
        &mut self.containments
    }

    /// Stores the containment events decided since the last call (they join the outbox).
    fn record_containments(&mut self) {
        for e in &self.contain_events {
            tracing::info!(
                containment = %e.containment.id,
                event = e.event.name(),
                service = %e.containment.service,
                network = %e.containment.target,
                action = %e.containment.verb(),
                alert = ?e.containment.alert_id,
                reason = e.containment.end_reason.as_deref().unwrap_or(&e.containment.reason),
                "containment {}",
                e.event.name()
            );
        }
        if let Err(e) = self.store.record_containments(&self.contain_events) {
            self.store_error("recording containments", &e);
        }
        if !self.contain_events.is_empty() {
            for thread in &self.delivery {
                thread.kick();
            }
        }
        if let Some((metrics, _)) = &self.metrics {
            metrics.update_containment(&self.containments, &self.contain_events);
        }
        self.contain_events.clear();
    }

    /// Wakes the delivery thread when events were stored (they are in the outbox).
    fn deliver(&self) {
        if !self.events.is_empty() {
            for thread in &self.delivery {
                thread.kick();
            }
        }
    }

    /// Final checkpoint and delivery (on stop).
    pub fn finish(mut self) {
        self.checkpoint();
        for thread in self.delivery.drain(..) {
            thread.stop();
        }
        let stats = &self.detector.stats;
        let book = &self.detector.book().stats;
        tracing::info!(
            samples = stats.samples,
            services = stats.services,
            peers = stats.peers,
            learned = stats.learned,
            alerts_opened = book.opened,
            alerts_updated = book.updated,
            alerts_resolved = book.resolved,
            suppressed = book.suppressed,
            rate_limited = book.rate_limited,
            store_errors = self.store_errors,
            "detector state saved"
        );
    }

    fn checkpoint(&mut self) {
        let started = Instant::now();
        match self.store.checkpoint(&mut self.detector) {
            Ok(written) => tracing::debug!(
                services = written.services,
                peers = written.peers,
                took_ms = started.elapsed().as_millis() as u64,
                "state checkpoint"
            ),
            Err(e) => self.store_error("checkpointing the detector", &e),
        }
        if let Ok(horizon) = Timestamp::now().checked_sub(self.keep_resolved) {
            match self.store.prune_resolved(horizon) {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    alerts = n,
                    "resolved alerts past state.keep_resolved deleted"
                ),
                Err(e) => self.store_error("pruning old alerts", &e),
            }
            match self.store.prune_containments(horizon) {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    containments = n,
                    "ended containments past state.keep_resolved deleted"
                ),
                Err(e) => self.store_error("pruning old containments", &e),
            }
        }
        self.last_checkpoint = Instant::now();
        self.learning_saved = self.detector.host_learn_until();
    }

    fn apply_operator_actions(&mut self) {
        let actions = match self.store.take_operator_actions() {
            Ok(a) => a,
            Err(e) => {
                self.store_error("reading operator actions", &e);
                return;
            }
        };
        let now = self.detector.now();
        for action in actions {
            tracing::info!(?action, "applying an operator decision");
            // The CLI already wrote the resulting events: only the in-memory state changes.
            match action {
                OperatorAction::Acknowledge { alert } => {
                    let _ = self.detector.book_mut().acknowledge(alert, now);
                }
                OperatorAction::Suppress { suppression } => {
                    self.containments.on_suppression(
                        &suppression,
                        Timestamp::now(),
                        &mut self.contain_events,
                    );
                    let _ = self.detector.book_mut().suppress(suppression, now);
                }
                OperatorAction::Learn {
                    service,
                    addr,
                    prefix,
                } => {
                    self.containments.on_learned(
                        &service,
                        addr,
                        Timestamp::now(),
                        &mut self.contain_events,
                    );
                    self.detector.confirm(&service, addr, prefix);
                }
                OperatorAction::Contain { containment } => self.containments.adopt(*containment),
                OperatorAction::Lift { containment } => {
                    self.containments.forget(containment);
                }
                OperatorAction::ReloadSuppressions => {
                    match self.store.active_suppressions(Timestamp::now()) {
                        Ok(list) => self.detector.book_mut().set_suppressions(list),
                        Err(e) => self.store_error("reloading suppressions", &e),
                    }
                }
            }
        }
    }

    fn apply_resolutions(&mut self) {
        let Some(rx) = &self.resolved else {
            return;
        };
        while let Ok((host, addrs)) = rx.try_recv() {
            self.detector.classifier_mut().set_resolved(&host, &addrs);
        }
    }

    fn store_error(&mut self, what: &'static str, e: &StoreError) {
        self.store_errors += 1;
        tracing::error!(error = %error_chain(e), "{what}: state database write failed");
    }
}

/// One delivery thread per sink: a hung receiver delays only its own sink.
fn start_delivery(
    sinks: &[crate::export::settings::SinkConfig],
    state_dir: &Path,
) -> Result<Vec<DeliveryThread>, DeliveryError> {
    let reporter = Reporter::this_host();
    let mut threads = Vec::with_capacity(sinks.len());
    for sink in sinks {
        match DeliveryThread::start(std::slice::from_ref(sink), state_dir, reporter.clone()) {
            Ok(thread) => threads.push(thread),
            Err(e) => {
                // Stopped, not just dropped: none may still deliver when the caller falls
                // back to other threads for the same sink names.
                for thread in threads {
                    thread.stop();
                }
                return Err(e);
            }
        }
    }
    Ok(threads)
}

/// Resolves `hosts` now and every `every`, in a thread (getaddrinfo blocks); stops when the
/// agent drops the receiver.
fn spawn_resolver(hosts: Vec<String>, every: Duration) -> mpsc::Receiver<(String, Vec<IpAddr>)> {
    let (tx, rx) = mpsc::channel();
    let spawned = thread::Builder::new()
        .name("allowlist-dns".into())
        .spawn(move || {
            loop {
                for host in &hosts {
                    match (host.as_str(), 0).to_socket_addrs() {
                        Ok(addrs) => {
                            let mut ips: Vec<IpAddr> = addrs.map(|a| a.ip()).collect();
                            ips.sort();
                            ips.dedup();
                            tracing::debug!(host, addrs = ?ips, "allowlisted host resolved");
                            if tx.send((host.clone(), ips)).is_err() {
                                return;
                            }
                        }
                        // Keep the previous addresses: a resolver outage must not turn
                        // allowlisted peers into unknown ones.
                        Err(e) => {
                            tracing::warn!(host, error = %e, "cannot resolve allowlisted host");
                        }
                    }
                }
                thread::sleep(every);
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the allowlist resolver thread");
    }
    rx
}
