//! What the HTTP sinks share: the client (ureq, rustls with ring; verification always on,
//! against `ca_file` alone when given, else the host's trust store; optional client
//! certificate), gzip request bodies, tokens that never reach a log, and what an HTTP status
//! means for a batch. Blocking is fine: each sink delivers in its own thread.

use std::{
    fmt,
    io::{self, Write as _},
    path::{Path, PathBuf},
    time::Duration,
};

use serde_json::Value;
use ureq::{
    Agent,
    http::Uri,
    tls::{Certificate, ClientCert, PemItem, PrivateKey, RootCerts, TlsConfig},
};

use super::{
    Format, Reporter, cef, ecs, ocsf,
    settings::SinkConfig,
    transport::{Sent, TransportError},
};
use crate::detect::alerts::AlertEvent;

/// A token: its value goes into a request header and nowhere else (`Debug` and `Display`
/// print a placeholder).
pub struct Secret(String);

impl Secret {
    pub const fn new(value: String) -> Self {
        Self(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Why an HTTP sink cannot start; each names its key (the sink's name is added around it).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("token_file {}", .0.display())]
    TokenFile(PathBuf, #[source] io::Error),
    #[error("token_file {} is empty", .0.display())]
    TokenFileEmpty(PathBuf),
    #[error("token_env {0}: the environment variable is not set or empty")]
    TokenEnv(String),
    #[error("token_file or token_env is needed")]
    NoToken,
    #[error("auth = \"basic\" needs a token of the form user:password")]
    BasicToken,
    #[error("{key} {}", .path.display())]
    Pem {
        key: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("url {0}")]
    Url(String),
}

/// The token of a sink, from `token_file` or `token_env` (looked up with `env`, so tests
/// need not change the process environment). `None` when neither is set.
pub fn load_token(
    c: &SinkConfig,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<Secret>, SetupError> {
    if let Some(path) = &c.token_file {
        let path = path.get_ref();
        let text =
            std::fs::read_to_string(path).map_err(|e| SetupError::TokenFile(path.clone(), e))?;
        let token = text.trim();
        if token.is_empty() {
            return Err(SetupError::TokenFileEmpty(path.clone()));
        }
        return Ok(Some(Secret::new(token.to_owned())));
    }
    if let Some(name) = &c.token_env {
        let name = name.get_ref();
        let token = env(name).map(|v| v.trim().to_owned()).unwrap_or_default();
        if token.is_empty() {
            return Err(SetupError::TokenEnv(name.clone()));
        }
        return Ok(Some(Secret::new(token)));
    }
    Ok(None)
}

/// A token over plain `http://` can be read on the way: said once, at start.
pub fn warn_if_plain(c: &SinkConfig, url: &str) {
    if url.starts_with("http://") && (c.token_file.is_some() || c.token_env.is_some()) {
        tracing::warn!(
            sink = %c.name.get_ref(),
            url = %redacted(url),
            "this alert sink sends its token over plain http; use https"
        );
    }
}

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
        let mut tls = TlsConfig::builder().root_certs(RootCerts::PlatformVerifier);
        if let Some(ca) = &c.ca_file {
            let certs = certificates("ca_file", ca.get_ref())?;
            tls = tls.root_certs(RootCerts::new_with_certs(&certs));
        }
        if let (Some(cert), Some(key)) = (&c.client_cert, &c.client_key) {
            let chain = certificates("client_cert", cert.get_ref())?;
            tls = tls.client_cert(Some(ClientCert::new_with_certs(
                &chain,
                private_key(key.get_ref())?,
            )));
        }
        let timeout = c.timeout.get_ref().0;
        let agent = Agent::config_builder()
            .tls_config(tls.build())
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

fn gzip(body: &[u8]) -> io::Result<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4),
        flate2::Compression::fast(),
    );
    encoder.write_all(body)?;
    encoder.finish()
}

fn read_pem(key: &'static str, path: &Path) -> Result<Vec<u8>, SetupError> {
    std::fs::read(path).map_err(|source| SetupError::Pem {
        key,
        path: path.to_owned(),
        source,
    })
}

fn pem_error(key: &'static str, path: &Path, what: String) -> SetupError {
    SetupError::Pem {
        key,
        path: path.to_owned(),
        source: io::Error::new(io::ErrorKind::InvalidData, what),
    }
}

/// Every certificate in a PEM file (at least one).
fn certificates(key: &'static str, path: &Path) -> Result<Vec<Certificate<'static>>, SetupError> {
    let pem = read_pem(key, path)?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(PemItem::Certificate(c)) => certs.push(c),
            Ok(_) => {}
            Err(e) => return Err(pem_error(key, path, e.to_string())),
        }
    }
    if certs.is_empty() {
        return Err(pem_error(key, path, "no PEM certificate in it".into()));
    }
    Ok(certs)
}

fn private_key(path: &Path) -> Result<PrivateKey<'static>, SetupError> {
    let pem = read_pem("client_key", path)?;
    PrivateKey::from_pem(&pem)
        .map_err(|_| pem_error("client_key", path, "no PEM private key in it".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Origin};

    fn sink(extra: &str) -> SinkConfig {
        Config::parse(
            &format!("[[sinks]]\nname = \"w\"\ntype = \"webhook\"\nurl = \"https://h/x\"\n{extra}"),
            &Origin::Embedded,
        )
        .unwrap()
        .sinks
        .remove(0)
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2".into());
        assert!(!format!("{s} {s:?}").contains("hunter2"));
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn tokens_from_a_file_or_the_environment_and_clear_errors() {
        let dir = std::env::temp_dir().join(format!("egress-http-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, "  abc-123\n").unwrap();
        let c = sink(&format!("token_file = {:?}\n", file.display().to_string()));
        let t = load_token(&c, |_| None).unwrap().unwrap();
        assert_eq!(t.expose(), "abc-123", "trimmed");

        std::fs::write(&file, "\n").unwrap();
        let e = load_token(&c, |_| None).unwrap_err().to_string();
        assert!(e.contains("token_file") && e.contains("is empty"), "{e}");
        std::fs::remove_file(&file).unwrap();
        let e = load_token(&c, |_| None).unwrap_err();
        assert!(
            e.to_string().starts_with("token_file ") && e.to_string().contains("token"),
            "{e}"
        );
        assert!(std::error::Error::source(&e).is_some(), "the io error");

        let c = sink("token_env = \"HOOK_TOKEN\"\n");
        let env = |name: &str| (name == "HOOK_TOKEN").then(|| "s3cret".to_owned());
        assert_eq!(load_token(&c, env).unwrap().unwrap().expose(), "s3cret");
        let e = load_token(&c, |_| Some(String::new()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("token_env HOOK_TOKEN"), "{e}");
        assert!(load_token(&sink(""), |_| None).unwrap().is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }

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

    #[test]
    fn unreadable_certificates_fail_at_start_naming_the_key() {
        let c = sink("ca_file = \"/nonexistent/ca.pem\"\n");
        let e = HttpClient::new(&c, false).err().unwrap().to_string();
        assert_eq!(e, "ca_file /nonexistent/ca.pem");
        let dir = std::env::temp_dir().join(format!("egress-http-pem-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "no pem here").unwrap();
        let c = sink(&format!("ca_file = {:?}\n", empty.display().to_string()));
        let e = HttpClient::new(&c, false).err().unwrap();
        let source = std::error::Error::source(&e).unwrap().to_string();
        assert!(source.contains("no PEM certificate"), "{source}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
