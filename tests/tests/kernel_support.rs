//! The kernel compatibility table (`monitor_common::compat`) checked against the running
//! kernel, whichever it is: this host's, or one `cargo xtask vm-test` boots (on a kernel
//! below the table's minimum, this is the only suite the VM runs).
//!
//! Each program of the table must load exactly when the kernel is at least its row's minimum:
//! a program refused above its minimum, or accepted below it, means the table is wrong, and
//! `doctor` and the agent's refusal messages with it.

use std::{process::Command, time::Duration};

use integration_tests::{Agent, agent_bin, require_root, scaled};
use monitor::kernel::compat::{
    self, MIN_KERNEL, PROGRAMS, all_programs, parse_release, running_release,
};
use serde_json::Value;

fn release() -> (String, (u32, u32)) {
    let release = running_release();
    let version = parse_release(&release)
        .unwrap_or_else(|| panic!("cannot parse this kernel's release {release:?}"));
    (release, version)
}

fn min_of(spec: &compat::ProgramSpec) -> (u32, u32) {
    parse_release(spec.min_kernel).expect("a table minimum is a version")
}

fn doctor_json() -> (bool, Vec<Value>) {
    let out = Command::new(agent_bin())
        .args(["doctor", "--json"])
        .output()
        .expect("run doctor");
    let checks: Value = serde_json::from_slice(&out.stdout).expect("doctor JSON");
    (
        out.status.success(),
        checks.as_array().expect("a list of checks").clone(),
    )
}

fn named<'a>(checks: &'a [Value], name: &str) -> &'a Value {
    checks
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name:?} in {checks:?}"))
}

/// `doctor` loads every program through the verifier: each is accepted exactly when this
/// kernel is at least its row's minimum, and the verdict follows the required ones.
#[test]
fn doctor_loads_each_program_exactly_where_the_table_says() {
    require_root();
    let (release, version) = release();
    let (ready, checks) = doctor_json();
    let mut wrong = Vec::new();
    for spec in all_programs() {
        let check = named(&checks, &format!("load {} ({})", spec.name, spec.hook));
        let loads = check["status"] == "ok";
        let expected = version >= min_of(&spec);
        if loads != expected {
            wrong.push(format!(
                "{} (table: Linux >= {}) {} on {release}: {}",
                spec.name,
                spec.min_kernel,
                if loads { "loads" } else { "is refused" },
                check["detail"]
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "the compatibility table is wrong here: {wrong:#?}"
    );
    // Containment: the egress program the agent attaches enforces exactly when the kernel
    // reaches an enforcing program's row (Linux 5.10 through `count_egress_ns`); else doctor
    // says it is unavailable, naming what the agent attaches instead.
    let egress = PROGRAMS
        .into_iter()
        .find(|p| p.without_enforcement.is_some())
        .expect("an enforcing egress program");
    let enforcing = compat::attach_order(&egress)
        .filter(|p| compat::enforcing_program_of(p).is_none())
        .find(|p| version >= min_of(p));
    let containment = named(&checks, "containment enforcement");
    println!("doctor on {release}: {containment}");
    if let Some(p) = enforcing {
        assert_eq!(containment["status"], "ok", "{containment}");
        assert!(
            containment["detail"]
                .as_str()
                .is_some_and(|d| d.contains(p.name)),
            "{p:?} should enforce here: {containment}"
        );
    } else {
        assert_ne!(containment["status"], "ok", "{containment}");
        assert!(
            containment["detail"]
                .as_str()
                .is_some_and(|d| d.starts_with("unavailable")),
            "{containment}"
        );
    }
    let supported = version >= MIN_KERNEL;
    let kernel = named(&checks, "kernel");
    assert_eq!(
        kernel["status"],
        if supported { "ok" } else { "fail" },
        "{kernel}"
    );
    assert_eq!(ready, supported, "doctor's exit status: {checks:#?}");
    let text = Command::new(agent_bin()).arg("doctor").output().unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    // The report, for the record: the VM's console keeps it (`vm-test` runs with --nocapture).
    println!("doctor on {release}:\n{text}");
    let verdict = if supported {
        "ready: the agent can run here"
    } else {
        "not ready:"
    };
    assert!(text.contains(verdict), "{text}");
}

/// On a supported kernel the agent attaches one program per role (a fallback where the kernel
/// is below the program's row, saying so) and stops cleanly; below the minimum it refuses to
/// start, within seconds, naming the first required program the kernel refused and its row
/// (hook, feature, minimum), and prints nothing on stdout.
#[test]
fn the_agent_runs_on_a_supported_kernel_and_names_the_row_below_it() {
    require_root();
    let (release, version) = release();
    if version >= MIN_KERNEL {
        let agent = Agent::start(&["--interval", "200ms"]);
        assert_eq!(agent.program_ids().len(), PROGRAMS.len(), "all attached");
        for spec in PROGRAMS {
            let Some(fallback) = spec.fallback else {
                continue;
            };
            let said = agent
                .logs_so_far()
                .iter()
                .any(|l| l["program"] == fallback.name && l["instead_of"] == spec.name);
            assert_eq!(
                said,
                version < min_of(&spec),
                "{} attached instead of {} on {release}",
                fallback.name,
                spec.name
            );
        }
        let run = agent.stop();
        assert!(run.status.success(), "{:?}", run.logs);
        return;
    }
    let started = std::time::Instant::now();
    let out = Command::new(agent_bin())
        .args(["run", "--output", "json"])
        .output()
        .expect("run the agent");
    assert!(started.elapsed() < scaled(Duration::from_secs(30)));
    assert!(!out.status.success(), "the agent ran on {release}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("the agent on {release}: {stderr}");
    let refused = PROGRAMS
        .iter()
        .filter(|s| s.required && version < min_of(s))
        .find(|s| stderr.contains(&format!("refused to load {} ({}", s.name, s.hook)))
        .unwrap_or_else(|| panic!("no refused program of the table named: {stderr}"));
    assert!(
        stderr.contains(&format!("Linux >= {}", refused.min_kernel))
            && stderr.contains(refused.feature),
        "the row: {stderr}"
    );
}
