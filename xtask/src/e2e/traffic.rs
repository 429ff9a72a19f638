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
    stop: Arc<AtomicBool>,
}

/// One client's login: an existing account and its password.
pub struct Account {
    pub user: String,
    pub password: String,
}

impl Population {
    pub fn start(world: &Arc<World>, hosts: Vec<(Ipv4Addr, Account)>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let clients = hosts
            .into_iter()
            .enumerate()
            .map(|(i, (addr, account))| {
                let (agent, counters) = source_addr::agent_from(IpAddr::V4(addr), REQUEST_TIMEOUT);
                let stats = Arc::new(Stats::default());
                let (world, stop, s) = (Arc::clone(world), Arc::clone(&stop), Arc::clone(&stats));
                let user = account.user.clone();
                let handle = thread::Builder::new()
                    .name(format!("client-{addr}"))
                    .spawn(move || {
                        normal_client(&world, &agent, &account, &s, &stop, i as u64 + 100);
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
        Self { clients, stop }
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

/// After this many failed rounds in a row, log in again (a server that lost the session).
const RELOGIN_AFTER: u32 = 5;

/// One ordinary user's client until `stop`: log in, then rounds of sync, recent messages,
/// sometimes thumbnails, rarely a post, 1-3 s apart. Errors (the servers restarting) are
/// counted and retried after a short pause.
fn normal_client(
    world: &World,
    agent: &ureq::Agent,
    account: &Account,
    stats: &Stats,
    stop: &AtomicBool,
    seed: u64,
) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut session: Option<Session> = None;
    let mut since: Option<String> = None;
    let mut failed_in_a_row = 0;
    while !stop.load(Ordering::Relaxed) {
        if session.is_none() {
            if let Ok(token) = client::login(agent, &world.base, &account.user, &account.password) {
                Stats::add(&stats.logins);
                session = Some(Session::with_agent(agent.clone(), &world.base, token));
            } else {
                Stats::add(&stats.errors);
                pause(Duration::from_millis(500), stop);
                continue;
            }
        }
        let Some(s) = session.as_mut() else { continue };
        if round(world, s, &mut since, &mut rng, stats).is_ok() {
            Stats::add(&stats.ok);
            failed_in_a_row = 0;
        } else {
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

fn round(
    world: &World,
    s: &mut Session,
    since: &mut Option<String>,
    rng: &mut fastrand::Rng,
    stats: &Stats,
) -> Result<()> {
    // Clients long-poll; a short wait keeps the stop prompt.
    let (sync, _) = s.sync(since.as_deref(), 1000)?;
    *since = sync["next_batch"].as_str().map(str::to_owned);
    s.messages_page(&world.room, None, 20)?;
    if !world.media.is_empty() && rng.bool() {
        for _ in 0..rng.usize(1..=3) {
            let mxc = &world.media[rng.usize(..world.media.len())];
            s.thumbnail(mxc, 320, 240)?;
            Stats::add(&stats.thumbnails);
        }
    }
    if rng.u8(..10) == 0 {
        s.send_message(
            &world.room,
            &json!({"msgtype": "m.text", "body": format!("still here ({})", rng.u32(..))}),
        )?;
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
    /// TCP payload received and sent (headers included): what nginx really sent it.
    pub received: u64,
    pub sent: u64,
}

/// Page size of the attacker's `/messages` (Synapse's maximum).
const PAGE: u32 = 1000;

/// The hijacked account from a new host: logs in, pages the room to its start, downloads
/// every image it found; within `deadline`.
pub fn attack(
    base: &str,
    room: &str,
    addr: Ipv4Addr,
    account: &Account,
    deadline: Duration,
) -> Result<Attack> {
    let started = Instant::now();
    let (agent, counters) = source_addr::agent_from(IpAddr::V4(addr), REQUEST_TIMEOUT);
    let token = client::login(&agent, base, &account.user, &account.password)
        .context("the attacker's login")?;
    let s = Session::with_agent(agent, base, token);
    let history = s.whole_history(room, PAGE, started, deadline)?;
    let media = history.images();
    let mut media_bytes = 0;
    for mxc in &media {
        ensure!(
            started.elapsed() < deadline,
            "media not downloaded in {deadline:?}"
        );
        media_bytes += s.download(mxc)?;
    }
    Ok(Attack {
        secs: started.elapsed().as_secs_f64(),
        pages: history.pages,
        page_bytes: history.bytes,
        media: media.len(),
        media_bytes,
        received: counters.received(),
        sent: counters.sent(),
    })
}
