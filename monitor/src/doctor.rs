//! `egress-monitor doctor`: what works on this host and what will not, with the reason and
//! the fix. Program support is probed (the kernel is asked), not guessed from the version.

use std::{fmt, fs, path::Path};

use aya::{
    maps::MapType,
    programs::ProgramType,
    sys::{BpfHelper, is_helper_supported, is_map_supported, is_program_supported},
};
use serde::Serialize;

use crate::kernel::{
    caps::{CapSet, Capability},
    cgroup2, compat,
    loader::{self, error_chain},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ok => "ok  ",
            Self::Warn => "warn",
            Self::Fail => "FAIL",
        })
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub name: String,
    pub status: Status,
    pub detail: String,
}

fn check(name: impl Into<String>, status: Status, detail: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        status,
        detail: detail.into(),
    }
}

pub fn run_checks() -> Vec<Check> {
    let mut checks = vec![kernel_version()];
    let caps = CapSet::current();
    checks.extend(privileges(caps));
    checks.push(cgroup_v2());
    checks.push(file_check(
        "BTF",
        "/sys/kernel/btf/vmlinux",
        Status::Fail,
        "kernel built without CONFIG_DEBUG_INFO_BTF: socket storage maps cannot be created",
    ));
    checks.push(mount_check(
        "bpffs",
        "bpf",
        "/sys/fs/bpf",
        "not needed by the agent (it pins nothing); `mount -t bpf bpf /sys/fs/bpf` for bpftool",
    ));
    checks.push(mount_check("tracefs", "tracefs", "/sys/kernel/tracing", "not needed by the agent; `mount -t tracefs nodev /sys/kernel/tracing` for tracepoint tools"));
    checks.push(bpf_stats_check());
    if caps.missing_required().is_empty() {
        checks.extend(kernel_probes());
    } else {
        checks.push(check(
            "program, map and helper probes",
            Status::Fail,
            "skipped: probing needs the capabilities listed above",
        ));
    }
    checks
}

/// BPF memory charged to the memory cgroup instead of `RLIMIT_MEMLOCK`.
const MEMCG_ACCOUNTING: (u32, u32) = (5, 11);

fn kernel_version() -> Check {
    let release = compat::running_release();
    let (maj, min) = compat::MIN_KERNEL;
    match compat::parse_release(&release) {
        Some(v) if v >= compat::MIN_KERNEL => check(
            "kernel",
            Status::Ok,
            format!("Linux {release} (needs >= {maj}.{min})"),
        ),
        Some(_) => check(
            "kernel",
            Status::Fail,
            format!(
                "Linux {release} is older than {maj}.{min}; see the compatibility table in the README"
            ),
        ),
        None => check(
            "kernel",
            Status::Warn,
            format!("cannot parse kernel release {release:?}"),
        ),
    }
}

fn privileges(caps: CapSet) -> Vec<Check> {
    let mut out = Vec::new();
    let missing = caps.missing_required();
    for cap in [Capability::Bpf, Capability::Perfmon, Capability::NetAdmin] {
        if missing.contains(&cap) {
            out.push(check(
                cap.name(),
                Status::Fail,
                format!("missing: needed to {}", cap.purpose()),
            ));
        } else {
            out.push(check(
                cap.name(),
                Status::Ok,
                format!("present (to {})", cap.purpose()),
            ));
        }
    }
    for cap in caps.missing_recommended() {
        out.push(check(
            cap.name(),
            Status::Warn,
            format!(
                "missing: cannot {}; owners of such sockets show without exe",
                cap.purpose()
            ),
        ));
    }
    if !caps.has(Capability::SysResource) {
        // Before 5.11 BPF maps and programs are charged to RLIMIT_MEMLOCK (64 KiB by default
        // on many systems): without raising it the maps cannot be created.
        let memcg =
            compat::parse_release(&compat::running_release()).is_none_or(|v| v >= MEMCG_ACCOUNTING);
        out.push(if memcg {
            check(
                Capability::SysResource.name(),
                Status::Warn,
                "missing: RLIMIT_MEMLOCK cannot be raised; fine on Linux >= 5.11 (memory-cgroup accounting)",
            )
        } else {
            check(
                Capability::SysResource.name(),
                Status::Fail,
                "missing: RLIMIT_MEMLOCK cannot be raised, and before Linux 5.11 BPF memory is charged to it",
            )
        });
    }
    out
}

