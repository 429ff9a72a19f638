//! Harness for the kernel integration tests: runs the real `egress-monitor` binary (as CI and
//! users do), collects the `FlowSample`s it prints and its JSON logs, and drives the `traffic`
//! helper process. Tests need root; `cargo xtask test` runs them with `--test-threads=1`
//! because every agent attaches to the same cgroup root.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::UdpSocket,
    path::PathBuf,
    process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex, mpsc},
    thread,
    time::{Duration, Instant},
};

use monitor::flow::FlowSample;
use serde_json::Value;

mod bpf_syscall;
pub mod bpf_test_run;
pub mod dns;
pub mod downloads;
pub mod exclusive_attach;
pub mod prog_query;
pub mod time;

pub use time::{deadline, pause, scaled};

/// Detection settings for tests: loopback (`internal` by default) treated as the outside
/// world, rule 1 at 1 MiB per minute, rules 2 to 5 off so that only rule 1 can speak. The
/// learning period is the test's.
pub fn rule_1_only(learning_period: &str) -> String {
    format!(
        r#"
[detect]
learning_period = "{learning_period}"
[destinations]
internal = []
[rules.unknown_volume]
1m = "1MiB"
[rules.peer_outlier]
enabled = false
[rules.service_baseline]
enabled = false
[rules.new_destinations]
enabled = false
[rules.slow_drip]
enabled = false
"#
    )
}

/// The agent binary: `EGRESS_MONITOR_BIN` (set by `cargo xtask test`), else the release build.
pub fn agent_bin() -> PathBuf {
    let bin = std::env::var_os("EGRESS_MONITOR_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/egress-monitor"),
        PathBuf::from,
    );
    assert!(
        bin.exists(),
        "agent binary {} missing: run `cargo xtask test`",
        bin.display()
    );
    bin
}

pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "kernel integration tests need root: run them through `cargo xtask test` as root"
    );
}

/// A state directory for one agent run, removed when dropped.
pub struct StateDir(PathBuf);

impl StateDir {
    pub fn new() -> Self {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("egress-monitor-it-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create state dir");
        Self(dir)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }

    pub fn arg(&self) -> &str {
        self.0.to_str().expect("utf-8 temp dir")
    }
}

impl Default for StateDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running agent.
pub struct Agent {
    child: Child,
    /// The state directory the agent was given when the test did not choose one.
    _state: Option<StateDir>,
    samples: Arc<Mutex<Vec<FlowSample>>>,
    /// Stdout lines when the test chose `--output` itself (e.g. `none` with a stdout sink).
    stdout: Arc<Mutex<Vec<String>>>,
    raw_stdout: bool,
    logs: Arc<Mutex<Vec<Value>>>,
    readers: Vec<thread::JoinHandle<()>>,
}

/// What an agent printed, after it stopped.
pub struct Finished {
    pub status: ExitStatus,
    pub samples: Vec<FlowSample>,
    pub logs: Vec<Value>,
}

impl Agent {
    /// Starts `egress-monitor run --output json` with `extra` arguments and waits until its
    /// programs are attached. Without `--state-dir` in `extra`, the agent gets a fresh state
    /// directory of its own (never the host's /var/lib/egress-monitor). With `--output` in
    /// `extra`, stdout is kept as lines ([`Self::stdout_so_far`]) instead of samples.
    pub fn start(extra: &[&str]) -> Self {
        Self::start_wrapped(&[], extra)
    }

