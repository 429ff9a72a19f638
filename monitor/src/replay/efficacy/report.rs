//! The efficacy table: per scenario, whether its event was alerted on (by which rules, how
//! soon) over the seeds, and the false alerts of the judged days, as text, markdown or JSON.

use std::{collections::BTreeMap, fmt::Write as _};

use serde::Serialize;

use super::RunResult;

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub days: u32,
    pub seeds: Vec<u64>,
    /// Wall-clock time of the whole run (left out of the tables, which stay reproducible).
    pub seconds: f64,
    pub scenarios: Vec<ScenarioReport>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ScenarioReport {
    pub scenario: String,
    /// An attack: an alert about it is expected.
    pub expected_alert: bool,
    /// The scenario adds something to the ordinary week.
    pub event: bool,
    pub runs: Vec<RunResult>,
}

impl ScenarioReport {
    /// Runs whose event was alerted on: by its peer or prefix for an attack, by any alert
    /// for a benign event.
    fn caught(&self) -> usize {
        self.runs
            .iter()
            .filter(|r| {
                if self.expected_alert {
                    r.verdict.detected()
                } else {
                    r.verdict.alerted()
                }
            })
            .count()
    }

    fn expected(&self) -> &'static str {
        if self.expected_alert { "alert" } else { "none" }
    }

    fn on_event(&self) -> String {
        if !self.event {
            return "–".into();
        }
        let (n, of) = (self.caught(), self.runs.len());
        let word = match (self.expected_alert, n) {
            (true, n) if n == of => "caught",
            (true, 0) => "MISSED",
            (true, _) => "partly",
            (false, 0) => "quiet",
            (false, _) => "ALERTED",
        };
        format!("{n}/{of} {word}")
    }

    fn rules(&self) -> String {
        let list = |service: bool| {
            let mut rules: Vec<&str> = self
                .runs
                .iter()
                .flat_map(|r| {
                    let v = &r.verdict;
                    if service {
                        &v.service_on_event
                    } else {
                        &v.on_event
                    }
                    .iter()
                    .map(|b| b.rule.as_str())
                })
                .collect();
            rules.sort_unstable();
            rules.dedup();
            rules.join(", ")
        };
        match (list(false), list(true)) {
            (peer, service) if peer.is_empty() && service.is_empty() => "–".into(),
            (peer, service) if service.is_empty() => peer,
            (peer, service) if peer.is_empty() => format!("service: {service}"),
            (peer, service) => format!("{peer}; service: {service}"),
        }
    }

    fn first_alert(&self) -> String {
        if !self.event || self.runs.iter().all(|r| !r.verdict.detected()) {
            return "–".into();
        }
        self.runs
            .iter()
            .map(|r| {
                r.verdict
                    .first_alert_secs
                    .map_or_else(|| "–".to_owned(), |s| s.to_string())
            })
            .collect::<Vec<_>>()
            .join(" / ")
    }

    fn false_alerts(&self) -> String {
        let mut by_rule: BTreeMap<&str, usize> = BTreeMap::new();
        for r in &self.runs {
            for b in &r.verdict.false_alerts {
                *by_rule.entry(b.rule.as_str()).or_default() += 1;
            }
        }
        let total: usize = by_rule.values().sum();
        if total == 0 {
            return "0".into();
        }
        let parts: Vec<String> = by_rule.iter().map(|(r, n)| format!("{r} {n}")).collect();
        format!("{total} ({})", parts.join(", "))
    }

    fn row(&self) -> [String; 6] {
        [
            self.scenario.clone(),
            self.expected().into(),
            self.on_event(),
            self.rules(),
            self.first_alert(),
            self.false_alerts(),
        ]
    }
}

const HEADER: [&str; 6] = [
    "scenario",
    "expected",
    "alerted on the event",
    "rules (peer or prefix; service)",
    "first alert on its peer or prefix after start (s), per seed",
    "false alerts (all seeds, by rule)",
];

/// The columns of [`Report::summary_row`].
pub const SUMMARY_HEADER: &str = "| NAT gateways / homes / phones a day / federation servers; \
    seeds | distinct clients | attack runs caught | attacks missed (runs caught) | benign events \
    alerted | false alerts, ordinary weeks (by rule) | per day per 1,000 clients |\n\
    |---|---|---|---|---|---|---|";

impl Report {
    fn caption(&self) -> String {
        let seeds: Vec<String> = self.seeds.iter().map(ToString::to_string).collect();
        let mut caption = format!(
            "{} days (day 1 learning), seeds {}; false alerts are alerts opened on days 2-{} \
             about anything but the scenario's event",
            self.days,
            seeds.join(", "),
            self.days
        );
        if let Some((clients, rate)) = self.false_rate() {
            let _ = write!(
                caption,
                ". The ordinary week serves {clients} distinct client addresses (mean over \
                 seeds): {rate:.2} false alerts per day per 1,000 clients"
            );
        }
        caption
    }

