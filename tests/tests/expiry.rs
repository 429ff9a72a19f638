//! Flows leave the kernel table while traffic goes on, without losing or double-counting a
//! byte: closed sockets after the grace period, idle ones after `--idle-timeout`.

use std::time::Duration;

use integration_tests::{Agent, Traffic, pause, udp_sink};
use monitor::flow::FlowSample;

/// Three waves of 1,000 short-lived sockets, 1.5 s apart, polled every 200 ms: the first
/// waves' flows are removed as closed (final counts read in the same syscall) while the next
/// wave sends; the sum over all windows is exact.
#[test]
fn closed_flows_are_removed_and_nothing_is_lost() {
    let sink = udp_sink("127.0.0.1:0");
    let to = sink.local_addr().unwrap();
    let agent = Agent::start(&["--interval", "200ms"]);
    let mut pids = Vec::new();
    for _ in 0..3 {
        let mut t = Traffic::start(&[
            "udp-send",
            &to.to_string(),
            "1000",
            "300",
            "--socket-per-datagram",
        ]);
        pids.push(t.pid());
        t.expect_line("done", Duration::from_secs(30));
        t.go();
        t.wait();
        pause(Duration::from_millis(1500));
    }
    let run = agent.stop();
    let mine = |s: &FlowSample| {
        s.owner.pid.is_some_and(|p| pids.contains(&p))
            && s.remote.is_some_and(|r| r.port == to.port())
    };
    assert_eq!(run.bytes_where(mine), 3 * 1000 * (300 + 28));
    assert_eq!(run.packets_where(mine), 3000);
    let closed = run.summary()["flows_closed"].as_u64().unwrap();
    assert!(
        closed >= 2000,
        "the first two waves' flows are removed as closed: {closed}"
    );
    assert_eq!(run.summary()["lost_entries"], 0);
}

/// A socket idle longer than `--idle-timeout` is evicted (counted); when it sends again its
/// flow is a new generation and its bytes are reported once more, exactly.
#[test]
fn idle_flows_are_evicted_and_come_back_exactly() {
    let sink = udp_sink("127.0.0.1:0");
    let to = sink.local_addr().unwrap();
    let agent = Agent::start(&["--interval", "200ms", "--idle-timeout", "1s"]);
    let mut t = Traffic::start(&["udp-twice", &to.to_string(), "500", "2500"]);
    let pid = t.pid();
    t.expect_line("first", Duration::from_secs(10));
    t.expect_line("done", Duration::from_secs(10));
    agent.wait_for_sample_of(pid, Duration::from_secs(5));
    pause(Duration::from_millis(400));
    t.go();
    t.wait();
    let run = agent.stop();
    let mine =
        |s: &FlowSample| s.owner.pid == Some(pid) && s.remote.is_some_and(|r| r.port == to.port());
    assert_eq!(run.bytes_where(mine), 2 * (500 + 28));
    assert_eq!(run.packets_where(mine), 2);
    let sends: Vec<_> = run.samples.iter().filter(|s| mine(s)).collect();
    assert_eq!(sends.len(), 2, "one sample per send");
    // The second send is a new flow generation, first seen about 2.5 s after the first.
    let gap = sends[1]
        .first_seen
        .unwrap()
        .duration_since(sends[0].last_seen.unwrap());
    assert!(gap.as_secs_f64() > 2.0, "gap {gap:?}");
    assert!(
        run.summary()["evicted_idle"].as_u64().unwrap() >= 1,
        "{}",
        run.summary()
    );
}
