//! Runs the real `count_egress` and `watch_ingress` programs on crafted packets with
//! `BPF_PROG_TEST_RUN`, without attaching them anywhere: the parser is exercised inside the
//! kernel, under the verifier. On a kernel older than `count_egress`'s row (5.10) it is its
//! fallback `count_egress_ns` that runs, as in the agent.

use std::{
    io,
    os::fd::{AsFd as _, AsRawFd as _},
};

use aya::{
    Ebpf,
    maps::{HashMap, PerCpuArray, RingBuf},
    programs::CgroupSkb,
};
use monitor::contain::kernel::Enforcer;
use monitor_common::{
    CONTAIN_BUCKETS_MAP, CONTAIN_EPOCH_MAP, CONTAIN_RULES_MAP, DNS_ANSWERS_MAP, DnsCapture,
    ERRORS_MAP, FLOWS_MAP, FlowCounters, FlowKey, PROG_INGRESS, UDP_PEERS_MAP, UNTRACKED_MAP,
    UdpPeerKey, Volume,
};

const BPF_PROG_TEST_RUN: libc::c_long = 10;

/// `union bpf_attr` for `BPF_PROG_TEST_RUN`.
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

/// The egress program loaded (not attached) with its own maps.
pub struct EgressUnderTest {
    ebpf: Ebpf,
    name: &'static str,
}

impl EgressUnderTest {
    /// Every egress program the table says this kernel accepts: `count_egress` and its
    /// fallback `count_egress_ns` from 5.11, the fallback alone on 5.10. So the fallback's
    /// counting is proven on every kernel the suite runs on, not only where it is attached.
    pub fn all_for_this_kernel() -> Vec<Self> {
        use monitor::kernel::compat;
        let version = compat::parse_release(&compat::running_release());
        compat::all_programs()
            .filter(|p| p.attach == compat::AttachPoint::SkbEgress)
            .filter(|p| version >= compat::parse_release(p.min_kernel))
            .map(|p| Self::load_named(p.name))
            .collect()
    }

