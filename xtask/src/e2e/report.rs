//! The run's report: the expectations beyond the alert itself, `target/e2e/report.json`,
//! and a short human summary.

use serde_json::Value;

/// The run's facts that the alert's verdict does not cover.
pub struct Checks<'a> {
    /// `Ok` when the agent exited 0 on SIGTERM, else how it ended.
    pub agent_exit: Result<(), String>,
    pub clients: usize,
    /// Clients that completed a round after the restart.
    pub survivors: usize,
    pub attack_received: u64,
    pub threshold: u64,
    pub images_found: usize,
    pub images_posted: usize,
    /// Syslog messages whose structured data contradicts their OCSF payload.
    pub sd_mismatches: &'a [String],
    /// The process the attacker's alert names, and nginx's workers when the attack began:
    /// the worker that served the attacker is who sent the bytes (not the master, whose
    /// listener the connection was accepted from).
    pub alert_pid: Option<u64>,
    pub nginx_workers: &'a [u32],
}

/// Each failed expectation, in words.
pub fn failures(c: &Checks<'_>) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(pid) = c.alert_pid
        && !c.nginx_workers.iter().any(|&w| u64::from(w) == pid)
    {
        out.push(format!(
            "the alert names process {pid}, not one of nginx's workers {:?}",
            c.nginx_workers
        ));
    }
    if let Err(how) = &c.agent_exit {
        out.push(format!("the agent did not exit 0 on SIGTERM: {how}"));
    }
    if c.survivors < c.clients {
        out.push(format!(
            "only {} of {} normal clients were served again after the restart",
            c.survivors, c.clients
        ));
    }
    if c.attack_received < c.threshold {
        out.push(format!(
            "the attack moved {} bytes, under the {}-byte threshold: the scenario is too small",
            c.attack_received, c.threshold
        ));
    }
    if c.images_found != c.images_posted {
        out.push(format!(
            "the attacker found {} images, {} were posted",
            c.images_found, c.images_posted
        ));
    }
    if !c.sd_mismatches.is_empty() {
        out.push(format!(
            "syslog structured data contradicts the OCSF payload: {}",
            c.sd_mismatches.join("; ")
        ));
    }
    out
}

fn mb(v: &Value) -> String {
    v.as_u64()
        .map_or_else(|| "?".to_owned(), |b| format!("{:.1} MB", b as f64 / 1e6))
}

fn secs(v: &Value) -> String {
    v.as_f64()
        .map_or_else(|| "?".to_owned(), |ms| format!("{:.1} s", ms / 1e3))
}

/// The containment and the normal clients' latency, when the report has them.
fn containment_lines(r: &Value) -> Vec<String> {
    let mut lines = Vec::new();
    let c = &r["containment"];
    if !c.is_null() {
        lines.push(match c["exported"]["status_code"].as_str() {
            Some(status) => format!(
                "  containment ({}): {status} at {} B/s; attacker {} before it, {} in the {:.0} s after ({:.0} B/s, allowed {}; {:.0} B/s once settled)",
                c["mode"].as_str().unwrap_or("?"),
                c["rate"],
                mb(&c["before"]),
                mb(&c["after"]),
                c["remaining_secs"].as_f64().unwrap_or(0.0),
                c["after_rate"].as_f64().unwrap_or(0.0),
                c["allowed_after"]
                    .as_u64()
                    .map_or_else(|| "any".to_owned(), |b| mb(&b.into())),
                c["steady_rate"].as_f64().unwrap_or(0.0)
            ),
            None => format!(
                "  containment ({}): none exported",
                c["mode"].as_str().unwrap_or("?")
            ),
        });
    }
    if let Some(phases) = r["normal_latency_by_phase"].as_object() {
        let each: Vec<String> = phases
            .iter()
            .map(|(name, p)| {
                format!(
                    "{name} {:.0}/{:.0} ms ({} failed)",
                    p["p50_ms"].as_f64().unwrap_or(0.0),
                    p["p99_ms"].as_f64().unwrap_or(0.0),
                    p["failures"]
                )
            })
            .collect();
        lines.push(format!(
            "  normal clients' requests p50/p99: {}",
            each.join(", ")
        ));
    }
    lines
}

