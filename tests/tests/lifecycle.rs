//! Sockets older than the agent, a full flow table, and clean detach on SIGTERM.

use std::{process::Command, time::Duration};

use integration_tests::{
    Agent, Traffic, cgroup_attached_ids, cgroup2_root, deadline, left_behind, loaded_program_ids,
    pause, traffic_exe, udp_sink,
};
use monitor::flow::{Attribution, FlowSample, UntrackedReason};

/// A connection set up before the agent started has no owner in socket storage: it is
/// attributed through `sock_diag` (cookie -> inode) and /proc/*/fd.
#[test]
fn socket_created_before_the_agent_is_attributed() {
    const N: u64 = 2 * 1024 * 1024;
    let mut t = Traffic::start(&["pre-existing", &N.to_string()]);
    let port: u16 = t.expect_line("ready", Duration::from_secs(10))[1]
        .parse()
        .unwrap();
    let pid = t.pid();
    let agent = Agent::start(&["--interval", "200ms"]);
    t.go();
    t.expect_line("done", Duration::from_secs(30));
    let server = |s: &FlowSample| s.local.is_some_and(|l| l.port == port);
    let deadline = deadline(Duration::from_secs(10));
    while !agent.samples_so_far().iter().any(server) {
        assert!(
            std::time::Instant::now() < deadline,
            "no sample of the pre-existing socket"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    t.go();
    t.wait();
    let run = agent.stop();
    let counted = run.bytes_where(server);
    assert!(counted >= N, "counted {counted} < {N}");
    let s = run.samples.iter().find(|s| server(s)).expect("sample");
    let snapshot = run.logs.iter().find(|l| {
        l["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("owners of pre-existing sockets"))
    });
    assert_eq!(
        s.owner.attribution,
        Attribution::SockDiag,
        "{s:?}\nstart-up snapshot: {snapshot:?}"
    );
    assert_eq!(s.owner.pid, Some(pid));
    assert_eq!(s.owner.exe.as_deref(), Some(traffic_exe().as_str()));
    assert_eq!(s.owner.uid, Some(0));
}

/// More live flows than the kernel table holds: the overflow is counted (`map_full`) and its
/// bytes are still reported, as unattributed volume; the agent keeps running.
#[test]
fn a_full_flow_table_counts_overflow_and_loses_no_byte() {
    const SOCKETS: u64 = 300;
    const SIZE: u64 = 200;
    let sink = udp_sink("127.0.0.1:0");
    let to = sink.local_addr().unwrap();
    let agent = Agent::start(&["--interval", "200ms", "--max-flows", "64"]);
    let mut t = Traffic::start(&[
        "hold-udp",
        &to.to_string(),
        &SOCKETS.to_string(),
        &SIZE.to_string(),
    ]);
    let pid = t.pid();
    t.expect_line("sent", Duration::from_secs(30));
    pause(Duration::from_millis(600));
    assert!(
        agent
            .samples_so_far()
            .iter()
            .any(|s| s.untracked == Some(UntrackedReason::MapFull)),
        "overflow reported while running"
    );
    t.go();
    t.expect_line("done", Duration::from_secs(10));
    t.wait();
    let run = agent.stop();
    assert!(run.status.success());
    let per_socket = run
        .bytes_where(|s| s.owner.pid == Some(pid) && s.remote.is_some_and(|r| r.port == to.port()));
    let overflow = run.bytes_where(|s| s.untracked == Some(UntrackedReason::MapFull));
    let map_full = run.kernel_error("map_full");
    assert!(map_full > 0, "map_full must be counted");
    // The kernel program logged the first occurrence (aya-log), once per CPU at most.
    let kernel_warnings = run
        .logs
        .iter()
        .filter(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.contains("first map_full error on this CPU"))
        })
        .count();
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    assert!(
        (1..=cpus).contains(&kernel_warnings),
        "{kernel_warnings} kernel warnings: {:?}",
        run.logs
    );
    assert!(
        per_socket < SOCKETS * (SIZE + 28),
        "some sockets must have overflowed"
    );
    // Other processes may overflow too while the table is full, so overflow >= ours.
    assert!(
        per_socket + overflow >= SOCKETS * (SIZE + 28),
        "lost bytes: {per_socket} + {overflow}"
    );
}

/// SIGTERM detaches every program: none of the agent's programs is loaded (`bpftool prog`)
/// or attached to the cgroup root (`BPF_PROG_QUERY`) afterwards, all of the table's (the optional ones included) were while it ran.
#[test]
fn sigterm_detaches_every_program() {
    let root = cgroup2_root();
    let agent = Agent::start(&["--interval", "200ms"]);
    let ids = agent.program_ids();
    assert_eq!(
        ids.len(),
        monitor::kernel::compat::PROGRAMS.len(),
        "every program (TCP direction and passive DNS included): {ids:?}"
    );
    let loaded = loaded_program_ids();
    let attached = cgroup_attached_ids(&root);
    for id in &ids {
        assert!(
            loaded.contains(id),
            "program {id} should be loaded while the agent runs"
        );
        assert!(
            attached.contains(id),
            "program {id} should be attached to {root}"
        );
    }
    let run = agent.stop();
    assert!(run.status.success(), "exit status {}", run.status);
    let loaded = loaded_program_ids();
    let attached = cgroup_attached_ids(&root);
    for id in &ids {
        assert!(
            !loaded.contains(id),
            "program {id} still loaded after SIGTERM"
        );
        assert!(
            !attached.contains(id),
            "program {id} still attached to {root} after SIGTERM"
        );
    }
    assert_eq!(run.summary()["signal"], "SIGTERM");
}

/// Ctrl-C (SIGINT) stops the agent as cleanly as SIGTERM: last poll, detach, exit 0.
#[test]
fn sigint_detaches_every_program() {
    stops_cleanly_on(nix::sys::signal::Signal::SIGINT);
}

fn stops_cleanly_on(signal: nix::sys::signal::Signal) {
    let root = cgroup2_root();
    let agent = Agent::start(&["--interval", "200ms"]);
    let ids = agent.program_ids();
    agent.signal(signal);
    let run = agent.stop_after_kill();
    assert!(run.status.success(), "exit status {}", run.status);
    assert_eq!(run.summary()["signal"], signal.as_str());
    let left = left_behind(&ids, &root);
    assert!(left.is_empty(), "{left:?} of {ids:?} left behind");
}

/// SIGKILL leaves nothing behind either (the `bpf_link` fds die
/// with the process).
#[test]
fn sigkill_leaves_no_program_attached() {
    let root = cgroup2_root();
    let agent = Agent::start(&["--interval", "200ms"]);
    let ids = agent.program_ids();
    agent.signal(nix::sys::signal::Signal::SIGKILL);
    let _ = agent.stop_after_kill();
    // Program teardown after the last fd closes is asynchronous (RCU): give it a moment.
    let deadline = deadline(Duration::from_secs(10));
    while !left_behind(&ids, &root).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "programs {ids:?} still present after SIGKILL"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Without privileges the agent says, in one line, which capability is missing.
#[test]
fn unprivileged_run_names_the_missing_capability() {
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .arg(integration_tests::agent_bin())
        .args(["run", "--output", "json"])
        .output()
        .expect("setpriv (util-linux)");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.contains("missing capability CAP_BPF"), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
}

/// A configuration file sets the agent's parameters (here the poll interval and the flow
/// table size), and a bad one is refused with the file, line and key, before anything loads.
#[test]
fn a_config_file_sets_the_agent_and_a_bad_one_is_refused() {
    let dir = std::env::temp_dir();
    let good = dir.join(format!("egress-config-{}.toml", std::process::id()));
    std::fs::write(&good, "[agent]\ninterval = \"300ms\"\nmax_flows = 512\n").unwrap();
    let agent = Agent::start(&["--config", good.to_str().unwrap()]);
    let attach = agent.attach_log();
    assert_eq!(attach["max_flows"], 512, "{attach}");
    assert_eq!(attach["interval"], "300ms", "{attach}");
    let run = agent.stop();
    assert!(run.status.success());

    let bad = dir.join(format!("egress-config-bad-{}.toml", std::process::id()));
    std::fs::write(&bad, "[agent]\n# comment\nmax_flows = -3\n").unwrap();
    let out = Command::new(integration_tests::agent_bin())
        .args(["--config", bad.to_str().unwrap(), "run"])
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&good);
    let _ = std::fs::remove_file(&bad);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("config {}:3:", bad.display()))
            && stderr.contains("agent.max_flows"),
        "{stderr}"
    );
}
