//! Attribution of sockets created before the agent started (their creation was not seen by
//! `cgroup/sock_create`): `NETLINK_SOCK_DIAG` gives each socket's cookie and inode, and
//! `/proc/*/fd` links name the inode's owner. Only sockets in the agent's network namespace
//! are visible this way; the others keep their cgroup (unit / container) attribution.

use std::{
    collections::{HashMap, HashSet},
    fs, io, mem,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::Path,
};

const NETLINK_SOCK_DIAG: i32 = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct NlMsgHdr {
    len: u32,
    kind: u16,
    flags: u16,
    seq: u32,
    pid: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct InetDiagSockId {
    sport: u16,
    dport: u16,
    src: [u32; 4],
    dst: [u32; 4],
    interface: u32,
    cookie: [u32; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct InetDiagReqV2 {
    family: u8,
    protocol: u8,
    ext: u8,
    pad: u8,
    states: u32,
    id: InetDiagSockId,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Request {
    hdr: NlMsgHdr,
    req: InetDiagReqV2,
}

/// Size of `struct inet_diag_msg` up to and including `idiag_inode`.
const INET_DIAG_MSG_LEN: usize = 72;

/// One socket as `sock_diag` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiagSocket {
    /// `AF_INET` or `AF_INET6`.
    pub family: u8,
    pub cookie: u64,
    pub inode: u64,
    pub uid: u32,
    /// TCP state (`TCP_LISTEN` for listeners); UDP sockets report 7 (close) or 1.
    pub state: u8,
    /// Local port (host order) and address (IPv4 in the first word, network order).
    pub sport: u16,
    pub src: [u32; 4],
}

/// `TCP_LISTEN` in `include/net/tcp_states.h`.
pub const TCP_LISTEN: u8 = 10;

/// Parses the payload of one `SOCK_DIAG_BY_FAMILY` answer (`struct inet_diag_msg`).
pub fn parse_inet_diag_msg(payload: &[u8]) -> Option<DiagSocket> {
    if payload.len() < INET_DIAG_MSG_LEN {
        return None;
    }
    let u32_at =
        |o: usize| u32::from_ne_bytes([payload[o], payload[o + 1], payload[o + 2], payload[o + 3]]);
    // family, state, timer, retrans (4) + sockid: sport, dport (4), src (16), dst (16), if (4)
    let cookie = u64::from(u32_at(44)) | (u64::from(u32_at(48)) << 32);
    // expires, rqueue, wqueue at 52..64, then uid and inode.
    Some(DiagSocket {
        family: payload[0],
        cookie,
        uid: u32_at(64),
        inode: u64::from(u32_at(68)),
        state: payload[1],
        sport: u16::from_be_bytes([payload[4], payload[5]]),
        src: [u32_at(8), u32_at(12), u32_at(16), u32_at(20)],
    })
}

/// Every socket state, for [`dump`].
const ALL_STATES: u32 = u32::MAX;

/// Dumps every TCP socket (IPv4 and IPv6) of this network namespace.
pub fn dump_tcp() -> io::Result<Vec<DiagSocket>> {
    let mut out = Vec::new();
    for family in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
        dump(family, libc::IPPROTO_TCP as u8, ALL_STATES, &mut out)?;
    }
    Ok(out)
}

/// Dumps the listening TCP sockets (IPv4 and IPv6) of this network namespace only: the
/// kernel filters by state, so the answer stays small on a host with many connections.
pub fn dump_tcp_listeners() -> io::Result<Vec<DiagSocket>> {
    let mut out = Vec::new();
    for family in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
        dump(family, libc::IPPROTO_TCP as u8, 1 << TCP_LISTEN, &mut out)?;
    }
    Ok(out)
}

/// The local address of `s` (IPv4-mapped IPv6 addresses as IPv4).
pub fn local_ip(s: &DiagSocket) -> std::net::IpAddr {
    if i32::from(s.family) == libc::AF_INET {
        std::net::Ipv4Addr::from(s.src[0].to_ne_bytes()).into()
    } else {
        let mut bytes = [0u8; 16];
        for (chunk, word) in bytes.as_chunks_mut::<4>().0.iter_mut().zip(s.src) {
            *chunk = word.to_ne_bytes();
        }
        std::net::Ipv6Addr::from(bytes).to_canonical()
    }
}

/// Whether `s` was accepted from one of `listeners`: it has a listener's local port, on the
/// listener's address or under a wildcard listener. (An outgoing connection bound to a
/// listening port would match too; naming the process that holds it is right either way.)
pub fn accepted_from(s: &DiagSocket, listeners: &[DiagSocket]) -> bool {
    s.state != TCP_LISTEN
        && listeners.iter().any(|l| {
            l.state == TCP_LISTEN && l.sport == s.sport && (l.src == [0; 4] || l.src == s.src)
        })
}

/// Dumps every TCP and UDP socket (IPv4 and IPv6) of this network namespace.
pub fn dump_all() -> io::Result<Vec<DiagSocket>> {
    let mut out = Vec::new();
    for family in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
        for protocol in [libc::IPPROTO_TCP as u8, libc::IPPROTO_UDP as u8] {
            dump(family, protocol, ALL_STATES, &mut out)?;
        }
    }
    Ok(out)
}

