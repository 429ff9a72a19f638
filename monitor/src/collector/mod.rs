//! The collector: every poll it reads the kernel's flow counters, turns them into deltas,
//! attributes them and emits [`FlowSample`]s. It also removes closed and idle flows from the
//! kernel table (reading their final counts first) and reports what the kernel could not keep
//! per socket (table full, packets without a full socket) as unattributed volume.

pub mod delta;
pub mod direction;
pub mod expiry;
mod samples;
mod table;

use std::{collections::HashMap, os::fd::AsFd as _, time::Instant};

use jiff::Timestamp;
use monitor_common::{
    EVENT_NEW_PROCESS, EVENT_RELEASED, Event, FlowCounters, FlowKey, ProgError, Untracked, Volume,
};
use serde::Serialize;
use thiserror::Error;

use self::{
    delta::{Delta, DeltaTracker},
    direction::Listeners,
    expiry::{ExpiryPolicy, Removal},
    samples::SampleIndex,
    table::Chunked,
};
use crate::{
    attribution::{
        Attributor,
        names::{self, NameStats, NameTable},
    },
    flow::{FlowSample, Protocol, UntrackedReason},
    kernel::{
        batch::{self, HashReader},
        clock,
        loader::Attached,
    },
};

#[derive(Debug, Error)]
pub enum CollectError {
    #[error("reading the kernel flow table")]
    ReadFlows(#[source] std::io::Error),
    #[error("reading kernel counter map {name}")]
    ReadCounters {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
}

/// Counters of the collector itself, cumulative since start.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CollectorStats {
    pub polls: u64,
    /// Flows in the kernel table at the last poll.
    pub flows_live: u64,
    pub flows_closed: u64,
    pub evicted_idle: u64,
    pub evicted_pressure: u64,
    /// Flows that vanished from the kernel table without the agent removing them.
    pub lost_entries: u64,
    pub release_events: u64,
    pub process_events: u64,
    pub bytes_reported: u64,
    pub untracked_bytes: u64,
    /// Kernel program error counters (summed over CPUs), by name.
    pub kernel_errors: HashMap<&'static str, u64>,
    /// Passive DNS: answers read, names learned, evicted... (all zero without `watch_ingress`).
    pub dns: NameStats,
}

pub struct Collector {
    kernel: Attached,
    reader: HashReader<FlowKey, FlowCounters>,
    tracker: DeltaTracker,
    /// Released socket cookies and when (monotonic ns).
    released: HashMap<u64, u64>,
    attributor: Attributor,
    /// Destination names from the DNS answers the host received.
    names: NameTable,
    /// The host's TCP listeners, for flows the kernel gave no direction.
    listeners: Listeners,
    untracked_seen: [Volume; Untracked::COUNT as usize],
    expiry: ExpiryPolicy,
    window_start: Timestamp,
    stats: CollectorStats,
}

/// How long a released cookie is remembered, so late packets of a closing socket (FIN,
/// retransmissions) are still removed as closed rather than idle.
const RELEASED_MEMORY_NS: u64 = 120 * 1_000_000_000;

/// Flows read per batch syscall, and per chunk of the poll's snapshot.
const BATCH: usize = 4096;

/// The poll's snapshot of the kernel flow table.
type FlowTable = Chunked<(FlowKey, FlowCounters)>;

impl Collector {
    pub fn new(kernel: Attached, expiry: ExpiryPolicy) -> Self {
        let mut attributor = Attributor::new(kernel.cgroup_root.clone());
        // The programs are attached: every socket created from now on gets its owner in the
        // kernel. Name the owners of those that already exist.
        let (sockets, owned) = attributor.snapshot_existing();
        tracing::info!(
            sockets,
            owned,
            "owners of pre-existing sockets recorded (sock_diag + /proc)"
        );
        Self {
            kernel,
            reader: HashReader::new(BATCH),
            tracker: DeltaTracker::default(),
            released: HashMap::new(),
            attributor,
            names: NameTable::default(),
            listeners: Listeners::default(),
            untracked_seen: [Volume::default(); Untracked::COUNT as usize],
            expiry,
            window_start: Timestamp::now(),
            stats: CollectorStats::default(),
        }
    }

    pub fn stats(&self) -> &CollectorStats {
        &self.stats
    }

    pub fn kernel(&self) -> &Attached {
        &self.kernel
    }

