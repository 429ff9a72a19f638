//! `FlowSample`: the one record the rest of the agent consumes. Its JSON form (one object per
//! line) is what `run --output json` prints and what `replay` reads: a stable contract,
//! documented in the README. Add fields only as optional ones.

use std::{
    net::{IpAddr, Ipv6Addr},
    sync::Arc,
};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// Bytes and packets one owner sent to one destination during one poll window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowSample {
    /// Start of the poll window (RFC 3339, UTC).
    pub window_start: Timestamp,
    /// End of the poll window (RFC 3339, UTC).
    pub window_end: Timestamp,
    /// Who sent the bytes. Shared: every flow of one process points to the same owner.
    pub owner: Arc<Owner>,
    /// Local end (source address/port of the first packet). `None` for untracked volume.
    pub local: Option<Endpoint>,
    /// Destination. `None` for untracked volume (see `untracked`).
    pub remote: Option<Endpoint>,
    /// The name the host resolved for the destination address (the question of the latest
    /// DNS answer that carried it; a CNAME chain gives the name asked for). Absent when no
    /// answer was seen. Shared: every sample to one address points to the same string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_name: Option<Arc<str>>,
    pub protocol: Protocol,
    /// IP-level bytes (IP headers included) sent during the window.
    pub bytes: u64,
    /// Packets sent during the window (a GSO super-packet counts as its segments).
    pub packets: u64,
    /// Number of kernel flows (socket, destination) merged into this sample.
    pub flows: u32,
    /// First packet of the oldest merged flow (kernel time, RFC 3339). Absent for untracked
    /// volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_seen: Option<Timestamp>,
    /// Latest packet of the merged flows (kernel coarse clock: a few ms of resolution).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<Timestamp>,
    /// Set when the bytes could not be kept per socket, with the reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub untracked: Option<UntrackedReason>,
    /// Who opened the conversation, when known: the host `served` the peer (a connection
    /// accepted from a local listener; for UDP, the peer spoke first to a bound port) or
    /// `initiated` it (the host connected out). Absent in traces written before the field
    /// existed and where the agent could not tell; the detector then infers it from the ports
    /// (see `Direction::infer`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
}

/// Who opened a flow's conversation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// The peer came to the host: it is a client of a local service.
    Served,
    /// The host went to the peer: it is a destination the service chose.
    Initiated,
}

/// Linux's default ephemeral port range starts here (`net.ipv4.ip_local_port_range`); Windows
/// and macOS clients use 49152 and up.
const EPHEMERAL_START: u16 = 32_768;

impl Direction {
    /// The JSON name (`served`, `initiated`).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Served => "served",
            Self::Initiated => "initiated",
        }
    }

    /// A best guess from the ports alone, for samples that do not say: a flow whose local
    /// port is below the ephemeral range and below the remote one is a server answering a
    /// client (443 -> 51234); anything else (an ephemeral local port, the usual sign of a
    /// connection made by the host) counts as initiated. Wrong for servers on high ports
    /// talking to clients on lower ones, which is why the agent records the real direction.
    pub fn infer(local_port: u16, remote_port: u16) -> Self {
        if local_port != 0 && local_port < EPHEMERAL_START && local_port < remote_port {
            Self::Served
        } else {
            Self::Initiated
        }
    }
}

