//! `[[sinks]]`: where alert events go (file, stdout, syslog, HTTP collectors), and how each
//! sink retries and bounds its backlog.

use std::{ops::Range, path::PathBuf};

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::{Format, syslog::Framing, syslog_sink::Protocol};
use crate::config::{Bytes, HumanDuration};

/// One `[[sinks]]` entry: `name`, `type`, `format`, then the keys of its type. (One flat
/// table rather than a tagged enum: it keeps line numbers in error messages.)
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// Unique: the sink's delivery cursor is stored under it.
    pub name: Spanned<String>,
    #[serde(rename = "type")]
    pub kind: SinkType,
    #[serde(default = "default_format")]
    pub format: Format,
    /// With `format = "ocsf"`: after each Detection Finding about one peer (opened or
    /// updated), an OCSF Network Activity (4001, Traffic) with the traffic as evidence.
    #[serde(default)]
    pub ocsf_network_activity: bool,
    /// Events per send (one write, one syslog burst, one HTTP request).
    #[serde(default = "default_batch_max")]
    pub batch_max: Spanned<u32>,
    /// First retry delay after a failure; doubles per consecutive failure, with jitter.
    #[serde(default = "default_retry_initial")]
    pub retry_initial: Spanned<HumanDuration>,
    /// The longest retry delay.
    #[serde(default = "default_retry_max")]
    pub retry_max: Spanned<HumanDuration>,
    /// Undelivered events kept for this sink; beyond, the oldest are skipped (counted and
    /// logged; they stay in the alert history).
    #[serde(default = "default_max_backlog")]
    pub max_backlog: Spanned<u64>,
    /// `file`: the file (a relative path is under `state.dir`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// `file`: rotate when the file would grow beyond this (`alerts.jsonl` ->
    /// `alerts.jsonl.1`).
    #[serde(default = "default_max_size")]
    pub max_size: Spanned<Bytes>,
    /// `file`: rotated files kept (older ones are deleted).
    #[serde(default = "default_keep")]
    pub keep: Spanned<u32>,
    /// `file`: `batch` fsyncs after every written batch, before the delivery cursor moves
    /// (nothing marked delivered is lost on power failure); `never` leaves it to the OS.
    #[serde(default = "default_fsync")]
    pub fsync: Fsync,
    /// `syslog`: the receiver, `host:port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Spanned<String>>,
    /// `syslog`: `tcp` (default), `udp`, or `tls` (RFC 5425: TCP with TLS, the receiver's
    /// certificate verified against `ca_file` or the host's trust store).
    #[serde(default = "default_protocol")]
    pub protocol: Protocol,
    /// `syslog` over TCP or TLS: `octet_counting` (RFC 5425/6587, default) or `lf`.
    #[serde(default = "default_framing")]
    pub framing: Framing,
    /// `syslog`: the facility (0-23; default 13, log audit).
    #[serde(default = "default_facility")]
    pub facility: Spanned<u8>,
    /// TLS (syslog over TLS, https collectors): the CA certificates (PEM) that verify the
    /// receiver; without it, the host's trust store. Verification is never off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<Spanned<PathBuf>>,
    /// TLS: a client certificate chain (PEM) for receivers that authenticate their senders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<Spanned<PathBuf>>,
    /// TLS: the private key (PEM) of `client_cert`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<Spanned<PathBuf>>,
    /// TLS: the name checked in the receiver's certificate (a DNS name or an IP address);
    /// default: the host part of `address`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<Spanned<String>>,
    /// HTTP sinks: where to POST (`https://` or `http://`, no credentials in it). `splunk_hec`:
    /// the collector's base URL (`/services/collector/event` is added) or that full URL;
    /// `elasticsearch`: the cluster URL (`/<data_stream>/_bulk` is added); `webhook`: the
    /// URL as is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<Spanned<String>>,
    /// HTTP sinks: a file holding the token, read once at start (surrounding whitespace
    /// trimmed). `splunk_hec` and `elasticsearch` need exactly one of `token_file` and
    /// `token_env`; a `webhook` may have one (sent as `Authorization: Bearer`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<Spanned<PathBuf>>,
    /// HTTP sinks: the environment variable holding the token, read once at start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<Spanned<String>>,
    /// HTTP sinks: gzip the request bodies (`Content-Encoding: gzip`). Default: on for
    /// `splunk_hec` and `elasticsearch` (both decode it), off for `webhook` (many receivers
    /// do not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gzip: Option<bool>,
    /// HTTP sinks: the longest a whole request may take (connect, TLS, send, answer); then
    /// it fails and is retried.
    #[serde(default = "default_timeout")]
    pub timeout: Spanned<HumanDuration>,
    /// `splunk_hec`: the index (default: the token's default index).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<String>,
    /// `splunk_hec`: the events' `source` (default `egress-monitor`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// `splunk_hec`: the events' `sourcetype` (default `egress-monitor:<format>`, e.g.
    /// `egress-monitor:ocsf`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sourcetype: Option<String>,
    /// `elasticsearch`: the data stream (or index) written to (default
    /// `logs-egress_monitor.alerts-default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_stream: Option<Spanned<String>>,
    /// `elasticsearch`: how the token is sent: `api_key` (default; `Authorization: ApiKey
    /// <token>`, the encoded key as Kibana shows it), `basic` (the token is `user:password`)
    /// or `bearer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<HttpAuth>,
}

