//! How alerts are printed: JSON lines (the `AlertEvent`, the agent's alert schema) or one
//! readable line; and the detailed view of `alerts show`.

use std::{
    fmt::Write as _,
    io::{self, Write},
};

use crate::{
    detect::alerts::{Alert, AlertEvent, Reference, Threshold, ThresholdKind},
    output::{OutputFormat, human_bytes, process_label},
};

pub fn write_event(out: &mut impl Write, format: OutputFormat, e: &AlertEvent) -> io::Result<()> {
    match format {
        OutputFormat::Json => {
            serde_json::to_writer(&mut *out, e)?;
            out.write_all(b"\n")
        }
        OutputFormat::Text => {
            writeln!(out, "{} {:<12} {}", e.at, e.event.name(), summary(&e.alert))
        }
        OutputFormat::None => Ok(()),
    }
}

/// One line: rule, severity, service, peer, volume against threshold, process, short id.
pub fn summary(a: &Alert) -> String {
    let mut line = format!("{} {} service={}", a.rule, a.severity, a.service);
    if let Some(p) = &a.peer {
        match p.prefix_len {
            Some(len) => {
                let _ = write!(line, " prefix={}/{len}", p.addr);
                if let Some(n) = p.members {
                    let _ = write!(line, " ({n} addresses)");
                }
            }
            None => {
                let _ = write!(line, " peer={}", endpoint(p.addr, p.port));
            }
        }
        if let Some(name) = &p.name {
            let _ = write!(line, " ({name})");
        }
        let _ = write!(line, " class={}", p.class.name());
    }
    let _ = write!(line, " {}", volume(a));
    if let Some(p) = &a.process {
        let _ = write!(line, " process={}", process_label(p));
    }
    if a.acknowledged {
        line.push_str(" [acknowledged]");
    }
    let _ = write!(line, " id={}", a.id);
    line
}

fn endpoint(addr: std::net::IpAddr, port: u16) -> String {
    match addr {
        std::net::IpAddr::V4(v4) => format!("{v4}:{port}"),
        std::net::IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    }
}

/// "120.0 MiB in 1m > 64.0 MiB (clients p99.9 1.2 MiB x3, 5000 values), 300.0 MiB so far".
fn volume(a: &Alert) -> String {
    let t = &a.threshold;
    if t.kind == ThresholdKind::Count {
        return format!(
            "{} new destinations in {} > {}",
            a.new_destinations.unwrap_or_default(),
            a.window,
            t.bytes
        );
    }
    let mut s = format!(
        "{} in {} > {}",
        human_bytes(a.bytes),
        a.window,
        human_bytes(t.bytes)
    );
    let r = reference(t);
    if !r.is_empty() {
        let _ = write!(s, " ({r})");
    }
    if a.total_bytes > 0 {
        let _ = write!(s, ", {} so far", human_bytes(a.total_bytes));
    }
    s
}

/// What a threshold was judged against, in a few words: "clients p99.9 1.2 MiB x3 x1.4
/// activity, 5000 values", "own curve 180.0 MiB x1.5", "clients floor (12 values)", or
/// nothing for a configured threshold.
pub fn reference(t: &Threshold) -> String {
    let name = t.reference.map_or("baseline", Reference::name);
    let mut s = String::new();
    match (t.reference, t.quantile, t.baseline_bytes, t.factor) {
        (Some(Reference::Configured), ..) | (None, None, None, None) => {}
        (Some(Reference::OwnCurve), _, Some(base), Some(f)) => {
            let _ = write!(s, "own curve {} x{f}", human_bytes(base));
        }
        (_, Some(q), Some(base), Some(f)) => {
            let _ = write!(s, "{name} p{} {} x{f}", q * 100.0, human_bytes(base));
        }
        _ => {
            let _ = write!(s, "{name} floor");
        }
    }
    if let Some(activity) = t
        .activity
        .filter(|a| *a > 1.0 && t.kind == ThresholdKind::Baseline)
    {
        let _ = write!(s, " x{activity:.2} activity");
    }
    if let Some(n) = t.samples.filter(|_| !s.is_empty()) {
        let _ = write!(s, ", {n} values");
    }
    s
}

/// `alerts show`: every field an analyst needs, then the history.
pub fn detail(a: &Alert, history: &[AlertEvent]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "alert     {}", a.id);
    let _ = writeln!(
        s,
        "rule      {} (rule {}): {}",
        a.rule,
        a.rule.number(),
        a.title
    );
    let _ = writeln!(s, "severity  {}", a.severity);
    let _ = writeln!(
        s,
        "att&ck    {} {} / {} {}",
        a.attack.tactic_id, a.attack.tactic, a.attack.technique_id, a.attack.technique
    );
    let status = a.status.name();
    let _ = writeln!(
        s,
        "status    {status}{}",
        if a.acknowledged { ", acknowledged" } else { "" }
    );
    let _ = writeln!(s, "service   {}", a.service);
    if let Some(p) = &a.process {
        let _ = writeln!(
            s,
            "process   pid {} {} user {} unit {}",
            p.pid.map_or("-".into(), |p| p.to_string()),
            p.exe.as_deref().or(p.comm.as_deref()).unwrap_or("-"),
            p.user
                .clone()
                .or(p.uid.map(|u| u.to_string()))
                .unwrap_or("-".into()),
            p.unit
                .as_deref()
                .or(p.container_id.as_deref())
                .unwrap_or("-"),
        );
        if !p.cmdline.is_empty() {
            let _ = writeln!(s, "cmdline   {}", p.cmdline.join(" "));
        }
    }
    if let Some(p) = &a.peer {
        let at = match p.prefix_len {
            Some(len) => format!(
                "prefix {}/{len} ({} addresses)",
                p.addr,
                p.members.unwrap_or_default()
            ),
            None => endpoint(p.addr, p.port),
        };
        let _ = writeln!(
            s,
            "peer      {at} name {} class {}",
            p.name.as_deref().unwrap_or("-"),
            p.class.name()
        );
    }
    let _ = writeln!(s, "volume    {}", volume(a));
    if let Some(r) = a.threshold.reference {
        let _ = writeln!(s, "judged    against the {}", r.describe());
    }
    let _ = writeln!(s, "packets   {} in {}", a.packets, a.window);
    let _ = writeln!(s, "peak      {} in {}", human_bytes(a.peak_bytes), a.window);
    if !a.examples.is_empty() {
        let list: Vec<String> = a.examples.iter().map(ToString::to_string).collect();
        let _ = writeln!(s, "examples  {}", list.join(", "));
    }
    let _ = writeln!(s, "traffic   first {} last {}", a.first_seen, a.last_seen);
    let _ = writeln!(
        s,
        "opened    {}  updated {}  last exceeded {}{}",
        a.opened_at,
        a.updated_at,
        a.last_exceeded,
        a.resolved_at
            .map(|r| format!("  resolved {r}"))
            .unwrap_or_default()
    );
    let _ = writeln!(s, "history");
    for e in history {
        let _ = writeln!(
            s,
            "  {} {:<12} {} in {}, {} so far",
            e.at,
            e.event.name(),
            human_bytes(e.alert.bytes),
            e.alert.window,
            human_bytes(e.alert.total_bytes)
        );
    }
    s
}
