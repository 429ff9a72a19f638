//! Traffic generator for the kernel integration tests, run as a separate process so the
//! tests can check that bytes are attributed to *this* pid and executable. Every mode prints
//! what the test needs on stdout, one line at a time, and every loop is bounded.

use std::{
    env,
    io::{self, BufRead as _, Read as _, Write as _},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket},
    thread,
};

fn main() {
    let args: Vec<String> = env::args().skip(1).collect();
    let arg = |i: usize| -> &str { args.get(i).map_or_else(|| usage(), String::as_str) };
    match arg(0) {
        "tcp-serve" => tcp_serve(arg(1), num(arg(2))),
        "udp-send" => udp_send(
            addr(arg(1)),
            num(arg(2)),
            num(arg(3)) as usize,
            args.get(4).is_some_and(|a| a == "--socket-per-datagram"),
        ),
        "short-tcp" => short_tcp(num(arg(1)), num(arg(2)) as usize),
        "pre-existing" => pre_existing(num(arg(1))),
        "two-cpu-udp" => two_cpu_udp(addr(arg(1)), num(arg(2)), num(arg(3)) as usize),
        "hold-udp" => hold_udp(addr(arg(1)), num(arg(2)), num(arg(3)) as usize),
        "udp-twice" => udp_twice(addr(arg(1)), num(arg(2)) as usize, num(arg(3))),
        "active-udp" => active_udp(addr(arg(1)), num(arg(2)) as usize, num(arg(3))),
        "prefork-serve" => prefork_serve(num(arg(1)), args.get(2).is_some_and(|a| a == "--close")),
        "udp-echo" => udp_echo(arg(1), num(arg(2))),
        "worker-send" => worker_send(num(arg(1)), args.get(2).is_some_and(|a| a == "--close")),
        "tcp-blast" => tcp_blast(arg(1), num(arg(2))),
        _ => usage(),
    }
}

fn usage() -> ! {
    eprintln!(
        "usage: traffic tcp-serve BIND BYTES | udp-send TO COUNT SIZE [--socket-per-datagram] | short-tcp COUNT BYTES | pre-existing BYTES | two-cpu-udp TO COUNT SIZE | hold-udp TO SOCKETS SIZE | prefork-serve BYTES [--close] | udp-echo BIND COUNT | tcp-blast BIND SECONDS"
    );
    std::process::exit(2)
}

fn num(s: &str) -> u64 {
    s.parse().unwrap_or_else(|_| usage())
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap_or_else(|_| usage())
}

fn say(line: &str) {
    let mut out = io::stdout().lock();
    writeln!(out, "{line}").expect("stdout");
    out.flush().expect("stdout");
}

fn wait_for_go() {
    let mut line = String::new();
    io::stdin().lock().read_line(&mut line).expect("stdin");
}

fn write_all_bytes(stream: &mut TcpStream, total: u64) {
    let chunk = vec![0x5au8; 64 * 1024];
    let mut left = total;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        stream.write_all(&chunk[..n]).expect("write");
        left -= n as u64;
    }
}

fn drain(stream: &mut TcpStream) -> u64 {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0;
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return total,
            Ok(n) => total += n as u64,
        }
    }
}

/// Listens, accepts one connection, sends `bytes` on the accepted socket, waits for EOF.
fn tcp_serve(bind: &str, bytes: u64) {
    let listener = TcpListener::bind(bind).expect("bind");
    say(&format!(
        "port {}",
        listener.local_addr().expect("addr").port()
    ));
    let (mut conn, peer) = listener.accept().expect("accept");
    write_all_bytes(&mut conn, bytes);
    conn.shutdown(Shutdown::Write).expect("shutdown");
    drain(&mut conn);
    say(&format!("done {peer}"));
    wait_for_go();
}

