//! What the HTTP sinks share: the client (ureq, rustls with ring; verification always on,
//! against `ca_file` alone when given, else the host's trust store; optional client
//! certificate), gzip request bodies, URLs printed without credentials, and what an HTTP
//! status means for a batch. Tokens and TLS files are read in `http_setup`. Blocking is
//! fine: each sink delivers in its own thread.

use std::{
    io::{self, Write as _},
    time::Duration,
};

use serde_json::Value;
use ureq::{Agent, http::Uri};

pub use super::http_setup::{Secret, SetupError, load_token, warn_if_plain};
use super::{
    Format, Reporter, cef, ecs,
    http_setup::tls_config,
    ocsf,
    settings::SinkConfig,
    transport::{Sent, TransportError},
};
use crate::detect::alerts::AlertEvent;

/// The whole batch of `len` events was delivered.
pub const fn delivered(len: usize) -> Sent {
    Sent {
        done: len,
        rejected: Vec::new(),
    }
}

/// An `http(s)://host[:port][/path][?query]` URL without credentials in it, else why not.
pub fn check_url(url: &str) -> Result<(), String> {
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("{:?} is not a URL: {e}", redacted(url)))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(format!("{:?}: http:// or https://", redacted(url)));
    }
    let Some(authority) = uri.authority() else {
        return Err(format!("{:?} has no host", redacted(url)));
    };
    if authority.as_str().contains('@') {
        return Err(
            "credentials do not go in the URL: use token_file or token_env (and auth)".into(),
        );
    }
    if authority.host().is_empty() {
        return Err(format!("{:?} has no host", redacted(url)));
    }
    Ok(())
}

/// `url` for logs and error messages: scheme, host, port and path; no userinfo, no query.
pub fn redacted(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let host = authority.rsplit('@').next().unwrap_or_default();
    format!("{scheme}://{host}{path}")
}

/// The event as a JSON value in `format`: an object for json, ocsf and ecs; a string for
/// CEF and text.
pub fn event_value(format: Format, event: &AlertEvent, reporter: &Reporter) -> Value {
    match format {
        Format::Json => serde_json::to_value(event).unwrap_or(Value::Null),
        Format::Ocsf => ocsf::detection_finding(event, reporter),
        Format::Ecs => ecs::alert(event, reporter),
        Format::Cef => Value::String(cef::line(event, reporter)),
        Format::Text => Value::String(super::render(Format::Text, event, reporter)),
    }
}

/// What an answer's status means for the whole batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// 2xx.
    Success,
    /// Busy or broken receiver (408, 429, 5xx, anything unexpected): retry later.
    Retry,
    /// Nothing in the events is wrong, the sink's configuration is (credentials, URL,
    /// redirect, size): retried too, so nothing is lost while an operator fixes it.
    Config,
    /// The receiver refuses this content for good (other 4xx): dead letter.
    Refused,
}

pub const fn classify(status: u16) -> Status {
    match status {
        200..=299 => Status::Success,
        300..=399 | 401 | 403 | 404 | 405 | 407 | 413 | 414 | 421 => Status::Config,
        408 | 409 | 425 | 429 => Status::Retry,
        400..=499 => Status::Refused,
        _ => Status::Retry,
    }
}

/// A hint for the operator per `Config` status, for the error message.
pub const fn config_hint(status: u16) -> &'static str {
    match status {
        401 | 407 => "the receiver does not accept the token (check token_file / token_env)",
        403 => "the token lacks the rights for this (check its privileges / allowed indexes)",
        404 | 405 | 421 => "nothing takes events at this URL (check url)",
        413 | 414 => "the request is too large for the receiver (lower batch_max)",
        _ => "the receiver redirects (set url to the final address)",
    }
}

/// An answer: its status and (the first `limit` bytes of) its body.
pub struct Reply {
    pub status: u16,
    pub body: String,
}

/// The first ~200 bytes of a receiver's answer, on one line, for logs and dead letters.
pub fn snippet(body: &str) -> String {
    const MAX: usize = 200;
    let mut end = body.len().min(MAX);
    while !body.is_char_boundary(end) {
        end -= 1;
    }
    let mut s: String = body[..end]
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if end < body.len() {
        s.push('…');
    }
    s
}

/// One sink's HTTP client: the connection pool, TLS settings and timeout.
pub struct HttpClient {
    agent: Agent,
    gzip: bool,
    timeout: Duration,
}

impl HttpClient {
    /// Reads `ca_file`, `client_cert` and `client_key` now: a missing or unreadable file is
    /// an error at start, not at the first alert.
    pub fn new(c: &SinkConfig, gzip: bool) -> Result<Self, SetupError> {
        let tls = tls_config(c)?;
        let timeout = c.timeout.get_ref().0;
        let url = c.url.as_ref().map_or("", |u| u.get_ref().as_str());
        let mut config = Agent::config_builder();
        if is_loopback(url) {
            // As Go's ProxyFromEnvironment does: a receiver on this host is never reached
            // through HTTPS_PROXY / HTTP_PROXY / ALL_PROXY (which apply otherwise).
            config = config.proxy(None);
        }
        let agent = config
            .tls_config(tls)
            .timeout_global(Some(timeout))
            // Statuses are read here, bodies of 4xx/5xx included.
            .http_status_as_error(false)
            // A redirected POST would lose its body and its Authorization: answer 3xx instead.
            .max_redirects(0)
            .max_redirects_will_error(false)
            .user_agent(concat!("egress-monitor/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        Ok(Self {
            agent,
            gzip,
            timeout,
        })
    }