fn cgroup_v2() -> Check {
    match cgroup2::find() {
        Ok(Some(path)) => check(
            "cgroup v2",
            Status::Ok,
            format!("mounted at {}", path.display()),
        ),
        Ok(None) => check(
            "cgroup v2",
            Status::Warn,
            "not mounted: the agent will mount it at /sys/fs/cgroup/unified (needs CAP_SYS_ADMIN); or `mount -t cgroup2 none /sys/fs/cgroup/unified`",
        ),
        Err(e) => check("cgroup v2", Status::Fail, e.to_string()),
    }
}

fn file_check(name: &str, path: &str, missing: Status, why: &str) -> Check {
    match fs::metadata(path) {
        Ok(_) => check(name, Status::Ok, format!("{path} present")),
        Err(e) => check(name, missing, format!("{path}: {e}; {why}")),
    }
}

fn bpf_stats_check() -> Check {
    const NAME: &str = "BPF run-time stats (kernel.bpf_stats_enabled)";
    const PATH: &str = "/proc/sys/kernel/bpf_stats_enabled";
    match fs::read(PATH) {
        Ok(v) if v.first() == Some(&b'1') => check(NAME, Status::Ok, "enabled"),
        Ok(_) => check(
            NAME,
            Status::Warn,
            "disabled: `cargo xtask bench` enables it while measuring",
        ),
        Err(e) => check(
            NAME,
            Status::Warn,
            format!("{PATH}: {e}; `cargo xtask bench` needs it"),
        ),
    }
}

fn mount_check(name: &str, fstype: &str, default: &str, why: &str) -> Check {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let found = mountinfo.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        (post.split_whitespace().next()? == fstype)
            .then(|| pre.split_whitespace().nth(4).map(str::to_owned))?
    });
    match found {
        Some(p) => check(name, Status::Ok, format!("mounted at {p}")),
        None if Path::new(default).exists() => check(
            name,
            Status::Warn,
            format!("not mounted at {default}: {why}"),
        ),
        None => check(name, Status::Warn, format!("not mounted: {why}")),
    }
}

fn kernel_probes() -> Vec<Check> {
    let mut out = type_probes();
    out.extend(helper_probes());
    out.extend(program_loads());
    out
}

fn type_probes() -> Vec<Check> {
    let mut out = Vec::new();
    for (name, ty, min) in [
        ("program type cgroup_skb", ProgramType::CgroupSkb, "4.10"),
        ("program type cgroup_sock", ProgramType::CgroupSock, "4.10"),
    ] {
        out.push(match is_program_supported(ty) {
            Ok(true) => check(name, Status::Ok, "supported"),
            Ok(false) => check(
                name,
                Status::Fail,
                format!("not supported (Linux >= {min} with CONFIG_CGROUP_BPF)"),
            ),
            Err(e) => check(name, Status::Fail, format!("probe failed: {e}")),
        });
    }
    for (name, ty, min) in [
        ("map type hash", MapType::Hash, "3.19"),
        ("map type percpu_array", MapType::PerCpuArray, "4.6"),
        (
            "map type ringbuf",
            MapType::RingBuf,
            compat::RINGBUF.min_kernel,
        ),
        (
            "map type sk_storage",
            MapType::SkStorage,
            compat::SK_STORAGE.min_kernel,
        ),
        // The containment maps are in the object: without them nothing loads.
        (
            "map type lpm_trie",
            MapType::LpmTrie,
            compat::LPM_TRIE.min_kernel,
        ),
        ("map type array", MapType::Array, "3.19"),
    ] {
        out.push(match is_map_supported(ty) {
            Ok(true) => check(name, Status::Ok, "supported"),
            Ok(false) => check(
                name,
                Status::Fail,
                format!("not supported (Linux >= {min})"),
            ),
            Err(e) => check(name, Status::Fail, format!("probe failed: {e}")),
        });
    }
    out.push(check(
        "containment: egress verdicts 2/3",
        match compat::parse_release(&compat::running_release()) {
            Some(v) if Some(v) >= compat::parse_release(compat::EGRESS_CN_VERDICTS.min_kernel) => {
                Status::Ok
            }
            _ => Status::Warn,
        },
        format!(
            "{} (Linux >= {}): {}; checked for real by loading count_egress below",
            compat::EGRESS_CN_VERDICTS.feature,
            compat::EGRESS_CN_VERDICTS.min_kernel,
            compat::EGRESS_CN_VERDICTS.used_for
        ),
    ));
    out
}

