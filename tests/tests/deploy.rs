//! The systemd unit in `deploy/`: its capability set is enough. The agent runs as `nobody`
//! with exactly the unit's ambient capabilities (as `DynamicUser=` + `AmbientCapabilities=`
//! give it), attaches, and attributes another user's traffic to its process with the
//! executable (which needs `CAP_SYS_PTRACE`). And the unit passes `systemd-analyze verify`.

use std::process::Command;

use integration_tests::{Agent, StateDir, agent_bin, traffic_exe, udp_sink};
use monitor::kernel::caps::{CapSet, Capability};

/// A capability by the unit's (setpriv's) name.
fn capability(name: &str) -> Capability {
    *Capability::ALL
        .iter()
        .find(|c| c.name().eq_ignore_ascii_case(&format!("CAP_{name}")))
        .unwrap_or_else(|| panic!("CAP_{name}: not a capability the agent knows of"))
}

/// This process's bounding set: a container or VM may withhold some capabilities even from
/// root (this project's machines withhold `CAP_SYS_RESOURCE`).
fn own_bounding_set() -> CapSet {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    CapSet::from_status_line(&status, "CapBnd:")
}

/// The unit, compiled in (the VM tests have no source tree).
fn unit() -> String {
    include_str!("../../deploy/egress-monitor.service").to_owned()
}

/// The capabilities of `key=` in the unit, as setpriv spells them (`bpf`, `net_admin`...).
fn caps(unit: &str, key: &str) -> Vec<String> {
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in the unit"));
    line.split_whitespace()
        .map(|c| {
            c.strip_prefix("CAP_")
                .unwrap_or_else(|| panic!("{c} in {key}="))
                .to_lowercase()
        })
        .collect()
}

#[test]
fn the_units_capabilities_are_enough_for_an_unprivileged_agent() {
    let unit = unit();
    let ambient = caps(&unit, "AmbientCapabilities");
    assert_eq!(
        ambient,
        caps(&unit, "CapabilityBoundingSet"),
        "bounded to what it is given"
    );
    assert!(
        !ambient.iter().any(|c| c == "sys_admin"),
        "not root in disguise"
    );
    // What this host can give at all; only CAP_SYS_RESOURCE may be missing, and only where
    // BPF memory is charged to the memory cgroup (5.11+) rather than RLIMIT_MEMLOCK.
    let bounding_here = own_bounding_set();
    let (given, withheld): (Vec<&String>, Vec<&String>) = ambient
        .iter()
        .partition(|c| bounding_here.has(capability(c)));
    let release = monitor::kernel::compat::running_release();
    let memcg = monitor::kernel::compat::parse_release(&release) >= Some((5, 11));
    assert!(
        withheld.is_empty() || (withheld == ["sys_resource"] && memcg),
        "this host withholds {withheld:?} on {release}: the test cannot stand for the unit"
    );
    if !withheld.is_empty() {
        println!("this host withholds {withheld:?} even from root: testing without it");
    }
    let list = given
        .iter()
        .map(|c| format!("+{c}"))
        .collect::<Vec<_>>()
        .join(",");
    let bounding = format!("-all,{list}");
    let (inh, amb) = (
        format!("--inh-caps=-all,{list}"),
        format!("--ambient-caps={list}"),
    );
    let state = StateDir::new();
    std::os::unix::fs::chown(state.path(), Some(65534), Some(65534)).expect("chown state dir");
    let wrapper = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        &inh,
        &amb,
        "--bounding-set",
        &bounding,
    ];
    let agent = Agent::start_wrapped(
        &wrapper,
        &["--interval", "200ms", "--state-dir", state.arg()],
    );
    let status = std::fs::read_to_string(format!("/proc/{}/status", agent.pid())).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("Uid:") && l.contains("65534")),
        "the agent runs as nobody: {status}"
    );
    assert_eq!(
        agent.program_ids().len(),
        monitor::kernel::compat::PROGRAMS.len(),
        "every program attached"
    );
    // A root process's datagrams: attributed with its executable (read through
    // /proc/PID/exe of another user, CAP_SYS_PTRACE).
    let sink = udp_sink("127.0.0.1:0");
    let pid = agent.send_udp(sink.local_addr().unwrap(), 10, 200);
    let run = agent.stop();
    assert!(run.status.success(), "{:?}", run.logs);
    let mine: Vec<_> = run
        .samples
        .iter()
        .filter(|s| s.owner.pid == Some(pid))
        .collect();
    assert_eq!(
        mine.iter().map(|s| s.bytes).sum::<u64>(),
        10 * (200 + 28),
        "exact"
    );
    assert!(
        mine.iter()
            .all(|s| s.owner.exe.as_deref() == Some(traffic_exe().as_str())),
        "{mine:?}"
    );
}

/// `systemd-analyze verify` accepts the unit (with the binary's directory filled in as
/// `cargo xtask install` does).
#[test]
fn systemd_accepts_the_unit() {
    // verify loads the unit's default dependencies (sysinit.target...): without systemd's
    // own units (the test VMs carry only the systemd-analyze binary) it cannot judge ours.
    // The host suite, where they exist, runs it.
    if !std::path::Path::new("/usr/lib/systemd/system/sysinit.target").exists() {
        println!("no systemd units here: the unit is verified by the host suite");
        return;
    }
    let dir = std::env::temp_dir().join(format!("egress-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bin_dir = agent_bin().parent().unwrap().to_owned();
    let text = unit().replace("@BINDIR@", bin_dir.to_str().unwrap());
    let path = dir.join("egress-monitor.service");
    std::fs::write(&path, text).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (Debian's systemd package)");
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Outside a systemd-run system verify also reports the host's missing units; only lines
    // about this unit count.
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("egress-monitor.service"))
        .collect();
    assert!(ours.is_empty(), "{stderr}");
}
