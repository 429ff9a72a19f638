//! Capability checks, so a missing privilege is reported as one clear line naming it instead
//! of an EPERM from deep inside a syscall.

use std::fs;

/// Linux capability numbers used by the agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Capability {
    DacReadSearch = 2,
    NetAdmin = 12,
    SysPtrace = 19,
    SysAdmin = 21,
    SysResource = 24,
    Perfmon = 38,
    Bpf = 39,
}

impl Capability {
    /// Every capability the agent knows of.
    pub const ALL: [Self; 7] = [
        Self::DacReadSearch,
        Self::NetAdmin,
        Self::SysPtrace,
        Self::SysAdmin,
        Self::SysResource,
        Self::Perfmon,
        Self::Bpf,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Self::DacReadSearch => "CAP_DAC_READ_SEARCH",
            Self::NetAdmin => "CAP_NET_ADMIN",
            Self::SysPtrace => "CAP_SYS_PTRACE",
            Self::SysAdmin => "CAP_SYS_ADMIN",
            Self::SysResource => "CAP_SYS_RESOURCE",
            Self::Perfmon => "CAP_PERFMON",
            Self::Bpf => "CAP_BPF",
        }
    }

    /// Why the agent needs it.
    pub const fn purpose(self) -> &'static str {
        match self {
            Self::Bpf => "load BPF programs and create maps",
            Self::NetAdmin => "attach cgroup_skb and cgroup_sock programs",
            Self::Perfmon => "let the verifier accept pointer arithmetic on socket fields",
            Self::SysPtrace => "read /proc/PID/exe and /proc/PID/fd of other users' processes",
            Self::DacReadSearch => "walk /proc/PID/fd of other users' processes",
            Self::SysAdmin => "mount cgroup2 when it is not mounted (and stands in for CAP_BPF)",
            Self::SysResource => "raise RLIMIT_MEMLOCK on kernels before 5.11",
        }
    }
}

/// A capability set from `/proc/PID/status` (the effective one unless said otherwise).
#[derive(Clone, Copy, Debug)]
pub struct CapSet(u64);

impl CapSet {
    pub fn current() -> Self {
        let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
        Self::from_status(&status)
    }

    /// Parses the `CapEff:` line of `/proc/PID/status`.
    pub fn from_status(status: &str) -> Self {
        Self::from_status_line(status, "CapEff:")
    }

    /// Parses one capability line (`CapEff:`, `CapBnd:`...) of `/proc/PID/status`.
    pub fn from_status_line(status: &str, field: &str) -> Self {
        let bits = status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(0);
        Self(bits)
    }

    pub const fn has(self, cap: Capability) -> bool {
        self.0 & (1 << cap as u64) != 0
    }

    /// Capabilities the agent cannot run without, missing from this set. `CAP_SYS_ADMIN` stands
    /// in for `CAP_BPF` and `CAP_PERFMON` (as on kernels before 5.8).
    pub fn missing_required(self) -> Vec<Capability> {
        let admin = self.has(Capability::SysAdmin);
        let mut missing = Vec::new();
        if !self.has(Capability::Bpf) && !admin {
            missing.push(Capability::Bpf);
        }
        if !self.has(Capability::Perfmon) && !admin {
            missing.push(Capability::Perfmon);
        }
        if !self.has(Capability::NetAdmin) {
            missing.push(Capability::NetAdmin);
        }
        missing
    }

    /// Capabilities that only degrade attribution when missing.
    pub fn missing_recommended(self) -> Vec<Capability> {
        [Capability::SysPtrace, Capability::DacReadSearch]
            .into_iter()
            .filter(|c| !self.has(*c))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cap_eff() {
        let root = CapSet::from_status("Name:\tx\nCapEff:\t000001ffffffffff\n");
        assert_eq!(root.missing_required(), vec![]);
        assert_eq!(root.missing_recommended(), vec![]);
        let none = CapSet::from_status("CapEff:\t0000000000000000\n");
        assert_eq!(
            none.missing_required(),
            vec![Capability::Bpf, Capability::Perfmon, Capability::NetAdmin]
        );
        // CAP_SYS_ADMIN alone stands in for CAP_BPF and CAP_PERFMON, not for CAP_NET_ADMIN.
        let admin = CapSet::from_status(&format!("CapEff:\t{:016x}\n", 1u64 << 21));
        assert_eq!(admin.missing_required(), vec![Capability::NetAdmin]);
    }
}
