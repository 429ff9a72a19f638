//! The delivery loop against a scripted transport: backoff, partial batches, dead letters,
//! the bounded backlog. (Real transports have their own tests.)

use std::{
    collections::VecDeque,
    fs,
    path::PathBuf,
    sync::{Arc, Mutex, atomic::Ordering},
    time::{Duration, Instant},
};

use toml::Spanned;

use super::{
    Reporter,
    delivery::Deliverer,
    fixtures,
    settings::{SinkConfig, default_sinks},
    transport::{Sent, Transport, TransportError},
};
use crate::{
    detect::alerts::AlertEvent,
    store::{Pending, Store},
};

/// What the scripted receiver answers to the next batch.
enum Answer {
    All,
    /// `done` events finished, of which these indexes refused for good.
    Part(usize, Vec<usize>),
    Fail,
}

#[derive(Default)]
struct Script {
    answers: VecDeque<Answer>,
    /// Every batch offered, as the events' `updates` numbers.
    offered: Vec<Vec<u32>>,
    /// What the receiver kept.
    kept: Vec<u32>,
}

struct Scripted(Arc<Mutex<Script>>);

impl Transport for Scripted {
    fn target(&self) -> String {
        "scripted".into()
    }

    fn send(&mut self, batch: &[Pending], _: &Reporter) -> Result<Sent, TransportError> {
        let mut s = self.0.lock().unwrap();
        let numbers: Vec<u32> = batch
            .iter()
            .map(|p| p.event.alert().unwrap().alert.updates)
            .collect();
        s.offered.push(numbers.clone());
        match s.answers.pop_front().unwrap_or(Answer::All) {
            Answer::All => {
                s.kept.extend(numbers);
                Ok(Sent::all(batch))
            }
            Answer::Part(done, refused) => {
                for (i, n) in numbers[..done].iter().enumerate() {
                    if !refused.contains(&i) {
                        s.kept.push(*n);
                    }
                }
                Ok(Sent {
                    done,
                    rejected: refused
                        .into_iter()
                        .map(|i| (i, "mapping error".into()))
                        .collect(),
                })
            }
            Answer::Fail => Err(TransportError::Refused("503 busy".into())),
        }
    }
}

struct Setup {
    deliverer: Deliverer,
    store: Store,
    script: Arc<Mutex<Script>>,
    dir: PathBuf,
}

