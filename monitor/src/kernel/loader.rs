//! Loads the embedded kernel object, attaches its programs to the cgroup v2 root (three
//! required, two optional: TCP direction, and passive DNS with UDP direction) and hands the
//! maps to the collector, and the containment maps to an [`Enforcer`]. Dropping
//! [`Attached`] detaches everything: the programs are attached through `bpf_link` file
//! descriptors, which the kernel also releases if the agent is killed, so no program outlives
//! the agent.

use std::{
    fs::File,
    io,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfError, EbpfLoader,
    maps::{Map, MapData, MapError, PerCpuArray, RingBuf},
    programs::{
        CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSock, ProgramError, SockOps,
    },
};
use monitor_common::{
    CONTAIN_BUCKETS_MAP, CONTAIN_EPOCH_MAP, CONTAIN_RULES_MAP, DNS_ANSWERS_MAP, ERRORS_MAP,
    EVENTS_MAP, FLOWS_MAP, UNTRACKED_MAP, Volume,
};
use thiserror::Error;

use super::{
    caps::{CapSet, Capability},
    cgroup2::{self, Cgroup2Error},
    compat::{self, AttachPoint, ProgramSpec},
};
use crate::contain::kernel::Enforcer;

/// The kernel object built by `build.rs` (empty when built with `AYA_BUILD_SKIP=1`).
static KERNEL_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/monitor"));

#[derive(Debug, Error)]
pub enum LoadError {
    #[error(
        "missing capability {}: needed to {}; run as root (sudo egress-monitor ...) or grant it \
         (e.g. AmbientCapabilities= in the systemd unit)",
        .capability.name(), .capability.purpose()
    )]
    MissingCapability { capability: Capability },
    #[error(transparent)]
    Cgroup2(#[from] Cgroup2Error),
    #[error(
        "this agent was built without its kernel programs (AYA_BUILD_SKIP was set): rebuild \
         with `cargo xtask build`"
    )]
    NoKernelObject,
    #[error("the kernel refused the BPF object ({0}); run `egress-monitor doctor` for details")]
    Object(#[source] Box<EbpfError>),
    #[error("program {program} missing from the kernel object")]
    ProgramMissing { program: &'static str },
    #[error(
        "the kernel refused to load {program} ({hook}; needs {feature}, Linux >= {min_kernel}); \
         run `egress-monitor doctor`"
    )]
    Load {
        program: &'static str,
        hook: &'static str,
        feature: &'static str,
        min_kernel: &'static str,
        #[source]
        source: Box<ProgramError>,
    },
    #[error("attaching {program} to {hook} on cgroup {cgroup}")]
    Attach {
        program: &'static str,
        hook: &'static str,
        cgroup: PathBuf,
        #[source]
        source: Box<ProgramError>,
    },
    #[error("map {name} missing from the kernel object or of the wrong type")]
    MapMissing { name: &'static str },
    #[error("opening map {name}")]
    Map {
        name: &'static str,
        #[source]
        source: Box<MapError>,
    },
    #[error("invalid option: {0}")]
    Option(String),
}

/// Sizes chosen by the operator.
#[derive(Clone, Copy, Debug)]
pub struct LoadOptions {
    /// Maximum (socket, destination) flows tracked at once in the kernel.
    pub max_flows: u32,
    /// Size of the event ring buffer in bytes (power of two, >= page size).
    pub event_ring_bytes: u32,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            max_flows: monitor_common::DEFAULT_MAX_FLOWS,
            event_ring_bytes: monitor_common::DEFAULT_EVENT_RING_BYTES,
        }
    }
}

impl LoadOptions {
    fn validate(self) -> Result<(), LoadError> {
        if self.max_flows == 0 {
            return Err(LoadError::Option("--max-flows must be at least 1".into()));
        }
        if !self.event_ring_bytes.is_power_of_two() || self.event_ring_bytes < 4096 {
            return Err(LoadError::Option(format!(
                "event ring size {} must be a power of two of at least 4096 bytes",
                self.event_ring_bytes
            )));
        }
        Ok(())
    }
}

