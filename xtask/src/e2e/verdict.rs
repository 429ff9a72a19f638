//! The scenario's verdict, from what the SOC received: the OCSF Detection Findings rsyslogd
//! wrote, each stamped with when the harness saw it. Expected: one `peer_outlier` alert
//! about the attacker's address, on service `messaging`, within the deadline, naming a
//! plausible byte count; nothing else about anyone else, and nothing before the attack.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::Value;

/// One Detection Finding (OCSF class 2004) as received.
#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    /// Unix ms when the harness first saw it in rsyslogd's file.
    pub received_ms: i64,
    /// The alert's id (the same through its opened, updated and resolved events).
    pub alert: String,
    /// Create, Update or Close.
    pub activity: String,
    pub rule: String,
    pub service: Option<String>,
    pub peer: Option<String>,
    /// Bytes in the rule's window (volume rules).
    pub bytes: Option<u64>,
    /// Unix ms the agent opened the alert.
    pub created_ms: i64,
    /// The sending process the alert names: pid and user.
    pub pid: Option<u64>,
    pub user: Option<String>,
}

/// The Detection Finding in an OCSF event (`None` for other classes: the agent may send
/// more than findings).
pub fn finding(ocsf: &Value, received_ms: i64) -> Option<Finding> {
    if ocsf["class_uid"].as_u64() != Some(2004) {
        return None;
    }
    let info = &ocsf["finding_info"];
    let service = ocsf["metadata"]["labels"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|l| l.as_str()?.strip_prefix("service:"))
        .map(str::to_owned);
    let evidence = &ocsf["evidences"][0];
    let observed = &ocsf["anomaly_analyses"][0]["anomalies"][0];
    let bytes = (observed["observation_parameter"]
        .as_str()
        .is_some_and(|p| p.starts_with("bytes_")))
    .then(|| observed["observations"][0]["value"].as_str()?.parse().ok())
    .flatten();
    Some(Finding {
        received_ms,
        alert: info["uid"].as_str()?.to_owned(),
        activity: ocsf["activity_name"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        rule: info["analytic"]["uid"]
            .as_str()
            .or_else(|| ocsf["metadata"]["event_code"].as_str())?
            .to_owned(),
        service,
        // A prefix group's alert names its network (`subnet_uid`), as syslog's data does.
        peer: evidence["dst_endpoint"]["subnet_uid"]
            .as_str()
            .or_else(|| evidence["dst_endpoint"]["ip"].as_str())
            .map(str::to_owned),
        bytes,
        created_ms: info["created_time"].as_i64()?,
        pid: evidence["process"]["pid"].as_u64(),
        user: evidence["process"]["user"]["name"]
            .as_str()
            .map(str::to_owned),
    })
}

/// What the run must show.
pub struct Expect<'a> {
    pub service: &'a str,
    pub rule: &'a str,
    pub attacker: &'a str,
    /// Unix ms when the attacker's first request was sent.
    pub attack_start_ms: i64,
    /// Bytes the attacker received (TCP payload: HTTP headers and bodies).
    pub attacker_received: u64,
    /// The rule's threshold for its 1-minute window, from the agent's effective config.
    pub threshold: u64,
    pub max_latency_ms: i64,
    /// The patient attacker's phase, when the run had one.
    pub patient: Option<PatientExpect<'a>>,
}

/// A second attacker, paced under every 1-minute bar: it must be alerted (by `rule`, in a
/// longer window) within `max_latency_ms`, and its alerts are no false alerts.
pub struct PatientExpect<'a> {
    pub address: &'a str,
    pub start_ms: i64,
    pub max_latency_ms: i64,
}

impl Expect<'_> {
    /// The most the agent may count for the attacker: what it received plus the TCP/IP
    /// headers of its segments and of the pure ACKs nginx sent (a few tens of bytes each;
    /// loopback segments carry up to 64 KiB): 2 % and 256 KiB are far above that.
    pub fn max_bytes(&self) -> u64 {
        self.attacker_received + self.attacker_received / 50 + (256 << 10)
    }
}

#[derive(Debug, Serialize)]
pub struct Detection {
    pub alert: String,
    /// The sending process it names.
    pub pid: Option<u64>,
    pub user: Option<String>,
    pub rule: String,
    pub service: Option<String>,
    pub bytes: Option<u64>,
    /// Attack start -> received at rsyslogd.
    pub latency_received_ms: i64,
    /// Attack start -> the agent opened the alert.
    pub latency_agent_ms: i64,
}