/// The helpers the programs call, by program type.
const HELPERS: [(ProgramType, &str, BpfHelper, &str); 14] = [
    (
        ProgramType::CgroupSkb,
        "cgroup_skb",
        BpfHelper::BPF_FUNC_sk_fullsock,
        "bpf_sk_fullsock",
    ),
    (
        ProgramType::CgroupSkb,
        "cgroup_skb",
        BpfHelper::BPF_FUNC_get_socket_cookie,
        "bpf_get_socket_cookie",
    ),
    (
        ProgramType::CgroupSkb,
        "cgroup_skb",
        BpfHelper::BPF_FUNC_skb_cgroup_id,
        "bpf_skb_cgroup_id",
    ),
    (
        ProgramType::CgroupSkb,
        "cgroup_skb",
        BpfHelper::BPF_FUNC_sk_storage_get,
        "bpf_sk_storage_get",
    ),
    (
        ProgramType::CgroupSkb,
        "cgroup_skb",
        BpfHelper::BPF_FUNC_ktime_get_coarse_ns,
        "bpf_ktime_get_coarse_ns",
    ),
    (
        ProgramType::CgroupSkb,
        "cgroup_skb",
        BpfHelper::BPF_FUNC_skb_load_bytes,
        "bpf_skb_load_bytes",
    ),
    (
        ProgramType::CgroupSkb,
        "cgroup_skb",
        BpfHelper::BPF_FUNC_ringbuf_reserve,
        "bpf_ringbuf_reserve",
    ),
    (
        ProgramType::CgroupSkb,
        "cgroup_skb",
        BpfHelper::BPF_FUNC_spin_lock,
        "bpf_spin_lock",
    ),
    (
        ProgramType::CgroupSkb,
        "cgroup_skb",
        BpfHelper::BPF_FUNC_spin_unlock,
        "bpf_spin_unlock",
    ),
    (
        ProgramType::CgroupSock,
        "cgroup_sock",
        BpfHelper::BPF_FUNC_sk_storage_get,
        "bpf_sk_storage_get",
    ),
    (
        ProgramType::CgroupSock,
        "cgroup_sock",
        BpfHelper::BPF_FUNC_get_socket_cookie,
        "bpf_get_socket_cookie",
    ),
    (
        ProgramType::CgroupSock,
        "cgroup_sock",
        BpfHelper::BPF_FUNC_ringbuf_output,
        "bpf_ringbuf_output",
    ),
    (
        ProgramType::CgroupSock,
        "cgroup_sock",
        BpfHelper::BPF_FUNC_get_current_comm,
        "bpf_get_current_comm",
    ),
    (
        ProgramType::SockOps,
        "sock_ops",
        BpfHelper::BPF_FUNC_sk_storage_get,
        "bpf_sk_storage_get",
    ),
];

