//! `egress-monitor top` on a real kernel: the table names the sending process and its
//! destination, sorted by current rate, and stops after `--iterations` refreshes.

use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
    sync::mpsc,
    thread,
    time::Duration,
};

use integration_tests::{Traffic, agent_bin, require_root, scaled, udp_sink};

#[test]
fn top_shows_the_sender_and_its_destination() {
    require_root();
    let sink = udp_sink("127.0.0.1:0");
    let to = sink.local_addr().unwrap();
    let mut top = Command::new(agent_bin())
        .args([
            "top",
            "--iterations",
            "5",
            "--interval",
            "500ms",
            "--limit",
            "50",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn top");
    let stdout = top.stdout.take().expect("stdout");
    let (tx, lines) = mpsc::channel();
    let reader = thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // Send only once top has attached and shown its first table.
    let first = lines
        .recv_timeout(scaled(Duration::from_secs(30)))
        .expect("first table");
    assert!(first.starts_with("egress-monitor top:"), "{first}");
    let mut sender = Traffic::start(&["udp-send", &to.to_string(), "300", "1000"]);
    sender.expect_line("done", Duration::from_secs(30));
    let status = top.wait().expect("top exits after its iterations");
    sender.go();
    sender.wait();
    reader.join().expect("reader");
    assert!(status.success(), "top exited with {status}");
    let text: Vec<String> = std::iter::once(first).chain(lines.try_iter()).collect();
    let tables = text
        .iter()
        .filter(|l| l.starts_with("egress-monitor top:"))
        .count();
    assert_eq!(tables, 5, "one table per refresh:\n{}", text.join("\n"));
    assert!(
        text[1].starts_with("SERVICE") && text[1].contains("RATE/s"),
        "{}",
        text[1]
    );
    let dest = format!("127.0.0.1:{}", to.port());
    let row = text
        .iter()
        .rfind(|l| l.contains(&dest))
        .unwrap_or_else(|| panic!("no row for {dest}:\n{}", text.join("\n")));
    assert!(row.contains("udp") && row.contains("traffic["), "{row}");
    // 300 datagrams of 1000 bytes + 28 of headers: 301.2 KiB in total.
    assert!(row.trim_end().ends_with("301.2 KiB"), "{row}");
}

/// SIGHUP (its terminal closed) stops `top` cleanly: exit 0, every program detached. The
/// agent (`run`) reloads its configuration on SIGHUP instead (`reload.rs`).
#[test]
fn top_stops_cleanly_on_sighup() {
    require_root();
    let root = integration_tests::cgroup2_root();
    let others = integration_tests::cgroup_attached_ids(&root);
    let mut top = Command::new(agent_bin())
        .args(["top", "--interval", "300ms"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn top");
    let stdout = top.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().expect("first table").expect("read");
    assert!(first.starts_with("egress-monitor top:"), "{first}");
    let tops: Vec<u32> = integration_tests::cgroup_attached_ids(&root)
        .into_iter()
        .filter(|id| !others.contains(id))
        .collect();
    assert!(!tops.is_empty(), "top attached its programs");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(top.id() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .expect("SIGHUP");
    let reader = thread::spawn(move || lines.count());
    let deadline = integration_tests::deadline(Duration::from_secs(20));
    let status = loop {
        if let Some(status) = top.try_wait().expect("wait top") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = top.kill();
            let _ = top.wait();
            panic!("top still running 20 s after SIGHUP");
        }
        thread::sleep(Duration::from_millis(50));
    };
    reader.join().expect("reader");
    assert!(status.success(), "top exited with {status}");
    let after = integration_tests::cgroup_attached_ids(&root);
    let left: Vec<&u32> = tops.iter().filter(|id| after.contains(id)).collect();
    assert!(
        left.is_empty(),
        "programs {left:?} of top's {tops:?} still attached"
    );
}