/// `elasticsearch`: the `Authorization` scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HttpAuth {
    ApiKey,
    Basic,
    Bearer,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkType {
    /// One event per line appended to a file, rotated by size.
    File,
    /// One event per line on standard output (samples then need `agent.output = "none"`).
    Stdout,
    /// RFC 5424 messages to a syslog receiver (structured data, then the event in `format`,
    /// or a one-line summary with `format = "text"`).
    Syslog,
    /// Splunk HTTP Event Collector (`/services/collector/event`, one request per batch).
    SplunkHec,
    /// Elasticsearch or `OpenSearch` `_bulk` into a data stream (format `ecs` or `ocsf`).
    Elasticsearch,
    /// A JSON array of the batch's events sent (POST) to a URL.
    Webhook,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fsync {
    Batch,
    Never,
}

const fn default_protocol() -> Protocol {
    Protocol::Tcp
}

const fn default_framing() -> Framing {
    Framing::OctetCounting
}

fn default_facility() -> Spanned<u8> {
    Spanned::new(0..0, super::syslog::DEFAULT_FACILITY)
}

fn default_batch_max() -> Spanned<u32> {
    Spanned::new(0..0, 500)
}

fn default_retry_initial() -> Spanned<HumanDuration> {
    Spanned::new(0..0, HumanDuration::secs(1))
}

fn default_retry_max() -> Spanned<HumanDuration> {
    Spanned::new(0..0, HumanDuration::secs(300))
}

fn default_max_backlog() -> Spanned<u64> {
    Spanned::new(0..0, 100_000)
}

fn default_timeout() -> Spanned<HumanDuration> {
    Spanned::new(0..0, HumanDuration::secs(10))
}

const fn default_format() -> Format {
    Format::Json
}

fn default_max_size() -> Spanned<Bytes> {
    Spanned::new(0..0, Bytes::mib(100))
}

fn default_keep() -> Spanned<u32> {
    Spanned::new(0..0, 5)
}

const fn default_fsync() -> Fsync {
    Fsync::Batch
}

/// The default: alerts as JSON lines in `state.dir/alerts.jsonl`.
pub fn default_sinks() -> Vec<SinkConfig> {
    vec![SinkConfig {
        name: Spanned::new(0..0, "alerts-file".to_owned()),
        kind: SinkType::File,
        format: Format::Json,
        ocsf_network_activity: false,
        batch_max: default_batch_max(),
        retry_initial: default_retry_initial(),
        retry_max: default_retry_max(),
        max_backlog: default_max_backlog(),
        path: Some(PathBuf::from("alerts.jsonl")),
        max_size: default_max_size(),
        keep: default_keep(),
        fsync: Fsync::Batch,
        address: None,
        protocol: default_protocol(),
        framing: default_framing(),
        facility: default_facility(),
        ca_file: None,
        client_cert: None,
        client_key: None,
        server_name: None,
        url: None,
        token_file: None,
        token_env: None,
        gzip: None,
        timeout: default_timeout(),
        index: None,
        source: None,
        sourcetype: None,
        data_stream: None,
        auth: None,
    }]
}

/// Names unique and non-empty, sizes sane.
pub fn validate(sinks: &[SinkConfig]) -> Result<(), Invalid> {
    for (i, sink) in sinks.iter().enumerate() {
        let name = sink.name.get_ref();
        if name.trim().is_empty() {
            return Err((sink.name.span(), format!("sinks[{i}].name"), "empty".into()));
        }
        if sinks[..i].iter().any(|s| s.name.get_ref() == name) {
            return Err((
                sink.name.span(),
                format!("sinks[{i}].name"),
                format!("sink {name:?} is defined twice (names key the delivery cursors)"),
            ));
        }
        validate_delivery(i, sink)?;
        if sink.client_cert.is_some() != sink.client_key.is_some() {
            let span = sink
                .client_cert
                .as_ref()
                .or(sink.client_key.as_ref())
                .map_or(sink.name.span(), Spanned::span);
            return Err((
                span,
                format!("sinks[{i}].client_cert"),
                "client_cert and client_key go together".into(),
            ));
        }
        match sink.kind {
            SinkType::Stdout => {}
            SinkType::File => {
                if sink.path.is_none() {
                    return Err((
                        sink.name.span(),
                        format!("sinks[{i}].path"),
                        "a file sink needs a path".into(),
                    ));
                }
                if sink.max_size.get_ref().as_u64() < 4096 {
                    return Err((
                        sink.max_size.span(),
                        format!("sinks[{i}].max_size"),
                        "must be at least 4KiB".into(),
                    ));
                }
                if *sink.keep.get_ref() > 1000 {
                    return Err((
                        sink.keep.span(),
                        format!("sinks[{i}].keep"),
                        "at most 1000 rotated files".into(),
                    ));
                }
            }
            SinkType::Syslog => {
                let Some(address) = &sink.address else {
                    return Err((
                        sink.name.span(),
                        format!("sinks[{i}].address"),
                        "a syslog sink needs an address (host:port)".into(),
                    ));
                };
                let port_ok = address
                    .get_ref()
                    .rsplit_once(':')
                    .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
                if !port_ok {
                    return Err((
                        address.span(),
                        format!("sinks[{i}].address"),
                        format!("{:?} is not host:port", address.get_ref()),
                    ));
                }
                if *sink.facility.get_ref() > 23 {
                    return Err((
                        sink.facility.span(),
                        format!("sinks[{i}].facility"),
                        "syslog facilities are 0 to 23".into(),
                    ));
                }
                validate_syslog_tls(i, sink)?;
            }
            SinkType::SplunkHec | SinkType::Elasticsearch | SinkType::Webhook => {
                super::http_settings::validate(i, sink)?;
            }
        }
    }
    Ok(())
}

pub(super) type Invalid = (Range<usize>, String, String);

/// TLS keys only with `protocol = "tls"` (set on a plain TCP or UDP sink they would suggest
/// an encryption that is not there); `server_name` must be a name a certificate can hold.
fn validate_syslog_tls(i: usize, sink: &SinkConfig) -> Result<(), Invalid> {
    if sink.protocol != Protocol::Tls {
        let paths = [
            ("ca_file", &sink.ca_file),
            ("client_cert", &sink.client_cert),
            ("client_key", &sink.client_key),
        ];
        let set = paths
            .into_iter()
            .find_map(|(key, value)| value.as_ref().map(|v| (key, v.span())))
            .or_else(|| sink.server_name.as_ref().map(|v| ("server_name", v.span())));
        if let Some((key, span)) = set {
            return Err((
                span,
                format!("sinks[{i}].{key}"),
                "only with protocol = \"tls\" (this sink sends in clear text)".into(),
            ));
        }
    }
    if let Some(name) = &sink.server_name
        && let Err(e) = super::tls::parse_server_name(name.get_ref())
    {
        return Err((
            name.span(),
            format!("sinks[{i}].server_name"),
            e.to_string(),
        ));
    }
    Ok(())
}

/// The keys every sink type has.
fn validate_delivery(i: usize, sink: &SinkConfig) -> Result<(), Invalid> {
    if sink.ocsf_network_activity && sink.format != Format::Ocsf {
        return Err((
            sink.name.span(),
            format!("sinks[{i}].ocsf_network_activity"),
            "needs format = \"ocsf\"".into(),
        ));
    }
    if sink.ocsf_network_activity
        && !matches!(
            sink.kind,
            SinkType::File | SinkType::Stdout | SinkType::Syslog
        )
    {
        // HTTP receivers answer per record; one event as two records would break the
        // mapping of their answers (HEC's invalid-event-number, `_bulk` items) to events.
        return Err((
            sink.name.span(),
            format!("sinks[{i}].ocsf_network_activity"),
            "is available for file, stdout and syslog sinks".into(),
        ));
    }
    if !(1..=10_000).contains(sink.batch_max.get_ref()) {
        return Err((
            sink.batch_max.span(),
            format!("sinks[{i}].batch_max"),
            "1 to 10000 events".into(),
        ));
    }
    let initial = sink.retry_initial.get_ref().0;
    if initial < std::time::Duration::from_millis(100) {
        return Err((
            sink.retry_initial.span(),
            format!("sinks[{i}].retry_initial"),
            "at least 100ms".into(),
        ));
    }
    if sink.retry_max.get_ref().0 < initial {
        return Err((
            sink.retry_max.span(),
            format!("sinks[{i}].retry_max"),
            "must not be shorter than retry_initial".into(),
        ));
    }
    if *sink.max_backlog.get_ref() < u64::from(*sink.batch_max.get_ref()) {
        return Err((
            sink.max_backlog.span(),
            format!("sinks[{i}].max_backlog"),
            "must hold at least one batch (batch_max)".into(),
        ));
    }
    Ok(())
}
