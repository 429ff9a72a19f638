//! The scenario's users, each a host of its own (its own 127.0.0.x source address): the
//! normal population, who sync, read recent messages, look at a few thumbnails and
//! sometimes post, with pauses, from the learning period to the end; and the attacker, a
//! hijacked account logging in from a new address and pulling the room's whole history and
//! every media file.

use std::{
    net::{IpAddr, Ipv4Addr},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, ensure};
use serde_json::json;

use super::{
    client::{self, Session},
    latency::Latencies,
    source_addr::{self, Counters},
};

/// Every request of a client gives up after this long (a restart, an overloaded server):
/// also the bound on how long a client takes to notice it must stop.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What all normal clients share.
pub struct World {
    /// nginx: what clients use.
    pub base: String,
    pub room: String,
    /// Every image in the room (clients scroll back and look at some).
    pub media: Vec<String>,
}

/// What one normal client did, updated as it goes.
#[derive(Debug, Default)]
pub struct Stats {
    pub ok: AtomicU64,
    pub errors: AtomicU64,
    pub logins: AtomicU64,
    /// Source addresses used (1 for a client that never roams).
    pub addresses: AtomicU64,
    pub posts: AtomicU64,
    pub thumbnails: AtomicU64,
}

impl Stats {
    fn add(n: &AtomicU64) {
        n.fetch_add(1, Ordering::Relaxed);
    }
}

/// A running normal client.
pub struct Client {
    pub addr: Ipv4Addr,
    pub user: String,
    pub counters: Arc<Counters>,
    pub stats: Arc<Stats>,
    handle: thread::JoinHandle<()>,
}

/// The normal population; stops (and waits for) every client on [`Population::stop`] or
/// when dropped.
pub struct Population {
    pub clients: Vec<Client>,
    /// Every client's requests, per phase of the run.
    pub latencies: Arc<Latencies>,
    stop: Arc<AtomicBool>,
}

/// One client's login: an existing account and its password.
pub struct Account {
    pub user: String,
    pub password: String,
}

impl Population {
    /// Every client from its own address; with `roam_every`, each moves to a new address
    /// (and logs in again) about that often, as mobile clients do.
    pub fn start(
        world: &Arc<World>,
        hosts: Vec<(Ipv4Addr, Account)>,
        roam_every: Option<Duration>,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let latencies = Arc::new(Latencies::default());
        let clients = hosts
            .into_iter()
            .enumerate()
            .map(|(i, (addr, account))| {
                let counters = Arc::new(Counters::default());
                let stats = Arc::new(Stats::default());
                let (world, stop, s) = (Arc::clone(world), Arc::clone(&stop), Arc::clone(&stats));
                let l = Arc::clone(&latencies);
                let c = Arc::clone(&counters);
                let user = account.user.clone();
                let handle = thread::Builder::new()
                    .name(format!("client-{addr}"))
                    .spawn(move || {
                        let host = Host {
                            index: i,
                            first: addr,
                            roam_every,
                            counters: c,
                        };
                        let seed = i as u64 + 100;
                        normal_client(&world, &host, &account, (&s, &l), &stop, seed);
                    })
                    .expect("spawning a client thread");
                Client {
                    addr,
                    user,
                    counters,
                    stats,
                    handle,
                }
            })
            .collect();
        Self {
            clients,
            latencies,
            stop,
        }
    }

    /// Bytes all clients received so far.
    pub fn received(&self) -> u64 {
        self.clients.iter().map(|c| c.counters.received()).sum()
    }

    /// Successful rounds of each client so far.
    pub fn ok_counts(&self) -> Vec<u64> {
        self.clients
            .iter()
            .map(|c| c.stats.ok.load(Ordering::Relaxed))
            .collect()
    }

    pub fn errors(&self) -> u64 {
        self.clients
            .iter()
            .map(|c| c.stats.errors.load(Ordering::Relaxed))
            .sum()
    }

    /// Asks every client to stop and waits for them (each within its request timeout).
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for c in std::mem::take(&mut self.clients) {
            let _ = c.handle.join();
        }
    }
}

