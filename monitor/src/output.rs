//! How `run` prints samples: JSON lines (the `FlowSample` contract) or one readable line each.

use std::io::{self, Write};

use crate::flow::{FlowSample, Owner};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// One readable line per sample.
    Text,
    /// One `FlowSample` JSON object per line (the format `replay` reads).
    Json,
}

/// Writes `samples` to `out` and flushes, so a consumer reading a pipe sees every window as
/// soon as it closes.
pub fn write_samples(
    out: &mut impl Write,
    format: OutputFormat,
    samples: &[FlowSample],
) -> io::Result<()> {
    for s in samples {
        match format {
            OutputFormat::Json => {
                serde_json::to_writer(&mut *out, s)?;
                out.write_all(b"\n")?;
            }
            OutputFormat::Text => writeln!(out, "{}", text_line(s))?,
        }
    }
    out.flush()
}

pub fn text_line(s: &FlowSample) -> String {
    let dest = match (&s.remote, s.untracked) {
        (Some(r), _) => format!("{}:{}", r.addr, r.port),
        (None, Some(why)) => format!(
            "(untracked: {})",
            serde_json::to_value(why)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        ),
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
    use super::*;

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
