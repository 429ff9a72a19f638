//! Realistic week-long traces of a Matrix homeserver's egress, for the efficacy harness
//! (`egress-monitor efficacy`): one-minute windows of `FlowSample`s over `days` days (day 1 is
//! the detector's learning day), from the local midnight of Monday 2026-06-01 (UTC+2).
//!
//! The host runs the `messaging` service (nginx and Synapse, see `SERVICES_TOML`), a
//! nightly backup job and sshd. What its clients and peers do is modelled on what real
//! servers see:
//! - 6 ministry NAT gateways: one stable IPv4 address each, 8 to 22 MiB a minute at the
//!   office peak (weekdays 08:00-18:00 local, a lunch dip), weekends far lower;
//! - 300 home clients with stable-ish addresses (IPv4 leases that move now and then; IPv6
//!   households whose privacy addresses change daily), log-normal daily volumes, sessions,
//!   an evening peak;
//! - ~420 phones on new addresses every day: carrier CGNAT IPv4 /24s and a fresh /64 of a
//!   carrier IPv6 /48, small volumes, short sessions;
//! - 2 new devices a day, each an initial sync of ~70 MiB in 2 minutes from a never-seen
//!   address (not an attack);
//! - 30 federation servers Synapse connects to: steady transactions, a few backfill bursts a
//!   day (tens to hundreds of MiB over minutes), one more server joining every second day;
//! - viral media moments, the push gateway, URL previews (many small new destinations),
//!   a 2-4 GiB backup to one host at 02:00, loopback traffic and an administrator's ssh.
//!
//! Deterministic: the same scenario, parameters and seed give the same samples.

mod addresses;
mod clients;
mod diurnal;
mod host;
mod rng;
mod scenarios;
mod servers;
#[cfg(test)]
mod tests;

pub use self::{
    addresses::nat,
    scenarios::{Event, MESSAGING, Scenario, Sender, Stream},
};
use self::{clients::Clients, host::Host, servers::Servers};
use crate::flow::{Direction, FlowSample};

pub const MIB: u64 = 1 << 20;
pub const GIB: u64 = 1 << 30;

/// Start of every trace: Monday 2026-06-01 00:00 local (UTC+2), 2026-05-31T22:00:00Z.
pub const START_SECS: i64 = 1_780_272_000 - 2 * 3600;
pub const DAY_SECS: i64 = 86_400;
pub const WINDOW_SECS: i64 = 60;
pub const MINUTES_PER_DAY: u32 = 1440;

/// The `[[services]]` the traces need: nginx and Synapse form one service.
pub const SERVICES_TOML: &str = r#"
[[services]]
name = "messaging"
[[services.match]]
unit = "nginx.service"
[[services.match]]
cmdline = "*synapse.app.homeserver*"
"#;

/// How many of each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Population {
    pub nats: usize,
    pub homes: usize,
    pub mobiles: usize,
    pub new_devices_per_day: usize,
    pub federation: usize,
}

impl Default for Population {
    fn default() -> Self {
        Self {
            nats: 6,
            homes: 300,
            mobiles: 420,
            new_devices_per_day: 2,
            federation: 30,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    /// Days of the trace (day 1 is learning).
    pub days: u32,
    pub seed: u64,
    pub population: Population,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            days: 7,
            seed: 1,
            population: Population::default(),
        }
    }
}

/// Whether day `day` (1 = Monday) is a working day.
pub fn weekday(day: u32) -> bool {
    (day - 1) % 7 < 5
}

/// Unix seconds of trace minute `t`.
pub fn minute_secs(t: u32) -> i64 {
    START_SECS + i64::from(t) * WINDOW_SECS
}

/// Generates `scenario`, window by window, calling `emit` with each window's samples.
pub fn generate(scenario: Scenario, params: &Params, mut emit: impl FnMut(&[FlowSample])) {
    let host = Host::new();
    let event = scenario.event(params);
    let mut clients = Clients::new(params.seed, &params.population);
    let mut servers = Servers::new(params.seed, &params.population);
    let mut batch: Vec<FlowSample> = Vec::with_capacity(512);
    let mut active: Vec<clients::Session> = Vec::with_capacity(256);
    for day in 1..=params.days {
        let weekday = weekday(day);
        let sessions = clients.plan_day(weekday, &servers.nats);
        servers.plan_day(day);
        let mut next = 0;
        active.clear();
        for m in 0..MINUTES_PER_DAY {
            batch.clear();
            let t = (day - 1) * MINUTES_PER_DAY + m;
            let start = minute_secs(t);
            let hour = f64::from(m) / 60.0;
            while next < sessions.len() && sessions[next].start <= m {
                active.push(sessions[next]);
                next += 1;
            }
            active.retain(|s| s.end > m);
            let mut served = 0;
            for i in 0..servers.nats.len() {
                let mut bytes = servers.nat_bytes(i, hour, weekday);
                if let Some((from, to, factor)) = event.as_ref().and_then(|e| e.nat_boost)
                    && (from..to).contains(&t)
                {
                    bytes = (bytes as f64 * factor) as u64;
                }
                served += bytes;
                batch.push(host::sample(
                    &host.nginx[i % host::NGINX_WORKERS],
                    start,
                    servers.nats[i],
                    20_000 + i as u16 * 7,
                    443,
                    bytes,
                    Direction::Served,
                    None,
                ));
            }
            for s in &active {
                let bytes = clients.bytes(s);
                served += bytes;
                batch.push(host::sample(
                    &host.nginx[usize::from(s.worker)],
                    start,
                    s.peer,
                    s.port,
                    443,
                    bytes,
                    Direction::Served,
                    None,
                ));
            }
            servers.minute(&host, t, m, start, weekday, served, &mut batch);
            if let Some(e) = &event {
                for s in e.streams.iter().filter(|s| (s.from..s.to).contains(&t)) {
                    let owner = match s.sender {
                        Sender::Nginx(w) => &host.nginx[usize::from(w) % host::NGINX_WORKERS],
                        Sender::Synapse => &host.synapse,
                        Sender::Curl => &host.curl,
                    };
                    let local = match s.direction {
                        Direction::Served => 443,
                        Direction::Initiated => 44_000,
                    };
                    batch.push(host::sample(
                        owner,
                        start,
                        s.peer,
                        s.port,
                        local,
                        s.rate,
                        s.direction,
                        None,
                    ));
                }
            }
            emit(&batch);
        }
    }
}
