//! Synthetic traces of a Matrix homeserver host, for replay tests, demos and the benchmark.
//!
//! Every trace is two days of one-minute windows starting 2026-06-01T00:00:00Z: day 1 is the
//! learning day (the default learning period is 24 h), day 2 is evaluated. The host runs
//! nginx (serving 500 clients), Synapse (federating with 20 homeservers, talking to its
//! database on loopback) and sshd (one administrator). Scenarios add one attack on day 2:
//! - `normal`: nothing;
//! - `bulk-download`: one existing client downloads 2 GB over 20 minutes from 14:00;
//! - `upload`: Synapse uploads 300 MB to a never-seen host over 5 minutes from 11:00;
//! - `slow-drip`: Synapse sends 400 MB over the whole day in 1-MiB pieces to one new host.
//!
//! Addresses are documentation ranges (RFC 5737, RFC 3849): nothing here is a real host.
//! The generator is deterministic (its own `SplitMix64`, so traces never change with a crate
//! update): the same scenario and seed give the same samples.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
    sync::Arc,
};

use jiff::Timestamp;

use crate::flow::{Attribution, Endpoint, FlowSample, Owner, Protocol};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    Normal,
    BulkDownload,
    Upload,
    SlowDrip,
}

impl FromStr for Scenario {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        <Self as clap::ValueEnum>::from_str(s, true)
    }
}

/// Start of every trace (a Monday, midnight UTC).
pub const START_SECS: i64 = 1_780_272_000;
pub const DAY_SECS: i64 = 86_400;
/// Length of one window (the agent's `interval` in the recording).
pub const WINDOW_SECS: i64 = 60;
pub const CLIENTS: usize = 500;
pub const FEDERATION_PEERS: usize = 20;

/// The attacker, victim and service of each scenario, for tests to check alerts against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expected {
    /// The peer the attack sends to.
    pub peer: IpAddr,
    /// The `service` identity of the sending process (its systemd unit).
    pub unit: &'static str,
    /// Start of the attack.
    pub start: Timestamp,
}

pub const BULK_CLIENT: usize = 137;
pub const UPLOAD_HOST: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 66));
pub const DRIP_HOST: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 99));

impl Scenario {
    pub fn expected(self) -> Option<Expected> {
        let at = |secs: i64| Timestamp::from_second(START_SECS + DAY_SECS + secs).ok();
        match self {
            Self::Normal => None,
            Self::BulkDownload => Some(Expected {
                peer: client_addr(BULK_CLIENT),
                unit: "nginx.service",
                start: at(14 * 3600)?,
            }),
            Self::Upload => Some(Expected {
                peer: UPLOAD_HOST,
                unit: "matrix-synapse.service",
                start: at(11 * 3600)?,
            }),
            Self::SlowDrip => Some(Expected {
                peer: DRIP_HOST,
                unit: "matrix-synapse.service",
                start: at(0)?,
            }),
        }
    }
}

/// Client addresses: the first 400 in `2001:db8:1::/64`, the others in
/// `198.51.100.0/24`.
pub fn client_addr(i: usize) -> IpAddr {
    if i < 400 {
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, i as u16 + 1))
    } else {
        IpAddr::V4(Ipv4Addr::new(198, 51, 100, (i - 400) as u8 + 1))
    }
}

fn federation_addr(i: usize) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(
        0x2001,
        0xdb8,
        0xfed,
        0,
        0,
        0,
        0,
        i as u16 + 1,
    ))
}

/// `SplitMix64`: tiny, fast, and fixed forever (also drives the detector benchmark).
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo).max(1)
    }

    /// Log-uniform in [lo, hi): many small values, a few large ones (media sizes).
    fn log_range(&mut self, lo: u64, hi: u64) -> u64 {
        let (a, b) = ((lo as f64).ln(), (hi as f64).ln());
        (a + (b - a) * self.unit()).exp() as u64
    }
}

/// How busy users are at this hour (UTC): a working day with a quiet night.
fn activity(hour: i64) -> f64 {
    match hour {
        0..=5 => 0.04,
        6..=7 => 0.15,
        8..=11 | 13..=17 => 0.40,
        12 | 18..=21 => 0.30,
        _ => 0.10,
    }
}

struct Host {
    nginx: Vec<Arc<Owner>>,
    synapse: Arc<Owner>,
    sshd: Arc<Owner>,
}

