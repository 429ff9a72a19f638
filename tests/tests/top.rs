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
