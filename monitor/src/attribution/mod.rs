//! Who sent a flow: the owner recorded by the kernel (or found through `sock_diag` for sockets
//! older than the agent), enriched from /proc, the cgroup tree and the user database; and to
//! whom, by name, from the DNS answers the host received ([`names`]).

pub mod cgroup_path;
pub mod cgroups;
pub mod names;
pub mod process;
pub mod sockdiag;

use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use monitor_common::FlowCounters;

use crate::flow::{Attribution, Owner};

/// How many polls a socket of unknown owner is looked up before it is left unattributed.
const LEGACY_LOOKUP_TRIES: u8 = 3;

#[derive(Clone, Copy, Debug)]
struct LegacyOwner {
    pid: Option<u32>,
    uid: Option<u32>,
    tries: u8,
}

/// What makes two flows' owners the same, for the owner cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum OwnerKey {
    /// Recorded by the kernel: the process, its name and user, and the socket's cgroup.
    Kernel {
        tgid: u32,
        uid: u32,
        comm: [u8; 16],
        cgroup_id: u64,
    },
    /// A socket older than the agent: looked up per socket.
    Legacy { cookie: u64, cgroup_id: u64 },
    /// An accepted connection held by another process than the listener's creator (found
    /// in its fd table, or recorded by the kernel as the one that closed it).
    Holder {
        pid: u32,
        cgroup_id: u64,
        attribution: Attribution,
    },
}

/// How long a resolved owner is reused before /proc and the cgroup tree are consulted again.
const OWNER_TTL: Duration = Duration::from_secs(10);
/// Bound on cached owners (the cache is cleared past it).
const OWNER_CACHE_MAX: usize = 65_536;

pub struct Attributor {
    owners: HashMap<OwnerKey, (Instant, Arc<Owner>)>,
    proc_root: PathBuf,
    procs: process::ProcessCache,
    cgroups: cgroups::CgroupPaths,
    users: HashMap<u32, Option<String>>,
    legacy: HashMap<u64, LegacyOwner>,
    /// TCP sockets with a kernel owner, checked once: for a connection accepted by a child
    /// of the listener's creator (a pre-forked server's worker: nginx, Apache, gunicorn),
    /// the worker holding it; else `None`. The kernel's record is the listener's, copied at
    /// accept, so it names the master; the worker is who sends.
    accepted: rustc_hash::FxHashMap<u64, Holder>,
    /// Who closed each socket released since the last poll (the kernel's release event), for
    /// connections closed before the agent could look for their holder.
    closers: rustc_hash::FxHashMap<u64, u32>,
}

/// Who holds a TCP socket with a kernel owner (see [`Attributor::resolve_accepted`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Holder {
    /// The kernel's owner is right (not an accepted connection, or held by its creator).
    Kernel,
    /// Accepted, not yet found in a child's fd table (still in the accept queue, or the
    /// poll came between the kernel's first ACK and `accept`): looked up again, this many
    /// times so far.
    Searching(u8),
    /// Accepted, held by this child of the listener's creator.
    Worker(u32),
    /// Closed by this process, not the kernel's owner, before it was found in an fd table
    /// (a connection served and closed within one poll).
    Closer(u32),
}

/// The kernel threads' parent: a close deferred to a kernel worker names no holder.
const KTHREADD_PID: u32 = 2;

/// Polls an accepted socket is looked for in the listener creator's children.
const HOLDER_LOOKUP_TRIES: u8 = 3;

impl Attributor {
    pub fn new(cgroup_root: PathBuf) -> Self {
        let proc_root = PathBuf::from("/proc");
        Self {
            owners: HashMap::new(),
            procs: process::ProcessCache::new(proc_root.clone()),
            proc_root,
            cgroups: cgroups::CgroupPaths::new(cgroup_root),
            users: HashMap::new(),
            legacy: HashMap::new(),
            accepted: rustc_hash::FxHashMap::default(),
            closers: rustc_hash::FxHashMap::default(),
        }
    }