fn dump(family: u8, protocol: u8, states: u32, out: &mut Vec<DiagSocket>) -> io::Result<()> {
    // SAFETY: plain socket(2); the fd is owned right away.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by socket(2) and is not owned elsewhere.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let request = Request {
        hdr: NlMsgHdr {
            len: mem::size_of::<Request>() as u32,
            kind: SOCK_DIAG_BY_FAMILY,
            flags: NLM_F_REQUEST | NLM_F_DUMP,
            seq: 1,
            pid: 0,
        },
        req: InetDiagReqV2 {
            family,
            protocol,
            states,
            ..InetDiagReqV2::default()
        },
    };
    // SAFETY: sending a fully initialised repr(C) value of the given size.
    let sent = unsafe {
        libc::send(
            fd.as_raw_fd(),
            (&raw const request).cast(),
            mem::size_of::<Request>(),
            0,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: receiving into an owned buffer of the given length.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut msgs = &buf[..n as usize];
        while msgs.len() >= mem::size_of::<NlMsgHdr>() {
            let len = u32::from_ne_bytes([msgs[0], msgs[1], msgs[2], msgs[3]]) as usize;
            let kind = u16::from_ne_bytes([msgs[4], msgs[5]]);
            if len < mem::size_of::<NlMsgHdr>() || len > msgs.len() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "bad netlink message length",
                ));
            }
            match kind {
                NLMSG_DONE => return Ok(()),
                NLMSG_ERROR => {
                    let errno = msgs
                        .get(16..20)
                        .map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                    // EINVAL/ENOENT: this protocol's diag module is absent; nothing to list.
                    if errno == 0 || errno == -libc::ENOENT || errno == -libc::EINVAL {
                        return Ok(());
                    }
                    return Err(io::Error::from_raw_os_error(-errno));
                }
                _ => {
                    if let Some(s) = parse_inet_diag_msg(&msgs[mem::size_of::<NlMsgHdr>()..len]) {
                        out.push(s);
                    }
                }
            }
            let aligned = (len + 3) & !3;
            msgs = msgs.get(aligned..).unwrap_or(&[]);
        }
    }
}

/// Finds which process holds each wanted socket inode by reading `proc_root/*/fd/*` links.
/// Stops as soon as every inode is found. A socket shared by several processes (fork)
/// is attributed to the lowest pid, normally the parent.
pub fn owners_of<S: std::hash::BuildHasher>(
    proc_root: &Path,
    wanted: &HashSet<u64, S>,
) -> HashMap<u64, u32> {
    let mut found = HashMap::new();
    if wanted.is_empty() {
        return found;
    }
    let Ok(dir) = fs::read_dir(proc_root) else {
        return found;
    };
    let mut pids: Vec<u32> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    scan_fds(proc_root, &pids, wanted, &mut found);
    found
}

/// Like [`owners_of`], among `pids` only (in that order).
pub fn owners_among<S: std::hash::BuildHasher>(
    proc_root: &Path,
    pids: &[u32],
    wanted: &HashSet<u64, S>,
) -> HashMap<u64, u32> {
    let mut found = HashMap::new();
    if !wanted.is_empty() {
        scan_fds(proc_root, pids, wanted, &mut found);
    }
    found
}