/// A few lines for a person, from the report.
pub fn summary(r: &Value) -> String {
    let b = &r["bytes_received"];
    let a = &r["alert"];
    let rs = &r["restart"];
    let mut lines = vec![
        format!(
            "e2e ({}): {} in {:.0} s",
            r["preset"].as_str().unwrap_or("?"),
            if r["passed"] == true {
                "PASSED"
            } else {
                "FAILED"
            },
            r["durations_secs"]["total"].as_f64().unwrap_or(0.0)
        ),
        format!(
            "  received by normal clients: {} while learning, {} after, {} during attack and \
             grace; by the attacker: {}",
            mb(&b["normal_learning"]),
            mb(&b["normal_after_learning"]),
            mb(&b["normal_during_attack_and_grace"]),
            mb(&b["attacker"])
        ),
        format!(
            "  restart: Synapse pid {} -> {}, nginx pid {} -> {}, {:.1} s down; {} of {} \
             clients served after",
            rs["synapse_pids"][0],
            rs["synapse_pids"][1],
            rs["nginx_pids"][0],
            rs["nginx_pids"][1],
            rs["down_secs"].as_f64().unwrap_or(0.0),
            rs["clients_served_after"],
            r["options"]["clients"]
        ),
    ];
    lines.push(if a.is_null() {
        "  alert: none".to_owned()
    } else {
        format!(
            "  alert: {} on {} about {}, {} counted; at rsyslogd {} after the attack started \
             (opened by the agent at {})",
            a["rule"].as_str().unwrap_or("?"),
            a["service"].as_str().unwrap_or("?"),
            r["attack"]["address"].as_str().unwrap_or("?"),
            mb(&a["bytes"]),
            secs(&a["latency_received_ms"]),
            secs(&a["latency_agent_ms"])
        )
    });
    lines.push(format!(
        "  alerts by rule: {}; false alerts: {}",
        r["alerts_by_rule"],
        r["false_alerts"].as_array().map_or(0, Vec::len)
    ));
    lines.extend(containment_lines(r));
    lines.push(format!(
        "  agent: {} kB RSS, {:.1} % CPU, {}",
        r["agent"]["rss_kb_at_end"],
        r["agent"]["cpu_percent"].as_f64().unwrap_or(0.0),
        r["agent"]["exit"].as_str().unwrap_or("?")
    ));
    for f in r["failures"].as_array().into_iter().flatten() {
        lines.push(format!("  FAILED: {}", f.as_str().unwrap_or("?")));
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn good() -> Checks<'static> {
        Checks {
            agent_exit: Ok(()),
            clients: 6,
            survivors: 6,
            attack_received: 60 << 20,
            threshold: 32 << 20,
            images_found: 50,
            images_posted: 50,
            sd_mismatches: &[],
            alert_pid: Some(102),
            nginx_workers: &[101, 102],
        }
    }

    #[test]
    fn a_clean_run_has_no_failure_and_each_fault_is_named() {
        assert_eq!(failures(&good()), Vec::<String>::new());
        let bad = Checks {
            agent_exit: Err("exit status: 1".to_owned()),
            survivors: 4,
            attack_received: 1 << 20,
            images_found: 49,
            ..good()
        };
        let f = failures(&bad);
        assert_eq!(f.len(), 4, "{f:?}");
        assert!(f[0].contains("exit status: 1"));
        assert!(f[1].contains("only 4 of 6"));
        assert!(f[2].contains("too small"));
        assert!(f[3].contains("found 49 images, 50"));
        let m = ["alert a: peer".to_owned()];
        let f = failures(&Checks {
            sd_mismatches: &m,
            ..good()
        });
        assert_eq!(f.len(), 1);
        assert!(f[0].contains("alert a: peer"));
        let f = failures(&Checks {
            alert_pid: Some(100),
            ..good()
        });
        assert_eq!(f.len(), 1);
        assert!(f[0].contains("names process 100, not one of nginx's workers"));
    }

    #[test]
    fn the_summary_names_the_outcome() {
        let r = json!({
            "preset": "short", "passed": false, "durations_secs": {"total": 200.0},
            "bytes_received": {"normal_learning": 5_000_000, "attacker": 61_000_000},
            "restart": {"synapse_pids": [1, 2], "nginx_pids": [3, 4], "down_secs": 2.5,
                        "clients_served_after": 6},
            "options": {"clients": 6},
            "alert": {"rule": "unknown_volume", "service": "messaging", "bytes": 40_000_000,
                      "latency_received_ms": 1500, "latency_agent_ms": 1200},
            "attack": {"address": "127.0.0.66"},
            "alerts_by_rule": {"unknown_volume": 1}, "false_alerts": [],
            "agent": {"rss_kb_at_end": 30000, "cpu_percent": 1.5, "exit": "exit status: 0"},
            "failures": ["x went wrong"],
            "containment": {"mode": "enforce", "rate": 262_144, "before": 30_000_000,
                            "after": 40_000_000, "remaining_secs": 160.0, "after_rate": 250_000.0,
                            "allowed_after": 46_000_000,
                            "exported": {"status_code": "enforced"}},
            "normal_latency_by_phase": {"attack": {"p50_ms": 12.0, "p99_ms": 80.4, "failures": 0}},
        });
        let s = summary(&r);
        assert!(s.starts_with("e2e (short): FAILED in 200 s"), "{s}");
        assert!(s.contains("by the attacker: 61.0 MB"), "{s}");
        assert!(s.contains("Synapse pid 1 -> 2"), "{s}");
        assert!(s.contains("at rsyslogd 1.5 s after"), "{s}");
        assert!(s.contains("FAILED: x went wrong"), "{s}");
        assert!(
            s.contains("containment (enforce): enforced at 262144 B/s; attacker 30.0 MB before it, 40.0 MB in the 160 s after (250000 B/s, allowed 46.0 MB; 0 B/s once settled)"),
            "{s}"
        );
        assert!(s.contains("p50/p99: attack 12/80 ms (0 failed)"), "{s}");
    }
}