impl Drop for Population {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sleeps `d` in short steps; false as soon as `stop` is set.
fn pause(d: Duration, stop: &AtomicBool) -> bool {
    let until = Instant::now() + d;
    while Instant::now() < until {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        thread::sleep(Duration::from_millis(50).min(until - Instant::now()));
    }
    !stop.load(Ordering::Relaxed)
}

/// Where a client is: its first address, and whether and how often it moves.
struct Host {
    index: usize,
    first: Ipv4Addr,
    roam_every: Option<Duration>,
    counters: Arc<Counters>,
}

/// The `k`-th address (from 1) a roaming client `index` moves to: 127.1.(index+1).x, a
/// /24 of its own (one carrier's pool), never an address of the fixed clients or attackers
/// (127.0.0.x).
pub fn roaming_addr(index: usize, k: u64) -> Ipv4Addr {
    let octet = |n: u64| u8::try_from(n).unwrap_or(u8::MAX);
    Ipv4Addr::new(
        127,
        1,
        octet(index as u64 % 250 + 1),
        octet((k - 1) % 250 + 1),
    )
}

/// After this many failed rounds in a row, log in again (a server that lost the session).
const RELOGIN_AFTER: u32 = 5;

/// One ordinary user's client until `stop`: log in, then rounds of sync, recent messages,
/// sometimes thumbnails, rarely a post, 1-3 s apart. Errors (the servers restarting) are
/// counted and retried after a short pause.
fn normal_client(
    world: &World,
    host: &Host,
    account: &Account,
    (stats, latencies): (&Stats, &Latencies),
    stop: &AtomicBool,
    seed: u64,
) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut agent =
        source_addr::agent_counting(IpAddr::V4(host.first), REQUEST_TIMEOUT, &host.counters);
    Stats::add(&stats.addresses);
    let mut moves = 0;
    // Each stay lasts `roam_every` +- 30 %.
    let stay = |rng: &mut fastrand::Rng| host.roam_every.map(|d| d.mul_f64(0.7 + 0.6 * rng.f64()));
    let mut moved_at = Instant::now();
    let mut stay_for = stay(&mut rng);
    let mut session: Option<Session> = None;
    let mut since: Option<String> = None;
    let mut failed_in_a_row = 0;
    while !stop.load(Ordering::Relaxed) {
        if stay_for.is_some_and(|d| moved_at.elapsed() >= d) {
            // A new network: a new address, a new connection, a new login.
            moves += 1;
            let addr = roaming_addr(host.index, moves);
            agent = source_addr::agent_counting(IpAddr::V4(addr), REQUEST_TIMEOUT, &host.counters);
            Stats::add(&stats.addresses);
            session = None;
            moved_at = Instant::now();
            stay_for = stay(&mut rng);
        }
        if session.is_none() {
            let t = Instant::now();
            if let Ok(token) = client::login(&agent, &world.base, &account.user, &account.password)
            {
                latencies.ok(t.elapsed());
                Stats::add(&stats.logins);
                session = Some(Session::with_agent(agent.clone(), &world.base, token));
            } else {
                latencies.failed();
                Stats::add(&stats.errors);
                pause(Duration::from_millis(500), stop);
                continue;
            }
        }
        let Some(s) = session.as_mut() else { continue };
        if round(world, s, &mut since, &mut rng, (stats, latencies)).is_ok() {
            Stats::add(&stats.ok);
            failed_in_a_row = 0;
        } else {
            latencies.failed();
            Stats::add(&stats.errors);
            failed_in_a_row += 1;
            if failed_in_a_row >= RELOGIN_AFTER {
                session = None;
                since = None;
                failed_in_a_row = 0;
            }
            pause(Duration::from_millis(500), stop);
            continue;
        }
        pause(Duration::from_millis(rng.u64(1000..=3000)), stop);
    }
}

/// Runs one request, filing its latency when it succeeds (a failure is filed by the caller,
/// once per failed round).
fn timed<T>(latencies: &Latencies, request: impl FnOnce() -> Result<T>) -> Result<T> {
    let t = Instant::now();
    let out = request()?;
    latencies.ok(t.elapsed());
    Ok(out)
}

