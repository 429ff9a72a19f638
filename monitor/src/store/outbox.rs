//! The outbox: `alert_events` rows are written in the same transaction as their alert
//! (`Store::record`), before anything is sent, so they are the outbox. Each sink keeps its
//! own cursor (the last `seq` it delivered): a slow or dead sink holds back nobody else, and
//! after a crash every sink resumes after its cursor (at-least-once; receivers deduplicate by
//! the event id).

use rusqlite::{OptionalExtension as _, params};

use super::{Store, StoreError};
use crate::export::exported::Exported;

/// One undelivered event of a sink.
#[derive(Clone, Debug, PartialEq)]
pub struct Pending {
    pub seq: i64,
    pub event: Exported,
}

impl Store {
    /// The sink's cursor; a new sink starts at the current end (it is not sent the past).
    pub fn cursor(&mut self, sink: &str) -> Result<i64, StoreError> {
        if let Some(seq) = self
            .conn
            .query_row(
                "SELECT seq FROM sink_cursors WHERE sink = ?1",
                [sink],
                |r| r.get::<_, i64>(0),
            )
            .optional()
            .map_err(|e| self.sql(e))?
        {
            return Ok(seq);
        }
        let end: i64 = self
            .conn
            .query_row("SELECT coalesce(max(seq), 0) FROM alert_events", [], |r| {
                r.get(0)
            })
            .map_err(|e| self.sql(e))?;
        self.conn
            .execute(
                "INSERT INTO sink_cursors (sink, seq) VALUES (?1, ?2)",
                params![sink, end],
            )
            .map_err(|e| self.sql(e))?;
        Ok(end)
    }