/// The loaded and attached programs and the maps the collector reads.
pub struct Attached {
    /// Owns the programs and their links: dropping it detaches them.
    ebpf: Ebpf,
    pub flows: MapData,
    pub events: RingBuf<MapData>,
    pub errors: PerCpuArray<MapData, u64>,
    pub untracked: PerCpuArray<MapData, Volume>,
    /// DNS answers copied by `watch_ingress`; `None` when the kernel refused that program.
    pub dns_answers: Option<RingBuf<MapData>>,
    /// Which optional programs that give flows their direction are attached.
    pub directions: DirectionSources,
    pub cgroup_root: PathBuf,
    pub max_flows: u32,
    /// Reads the kernel programs' aya-log records (first occurrence of each error per CPU)
    /// into the agent's log. `None` if the object has no log buffer.
    pub kernel_log: Option<KernelLog>,
    /// The containment maps, while not taken by [`Attached::enforcer`]; `None` from the start
    /// when the kernel refused the enforcing egress programs (the agent detects, but cannot
    /// contain).
    enforcer: Option<Enforcer>,
    /// The egress program attached enforces containment.
    pub enforcement: bool,
}

/// The kernel's sources of flow direction that are attached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirectionSources {
    /// `record_tcp_direction` (sockops): accepted and connecting TCP sockets are marked.
    /// Without it the egress program still tells connections whose SYN it sees.
    pub tcp_marks: bool,
    /// `watch_ingress`: UDP peers that spoke first are recorded. Without it the egress
    /// program's UDP directions mean nothing (every flow would look initiated).
    pub udp_peers: bool,
}

/// The kernel programs' log records, forwarded to `tracing` through the `log` bridge.
pub type KernelLog = aya_log::EbpfLogger<&'static dyn log::Log>;

impl Attached {
    /// Kernel ids of the attached programs (what `bpftool prog` shows).
    pub fn program_ids(&self) -> Vec<u32> {
        self.ebpf
            .programs()
            .filter_map(|(_, p)| p.info().ok().map(|i| i.id()))
            .collect()
    }

    /// The handle that sets the kernel's containment rules. `None` when the kernel refused
    /// the enforcing programs (containment unavailable), or when it was already taken: there
    /// is one per attach. Its rules act only while these programs stay attached; dropping
    /// `Attached` (or the agent's death) ends every containment with them.
    pub fn enforcer(&mut self) -> Option<Enforcer> {
        self.enforcer.take()
    }
}

/// Raises `RLIMIT_MEMLOCK` for kernels before 5.11, which charge BPF memory to it. Newer
/// kernels charge the memory cgroup instead, so a refusal is only worth a debug line.
fn raise_memlock() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain syscall with a valid pointer.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &raw const unlimited) } != 0 {
        tracing::debug!(
            error = %io::Error::last_os_error(),
            "could not raise RLIMIT_MEMLOCK (fine on Linux >= 5.11, which accounts BPF memory to the memory cgroup)"
        );
    }
}

/// The first required capability this process lacks, as the error the agent stops with.
/// Checked before anything else (opening the state database included), so an unprivileged
/// start names the capability, not a side effect of lacking it.
pub fn check_privileges() -> Result<(), LoadError> {
    match CapSet::current().missing_required().first() {
        Some(&capability) => Err(LoadError::MissingCapability { capability }),
        None => Ok(()),
    }
}

/// Checks privileges up front, then loads and attaches everything to the cgroup v2 root
/// (found, or mounted under `cgroup_fallback`).
pub fn load_and_attach(opts: LoadOptions, cgroup_fallback: &Path) -> Result<Attached, LoadError> {
    check_privileges()?;
    opts.validate()?;
    let release = compat::running_release();
    if compat::parse_release(&release).is_some_and(|v| v < compat::MIN_KERNEL) {
        let (major, minor) = compat::MIN_KERNEL;
        tracing::warn!(
            kernel = %release,
            "kernel older than {major}.{minor}: some programs may be refused (see `egress-monitor doctor`)"
        );
    }
    let root = cgroup2::find_or_mount(cgroup_fallback)?;
    if root.mounted_by_us {
        tracing::warn!(path = %root.path.display(), "no cgroup v2 hierarchy was mounted: mounted one");
    }
    attach_all(opts, root.path)
}