fn helper_probes() -> Vec<Check> {
    let mut out = Vec::new();
    for (ty, ty_name, helper, helper_name) in HELPERS {
        let name = format!("helper {helper_name} in {ty_name}");
        // Only the optional ingress program reserves ring buffer space in cgroup_skb:
        // without it the agent runs, without names. Only the optional TCP direction program
        // is a sock_ops one. Without the coarse clock the agent attaches count_egress_ns,
        // stamped with bpf_ktime_get_ns.
        let (missing, why) = match (ty_name, helper_name) {
            (_, "bpf_ringbuf_reserve") => (
                Status::Warn,
                "not available to this program type on this kernel (optional: passive DNS)",
            ),
            ("sock_ops", _) => (
                Status::Warn,
                "not available to this program type on this kernel (optional: TCP direction from the kernel)",
            ),
            (_, "bpf_ktime_get_coarse_ns") => (
                Status::Warn,
                "not available to this program type on this kernel: the agent attaches count_egress_ns (bpf_ktime_get_ns) instead",
            ),
            (_, "bpf_spin_lock" | "bpf_spin_unlock") => (
                Status::Warn,
                "not available to this program type on this kernel: containment enforcement unavailable (the agent attaches observe_egress, which only counts)",
            ),
            _ => (
                Status::Fail,
                "not available to this program type on this kernel",
            ),
        };
        out.push(match is_helper_supported(ty, helper) {
            Ok(true) => check(name, Status::Ok, "available"),
            Ok(false) => check(name, missing, why),
            Err(e) => check(name, missing, format!("probe failed: {e}")),
        });
    }
    out
}

fn program_loads() -> Vec<Check> {
    match loader::verify_programs() {
        Ok(results) => program_checks(&results),
        Err(e) => vec![check("load kernel object", Status::Fail, error_chain(&e))],
    }
}

/// One check per program loaded, then what containment the agent gets. Each hook's programs
/// are tried in [`compat::attach_order`] (the program, its fallback, the variants without
/// enforcement of both): a required program the kernel refuses is a failure only when
/// nothing of its hook loads; a stand-in's refusal matters only then too.
fn program_checks(results: &[loader::ProgramCheck]) -> Vec<Check> {
    let loaded = |name: &str| {
        results
            .iter()
            .any(|(spec, result)| spec.name == name && result.is_ok())
    };
    // What the agent attaches for a hook: the first of its order the kernel accepted.
    let attached = |role: &compat::ProgramSpec| compat::attach_order(role).find(|p| loaded(p.name));
    let mut out = Vec::new();
    for (spec, result) in results {
        let name = format!("load {} ({})", spec.name, spec.hook);
        let role = compat::role_of(spec).unwrap_or(*spec);
        let stand_in = role.name != spec.name;
        let used = attached(&role);
        out.push(match (result, used) {
            (Ok(()), _) if stand_in => check(
                name,
                Status::Ok,
                format!(
                    "accepted by the verifier (used only if {} is refused)",
                    compat::enforcing_program_of(spec).unwrap_or(role).name
                ),
            ),
            (Ok(()), _) if spec.required => check(name, Status::Ok, "accepted by the verifier"),
            (Ok(()), _) => check(
                name,
                Status::Ok,
                format!("accepted by the verifier (optional: {})", spec.role),
            ),
            // The top line only: the verifier's log is noise when another program serves.
            (Err(e), Some(used)) if stand_in => check(
                name,
                Status::Warn,
                format!("refused, not needed here (the agent attaches {}): {e}", used.name),
            ),
            (Err(e), Some(used)) if is_without_enforcement(&used) => check(
                name,
                Status::Warn,
                format!(
                    "refused: containment enforcement unavailable, the agent attaches {} (counts, never drops) instead: {}",
                    used.name,
                    error_chain(e),
                ),
            ),
            (Err(e), Some(used)) => check(
                name,
                Status::Warn,
                format!("refused, the agent attaches {} instead: {e}", used.name),
            ),
            (Err(e), None) if spec.required => check(name, Status::Fail, error_chain(e)),
            // The agent runs without it: a warning, not a failure.
            (Err(e), None) => check(
                name,
                Status::Warn,
                format!(
                    "optional, refused: the agent runs without {}: {}",
                    spec.role,
                    error_chain(e)
                ),
            ),
        });
    }
    if let Some(c) = containment_check(results, attached) {
        out.push(c);
    }
    out
}

fn is_without_enforcement(spec: &compat::ProgramSpec) -> bool {
    compat::enforcing_program_of(spec).is_some()
}

