//! What reaches the SOC, as the run goes: rsyslogd's file polled, each message stamped with
//! when the harness first saw it (the alert latency at the receiver), while the agent is
//! checked to be alive.

use std::{
    collections::BTreeMap,
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Result, bail};

use super::{
    daemon::Daemon,
    rsyslog,
    verdict::{self, Finding},
};

/// How often rsyslogd's file and the agent are looked at.
pub const POLL: Duration = Duration::from_millis(100);

/// Unix milliseconds now (the agent's alert times are wall-clock too).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

pub struct Watch<'a> {
    receiver: &'a rsyslog::Receiver,
    /// (Unix ms first seen, raw message).
    pub lines: Vec<(i64, String)>,
}

impl<'a> Watch<'a> {
    pub fn new(receiver: &'a rsyslog::Receiver) -> Self {
        Self {
            receiver,
            lines: Vec::new(),
        }
    }

    pub fn poll(&mut self) {
        let t = now_ms();
        let all = self.receiver.lines();
        let seen = self.lines.len();
        self.lines
            .extend(all.into_iter().skip(seen).map(|l| (t, l)));
    }

    /// Polls for `d` without looking at the agent (once it is stopped).
    pub fn drain(&mut self, d: Duration) {
        let until = Instant::now() + d;
        while Instant::now() < until {
            thread::sleep(POLL);
            self.poll();
        }
    }

    /// Waits until `until`, watching rsyslogd; fails if the agent died meanwhile.
    pub fn hold(&mut self, until: Instant, agent: &mut Daemon) -> Result<()> {
        loop {
            self.poll();
            if let Some(status) = agent.exited() {
                bail!("the agent exited during the run ({status}): see target/e2e/agent.log");
            }
            let now = Instant::now();
            if now >= until {
                return Ok(());
            }
            thread::sleep(POLL.min(until - now));
        }
    }

    fn parsed(&self) -> impl Iterator<Item = (i64, Result<rsyslog::Message>)> + '_ {
        self.lines.iter().map(|(t, l)| (*t, rsyslog::parse(l)))
    }

    /// The Detection Findings received so far.
    pub fn findings(&self) -> Vec<Finding> {
        self.parsed()
            .filter_map(|(t, m)| verdict::finding(&m.ok()?.payload?, t))
            .collect()
    }

    /// Messages whose structured data disagrees with their OCSF payload.
    pub fn sd_mismatches(&self) -> Vec<String> {
        self.parsed()
            .filter_map(|(t, m)| {
                let m = m.ok()?;
                let f = verdict::finding(m.payload.as_ref()?, t)?;
                verdict::sd_mismatch(&m.params, &f)
            })
            .collect()
    }

    /// Messages by MSGID (opened, updated, resolved...); unparsable lines under "unparsed".
    pub fn by_msgid(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for (_, m) in self.parsed() {
            let k = m.map_or_else(|_| "unparsed".to_owned(), |m| m.msgid);
            *out.entry(k).or_default() += 1;
        }
        out
    }
}