    fn load_named(name: &'static str) -> Self {
        Self {
            ebpf: load_skb_program(name),
            name,
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Runs the program `repeat` times on `ip_packet` (an Ethernet header is prepended, as
    /// the test-run interface requires); returns the program's verdict.
    pub fn run(&mut self, ethertype: u16, ip_packet: &[u8], repeat: u32) -> io::Result<u32> {
        self.run_timed(ethertype, ip_packet, repeat)
            .map(|(verdict, _)| verdict)
    }

    /// Like [`Self::run`], also returning the kernel's average run time in ns (measured around
    /// the whole repeat loop, so without the per-run clock reads of `bpf_stats`).
    pub fn run_timed(
        &mut self,
        ethertype: u16,
        ip_packet: &[u8],
        repeat: u32,
    ) -> io::Result<(u32, u32)> {
        test_run(&mut self.ebpf, self.name, ethertype, ip_packet, repeat)
    }

    pub fn flows(&self) -> Vec<(FlowKey, FlowCounters)> {
        let map: HashMap<_, FlowKey, FlowCounters> =
            HashMap::try_from(self.ebpf.map(FLOWS_MAP).expect("FLOWS")).expect("hash map");
        map.iter().map(|r| r.expect("read flow")).collect()
    }

    pub fn error(&self, index: u32) -> u64 {
        error_count(&self.ebpf, index)
    }

    pub fn untracked(&self, index: u32) -> Volume {
        let map: PerCpuArray<_, Volume> =
            PerCpuArray::try_from(self.ebpf.map(UNTRACKED_MAP).expect("UNTRACKED")).expect("array");
        map.get(&index, 0)
            .expect("read")
            .iter()
            .fold(Volume::default(), |a, v| Volume {
                bytes: a.bytes + v.bytes,
                packets: a.packets + v.packets,
            })
    }
}

/// Several egress programs loaded (not attached) in one object, so that they share `FLOWS`
/// and the containment maps as the agent's would, with the agent's own [`Enforcer`] on those
/// maps: containments are set exactly as the agent sets them.
pub struct EgressWithEnforcer {
    ebpf: Ebpf,
    enforcer: Enforcer,
}

impl EgressWithEnforcer {
    pub fn load(programs: &[&str]) -> Self {
        let mut ebpf = load_skb_programs(programs);
        let mut take = |name: &str| ebpf.take_map(name).unwrap_or_else(|| panic!("map {name}"));
        let rules = take(CONTAIN_RULES_MAP).try_into().expect("LPM trie");
        let buckets = take(CONTAIN_BUCKETS_MAP).try_into().expect("array");
        let epoch = take(CONTAIN_EPOCH_MAP).try_into().expect("array");
        Self {
            enforcer: Enforcer::new(rules, buckets, epoch, false),
            ebpf,
        }
    }

    pub fn enforcer(&mut self) -> &mut Enforcer {
        &mut self.enforcer
    }

    /// Runs program `name` like [`EgressUnderTest::run_timed`]: (verdict, ns per run).
    pub fn run_timed(
        &mut self,
        name: &str,
        ethertype: u16,
        ip_packet: &[u8],
        repeat: u32,
    ) -> io::Result<(u32, u32)> {
        test_run(&mut self.ebpf, name, ethertype, ip_packet, repeat)
    }

    pub fn flows(&self) -> Vec<(FlowKey, FlowCounters)> {
        let map: HashMap<_, FlowKey, FlowCounters> =
            HashMap::try_from(self.ebpf.map(FLOWS_MAP).expect("FLOWS")).expect("hash map");
        map.iter().map(|r| r.expect("read flow")).collect()
    }
}

/// The DNS program loaded (not attached) with its own maps.
pub struct DnsUnderTest {
    ebpf: Ebpf,
}

/// One record the DNS program wrote: (UDP payload length, bytes copied).
pub type Captured = (u16, Vec<u8>);

impl DnsUnderTest {
    pub fn load() -> Self {
        Self {
            ebpf: load_skb_program(PROG_INGRESS),
        }
    }

    /// Runs the program once on `ip_packet`; returns its verdict.
    pub fn run(&mut self, ethertype: u16, ip_packet: &[u8]) -> io::Result<u32> {
        test_run(&mut self.ebpf, PROG_INGRESS, ethertype, ip_packet, 1).map(|(verdict, _)| verdict)
    }

    /// Like [`EgressUnderTest::run_timed`].
    pub fn run_timed(
        &mut self,
        ethertype: u16,
        ip_packet: &[u8],
        repeat: u32,
    ) -> io::Result<(u32, u32)> {
        test_run(&mut self.ebpf, PROG_INGRESS, ethertype, ip_packet, repeat)
    }

    /// Drains the ring buffer: every capture since the last call.
    pub fn captures(&mut self) -> Vec<Captured> {
        let mut ring = RingBuf::try_from(self.ebpf.map_mut(DNS_ANSWERS_MAP).expect("DNS_ANSWERS"))
            .expect("ring buffer");
        let mut out = Vec::new();
        while let Some(item) = ring.next() {
            assert_eq!(item.len(), size_of::<DnsCapture>(), "record size");
            let (payload, _) =
                monitor::attribution::names::decode_capture(&item).expect("decodable capture");
            let len = u16::from_ne_bytes([item[0], item[1]]);
            out.push((len, payload.to_vec()));
        }
        out
    }

    pub fn error(&self, index: u32) -> u64 {
        error_count(&self.ebpf, index)
    }
}

/// The ingress program and the egress program the agent would attach here, loaded (not
/// attached) in one object, so that they share `UDP_PEERS` as in the agent.
pub struct DirectionUnderTest {
    ebpf: Ebpf,
    egress: &'static str,
}

impl DirectionUnderTest {
    pub fn load() -> Self {
        let egress = EgressUnderTest::all_for_this_kernel()
            .first()
            .expect("an egress program for this kernel")
            .name();
        Self {
            ebpf: load_skb_programs(&[PROG_INGRESS, egress]),
            egress,
        }
    }

    /// Runs the ingress program once on `ip_packet` (a packet reaching a local socket).
    pub fn receive(&mut self, ethertype: u16, ip_packet: &[u8]) -> io::Result<u32> {
        test_run(&mut self.ebpf, PROG_INGRESS, ethertype, ip_packet, 1).map(|(verdict, _)| verdict)
    }

    /// Runs the egress program `repeat` times on `ip_packet`.
    pub fn send(&mut self, ethertype: u16, ip_packet: &[u8], repeat: u32) -> io::Result<u32> {
        test_run(&mut self.ebpf, self.egress, ethertype, ip_packet, repeat)
            .map(|(verdict, _)| verdict)
    }

    pub fn flows(&self) -> Vec<(FlowKey, FlowCounters)> {
        let map: HashMap<_, FlowKey, FlowCounters> =
            HashMap::try_from(self.ebpf.map(FLOWS_MAP).expect("FLOWS")).expect("hash map");
        map.iter().map(|r| r.expect("read flow")).collect()
    }

    /// The UDP conversations recorded, with their first speaker.
    pub fn udp_peers(&self) -> Vec<(UdpPeerKey, u8)> {
        let map: HashMap<_, UdpPeerKey, u8> =
            HashMap::try_from(self.ebpf.map(UDP_PEERS_MAP).expect("UDP_PEERS")).expect("LRU map");
        // An LRU entry may be evicted while the iteration runs: skip what vanished.
        map.iter().filter_map(Result::ok).collect()
    }
}

/// Loads the kernel object with its own maps and one `cgroup_skb` program through the
/// verifier.
fn load_skb_program(name: &str) -> Ebpf {
    load_skb_programs(&[name])
}

/// Like [`load_skb_program`], several programs sharing the object's maps.
fn load_skb_programs(names: &[&str]) -> Ebpf {
    let mut ebpf =
        Ebpf::load(monitor::kernel::loader::kernel_object()).expect("load kernel object");
    for name in names {
        let prog: &mut CgroupSkb = ebpf
            .program_mut(name)
            .expect("program")
            .try_into()
            .expect("cgroup_skb");
        prog.load()
            .unwrap_or_else(|e| panic!("verifier refuses {name}: {e}"));
    }
    ebpf
}

/// Runs program `name` `repeat` times on `ip_packet` (an Ethernet header is prepended, as the
/// test-run interface requires); returns the verdict and the kernel's average run time in ns
/// (measured around the whole repeat loop, so without the per-run clock reads of
/// `bpf_stats`).
fn test_run(
    ebpf: &mut Ebpf,
    name: &str,
    ethertype: u16,
    ip_packet: &[u8],
    repeat: u32,
) -> io::Result<(u32, u32)> {
    let prog: &mut CgroupSkb = ebpf
        .program_mut(name)
        .expect("program")
        .try_into()
        .expect("type");
    let fd = prog.fd().expect("loaded").as_fd().as_raw_fd();
    test_run_fd(fd, ethertype, ip_packet, repeat)
}

/// `BPF_PROG_TEST_RUN` of the loaded program `fd`: (verdict, ns per run).
fn test_run_fd(
    fd: std::os::fd::RawFd,
    ethertype: u16,
    ip_packet: &[u8],
    repeat: u32,
) -> io::Result<(u32, u32)> {
    let mut frame = vec![0u8; 14];
    frame[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
    frame[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
    frame[12..14].copy_from_slice(&ethertype.to_be_bytes());
    frame.extend_from_slice(ip_packet);
    let mut attr = TestRunAttr {
        prog_fd: fd as u32,
        data_size_in: frame.len() as u32,
        data_in: frame.as_ptr() as u64,
        repeat,
        ..TestRunAttr::default()
    };
    // SAFETY: attr is a valid bpf_attr prefix; data_in points to `frame`, alive here.
    unsafe { crate::bpf_syscall::bpf(BPF_PROG_TEST_RUN, &mut attr) }?;
    Ok((attr.retval, attr.duration))
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TYPE_CGROUP_SKB: u32 = 8;

/// `union bpf_attr` for `BPF_PROG_LOAD`, up to `kern_version` (the rest zero).
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    _rest: [u32; 15],
}

/// What the test-run loop itself costs per run (ns): a `cgroup_skb` program of two
/// instructions (`r0 = 1; exit`, loaded raw) run on the same packet like the others. An
/// egress program's own work is its figure minus this one; the loop's share (the kernel
/// disables and re-enables softirqs around every run) depends on the machine.
pub fn empty_program_cost(ethertype: u16, ip_packet: &[u8], repeat: u32) -> io::Result<u32> {
    // mov r0, 1 (opcode 0xb7, imm 1); exit (0x95).
    let insns: [u64; 2] = [0x0000_0001_0000_00b7, 0x0000_0000_0000_0095];
    let license = c"GPL";
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_SKB,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        ..ProgLoadAttr::default()
    };
    // SAFETY: attr is a valid bpf_attr prefix; insns and license outlive the call. The
    // syscall returns the new program's fd (`bpf` only reports failure), so it is issued
    // here directly.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            std::ptr::from_mut(&mut attr),
            size_of::<ProgLoadAttr>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd that this function owns; closed when `owned` drops.
    let owned = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
    let (verdict, ns) = test_run_fd(owned.as_raw_fd(), ethertype, ip_packet, repeat)?;
    assert_eq!(verdict, 1, "the empty program passes");
    Ok(ns)
}

fn error_count(ebpf: &Ebpf, index: u32) -> u64 {
    let map: PerCpuArray<_, u64> =
        PerCpuArray::try_from(ebpf.map(ERRORS_MAP).expect("ERRORS")).expect("array");
    map.get(&index, 0).expect("read").iter().sum()
}