/// Whether the agent can enforce containments here: the egress hook's program it attaches
/// enforces, or only counts (then `enforce` decides in dry run). None when the results hold
/// no egress program.
fn containment_check(
    results: &[loader::ProgramCheck],
    attached: impl Fn(&compat::ProgramSpec) -> Option<compat::ProgramSpec>,
) -> Option<Check> {
    let role = compat::PROGRAMS
        .into_iter()
        .find(|p| p.without_enforcement.is_some())?;
    if !results.iter().any(|(spec, _)| spec.name == role.name) {
        return None;
    }
    let name = "containment enforcement";
    Some(match attached(&role) {
        Some(used) if is_without_enforcement(&used) => {
            let refused: Vec<&str> = compat::attach_order(&role)
                .take_while(|p| p.name != used.name)
                .filter(|p| !is_without_enforcement(p))
                .map(|p| p.name)
                .collect();
            check(
                name,
                Status::Warn,
                format!(
                    "unavailable: the kernel refused {} ({}); the agent attaches {}, which counts and never drops: detection and dry run only, `mode = \"enforce\"` decides in dry run",
                    refused.join(" and "),
                    compat::ENFORCEMENT_FEATURE,
                    used.name,
                ),
            )
        }
        Some(used) => check(
            name,
            Status::Ok,
            format!("available ({} throttles and blocks)", used.name),
        ),
        // The egress program's own failure says why.
        None => check(name, Status::Fail, "unavailable: no egress program loads"),
    })
}

pub fn render(checks: &[Check]) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    for c in checks {
        let _ = writeln!(s, "[{}] {:<44} {}", c.status, c.name, c.detail);
    }
    let fails = checks.iter().filter(|c| c.status == Status::Fail).count();
    let warns = checks.iter().filter(|c| c.status == Status::Warn).count();
    let _ = if fails == 0 {
        writeln!(s, "\nready: the agent can run here ({warns} warnings)")
    } else {
        writeln!(s, "\nnot ready: {fails} checks failed, {warns} warnings")
    };
    s
}

#[cfg(test)]
mod tests {
    use aya::programs::ProgramError;

    use super::*;
    use crate::kernel::loader::{LoadError, ProgramCheck};

    fn refused(spec: compat::ProgramSpec) -> ProgramCheck {
        let e = LoadError::Load {
            program: spec.name,
            hook: spec.hook,
            feature: spec.feature,
            min_kernel: spec.min_kernel,
            source: Box::new(ProgramError::NotLoaded),
        };
        (spec, Err(e))
    }

    fn status_of(checks: &[Check], program: &str) -> Status {
        checks
            .iter()
            .find(|c| c.name.starts_with(&format!("load {program} ")))
            .unwrap_or_else(|| panic!("no check for {program}: {checks:?}"))
            .status
    }

    const EGRESS: compat::ProgramSpec = compat::PROGRAMS[1];
    const FINE: compat::ProgramSpec = compat::EGRESS_FINE_CLOCK_PROGRAM;

    #[test]
    fn a_refused_program_whose_fallback_loads_is_a_warning() {
        let checks = program_checks(&[refused(EGRESS), (FINE, Ok(()))]);
        assert_eq!(status_of(&checks, EGRESS.name), Status::Warn);
        assert!(
            checks[0]
                .detail
                .contains("attaches count_egress_ns instead")
        );
        assert_eq!(status_of(&checks, FINE.name), Status::Ok);
    }

    #[test]
    fn a_refused_program_without_a_working_fallback_fails() {
        let checks = program_checks(&[refused(EGRESS), refused(FINE)]);
        assert_eq!(status_of(&checks, EGRESS.name), Status::Fail);
        assert_eq!(status_of(&checks, FINE.name), Status::Fail);
    }

