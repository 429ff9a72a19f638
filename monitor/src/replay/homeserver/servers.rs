//! The heavy and the machine-to-machine peers: the ministries' NAT gateways, the federation
//! servers Synapse connects to (steady transactions, backfill bursts, a new server joining
//! now and then), the push gateway, URL previews, the nightly backup, loopback traffic and
//! the administrator's ssh.

use std::{net::IpAddr, sync::Arc};

use super::{
    GIB, MIB, Population,
    addresses::{self, ADMIN, BACKUP_HOST, PUSH_GATEWAY},
    diurnal,
    host::{Host, NGINX_WORKERS, sample},
    rng::Rng,
};
use crate::flow::{Direction, FlowSample};

/// Popular sites of URL previews (learned on the first day, mostly).
const POPULAR_SITES: u64 = 40;

struct Federation {
    addr: IpAddr,
    name: Arc<str>,
    port: u16,
    /// How busy the rooms shared with it are.
    weight: f64,
    /// Minute of the trace from which it federates (a server joining a room later).
    since: u32,
}

/// A burst of backfill to one federation server: minutes [start, end) of the day.
struct Backfill {
    peer: usize,
    start: u32,
    end: u32,
    rate: u64,
}

pub struct Servers {
    rng: Rng,
    pub nats: Vec<IpAddr>,
    /// Each gateway's volume per minute at the office peak.
    nat_peak: Vec<f64>,
    federation: Vec<Federation>,
    backfills: Vec<Backfill>,
    /// Tonight's backup: (start minute, bytes per minute, bytes).
    backup: (u32, u64, u64),
    /// Scratch: federation bytes of the minute, by peer.
    fed_bytes: Vec<u64>,
}

impl Servers {
    pub fn new(seed: u64, p: &Population) -> Self {
        let mut rng = Rng::new(seed, 2);
        let nats = (0..p.nats).map(addresses::nat).collect();
        // 10 to 18 MiB a minute at the peak, +-15 % a minute: 8.5 to 20.7 MiB.
        let nat_peak = (0..p.nats)
            .map(|_| rng.uniform(10.0, 18.0) * MIB as f64)
            .collect();
        let federation = (0..p.federation)
            .map(|i| Federation {
                addr: addresses::federation(i),
                name: Arc::from(format!("matrix.hs{i}.example.org")),
                port: if i % 3 == 0 { 443 } else { 8448 },
                weight: rng.log_range(0.2, 5.0),
                since: 0,
            })
            .collect();
        Self {
            rng,
            nats,
            nat_peak,
            federation,
            backfills: Vec::new(),
            backup: (0, 0, 0),
            fed_bytes: Vec::new(),
        }
    }

    /// Plans day `day` (1-based): its backfills, its backup, a new federation server every
    /// second day.
    pub fn plan_day(&mut self, day: u32) {
        let rng = &mut self.rng;
        if day.is_multiple_of(2) {
            let i = self.federation.len();
            self.federation.push(Federation {
                addr: addresses::federation(i),
                name: Arc::from(format!("matrix.hs{i}.example.org")),
                port: 8448,
                weight: 0.3,
                since: (day - 1) * 1440 + rng.range(0, 1440) as u32,
            });
        }
        self.backfills.clear();
        // A few backfills a day: tens to hundreds of MiB over minutes.
        let known = self
            .federation
            .iter()
            .filter(|f| f.since == 0)
            .count()
            .max(1);
        for _ in 0..rng.poisson(3.0) {
            let start = rng.minute_from(|h| diurnal::federation(h, true));
            let len = rng.range(3, 16) as u32;
            let total = rng.log_range(20.0, 400.0) * MIB as f64;
            self.backfills.push(Backfill {
                peer: rng.range(0, known as u64) as usize,
                start,
                end: (start + len).min(1440),
                rate: (total / f64::from(len)) as u64,
            });
        }
        // 02:00 local, 2 to 4 GiB at the backup link's ~100 MiB a minute.
        let bytes = rng.uniform(2.0, 4.0) * GIB as f64;
        let rate = rng.uniform(95.0, 105.0) * MIB as f64;
        self.backup = (120 + rng.range(0, 6) as u32, rate as u64, bytes as u64);
    }

    /// A gateway's bytes in a minute (before any scenario's change).
    pub fn nat_bytes(&mut self, i: usize, hour: f64, weekday: bool) -> u64 {
        let level = self.nat_peak[i] * diurnal::office(hour, weekday);
        (level * self.rng.uniform(0.85, 1.15)) as u64 + self.rng.range(20_000, 200_000)
    }

