//! The people the server serves, as sessions planned a day at a time: home clients (stable-ish
//! addresses, log-normal daily volume, evening peak), phones (a new carrier address every
//! day, small volumes, short sessions), new devices' initial syncs, and viral media moments
//! (many clients, and the users behind the ministries' gateways, pull one file within an
//! hour).

use std::net::IpAddr;

use super::{
    MIB, Population,
    addresses::{
        self, CARRIER_V4_SUBNETS, CARRIER_V6_SUBNETS, CARRIERS, ISP_REGIONS, ISP_SUBNETS, ISPS,
    },
    diurnal,
    host::NGINX_WORKERS,
    rng::Rng,
};

/// What a session is, for the tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Home,
    Mobile,
    NewDevice,
    Viral,
}

/// A client's stay: from minute `start` to `end` (exclusive) of the day, `rate` bytes a
/// minute on average.
#[derive(Clone, Copy, Debug)]
pub struct Session {
    pub start: u32,
    pub end: u32,
    pub peer: IpAddr,
    pub port: u16,
    pub worker: u8,
    pub rate: u64,
    /// Per-minute variation and the occasional media download (off for scripted transfers).
    pub noisy: bool,
    /// Chance of a media download in a minute.
    pub media: f32,
    #[cfg_attr(not(test), expect(dead_code, reason = "the tests tell sessions apart"))]
    pub kind: Kind,
}

struct Home {
    /// Typical daily volume, bytes.
    habit: f64,
    isp: u8,
    v6: Option<(u16, u16)>,
    /// IPv6 privacy addresses: a new interface id every day.
    rotates: bool,
    addr: IpAddr,
}

struct Phone {
    habit: f64,
    carrier: u8,
    v6: bool,
    addr: IpAddr,
}

pub struct Clients {
    rng: Rng,
    homes: Vec<Home>,
    phones: Vec<Phone>,
    new_devices: usize,
}

/// What a client's ordinary use sends it at most a minute, on average (timelines, /sync,
/// thumbnails; media downloads come on top): a heavy day is a long day, not a fast one.
const HOME_RATE: f64 = 3.0 * MIB as f64;
const PHONE_RATE: f64 = 2.0 * MIB as f64;

/// Session lengths long enough for `volume` at `max_rate` at most, and the rate.
fn spread(mut lens: Vec<u32>, volume: f64, max_rate: f64) -> (Vec<u32>, u64) {
    let total = f64::from(lens.iter().sum::<u32>().max(1));
    let stretch = volume / (total * max_rate);
    if stretch > 1.0 {
        for len in &mut lens {
            *len = (f64::from(*len) * stretch).ceil().min(600.0) as u32;
        }
    }
    let total = f64::from(lens.iter().sum::<u32>().max(1));
    (lens, (volume / total) as u64)
}

fn port(rng: &mut Rng) -> u16 {
    rng.range(32_768, 61_000) as u16
}

fn worker(rng: &mut Rng) -> u8 {
    rng.range(0, NGINX_WORKERS as u64) as u8
}

fn home_v4(rng: &mut Rng, isp: u8) -> IpAddr {
    addresses::home_v4(
        isp,
        rng.range(0, u64::from(ISP_SUBNETS)) as u8,
        rng.range(1, 240) as u8,
    )
}

impl Clients {
    pub fn new(seed: u64, p: &Population) -> Self {
        let mut rng = Rng::new(seed, 1);
        let homes = (0..p.homes)
            .map(|i| {
                let isp = rng.range(0, u64::from(ISPS)) as u8;
                // 40 % of households on IPv6.
                let v6 = (i % 5 < 2).then(|| {
                    (
                        rng.range(0, u64::from(ISP_REGIONS)) as u16,
                        rng.range(0, 0x8000) as u16,
                    )
                });
                let addr = match v6 {
                    Some((region, house)) => addresses::home_v6(isp, region, house, rng.next_u64()),
                    None => home_v4(&mut rng, isp),
                };
                Home {
                    habit: rng.log_normal(25.0 * MIB as f64, 0.8),
                    isp,
                    v6,
                    rotates: rng.chance(0.5),
                    addr,
                }
            })
            .collect();
        let phones = (0..p.mobiles)
            .map(|_| Phone {
                habit: rng.log_normal(4.0 * MIB as f64, 1.0),
                carrier: rng.range(0, u64::from(CARRIERS)) as u8,
                v6: rng.chance(0.55),
                addr: addresses::SERVER_V4,
            })
            .collect();
        Self {
            rng,
            homes,
            phones,
            new_devices: p.new_devices_per_day,
        }
    }