    #[test]
    fn a_refused_optional_program_is_a_warning_naming_what_is_lost() {
        let tcp = compat::TCP_DIRECTION_PROGRAM;
        let checks = program_checks(&[(EGRESS, Ok(())), refused(tcp)]);
        assert_eq!(status_of(&checks, tcp.name), Status::Warn);
        assert!(
            checks[1].detail.contains("the agent runs without"),
            "{checks:?}"
        );
        assert!(checks[1].detail.contains("direction of TCP"), "{checks:?}");
        let checks = program_checks(&[(compat::INGRESS_PROGRAM, Ok(()))]);
        assert_eq!(checks[0].status, Status::Ok);
        assert!(checks[0].detail.contains("UDP flows"), "{checks:?}");
    }

    const OBSERVE: compat::ProgramSpec = compat::EGRESS_OBSERVE_PROGRAM;
    const FINE_OBSERVE: compat::ProgramSpec = compat::EGRESS_FINE_CLOCK_OBSERVE_PROGRAM;

    fn named<'a>(checks: &'a [Check], name: &str) -> &'a Check {
        checks
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no check {name:?}: {checks:?}"))
    }

    /// Linux 5.10: no coarse clock, so neither `count_egress` nor `observe_egress` loads;
    /// `count_egress_ns` enforces.
    #[test]
    fn without_the_coarse_clock_the_fallback_enforces_and_nothing_fails() {
        let checks = program_checks(&[
            refused(EGRESS),
            (FINE, Ok(())),
            refused(OBSERVE),
            (FINE_OBSERVE, Ok(())),
        ]);
        assert!(
            checks.iter().all(|c| c.status != Status::Fail),
            "{checks:?}"
        );
        assert_eq!(status_of(&checks, EGRESS.name), Status::Warn);
        let observe = checks
            .iter()
            .find(|c| c.name.contains(OBSERVE.name))
            .unwrap();
        assert_eq!(observe.status, Status::Warn);
        assert!(
            observe
                .detail
                .contains("not needed here (the agent attaches count_egress_ns)"),
            "{observe:?}"
        );
        let containment = named(&checks, "containment enforcement");
        assert_eq!(containment.status, Status::Ok, "{containment:?}");
        assert!(containment.detail.contains(FINE.name), "{containment:?}");
    }

    /// A kernel whose verifier refuses the enforcement path: the agent counts without it.
    #[test]
    fn refused_enforcement_is_a_warning_naming_what_the_agent_attaches() {
        let checks = program_checks(&[
            refused(EGRESS),
            refused(FINE),
            refused(OBSERVE),
            (FINE_OBSERVE, Ok(())),
        ]);
        assert!(
            checks.iter().all(|c| c.status != Status::Fail),
            "{checks:?}"
        );
        for program in [EGRESS.name, FINE.name, OBSERVE.name] {
            assert_eq!(status_of(&checks, program), Status::Warn, "{program}");
        }
        assert!(
            checks[0].detail.contains(
                "containment enforcement unavailable, the agent attaches observe_egress_ns"
            ),
            "{checks:?}"
        );
        let containment = named(&checks, "containment enforcement");
        assert_eq!(containment.status, Status::Warn);
        assert!(
            containment
                .detail
                .contains("refused count_egress and count_egress_ns"),
            "{containment:?}"
        );
        assert!(
            containment
                .detail
                .contains("observe_egress_ns, which counts and never drops")
        );
    }

    #[test]
    fn no_egress_program_at_all_fails() {
        let checks = program_checks(&[
            refused(EGRESS),
            refused(FINE),
            refused(OBSERVE),
            refused(FINE_OBSERVE),
        ]);
        for program in [EGRESS.name, FINE.name, OBSERVE.name, FINE_OBSERVE.name] {
            assert_eq!(status_of(&checks, program), Status::Fail, "{program}");
        }
        assert_eq!(
            named(&checks, "containment enforcement").status,
            Status::Fail
        );
    }

    #[test]
    fn a_refused_fallback_is_not_needed_when_its_program_loads() {
        let checks = program_checks(&[(EGRESS, Ok(())), refused(FINE)]);
        assert_eq!(status_of(&checks, EGRESS.name), Status::Ok);
        assert_eq!(status_of(&checks, FINE.name), Status::Warn);
    }
}