/// Listens; sends to every client it accepts as fast as it can until the client closes or
/// `seconds` have passed since the start (each connection in its own thread). Prints
/// `port P`, and exits on "go" (or after `seconds`).
fn tcp_blast(bind: &str, seconds: u64) {
    let listener = TcpListener::bind(bind).expect("bind");
    say(&format!(
        "port {}",
        listener.local_addr().expect("addr").port()
    ));
    let end = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            thread::spawn(move || {
                let chunk = vec![0x5au8; 256 * 1024];
                let _ = conn.set_write_timeout(Some(std::time::Duration::from_millis(500)));
                while std::time::Instant::now() < end {
                    match conn.write(&chunk) {
                        Ok(_) => {}
                        Err(e)
                            if matches!(
                                e.kind(),
                                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                            ) => {}
                        Err(_) => return,
                    }
                }
            });
        }
    });
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        wait_for_go();
        let _ = tx.send(());
    });
    let _ = rx.recv_timeout(std::time::Duration::from_secs(seconds));
}

/// Sends `count` datagrams of `size` bytes, from one socket or a fresh socket each time.
fn udp_send(to: SocketAddr, count: u64, size: usize, fresh: bool) {
    let bind = if to.is_ipv4() {
        "127.0.0.1:0"
    } else {
        "[::1]:0"
    };
    let payload = vec![0xa5u8; size];
    let shared = UdpSocket::bind(bind).expect("bind");
    for _ in 0..count {
        if fresh {
            let s = UdpSocket::bind(bind).expect("bind");
            s.send_to(&payload, to).expect("send");
        } else {
            shared.send_to(&payload, to).expect("send");
        }
    }
    say(&format!(
        "done {}",
        shared.local_addr().expect("addr").port()
    ));
    // Stay alive (as a service would) until the test has seen the agent report us.
    wait_for_go();
}

/// `count` TCP connections, each: connect, server writes `bytes`, both close.
fn short_tcp(count: u64, bytes: usize) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    say(&format!("port {}", addr.port()));
    let client = thread::spawn(move || {
        let mut received = 0u64;
        for _ in 0..count {
            let mut c = TcpStream::connect(addr).expect("connect");
            received += drain(&mut c);
        }
        received
    });
    let payload = vec![0x33u8; bytes];
    for _ in 0..count {
        let (mut conn, _) = listener.accept().expect("accept");
        conn.write_all(&payload).expect("write");
        // Dropping closes: the socket is released right after its last write.
    }
    let received = client.join().expect("client thread");
    say(&format!("done {received}"));
}

/// Builds a connected pair before the agent starts, then (on a line on stdin) sends on it.
fn pre_existing(bytes: u64) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    let (mut server, _) = listener.accept().expect("accept");
    say(&format!(
        "ready {}",
        server.local_addr().expect("addr").port()
    ));
    wait_for_go();
    let reader = thread::spawn(move || drain(&mut client));
    write_all_bytes(&mut server, bytes);
    server.shutdown(Shutdown::Write).expect("shutdown");
    let got = reader.join().expect("reader");
    say(&format!("done {got}"));
    // A service keeps running: stay until the test has seen the agent report us.
    wait_for_go();
}

/// A UDP server: binds, prints `port PORT`, answers each of `count` datagrams with the same
/// bytes to its sender, prints `done`, waits for go. It never sends before it has received.
fn udp_echo(bind: &str, count: u64) {
    let socket = UdpSocket::bind(bind).expect("bind");
    say(&format!(
        "port {}",
        socket.local_addr().expect("addr").port()
    ));
    let mut buf = vec![0u8; 64 * 1024];
    for _ in 0..count {
        let (n, from) = socket.recv_from(&mut buf).expect("recv");
        socket.send_to(&buf[..n], from).expect("answer");
    }
    say("done");
    wait_for_go();
}