/// The children of `pid`: `/proc/PID/task/*/children` where the kernel has it
/// (`CONFIG_PROC_CHILDREN`, as Debian's), else every process whose `/proc/*/stat` names
/// `pid` as its parent (this project's 6.18 machines lack the former).
pub fn children_of(proc_root: &Path, pid: u32) -> Vec<u32> {
    let Ok(tasks) = fs::read_dir(proc_root.join(pid.to_string()).join("task")) else {
        return Vec::new();
    };
    let lists: Vec<String> = tasks
        .flatten()
        .filter_map(|t| fs::read_to_string(t.path().join("children")).ok())
        .collect();
    let mut out: Vec<u32> = if lists.is_empty() {
        let Ok(dir) = fs::read_dir(proc_root) else {
            return Vec::new();
        };
        dir.flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|&child| {
                fs::read_to_string(proc_root.join(child.to_string()).join("stat"))
                    .ok()
                    .and_then(|stat| parent_in_stat(&stat))
                    == Some(pid)
            })
            .collect()
    } else {
        lists
            .iter()
            .flat_map(|text| text.split_whitespace().filter_map(|p| p.parse().ok()))
            .collect()
    };
    out.sort_unstable();
    out.dedup();
    out
}

/// The parent pid in a `/proc/PID/stat` line: the second field after the command name,
/// which is in parentheses and may itself hold spaces and parentheses.
/// The parent of `pid` (`/proc/PID/stat`), while it runs.
pub fn parent_of(proc_root: &Path, pid: u32) -> Option<u32> {
    parent_in_stat(&fs::read_to_string(proc_root.join(pid.to_string()).join("stat")).ok()?)
}

