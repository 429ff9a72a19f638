//! The socket's cgroup names the service: a process in a systemd-style service cgroup is
//! reported with that unit, one in a container-style scope with the container id. Also: with
//! no cgroup v2 mounted, the agent mounts one and works.

use std::{fs, path::PathBuf, process::Command, time::Duration};

use integration_tests::{Agent, Traffic, agent_bin, cgroup2_root, pause, require_root, udp_sink};
use monitor::flow::FlowSample;

/// A cgroup created for the test under the v2 root, removed (once empty) on drop.
struct TestCgroup(PathBuf);

impl TestCgroup {
    fn create(name: &str) -> Self {
        let path = PathBuf::from(cgroup2_root()).join(name);
        fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        Self(path)
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // The helper has exited by now; its cgroup is empty and can go.
        for _ in 0..50 {
            if fs::remove_dir(&self.0).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn send_from_cgroup(name: &str) -> FlowSample {
    let cgroup = TestCgroup::create(name);
    let sink = udp_sink("127.0.0.1:0");
    let to = sink.local_addr().unwrap();
    let agent = Agent::start(&["--interval", "200ms"]);
    let mut t = Traffic::start_in_cgroup(&cgroup.0, &["udp-send", &to.to_string(), "10", "100"]);
    let pid = t.pid();
    t.expect_line("done", Duration::from_secs(10));
    agent.wait_for_sample_of(pid, Duration::from_secs(5));
    t.go();
    t.wait();
    let run = agent.stop();
    let s = run
        .samples
        .iter()
        .find(|s| s.owner.pid == Some(pid) && s.remote.is_some_and(|r| r.port == to.port()))
        .expect("sample of the helper")
        .clone();
    assert_eq!(s.bytes, 10 * 128);
    assert_eq!(s.owner.cgroup.as_deref(), Some(format!("/{name}").as_str()));
    let id = fs::metadata(&cgroup.0)
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .unwrap();
    assert_eq!(
        s.owner.cgroup_id,
        Some(id),
        "cgroup id is the directory's inode"
    );
    s
}

#[test]
fn a_service_cgroup_names_the_unit() {
    require_root();
    let name = format!("egress-test-{}.service", std::process::id());
    let s = send_from_cgroup(&name);
    assert_eq!(s.owner.unit.as_deref(), Some(name.as_str()));
    assert_eq!(s.owner.container_id, None);
    assert_eq!(s.owner.service, name);
}

#[test]
fn a_container_scope_names_the_container() {
    require_root();
    let id = format!("{:064x}", u128::from(std::process::id()) * 7_919);
    let name = format!("docker-{id}.scope");
    let s = send_from_cgroup(&name);
    assert_eq!(s.owner.container_id.as_deref(), Some(id.as_str()));
    assert_eq!(s.owner.service, format!("container:{}", &id[..12]));
}

/// In a mount namespace where no cgroup2 is mounted, the agent mounts one itself (at
/// `--cgroup-mount`), says so, and counts as usual. The host's mounts are untouched.
#[test]
fn without_a_cgroup2_mount_the_agent_mounts_one() {
    require_root();
    let root = cgroup2_root();
    let fallback = std::env::temp_dir().join(format!("egress-cg2-{}", std::process::id()));
    let state = integration_tests::StateDir::new();
    let script = format!(
        "umount {root} && exec {} --log-format json run --output json --interval 200ms --cgroup-mount {} --state-dir {}",
        agent_bin().display(),
        fallback.display(),
        state.arg()
    );
    let child = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("unshare (util-linux)");
    pause(Duration::from_secs(2));
    let sink = udp_sink("127.0.0.1:0");
    let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sender
        .send_to(&[1u8; 100], sink.local_addr().unwrap())
        .unwrap();
    pause(Duration::from_millis(600));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    let _ = fs::remove_dir(&fallback);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "agent failed: {stderr}");
    assert!(
        stderr.contains("no cgroup v2 hierarchy was mounted: mounted one"),
        "{stderr}"
    );
    let me = std::process::id();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let counted: u64 = stdout
        .lines()
        .map(|l| serde_json::from_str::<FlowSample>(l).unwrap())
        .filter(|s| {
            s.owner.pid == Some(me)
                && s.remote
                    .is_some_and(|r| r.port == sink.local_addr().unwrap().port())
        })
        .map(|s| s.bytes)
        .sum();
    assert_eq!(counted, 128, "{stdout}");
}