fn round(
    world: &World,
    s: &mut Session,
    since: &mut Option<String>,
    rng: &mut fastrand::Rng,
    (stats, latencies): (&Stats, &Latencies),
) -> Result<()> {
    // Clients long-poll; a short wait keeps the stop prompt. Its time is the server's wait
    // for news, not its speed: not filed as a latency (its failure still is).
    let (sync, _) = s.sync(since.as_deref(), 1000)?;
    *since = sync["next_batch"].as_str().map(str::to_owned);
    timed(latencies, || s.messages_page(&world.room, None, 20))?;
    if !world.media.is_empty() && rng.bool() {
        for _ in 0..rng.usize(1..=3) {
            let mxc = &world.media[rng.usize(..world.media.len())];
            timed(latencies, || s.thumbnail(mxc, 320, 240))?;
            Stats::add(&stats.thumbnails);
        }
    }
    if rng.u8(..10) == 0 {
        let body = format!("still here ({})", rng.u32(..));
        timed(latencies, || {
            s.send_message(&world.room, &json!({"msgtype": "m.text", "body": body}))
        })?;
        Stats::add(&stats.posts);
    }
    Ok(())
}

/// What the attacker did.
pub struct Attack {
    pub secs: f64,
    pub pages: usize,
    pub page_bytes: u64,
    pub media: usize,
    pub media_bytes: u64,
    /// Image downloads, repeats included.
    pub downloads: usize,
    /// Whether it read the whole history and every image at least once before its deadline.
    pub complete: bool,
    /// TCP payload received and sent (headers included): what nginx really sent it.
    pub received: u64,
    pub sent: u64,
    /// (Unix ms, bytes received so far), every [`TIMELINE_STEP`] and at the end.
    pub timeline: Vec<(i64, u64)>,
}

/// Page size of the attacker's `/messages` (Synapse's maximum).
const PAGE: u32 = 1000;
/// How often the attacker's received bytes are sampled.
pub const TIMELINE_STEP: Duration = Duration::from_millis(250);

/// The hijacked account from a new host: logs in, pages the room to its start, downloads
/// every image it found; with `persist`, then downloads them again and again until
/// `deadline` (an attacker who keeps pulling whatever the server gives). Stops at
/// `deadline` whatever it has (a throttled attacker does not finish: `complete` says so).
pub fn attack(
    base: &str,
    room: &str,
    addr: Ipv4Addr,
    account: &Account,
    deadline: Duration,
    persist: bool,
) -> Result<Attack> {
    let started = Instant::now();
    let (agent, counters) = source_addr::agent_from(IpAddr::V4(addr), REQUEST_TIMEOUT);
    let done = AtomicBool::new(false);
    thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            let mut timeline = Vec::new();
            while !done.load(Ordering::Relaxed) {
                timeline.push((super::watch::now_ms(), counters.received()));
                thread::sleep(TIMELINE_STEP);
            }
            timeline
        });
        let pulled = pull(base, room, &agent, account, (started, deadline), persist);
        done.store(true, Ordering::Relaxed);
        let mut timeline = sampler
            .join()
            .map_err(|_| anyhow::anyhow!("the attacker's sampler panicked"))?;
        timeline.push((super::watch::now_ms(), counters.received()));
        let p = pulled?;
        Ok(Attack {
            secs: started.elapsed().as_secs_f64(),
            pages: p.pages,
            page_bytes: p.page_bytes,
            media: p.media,
            media_bytes: p.media_bytes,
            downloads: p.downloads,
            complete: p.complete,
            received: counters.received(),
            sent: counters.sent(),
            timeline,
        })
    })
}

#[derive(Default)]
struct Pulled {
    pages: usize,
    page_bytes: u64,
    media: usize,
    media_bytes: u64,
    downloads: usize,
    complete: bool,
}

fn pull(
    base: &str,
    room: &str,
    agent: &ureq::Agent,
    account: &Account,
    (started, deadline): (Instant, Duration),
    persist: bool,
) -> Result<Pulled> {
    let token = client::login(agent, base, &account.user, &account.password)
        .context("the attacker's login")?;
    let s = Session::with_agent(agent.clone(), base, token);
    let history = match s.whole_history(room, PAGE, started, deadline) {
        Ok(h) => h,
        Err(_) if started.elapsed() >= deadline => return Ok(Pulled::default()),
        Err(e) => return Err(e),
    };
    let media = history.images();
    let mut p = Pulled {
        pages: history.pages,
        page_bytes: history.bytes,
        media: media.len(),
        ..Pulled::default()
    };
    while started.elapsed() < deadline && !media.is_empty() {
        p.media_bytes += s.download(&media[p.downloads % media.len()])?;
        p.downloads += 1;
        if p.downloads == media.len() {
            p.complete = true;
            if !persist {
                break;
            }
        }
    }
    p.complete |= media.is_empty();
    Ok(p)
}