    /// The machine-to-machine samples of minute `m` of the day (trace minute `t`), into `out`.
    #[expect(
        clippy::too_many_arguments,
        reason = "the minute's clock, its owners and the output"
    )]
    pub fn minute(
        &mut self,
        host: &Host,
        t: u32,
        m: u32,
        start: i64,
        weekday: bool,
        served: u64,
        out: &mut Vec<FlowSample>,
    ) {
        let hour = f64::from(m) / 60.0;
        self.federation_minute(host, t, m, start, weekday, out);
        let rng = &mut self.rng;
        // Push notifications.
        if rng.chance(0.9) {
            let bytes = rng.log_normal(8_000.0 * (0.1 + diurnal::mobile(hour)), 0.5) as u64 + 300;
            out.push(sample(
                &host.synapse,
                start,
                PUSH_GATEWAY,
                443,
                45_001,
                bytes,
                Direction::Initiated,
                None,
            ));
        }
        // URL previews: Synapse fetches the pages people link to, mostly never seen before.
        let busy = diurnal::office(hour, weekday).max(diurnal::home(hour, weekday));
        for _ in 0..rng.poisson(0.35 * busy) {
            let addr = if rng.chance(0.3) {
                addresses::popular_site(rng.range(0, POPULAR_SITES))
            } else {
                addresses::web_site(rng.next_u64())
            };
            let bytes = rng.range(600, 4_000);
            out.push(sample(
                &host.synapse,
                start,
                addr,
                443,
                rng.range(32_768, 61_000) as u16,
                bytes,
                Direction::Initiated,
                None,
            ));
        }
        // The nightly backup.
        let (at, rate, total) = self.backup;
        if m >= at && rate > 0 {
            let done = u64::from(m - at) * rate;
            if done < total {
                out.push(sample(
                    &host.backup,
                    start,
                    BACKUP_HOST,
                    22,
                    47_022,
                    rate.min(total - done),
                    Direction::Initiated,
                    None,
                ));
            }
        }
        // Loopback: nginx to Synapse, Synapse to PostgreSQL (internal: counted, never judged).
        let lo = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
        out.push(sample(
            &host.nginx[t as usize % NGINX_WORKERS],
            start,
            lo,
            8008,
            52_000,
            served / 50 + rng.range(5_000, 50_000),
            Direction::Initiated,
            None,
        ));
        out.push(sample(
            &host.synapse,
            start,
            lo,
            5432,
            51_000,
            rng.range(50_000, 400_000),
            Direction::Initiated,
            None,
        ));
        // The administrator, on weekdays.
        if weekday && (9.0..18.0).contains(&hour) && rng.chance(0.1) {
            out.push(sample(
                &host.sshd,
                start,
                ADMIN,
                rng.range(50_000, 60_000) as u16,
                22,
                rng.range(2_000, 40_000),
                Direction::Served,
                None,
            ));
        }
    }

    /// Synapse's transactions to every server sharing rooms, plus the day's backfills.
    fn federation_minute(
        &mut self,
        host: &Host,
        t: u32,
        m: u32,
        start: i64,
        weekday: bool,
        out: &mut Vec<FlowSample>,
    ) {
        let hour = f64::from(m) / 60.0;
        let rng = &mut self.rng;
        // Federation: transactions to every server sharing rooms, plus backfills.
        let fed = diurnal::federation(hour, weekday);
        self.fed_bytes.clear();
        self.fed_bytes.resize(self.federation.len(), 0);
        for (i, f) in self.federation.iter().enumerate() {
            if f.since > t || !rng.chance((0.3 + 0.6 * fed) * f.weight.min(1.0)) {
                continue;
            }
            self.fed_bytes[i] = (f.weight * fed * rng.log_normal(20_000.0, 0.8)) as u64 + 500;
        }
        for b in &self.backfills {
            if (b.start..b.end).contains(&m) {
                self.fed_bytes[b.peer] += (b.rate as f64 * rng.uniform(0.7, 1.3)) as u64;
            }
        }
        for (f, &bytes) in self.federation.iter().zip(&self.fed_bytes) {
            if bytes > 0 {
                let local = 40_000 + (bytes % 997) as u16;
                out.push(sample(
                    &host.synapse,
                    start,
                    f.addr,
                    f.port,
                    local,
                    bytes,
                    Direction::Initiated,
                    Some(&f.name),
                ));
            }
        }
    }
}
