//! The kernel compatibility table: what each program and feature needs. One table for all:
//! `doctor` prints it next to what this kernel actually accepts (probed, not guessed from the
//! version), the agent's loader names the row when the kernel refuses a program, and
//! `cargo xtask vm-test` chooses what to run on each kernel from [`MIN_KERNEL`].
//!
//! The test suite verifies it on real kernels (the README lists which): every program loads
//! and works on those at or above the minimum, and below it the agent refuses to start,
//! naming the row.

use crate::{
    PROG_EGRESS, PROG_EGRESS_FINE_CLOCK, PROG_EGRESS_FINE_CLOCK_OBSERVE, PROG_EGRESS_OBSERVE,
    PROG_INGRESS, PROG_SOCK_CREATE, PROG_SOCK_RELEASE, PROG_TCP_DIRECTION,
};

/// One program of the agent.
#[derive(Clone, Copy, Debug)]
pub struct ProgramSpec {
    pub name: &'static str,
    /// Section / attach point.
    pub hook: &'static str,
    /// The kernel feature that has to be there.
    pub feature: &'static str,
    pub min_kernel: &'static str,
    /// Where it attaches on the cgroup v2 root.
    pub attach: AttachPoint,
    /// The agent refuses to start without it. An optional program only adds detail: when
    /// the kernel refuses it the agent logs a warning and runs without (and `doctor` warns).
    pub required: bool,
    /// The same work for older kernels, loaded only when the kernel refuses this one.
    pub fallback: Option<&'static ProgramSpec>,
    /// The same program without containment enforcement (it counts and always passes),
    /// loaded only when the kernel refuses this one and its fallback: the agent then detects
    /// but cannot contain.
    pub without_enforcement: Option<&'static ProgramSpec>,
    /// What the program gives the agent, in a few words (`doctor` says what an optional
    /// program's refusal costs with it).
    pub role: &'static str,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachPoint {
    SkbEgress,
    SkbIngress,
    /// A `cgroup/sock_*` hook (which one is set by the program's section).
    Sock,
    /// `BPF_CGROUP_SOCK_OPS`: TCP events of every socket of the cgroup.
    SockOps,
}

/// Passive DNS and UDP direction: optional, see [`ProgramSpec::required`].
pub const INGRESS_PROGRAM: ProgramSpec = ProgramSpec {
    name: PROG_INGRESS,
    hook: "cgroup_skb/ingress",
    feature: "BPF_PROG_TYPE_CGROUP_SKB (ingress) with bpf_skb_load_bytes into a BPF ring buffer reservation, LRU hash map",
    min_kernel: "5.8",
    attach: AttachPoint::SkbIngress,
    required: false,
    fallback: None,
    without_enforcement: None,
    role: "passive DNS names and the direction of UDP flows, refusing blocked peers",
};

/// TCP direction from the kernel: optional, see [`ProgramSpec::required`]. Without it the
/// egress program still tells connections it sees open (their first packet is a SYN), and the
/// agent the accepted ones by the local listeners (`sock_diag`).
pub const TCP_DIRECTION_PROGRAM: ProgramSpec = ProgramSpec {
    name: PROG_TCP_DIRECTION,
    hook: "sockops",
    feature: "BPF_PROG_TYPE_SOCK_OPS with bpf_sock_ops->sk and bpf_sk_storage_get",
    min_kernel: "5.10",
    attach: AttachPoint::SockOps,
    required: false,
    fallback: None,
    without_enforcement: None,
    role: "the direction of TCP connections as the kernel saw them open",
};

/// What the enforcing egress programs need beyond counting (`doctor` and the refusal message
/// name it).
pub const ENFORCEMENT_FEATURE: &str = "egress verdicts 2/3 (drop/pass with congestion notification, Linux 5.3), bpf_spin_lock in an array value (5.1), LPM trie lookups (4.11)";

