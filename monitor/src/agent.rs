//! The agent loop shared by `run` and `top`: attach, poll every interval, hand each window's
//! samples to a consumer, pass SIGHUP on to it (reload, or stop), and on Ctrl-C / SIGTERM
//! take a last poll and detach everything.

use std::{ops::ControlFlow, time::Duration};

use tokio::signal::unix::{SignalKind, signal};

use crate::{
    cli::Settings,
    collector::{Collector, CollectorStats, expiry::ExpiryPolicy},
    flow::FlowSample,
    kernel::loader::{self, LoadOptions},
};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Load(#[from] loader::LoadError),
    #[error(transparent)]
    Collect(#[from] crate::collector::CollectError),
    #[error("setting up signal and event notification")]
    Notify(#[source] std::io::Error),
}

/// What the loop hands to its consumer.
pub enum Event<'a> {
    /// Once, before the first window: the containment maps, unless the kernel refused the
    /// enforcing programs (then only dry run is possible).
    Attached(Option<Box<crate::contain::kernel::Enforcer>>),
    /// One poll window.
    Window(&'a [FlowSample], &'a CollectorStats),
    /// SIGHUP: `Continue` keeps the agent running (after reloading its configuration),
    /// `Break` stops it cleanly like SIGTERM (a closed terminal, for `top`).
    Hangup,
}

/// Runs until a signal, or until `consume` returns `Break`. Returns the collector's totals,
/// after the programs have been detached.
pub async fn run(
    args: &Settings,
    mut consume: impl FnMut(Event<'_>) -> ControlFlow<()>,
) -> Result<CollectorStats, AgentError> {
    return_large_allocations();
    let mut sigterm = signal(SignalKind::terminate()).map_err(AgentError::Notify)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(AgentError::Notify)?;
    // Handled, so never the default action's abrupt death (programs left without a last
    // poll and checkpoint): the consumer reloads, or the agent stops cleanly.
    let mut sighup = signal(SignalKind::hangup()).map_err(AgentError::Notify)?;

    let opts = LoadOptions {
        max_flows: args.max_flows,
        ..LoadOptions::default()
    };
    let mut attached = loader::load_and_attach(opts, &args.cgroup_mount)?;
    tracing::info!(
        cgroup = %attached.cgroup_root.display(),
        programs = ?attached.program_ids(),
        max_flows = args.max_flows,
        interval = ?args.interval,
        passive_dns = attached.dns_answers.is_some(),
        tcp_direction = attached.directions.tcp_marks,
        udp_direction = attached.directions.udp_peers,
        "attached: counting egress"
    );
    let expiry = ExpiryPolicy {
        idle_timeout_ns: duration_ns(args.idle_timeout),
        ..ExpiryPolicy::default()
    };
    let enforcer = attached.enforcer().map(Box::new);
    let mut collector = Collector::new(attached, expiry);
    if consume(Event::Attached(enforcer)).is_break() {
        return Ok(collector.stats().clone());
    }

    // Wakes up as soon as the kernel queues events, so new processes are read from /proc
    // while they are alive, not at the next poll.
    let events_fd = collector
        .events_fd()
        .try_clone_to_owned()
        .map_err(AgentError::Notify)?;
    // SAFETY: `events_fd` is a duplicate owned by the AsyncFd: it stays open and refers to
    // the ring buffer for the AsyncFd's whole life.
    let events = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(events_fd, tokio::io::Interest::READABLE)
    }
    .map_err(|e| AgentError::Notify(e.into()))?;
    let kernel_log = watch(collector.kernel_log_fd())?;
    // DNS answers are read as they come, like events: the ring must not fill up between
    // polls, and a name is learned before the connection it names is first reported.
    let dns = watch(collector.dns_fd())?;
    let mut ticker = tokio::time::interval(args.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await; // the first tick is immediate
    let mut last_report = std::time::Instant::now();
    let signal = loop {
        tokio::select! {
            _ = ticker.tick() => {
                let samples = collector.poll()?;
                if last_report.elapsed() >= STATS_EVERY {
                    log_stats("collector totals", collector.stats(), None);
                    last_report = std::time::Instant::now();
                }
                if consume(Event::Window(&samples, collector.stats())).is_break() {
                    break None;
                }
            }
            ready = events.readable() => {
                let mut guard = ready.map_err(AgentError::Notify)?;
                collector.drain_events();
                guard.clear_ready();
            }
            ready = readable(kernel_log.as_ref()) => {
                let mut guard = ready.map_err(AgentError::Notify)?;
                collector.flush_kernel_log();
                guard.clear_ready();
            }
            ready = readable(dns.as_ref()) => {
                let mut guard = ready.map_err(AgentError::Notify)?;
                collector.drain_dns();
                guard.clear_ready();
            }
            _ = sigterm.recv() => break Some("SIGTERM"),
            _ = sigint.recv() => break Some("SIGINT"),
            _ = sighup.recv() => {
                if consume(Event::Hangup).is_break() {
                    break Some("SIGHUP");
                }
            }
        }
    };
    // Last window: what was counted since the previous poll is not lost on shutdown.
    drop(events);
    drop(kernel_log);
    drop(dns);
    collector.flush_kernel_log();
    let samples = collector.poll()?;
    let _ = consume(Event::Window(&samples, collector.stats()));
    let stats = collector.stats().clone();
    drop(collector); // closes the bpf_link fds: the programs are detached here
    log_stats("detached all programs; stopped", &stats, signal);
    Ok(stats)
}

/// Large allocations straight from the kernel (mmap), and back to it when freed. By default
/// glibc raises its mmap threshold to the largest block freed so far (up to 32 MiB): after
/// the first poll, a poll's big buffers (the flow snapshot's chunks, the samples, the sample
/// index: 35 MB at 100k flows) came from the heap, where the chunks freed as the samples
/// are made stay resident and cannot hold the samples, so the heap held both. Fixed at
/// glibc's initial 128 KiB, the threshold stays there.
#[cfg(target_env = "gnu")]
fn return_large_allocations() {
    const THRESHOLD: libc::c_int = 128 * 1024;
    // SAFETY: mallopt only sets a parameter of malloc; it may be called at any time.
    if unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, THRESHOLD) } == 0 {
        tracing::debug!("mallopt(M_MMAP_THRESHOLD) refused: large allocations may stay resident");
    }
}