/// The process and service behind a flow.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Owner {
    /// How the owner was found.
    pub attribution: Attribution,
    /// Process id (tgid). `None` when unattributed.
    pub pid: Option<u32>,
    /// Kernel command name (15 bytes at most).
    pub comm: Option<String>,
    /// Executable path (`/proc/PID/exe`), when the process was still alive to be read.
    pub exe: Option<String>,
    /// Command line arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cmdline: Vec<String>,
    pub uid: Option<u32>,
    pub user: Option<String>,
    /// cgroup v2 id of the socket.
    pub cgroup_id: Option<u64>,
    /// cgroup v2 path (relative to the cgroup2 root), when the cgroup still exists.
    pub cgroup: Option<String>,
    /// systemd unit derived from the cgroup path (`nginx.service`, `session-3.scope`).
    pub unit: Option<String>,
    /// Container id derived from the cgroup path (docker, containerd, cri-o, podman).
    pub container_id: Option<String>,
    /// The service identity used for grouping: container id, else unit, else exe, else comm.
    pub service: String,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Attribution {
    /// Recorded by `cgroup/sock_create` (or inherited on accept).
    Kernel,
    /// Socket predates the agent: found through `sock_diag` (cookie -> inode) and /proc/*/fd.
    SockDiag,
    /// No owner could be found; the bytes are reported all the same.
    #[default]
    Unattributed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Endpoint {
    pub addr: IpAddr,
    pub port: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    Tcp,
    Udp,
    Icmp,
    Icmpv6,
    /// Untracked volume: the protocol was not recorded.
    Unknown,
    /// Any other IANA protocol number.
    #[serde(untagged)]
    Other(u8),
}

impl Protocol {
    pub fn from_number(n: u8) -> Self {
        match n {
            6 => Self::Tcp,
            17 => Self::Udp,
            1 => Self::Icmp,
            58 => Self::Icmpv6,
            n => Self::Other(n),
        }
    }

    pub fn name(self) -> String {
        match self {
            Self::Tcp => "tcp".into(),
            Self::Udp => "udp".into(),
            Self::Icmp => "icmp".into(),
            Self::Icmpv6 => "icmpv6".into(),
            Self::Unknown => "unknown".into(),
            Self::Other(n) => format!("ip{n}"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UntrackedReason {
    /// The kernel flow table was full (raise `--max-flows`).
    MapFull,
    /// Packets of request/timewait sockets (SYN-ACK, late ACKs) or without a socket.
    NoFullSocket,
    /// Not IPv4/IPv6, or headers unreadable.
    Unparsed,
}

impl UntrackedReason {
    /// The name used in the JSON contract (`map_full`, `no_full_socket`, `unparsed`).
    pub const fn name(self) -> &'static str {
        match self {
            Self::MapFull => "map_full",
            Self::NoFullSocket => "no_full_socket",
            Self::Unparsed => "unparsed",
        }
    }
}

/// Converts a 16-byte address as stored by the kernel (IPv4 v4-mapped) to an `IpAddr`.
pub fn ip_from_kernel(addr: [u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(addr);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> FlowSample {
        FlowSample {
            window_start: "2026-11-26T10:00:00Z".parse().unwrap(),
            window_end: "2026-11-26T10:00:01.5Z".parse().unwrap(),
            owner: Arc::new(Owner {
                attribution: Attribution::Kernel,
                pid: Some(4242),
                comm: Some("nginx".into()),
                exe: Some("/usr/sbin/nginx".into()),
                cmdline: vec!["nginx".into(), "-g".into(), "daemon off;".into()],
                uid: Some(33),
                user: Some("www-data".into()),
                cgroup_id: Some(1234),
                cgroup: Some("/system.slice/nginx.service".into()),
                unit: Some("nginx.service".into()),
                container_id: None,
                service: "nginx.service".into(),
            }),
            local: Some(Endpoint {
                addr: "10.0.0.5".parse().unwrap(),
                port: 443,
            }),
            remote: Some(Endpoint {
                addr: "2001:db8::7".parse().unwrap(),
                port: 51234,
            }),
            remote_name: Some(Arc::from("media.example.org")),
            protocol: Protocol::Tcp,
            bytes: 1_234_567,
            packets: 900,
            flows: 1,
            first_seen: Some("2026-11-26T09:59:58.5Z".parse().unwrap()),
            last_seen: Some("2026-11-26T10:00:01.25Z".parse().unwrap()),
            untracked: None,
            direction: Some(Direction::Served),
        }
    }

    #[test]
    fn json_round_trip() {
        let s = sample();
        let line = serde_json::to_string(&s).unwrap();
        assert!(!line.contains('\n'));
        let back: FlowSample = serde_json::from_str(&line).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn json_field_names_are_the_documented_contract() {
        let v = serde_json::to_value(sample()).unwrap();
        assert_eq!(v["window_start"], "2026-11-26T10:00:00Z");
        assert_eq!(v["owner"]["attribution"], "kernel");
        assert_eq!(v["owner"]["service"], "nginx.service");
        assert_eq!(v["remote"]["addr"], "2001:db8::7");
        assert_eq!(v["remote"]["port"], 51234);
        assert_eq!(v["remote_name"], "media.example.org");
        assert_eq!(v["protocol"], "tcp");
        assert_eq!(v["bytes"], 1_234_567);
        assert_eq!(v["first_seen"], "2026-11-26T09:59:58.5Z");
        assert_eq!(v["last_seen"], "2026-11-26T10:00:01.25Z");
        assert!(v.get("untracked").is_none());
        assert_eq!(v["direction"], "served");
    }

    /// `direction` came after `remote_name`: older lines read as "not recorded", and the
    /// field is left out when unknown, so the agent's lines stay readable by older replays.
    #[test]
    fn lines_without_direction_still_read() {
        let mut v = serde_json::to_value(sample()).unwrap();
        v.as_object_mut().unwrap().remove("direction");
        let back: FlowSample = serde_json::from_value(v).unwrap();
        assert_eq!(back.direction, None);
        let line = serde_json::to_string(&back).unwrap();
        assert!(!line.contains("direction"), "{line}");
        let initiated = FlowSample {
            direction: Some(Direction::Initiated),
            ..sample()
        };
        let line = serde_json::to_string(&initiated).unwrap();
        assert!(line.contains(r#""direction":"initiated""#), "{line}");
    }

    #[test]
    fn direction_is_inferred_from_ports_when_missing() {
        assert_eq!(Direction::infer(443, 51_234), Direction::Served);
        assert_eq!(Direction::infer(8448, 40_000), Direction::Served);
        // NAT gateways may map clients to low ports; still above the server's.
        assert_eq!(Direction::infer(443, 2_000), Direction::Served);
        assert_eq!(Direction::infer(51_234, 443), Direction::Initiated);
        assert_eq!(Direction::infer(40_000, 5432), Direction::Initiated);
        assert_eq!(Direction::infer(0, 0), Direction::Initiated);
    }

    #[test]
    fn untracked_reason_names_are_the_json_names() {
        for why in [
            UntrackedReason::MapFull,
            UntrackedReason::NoFullSocket,
            UntrackedReason::Unparsed,
        ] {
            assert_eq!(serde_json::to_value(why).unwrap(), why.name());
        }
    }

    #[test]
    fn untracked_and_other_protocols_round_trip() {
        let mut s = sample();
        s.local = None;
        s.remote = None;
        s.protocol = Protocol::Other(47);
        s.untracked = Some(UntrackedReason::MapFull);
        s.first_seen = None;
        s.last_seen = None;
        s.remote_name = None;
        s.owner = Arc::new(Owner {
            service: "unattributed".into(),
            ..Owner::default()
        });
        let line = serde_json::to_string(&s).unwrap();
        assert!(line.contains(r#""untracked":"map_full""#), "{line}");
        assert!(line.contains(r#""protocol":47"#), "{line}");
        assert!(!line.contains("remote_name"), "absent, not null: {line}");
        assert_eq!(serde_json::from_str::<FlowSample>(&line).unwrap(), s);
    }

    /// `remote_name` was added after the first release of the contract: lines written
    /// before it (without the field) still read, as "no name".
    #[test]
    fn lines_without_remote_name_still_read() {
        let mut v = serde_json::to_value(sample()).unwrap();
        v.as_object_mut().unwrap().remove("remote_name");
        let back: FlowSample = serde_json::from_value(v).unwrap();
        assert_eq!(back.remote_name, None);
        assert_eq!(back.bytes, sample().bytes);
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let mut v = serde_json::to_value(sample()).unwrap();
        v["surprise"] = 1.into();
        let err = serde_json::from_value::<FlowSample>(v)
            .unwrap_err()
            .to_string();
        assert!(err.contains("surprise"), "{err}");
    }

    #[test]
    fn kernel_addresses_unmap_ipv4() {
        let mapped = monitor_common::packet::v4_mapped([127, 0, 0, 1]);
        assert_eq!(
            ip_from_kernel(mapped),
            "127.0.0.1".parse::<IpAddr>().unwrap()
        );
        let mut v6 = [0u8; 16];
        v6[15] = 1;
        assert_eq!(ip_from_kernel(v6), "::1".parse::<IpAddr>().unwrap());
    }
}
