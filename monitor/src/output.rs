//! How `run` prints samples: JSON lines (the `FlowSample` contract) or one readable line each.

use std::{
    collections::hash_map::Entry,
    io::{self, Write},
    sync::Arc,
};

use jiff::Timestamp;
use rustc_hash::FxHashMap;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::flow::{Direction, Endpoint, FlowSample, Owner, Protocol, UntrackedReason};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// One readable line per sample.
    Text,
    /// One `FlowSample` JSON object per line (the format `replay` reads).
    Json,
    /// No samples on stdout (the agent only detects and exports; needed by a stdout sink).
    None,
}

/// Writes `samples` to `out` and flushes, so a consumer reading a pipe sees every window as
/// soon as it closes.
pub fn write_samples(
    out: &mut impl Write,
    format: OutputFormat,
    samples: &[FlowSample],
) -> io::Result<()> {
    match format {
        OutputFormat::None => return Ok(()),
        OutputFormat::Json => write_json(out, samples)?,
        OutputFormat::Text => {
            for s in samples {
                writeln!(out, "{}", text_line(s))?;
            }
        }
    }
    out.flush()
}

/// A [`FlowSample`] whose owner is already serialized. Same fields, same order, same JSON as
/// `FlowSample`'s own `Serialize` (a unit test holds them equal): flows of one process share
/// one owner, so it is serialized once per window instead of once per flow.
#[derive(Serialize)]
struct JsonSample<'a> {
    window_start: &'a RawValue,
    window_end: &'a RawValue,
    owner: &'a RawValue,
    local: Option<Endpoint>,
    remote: Option<Endpoint>,
    #[serde(skip_serializing_if = "Option::is_none")]
    remote_name: Option<&'a str>,
    protocol: Protocol,
    bytes: u64,
    packets: u64,
    flows: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    first_seen: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_seen: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    untracked: Option<UntrackedReason>,
    #[serde(skip_serializing_if = "Option::is_none")]
    direction: Option<Direction>,
}

fn write_json(out: &mut impl Write, samples: &[FlowSample]) -> io::Result<()> {
    // Five lookups a sample: with SipHash they were about 4 % of the agent's CPU at 10k flows a
    // second. The keys are the agent's own pointers and timestamps: Fx is enough.
    let mut owners: FxHashMap<*const Owner, Box<RawValue>> = FxHashMap::default();
    // All samples of a window share its bounds: format each once.
    let mut windows: FxHashMap<Timestamp, Box<RawValue>> = FxHashMap::default();
    for s in samples {
        for t in [s.window_start, s.window_end] {
            if let Entry::Vacant(e) = windows.entry(t) {
                e.insert(serde_json::value::to_raw_value(&t)?);
            }
        }
        let owner = match owners.entry(Arc::as_ptr(&s.owner)) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(serde_json::value::to_raw_value(&*s.owner)?),
        };
        let line = JsonSample {
            window_start: &windows[&s.window_start],
            window_end: &windows[&s.window_end],
            owner,
            local: s.local,
            remote: s.remote,
            remote_name: s.remote_name.as_deref(),
            protocol: s.protocol,
            bytes: s.bytes,
            packets: s.packets,
            flows: s.flows,
            first_seen: s.first_seen,
            last_seen: s.last_seen,
            untracked: s.untracked,
            direction: s.direction,
        };
        serde_json::to_writer(&mut *out, &line)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

pub fn text_line(s: &FlowSample) -> String {
    let dest = match (&s.remote, s.untracked) {
        (Some(r), _) => match &s.remote_name {
            Some(name) => format!("{}:{} ({name})", r.addr, r.port),
            None => format!("{}:{}", r.addr, r.port),
        },
        (None, Some(why)) => format!("(untracked: {})", why.name()),
        (None, None) => "?".to_owned(),
    };
    format!(
        "{} {:<28} {:<24} -> {:<40} {:<5} {:>10} {:>7} pkts",
        s.window_end.strftime("%H:%M:%S"),
        truncate(&s.owner.service, 28),
        truncate(&process_label(&s.owner), 24),
        dest,
        s.protocol.name(),
        human_bytes(s.bytes),
        s.packets,
    )
}

/// "comm[pid]" or what is known of it.
pub fn process_label(o: &Owner) -> String {
    match (&o.comm, o.pid) {
        (Some(c), Some(p)) => format!("{c}[{p}]"),
        (None, Some(p)) => format!("[{p}]"),
        (Some(c), None) => c.clone(),
        (None, None) => "-".to_owned(),
    }
}

pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let tail: String = s
        .chars()
        .rev()
        .take(max - 1)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("…{tail}")
}

pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    #[test]
    fn json_output_is_exactly_the_flow_sample_serialization() {
        let owner = Arc::new(Owner {
            pid: Some(9),
            comm: Some("nginx".into()),
            exe: Some("/usr/sbin/nginx \"quoted\"".into()),
            cmdline: vec!["nginx".into(), "-g".into()],
            service: "nginx.service".into(),
            ..Owner::default()
        });
        let mk = |port: u16, untracked, remote_name: Option<&str>, direction| FlowSample {
            window_start: "2026-11-26T10:00:00Z".parse().unwrap(),
            window_end: "2026-11-26T10:00:01.000000001Z".parse().unwrap(),
            owner: Arc::clone(&owner),
            local: Some(Endpoint {
                addr: IpAddr::from([10, 0, 0, 1]),
                port: 443,
            }),
            remote: Some(Endpoint {
                addr: "2001:db8::1".parse().unwrap(),
                port,
            }),
            remote_name: remote_name.map(Arc::from),
            protocol: Protocol::Tcp,
            bytes: 1,
            packets: 1,
            flows: 1,
            first_seen: Some("2026-11-26T09:59:00Z".parse().unwrap()),
            last_seen: None,
            untracked,
            direction,
        };
        let samples = [
            mk(1, None, None, Some(Direction::Served)),
            mk(2, Some(UntrackedReason::MapFull), None, None),
            mk(
                3,
                None,
                Some("exfil.example.test"),
                Some(Direction::Initiated),
            ),
        ];
        let mut out = Vec::new();
        write_samples(&mut out, OutputFormat::Json, &samples).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[2].contains(r#""remote_name":"exfil.example.test""#));
        assert!(lines[0].contains(r#""direction":"served""#), "{}", lines[0]);
        for (line, sample) in lines.iter().zip(&samples) {
            assert_eq!(*line, serde_json::to_string(sample).unwrap());
            assert_eq!(&serde_json::from_str::<FlowSample>(line).unwrap(), sample);
        }
    }

    #[test]
    fn text_shows_the_name_next_to_the_address() {
        let mut s = FlowSample {
            window_start: "2026-11-26T10:00:00Z".parse().unwrap(),
            window_end: "2026-11-26T10:00:01Z".parse().unwrap(),
            owner: Arc::new(Owner::default()),
            local: None,
            remote: Some(Endpoint {
                addr: IpAddr::from([127, 0, 0, 9]),
                port: 4000,
            }),
            remote_name: Some(Arc::from("exfil.example.test")),
            protocol: Protocol::Udp,
            bytes: 10,
            packets: 1,
            flows: 1,
            first_seen: None,
            last_seen: None,
            untracked: None,
            direction: None,
        };
        assert!(
            text_line(&s).contains("-> 127.0.0.9:4000 (exfil.example.test)"),
            "{}",
            text_line(&s)
        );
        s.remote_name = None;
        assert!(text_line(&s).contains("-> 127.0.0.9:4000 "));
        assert!(!text_line(&s).contains('('));
    }

    #[test]
    fn human_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 * 1024 * 1024 * 1024), "5.0 GiB");
    }

    #[test]
    fn truncation_keeps_the_end() {
        assert_eq!(truncate("/usr/sbin/nginx", 40), "/usr/sbin/nginx");
        assert_eq!(truncate("/usr/lib/synapse/bin/python3", 10), "…n/python3");
    }
}