    /// A phone's address of the day: a fresh /64 of one of its carrier's /48s, or an address
    /// of one of its carrier's CGNAT /24s.
    fn phone_addr(rng: &mut Rng, carrier: u8, v6: bool) -> IpAddr {
        if v6 {
            addresses::carrier_v6(
                carrier,
                rng.range(0, u64::from(CARRIER_V6_SUBNETS)) as u16,
                rng.range(0, addresses::CARRIER_V6_SUBNETS_USED) as u16,
                rng.next_u64(),
            )
        } else {
            addresses::cgnat(
                carrier,
                rng.range(0, u64::from(CARRIER_V4_SUBNETS)) as u8,
                rng.range(1, addresses::CGNAT_HOSTS) as u8,
            )
        }
    }

    /// Moves addresses to the new day and plans its sessions, sorted by start. `nats` are
    /// the ministries' gateways (their users pull viral media too).
    pub fn plan_day(&mut self, weekday: bool, nats: &[IpAddr]) -> Vec<Session> {
        let mut out = Vec::with_capacity(self.homes.len() * 3 + self.phones.len() * 5);
        let active_homes = self.plan_homes(weekday, &mut out);
        let active_phones = self.plan_phones(&mut out);
        self.plan_new_devices(&mut out);
        // A third of the day's clients are the audience of a viral moment.
        let audience: Vec<(IpAddr, f64)> = active_homes
            .iter()
            .map(|&i| (self.homes[i].addr, 0.35))
            .chain(active_phones.iter().map(|&i| (self.phones[i].addr, 0.3)))
            .collect();
        self.plan_viral(weekday, &audience, nats, &mut out);
        out.sort_by_key(|s| s.start);
        out
    }

    /// Home clients' sessions; returns the clients active today.
    fn plan_homes(&mut self, weekday: bool, out: &mut Vec<Session>) -> Vec<usize> {
        let rng = &mut self.rng;
        let mut active_homes = Vec::new();
        for (i, h) in self.homes.iter_mut().enumerate() {
            match h.v6 {
                Some((region, house)) if h.rotates => {
                    h.addr = addresses::home_v6(h.isp, region, house, rng.next_u64());
                }
                // A DHCP lease now and then goes to another address of the ISP.
                None if rng.chance(0.03) => h.addr = home_v4(rng, h.isp),
                _ => {}
            }
            if !rng.chance(0.85) {
                continue;
            }
            active_homes.push(i);
            let volume = h.habit * rng.log_normal(1.0, 0.5);
            let sessions = 1 + rng.poisson(1.5);
            let lens: Vec<u32> = (0..sessions)
                .map(|_| rng.log_range(5.0, 90.0) as u32)
                .collect();
            let (lens, rate) = spread(lens, volume, HOME_RATE);
            let (port, worker) = (port(rng), worker(rng));
            for len in lens {
                let start = rng.minute_from(|hr| diurnal::home(hr, weekday));
                out.push(Session {
                    start,
                    end: (start + len).min(1440),
                    peer: h.addr,
                    port,
                    worker,
                    rate,
                    noisy: true,
                    media: 0.04,
                    kind: Kind::Home,
                });
            }
        }
        active_homes
    }

    /// Phones' sessions, each on its address of the day; returns the phones active today.
    fn plan_phones(&mut self, out: &mut Vec<Session>) -> Vec<usize> {
        let rng = &mut self.rng;
        let mut active_phones = Vec::new();
        for (i, p) in self.phones.iter_mut().enumerate() {
            p.addr = Self::phone_addr(rng, p.carrier, p.v6);
            if !rng.chance(0.95) {
                continue;
            }
            active_phones.push(i);
            let volume = p.habit * rng.log_normal(1.0, 0.4);
            let sessions = 2 + rng.poisson(3.0);
            let lens: Vec<u32> = (0..sessions).map(|_| rng.range(1, 5) as u32).collect();
            let (lens, rate) = spread(lens, volume, PHONE_RATE);
            let worker = worker(rng);
            for len in lens {
                let start = rng.minute_from(diurnal::mobile);
                out.push(Session {
                    start,
                    end: (start + len).min(1440),
                    peer: p.addr,
                    port: port(rng),
                    worker,
                    rate,
                    noisy: true,
                    media: 0.03,
                    kind: Kind::Mobile,
                });
            }
        }
        active_phones
    }