    /// The ordinary week's distinct clients and false alerts per judged day per 1,000 of
    /// them, averaged over its runs.
    pub fn false_rate(&self) -> Option<(u64, f64)> {
        let normal = self.scenarios.iter().find(|s| !s.event)?;
        let runs = normal.runs.len() as f64;
        if runs == 0.0 || self.days < 2 {
            return None;
        }
        let clients = normal.runs.iter().map(|r| r.clients).sum::<u64>() as f64 / runs;
        let alerts = normal
            .runs
            .iter()
            .map(|r| r.verdict.false_alerts.len())
            .sum::<usize>() as f64
            / runs;
        let per = alerts / f64::from(self.days - 1) / (clients / 1000.0).max(1e-9);
        Some((clients.round() as u64, per))
    }

    /// Aligned columns, for a terminal.
    pub fn text(&self) -> String {
        let rows: Vec<[String; 6]> = self.scenarios.iter().map(ScenarioReport::row).collect();
        let mut widths = HEADER.map(|h| h.chars().count());
        for r in &rows {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        let mut out = String::new();
        let line = |out: &mut String, cells: &[String]| {
            let cells: Vec<String> = cells
                .iter()
                .zip(widths)
                .map(|(c, w)| format!("{c}{}", " ".repeat(w - c.chars().count())))
                .collect();
            let _ = writeln!(out, "{}", cells.join("  ").trim_end());
        };
        line(&mut out, &HEADER.map(str::to_owned));
        line(&mut out, &widths.map(|w| "-".repeat(w)));
        for r in &rows {
            line(&mut out, r);
        }
        let _ = writeln!(out, "\n{}", self.caption());
        out
    }

    /// A markdown table (what the README carries).
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "| {} |", HEADER.join(" | "));
        let _ = writeln!(out, "|{}", "---|".repeat(HEADER.len()));
        for s in &self.scenarios {
            let row = s.row();
            let _ = writeln!(out, "| {} |", row.join(" | "));
        }
        let _ = writeln!(out, "\n{}.", self.caption());
        out
    }

    /// One markdown row for the whole run, under [`SUMMARY_HEADER`]: how a population shape
    /// (`shape`, e.g. `6 / 300 / 420 / 30`) fares, for comparing shapes.
    pub fn summary_row(&self, shape: &str) -> String {
        let attacks: Vec<&ScenarioReport> = self
            .scenarios
            .iter()
            .filter(|s| s.event && s.expected_alert)
            .collect();
        let runs: usize = attacks.iter().map(|s| s.runs.len()).sum();
        let caught: usize = attacks.iter().map(|s| s.caught()).sum();
        let short = |list: Vec<String>| {
            if list.is_empty() {
                "–".to_owned()
            } else {
                list.join(", ")
            }
        };
        let missed = short(
            attacks
                .iter()
                .filter(|s| s.caught() < s.runs.len())
                .map(|s| format!("{} ({}/{})", s.scenario, s.caught(), s.runs.len()))
                .collect(),
        );
        let benign = short(
            self.scenarios
                .iter()
                .filter(|s| s.event && !s.expected_alert && s.caught() > 0)
                .map(|s| format!("{} ({}/{})", s.scenario, s.caught(), s.runs.len()))
                .collect(),
        );
        let normal = self.scenarios.iter().find(|s| !s.event);
        let (clients, rate) = self
            .false_rate()
            .map_or(("–".to_owned(), "–".to_owned()), |(c, r)| {
                (c.to_string(), format!("{r:.2}"))
            });
        format!(
            "| {shape} | {clients} | {caught}/{runs} | {missed} | {benign} | {} | {rate} |",
            normal.map_or_else(|| "–".to_owned(), ScenarioReport::false_alerts)
        )
    }

    /// Every alert, by scenario and seed: those about the event, then the false ones.
    pub fn details(&self) -> String {
        let mut out = String::new();
        for s in &self.scenarios {
            for r in &s.runs {
                let v = &r.verdict;
                if !v.alerted() && v.false_alerts.is_empty() {
                    continue;
                }
                let _ = writeln!(out, "{} seed {}:", s.scenario, r.seed);
                for (label, list) in [
                    ("event", &v.on_event),
                    ("event", &v.service_on_event),
                    ("FALSE", &v.false_alerts),
                ] {
                    for b in list {
                        let _ = writeln!(
                            out,
                            "  {label:5} {} {:17} {} {} {} B in {} > {} B",
                            b.opened_at,
                            b.rule,
                            b.service,
                            b.peer.as_deref().unwrap_or("(service)"),
                            b.bytes,
                            b.window,
                            b.threshold
                        );
                    }
                }
            }
        }
        out
    }
}
