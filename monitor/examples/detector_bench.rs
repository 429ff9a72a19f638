//! Detector benchmark (run by `cargo xtask bench`): `FlowSample`s per second through
//! `Detector::observe` on one core, and memory per tracked (service, peer) pair.
//!
//! `detector_bench --peers N [--samples M]` prints one JSON object. Samples go to N peers of
//! one service (eight processes), 1,000 per one-second window, all clients the service
//! served (see `peer` for their prefixes): first one sample to each of 90 % of the peers
//! during the learning period, then M samples to peers drawn at random, after learning, so
//! every rule is evaluated, the prefix groups' included. Only `observe` is timed; building
//! the samples is not. Memory is counted by a counting allocator: bytes allocated by the
//! detector, divided by the pairs it tracks.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::{
        Arc,
        atomic::{AtomicIsize, Ordering},
    },
    time::{Duration, Instant},
};

use jiff::Timestamp;
use monitor::{
    config::{Config, Origin},
    detect::Detector,
    flow::{Endpoint, FlowSample, Owner, Protocol},
    replay::synthetic::{Rng, nginx_worker},
};

/// Counts live heap bytes.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator, only counting sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const WINDOW: usize = 1_000;
const START: i64 = 1_780_272_000;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str, default: u64| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map_or(default, |v| v.parse().expect("a number"))
    };
    let peers = value("--peers", 10_000) as usize;
    let samples = value("--samples", 5_000_000) as usize;

    let config = bench_config();
    let mut batch = blank_batch();
    let mut rng = Rng(0x1234_5678);

    let before = LIVE.load(Ordering::Relaxed);
    let mut detector = Detector::new(&config);
    let mut events = Vec::new();
    let mut timed = Duration::ZERO;
    let mut run_window = |second: i64,
                          batch: &mut Vec<FlowSample>,
                          fill: &mut dyn FnMut(usize, &mut FlowSample),
                          timed: &mut Duration| {
        let t = Timestamp::from_second(START + second).expect("time");
        let end = Timestamp::from_second(START + second + 1).expect("time");
        for (i, s) in batch.iter_mut().enumerate() {
            s.window_start = t;
            s.window_end = end;
            fill(i, s);
        }
        let started = Instant::now();
        detector.observe(batch, &mut events);
        *timed += started.elapsed();
        events.clear();
    };

    // Learning: one sample to each of 90 % of the peers (spread over at most 2 h).
    let learned = peers * 9 / 10;
    let mut learn_timed = Duration::ZERO;
    let mut next_peer = 0usize;
    let mut second = 0;
    while next_peer < learned {
        let start = next_peer;
        second += 1;
        run_window(
            second,
            &mut batch,
            &mut |i, s| {
                let p = (start + i).min(learned - 1);
                s.remote = Some(Endpoint {
                    addr: peer(p),
                    port: 40_000,
                });
                s.bytes = 2_000;
                s.packets = 3;
            },
            &mut learn_timed,
        );
        next_peer += WINDOW;
    }
    // Past the learning period.
    let after_learning = 2 * 3600 + 60;
    let windows = samples.div_ceil(WINDOW);
    for w in 0..windows {
        let draws: Vec<(usize, u64)> = (0..WINDOW)
            .map(|_| {
                let r = rng.next_u64();
                ((r % peers as u64) as usize, 500 + (r >> 40) % 20_000)
            })
            .collect();
        run_window(
            after_learning + w as i64,
            &mut batch,
            &mut |i, s| {
                let (p, bytes) = draws[i];
                s.remote = Some(Endpoint {
                    addr: peer(p),
                    port: 40_000 + (p % 20_000) as u16,
                });
                s.bytes = bytes;
                s.packets = bytes.div_ceil(1448);
            },
            &mut timed,
        );
    }
    let pairs = detector.stats.peers.max(1);
    let bytes = LIVE.load(Ordering::Relaxed) - before;
    let measured = windows * WINDOW;
    let opened = detector.book().stats.opened;
    println!(
        "{}",
        serde_json::json!({
            "peers": peers,
            "pairs_tracked": pairs,
            "samples_timed": measured,
            "seconds": timed.as_secs_f64(),
            "samples_per_second": measured as f64 / timed.as_secs_f64(),
            "learning_samples_per_second": learned as f64 / learn_timed.as_secs_f64().max(1e-9),
            "heap_bytes": bytes,
            "bytes_per_pair": bytes as f64 / pairs as f64,
            "prefix_groups": detector.stats.prefix_groups,
            "alerts_opened": opened,
        })
    );
}

/// One window of samples from eight nginx workers; the loop fills in time and peer.
fn blank_batch() -> Vec<FlowSample> {
    let owners: Vec<Arc<Owner>> = (0..8).map(nginx_worker).collect();
    (0..WINDOW)
        .map(|i| FlowSample {
            window_start: Timestamp::UNIX_EPOCH,
            window_end: Timestamp::UNIX_EPOCH,
            owner: owners[i % owners.len()].clone(),
            local: Some(Endpoint {
                addr: IpAddr::V6(Ipv6Addr::LOCALHOST),
                port: 443,
            }),
            remote: None,
            remote_name: None,
            protocol: Protocol::Tcp,
            bytes: 0,
            packets: 0,
            flows: 1,
            first_seen: None,
            last_seen: None,
            untracked: None,
            direction: None,
        })
        .collect()
}

/// Peer `i`, a client of a public server (the addresses are never contacted: the samples
/// only exist in memory). Three in five are IPv4 clients, eight per /24 (a provider's
/// pool); two in five IPv6 devices, each on its own /64, a hundred per /48 (a carrier's or
/// an ISP's customers). So the /24 and /48 groups exist and are judged with every sample,
/// as on a real server; a /64 group is made only for a /64 with two clients.
fn peer(i: usize) -> IpAddr {
    if i % 5 < 3 {
        let j = (i / 5 * 3 + i % 5) as u32;
        IpAddr::V4(Ipv4Addr::from(0x0b00_0000 + ((j / 8) << 8) + j % 8 + 1))
    } else {
        let k = i / 5 * 2 + i % 5 - 3;
        IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            (k / 100) as u16,
            (k % 100) as u16,
            0,
            0,
            0,
            1,
        ))
    }
}

/// The default rules, a 2-hour learning period, and no internal networks (every peer counts).
fn bench_config() -> Config {
    Config::parse(
        "[detect]\nlearning_period = \"2h\"\n[destinations]\ninternal = []\n",
        &Origin::Embedded,
    )
    .expect("bench config")
}
