//! `GET /metrics` over HTTP/1.1 on the configured address, in a thread of its own (one
//! request at a time: Prometheus scrapes every few seconds at most). Anything else: 404.

use std::{net::SocketAddr, sync::Arc, thread::JoinHandle};

use super::{Metrics, render};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("metrics endpoint: cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("metrics endpoint: starting its thread")]
    Spawn(#[source] std::io::Error),
}

/// The running endpoint; stopped (and its port closed) by `stop` or on drop.
pub struct MetricsServer {
    server: Arc<tiny_http::Server>,
    addr: SocketAddr,
    handle: Option<JoinHandle<()>>,
}

const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

impl MetricsServer {
    pub fn start(addr: SocketAddr, metrics: Arc<Metrics>) -> Result<Self, ServerError> {
        let server =
            tiny_http::Server::http(addr).map_err(|source| ServerError::Bind { addr, source })?;
        let bound = server.server_addr().to_ip().unwrap_or(addr);
        let server = Arc::new(server);
        let serving = Arc::clone(&server);
        let handle = std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || {
                for request in serving.incoming_requests() {
                    let path = request.url().split('?').next().unwrap_or_default();
                    let response = if *request.method() == tiny_http::Method::Get
                        && path == "/metrics"
                    {
                        let header = tiny_http::Header::from_bytes("Content-Type", CONTENT_TYPE)
                            .expect("a valid static header");
                        tiny_http::Response::from_string(render(&metrics)).with_header(header)
                    } else {
                        tiny_http::Response::from_string("only GET /metrics is served here\n")
                            .with_status_code(404)
                    };
                    if let Err(e) = request.respond(response) {
                        tracing::debug!(error = %e, "metrics scrape: answering");
                    }
                }
            })
            .map_err(ServerError::Spawn)?;
        tracing::info!(address = %bound, "metrics endpoint: GET /metrics");
        Ok(Self {
            server,
            addr: bound,
            handle: Some(handle),
        })
    }

    /// The address it listens on (the port chosen by the system when 0 was asked).
    pub const fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io::{Read as _, Write as _},
        net::TcpStream,
        time::Duration,
    };

    use super::*;

    fn get(addr: SocketAddr, request: &str) -> String {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn serves_metrics_404s_the_rest_and_closes_its_port_on_drop() {
        let metrics = Arc::new(Metrics::default());
        let server = MetricsServer::start("127.0.0.1:0".parse().unwrap(), metrics).unwrap();
        let addr = server.addr();
        assert_ne!(addr.port(), 0);
        let ok = get(
            addr,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(
            ok.contains(&format!("Content-Type: {CONTENT_TYPE}")),
            "{ok}"
        );
        assert!(ok.contains("# TYPE egress_monitor_polls counter"), "{ok}");
        assert!(ok.trim_end().ends_with("# EOF"), "{ok}");
        let other = get(
            addr,
            "GET /debug HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        assert!(other.starts_with("HTTP/1.1 404"), "{other}");
        let post = get(
            addr,
            "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        assert!(post.starts_with("HTTP/1.1 404"), "{post}");
        drop(server);
        // tiny_http's acceptor thread lets go of the socket just after the drop.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
            assert!(
                std::time::Instant::now() < deadline,
                "the port stays open after stop"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn a_taken_port_is_a_clear_error() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let Err(e) = MetricsServer::start(addr, Arc::default()) else {
            panic!("bound twice");
        };
        assert!(
            e.to_string().contains(&format!("cannot listen on {addr}")),
            "{e}"
        );
    }
}
