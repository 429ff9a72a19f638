//! Alert delivery benchmark (run by `cargo xtask bench`): alert events per second
//!
//! - written to the outbox (`Store::record` in batches of 100, one transaction each: the
//!   cost on the detection path),
//! - delivered by the sink loop to a file sink (OCSF, `fsync = "batch"`),
//! - delivered to a syslog receiver over TCP on loopback (OCSF, octet counting), counted by
//!   the receiver.
//!
//! `delivery_bench [--events N]` prints one JSON object. The state database is in a fresh
//! temporary directory (on the same disk as /tmp), deleted at the end.

use std::{
    io::{BufRead as _, BufReader, Read as _},
    net::TcpListener,
    thread,
    time::Instant,
};

use monitor::{
    config::{Config, Origin},
    detect::alerts::AlertEvent,
    export::{Reporter, delivery::Deliverer, fixtures},
    store::Store,
};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: u32 = args
        .iter()
        .position(|a| a == "--events")
        .and_then(|i| args.get(i + 1))
        .map_or(20_000, |v| v.parse().expect("a number"));

    let dir = std::env::temp_dir().join(format!("egress-delivery-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let events: Vec<AlertEvent> = (0..n)
        .map(|i| {
            let mut e = fixtures::opened();
            e.alert.updates = i;
            e
        })
        .collect();
    let receiver = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = receiver.local_addr().expect("address");
    let counting = thread::spawn(move || count_messages(&receiver, n as usize));

    let config = Config::parse(
        &format!(
            "[[sinks]]\nname = \"file\"\ntype = \"file\"\npath = \"bench.ocsf\"\nformat = \"ocsf\"\n\
             max_size = \"1GiB\"\n\
             [[sinks]]\nname = \"syslog\"\ntype = \"syslog\"\naddress = \"{addr}\"\nformat = \"ocsf\"\n"
        ),
        &Origin::Embedded,
    )
    .expect("config");
    let mut store = Store::open(&dir).expect("store");
    let reporter = Reporter::this_host();
    let mut deliverer = |i: usize| {
        let d = Deliverer::new(&config.sinks[i..=i], &dir, reporter.clone()).expect("sink");
        d.register(&mut store).expect("cursor");
        d
    };
    let (mut file, mut syslog) = (deliverer(0), deliverer(1));

    let started = Instant::now();
    for chunk in events.chunks(100) {
        store.record(chunk, &[]).expect("record");
    }
    let record_secs = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let r = file.round(&mut store, Instant::now()).expect("file round");
    let file_secs = started.elapsed().as_secs_f64();
    assert_eq!(r.delivered, u64::from(n), "file sink delivered everything");

    let started = Instant::now();
    let r = syslog
        .round(&mut store, Instant::now())
        .expect("syslog round");
    let received = counting.join().expect("receiver");
    let syslog_secs = started.elapsed().as_secs_f64();
    assert_eq!(
        r.delivered,
        u64::from(n),
        "syslog sink delivered everything"
    );
    assert_eq!(received, n as usize, "the receiver got everything");

    let file_bytes = std::fs::metadata(dir.join("bench.ocsf")).map_or(0, |m| m.len());
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "{}",
        serde_json::json!({
            "events": n,
            "record_events_per_second": f64::from(n) / record_secs,
            "file_ocsf_fsync_batch_events_per_second": f64::from(n) / file_secs,
            "file_bytes_per_event": file_bytes / u64::from(n),
            "syslog_tcp_ocsf_events_per_second": f64::from(n) / syslog_secs,
        })
    );
}

/// Reads octet-counted messages from one connection until `n` arrived; returns the count.
fn count_messages(listener: &TcpListener, n: usize) -> usize {
    let (stream, _) = listener.accept().expect("accept");
    let mut r = BufReader::with_capacity(1 << 16, stream);
    let mut buf = Vec::new();
    for count in 0..n {
        let mut len = Vec::new();
        if r.read_until(b' ', &mut len).unwrap_or(0) == 0 {
            return count;
        }
        let len: usize = String::from_utf8_lossy(&len)
            .trim()
            .parse()
            .expect("length");
        buf.resize(len, 0);
        r.read_exact(&mut buf).expect("message");
    }
    n
}