fn owner(
    pid: u32,
    comm: &str,
    exe: &str,
    cmdline: &[&str],
    uid: u32,
    user: &str,
    unit: &str,
) -> Arc<Owner> {
    Arc::new(Owner {
        attribution: Attribution::Kernel,
        pid: Some(pid),
        comm: Some(comm.into()),
        exe: Some(exe.into()),
        cmdline: cmdline.iter().map(|s| (*s).to_owned()).collect(),
        uid: Some(uid),
        user: Some(user.into()),
        cgroup_id: Some(u64::from(pid) * 7),
        cgroup: Some(format!("/system.slice/{unit}")),
        unit: Some(unit.into()),
        container_id: None,
        service: unit.into(),
    })
}

/// nginx worker `index` of the synthetic host (pid 1201 + index, user www-data, unit
/// nginx.service): also the process of the export fixtures and the detector benchmark.
pub fn nginx_worker(index: u32) -> Arc<Owner> {
    owner(
        1201 + index,
        "nginx",
        "/usr/sbin/nginx",
        &["nginx: worker process"],
        33,
        "www-data",
        "nginx.service",
    )
}

fn host() -> Host {
    Host {
        nginx: (0..2).map(nginx_worker).collect(),
        synapse: owner(
            1300,
            "python",
            "/opt/venvs/matrix-synapse/bin/python3.11",
            &[
                "/opt/venvs/matrix-synapse/bin/python",
                "-m",
                "synapse.app.homeserver",
                "--config-path=/etc/matrix-synapse/homeserver.yaml",
            ],
            998,
            "matrix-synapse",
            "matrix-synapse.service",
        ),
        sshd: owner(
            2200,
            "sshd",
            "/usr/sbin/sshd",
            &["sshd: admin@pts/0"],
            1000,
            "admin",
            "ssh.service",
        ),
    }
}

/// The server's public address (the local end of every flow).
const SERVER: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x443));

/// Generates `scenario`, window by window, calling `emit` with each window's samples.
pub fn generate(scenario: Scenario, seed: u64, mut emit: impl FnMut(&[FlowSample])) {
    let host = host();
    let mut rng = Rng(seed ^ 0x6567_7265_7373);
    // Per-client habits: how active, how media-hungry.
    let clients: Vec<(f64, f64)> = (0..CLIENTS)
        .map(|_| (0.3 + rng.unit() * 1.4, 0.01 + rng.unit() * 0.07))
        .collect();
    let federation_names: Vec<Arc<str>> = (0..FEDERATION_PEERS)
        .map(|i| Arc::from(format!("hs{i}.matrix.example.org")))
        .collect();
    let mut batch = Vec::new();
    let windows = 2 * DAY_SECS / WINDOW_SECS;
    for w in 0..windows {
        batch.clear();
        let start = START_SECS + w * WINDOW_SECS;
        let end = start + WINDOW_SECS;
        let second_day = w * WINDOW_SECS >= DAY_SECS;
        let day_secs = (w * WINDOW_SECS) % DAY_SECS;
        let hour = day_secs / 3600;
        let p = activity(hour);
        let mut push =
            |owner: &Arc<Owner>, addr: IpAddr, port: u16, local_port: u16, bytes: u64| {
                batch.push(sample(owner, start, end, addr, port, local_port, bytes));
            };
        for (i, &(busy, media)) in clients.iter().enumerate() {
            if rng.unit() >= p * busy {
                continue;
            }
            // /sync responses and recent messages, plus sometimes a thumbnail or a file.
            let mut bytes = rng.range(4_000, 60_000);
            if rng.unit() < media {
                bytes += rng.log_range(20_000, 8_000_000);
            }
            let worker = &host.nginx[i % 2];
            push(
                worker,
                client_addr(i),
                40_000 + (rng.next_u64() % 20_000) as u16,
                443,
                bytes,
            );
        }
        for i in 0..FEDERATION_PEERS {
            if rng.unit() < 0.5 {
                let mut bytes = rng.range(1_000, 50_000);
                if rng.unit() < 0.002 {
                    bytes += rng.log_range(500_000, 5_000_000); // backfill
                }
                push(&host.synapse, federation_addr(i), 8448, 50_000, bytes);
            }
        }
        // Synapse -> PostgreSQL on loopback (internal), nginx -> Synapse on loopback.
        push(
            &host.synapse,
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            5432,
            51_000,
            rng.range(50_000, 400_000),
        );
        push(
            &host.nginx[0],
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            8008,
            52_000,
            rng.range(20_000, 200_000),
        );
        // The administrator's ssh session during office hours.
        if (9..18).contains(&hour) && rng.unit() < 0.2 {
            push(
                &host.sshd,
                IpAddr::V4(Ipv4Addr::new(203, 0, 113, 50)),
                50_022,
                22,
                rng.range(2_000, 40_000),
            );
        }
        if second_day {
            attack(scenario, day_secs, &host, &mut push);
            // A few new clients (new phones, new networks) appear on day 2.
            if day_secs % 7200 == 0 && hour >= 8 {
                let i = (day_secs / 7200) as u8;
                push(
                    &host.nginx[1],
                    IpAddr::V4(Ipv4Addr::new(192, 0, 2, 100 + i)),
                    41_000,
                    443,
                    rng.range(20_000, 300_000),
                );
            }
        }
        // The host resolved the federation peers' names (passive DNS).
        for s in &mut batch {
            if let Some(r) = s.remote
                && let Some(i) = federation_index(r.addr)
            {
                s.remote_name = Some(federation_names[i].clone());
            }
        }
        emit(&batch);
    }
}