/// `count_egress` stamping flows with `bpf_ktime_get_ns`: for kernels without the coarse
/// clock helper (measured: Debian's 5.10 refuses `count_egress` for that helper alone).
pub const EGRESS_FINE_CLOCK_PROGRAM: ProgramSpec = ProgramSpec {
    name: PROG_EGRESS_FINE_CLOCK,
    hook: "cgroup_skb/egress",
    feature: "BPF_PROG_TYPE_CGROUP_SKB with bpf_sk_fullsock, bpf_skb_cgroup_id, bpf_ktime_get_ns; egress verdicts 2/3, bpf_spin_lock, LPM trie (containment)",
    min_kernel: "5.10",
    attach: AttachPoint::SkbEgress,
    required: true,
    fallback: None,
    without_enforcement: Some(&EGRESS_FINE_CLOCK_OBSERVE_PROGRAM),
    role: "egress counting and containment",
};

/// `count_egress` without containment enforcement.
pub const EGRESS_OBSERVE_PROGRAM: ProgramSpec = ProgramSpec {
    name: PROG_EGRESS_OBSERVE,
    hook: "cgroup_skb/egress",
    feature: "BPF_PROG_TYPE_CGROUP_SKB with bpf_sk_fullsock, bpf_skb_cgroup_id, bpf_ktime_get_coarse_ns",
    min_kernel: "5.11",
    attach: AttachPoint::SkbEgress,
    required: true,
    fallback: None,
    without_enforcement: None,
    role: "egress counting (containment unavailable)",
};

/// `count_egress_ns` without containment enforcement.
pub const EGRESS_FINE_CLOCK_OBSERVE_PROGRAM: ProgramSpec = ProgramSpec {
    name: PROG_EGRESS_FINE_CLOCK_OBSERVE,
    hook: "cgroup_skb/egress",
    feature: "BPF_PROG_TYPE_CGROUP_SKB with bpf_sk_fullsock, bpf_skb_cgroup_id, bpf_ktime_get_ns",
    min_kernel: "5.10",
    attach: AttachPoint::SkbEgress,
    required: true,
    fallback: None,
    without_enforcement: None,
    role: "egress counting (containment unavailable)",
};

/// In attach order.
pub const PROGRAMS: [ProgramSpec; 5] = [
    ProgramSpec {
        name: PROG_SOCK_CREATE,
        hook: "cgroup/sock_create",
        feature: "BPF_PROG_TYPE_CGROUP_SOCK with bpf_sk_storage_get (socket storage)",
        min_kernel: "5.10",
        attach: AttachPoint::Sock,
        required: true,
        fallback: None,
        without_enforcement: None,
        role: "socket owners",
    },
    ProgramSpec {
        name: PROG_EGRESS,
        hook: "cgroup_skb/egress",
        feature: "BPF_PROG_TYPE_CGROUP_SKB with bpf_sk_fullsock, bpf_skb_cgroup_id, bpf_ktime_get_coarse_ns; egress verdicts 2/3, bpf_spin_lock, LPM trie (containment)",
        min_kernel: "5.11",
        attach: AttachPoint::SkbEgress,
        required: true,
        fallback: Some(&EGRESS_FINE_CLOCK_PROGRAM),
        without_enforcement: Some(&EGRESS_OBSERVE_PROGRAM),
        role: "egress counting and containment",
    },
    ProgramSpec {
        name: PROG_SOCK_RELEASE,
        hook: "cgroup/sock_release",
        feature: "BPF_CGROUP_INET_SOCK_RELEASE attach type and BPF ring buffer",
        min_kernel: "5.9",
        attach: AttachPoint::Sock,
        required: true,
        fallback: None,
        without_enforcement: None,
        role: "final counts of closed sockets",
    },
    TCP_DIRECTION_PROGRAM,
    INGRESS_PROGRAM,
];

/// Every program in the object: the table's, then their fallbacks, then the variants
/// without enforcement of both (what `doctor` loads).
pub fn all_programs() -> impl Iterator<Item = ProgramSpec> {
    let with_fallbacks = || {
        PROGRAMS
            .into_iter()
            .chain(PROGRAMS.into_iter().filter_map(|p| p.fallback.copied()))
    };
    with_fallbacks().chain(with_fallbacks().filter_map(|p| p.without_enforcement.copied()))
}