    /// POSTs `body`; reads at most `limit` bytes of the answer. Transport failures (connect,
    /// TLS, timeout, a non-HTTP answer) are errors naming the URL (without credentials).
    pub fn post(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        limit: u64,
    ) -> Result<Reply, TransportError> {
        let mut request = self.agent.post(url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let result = if self.gzip {
            let body = gzip(body)?;
            request
                .header("Content-Encoding", "gzip")
                .send(body.as_slice())
        } else {
            request.send(body)
        };
        let mut response = result.map_err(|e| self.failure(url, &e))?;
        let status = response.status().as_u16();
        let mut body = response
            .body_mut()
            .with_config()
            .limit(limit)
            .read_to_string()
            .map_err(|e| self.failure(url, &e))?;
        // Answers end up in logs and dead letters: a receiver echoing the credentials must
        // not put them there.
        for (_, value) in headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("authorization"))
        {
            let credentials = value.split_once(' ').map_or(*value, |(_, c)| c);
            if !credentials.is_empty() {
                body = body.replace(credentials, "<redacted>");
            }
        }
        Ok(Reply { status, body })
    }

    fn failure(&self, url: &str, e: &ureq::Error) -> TransportError {
        let url = redacted(url);
        let (kind, what) = match e {
            ureq::Error::Timeout(_) => (
                io::ErrorKind::TimedOut,
                format!(
                    "no complete answer within {} (timeout)",
                    humantime::format_duration(self.timeout)
                ),
            ),
            // rustls reports handshake failures (certificate checks) as InvalidData.
            ureq::Error::Io(io) if io.kind() == io::ErrorKind::InvalidData => {
                (io.kind(), format!("TLS: {io}"))
            }
            ureq::Error::Io(io) => (io.kind(), io.to_string()),
            ureq::Error::Protocol(p) => (
                io::ErrorKind::InvalidData,
                format!("not an HTTP answer: {p}"),
            ),
            ureq::Error::HostNotFound => (io::ErrorKind::NotFound, "host not found".into()),
            ureq::Error::Rustls(t) => (io::ErrorKind::InvalidData, format!("TLS: {t}")),
            ureq::Error::Tls(t) => (io::ErrorKind::InvalidData, format!("TLS: {t}")),
            other => (io::ErrorKind::Other, other.to_string()),
        };
        TransportError::Io(io::Error::new(kind, format!("{url}: {what}")))
    }
}

/// `localhost`, `127.0.0.0/8` or `::1`.
fn is_loopback(url: &str) -> bool {
    let Ok(uri) = url.parse::<Uri>() else {
        return false;
    };
    let host = uri.host().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn gzip(body: &[u8]) -> io::Result<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4),
        flate2::Compression::fast(),
    );
    encoder.write_all(body)?;
    encoder.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_printed_without_secrets() {
        assert!(check_url("https://splunk.example.org:8088").is_ok());
        assert!(check_url("http://[::1]:9200/").is_ok());
        assert!(check_url("ftp://h/").is_err());
        assert!(check_url("https:///x").is_err());
        assert!(check_url("not a url").is_err());
        let e = check_url("https://elastic:changeme@h:9200").unwrap_err();
        assert!(!e.contains("changeme"), "{e}");
        assert_eq!(
            redacted("https://user:pw@h:8088/services/collector?token=x#f"),
            "https://h:8088/services/collector"
        );
        assert_eq!(redacted("http://h"), "http://h");
    }

    #[test]
    fn loopback_receivers_bypass_proxies() {
        assert!(is_loopback("http://127.0.0.1:8088"));
        assert!(is_loopback("https://[::1]:9200/"));
        assert!(is_loopback("https://LOCALHOST/x"));
        assert!(!is_loopback("https://splunk.example.org:8088"));
        assert!(!is_loopback("https://10.0.0.1"));
    }

    #[test]
    fn statuses() {
        assert_eq!(classify(200), Status::Success);
        assert_eq!(classify(204), Status::Success);
        for s in [408, 429, 500, 502, 503, 504] {
            assert_eq!(classify(s), Status::Retry, "{s}");
        }
        for s in [301, 401, 403, 404, 413] {
            assert_eq!(classify(s), Status::Config, "{s}");
        }
        for s in [400, 415, 422] {
            assert_eq!(classify(s), Status::Refused, "{s}");
        }
    }

    #[test]
    fn snippets_are_bounded_and_on_one_line() {
        assert_eq!(snippet("a\nb"), "a b");
        let long = "é".repeat(300);
        let s = snippet(&long);
        assert!(s.len() <= 204 && s.ends_with('…'), "{s}");
    }
}