/// Two threads pinned to CPUs 0 and 1 send on one shared UDP socket.
fn two_cpu_udp(to: SocketAddr, count: u64, size: usize) {
    let socket = std::sync::Arc::new(UdpSocket::bind("127.0.0.1:0").expect("bind"));
    let threads: Vec<_> = (0..2)
        .map(|cpu| {
            let socket = socket.clone();
            thread::spawn(move || {
                let mut set = nix::sched::CpuSet::new();
                set.set(cpu).expect("cpu set");
                nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
                    .expect("affinity");
                let payload = vec![0x11u8; size];
                for _ in 0..count {
                    socket.send_to(&payload, to).expect("send");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("sender");
    }
    say(&format!(
        "done {}",
        socket.local_addr().expect("addr").port()
    ));
    wait_for_go();
}

/// Opens `sockets` UDP sockets, each sends one datagram, all stay open until stdin says go.
fn hold_udp(to: SocketAddr, sockets: u64, size: usize) {
    let payload = vec![0x77u8; size];
    let held: Vec<UdpSocket> = (0..sockets)
        .map(|_| {
            let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
            s.send_to(&payload, to).expect("send");
            s
        })
        .collect();
    say(&format!("sent {}", held.len()));
    wait_for_go();
    say("done");
}

/// Benchmark load: `sockets` UDP sockets, each sending one 64-byte datagram per second for
/// `seconds`. Source addresses are spread over 127.0.0.2-127.0.0.9 so more sockets than one
/// address's ephemeral port range can exist. Prints "ready" after the first round.
fn active_udp(to: SocketAddr, sockets: usize, seconds: u64) {
    let sources = 8;
    let held: Vec<UdpSocket> = (0..sockets)
        .map(|i| {
            UdpSocket::bind(format!("127.0.0.{}:0", 2 + i % sources))
                .expect("bind (raise ulimit -n?)")
        })
        .collect();
    let payload = [0x42u8; 64];
    let start = std::time::Instant::now();
    for round in 0..seconds {
        for s in &held {
            // A full receive queue on the sink is fine: the datagram has left the socket.
            let _ = s.send_to(&payload, to);
        }
        if round == 0 {
            say(&format!("ready {}", held.len()));
        }
        let next = start + std::time::Duration::from_secs(round + 1);
        if let Some(wait) = next.checked_duration_since(std::time::Instant::now()) {
            thread::sleep(wait);
        }
    }
    say("done");
}

/// One socket sends a datagram, pauses, sends another, then waits for go (an idle socket that
/// comes back).
fn udp_twice(to: SocketAddr, size: usize, pause_ms: u64) {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let payload = vec![0x24u8; size];
    s.send_to(&payload, to).expect("send");
    say("first");
    thread::sleep(std::time::Duration::from_millis(pause_ms));
    s.send_to(&payload, to).expect("send");
    say(&format!("done {}", s.local_addr().expect("addr").port()));
    wait_for_go();
}

/// A pre-forked server, as nginx or Apache run: this process (the "master") creates the
/// listener on 127.0.0.1, then starts a worker (`worker-send`, a child process that inherits
/// the listener as fd 3) which accepts one connection and sends `bytes` on it. Prints
/// `listening PORT WORKER_PID`; the worker exits on "go" (stdin is shared), then so does
/// this process. With `close`, the worker closes the connection as soon as it has sent (a
/// connection served within one poll of the agent).
fn prefork_serve(bytes: u64, close: bool) {
    use std::os::{fd::AsRawFd as _, unix::process::CommandExt as _};

    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let fd = listener.as_raw_fd();
    let mut worker = std::process::Command::new(env::current_exe().expect("own exe"));
    worker.args(["worker-send", &bytes.to_string()]);
    if close {
        worker.arg("--close");
    }
    // SAFETY: only dup2(2) and fcntl(2), async-signal-safe, between fork and exec. The
    // duplicate (fd 3) has no close-on-exec flag, so the worker inherits the listener; when
    // the listener already is fd 3, dup2 does nothing and the flag is cleared instead.
    unsafe {
        worker.pre_exec(move || {
            let ok = if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, 3)
            };
            if ok < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut worker = worker.spawn().expect("start the worker");
    say(&format!("listening {port} {}", worker.id()));
    let status = worker.wait().expect("wait for the worker");
    assert!(status.success(), "worker failed: {status}");
    drop(listener);
}

/// The worker of `prefork-serve`: accepts one connection on fd 3, sends `bytes`, shuts its
/// sending side (the socket stays open in this process; with `close`, it is closed), waits
/// for "go".
fn worker_send(bytes: u64, close: bool) {
    use std::os::fd::FromRawFd as _;

    // SAFETY: fd 3 is the listener `prefork-serve` passed down; nothing else owns it here.
    let listener = unsafe { TcpListener::from_raw_fd(3) };
    let (mut conn, _) = listener.accept().expect("accept");
    write_all_bytes(&mut conn, bytes);
    conn.shutdown(Shutdown::Write).expect("shutdown");
    if close {
        drop(conn);
    }
    say("sent");
    wait_for_go();
}