/// Like [`load_and_attach`], on the cgroup v2 directory `cgroup` instead of the root: only its
/// processes' sockets are seen (tests, and a host that wants to watch one subtree).
pub fn load_and_attach_to(opts: LoadOptions, cgroup: &Path) -> Result<Attached, LoadError> {
    check_privileges()?;
    opts.validate()?;
    attach_all(opts, cgroup.to_owned())
}

fn attach_all(opts: LoadOptions, cgroup_path: PathBuf) -> Result<Attached, LoadError> {
    let mut ebpf = load_object(Some(opts))?;
    let kernel_log = match aya_log::EbpfLogger::init(&mut ebpf) {
        Ok(logger) => Some(logger),
        Err(error) => {
            tracing::warn!(%error, "kernel program logs unavailable (errors are still counted)");
            None
        }
    };
    let cgroup = cgroup2::open(&cgroup_path)?;
    // In table order: owner recording first, so sockets created while the rest attaches are
    // already covered.
    let mut enforcement = true;
    for spec in compat::PROGRAMS.iter().filter(|s| s.required) {
        let (attached, enforcing) = attach_or_fallback(&mut ebpf, spec, &cgroup, &cgroup_path)?;
        enforcement &= enforcing;
        tracing::debug!(program = attached, hook = spec.hook, "attached");
    }
    let tcp_marks = attach_tcp_direction(&mut ebpf, &cgroup, &cgroup_path);
    let dns_answers = attach_ingress(&mut ebpf, &cgroup, &cgroup_path);
    let Some(Map::HashMap(flows)) = ebpf.take_map(FLOWS_MAP) else {
        return Err(LoadError::MapMissing { name: FLOWS_MAP });
    };
    let enforcer = if enforcement {
        Some(Enforcer::new(
            take_map(&mut ebpf, CONTAIN_RULES_MAP)?,
            take_map(&mut ebpf, CONTAIN_BUCKETS_MAP)?,
            take_map(&mut ebpf, CONTAIN_EPOCH_MAP)?,
            dns_answers.is_some(),
        ))
    } else {
        None
    };
    Ok(Attached {
        flows,
        events: take_map(&mut ebpf, EVENTS_MAP)?,
        errors: take_map(&mut ebpf, ERRORS_MAP)?,
        untracked: take_map(&mut ebpf, UNTRACKED_MAP)?,
        directions: DirectionSources {
            tcp_marks,
            udp_peers: dns_answers.is_some(),
        },
        dns_answers,
        ebpf,
        cgroup_root: cgroup_path,
        max_flows: opts.max_flows,
        kernel_log,
        enforcer,
        enforcement,
    })
}