/// What the patient attacker did.
#[derive(Debug, Default, serde::Serialize)]
pub struct Patient {
    pub secs: f64,
    pub downloads: usize,
    pub received: u64,
    /// The most it received in any 60 s (what a 1-minute bar sees).
    pub max_minute: u64,
    /// The download that failed before its alert came, if one did (a containment aimed at
    /// another peer throttling it, or the server failing it): the run's report and verdict
    /// say so instead of the whole run stopping there.
    pub cut_short: Option<String>,
}

/// A second hijacked account from a new host that pulls the room's media over and over,
/// paced to `per_minute` bytes a minute (under every 1-minute bar), until `stop` is set or
/// `deadline` passes.
pub fn patient_attack(
    world: &World,
    addr: Ipv4Addr,
    account: &Account,
    per_minute: u64,
    deadline: Duration,
    stop: &AtomicBool,
) -> Result<Patient> {
    ensure!(!world.media.is_empty(), "no media to pull");
    let started = Instant::now();
    let (agent, counters) = source_addr::agent_from(IpAddr::V4(addr), REQUEST_TIMEOUT);
    let token = client::login(&agent, &world.base, &account.user, &account.password)
        .context("the patient attacker's login")?;
    let s = Session::with_agent(agent, &world.base, token);
    let mut arrivals: Vec<(Instant, u64)> = Vec::new();
    let mut next = 0;
    let mut cut_short = None;
    while started.elapsed() < deadline && !stop.load(Ordering::Relaxed) {
        // Paced: never ahead of `per_minute` x the time so far.
        let allowed = per_minute as f64 * started.elapsed().as_secs_f64() / 60.0;
        if counters.received() as f64 > allowed {
            thread::sleep(Duration::from_millis(100));
            continue;
        }
        let before = counters.received();
        if let Err(e) = s.download(&world.media[next % world.media.len()]) {
            // Once told to stop (its alert came), a download cut short is the containment's
            // doing in `enforce` (a throttled paced flow restarts on TCP's timers): the end.
            if !stop.load(Ordering::Relaxed) {
                cut_short = Some(format!("{e:#}"));
            }
            break;
        }
        next += 1;
        arrivals.push((Instant::now(), counters.received() - before));
    }
    Ok(Patient {
        secs: started.elapsed().as_secs_f64(),
        downloads: next,
        received: counters.received(),
        max_minute: max_in_window(&arrivals, Duration::from_secs(60)),
        cut_short,
    })
}

/// The largest sum of `bytes` arriving within any `window` (a sliding window).
fn max_in_window(arrivals: &[(Instant, u64)], window: Duration) -> u64 {
    let (mut best, mut sum, mut first) = (0, 0, 0);
    for &(at, bytes) in arrivals {
        sum += bytes;
        while at.duration_since(arrivals[first].0) >= window {
            sum -= arrivals[first].1;
            first += 1;
        }
        best = best.max(sum);
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roaming_addresses_are_new_and_never_the_fixed_hosts() {
        let a: Vec<Ipv4Addr> = (1..=300).map(|k| roaming_addr(3, k)).collect();
        assert_eq!(a[0], Ipv4Addr::new(127, 1, 4, 1));
        assert_eq!(
            a.iter()
                .take(250)
                .collect::<std::collections::HashSet<_>>()
                .len(),
            250
        );
        assert!(
            a.iter()
                .all(|x| x.octets()[..3] == [127, 1, 4] && x.octets()[3] != 0)
        );
        assert_ne!(roaming_addr(0, 1), roaming_addr(1, 1));
    }

    #[test]
    fn the_busiest_minute_is_a_sliding_window() {
        let t = Instant::now();
        let s = |secs: u64| t + Duration::from_secs(secs);
        let arrivals = [
            (s(0), 10),
            (s(30), 10),
            (s(59), 10),
            (s(61), 50),
            (s(200), 5),
        ];
        // 30..61 holds 10 + 10 + 50.
        assert_eq!(max_in_window(&arrivals, Duration::from_secs(60)), 70);
        assert_eq!(max_in_window(&[], Duration::from_secs(60)), 0);
    }
}
