//! `egress-monitor top` on a real kernel: the table names the sending process and its
//! destination, sorted by current rate, and stops after `--iterations` refreshes.

use std::{process::Command, time::Duration};

use integration_tests::{Traffic, agent_bin, require_root, traffic_exe, udp_sink};

#[test]
fn top_shows_the_sender_and_its_destination() {
    require_root();
    let sink = udp_sink("127.0.0.1:0");
    let to = sink.local_addr().unwrap();
    let top = Command::new(agent_bin())
        .args([
            "top",
            "--iterations",
            "4",
            "--interval",
            "500ms",
            "--limit",
            "50",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn top");
    // Let it attach, then send during its refreshes.
    std::thread::sleep(Duration::from_millis(700));
    let mut sender = Traffic::start(&["udp-send", &to.to_string(), "300", "1000"]);
    sender.expect_line("done", Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(600));
    sender.go();
    sender.wait();
    let out = top.wait_with_output().expect("top output");
    assert!(out.status.success(), "top exited with {}", out.status);
    let text = String::from_utf8_lossy(&out.stdout);
    let tables: Vec<&str> = text.split("egress-monitor top:").skip(1).collect();
    assert_eq!(tables.len(), 4, "one table per refresh:\n{text}");
    let dest = format!("127.0.0.1:{}", to.port());
    let row = text
        .lines()
        .find(|l| l.contains(&dest))
        .unwrap_or_else(|| panic!("no row for {dest}:\n{text}"));
    assert!(row.contains("udp"), "{row}");
    // The service column shows the executable's path (truncated from the left).
    let exe = traffic_exe();
    assert!(
        row.contains("traffic[") && exe.ends_with("/traffic"),
        "{row}"
    );
    // 300 datagrams of 1028 IP bytes: 301.2 KiB in total.
    assert!(row.trim_end().ends_with("301.2 KiB"), "{row}");
    assert!(tables[0].contains("SERVICE") && tables[0].contains("RATE/s"));
}
