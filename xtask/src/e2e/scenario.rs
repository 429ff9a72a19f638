//! The scenario's two clients: the population (users, a public room, text messages and
//! images, several senders at once) and the "attacker" who joins and reads everything back
//! (the Tchap pattern: `/messages` to the room's start, then every media file).

use std::{
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::json;

use super::{
    client::{self, Session},
    media,
};

/// How much to write.
#[derive(Clone, Copy)]
pub struct Amounts {
    pub users: usize,
    pub messages: usize,
    pub media: usize,
    pub media_min: usize,
    pub media_max: usize,
}

pub struct Population {
    pub room: String,
    pub secs: f64,
    pub message_secs: f64,
    pub media_secs: f64,
    pub media_bytes: u64,
    pub messages: usize,
    pub media: usize,
    /// The `mxc://` URI of every image posted (what normal clients look at).
    pub media_uris: Vec<String>,
}

const WORDS: [&str; 24] = [
    "the",
    "meeting",
    "is",
    "moved",
    "to",
    "tomorrow",
    "please",
    "review",
    "draft",
    "budget",
    "minister",
    "office",
    "report",
    "attached",
    "confidential",
    "agenda",
    "call",
    "at",
    "ten",
    "thanks",
    "see",
    "notes",
    "update",
    "ok",
];

fn sentence(rng: &mut fastrand::Rng) -> String {
    let n = rng.usize(3..40);
    (0..n)
        .map(|_| WORDS[rng.usize(..WORDS.len())])
        .collect::<Vec<_>>()
        .join(" ")
}

/// Registers `users` senders, makes a public room, and has every sender post its share of
/// the messages, then of the images, all senders at once.
pub fn populate(base: &str, admin_base: &str, secret: &str, a: Amounts) -> Result<Population> {
    ensure!(a.users > 0, "at least one user");
    let agent = client::agent();
    let started = Instant::now();
    let mut sessions = Vec::new();
    for i in 0..a.users {
        let token = client::register(
            &agent,
            admin_base,
            secret,
            &format!("user{i}"),
            &format!("pw-user{i}-e2e"),
        )?;
        sessions.push(Session::new(base, token));
    }
    let room = sessions[0].create_public_room("e2e public room")?;
    for s in &sessions[1..] {
        s.join(&room)?;
    }
    eprintln!("    {} users registered, room {room}", a.users);

    let t = Instant::now();
    run_senders(&mut sessions, a.messages, |s, i, rng| {
        s.send_message(
            &room,
            &json!({"msgtype": "m.text", "body": format!("{i}: {}", sentence(rng))}),
        )
        .map(|_| 0)
    })?;
    let message_secs = t.elapsed().as_secs_f64();
    eprintln!(
        "    {} messages in {message_secs:.1} s ({:.0}/s)",
        a.messages,
        a.messages as f64 / message_secs
    );

    let mut rng = fastrand::Rng::with_seed(0xe2e);
    let sizes = media::sizes(&mut rng, a.media, a.media_min, a.media_max);
    let t = Instant::now();
    let uris = std::sync::Mutex::new(Vec::with_capacity(a.media));
    let media_bytes = run_senders(&mut sessions, a.media, |s, i, rng| {
        let (png, w, h) = media::noise_png(rng, sizes[i]);
        let name = format!("IMG_{i:05}.png");
        let mxc = s.upload(&name, "image/png", &png)?;
        uris.lock()
            .map_err(|_| anyhow::anyhow!("a sender panicked"))?
            .push(mxc.clone());
        s.send_message(
            &room,
            &json!({"msgtype": "m.image", "body": name, "url": mxc,
                    "info": {"mimetype": "image/png", "size": png.len(), "w": w, "h": h}}),
        )?;
        Ok(png.len() as u64)
    })?;
    let media_secs = t.elapsed().as_secs_f64();
    eprintln!(
        "    {} images, {:.1} MB, in {media_secs:.1} s ({:.1} MB/s, generation included)",
        a.media,
        media_bytes as f64 / 1e6,
        media_bytes as f64 / 1e6 / media_secs
    );
    Ok(Population {
        room,
        secs: started.elapsed().as_secs_f64(),
        message_secs,
        media_secs,
        media_bytes,
        messages: a.messages,
        media: a.media,
        media_uris: uris
            .into_inner()
            .map_err(|_| anyhow::anyhow!("a sender panicked"))?,
    })
}

/// Runs `count` jobs spread round-robin over the sessions, one thread per session; job `i`
/// gets its index and the thread's generator. Returns the sum of what the jobs returned.
fn run_senders<F>(sessions: &mut [Session], count: usize, job: F) -> Result<u64>
where
    F: Fn(&mut Session, usize, &mut fastrand::Rng) -> Result<u64> + Sync,
{
    let n = sessions.len();
    let job = &job;
    thread::scope(|scope| {
        let handles: Vec<_> = sessions
            .iter_mut()
            .enumerate()
            .map(|(k, s)| {
                scope.spawn(move || -> Result<u64> {
                    let mut rng = fastrand::Rng::with_seed(k as u64 + 1);
                    let mut sum = 0;
                    for i in (k..count).step_by(n) {
                        sum += job(s, i, &mut rng).with_context(|| format!("job {i}"))?;
                        if k == 0 && i > 0 && i % 500 < n {
                            eprintln!("    ... {i}/{count}");
                        }
                    }
                    Ok(sum)
                })
            })
            .collect();
        let mut total = 0;
        for h in handles {
            match h.join() {
                Ok(r) => total += r?,
                Err(_) => bail!("a sender thread panicked"),
            }
        }
        Ok(total)
    })
}

pub struct ReadBack {
    pub secs: f64,
    pub pages: usize,
    pub page_bytes: u64,
    pub text_events: usize,
    pub image_events: usize,
    pub media_bytes: u64,
    pub media_secs: f64,
}

/// Page size asked of `/messages` (Synapse serves up to this many events per page).
const PAGE: u32 = 1000;
/// Bounds of the read-back: pages and time.
const MAX_PAGES: usize = 10_000;
const DEADLINE: Duration = Duration::from_secs(900);

/// A newly registered user joins the public room, pages through its whole history backwards
/// and downloads every image, all through the proxy.
pub fn read_back(base: &str, admin_base: &str, secret: &str, room: &str) -> Result<ReadBack> {
    let started = Instant::now();
    let token = client::register(
        &client::agent(),
        admin_base,
        secret,
        "reader",
        "pw-reader-e2e",
    )?;
    let s = Session::new(base, token);
    s.join(room)?;
    let history = s.whole_history(room, PAGE, started, DEADLINE)?;
    ensure!(
        history.pages <= MAX_PAGES,
        "history not read in {MAX_PAGES} pages"
    );
    let (pages, page_bytes) = (history.pages, history.bytes);
    let texts = history.messages("m.text").count();
    let media = history.images();
    eprintln!(
        "    history: {pages} pages, {:.1} MB, {texts} texts, {} images",
        page_bytes as f64 / 1e6,
        media.len()
    );
    let t = Instant::now();
    let mut media_bytes = 0;
    for mxc in &media {
        ensure!(started.elapsed() < DEADLINE, "media not read in bounds");
        media_bytes += s.download(mxc)?;
    }
    Ok(ReadBack {
        secs: started.elapsed().as_secs_f64(),
        pages,
        page_bytes,
        text_events: texts,
        image_events: media.len(),
        media_bytes,
        media_secs: t.elapsed().as_secs_f64(),
    })
}
