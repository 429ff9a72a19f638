//! Syslog receivers that misbehave: one that accepts and never reads (the sender's buffers
//! fill up and the write times out), one that closes every connection at once. Each is a
//! clear error, the events stay queued, and nothing panics.

use std::{
    net::TcpListener,
    sync::{Arc, atomic::Ordering},
    thread,
    time::{Duration, Instant},
};

use super::{
    delivery::Deliverer,
    fixtures,
    syslog::Framing,
    syslog_sink::{Protocol, SyslogSink},
};
use crate::{
    config::{Config, Origin},
    detect::alerts::AlertEvent,
    store::Store,
};

fn deliverer(addr: std::net::SocketAddr, batch: u32) -> (Deliverer, Store) {
    let config = Config::parse(
        &format!(
            "[[sinks]]\nname = \"soc\"\ntype = \"syslog\"\naddress = \"{addr}\"\nformat = \
             \"ocsf\"\nbatch_max = {batch}\n"
        ),
        &Origin::Embedded,
    )
    .unwrap();
    let d = Deliverer::new(&config.sinks, &std::env::temp_dir(), fixtures::reporter()).unwrap();
    let mut store = Store::in_memory().unwrap();
    d.register(&mut store).unwrap();
    (d, store)
}

fn events(n: u32) -> Vec<AlertEvent> {
    (0..n)
        .map(|i| {
            let mut e = fixtures::opened();
            e.alert.updates = i;
            e
        })
        .collect()
}

#[test]
fn a_receiver_that_never_reads_times_out_and_keeps_the_events() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // Accepts, then holds the connection without reading, longer than the test waits.
    let (release, released) = std::sync::mpsc::channel::<()>();
    let holder = thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        let _ = released.recv_timeout(Duration::from_secs(30));
        drop(conn);
    });
    // 30 MB of messages: far more than loopback buffers hold.
    let mut sink = SyslogSink::new(addr.to_string(), Protocol::Tcp, Framing::OctetCounting);
    let messages = vec!["x".repeat(10_000); 3000];
    let started = Instant::now();
    let e = sink.send(&messages).unwrap_err();
    let took = started.elapsed();
    release.send(()).unwrap();
    holder.join().unwrap();
    assert!(
        matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        "{e}"
    );
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(15),
        "the write timeout (5 s) ends it: {took:?}"
    );

    // Through the delivery loop: the failure is counted and the events stay queued.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let holder = thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        let _ = released.recv_timeout(Duration::from_secs(60));
        drop(conn);
    });
    let (mut d, mut store) = deliverer(addr, 10_000);
    store.record(&events(10_000), &[]).unwrap();
    let r = d.round(&mut store, Instant::now()).unwrap();
    release.send(()).unwrap();
    holder.join().unwrap();
    assert_eq!((r.delivered, r.failed_sinks), (0, 1));
    assert_eq!(store.backlog("soc").unwrap(), 10_000, "all still queued");
    let counters = Arc::clone(&d.counters()[0].1);
    assert_eq!(counters.failures.load(Ordering::Relaxed), 1);
}

#[test]
fn a_receiver_that_hangs_up_at_once_is_an_error_not_a_crash() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let closer = thread::spawn(move || {
        for _ in 0..3 {
            let Ok((conn, _)) = listener.accept() else {
                return;
            };
            // Closed with nothing read: the sender's data is answered with a reset.
            drop(conn);
        }
    });
    let (mut d, mut store) = deliverer(addr, 500);
    store.record(&events(2000), &[]).unwrap();
    let later = Instant::now() + Duration::from_secs(3600);
    let mut failed = 0;
    for i in 0..3u32 {
        // Each round after the backoff: reconnects, writes into a reset connection.
        let r = d
            .round(&mut store, later + Duration::from_secs(u64::from(i) * 3600))
            .unwrap();
        failed += r.failed_sinks;
    }
    assert!(failed >= 1, "a reset connection is reported");
    assert!(
        store.backlog("soc").unwrap() > 0,
        "undelivered events stay queued"
    );
    closer.join().unwrap();
}