fn federation_index(addr: IpAddr) -> Option<usize> {
    (0..FEDERATION_PEERS).find(|&i| federation_addr(i) == addr)
}

fn attack(
    scenario: Scenario,
    day_secs: i64,
    host: &Host,
    push: &mut impl FnMut(&Arc<Owner>, IpAddr, u16, u16, u64),
) {
    const MB: u64 = 1_000_000;
    match scenario {
        Scenario::Normal => {}
        Scenario::BulkDownload => {
            // 2 GB in 20 one-minute windows, on one existing client's connection.
            let start = 14 * 3600;
            if (start..start + 20 * 60).contains(&day_secs) {
                push(
                    &host.nginx[BULK_CLIENT % 2],
                    client_addr(BULK_CLIENT),
                    44_444,
                    443,
                    100 * MB,
                );
            }
        }
        Scenario::Upload => {
            let start = 11 * 3600;
            if (start..start + 5 * 60).contains(&day_secs) {
                push(&host.synapse, UPLOAD_HOST, 443, 53_000, 60 * MB);
            }
        }
        Scenario::SlowDrip => {
            // 400 pieces of 1 MiB spread evenly over the day: one every 216 s.
            let minute = day_secs / WINDOW_SECS;
            let pieces = |m: i64| m * 400 / 1440;
            let n = pieces(minute + 1) - pieces(minute);
            if n > 0 {
                push(&host.synapse, DRIP_HOST, 443, 54_000, n as u64 * 1_048_576);
            }
        }
    }
}

fn sample(
    owner: &Arc<Owner>,
    start: i64,
    end: i64,
    addr: IpAddr,
    port: u16,
    local_port: u16,
    bytes: u64,
) -> FlowSample {
    let ts = |s: i64| Timestamp::from_second(s).unwrap_or(Timestamp::UNIX_EPOCH);
    FlowSample {
        window_start: ts(start),
        window_end: ts(end),
        owner: owner.clone(),
        local: Some(Endpoint {
            addr: SERVER,
            port: local_port,
        }),
        remote: Some(Endpoint { addr, port }),
        remote_name: None,
        protocol: Protocol::Tcp,
        bytes,
        // IP packets of up to 1500 bytes.
        packets: bytes.div_ceil(1448),
        flows: 1,
        first_seen: Some(ts(start)),
        last_seen: Some(ts(end)),
        untracked: None,
        direction: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn total_to(scenario: Scenario, peer: IpAddr) -> (u64, usize) {
        let mut bytes = 0;
        let mut samples = 0;
        generate(scenario, 1, |batch| {
            samples += batch.len();
            bytes += batch
                .iter()
                .filter(|s| s.remote.is_some_and(|r| r.addr == peer))
                .map(|s| s.bytes)
                .sum::<u64>();
        });
        (bytes, samples)
    }

    #[test]
    fn attacks_have_the_sizes_the_issue_gives() {
        let (bulk, _) = total_to(Scenario::BulkDownload, client_addr(BULK_CLIENT));
        let (normal, samples) = total_to(Scenario::Normal, client_addr(BULK_CLIENT));
        assert_eq!(bulk - normal, 2_000_000_000);
        assert!(samples > 100_000, "{samples}");
        assert_eq!(total_to(Scenario::Upload, UPLOAD_HOST).0, 300_000_000);
        assert_eq!(total_to(Scenario::SlowDrip, DRIP_HOST).0, 400 * 1_048_576);
    }

    #[test]
    fn generation_is_deterministic() {
        let mut a = Vec::new();
        let mut b = Vec::new();
        generate(Scenario::Normal, 7, |batch| {
            a.extend_from_slice(&batch[..batch.len().min(3)]);
        });
        generate(Scenario::Normal, 7, |batch| {
            b.extend_from_slice(&batch[..batch.len().min(3)]);
        });
        assert_eq!(a, b);
    }
}