    /// Like [`Self::start`], the agent run through `wrapper` (a command that execs its
    /// arguments, such as `setpriv ...`: the agent keeps the wrapper's pid).
    pub fn start_wrapped(wrapper: &[&str], extra: &[&str]) -> Self {
        require_root();
        let state = (!extra.contains(&"--state-dir")).then(StateDir::new);
        let state_args: Vec<&str> = state
            .as_ref()
            .map(|s| vec!["--state-dir", s.arg()])
            .unwrap_or_default();
        let raw_stdout = extra.contains(&"--output");
        let output: &[&str] = if raw_stdout {
            &[]
        } else {
            &["--output", "json"]
        };
        let mut command = match wrapper {
            [program, args @ ..] => {
                let mut c = Command::new(program);
                c.args(args).arg(agent_bin());
                c
            }
            [] => Command::new(agent_bin()),
        };
        // `--log FILTER` among `extra` replaces the default `info` (given once: clap refuses
        // it twice).
        let (log, extra) = match extra.iter().position(|a| *a == "--log") {
            Some(i) if i + 1 < extra.len() => {
                (extra[i + 1], [&extra[..i], &extra[i + 2..]].concat())
            }
            _ => ("info", extra.to_vec()),
        };
        let mut child = command
            .args(["--log-format", "json", "--log", log, "run"])
            .args(output)
            .args(&extra)
            .args(&state_args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn egress-monitor");
        let samples = Arc::new(Mutex::new(Vec::new()));
        let logs = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let s = samples.clone();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let raw = lines.clone();
        let out_reader = thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let line = line.expect("agent stdout");
                if raw_stdout {
                    raw.lock().unwrap().push(line);
                    continue;
                }
                let sample: FlowSample = serde_json::from_str(&line).unwrap_or_else(|e| {
                    panic!("agent printed a line that is not a FlowSample ({e}): {line}")
                });
                s.lock().unwrap().push(sample);
            }
        });
        let l = logs.clone();
        let err_reader = thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let line = line.expect("agent stderr");
                // Anything that is not a JSON log line (a panic message) is kept as text.
                let v = match serde_json::from_str(&line) {
                    Ok(v) => v,
                    Err(_) => Value::String(line),
                };
                l.lock().unwrap().push(v);
            }
        });
        let mut agent = Self {
            child,
            _state: state,
            samples,
            stdout: lines,
            raw_stdout,
            logs,
            readers: vec![out_reader, err_reader],
        };
        agent.wait_for_log("attached: counting egress", Duration::from_secs(30));
        agent
    }

    /// Stdout lines so far (with `--output` chosen by the test).
    pub fn stdout_so_far(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    /// Log lines so far.
    pub fn logs_so_far(&self) -> Vec<Value> {
        self.logs.lock().unwrap().clone()
    }

    /// Waits until a log line satisfies `f`; returns it.
    pub fn wait_for_log_where(&self, timeout: Duration, f: impl Fn(&Value) -> bool) -> Value {
        let timeout = scaled(timeout);
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.logs.lock().unwrap().iter().find(|l| f(l)) {
                return l.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no matching log line within {timeout:?}: {:?}",
                self.logs.lock().unwrap()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_for_log(&mut self, message: &str, timeout: Duration) {
        let timeout = scaled(timeout);
        let deadline = Instant::now() + timeout;
        loop {
            if self
                .logs
                .lock()
                .unwrap()
                .iter()
                .any(|l| l["message"] == message)
            {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                thread::sleep(Duration::from_millis(100));
                panic!(
                    "agent exited ({status}) before {message:?}; stderr: {:?}",
                    self.logs.lock().unwrap()
                );
            }
            assert!(
                Instant::now() < deadline,
                "agent did not log {message:?} within {timeout:?}: {:?}",
                self.logs.lock().unwrap()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The agent's start-up log line (it carries the settings in effect).
    pub fn attach_log(&self) -> Value {
        let logs = self.logs.lock().unwrap();
        logs.iter()
            .find(|l| l["message"] == "attached: counting egress")
            .cloned()
            .expect("attach log")
    }

    /// Kernel ids of the programs the agent attached (from its start-up log).
    pub fn program_ids(&self) -> Vec<u32> {
        let logs = self.logs.lock().unwrap();
        let line = logs
            .iter()
            .find(|l| l["message"] == "attached: counting egress")
            .expect("attach log");
        let text = line["programs"].as_str().expect("programs field");
        text.trim_matches(|c| c == '[' || c == ']')
            .split(',')
            .map(|s| s.trim().parse().expect("program id"))
            .collect()
    }

    /// Waits (at most `timeout`) until the agent has printed a sample owned by `pid`.
    pub fn wait_for_sample_of(&self, pid: u32, timeout: Duration) {
        let timeout = scaled(timeout);
        let deadline = Instant::now() + timeout;
        while !self
            .samples
            .lock()
            .unwrap()
            .iter()
            .any(|s| s.owner.pid == Some(pid))
        {
            assert!(
                Instant::now() < deadline,
                "no sample of pid {pid} within {timeout:?}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (at most `timeout`) until the agent has printed a sample that `matches`; returns
    /// the first one.
    pub fn wait_for_sample(
        &self,
        what: &str,
        matches: impl Fn(&FlowSample) -> bool,
        timeout: Duration,
    ) -> FlowSample {
        let timeout = scaled(timeout);
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.samples.lock().unwrap().iter().find(|s| matches(s)) {
                return s.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no sample {what} within {timeout:?}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Samples printed so far.
    pub fn samples_so_far(&self) -> Vec<FlowSample> {
        self.samples.lock().unwrap().clone()
    }

    /// Starts the agent polling every 200 ms with `config` (written into `state`'s directory,
    /// which it keeps its state in), plus `extra` arguments.
    pub fn start_with_config(state: &StateDir, config: &str, extra: &[&str]) -> Self {
        let path = state.path().join("config.toml");
        std::fs::write(&path, config).expect("write the test configuration");
        let mut args = vec![
            "--config",
            path.to_str().expect("a UTF-8 path"),
            "--interval",
            "200ms",
            "--state-dir",
            state.arg(),
        ];
        args.extend_from_slice(extra);
        Self::start(&args)
    }

    /// Has the traffic helper send `count` datagrams of `size` bytes to `to`, and waits until
    /// the agent reported the sender while it is alive (a process read from /proc after it
    /// exited has no executable, hence another service identity); without samples on stdout,
    /// for 800 ms. Returns the sender's pid.
    pub fn send_udp(&self, to: std::net::SocketAddr, count: u64, size: u64) -> u32 {
        let mut sender = Traffic::start(&[
            "udp-send",
            &to.to_string(),
            &count.to_string(),
            &size.to_string(),
        ]);
        let pid = sender.pid();
        sender.expect_line("done", Duration::from_secs(60));
        if self.raw_stdout {
            // No samples to wait for: a few polls (the tests poll every 200 ms) see it alive.
            pause(Duration::from_millis(800));
        } else {
            self.wait_for_sample_of(pid, Duration::from_secs(10));
        }
        sender.go();
        sender.wait();
        pid
    }

    /// SIGTERM, then wait (at most 20 s) for the agent to exit and its output to end.
    pub fn stop(self) -> Finished {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("SIGTERM");
        self.wait_exit()
    }

    /// Sends `signal` to the agent (use [`Self::stop_after_kill`] to collect it).
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), signal)
            .expect("signal the agent");
    }

    /// Waits for an agent that was killed some other way.
    pub fn stop_after_kill(self) -> Finished {
        self.wait_exit()
    }

    fn wait_exit(mut self) -> Finished {
        let limit = scaled(Duration::from_secs(20));
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("agent did not exit within {limit:?} of SIGTERM");
            }
            thread::sleep(Duration::from_millis(20));
        };
        for r in self.readers.drain(..) {
            r.join().expect("reader thread");
        }
        Finished {
            status,
            samples: std::mem::take(&mut *self.samples.lock().unwrap()),
            logs: std::mem::take(&mut *self.logs.lock().unwrap()),
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // A failing test must not leave an agent (and its programs) behind.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Finished {
    pub fn bytes_where(&self, f: impl Fn(&FlowSample) -> bool) -> u64 {
        self.samples.iter().filter(|s| f(s)).map(|s| s.bytes).sum()
    }

    pub fn packets_where(&self, f: impl Fn(&FlowSample) -> bool) -> u64 {
        self.samples
            .iter()
            .filter(|s| f(s))
            .map(|s| s.packets)
            .sum()
    }

    /// The shutdown summary the agent logs after detaching.
    pub fn summary(&self) -> &Value {
        self.logs
            .iter()
            .find(|l| l["message"] == "detached all programs; stopped")
            .unwrap_or_else(|| panic!("no shutdown summary in logs: {:?}", self.logs))
    }

    /// The passive DNS counters of the shutdown summary (`answers`, `learned`, ...).
    pub fn dns_stats(&self) -> Value {
        let text = self.summary()["dns"].as_str().expect("dns stats");
        serde_json::from_str(text).expect("dns stats JSON")
    }

    pub fn kernel_error(&self, name: &str) -> u64 {
        let text = self.summary()["kernel_errors"]
            .as_str()
            .expect("kernel_errors");
        let v: Value = serde_json::from_str(text).expect("kernel_errors JSON");
        v[name]
            .as_u64()
            .unwrap_or_else(|| panic!("no kernel error {name} in {text}"))
    }
}

/// The traffic helper process.
pub struct Traffic {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl Traffic {
    pub fn start(args: &[&str]) -> Self {
        Self::spawn(Command::new(Self::exe()).args(args))
    }

    /// Starts the helper inside the cgroup v2 directory `cgroup` (it moves itself there
    /// before `exec`, so every socket it creates belongs to that cgroup).
    pub fn start_in_cgroup(cgroup: &std::path::Path, args: &[&str]) -> Self {
        use std::os::unix::process::CommandExt as _;
        let procs = cgroup.join("cgroup.procs");
        let mut cmd = Command::new(Self::exe());
        cmd.args(args);
        // SAFETY: the closure only writes "0" (this process) to a path built before fork.
        unsafe {
            cmd.pre_exec(move || std::fs::write(&procs, b"0"));
        }
        Self::spawn(&mut cmd)
    }

    fn spawn(cmd: &mut Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn traffic helper");
        let stdin = child.stdin.take();
        let stdout: ChildStdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            stdin,
            lines,
        }
    }

    /// The helper binary, built by cargo next to the test binaries (`target/<profile>/`;
    /// tests run from `target/<profile>/deps/`).
    pub fn exe() -> PathBuf {
        let test_exe = std::env::current_exe().expect("current exe");
        let profile_dir = test_exe
            .parent()
            .and_then(std::path::Path::parent)
            .expect("target dir");
        let exe = profile_dir.join("traffic");
        assert!(
            exe.exists(),
            "traffic helper {} missing (cargo builds it with the tests)",
            exe.display()
        );
        exe
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Next line the helper printed, split in words, failing the test after `timeout`.
    pub fn expect_line(&self, prefix: &str, timeout: Duration) -> Vec<String> {
        let timeout = scaled(timeout);
        let line = self.lines.recv_timeout(timeout).unwrap_or_else(|e| {
            panic!("traffic helper printed no {prefix:?} line within {timeout:?}: {e}")
        });
        assert!(
            line.starts_with(prefix),
            "expected {prefix:?} from the traffic helper, got {line:?}"
        );
        line.split_whitespace().map(str::to_owned).collect()
    }

    pub fn go(&mut self) {
        let stdin = self.stdin.as_mut().expect("stdin");
        writeln!(stdin, "go").expect("write go");
        stdin.flush().expect("flush");
    }

    pub fn wait(mut self) {
        let status = self.child.wait().expect("wait traffic");
        assert!(status.success(), "traffic helper failed: {status}");
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A UDP socket that receives (and ignores) the datagrams the tests send, so the kernel sends
/// no ICMP port-unreachable replies.
pub fn udp_sink(addr: &str) -> UdpSocket {
    UdpSocket::bind(addr).expect("bind UDP sink")
}

/// Canonical path of the traffic helper, as /proc/PID/exe shows it.
pub fn traffic_exe() -> String {
    std::fs::canonicalize(Traffic::exe())
        .expect("canonicalize")
        .display()
        .to_string()
}

/// Program ids in the JSON of a `bpftool -j ...` command (empty output: none).
fn bpftool_ids(args: &[&str]) -> Vec<u32> {
    let out = Command::new("bpftool")
        .arg("-j")
        .args(args)
        .output()
        .expect("bpftool must be installed (cargo xtask test installs it)");
    // With -j, bpftool reports its errors as JSON on stdout.
    assert!(
        out.status.success(),
        "bpftool {args:?} failed: {} {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.stdout.iter().all(u8::is_ascii_whitespace) {
        return Vec::new();
    }
    let v: Value = serde_json::from_slice(&out.stdout).expect("bpftool JSON");
    v.as_array().map_or_else(Vec::new, |a| {
        a.iter()
            .filter_map(|p| p["id"].as_u64().map(|i| i as u32))
            .collect()
    })
}

/// Ids of the BPF programs currently loaded (`bpftool prog show`).
pub fn loaded_program_ids() -> Vec<u32> {
    bpftool_ids(&["prog", "show"])
}

/// Program ids attached to a cgroup at the agent's hooks (`BPF_PROG_QUERY`, see
/// [`prog_query`]).
pub fn cgroup_attached_ids(cgroup: &str) -> Vec<u32> {
    prog_query::attached_to(cgroup)
}

/// Those of `ids` still loaded or attached to `cgroup`.
pub fn left_behind(ids: &[u32], cgroup: &str) -> Vec<u32> {
    let (loaded, attached) = (loaded_program_ids(), cgroup_attached_ids(cgroup));
    ids.iter()
        .copied()
        .filter(|id| loaded.contains(id) || attached.contains(id))
        .collect()
}

/// The cgroup v2 root, as the agent finds it.
pub fn cgroup2_root() -> String {
    monitor::kernel::cgroup2::find()
        .expect("mountinfo")
        .expect("cgroup2 mounted")
        .display()
        .to_string()
}

/// The host's count of retransmitted TCP segments (`/proc/net/snmp`, `Tcp: RetransSegs`).
/// Retransmissions are real egress and are counted by the agent; tests that expect exact TCP
/// byte counts check this to tell a retransmission from an accounting error.
pub fn tcp_retransmitted_segments() -> u64 {
    let snmp = std::fs::read_to_string("/proc/net/snmp").expect("/proc/net/snmp");
    let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (
        tcp.next().expect("Tcp header"),
        tcp.next().expect("Tcp values"),
    );
    let column = names
        .split_whitespace()
        .position(|n| n == "RetransSegs")
        .expect("RetransSegs column");
    values
        .split_whitespace()
        .nth(column)
        .and_then(|v| v.parse().ok())
        .expect("RetransSegs value")
}