fn setup(name: &str, batch: u32, max_backlog: u64, answers: Vec<Answer>) -> Setup {
    let dir = std::env::temp_dir().join(format!("egress-delivery-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let mut config: SinkConfig = default_sinks().remove(0);
    config.name = Spanned::new(0..0, "siem".into());
    config.batch_max = Spanned::new(0..0, batch);
    config.max_backlog = Spanned::new(0..0, max_backlog);
    let script = Arc::new(Mutex::new(Script {
        answers: answers.into(),
        ..Script::default()
    }));
    let transport: Box<dyn Transport> = Box::new(Scripted(Arc::clone(&script)));
    let deliverer = Deliverer::with_transports([(&config, transport)], &dir, fixtures::reporter());
    let mut store = Store::in_memory().unwrap();
    deliverer.register(&mut store).unwrap();
    Setup {
        deliverer,
        store,
        script,
        dir,
    }
}

fn record(store: &mut Store, numbers: std::ops::Range<u32>) {
    let events: Vec<AlertEvent> = numbers
        .map(|n| {
            let mut e = fixtures::opened();
            e.alert.updates = n;
            e
        })
        .collect();
    store.record(&events, &[]).unwrap();
}

#[test]
fn a_failing_sink_backs_off_then_delivers_everything_in_order() {
    let mut s = setup("backoff", 500, 1000, vec![Answer::Fail, Answer::Fail]);
    record(&mut s.store, 0..4);
    let t0 = Instant::now();
    let r = s.deliverer.round(&mut s.store, t0).unwrap();
    assert_eq!((r.delivered, r.failed_sinks), (0, 1));
    // Backing off (at least half of `retry_initial` = 1 s): no attempt now.
    s.deliverer.round(&mut s.store, t0).unwrap();
    assert_eq!(
        s.script.lock().unwrap().offered.len(),
        1,
        "no retry during the backoff"
    );
    record(&mut s.store, 4..6);
    // Second failure: the delay doubles (1 to 2 s), so 0.9 s later is still too early.
    s.deliverer
        .round(&mut s.store, t0 + Duration::from_secs(1))
        .unwrap();
    assert_eq!(s.script.lock().unwrap().offered.len(), 2);
    s.deliverer
        .round(&mut s.store, t0 + Duration::from_millis(1900))
        .unwrap();
    assert_eq!(s.script.lock().unwrap().offered.len(), 2, "second backoff");
    let r = s
        .deliverer
        .round(&mut s.store, t0 + Duration::from_secs(3))
        .unwrap();
    assert_eq!(r.delivered, 6);
    let script = s.script.lock().unwrap();
    assert_eq!(
        script.kept,
        (0..6).collect::<Vec<_>>(),
        "all, in order, once"
    );
    let counters = &s.deliverer.counters()[0].1;
    assert_eq!(counters.failures.load(Ordering::Relaxed), 2);
    assert_eq!(counters.delivered.load(Ordering::Relaxed), 6);
    assert_eq!(counters.backlog.load(Ordering::Relaxed), 0);
    fs::remove_dir_all(&s.dir).unwrap();
}

#[test]
fn a_partial_batch_resumes_at_the_first_undone_event_and_refusals_go_to_dead_letters() {
    // Batches of 5: the receiver finishes 3 (refusing the 2nd for good), the rest is retried.
    let mut s = setup("partial", 5, 1000, vec![Answer::Part(3, vec![1])]);
    record(&mut s.store, 0..7);
    let t0 = Instant::now();
    let r = s.deliverer.round(&mut s.store, t0).unwrap();
    assert_eq!((r.delivered, r.rejected, r.failed_sinks), (2, 1, 1));
    assert_eq!(s.store.backlog("siem").unwrap(), 4);
    let r = s
        .deliverer
        .round(&mut s.store, t0 + Duration::from_secs(5))
        .unwrap();
    assert_eq!(r.delivered, 4);
    let script = s.script.lock().unwrap();
    assert_eq!(
        script.offered[1],
        vec![3, 4, 5, 6],
        "resumed after the done part"
    );
    assert_eq!(script.kept, vec![0, 2, 3, 4, 5, 6]);
    let dead = fs::read_to_string(s.dir.join("dead-letter/siem.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = dead
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["reason"], "mapping error");
    assert_eq!(lines[0]["event"]["alert"]["updates"], 1);
    let back: AlertEvent = serde_json::from_value(lines[0]["event"].clone()).unwrap();
    assert_eq!(
        lines[0]["event_id"],
        super::event_id(&back).to_string(),
        "the event id receivers deduplicate on"
    );
    assert_eq!(
        s.deliverer.counters()[0].1.rejected.load(Ordering::Relaxed),
        1
    );
    fs::remove_dir_all(&s.dir).unwrap();
}

#[test]
fn an_unwritable_dead_letter_file_keeps_the_batch_queued() {
    let mut s = setup("dead-letter-fails", 5, 1000, vec![Answer::Part(2, vec![0])]);
    fs::write(s.dir.join("dead-letter"), "a file where the directory goes").unwrap();
    record(&mut s.store, 0..2);
    let r = s.deliverer.round(&mut s.store, Instant::now()).unwrap();
    assert_eq!((r.delivered, r.failed_sinks), (0, 1));
    assert_eq!(s.store.backlog("siem").unwrap(), 2, "nothing lost");
    fs::remove_dir_all(&s.dir).unwrap();
}

#[test]
fn a_full_backlog_drops_the_oldest_counted_and_delivers_the_newest() {
    let mut s = setup("bounded", 5, 5, vec![Answer::Fail]);
    record(&mut s.store, 0..3);
    let t0 = Instant::now();
    s.deliverer.round(&mut s.store, t0).unwrap();
    record(&mut s.store, 3..12);
    let r = s.deliverer.round(&mut s.store, t0).unwrap();
    assert_eq!(r.dropped, 7, "12 queued, 5 kept");
    let counters = Arc::clone(&s.deliverer.counters()[0].1);
    assert_eq!(counters.dropped.load(Ordering::Relaxed), 7);
    assert_eq!(counters.backlog.load(Ordering::Relaxed), 5);
    s.deliverer
        .round(&mut s.store, t0 + Duration::from_secs(5))
        .unwrap();
    assert_eq!(s.script.lock().unwrap().kept, vec![7, 8, 9, 10, 11]);
    assert_eq!(
        s.store
            .list_alerts(&crate::store::AlertFilter::default())
            .unwrap()
            .len(),
        1,
        "skipped events stay in the alert history"
    );
    fs::remove_dir_all(&s.dir).unwrap();
}