    /// Reads the kernel, returns the samples of the window that ends now.
    pub fn poll(&mut self) -> Result<Vec<FlowSample>, CollectError> {
        let clock = clock::WallClock::now();
        let window_end = Timestamp::now();
        let now_ns = clock::monotonic_ns();
        self.stats.polls += 1;
        self.drain_events();
        // Answers received before the flows they name: the name is there for the first
        // sample of a connection opened right after its lookup.
        self.drain_dns();
        let name_time = Instant::now();
        self.names.expire(name_time);

        let mut flows = FlowTable::new(BATCH);
        self.reader
            .read_all(self.kernel.flows.fd().as_fd(), &mut flows)
            .map_err(CollectError::ReadFlows)?;
        self.attributor.resolve_legacy(
            flows
                .iter()
                .filter(|(_, c)| !c.owner.is_known())
                .map(|(k, _)| k.cookie),
        );
        // Sockets closed while the flows were read: their closers, before their holders are
        // looked for (a closed socket is in no fd table).
        self.drain_events();
        self.attributor.resolve_accepted(
            flows
                .iter()
                .filter(|(k, c)| k.protocol == monitor_common::IPPROTO_TCP && c.owner.is_known())
                .map(|(k, c)| (k.cookie, c.owner.tgid)),
        );

        let (deltas, removals) = self.observe(&flows, now_ns);
        let mut samples =
            self.make_samples(flows, &deltas, &removals, (window_end, name_time), &clock)?;
        drop((deltas, removals));
        self.stats.lost_entries += self.tracker.forget_missing() as u64;
        self.forget_old_releases(now_ns);

        self.read_untracked(&mut samples, window_end)?;
        self.read_errors()?;
        self.stats.dns = self.names.stats();
        for s in &samples {
            self.stats.bytes_reported += s.bytes;
        }
        samples::sort_largest_first(&mut samples);
        self.window_start = window_end;
        Ok(samples)
    }

    fn count_removal(&mut self, reason: Removal) {
        match reason {
            Removal::Closed => self.stats.flows_closed += 1,
            Removal::Idle => self.stats.evicted_idle += 1,
            Removal::Pressure => self.stats.evicted_pressure += 1,
        }
    }

    /// Every flow's delta, and which flows to remove. Deltas first: they also tell which flows
    /// were active (counters grew) since the last poll, which is what expiry decides on.
    fn observe(&mut self, flows: &FlowTable, now_ns: u64) -> (Vec<Delta>, Vec<Option<Removal>>) {
        self.tracker.start_pass(now_ns);
        let mut deltas: Vec<Delta> = Vec::with_capacity(flows.len());
        let mut last_active: Vec<u64> = Vec::with_capacity(flows.len());
        for (key, counters) in flows.iter() {
            let (delta, active_ns) = self.tracker.observe_with_activity(key, counters);
            deltas.push(delta);
            last_active.push(active_ns);
        }
        let plan = expiry::plan(
            flows.iter().map(|(k, _)| k.cookie),
            &last_active,
            &self.released,
            now_ns,
            self.kernel.max_flows,
            &self.expiry,
        );
        drop(last_active);
        let mut removals: Vec<Option<Removal>> = vec![None; flows.len()];
        for (i, reason) in plan {
            removals[i] = Some(reason);
        }
        (deltas, removals)
    }

    /// The samples of the flows, each flow's delta added, the flows to remove removed (their
    /// final counts read and reported). Consumes the flows: each chunk is freed once read.
    fn make_samples(
        &mut self,
        flows: FlowTable,
        deltas: &[Delta],
        removals: &[Option<Removal>],
        times: (Timestamp, Instant),
        clock: &clock::WallClock,
    ) -> Result<Vec<FlowSample>, CollectError> {
        // Sized up front: growing these by doubling at 100k flows would briefly hold two
        // copies, which is what the agent's peak memory is made of.
        let mut samples: Vec<FlowSample> =
            Vec::with_capacity(flows.len() + Untracked::COUNT as usize);
        let mut index = SampleIndex::with_capacity(flows.len());
        let mut live = 0u64;
        for (i, (key, mut counters)) in flows.into_iter().enumerate() {
            let mut delta = deltas[i];
            if let Some(reason) = removals[i] {
                self.count_removal(reason);
                // The final value, read and removed in one step; what was added since the
                // snapshot above is reported now. If something else removed it meanwhile,
                // the snapshot is the best there is.
                if let Some(final_value) =
                    batch::take::<FlowKey, FlowCounters>(self.kernel.flows.fd().as_fd(), &key)
                        .map_err(CollectError::ReadFlows)?
                {
                    counters = final_value;
                }
                let rest = self.tracker.finish(&key, &counters);
                delta.bytes += rest.bytes;
                delta.packets += rest.packets;
            } else {
                live += 1;
            }
            if !delta.is_zero() {
                self.add_sample(
                    (&mut samples, &mut index),
                    (&key, &counters),
                    delta,
                    times,
                    clock,
                );
            }
        }
        self.stats.flows_live = live;
        Ok(samples)
    }

    /// Handles the kernel's events: released sockets (removed at the next poll) and new
    /// processes (read from /proc right away, while they still exist). Called at every poll
    /// and whenever the ring buffer signals data.
    pub fn drain_events(&mut self) {
        while let Some(item) = self.kernel.events.next() {
            if item.len() < size_of::<Event>() {
                continue;
            }
            // SAFETY: the kernel wrote an Event (repr(C), Pod); read unaligned.
            let ev: Event = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
            match ev.kind {
                EVENT_RELEASED => {
                    self.released.insert(ev.cookie, ev.ts_ns);
                    self.attributor.note_closer(ev.cookie, ev.tgid);
                    self.stats.release_events += 1;
                }
                EVENT_NEW_PROCESS => {
                    self.attributor.prime_process(ev.tgid);
                    self.stats.process_events += 1;
                }
                _ => {}
            }
        }
    }

