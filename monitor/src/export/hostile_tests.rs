//! A syslog receiver that closes every connection at once: a clear error, the events stay
//! queued, nothing panics. (One that never reads, or reads a trickle, is bounded by the
//! batch deadline: `deadline`'s tests.)

use std::{
    net::TcpListener,
    thread,
    time::{Duration, Instant},
};

use super::{delivery::Deliverer, fixtures};
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