/// The programs the agent tries for the hook of `role` (a row of [`PROGRAMS`]), in its
/// order: the program, its fallback, then the variants without enforcement of both. It
/// attaches the first the kernel accepts.
pub fn attach_order(role: &ProgramSpec) -> impl Iterator<Item = ProgramSpec> {
    let enforcing = [Some(role), role.fallback].into_iter().flatten();
    enforcing
        .clone()
        .chain(enforcing.filter_map(|p| p.without_enforcement))
        .copied()
}

/// The row of [`PROGRAMS`] whose [`attach_order`] holds `spec` (itself for a row).
pub fn role_of(spec: &ProgramSpec) -> Option<ProgramSpec> {
    PROGRAMS
        .into_iter()
        .find(|role| attach_order(role).any(|p| p.name == spec.name))
}

/// The program `spec` stands in for as its variant without enforcement, if it is one.
pub fn enforcing_program_of(spec: &ProgramSpec) -> Option<ProgramSpec> {
    all_programs().find(|p| p.without_enforcement.is_some_and(|w| w.name == spec.name))
}

/// The lowest kernel a program's role can run on: its own minimum, or its fallback's.
pub fn role_minimum(spec: &ProgramSpec) -> Option<(u32, u32)> {
    let own = parse_release(spec.min_kernel)?;
    Some(
        match spec.fallback.and_then(|f| parse_release(f.min_kernel)) {
            Some(fallback) => own.min(fallback),
            None => own,
        },
    )
}

/// Other kernel features the agent relies on.
#[derive(Clone, Copy, Debug)]
pub struct FeatureSpec {
    pub feature: &'static str,
    pub min_kernel: &'static str,
    pub used_for: &'static str,
}

/// The socket storage map (`doctor` probes the map type against this row).
pub const SK_STORAGE: FeatureSpec = FeatureSpec {
    feature: "BPF_MAP_TYPE_SK_STORAGE with BPF_F_CLONE",
    min_kernel: "5.4",
    used_for: "owner inherited by accepted sockets",
};

/// The ring buffer map (`doctor` probes the map type against this row).
pub const RINGBUF: FeatureSpec = FeatureSpec {
    feature: "BPF_MAP_TYPE_RINGBUF",
    min_kernel: "5.8",
    used_for: "socket release events, DNS answers",
};

/// The containment rules map (`doctor` probes the map type against this row).
pub const LPM_TRIE: FeatureSpec = FeatureSpec {
    feature: "BPF_MAP_TYPE_LPM_TRIE",
    min_kernel: "4.11",
    used_for: "containment rules by (cgroup, peer prefix)",
};

/// The containment buckets' lock (`doctor` probes the helper in `cgroup_skb` against this row).
pub const SPIN_LOCK: FeatureSpec = FeatureSpec {
    feature: "bpf_spin_lock in an array map value (cgroup_skb)",
    min_kernel: "5.1",
    used_for: "containment token buckets shared by all CPUs",
};

/// Egress verdicts with congestion notification.
pub const EGRESS_CN_VERDICTS: FeatureSpec = FeatureSpec {
    feature: "cgroup_skb/egress verdicts 2 and 3 (drop / pass with congestion notification)",
    min_kernel: "5.3",
    used_for: "throttling: TCP reduces its window (tcp_enter_cwr) instead of retrying at once",
};

pub const FEATURES: [FeatureSpec; 10] = [
    FeatureSpec {
        feature: "cgroup v2",
        min_kernel: "4.5",
        used_for: "one attach point (the root) that sees every process",
    },
    FeatureSpec {
        feature: "BTF (/sys/kernel/btf/vmlinux) and BTF-defined maps",
        min_kernel: "5.2",
        used_for: "socket storage map definition",
    },
    SK_STORAGE,
    FeatureSpec {
        feature: "bpf_link for cgroup programs",
        min_kernel: "5.7",
        used_for: "programs detach when the agent exits, even on SIGKILL",
    },
    RINGBUF,
    FeatureSpec {
        feature: "BPF_MAP_LOOKUP_BATCH on hash maps",
        min_kernel: "5.6",
        used_for: "reading all flows in a few syscalls (falls back to one per flow)",
    },
    FeatureSpec {
        feature: "BPF_MAP_LOOKUP_AND_DELETE_ELEM on hash maps",
        min_kernel: "5.14",
        used_for: "atomic final read of a closed flow (falls back to lookup then delete)",
    },
    LPM_TRIE,
    SPIN_LOCK,
    EGRESS_CN_VERDICTS,
];