fn parent_in_stat(stat: &str) -> Option<u32> {
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

fn scan_fds<S: std::hash::BuildHasher>(
    proc_root: &Path,
    pids: &[u32],
    wanted: &HashSet<u64, S>,
    found: &mut HashMap<u64, u32>,
) {
    let (mut scanned, mut sockets_seen) = (0usize, 0usize);
    for &pid in pids {
        scanned += 1;
        let Ok(fds) = fs::read_dir(proc_root.join(pid.to_string()).join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = fs::read_link(fd.path()) else {
                continue;
            };
            let Some(inode) = socket_inode(&target.to_string_lossy()) else {
                continue;
            };
            sockets_seen += 1;
            if wanted.contains(&inode) {
                found.entry(inode).or_insert(pid);
            }
        }
        if found.len() == wanted.len() {
            break;
        }
    }
    tracing::debug!(
        processes = scanned,
        socket_fds = sockets_seen,
        wanted = wanted.len(),
        found = found.len(),
        "scanned /proc/*/fd"
    );
}

/// `socket:[12345]` -> 12345.
pub fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    #[test]
    fn parses_socket_links() {
        assert_eq!(socket_inode("socket:[98765]"), Some(98765));
        assert_eq!(socket_inode("pipe:[1]"), None);
        assert_eq!(socket_inode("socket:[x]"), None);
    }

    #[test]
    fn parses_inet_diag_msg() {
        let mut p = vec![0u8; INET_DIAG_MSG_LEN];
        p[44..48].copy_from_slice(&0x1122_3344u32.to_ne_bytes());
        p[48..52].copy_from_slice(&0x5566_7788u32.to_ne_bytes());
        p[64..68].copy_from_slice(&33u32.to_ne_bytes());
        p[68..72].copy_from_slice(&4242u32.to_ne_bytes());
        let s = parse_inet_diag_msg(&p).unwrap();
        assert_eq!(
            s,
            DiagSocket {
                family: 0,
                cookie: 0x5566_7788_1122_3344,
                inode: 4242,
                uid: 33,
                state: 0,
                sport: 0,
                src: [0; 4],
            }
        );
        assert_eq!(parse_inet_diag_msg(&p[..71]), None);
    }

    /// `sock_diag` needs no privilege for listing: this checks the real netlink exchange and
    /// the /proc scan against a socket this test owns.
    #[test]
    fn finds_this_process_listening_socket() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let inode = {
            let fd = listener.as_raw_fd();
            let link = fs::read_link(format!("/proc/self/fd/{fd}")).unwrap();
            socket_inode(&link.to_string_lossy()).unwrap()
        };
        let all = dump_all().unwrap();
        let mine = all
            .iter()
            .find(|s| s.inode == inode)
            .expect("listener in sock_diag dump");
        assert_ne!(mine.cookie, 0);
        let owners = owners_of(Path::new("/proc"), &HashSet::from([inode]));
        assert_eq!(owners.get(&inode), Some(&std::process::id()));
        assert_eq!(mine.state, TCP_LISTEN);
        assert_eq!(mine.sport, listener.local_addr().unwrap().port());
    }

    /// A connection accepted from a listener is recognised by its local port and address;
    /// the listener itself and the connecting side are not.
    #[test]
    fn recognises_accepted_connections() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let all = dump_tcp().unwrap();
        let cookie_of = |fd: i32| {
            let link = fs::read_link(format!("/proc/self/fd/{fd}")).unwrap();
            let inode = socket_inode(&link.to_string_lossy()).unwrap();
            *all.iter().find(|s| s.inode == inode).expect("in the dump")
        };
        let (l, c, a) = (
            cookie_of(listener.as_raw_fd()),
            cookie_of(client.as_raw_fd()),
            cookie_of(server.as_raw_fd()),
        );
        let listeners: Vec<DiagSocket> = all
            .iter()
            .filter(|s| s.state == TCP_LISTEN)
            .copied()
            .collect();
        assert!(accepted_from(&a, &listeners));
        assert!(!accepted_from(&c, &listeners));
        assert!(!accepted_from(&l, &listeners));
        assert_eq!(a.src, l.src);
    }

    /// The listeners-only dump holds this test's listeners (IPv4 and IPv6, with their
    /// addresses) and none of its connections.
    #[test]
    fn the_listeners_dump_has_listeners_only() {
        let v4 = TcpListener::bind("127.0.0.1:0").unwrap();
        let v6 = TcpListener::bind("[::1]:0").unwrap();
        let client = std::net::TcpStream::connect(v4.local_addr().unwrap()).unwrap();
        let (accepted, _) = v4.accept().unwrap();
        let listeners = dump_tcp_listeners().unwrap();
        assert!(listeners.iter().all(|s| s.state == TCP_LISTEN));
        for l in [&v4, &v6] {
            let addr = l.local_addr().unwrap();
            assert!(
                listeners
                    .iter()
                    .any(|s| s.sport == addr.port() && local_ip(s) == addr.ip()),
                "{addr} among {listeners:?}"
            );
        }
        for connection in [client.as_raw_fd(), accepted.as_raw_fd()] {
            let link = fs::read_link(format!("/proc/self/fd/{connection}")).unwrap();
            let inode = socket_inode(&link.to_string_lossy()).unwrap();
            assert!(listeners.iter().all(|s| s.inode != inode), "{listeners:?}");
        }
    }

    #[test]
    fn local_ip_reads_both_families_and_unmaps() {
        let mut s = DiagSocket {
            family: libc::AF_INET as u8,
            cookie: 0,
            inode: 0,
            uid: 0,
            state: TCP_LISTEN,
            sport: 80,
            src: [u32::from_ne_bytes([127, 0, 0, 2]), 0, 0, 0],
        };
        assert_eq!(
            local_ip(&s),
            "127.0.0.2".parse::<std::net::IpAddr>().unwrap()
        );
        s.family = libc::AF_INET6 as u8;
        s.src = [
            0,
            0,
            u32::from_ne_bytes([0, 0, 0xff, 0xff]),
            u32::from_ne_bytes([10, 0, 0, 1]),
        ];
        assert_eq!(
            local_ip(&s),
            "10.0.0.1".parse::<std::net::IpAddr>().unwrap()
        );
        s.src = [0, 0, 0, u32::from_ne_bytes([0, 0, 0, 1])];
        assert_eq!(local_ip(&s), "::1".parse::<std::net::IpAddr>().unwrap());
    }

    #[test]
    fn parent_pid_from_stat_despite_odd_command_names() {
        assert_eq!(parent_in_stat("42 (nginx) S 7 42 42 0 -1"), Some(7));
        assert_eq!(parent_in_stat("43 (a) b (c) R 9 43 43 0"), Some(9));
        assert_eq!(parent_in_stat("garbage"), None);
    }

    /// This test process's child is found, whichever way the kernel offers.
    #[test]
    fn finds_a_child_process() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .expect("spawn sleep");
        let children = children_of(Path::new("/proc"), std::process::id());
        let _ = child.kill();
        let _ = child.wait();
        assert!(children.contains(&child.id()), "{children:?}");
    }

    #[test]
    fn a_wildcard_listener_covers_every_local_address() {
        let s = |state, sport, first| DiagSocket {
            family: libc::AF_INET as u8,
            cookie: 1,
            inode: 1,
            uid: 0,
            state,
            sport,
            src: [first, 0, 0, 0],
        };
        let any = [s(TCP_LISTEN, 443, 0)];
        let one = [s(TCP_LISTEN, 443, 0x0100_007f)];
        assert!(accepted_from(&s(1, 443, 0x0200_007f), &any));
        assert!(!accepted_from(&s(1, 443, 0x0200_007f), &one));
        assert!(accepted_from(&s(1, 443, 0x0100_007f), &one));
        assert!(!accepted_from(&s(1, 444, 0x0100_007f), &any));
    }
}
