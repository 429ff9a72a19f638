//! Writes to a stream receiver with one deadline for the whole batch. A socket write timeout
//! alone bounds each `write` call, and a call that moved a single byte starts the next
//! one's clock afresh: a receiver that reads a trickle would hold a sink for ever. Here the
//! batch must be taken within `budget(len)`, or it fails as timed out (and is sent again
//! later, on a new connection).

use std::{
    io::{self, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

/// The time a receiver gets for `len` bytes: 5 s, plus 1 s per 256 KiB (slower than
/// 256 KiB/s on a large batch counts as hung).
pub fn budget(len: usize) -> Duration {
    Duration::from_secs(5) + Duration::from_secs((len / (256 * 1024)) as u64)
}

/// Writes all of `buf` to `out` (whose transport is `socket`) within `limit`, then flushes.
pub fn write_all_within(
    out: &mut impl Write,
    socket: &TcpStream,
    mut buf: &[u8],
    limit: Duration,
) -> io::Result<()> {
    let total = buf.len();
    let deadline = Instant::now() + limit;
    let timed_out = |left: usize| {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "the receiver took {} of {total} bytes in {} (it reads too slowly or not at all)",
                total - left,
                humantime::format_duration(limit)
            ),
        )
    };
    while !buf.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timed_out(buf.len()));
        }
        socket.set_write_timeout(Some(left))?;
        match out.write(buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(timed_out(buf.len()));
            }
            Err(e) => return Err(e),
        }
    }
    let left = deadline.saturating_duration_since(Instant::now());
    socket.set_write_timeout(Some(left.max(Duration::from_millis(1))))?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use std::{io::Read as _, net::TcpListener, sync::mpsc, thread};

    use super::*;

    #[test]
    fn a_trickling_reader_cannot_hold_the_writer_past_the_deadline() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = mpsc::channel::<()>();
        // Reads 64 bytes every 50 ms: each write makes a little progress, for ever.
        let reader = thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut buf = [0u8; 64];
            while stopped.try_recv().is_err() {
                if conn.read(&mut buf).unwrap_or(0) == 0 {
                    return;
                }
                thread::sleep(Duration::from_millis(50));
            }
        });
        let mut stream = TcpStream::connect(addr).unwrap();
        let socket = stream.try_clone().unwrap();
        let data = vec![b'x'; 32 << 20];
        let started = Instant::now();
        let e = write_all_within(&mut stream, &socket, &data, Duration::from_secs(2)).unwrap_err();
        let took = started.elapsed();
        stop.send(()).unwrap();
        drop((stream, socket));
        reader.join().unwrap();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
        assert!(e.to_string().contains("reads too slowly"), "{e}");
        assert!(
            took >= Duration::from_millis(1900) && took < Duration::from_secs(4),
            "{took:?}"
        );
    }

    #[test]
    fn a_reading_receiver_gets_everything() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let reader = thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut all = Vec::new();
            conn.read_to_end(&mut all).unwrap();
            all.len()
        });
        let mut stream = TcpStream::connect(addr).unwrap();
        let socket = stream.try_clone().unwrap();
        let data = vec![b'y'; 8 << 20];
        write_all_within(&mut stream, &socket, &data, budget(data.len())).unwrap();
        drop((stream, socket));
        assert_eq!(reader.join().unwrap(), 8 << 20);
    }

    #[test]
    fn the_budget_grows_with_the_batch() {
        assert_eq!(budget(1000), Duration::from_secs(5));
        assert_eq!(budget(10 << 20), Duration::from_secs(45));
    }
}
