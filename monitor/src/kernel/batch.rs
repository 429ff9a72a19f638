//! Hash map syscalls aya does not wrap: `BPF_MAP_LOOKUP_BATCH` (read every flow in a few
//! syscalls instead of two per flow, which is what keeps the agent's CPU low at 100k sockets)
//! and `BPF_MAP_LOOKUP_AND_DELETE_ELEM` (a closed flow's final counts and its removal in one
//! step, so bytes added between a read and a delete cannot be lost).

use std::{
    io,
    mem::{self, MaybeUninit},
    os::fd::{AsRawFd, BorrowedFd},
};

use aya::Pod;

const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
const BPF_MAP_LOOKUP_AND_DELETE_ELEM: libc::c_long = 21;
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// `union bpf_attr` for the single-element commands.
#[repr(C)]
#[derive(Default)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value_or_next_key: u64,
    flags: u64,
}

/// `union bpf_attr` for the batch commands.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

fn bpf<A>(cmd: libc::c_long, attr: &mut A) -> io::Result<()> {
    // SAFETY: `attr` is a valid, fully initialised bpf_attr prefix of the given size.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr),
            mem::size_of::<A>(),
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn zeroed<T: Pod>() -> T {
    // SAFETY: Pod types are plain data for which all-zero bytes are a valid value.
    unsafe { MaybeUninit::<T>::zeroed().assume_init() }
}

/// Where [`HashReader::read_all`] puts the entries it reads: a `Vec`, or any store that can
/// start over.
pub trait EntrySink<T>: Extend<T> {
    /// Forgets what was added: a batched read that turns out unsupported starts over one by
    /// one.
    fn clear(&mut self);
}

impl<T> EntrySink<T> for Vec<T> {
    fn clear(&mut self) {
        Vec::clear(self);
    }
}

/// Reads every entry of a hash map, reusing buffers between calls.
pub struct HashReader<K, V> {
    keys: Vec<K>,
    values: Vec<V>,
    /// `None` until the first call tells whether the kernel supports batch lookups (5.6+).
    batch_supported: Option<bool>,
}

impl<K: Pod, V: Pod> HashReader<K, V> {
    pub fn new(chunk: usize) -> Self {
        Self {
            keys: vec![zeroed(); chunk.max(64)],
            values: vec![zeroed(); chunk.max(64)],
            batch_supported: None,
        }
    }

    /// Appends every (key, value) of the map to `out`. The map may change while it is read:
    /// an entry inserted meanwhile may or may not be seen (it will be next time).
    pub fn read_all(
        &mut self,
        map: BorrowedFd<'_>,
        out: &mut impl EntrySink<(K, V)>,
    ) -> io::Result<()> {
        if self.batch_supported != Some(false) {
            match self.read_batched(map, out) {
                Ok(()) => {
                    self.batch_supported = Some(true);
                    return Ok(());
                }
                Err(e) if self.batch_supported.is_none() && is_unsupported(&e) => {
                    tracing::info!("BPF_MAP_LOOKUP_BATCH not supported; reading flows one by one");
                    self.batch_supported = Some(false);
                    out.clear();
                }
                Err(e) => return Err(e),
            }
        }
        read_one_by_one(map, out)
    }

    fn read_batched(
        &mut self,
        map: BorrowedFd<'_>,
        out: &mut impl EntrySink<(K, V)>,
    ) -> io::Result<()> {
        // The hash map batch token is a u32 bucket index; 8 bytes leaves room to spare.
        let mut token = [0u64; 1];
        let mut first = true;
        loop {
            let mut attr = BatchAttr {
                in_batch: if first { 0 } else { token.as_ptr() as u64 },
                out_batch: token.as_mut_ptr() as u64,
                keys: self.keys.as_mut_ptr() as u64,
                values: self.values.as_mut_ptr() as u64,
                count: self.keys.len() as u32,
                map_fd: map.as_raw_fd() as u32,
                ..BatchAttr::default()
            };
            let res = bpf(BPF_MAP_LOOKUP_BATCH, &mut attr);
            let n = attr.count as usize;
            let done = match res {
                Ok(()) => false,
                // ENOENT: the whole map has been read (this call may still have returned some).
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => true,
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) && n == 0 => {
                    // One bucket holds more entries than the buffer: grow and retry it.
                    let len = self.keys.len() * 2;
                    self.keys.resize(len, zeroed());
                    self.values.resize(len, zeroed());
                    continue;
                }
                Err(e) => return Err(e),
            };
            out.extend(
                self.keys[..n]
                    .iter()
                    .copied()
                    .zip(self.values[..n].iter().copied()),
            );
            if done {
                return Ok(());
            }
            first = false;
        }
    }
}

/// ENOTSUPP (524) is kernel-internal but leaks to userspace from some map operations.
const ENOTSUPP: i32 = 524;

fn is_unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL | libc::EOPNOTSUPP | ENOTSUPP)
    )
}

fn read_one_by_one<K: Pod, V: Pod>(
    map: BorrowedFd<'_>,
    out: &mut impl EntrySink<(K, V)>,
) -> io::Result<()> {
    let mut key: K = zeroed();
    let mut next: K = zeroed();
    let mut first = true;
    loop {
        let mut attr = ElemAttr {
            map_fd: map.as_raw_fd() as u32,
            key: if first { 0 } else { (&raw const key) as u64 },
            value_or_next_key: (&raw mut next) as u64,
            ..ElemAttr::default()
        };
        match bpf(BPF_MAP_GET_NEXT_KEY, &mut attr) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
            Err(e) => return Err(e),
        }
        first = false;
        key = next;
        if let Some(v) = lookup::<K, V>(map, &key)? {
            out.extend([(key, v)]);
        }
    }
}

/// Runs a single-element command that fills a value (`BPF_MAP_LOOKUP_ELEM`,
/// `BPF_MAP_LOOKUP_AND_DELETE_ELEM`); `None` if the key is absent.
fn elem_with_value<K: Pod, V: Pod>(
    cmd: libc::c_long,
    map: BorrowedFd<'_>,
    key: &K,
) -> io::Result<Option<V>> {
    let mut value: V = zeroed();
    let mut attr = ElemAttr {
        map_fd: map.as_raw_fd() as u32,
        key: std::ptr::from_ref(key) as u64,
        value_or_next_key: (&raw mut value) as u64,
        ..ElemAttr::default()
    };
    match bpf(cmd, &mut attr) {
        Ok(()) => Ok(Some(value)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Looks up one key; `None` if absent.
pub fn lookup<K: Pod, V: Pod>(map: BorrowedFd<'_>, key: &K) -> io::Result<Option<V>> {
    elem_with_value(BPF_MAP_LOOKUP_ELEM, map, key)
}

/// Removes `key` and returns its last value, atomically where the kernel allows (5.14+), else
/// by a lookup followed by a delete. `None` if the key was absent.
pub fn take<K: Pod, V: Pod>(map: BorrowedFd<'_>, key: &K) -> io::Result<Option<V>> {
    match elem_with_value(BPF_MAP_LOOKUP_AND_DELETE_ELEM, map, key) {
        Err(e) if is_unsupported(&e) => {}
        other => return other,
    }
    let Some(value) = lookup::<K, V>(map, key)? else {
        return Ok(None);
    };
    let mut attr = ElemAttr {
        map_fd: map.as_raw_fd() as u32,
        key: std::ptr::from_ref(key) as u64,
        ..ElemAttr::default()
    };
    match bpf(BPF_MAP_DELETE_ELEM, &mut attr) {
        Ok(()) => Ok(Some(value)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(Some(value)),
        Err(e) => Err(e),
    }
}
