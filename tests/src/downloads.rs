//! Downloads for the containment tests: cgroups made for a test, `tcp-blast` servers in them,
//! and clients bound to their own loopback addresses (each its own peer) that count what
//! they receive, to measure rates while the kernel throttles or blocks.

use std::{
    fs, io,
    io::Read as _,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream},
    os::{fd::FromRawFd as _, unix::fs::MetadataExt as _},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use crate::Traffic;

pub const MIB: u64 = 1024 * 1024;
/// How long a `tcp-blast` server runs at most.
const SERVER_SECONDS: &str = "180";

/// A cgroup v2 directory made for the test, removed (once empty) on drop.
pub struct TestCgroup(PathBuf);

impl TestCgroup {
    pub fn create(path: PathBuf) -> Self {
        let _ = fs::remove_dir(&path);
        fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn id(&self) -> u64 {
        fs::metadata(&self.0).expect("cgroup dir").ino()
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for _ in 0..50 {
            if fs::remove_dir(&self.0).is_ok() || !self.0.exists() {
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A `tcp-blast` server in `cgroup`, listening on 127.0.0.1.
pub fn server(cgroup: &TestCgroup) -> (Traffic, SocketAddr) {
    let t = Traffic::start_in_cgroup(cgroup.path(), &["tcp-blast", "127.0.0.1:0", SERVER_SECONDS]);
    let port: u16 = t.expect_line("port", Duration::from_secs(10))[1]
        .parse()
        .expect("port");
    (t, SocketAddr::from(([127, 0, 0, 1], port)))
}

/// A TCP connection from `local` (port chosen by the kernel) to `to`; the connect fails
/// after `timeout` (`SO_SNDTIMEO` bounds a blocking connect).
pub fn connect_from(local: Ipv4Addr, to: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    fn check(r: libc::c_int) -> io::Result<()> {
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
    fn sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
        libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: a.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*a.ip()).to_be(),
            },
            sin_zero: [0; 8],
        }
    }
    let SocketAddr::V4(to) = to else {
        panic!("IPv4 only")
    };
    // SAFETY: plain socket syscalls on a descriptor this function owns; the addresses and the
    // timeval outlive the calls.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        check(fd)?;
        let stream = TcpStream::from_raw_fd(fd);
        let tv = libc::timeval {
            tv_sec: timeout
                .as_secs()
                .try_into()
                .expect("a timeout of sane length"),
            tv_usec: timeout.subsec_micros().into(),
        };
        check(libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDTIMEO,
            (&raw const tv).cast(),
            size_of::<libc::timeval>() as libc::socklen_t,
        ))?;
        let local = sockaddr(SocketAddrV4::new(local, 0));
        check(libc::bind(
            fd,
            (&raw const local).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        ))?;
        let remote = sockaddr(to);
        check(libc::connect(
            fd,
            (&raw const remote).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        ))?;
        Ok(stream)
    }
}

/// A client reading from a server as fast as it can, counting what it received.
pub struct Download {
    bytes: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    reader: Option<thread::JoinHandle<()>>,
}

impl Download {
    pub fn start(from: Ipv4Addr, to: SocketAddr) -> Self {
        let mut stream = connect_from(from, to, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect from {from} to {to}: {e}"));
        stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let bytes = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (b, s) = (bytes.clone(), stop.clone());
        let reader = thread::spawn(move || {
            let mut buf = vec![0u8; 256 * 1024];
            let end = Instant::now() + Duration::from_secs(240);
            while !s.load(Ordering::Relaxed) && Instant::now() < end {
                match stream.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => {
                        b.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => return,
                }
            }
        });
        Self {
            bytes,
            stop,
            reader: Some(reader),
        }
    }

    pub fn received(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

impl Drop for Download {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

/// Bytes per second each download received over `window`.
pub fn rates(downloads: &[&Download], window: Duration) -> Vec<f64> {
    let start: Vec<u64> = downloads.iter().map(|d| d.received()).collect();
    let t0 = Instant::now();
    thread::sleep(window);
    let secs = t0.elapsed().as_secs_f64();
    downloads
        .iter()
        .zip(start)
        .map(|(d, s)| (d.received() - s) as f64 / secs)
        .collect()
}

pub fn mib(rate: f64) -> String {
    format!("{:.2} MiB/s", rate / MIB as f64)
}