/// Overall minimum kernel for the agent: where every required program, or its fallback,
/// loads.
pub const MIN_KERNEL: (u32, u32) = (5, 10);

/// Parses "6.18.44-fc-v657" (the `uname -r` form) into (major, minor).
pub fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;

    #[test]
    fn parses_kernel_releases() {
        assert_eq!(parse_release("6.18.44-fc-v657"), Some((6, 18)));
        assert_eq!(parse_release("6.1.0-56-amd64"), Some((6, 1)));
        assert_eq!(parse_release("5.4"), Some((5, 4)));
        assert_eq!(parse_release("garbage"), None);
    }

    #[test]
    fn minimum_matches_the_table() {
        let max = PROGRAMS
            .iter()
            .filter(|p| p.required)
            .filter_map(role_minimum)
            .max()
            .unwrap();
        assert_eq!(max, MIN_KERNEL);
    }

    #[test]
    fn a_fallback_does_the_same_work_on_older_kernels() {
        for p in PROGRAMS {
            if let Some(f) = p.fallback {
                assert_eq!(
                    (f.hook, f.attach, f.required),
                    (p.hook, p.attach, p.required)
                );
                assert!(parse_release(f.min_kernel) < parse_release(p.min_kernel));
                assert!(f.fallback.is_none(), "one level only");
            }
        }
        let names: Vec<&str> = all_programs().map(|p| p.name).collect();
        assert_eq!(
            names,
            [
                PROG_SOCK_CREATE,
                PROG_EGRESS,
                PROG_SOCK_RELEASE,
                PROG_TCP_DIRECTION,
                PROG_INGRESS,
                PROG_EGRESS_FINE_CLOCK,
                PROG_EGRESS_OBSERVE,
                PROG_EGRESS_FINE_CLOCK_OBSERVE,
            ]
        );
    }

    #[test]
    fn a_variant_without_enforcement_is_the_same_program_on_the_same_kernels() {
        let mut n = 0;
        for p in all_programs() {
            if let Some(w) = p.without_enforcement {
                n += 1;
                assert_eq!(
                    (w.hook, w.attach, w.required, w.min_kernel),
                    (p.hook, p.attach, p.required, p.min_kernel)
                );
                assert!(w.without_enforcement.is_none() && w.fallback.is_none());
                assert_eq!(enforcing_program_of(w).map(|e| e.name), Some(p.name));
            }
        }
        assert_eq!(n, 2, "both egress programs have one");
        assert!(enforcing_program_of(&PROGRAMS[1]).is_none());
    }

    #[test]
    fn the_egress_hook_tries_enforcing_programs_first() {
        let order: Vec<&str> = attach_order(&PROGRAMS[1]).map(|p| p.name).collect();
        assert_eq!(
            order,
            [
                PROG_EGRESS,
                PROG_EGRESS_FINE_CLOCK,
                PROG_EGRESS_OBSERVE,
                PROG_EGRESS_FINE_CLOCK_OBSERVE,
            ]
        );
        for p in all_programs() {
            let role = role_of(&p).expect("every program has a row");
            assert!(attach_order(&role).any(|q| q.name == p.name));
        }
        let sock: Vec<&str> = attach_order(&PROGRAMS[0]).map(|p| p.name).collect();
        assert_eq!(sock, [PROG_SOCK_CREATE]);
    }

    #[test]
    fn direction_and_passive_dns_are_the_only_optional_programs() {
        let optional: Vec<&str> = PROGRAMS
            .iter()
            .filter(|p| !p.required)
            .map(|p| p.name)
            .collect();
        assert_eq!(optional, [PROG_TCP_DIRECTION, PROG_INGRESS]);
        // Optional programs come last, so every required one is attached before them.
        let first_optional = PROGRAMS.iter().position(|p| !p.required).unwrap();
        assert!(PROGRAMS[first_optional..].iter().all(|p| !p.required));
    }
}