/// Attaches `spec`, or its fallback when the kernel refuses `spec` (its verifier, not an
/// attach failure), or else one of the two without containment enforcement; returns the name
/// of the program attached and whether it enforces. When all are refused the fallback's
/// refusal is returned: its row holds the lower minimum, what the kernel lacks.
fn attach_or_fallback(
    ebpf: &mut Ebpf,
    spec: &ProgramSpec,
    cgroup: &File,
    path: &Path,
) -> Result<(&'static str, bool), LoadError> {
    let refused = match (attach(ebpf, spec, cgroup, path), spec.fallback) {
        (Ok(()), _) => return Ok((spec.name, true)),
        (Err(refused @ LoadError::Load { .. }), Some(fallback)) => {
            match attach(ebpf, fallback, cgroup, path) {
                Ok(()) => {
                    tracing::info!(
                        program = fallback.name,
                        instead_of = spec.name,
                        // The top line only: the verifier's log is for `doctor`.
                        reason = %refused,
                        "kernel refused {}: attached {} ({})",
                        spec.name,
                        fallback.name,
                        fallback.feature
                    );
                    return Ok((fallback.name, true));
                }
                Err(e @ LoadError::Load { .. }) => e,
                Err(e) => return Err(e),
            }
        }
        (Err(e @ LoadError::Load { .. }), None) => e,
        (Err(e), _) => return Err(e),
    };
    let observers = [Some(spec), spec.fallback]
        .into_iter()
        .flatten()
        .filter_map(|s| s.without_enforcement);
    for observer in observers {
        match attach(ebpf, observer, cgroup, path) {
            Ok(()) => {
                tracing::warn!(
                    program = observer.name,
                    instead_of = spec.name,
                    reason = %error_chain(&refused),
                    "containment enforcement unavailable: the kernel refused {} ({}); attached {}, which counts and never drops",
                    spec.name,
                    compat::ENFORCEMENT_FEATURE,
                    observer.name,
                );
                return Ok((observer.name, false));
            }
            Err(LoadError::Load { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Err(refused)
}

/// Attaches `record_tcp_direction`; false, with a warning, when the kernel refuses it.
///
/// Like passive DNS, TCP direction only adds detail: the egress program still tells the
/// connections whose SYN it sees, and the agent the accepted ones by the local listeners
/// (`sock_diag`). Refusing to start would lose the egress accounting itself.
fn attach_tcp_direction(ebpf: &mut Ebpf, cgroup: &File, path: &Path) -> bool {
    let spec = compat::TCP_DIRECTION_PROGRAM;
    match attach(ebpf, &spec, cgroup, path) {
        Ok(()) => {
            tracing::debug!(program = spec.name, hook = spec.hook, "attached");
            true
        }
        Err(error) => {
            tracing::warn!(
                program = spec.name,
                error = %error_chain(&error),
                "TCP direction from the kernel unavailable: told by SYNs and the local listeners instead"
            );
            false
        }
    }
}

/// Attaches `watch_ingress` and returns its ring buffer, or `None` with a warning.
///
/// Passive DNS only adds names to destinations, UDP peers only directions: every byte is
/// counted without them. So a kernel that refuses this one program (an older verifier that
/// rejects its variable-length copy into ring buffer memory, or a refused attach) costs the
/// names and UDP directions, logged once here, not the agent: refusing to start would lose
/// the egress accounting the agent exists for. (Its ring is created with the other maps, so
/// a kernel without ring buffers fails earlier, for all.)
fn attach_ingress(ebpf: &mut Ebpf, cgroup: &File, path: &Path) -> Option<RingBuf<MapData>> {
    let spec = compat::INGRESS_PROGRAM;
    // The map is taken first (it stays open while the program loads): if the program is then
    // refused, nothing was attached and dropping the map frees it.
    let attached = take_map(ebpf, DNS_ANSWERS_MAP).and_then(|ring| {
        attach(ebpf, &spec, cgroup, path)?;
        Ok(ring)
    });
    match attached {
        Ok(ring) => {
            tracing::debug!(program = spec.name, hook = spec.hook, "attached");
            Some(ring)
        }
        Err(error) => {
            tracing::warn!(
                program = spec.name,
                error = %error_chain(&error),
                "passive DNS and UDP direction unavailable: destinations are reported without names, UDP flows without direction"
            );
            None
        }
    }
}

/// An error and its causes on one line (for a verifier refusal, the log is the last cause).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

fn load_object(opts: Option<LoadOptions>) -> Result<Ebpf, LoadError> {
    if KERNEL_OBJECT.is_empty() {
        return Err(LoadError::NoKernelObject);
    }
    raise_memlock();
    let mut loader = EbpfLoader::new();
    if let Some(opts) = opts {
        loader
            .map_max_entries(FLOWS_MAP, opts.max_flows)
            .map_max_entries(EVENTS_MAP, opts.event_ring_bytes);
    }
    loader
        .load(KERNEL_OBJECT)
        .map_err(|e| LoadError::Object(Box::new(e)))
}

fn take_map<T: TryFrom<Map, Error = MapError>>(
    ebpf: &mut Ebpf,
    name: &'static str,
) -> Result<T, LoadError> {
    let map = ebpf.take_map(name).ok_or(LoadError::MapMissing { name })?;
    T::try_from(map).map_err(|source| LoadError::Map {
        name,
        source: Box::new(source),
    })
}

fn load_error(spec: &ProgramSpec, source: ProgramError) -> LoadError {
    LoadError::Load {
        program: spec.name,
        hook: spec.hook,
        feature: spec.feature,
        min_kernel: spec.min_kernel,
        source: Box::new(source),
    }
}

/// Loads one program (verifier) and, when `cgroup` is given, attaches it.
fn load_program(ebpf: &mut Ebpf, spec: &ProgramSpec) -> Result<(), LoadError> {
    let program = ebpf
        .program_mut(spec.name)
        .ok_or(LoadError::ProgramMissing { program: spec.name })?;
    let result = match spec.attach {
        AttachPoint::SkbEgress | AttachPoint::SkbIngress => {
            <&mut CgroupSkb>::try_from(program).and_then(CgroupSkb::load)
        }
        AttachPoint::Sock => <&mut CgroupSock>::try_from(program).and_then(CgroupSock::load),
        AttachPoint::SockOps => <&mut SockOps>::try_from(program).and_then(SockOps::load),
    };
    result.map_err(|e| load_error(spec, e))
}

fn attach(
    ebpf: &mut Ebpf,
    spec: &ProgramSpec,
    cgroup: &File,
    path: &Path,
) -> Result<(), LoadError> {
    load_program(ebpf, spec)?;
    let attach_err = |source| LoadError::Attach {
        program: spec.name,
        hook: spec.hook,
        cgroup: path.to_owned(),
        source: Box::new(source),
    };
    let program = ebpf
        .program_mut(spec.name)
        .ok_or(LoadError::ProgramMissing { program: spec.name })?;
    // With bpf_link (Linux >= 5.7, below our minimum) the kernel requires flags 0 and always
    // attaches in multi mode: other cgroup programs (systemd IP accounting, container
    // runtimes) keep running beside ours. `Single` is what passes flags 0.
    match spec.attach {
        AttachPoint::SkbEgress | AttachPoint::SkbIngress => {
            let direction = if spec.attach == AttachPoint::SkbEgress {
                CgroupSkbAttachType::Egress
            } else {
                CgroupSkbAttachType::Ingress
            };
            let p: &mut CgroupSkb = program.try_into().map_err(attach_err)?;
            p.attach(cgroup, direction, CgroupAttachMode::Single)
                .map_err(attach_err)?;
        }
        AttachPoint::Sock => {
            let p: &mut CgroupSock = program.try_into().map_err(attach_err)?;
            p.attach(cgroup, CgroupAttachMode::Single)
                .map_err(attach_err)?;
        }
        AttachPoint::SockOps => {
            let p: &mut SockOps = program.try_into().map_err(attach_err)?;
            p.attach(cgroup, CgroupAttachMode::Single)
                .map_err(attach_err)?;
        }
    }
    Ok(())
}

/// Outcome of loading one program, for `doctor`.
pub type ProgramCheck = (ProgramSpec, Result<(), LoadError>);

/// Loads every program into the kernel (verifier included) without attaching anything, and
/// returns each program's outcome. Used by `doctor`.
pub fn verify_programs() -> Result<Vec<ProgramCheck>, LoadError> {
    let mut ebpf = load_object(None)?;
    Ok(compat::all_programs()
        .map(|spec| {
            let result = load_program(&mut ebpf, &spec);
            (spec, result)
        })
        .collect())
}

/// The embedded kernel object (for tests that load programs without attaching them).
pub fn kernel_object() -> &'static [u8] {
    KERNEL_OBJECT
}