    /// Up to `limit` events after the sink's cursor, oldest first.
    pub fn pending(&mut self, sink: &str, limit: usize) -> Result<Vec<Pending>, StoreError> {
        let after = self.cursor(sink)?;
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT seq, body, kind FROM alert_events WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map(params![after, limit as i64], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .map_err(|e| self.sql(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, body, kind) = row.map_err(|e| self.sql(e))?;
            let decode_error = |e: serde_json::Error| StoreError::Decode {
                path: self.path.clone(),
                what: "outbox event",
                detail: format!("seq {seq} ({kind}): {e}"),
            };
            let event = if kind == "containment" {
                Exported::Containment(serde_json::from_str(&body).map_err(decode_error)?)
            } else {
                Exported::Alert(serde_json::from_str(&body).map_err(decode_error)?)
            };
            out.push(Pending { seq, event });
        }
        Ok(out)
    }

    /// Records that the sink delivered everything up to `seq` (never moves backwards).
    pub fn advance(&mut self, sink: &str, seq: i64) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO sink_cursors (sink, seq) VALUES (?1, ?2)
                 ON CONFLICT (sink) DO UPDATE SET seq = max(seq, excluded.seq)",
                params![sink, seq],
            )
            .map(drop)
            .map_err(|e| self.sql(e))
    }

    /// Events the sink has not delivered yet (its backlog).
    pub fn backlog(&mut self, sink: &str) -> Result<u64, StoreError> {
        let after = self.cursor(sink)?;
        self.conn
            .query_row(
                "SELECT count(*) FROM alert_events WHERE seq > ?1",
                [after],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(|e| self.sql(e))
    }

    /// Bounds the sink's backlog to its `keep` newest events: the older ones are skipped (the
    /// cursor moves past them; they stay in the alert history). Returns how many were skipped.
    pub fn drop_oldest(&mut self, sink: &str, keep: u64) -> Result<u64, StoreError> {
        let after = self.cursor(sink)?;
        let new_cursor: Option<i64> = self
            .conn
            .query_row(
                "SELECT seq FROM alert_events WHERE seq > ?1 ORDER BY seq DESC LIMIT 1 OFFSET ?2",
                params![after, keep as i64],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.sql(e))?;
        let Some(new_cursor) = new_cursor else {
            return Ok(0);
        };
        let dropped: i64 = self
            .conn
            .query_row(
                "SELECT count(*) FROM alert_events WHERE seq > ?1 AND seq <= ?2",
                params![after, new_cursor],
                |r| r.get(0),
            )
            .map_err(|e| self.sql(e))?;
        self.advance(sink, new_cursor)?;
        Ok(dropped as u64)
    }

    /// The lowest cursor of all sinks: events after it must be kept.
    pub fn oldest_cursor(&self) -> Result<Option<i64>, StoreError> {
        self.conn
            .query_row("SELECT min(seq) FROM sink_cursors", [], |r| r.get(0))
            .map_err(|e| self.sql(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{detect::alerts::AlertEvent, export::fixtures};

    fn events(n: usize) -> Vec<AlertEvent> {
        (0..n)
            .map(|i| {
                let mut e = fixtures::opened();
                e.alert.updates = i as u32;
                e
            })
            .collect()
    }

    #[test]
    fn each_sink_has_its_own_cursor() {
        let mut store = Store::in_memory().unwrap();
        store.record(&events(1), &[]).unwrap();
        // Sinks created now start at the end: the past is not replayed to them.
        assert_eq!(store.pending("syslog", 10).unwrap(), vec![]);
        assert_eq!(store.pending("splunk", 10).unwrap(), vec![]);
        store.record(&events(5), &[]).unwrap();
        let syslog = store.pending("syslog", 3).unwrap();
        assert_eq!(syslog.len(), 3);
        assert!(syslog.windows(2).all(|w| w[0].seq < w[1].seq), "in order");
        store.advance("syslog", syslog[2].seq).unwrap();
        assert_eq!(store.pending("syslog", 10).unwrap().len(), 2);
        assert_eq!(
            store.backlog("splunk").unwrap(),
            5,
            "a slow sink keeps its backlog"
        );
        store.advance("syslog", syslog[0].seq).unwrap();
        assert_eq!(
            store.pending("syslog", 10).unwrap().len(),
            2,
            "never backwards"
        );
        assert_eq!(store.oldest_cursor().unwrap(), Some(1));
    }

    #[test]
    fn a_full_backlog_keeps_the_newest_events() {
        let mut store = Store::in_memory().unwrap();
        store.cursor("dead").unwrap();
        store.record(&events(10), &[]).unwrap();
        assert_eq!(store.drop_oldest("dead", 20).unwrap(), 0, "under the bound");
        assert_eq!(store.drop_oldest("dead", 4).unwrap(), 6);
        let left = store.pending("dead", 100).unwrap();
        let kept: Vec<u32> = left
            .iter()
            .map(|p| p.event.alert().unwrap().alert.updates)
            .collect();
        assert_eq!(kept, vec![6, 7, 8, 9]);
        assert_eq!(store.drop_oldest("dead", 4).unwrap(), 0, "idempotent");
        assert_eq!(store.drop_oldest("dead", 0).unwrap(), 4);
        assert_eq!(store.backlog("dead").unwrap(), 0);
    }

    #[test]
    fn undelivered_events_survive_a_restart() {
        let dir = std::env::temp_dir().join(format!("egress-outbox-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let mut store = Store::open(&dir).unwrap();
            store.cursor("file").unwrap();
            store.record(&events(4), &[]).unwrap();
            let p = store.pending("file", 1).unwrap();
            store.advance("file", p[0].seq).unwrap();
        } // the agent dies here
        let mut store = Store::open(&dir).unwrap();
        let p = store.pending("file", 10).unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(p[0].event.alert().unwrap().alert.updates, 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[cfg(test)]
mod retention_tests {
    use jiff::Timestamp;

    use super::*;
    use crate::detect::alerts::{AlertEventKind, AlertStatus};

    #[test]
    fn pruning_keeps_what_a_sink_has_not_delivered() {
        let mut store = Store::in_memory().unwrap();
        store.cursor("slow").unwrap();
        let mut e = fixtures_opened();
        store.record(std::slice::from_ref(&e), &[]).unwrap();
        e.event = AlertEventKind::Resolved;
        e.alert.status = AlertStatus::Resolved;
        store.record(std::slice::from_ref(&e), &[]).unwrap();
        let far = Timestamp::from_second(4_000_000_000).unwrap();
        assert_eq!(store.prune_resolved(far).unwrap(), 0, "undelivered");
        let last = store.pending("slow", 10).unwrap().last().unwrap().seq;
        store.advance("slow", last).unwrap();
        assert_eq!(store.prune_resolved(far).unwrap(), 1, "delivered: may go");
    }

    fn fixtures_opened() -> crate::detect::alerts::AlertEvent {
        crate::export::fixtures::opened()
    }
}