    fn plan_new_devices(&mut self, out: &mut Vec<Session>) {
        let rng = &mut self.rng;
        // New devices: an initial sync of about 70 MiB in two minutes, from an address never
        // seen: a phone on a fresh carrier /64, or a laptop in an IPv6 household.
        for n in 0..self.new_devices {
            let v6_homes: Vec<&Home> = self.homes.iter().filter(|h| h.v6.is_some()).collect();
            let peer = if n.is_multiple_of(2) && !v6_homes.is_empty() {
                let h = v6_homes[rng.range(0, v6_homes.len() as u64) as usize];
                let (region, house) = h.v6.unwrap_or_default();
                addresses::home_v6(h.isp, region, house, rng.next_u64())
            } else {
                let carrier = rng.range(0, u64::from(CARRIERS)) as u8;
                let v6 = rng.chance(0.55);
                Self::phone_addr(rng, carrier, v6)
            };
            let start = rng.minute_from(|h| if (8.0..22.0).contains(&h) { 1.0 } else { 0.0 });
            let total = rng.uniform(63.0, 77.0) * MIB as f64;
            out.push(Session {
                start,
                end: (start + 2).min(1440),
                peer,
                port: port(rng),
                worker: worker(rng),
                rate: (total / 2.0) as u64,
                noisy: false,
                media: 0.0,
                kind: Kind::NewDevice,
            });
        }
    }

    /// Viral media: each of `audience` (address, chance) may pull it once; the users behind
    /// each gateway too, over the hour.
    fn plan_viral(
        &mut self,
        weekday: bool,
        audience: &[(IpAddr, f64)],
        nats: &[IpAddr],
        out: &mut Vec<Session>,
    ) {
        let rng = &mut self.rng;
        // Viral media: a video everyone opens within the hour.
        for _ in 0..rng.poisson(1.0) {
            let at = rng.minute_from(|h| if (11.0..22.0).contains(&h) { 1.0 } else { 0.0 });
            let size = rng.log_range(4.0, 25.0) * MIB as f64;
            let mut pulls = Vec::new();
            for &(peer, p) in audience {
                if rng.chance(p) {
                    pulls.push(peer);
                }
            }
            for peer in pulls {
                let offset = ((-rng.unit().max(1e-9).ln()) * 12.0).min(59.0) as u32;
                let len = rng.range(1, 3) as u32;
                let start = (at + offset).min(1439);
                out.push(Session {
                    start,
                    end: (start + len).min(1440),
                    peer,
                    port: port(rng),
                    worker: worker(rng),
                    rate: (size / f64::from(len)) as u64,
                    noisy: false,
                    media: 0.0,
                    kind: Kind::Viral,
                });
            }
            let office = diurnal::office(f64::from(at) / 60.0, weekday);
            for (i, &nat) in nats.iter().enumerate() {
                let users = (rng.uniform(5.0, 25.0) * office).round();
                if users < 1.0 {
                    continue;
                }
                out.push(Session {
                    start: at,
                    end: (at + 60).min(1440),
                    peer: nat,
                    port: port(rng),
                    worker: ((i + 1) % NGINX_WORKERS) as u8,
                    rate: (size * users / 60.0) as u64,
                    noisy: false,
                    media: 0.0,
                    kind: Kind::Viral,
                });
            }
        }
    }

    /// A session's bytes in one of its minutes.
    pub fn bytes(&mut self, s: &Session) -> u64 {
        if !s.noisy {
            return s.rate.max(1);
        }
        let rng = &mut self.rng;
        let mut bytes = (s.rate as f64 * rng.uniform(0.4, 1.6)) as u64 + rng.range(2_000, 30_000);
        if rng.chance(f64::from(s.media)) {
            bytes += rng.log_range(100_000.0, 20.0 * MIB as f64) as u64;
        }
        bytes
    }
}