    /// Reads the DNS answers the kernel copied and learns their names. Called at every poll
    /// and whenever the DNS ring buffer signals data.
    pub fn drain_dns(&mut self) {
        let Some(ring) = self.kernel.dns_answers.as_mut() else {
            return;
        };
        let now = Instant::now();
        while let Some(record) = ring.next() {
            match names::decode_capture(&record) {
                Some((payload, cut)) => {
                    self.names.learn(payload, cut, now);
                }
                None => self.names.count_undecodable(),
            }
        }
    }

    /// The DNS answer ring buffer's file descriptor, when passive DNS is attached.
    pub fn dns_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.kernel
            .dns_answers
            .as_ref()
            .map(std::os::fd::AsFd::as_fd)
    }

    /// The kernel log buffer's file descriptor, readable when records are waiting.
    pub fn kernel_log_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.kernel
            .kernel_log
            .as_ref()
            .map(std::os::fd::AsFd::as_fd)
    }

    /// Forwards the kernel programs' log records to the agent's log.
    pub fn flush_kernel_log(&mut self) {
        if let Some(log) = self.kernel.kernel_log.as_mut() {
            log.flush();
        }
    }

    /// The event ring buffer's file descriptor, readable when events are waiting.
    pub fn events_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.kernel.events)
    }

    fn forget_old_releases(&mut self, now_ns: u64) {
        let old: Vec<u64> = self
            .released
            .iter()
            .filter(|(_, at)| now_ns.saturating_sub(**at) > RELEASED_MEMORY_NS)
            .map(|(c, _)| *c)
            .collect();
        for cookie in old {
            self.released.remove(&cookie);
            self.attributor.forget_socket(cookie);
        }
    }

    fn read_untracked(
        &mut self,
        samples: &mut Vec<FlowSample>,
        window_end: Timestamp,
    ) -> Result<(), CollectError> {
        for why in Untracked::ALL {
            let per_cpu = self
                .kernel
                .untracked
                .get(&(why as u32), 0)
                .map_err(|source| CollectError::ReadCounters {
                    name: monitor_common::UNTRACKED_MAP,
                    source,
                })?;
            let total = per_cpu.iter().fold(Volume::default(), |acc, v| Volume {
                bytes: acc.bytes + v.bytes,
                packets: acc.packets + v.packets,
            });
            let seen = &mut self.untracked_seen[why as usize];
            let delta = Volume {
                bytes: total.bytes.saturating_sub(seen.bytes),
                packets: total.packets.saturating_sub(seen.packets),
            };
            *seen = total;
            if delta.bytes == 0 && delta.packets == 0 {
                continue;
            }
            self.stats.untracked_bytes += delta.bytes;
            samples.push(FlowSample {
                window_start: self.window_start,
                window_end,
                owner: Attributor::unattributed(),
                local: None,
                remote: None,
                remote_name: None,
                protocol: Protocol::Unknown,
                bytes: delta.bytes,
                packets: delta.packets,
                flows: 0,
                first_seen: None,
                last_seen: None,
                untracked: Some(match why {
                    Untracked::MapFull => UntrackedReason::MapFull,
                    Untracked::NoFullSocket => UntrackedReason::NoFullSocket,
                    Untracked::Unparsed => UntrackedReason::Unparsed,
                }),
                direction: None,
            });
        }
        Ok(())
    }

    fn read_errors(&mut self) -> Result<(), CollectError> {
        for err in ProgError::ALL {
            let per_cpu = self.kernel.errors.get(&(err as u32), 0).map_err(|source| {
                CollectError::ReadCounters {
                    name: monitor_common::ERRORS_MAP,
                    source,
                }
            })?;
            let total: u64 = per_cpu.iter().sum();
            let previous = self
                .stats
                .kernel_errors
                .insert(err.name(), total)
                .unwrap_or(0);
            if total > previous {
                match err {
                    ProgError::MapFull => tracing::warn!(
                        new = total - previous,
                        total,
                        "kernel flow table full: bytes kept as unattributed volume (raise --max-flows)"
                    ),
                    ProgError::RingFull => tracing::warn!(
                        new = total - previous,
                        total,
                        "release ring buffer full: closed flows are removed by idle expiry instead"
                    ),
                    ProgError::StorageFull => tracing::warn!(
                        new = total - previous,
                        total,
                        "socket storage could not be allocated: some sockets lack an owner"
                    ),
                    ProgError::DnsRingFull => tracing::warn!(
                        new = total - previous,
                        total,
                        "DNS answer ring buffer full: some destinations stay without a name"
                    ),
                    ProgError::NoSocket | ProgError::Parse | ProgError::DnsParse => {}
                }
            }
        }
        Ok(())
    }
}