impl Detection {
    /// `f`, with its latencies from `start_ms` (Unix ms).
    fn of(f: &Finding, start_ms: i64) -> Self {
        Self {
            alert: f.alert.clone(),
            pid: f.pid,
            user: f.user.clone(),
            rule: f.rule.clone(),
            service: f.service.clone(),
            bytes: f.bytes,
            latency_received_ms: f.received_ms - start_ms,
            latency_agent_ms: f.created_ms - start_ms,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct FalseAlert {
    pub alert: String,
    pub rule: String,
    pub peer: Option<String>,
    pub why: &'static str,
}

#[derive(Debug, Serialize)]
pub struct Verdict {
    pub detection: Option<Detection>,
    /// Distinct alerts, by rule.
    pub alerts_by_rule: BTreeMap<String, usize>,
    /// Rules that raised an alert about the attacker.
    pub attacker_rules: BTreeSet<String>,
    pub false_alerts: Vec<FalseAlert>,
    /// The patient attacker's first alert by the expected rule.
    pub patient: Option<Detection>,
    /// Each failed expectation, in words; empty when the run passed.
    pub failures: Vec<String>,
}

pub fn judge(findings: &[Finding], e: &Expect<'_>) -> Verdict {
    // Each alert by its first event (opened, then updated, resolved...).
    let mut first: BTreeMap<&str, &Finding> = BTreeMap::new();
    for f in findings {
        first
            .entry(&f.alert)
            .and_modify(|seen| {
                if f.received_ms < seen.received_ms {
                    *seen = f;
                }
            })
            .or_insert(f);
    }
    let mut alerts_by_rule = BTreeMap::new();
    let mut attacker_rules = BTreeSet::new();
    for f in first.values() {
        *alerts_by_rule.entry(f.rule.clone()).or_default() += 1;
        if f.peer.as_deref() == Some(e.attacker) {
            attacker_rules.insert(f.rule.clone());
        }
    }
    let false_alerts: Vec<FalseAlert> = first.values().filter_map(|f| false_alert(f, e)).collect();
    let expected = first
        .values()
        .filter(|f| f.peer.as_deref() == Some(e.attacker) && f.rule == e.rule)
        .min_by_key(|f| f.received_ms);
    let mut failures = match expected {
        None => vec![format!(
            "no {} alert about the attacker {} reached rsyslogd (alerts about it: {:?})",
            e.rule, e.attacker, attacker_rules
        )],
        Some(f) => check_detection(f, e),
    };
    let patient = e.patient.as_ref().and_then(|p| {
        first
            .values()
            .filter(|f| f.peer.as_deref() == Some(p.address) && f.rule == e.rule)
            .filter(|f| f.created_ms >= p.start_ms)
            .min_by_key(|f| f.received_ms)
            .map(|f| (p, *f))
    });
    match (&e.patient, patient) {
        (Some(p), None) => failures.push(format!(
            "no {} alert about the patient attacker {} reached rsyslogd",
            e.rule, p.address
        )),
        (_, Some((p, f))) if f.received_ms - p.start_ms > p.max_latency_ms => {
            failures.push(format!(
                "the patient attacker's alert reached rsyslogd {:.0} s after it started (limit \
                 {:.0} s)",
                (f.received_ms - p.start_ms) as f64 / 1e3,
                p.max_latency_ms as f64 / 1e3
            ));
        }
        _ => {}
    }
    if !false_alerts.is_empty() {
        failures.push(format!(
            "{} false alert(s): {}",
            false_alerts.len(),
            false_alerts
                .iter()
                .map(|a| format!(
                    "{} on {} ({})",
                    a.rule,
                    a.peer.as_deref().unwrap_or("the service"),
                    a.why
                ))
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    Verdict {
        detection: expected.map(|f| Detection::of(f, e.attack_start_ms)),
        alerts_by_rule,
        attacker_rules,
        false_alerts,
        patient: patient.map(|(p, f)| Detection::of(f, p.start_ms)),
        failures,
    }
}

/// Why an alert is false: opened before the attack, or about another address.
fn false_alert(f: &Finding, e: &Expect<'_>) -> Option<FalseAlert> {
    let about = |addr: &str| f.peer.as_deref().is_some_and(|p| covers(p, addr));
    let patient = e
        .patient
        .as_ref()
        .is_some_and(|p| about(p.address) && f.created_ms >= p.start_ms);
    let why = if f.created_ms < e.attack_start_ms {
        "opened before the attack"
    } else if patient {
        return None;
    } else if !about(e.attacker) {
        "not about the attacker's address"
    } else {
        return None;
    };
    Some(FalseAlert {
        alert: f.alert.clone(),
        rule: f.rule.clone(),
        peer: f.peer.clone(),
        why,
    })
}

/// Whether `peer` (an address, or a network as `addr/len`) is `addr` or holds it: a prefix
/// group's alert about the attacker's network is about the attacker.
fn covers(peer: &str, addr: &str) -> bool {
    let Some((net, len)) = peer.split_once('/') else {
        return peer == addr;
    };
    let (Ok(net), Ok(len), Ok(addr)) = (
        net.parse::<std::net::IpAddr>(),
        len.parse::<u32>(),
        addr.parse::<std::net::IpAddr>(),
    ) else {
        return false;
    };
    let bits = |ip: std::net::IpAddr| match ip {
        std::net::IpAddr::V4(v4) => (u128::from(u32::from(v4)), 32),
        std::net::IpAddr::V6(v6) => (u128::from(v6), 128),
    };
    let ((n, width), (a, width_a)) = (bits(net), bits(addr));
    if width != width_a || len > width {
        return false;
    }
    let shift = width - len;
    len == 0 || (n >> shift) == (a >> shift)
}

/// The expected alert's deadline, service and byte count.
fn check_detection(f: &Finding, e: &Expect<'_>) -> Vec<String> {
    let mut failures = Vec::new();
    let latency = f.received_ms - e.attack_start_ms;
    if latency > e.max_latency_ms {
        failures.push(format!(
            "the alert reached rsyslogd {:.1} s after the attack started (limit {:.0} s)",
            latency as f64 / 1e3,
            e.max_latency_ms as f64 / 1e3
        ));
    }
    if f.service.as_deref() != Some(e.service) {
        failures.push(format!(
            "the alert names service {:?}, not {:?}",
            f.service, e.service
        ));
    }
    match f.bytes {
        None => failures.push("the alert names no byte count".to_owned()),
        Some(b) if b < e.threshold || b > e.max_bytes() => failures.push(format!(
            "the alert counts {b} bytes: outside [{} (threshold), {} (received by the \
             attacker {} + headers)]",
            e.threshold,
            e.max_bytes(),
            e.attacker_received
        )),
        Some(_) => {}
    }
    failures
}

/// Where the message's structured data (what a SOC's syslog parser reads) says otherwise
/// than its OCSF payload: rule, service, peer.
pub fn sd_mismatch(params: &BTreeMap<String, String>, f: &Finding) -> Option<String> {
    let pairs = [
        ("rule", Some(f.rule.as_str())),
        ("service", f.service.as_deref()),
        ("peer", f.peer.as_deref()),
    ];
    let wrong: Vec<String> = pairs
        .iter()
        .filter(|(k, v)| params.get(*k).map(String::as_str) != *v)
        .map(|(k, v)| {
            format!(
                "{k}: {:?} in the structured data, {v:?} in OCSF",
                params.get(*k)
            )
        })
        .collect();
    (!wrong.is_empty()).then(|| format!("alert {}: {}", f.alert, wrong.join(", ")))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// An OCSF finding shaped as `monitor/src/export/ocsf.rs` writes it.
    fn ocsf(
        alert: &str,
        rule: &str,
        peer: &str,
        bytes: u64,
        created: i64,
        activity: &str,
    ) -> Value {
        json!({
            "class_uid": 2004,
            "activity_name": activity,
            "time": created + 5,
            "metadata": {"event_code": rule, "labels": ["service:messaging"]},
            "finding_info": {"uid": alert, "created_time": created, "analytic": {"uid": rule}},
            "evidences": [{"dst_endpoint": {"ip": peer, "port": 40000},
                           "process": {"pid": 42, "user": {"name": "www-data"}}}],
            "anomaly_analyses": [{"anomalies": [{
                "observation_parameter": "bytes_sent_in_1m",
                "observations": [{"value": bytes.to_string()}],
            }]}],
        })
    }

    /// The attacker's `peer_outlier` alert (id `a1`), as most cases need it.
    fn attacker_alert(bytes: u64, created: i64, activity: &str) -> Value {
        ocsf("a1", "peer_outlier", "127.0.0.66", bytes, created, activity)
    }

    const START: i64 = 1_000_000;

    fn expect() -> Expect<'static> {
        Expect {
            service: "messaging",
            rule: "peer_outlier",
            attacker: "127.0.0.66",
            attack_start_ms: START,
            attacker_received: 60 << 20,
            threshold: 48 << 20,
            max_latency_ms: 60_000,
            patient: None,
        }
    }

    fn f(v: &Value, received: i64) -> Finding {
        finding(v, received).unwrap()
    }

    #[test]
    fn findings_are_read_from_ocsf() {
        let v = attacker_alert(50 << 20, START + 900, "Create");
        let x = f(&v, START + 1500);
        assert_eq!(x.rule, "peer_outlier");
        assert_eq!(x.service.as_deref(), Some("messaging"));
        assert_eq!(x.peer.as_deref(), Some("127.0.0.66"));
        assert_eq!(x.bytes, Some(50 << 20));
        assert_eq!(x.created_ms, START + 900);
        assert_eq!(x.activity, "Create");
        assert_eq!((x.pid, x.user.as_deref()), (Some(42), Some("www-data")));
        assert!(
            finding(&json!({"class_uid": 4001}), 0).is_none(),
            "not a finding"
        );
        let mut count = v.clone();
        count["anomaly_analyses"][0]["anomalies"][0]["observation_parameter"] =
            json!("new_destinations_in_10m");
        assert_eq!(f(&count, 0).bytes, None, "a count is not bytes");
    }

    #[test]
    fn the_expected_alert_passes_and_its_latencies_are_measured() {
        let open = attacker_alert(50 << 20, START + 900, "Create");
        let update = attacker_alert(59 << 20, START + 900, "Update");
        let v = judge(
            &[f(&open, START + 1500), f(&update, START + 61_000)],
            &expect(),
        );
        assert!(v.failures.is_empty(), "{:?}", v.failures);
        let d = v.detection.unwrap();
        assert_eq!(d.latency_received_ms, 1500);
        assert_eq!(d.latency_agent_ms, 900);
        assert_eq!(v.alerts_by_rule["peer_outlier"], 1, "one alert, two events");
        assert!(v.false_alerts.is_empty());
    }

    #[test]
    fn no_alert_late_alert_and_wrong_fields_fail() {
        let v = judge(&[], &expect());
        assert_eq!(v.failures.len(), 1);
        assert!(
            v.failures[0].contains("no peer_outlier alert"),
            "{:?}",
            v.failures
        );

        let late = attacker_alert(50 << 20, START + 61_000, "Create");
        let v = judge(&[f(&late, START + 61_500)], &expect());
        assert!(v.failures[0].contains("61.5 s after"), "{:?}", v.failures);

        let small = attacker_alert(1 << 20, START + 900, "Create");
        let v = judge(&[f(&small, START + 1000)], &expect());
        assert!(v.failures[0].contains("outside"), "{:?}", v.failures);

        let big = attacker_alert(80 << 20, START + 900, "Create");
        let v = judge(&[f(&big, START + 1000)], &expect());
        assert!(v.failures[0].contains("outside"), "{:?}", v.failures);

        let mut other = attacker_alert(50 << 20, START + 900, "Create");
        other["metadata"]["labels"] = json!(["service:nginx"]);
        let v = judge(&[f(&other, START + 1000)], &expect());
        assert!(
            v.failures[0].contains("service Some(\"nginx\")"),
            "{:?}",
            v.failures
        );

        let wrong_rule = ocsf(
            "a1",
            "unknown_volume",
            "127.0.0.66",
            50 << 20,
            START + 900,
            "Create",
        );
        let v = judge(&[f(&wrong_rule, START + 1000)], &expect());
        assert!(
            v.failures[0].contains("no peer_outlier alert"),
            "{:?}",
            v.failures
        );
        assert!(v.attacker_rules.contains("unknown_volume"));
        assert!(
            v.false_alerts.is_empty(),
            "another rule on the attacker is no false alert"
        );
    }

    #[test]
    fn structured_data_must_agree_with_the_payload() {
        let v = attacker_alert(50 << 20, START, "Create");
        let x = f(&v, START);
        let mut params: BTreeMap<String, String> = [
            ("rule", "peer_outlier"),
            ("service", "messaging"),
            ("peer", "127.0.0.66"),
            ("bytes", "1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(sd_mismatch(&params, &x), None);
        params.insert("peer".to_owned(), "127.0.0.12".to_owned());
        let m = sd_mismatch(&params, &x).unwrap();
        assert!(m.contains("peer") && !m.contains("rule"), "{m}");
        params.remove("rule");
        assert!(sd_mismatch(&params, &x).unwrap().contains("rule: None"));
    }

    #[test]
    fn alerts_on_others_or_before_the_attack_are_false() {
        let good = attacker_alert(50 << 20, START + 900, "Create");
        let client = ocsf(
            "a2",
            "peer_outlier",
            "127.0.0.12",
            33 << 20,
            START + 2000,
            "Create",
        );
        let early = ocsf(
            "a3",
            "new_destinations",
            "127.0.0.66",
            0,
            START - 10,
            "Create",
        );
        let v = judge(
            &[
                f(&good, START + 1000),
                f(&client, START + 2500),
                f(&early, START),
            ],
            &expect(),
        );
        assert_eq!(v.false_alerts.len(), 2);
        assert_eq!(v.false_alerts[0].alert, "a2");
        assert_eq!(v.false_alerts[0].why, "not about the attacker's address");
        assert_eq!(v.false_alerts[1].why, "opened before the attack");
        assert_eq!(v.failures.len(), 1, "{:?}", v.failures);
        assert!(v.failures[0].starts_with("2 false alert(s)"));
        assert_eq!(v.alerts_by_rule.len(), 2);
        assert_eq!(v.alerts_by_rule["peer_outlier"], 2);
    }

    #[test]
    fn the_patient_attacker_must_be_alerted_in_time_and_is_no_false_alert() {
        let patient = |max_latency_ms| Expect {
            patient: Some(PatientExpect {
                address: "127.0.0.77",
                start_ms: START + 100_000,
                max_latency_ms,
            }),
            ..expect()
        };
        let burst = f(
            &attacker_alert(50 << 20, START + 900, "Create"),
            START + 1000,
        );
        let slow = ocsf(
            "a9",
            "peer_outlier",
            "127.0.0.77",
            130 << 20,
            START + 400_000,
            "Create",
        );
        let v = judge(
            &[burst.clone(), f(&slow, START + 401_000)],
            &patient(600_000),
        );
        assert!(v.failures.is_empty(), "{:?}", v.failures);
        assert_eq!(v.patient.unwrap().latency_received_ms, 301_000);
        let v = judge(
            &[burst.clone(), f(&slow, START + 401_000)],
            &patient(300_000),
        );
        assert!(v.failures[0].contains("301 s after"), "{:?}", v.failures);
        let v = judge(std::slice::from_ref(&burst), &patient(600_000));
        assert!(
            v.failures[0].contains("no peer_outlier alert about the patient"),
            "{:?}",
            v.failures
        );
        // Before its phase, an alert about that address is a false one.
        let early = ocsf(
            "a8",
            "peer_outlier",
            "127.0.0.77",
            60 << 20,
            START + 50_000,
            "Create",
        );
        let v = judge(
            &[burst, f(&early, START + 51_000), f(&slow, START + 401_000)],
            &patient(600_000),
        );
        assert_eq!(v.false_alerts.len(), 1, "{:?}", v.false_alerts);
        assert_eq!(v.false_alerts[0].alert, "a8");
    }

    #[test]
    fn a_prefix_alert_about_the_attackers_network_is_about_the_attacker() {
        assert!(covers("127.0.0.66", "127.0.0.66"));
        assert!(covers("127.0.0.0/24", "127.0.0.66"));
        assert!(!covers("127.0.1.0/24", "127.0.0.66"));
        assert!(!covers("127.0.0.67", "127.0.0.66"));
        assert!(covers("2001:db8::/48", "2001:db8:0:1::5"));
        assert!(!covers("2001:db8::/48", "127.0.0.66"));
        assert!(!covers("127.0.0.0/33", "127.0.0.66"));
        let mut prefix = ocsf(
            "a5",
            "prefix_outlier",
            "127.0.0.0",
            60 << 20,
            START + 5000,
            "Create",
        );
        prefix["evidences"][0]["dst_endpoint"]["subnet_uid"] = json!("127.0.0.0/24");
        let x = f(&prefix, START + 5100);
        assert_eq!(x.peer.as_deref(), Some("127.0.0.0/24"));
        let good = f(
            &attacker_alert(50 << 20, START + 900, "Create"),
            START + 1000,
        );
        let v = judge(&[good, x], &expect());
        assert!(v.failures.is_empty(), "{:?}", v.failures);
        assert!(v.false_alerts.is_empty());
    }
}