/// musl's malloc returns large blocks to the kernel by itself.
#[cfg(not(target_env = "gnu"))]
fn return_large_allocations() {}

type Watched = tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>;

/// Registers a duplicate of `fd` (if any) for readiness notifications.
fn watch(fd: Option<std::os::fd::BorrowedFd<'_>>) -> Result<Option<Watched>, AgentError> {
    let Some(fd) = fd else {
        return Ok(None);
    };
    let fd = fd.try_clone_to_owned().map_err(AgentError::Notify)?;
    // SAFETY: `fd` is a duplicate owned by the AsyncFd: it stays open and refers to the same
    // buffer for the AsyncFd's whole life.
    let registered = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
    };
    registered
        .map(Some)
        .map_err(|e| AgentError::Notify(e.into()))
}

/// Waits until `fd` is readable; never, if there is none.
async fn readable(
    fd: Option<&tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>>,
) -> std::io::Result<tokio::io::unix::AsyncFdReadyGuard<'_, std::os::fd::OwnedFd>> {
    match fd {
        Some(fd) => fd.readable().await,
        None => std::future::pending().await,
    }
}

/// How often the running agent logs its totals (evictions, errors, untracked volume).
const STATS_EVERY: Duration = Duration::from_secs(60);

/// Logs the collector's totals; `signal` names what stopped the agent, for the last one.
fn log_stats(message: &'static str, stats: &CollectorStats, signal: Option<&str>) {
    tracing::info!(
        signal = signal.unwrap_or("none"),
        polls = stats.polls,
        flows_live = stats.flows_live,
        bytes_reported = stats.bytes_reported,
        untracked_bytes = stats.untracked_bytes,
        flows_closed = stats.flows_closed,
        evicted_idle = stats.evicted_idle,
        evicted_pressure = stats.evicted_pressure,
        lost_entries = stats.lost_entries,
        release_events = stats.release_events,
        process_events = stats.process_events,
        kernel_errors = %serde_json::to_string(&stats.kernel_errors).unwrap_or_default(),
        dns = %serde_json::to_string(&stats.dns).unwrap_or_default(),
        "{message}"
    );
}

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