    /// Records the owner of every TCP/UDP socket that exists now, i.e. every socket created
    /// before `cgroup/sock_create` was attached. Taken once at start-up, so a pre-existing
    /// socket is attributed even if its process exits before the first poll. Returns how many
    /// sockets were found and how many of them have a known owner.
    pub fn snapshot_existing(&mut self) -> (usize, usize) {
        let diag = match sockdiag::dump_all() {
            Ok(d) => d,
            Err(error) => {
                tracing::warn!(%error, "sock_diag dump failed: sockets older than the agent stay unattributed");
                return (0, 0);
            }
        };
        let inodes: HashSet<u64> = diag.iter().map(|s| s.inode).filter(|i| *i != 0).collect();
        let mut owners = sockdiag::owners_of(&self.proc_root, &inodes);
        if owners.is_empty() && !inodes.is_empty() {
            // Every socket with a file has an owner somewhere in /proc: finding none means
            // the scan failed as a whole (seen once, transiently, in testing). Try again.
            tracing::warn!(
                sockets = inodes.len(),
                "no owner found in /proc/*/fd for any socket; scanning again"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
            owners = sockdiag::owners_of(&self.proc_root, &inodes);
        }
        let mut known = 0;
        for s in &diag {
            let pid = owners.get(&s.inode).copied();
            if let Some(pid) = pid {
                known += 1;
                // Read the process now: it may be gone by the first poll.
                let _ = self.procs.get(pid);
            }
            self.legacy.insert(
                s.cookie,
                LegacyOwner {
                    pid,
                    uid: Some(s.uid),
                    tries: 1,
                },
            );
        }
        (diag.len(), known)
    }

    /// Looks up, in one `sock_diag` dump and one /proc scan, the owners of sockets the kernel
    /// has no owner for and the start-up snapshot did not name.
    pub fn resolve_legacy(&mut self, cookies: impl IntoIterator<Item = u64>) {
        let pending: HashSet<u64> = cookies
            .into_iter()
            .filter(|c| {
                self.legacy
                    .get(c)
                    .is_none_or(|o| o.pid.is_none() && o.tries < LEGACY_LOOKUP_TRIES)
            })
            .collect();
        if pending.is_empty() {
            return;
        }
        let diag = match sockdiag::dump_all() {
            Ok(d) => d,
            Err(error) => {
                tracing::warn!(%error, "sock_diag dump failed: sockets older than the agent stay unattributed");
                Vec::new()
            }
        };
        let by_cookie: HashMap<u64, sockdiag::DiagSocket> = diag
            .into_iter()
            .filter(|s| pending.contains(&s.cookie))
            .map(|s| (s.cookie, s))
            .collect();
        let inodes: HashSet<u64> = by_cookie
            .values()
            .map(|s| s.inode)
            .filter(|i| *i != 0)
            .collect();
        let owners = sockdiag::owners_of(&self.proc_root, &inodes);
        for cookie in pending {
            let entry = self.legacy.entry(cookie).or_insert(LegacyOwner {
                pid: None,
                uid: None,
                tries: 0,
            });
            entry.tries += 1;
            if let Some(s) = by_cookie.get(&cookie) {
                entry.uid = Some(s.uid);
                entry.pid = owners.get(&s.inode).copied();
            }
        }
    }

    /// Finds the worker holding each TCP socket not seen before whose kernel owner is the
    /// creator of the listener it was accepted from: one `sock_diag` dump of TCP sockets,
    /// then the fd tables of the owner's children only. A socket the owner holds itself, an
    /// outgoing connection, or one closed meanwhile keeps the kernel's owner.
    pub fn resolve_accepted(&mut self, sockets: impl IntoIterator<Item = (u64, u32)>) {
        let fresh: Vec<(u64, u32)> = sockets
            .into_iter()
            .filter(|(cookie, _)| match self.accepted.get(cookie) {
                None => true,
                Some(Holder::Searching(tries)) => *tries < HOLDER_LOOKUP_TRIES,
                Some(_) => false,
            })
            .collect();
        if fresh.is_empty() {
            return;
        }
        if self.accepted.len() + fresh.len() > OWNER_CACHE_MAX {
            self.accepted.clear();
        }
        let diag = match sockdiag::dump_tcp() {
            Ok(d) => d,
            Err(error) => {
                tracing::warn!(%error, "sock_diag dump failed: accepted connections keep the listener's owner");
                Vec::new()
            }
        };
        let listeners: Vec<sockdiag::DiagSocket> = diag
            .iter()
            .filter(|s| s.state == sockdiag::TCP_LISTEN)
            .copied()
            .collect();
        let by_cookie: HashMap<u64, &sockdiag::DiagSocket> =
            diag.iter().map(|s| (s.cookie, s)).collect();
        // Accepted sockets by the listener creator's pid.
        let mut by_owner: HashMap<u32, Vec<(u64, u64)>> = HashMap::new();
        for (cookie, tgid) in fresh {
            // Closed already: in no fd table, but the kernel said who closed it.
            if let Some(closer) = self.closer_other_than(cookie, tgid) {
                tracing::debug!(
                    cookie,
                    owner = tgid,
                    closer,
                    "closed connection: held by its closer"
                );
                self.accepted.insert(cookie, Holder::Closer(closer));
                continue;
            }
            let entry = self.accepted.entry(cookie).or_insert(Holder::Searching(0));
            let found = by_cookie.get(&cookie);
            let accepted = found.filter(|s| sockdiag::accepted_from(s, &listeners));
            tracing::debug!(
                cookie,
                owner = tgid,
                in_dump = found.is_some(),
                accepted = accepted.is_some(),
                inode = found.map_or(0, |s| s.inode),
                "accepted connection? looking for its holder"
            );
            let Some(s) = accepted else {
                *entry = Holder::Kernel;
                continue;
            };
            if let Holder::Searching(tries) = entry {
                *tries += 1;
            }
            if s.inode != 0 {
                by_owner.entry(tgid).or_default().push((cookie, s.inode));
            }
        }
        for (tgid, sockets) in by_owner {
            let children = sockdiag::children_of(&self.proc_root, tgid);
            if children.is_empty() {
                // A server without workers holds its connections itself.
                for (cookie, _) in sockets {
                    self.accepted.insert(cookie, Holder::Kernel);
                }
                continue;
            }
            let inodes: HashSet<u64> = sockets.iter().map(|(_, inode)| *inode).collect();
            let holders = sockdiag::owners_among(&self.proc_root, &children, &inodes);
            for (cookie, inode) in sockets {
                let holder = holders.get(&inode).copied();
                tracing::debug!(cookie, owner = tgid, children = ?children, holder, "accepted connection: holder search");
                if let Some(pid) = holder {
                    self.accepted.insert(cookie, Holder::Worker(pid));
                }
            }
        }
    }

    /// The worker holding accepted socket `cookie`, once found, and how it was found.
    pub fn holder(&self, cookie: u64) -> Option<(u32, Attribution)> {
        match self.accepted.get(&cookie) {
            Some(Holder::Worker(pid)) => Some((*pid, Attribution::SockDiag)),
            Some(Holder::Closer(pid)) => Some((*pid, Attribution::Kernel)),
            _ => None,
        }
    }

    /// The kernel says process `tgid` (0: no process) closed socket `cookie`.
    pub fn note_closer(&mut self, cookie: u64, tgid: u32) {
        if tgid == 0 {
            return;
        }
        if self.closers.len() >= OWNER_CACHE_MAX {
            self.closers.clear();
        }
        self.closers.insert(cookie, tgid);
    }

    /// The process that closed `cookie`, if it is not `owner` (the kernel's record) and not a
    /// kernel thread (a deferred close runs in a kworker, which held nothing).
    fn closer_other_than(&self, cookie: u64, owner: u32) -> Option<u32> {
        let closer = *self.closers.get(&cookie)?;
        if closer == owner {
            return None;
        }
        let parent = sockdiag::parent_of(&self.proc_root, closer);
        (parent != Some(KTHREADD_PID) && closer != KTHREADD_PID).then_some(closer)
    }

    /// Reads a process's /proc entry now (it announced itself by creating a socket), so its
    /// executable is known even if it exits before the next poll.
    pub fn prime_process(&mut self, pid: u32) {
        self.procs.refresh(pid);
    }

    /// Drops what is remembered of a closed socket.
    pub fn forget_socket(&mut self, cookie: u64) {
        // (A holder's owner is shared by the worker's connections: it expires by TTL.)
        self.accepted.remove(&cookie);
        self.closers.remove(&cookie);
        if self.legacy.remove(&cookie).is_some() {
            self.owners
                .retain(|k, _| !matches!(k, OwnerKey::Legacy { cookie: c, .. } if *c == cookie));
        }
    }

    /// The owner of a flow of socket `cookie`.
    /// The owner of a flow of socket `cookie`, shared by all flows of the same owner.
    pub fn owner(&mut self, cookie: u64, flow: &FlowCounters) -> Arc<Owner> {
        let k = &flow.owner;
        let holder = self.holder(cookie);
        let key = if let Some((pid, attribution)) = holder {
            OwnerKey::Holder {
                pid,
                cgroup_id: flow.cgroup_id,
                attribution,
            }
        } else if k.is_known() {
            OwnerKey::Kernel {
                tgid: k.tgid,
                uid: k.uid,
                comm: k.comm,
                cgroup_id: flow.cgroup_id,
            }
        } else {
            OwnerKey::Legacy {
                cookie,
                cgroup_id: flow.cgroup_id,
            }
        };
        if let Some((at, owner)) = self.owners.get(&key)
            && at.elapsed() < OWNER_TTL
        {
            return Arc::clone(owner);
        }
        if self.owners.len() >= OWNER_CACHE_MAX {
            self.owners.clear();
        }
        let owner = Arc::new(self.resolve_owner(cookie, flow, holder));
        self.owners
            .insert(key, (Instant::now(), Arc::clone(&owner)));
        owner
    }

    fn resolve_owner(
        &mut self,
        cookie: u64,
        flow: &FlowCounters,
        holder: Option<(u32, Attribution)>,
    ) -> Owner {
        let mut owner = Owner::default();
        let kernel = &flow.owner;
        if let Some((pid, attribution)) = holder {
            // Found through sock_diag and the fd tables, or the kernel's closer; name and
            // user from /proc below.
            owner.attribution = attribution;
            owner.pid = Some(pid);
        } else if kernel.is_known() {
            owner.attribution = Attribution::Kernel;
            owner.pid = Some(kernel.tgid);
            owner.uid = Some(kernel.uid);
            owner.comm = Some(comm_string(&kernel.comm));
        } else if let Some(legacy) = self.legacy.get(&cookie) {
            owner.uid = legacy.uid;
            if let Some(pid) = legacy.pid {
                owner.attribution = Attribution::SockDiag;
                owner.pid = Some(pid);
            }
        }
        if let Some(pid) = owner.pid
            && let Some(info) = self.procs.get(pid)
        {
            owner.exe = info.exe;
            owner.cmdline = info.cmdline;
            if owner.comm.is_none() {
                owner.comm = info.comm;
            }
            if owner.uid.is_none() {
                owner.uid = info.uid;
            }
        }
        owner.user = owner.uid.and_then(|uid| self.user_name(uid));
        self.fill_cgroup(&mut owner, flow.cgroup_id);
        owner.service = service_identity(&owner);
        owner
    }

    /// Owner of bytes that could not be kept per socket.
    pub fn unattributed() -> Arc<Owner> {
        let mut owner = Owner::default();
        owner.service = service_identity(&owner);
        Arc::new(owner)
    }

    fn fill_cgroup(&mut self, owner: &mut Owner, cgroup_id: u64) {
        if cgroup_id == 0 {
            return;
        }
        owner.cgroup_id = Some(cgroup_id);
        if let Some(path) = self.cgroups.path(cgroup_id) {
            let id = cgroup_path::identify(&path);
            owner.unit = id.unit;
            owner.container_id = id.container_id;
            owner.cgroup = Some(path);
        }
    }

    fn user_name(&mut self, uid: u32) -> Option<String> {
        self.users
            .entry(uid)
            .or_insert_with(|| {
                nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                    .ok()
                    .flatten()
                    .map(|u| u.name)
            })
            .clone()
    }
}

/// The kernel's NUL-padded task name as a string.
pub fn comm_string(comm: &[u8; 16]) -> String {
    let end = comm.iter().position(|b| *b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

/// The identity flows are grouped by: the container, else the systemd service, else the
/// executable, else the command name. Session and init scopes are not services: processes
/// started from a shell are grouped by executable.
pub fn service_identity(owner: &Owner) -> String {
    if let Some(id) = &owner.container_id {
        return format!("container:{}", &id[..id.len().min(12)]);
    }
    if let Some(unit) = &owner.unit
        && unit.ends_with(".service")
        && !unit.starts_with("user@")
    {
        return unit.clone();
    }
    if let Some(exe) = &owner.exe {
        return exe.clone();
    }
    if let Some(comm) = &owner.comm {
        return comm.clone();
    }
    "unattributed".to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closer_is_the_holder_unless_it_is_the_owner_or_a_kernel_thread() {
        let root = std::env::temp_dir().join(format!("em-closer-{}", std::process::id()));
        for (pid, parent) in [(501, 400), (77, KTHREADD_PID)] {
            let dir = root.join(pid.to_string());
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("stat"), format!("{pid} (w (x)) S {parent} 1 1 0")).unwrap();
        }
        let mut a = Attributor::new(root.join("no-cgroups"));
        a.proc_root = root.clone();
        a.note_closer(1, 501);
        a.note_closer(2, 400);
        a.note_closer(3, 77);
        a.note_closer(4, 0);
        a.note_closer(5, 999);
        assert_eq!(a.closer_other_than(1, 400), Some(501), "the worker");
        assert_eq!(a.closer_other_than(2, 400), None, "the owner itself");
        assert_eq!(
            a.closer_other_than(3, 400),
            None,
            "a kworker's deferred close"
        );
        assert_eq!(a.closer_other_than(4, 400), None, "no process");
        assert_eq!(
            a.closer_other_than(5, 400),
            Some(999),
            "exited since: still who held it"
        );
        a.forget_socket(1);
        assert_eq!(a.closer_other_than(1, 400), None);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn comm_strings() {
        let mut c = [0u8; 16];
        c[..5].copy_from_slice(b"nginx");
        assert_eq!(comm_string(&c), "nginx");
        assert_eq!(comm_string(&[b'a'; 16]), "a".repeat(16));
    }

    #[test]
    fn service_identity_precedence() {
        let mut o = Owner {
            comm: Some("python".into()),
            ..Owner::default()
        };
        assert_eq!(service_identity(&o), "python");
        o.exe = Some("/usr/bin/python3.11".into());
        assert_eq!(service_identity(&o), "/usr/bin/python3.11");
        o.unit = Some("session-4.scope".into());
        assert_eq!(service_identity(&o), "/usr/bin/python3.11");
        o.unit = Some("matrix-synapse.service".into());
        assert_eq!(service_identity(&o), "matrix-synapse.service");
        o.container_id = Some("4f1c4a8d2e7b9c0f1a2b".into());
        assert_eq!(service_identity(&o), "container:4f1c4a8d2e7b");
        assert_eq!(service_identity(&Owner::default()), "unattributed");
    }
}
