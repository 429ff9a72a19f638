//! Alerts in the database: each event is written with the alert's latest state in one
//! transaction; operators' decisions (`alerts ack|suppress`) are written here by the CLI and
//! picked up by a running agent through `operator_actions`.

use std::{net::IpAddr, str::FromStr as _};

use jiff::Timestamp;
use rusqlite::{OptionalExtension as _, params};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Store, StoreError};
use crate::detect::{
    Learned,
    alerts::{Alert, AlertEvent, AlertEventKind, AlertStatus, Suppression},
    rules::RuleId,
};

/// A decision made with the CLI, applied by the running agent (and already reflected in the
/// tables, so an agent that starts later loads it from there).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum OperatorAction {
    Acknowledge {
        alert: Uuid,
    },
    Suppress {
        suppression: Suppression,
    },
    Learn {
        service: String,
        addr: IpAddr,
        /// Set when the alert was about a prefix group (`addr` is its network).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prefix: Option<u8>,
    },
    /// A suppression was lifted: read the active ones again.
    ReloadSuppressions,
    /// `contain add`: a containment the CLI checked against the rails and stored as started.
    Contain {
        containment: Box<crate::contain::record::Containment>,
    },
    /// `contain lift`: the CLI stored it as lifted; the agent stops enforcing it.
    Lift {
        containment: Uuid,
    },
}

/// A suppression as stored, for `alerts suppressions`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StoredSuppression {
    pub id: i64,
    #[serde(flatten)]
    pub suppression: Suppression,
    pub reason: Option<String>,
    pub created_at: Timestamp,
}

#[derive(Clone, Debug, Default)]
pub struct AlertFilter {
    pub status: Option<AlertStatus>,
    pub rule: Option<RuleId>,
    pub service: Option<String>,
    pub limit: usize,
}

pub(super) fn ms(t: Timestamp) -> i64 {
    t.as_millisecond()
}

fn from_ms(v: i64) -> Timestamp {
    Timestamp::from_millisecond(v).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// What an id prefix finds (see `Store::by_id_prefix`).
pub(super) enum ByPrefix {
    None,
    One(String),
    Many(usize),
}

impl Store {
    /// Writes alert events and newly learned destinations in one transaction.
    pub fn record(&mut self, events: &[AlertEvent], learned: &[Learned]) -> Result<(), StoreError> {
        if events.is_empty() && learned.is_empty() {
            return Ok(());
        }
        let path = self.path.clone();
        let err = |e| super::classify(&path, e);
        let tx = self.conn.transaction().map_err(err)?;
        {
            let mut upsert = tx
                .prepare_cached(
                    "INSERT INTO alerts (id, rule, service, peer, severity, status, acknowledged,
                        opened_at, updated_at, body)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                     ON CONFLICT (id) DO UPDATE SET status = excluded.status,
                        acknowledged = excluded.acknowledged, updated_at = excluded.updated_at,
                        body = excluded.body",
                )
                .map_err(err)?;
            let mut history = tx
                .prepare_cached(
                    "INSERT INTO alert_events (alert_id, event, at, body) VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(err)?;
            for e in events {
                let a = &e.alert;
                let body = serde_json::to_string(a).unwrap_or_default();
                upsert
                    .execute(params![
                        a.id.to_string(),
                        a.rule.id(),
                        a.service,
                        a.peer.as_ref().map(|p| p.addr.to_string()),
                        a.severity.name(),
                        a.status.name(),
                        a.acknowledged,
                        ms(a.opened_at),
                        ms(a.updated_at),
                        body,
                    ])
                    .map_err(err)?;
                history
                    .execute(params![
                        a.id.to_string(),
                        e.event.name(),
                        ms(e.at),
                        serde_json::to_string(e).unwrap_or_default(),
                    ])
                    .map_err(err)?;
            }
            let mut learn = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO learned (service, addr, source, learned_at)
                     VALUES (?1, ?2, 'learning', ?3)",
                )
                .map_err(err)?;
            for l in learned {
                learn
                    .execute(params![&*l.service, l.addr.to_string(), ms(l.at)])
                    .map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }

    /// Alerts, newest first.
    pub fn list_alerts(&self, filter: &AlertFilter) -> Result<Vec<Alert>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT body FROM alerts
                 WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR rule = ?2)
                   AND (?3 IS NULL OR service = ?3)
                 ORDER BY opened_at DESC, id LIMIT ?4",
            )
            .map_err(|e| self.sql(e))?;
        let limit = if filter.limit == 0 {
            -1
        } else {
            filter.limit as i64
        };
        let rows = stmt
            .query_map(
                params![
                    filter.status.map(AlertStatus::name),
                    filter.rule.map(RuleId::id),
                    filter.service,
                    limit
                ],
                |r| r.get::<_, String>(0),
            )
            .map_err(|e| self.sql(e))?;
        let mut out = Vec::new();
        for body in rows {
            out.push(self.decode_alert(&body.map_err(|e| self.sql(e))?)?);
        }
        Ok(out)
    }

    /// Open alerts (to restore the detector's alert book after a restart).
    pub fn open_alerts(&self) -> Result<Vec<Alert>, StoreError> {
        self.list_alerts(&AlertFilter {
            status: Some(AlertStatus::Open),
            ..AlertFilter::default()
        })
    }

    fn decode_alert(&self, body: &str) -> Result<Alert, StoreError> {
        serde_json::from_str(body).map_err(|e| StoreError::Decode {
            path: self.path.clone(),
            what: "alert",
            detail: e.to_string(),
        })
    }

    /// Finds one alert by id or unique id prefix.
    pub fn find_alert(&self, id: &str) -> Result<Alert, StoreError> {
        let prefix = id.trim().to_ascii_lowercase();
        match self.by_id_prefix("alerts", &prefix)? {
            ByPrefix::None => Err(StoreError::NoSuchAlert(id.to_owned())),
            ByPrefix::One(body) => self.decode_alert(&body),
            ByPrefix::Many(count) => Err(StoreError::AmbiguousAlert { prefix, count }),
        }
    }

    /// The row of `table` (`alerts`, `containments`: lowercase UUID ids) whose id starts with
    /// `prefix`: its body, none, or how many share the prefix.
    pub(super) fn by_id_prefix(
        &self,
        table: &'static str,
        prefix: &str,
    ) -> Result<ByPrefix, StoreError> {
        let range = "id >= ?1 AND id < ?1 || 'g'";
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT body FROM {table} WHERE {range} LIMIT 2"))
            .map_err(|e| self.sql(e))?;
        let mut bodies: Vec<String> = stmt
            .query_map([prefix], |r| r.get(0))
            .map_err(|e| self.sql(e))?
            .collect::<Result<_, _>>()
            .map_err(|e| self.sql(e))?;
        match bodies.len() {
            0 => Ok(ByPrefix::None),
            1 => Ok(ByPrefix::One(bodies.remove(0))),
            _ => {
                let count: i64 = self
                    .conn
                    .query_row(
                        &format!("SELECT count(*) FROM {table} WHERE {range}"),
                        [prefix],
                        |r| r.get(0),
                    )
                    .map_err(|e| self.sql(e))?;
                Ok(ByPrefix::Many(usize::try_from(count).unwrap_or(usize::MAX)))
            }
        }
    }

    /// An alert's history, oldest first.
    pub fn alert_history(&self, id: Uuid) -> Result<Vec<AlertEvent>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT body FROM alert_events WHERE alert_id = ?1 ORDER BY seq")
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map([id.to_string()], |r| r.get::<_, String>(0))
            .map_err(|e| self.sql(e))?;
        let mut out = Vec::new();
        for body in rows {
            let body = body.map_err(|e| self.sql(e))?;
            out.push(serde_json::from_str(&body).map_err(|e| StoreError::Decode {
                path: self.path.clone(),
                what: "alert event",
                detail: e.to_string(),
            })?);
        }
        Ok(out)
    }

    /// Acknowledges an open alert (and, with `learn`, makes its peer a learned destination
    /// of its service). Returns the alert as stored now.
    pub fn acknowledge(
        &mut self,
        id: &str,
        learn: bool,
        now: Timestamp,
    ) -> Result<Alert, StoreError> {
        let mut alert = self.find_alert(id)?;
        let mut actions = Vec::new();
        let mut events = Vec::new();
        if alert.status == AlertStatus::Open && !alert.acknowledged {
            alert.acknowledged = true;
            alert.updated_at = now;
            actions.push(OperatorAction::Acknowledge { alert: alert.id });
            events.push(AlertEvent {
                event: AlertEventKind::Acknowledged,
                at: now,
                alert: alert.clone(),
            });
        }
        if learn && let Some(peer) = &alert.peer {
            actions.push(OperatorAction::Learn {
                service: alert.service.clone(),
                addr: peer.addr,
                prefix: peer.prefix_len,
            });
        }
        self.apply_operator(&events, &actions, now)?;
        Ok(alert)
    }

    /// Records a suppression; open alerts it covers are closed as suppressed. Returns them.
    pub fn suppress(
        &mut self,
        suppression: Suppression,
        reason: Option<&str>,
        now: Timestamp,
    ) -> Result<Vec<Alert>, StoreError> {
        let covered: Vec<Alert> = self
            .open_alerts()?
            .into_iter()
            .filter(|a| {
                suppression.covers(
                    &crate::detect::alerts::AlertKey {
                        rule: a.rule,
                        service: std::sync::Arc::from(a.service.as_str()),
                        peer: a.peer.as_ref().map(|p| p.addr),
                        prefix: a.peer.as_ref().and_then(|p| p.prefix_len),
                    },
                    now,
                )
            })
            .map(|mut a| {
                a.status = AlertStatus::Resolved;
                a.resolved_at = Some(now);
                a.updated_at = now;
                a
            })
            .collect();
        let events: Vec<AlertEvent> = covered
            .iter()
            .map(|a| AlertEvent {
                event: AlertEventKind::Suppressed,
                at: now,
                alert: a.clone(),
            })
            .collect();
        {
            let s = &suppression;
            self.conn
                .execute(
                    "INSERT INTO suppressions (rule, service, peer, until, reason, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![
                        s.rule.map(RuleId::id),
                        s.service,
                        s.peer.map(|p| p.to_string()),
                        s.until.map(ms),
                        reason,
                        ms(now)
                    ],
                )
                .map_err(|e| self.sql(e))?;
        }
        self.apply_operator(&events, &[OperatorAction::Suppress { suppression }], now)?;
        Ok(covered)
    }

    fn apply_operator(
        &mut self,
        events: &[AlertEvent],
        actions: &[OperatorAction],
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.record(events, &[])?;
        self.push_operator_actions(actions, now)
    }

    /// Leaves `actions` for the running agent (and stores what a learned peer is).
    pub(super) fn push_operator_actions(
        &mut self,
        actions: &[OperatorAction],
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let path = self.path.clone();
        let err = |e| super::classify(&path, e);
        let tx = self.conn.transaction().map_err(err)?;
        for action in actions {
            if let OperatorAction::Learn {
                service,
                addr,
                prefix,
            } = action
            {
                let text = match prefix {
                    Some(len) => format!("{addr}/{len}"),
                    None => addr.to_string(),
                };
                tx.execute(
                    "INSERT INTO learned (service, addr, source, learned_at)
                     VALUES (?1, ?2, 'operator', ?3)
                     ON CONFLICT (service, addr) DO UPDATE SET source = 'operator'",
                    params![service, text, ms(now)],
                )
                .map_err(err)?;
            }
            tx.execute(
                "INSERT INTO operator_actions (body, created_at) VALUES (?1, ?2)",
                params![serde_json::to_string(action).unwrap_or_default(), ms(now)],
            )
            .map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    /// Operator actions not yet applied by the agent; marks them applied.
    pub fn take_operator_actions(&mut self) -> Result<Vec<OperatorAction>, StoreError> {
        let path = self.path.clone();
        let err = |e| super::classify(&path, e);
        let tx = self.conn.transaction().map_err(err)?;
        let mut out = Vec::new();
        let mut last_seq = None;
        {
            let mut stmt = tx
                .prepare_cached(
                    "SELECT seq, body FROM operator_actions WHERE applied = 0 ORDER BY seq",
                )
                .map_err(err)?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))
                .map_err(err)?;
            for row in rows {
                let (seq, body) = row.map_err(err)?;
                last_seq = Some(seq);
                match serde_json::from_str(&body) {
                    Ok(action) => out.push(action),
                    Err(e) => {
                        tracing::warn!(seq, error = %e, "skipping an unreadable operator action");
                    }
                }
            }
        }
        // Polled every second: only a read unless there is something to mark applied, and
        // only what was read (unreadable rows included, so they are not read again).
        if let Some(last) = last_seq {
            tx.execute(
                "UPDATE operator_actions SET applied = 1 WHERE applied = 0 AND seq <= ?1",
                [last],
            )
            .map_err(err)?;
        }
        tx.commit().map_err(err)?;
        Ok(out)
    }

    /// Suppressions still in force at `now`.
    pub fn active_suppressions(&self, now: Timestamp) -> Result<Vec<Suppression>, StoreError> {
        Ok(self
            .list_suppressions(now)?
            .into_iter()
            .map(|s| s.suppression)
            .collect())
    }

    /// Suppressions still in force at `now`, with their row ids and reasons.
    pub fn list_suppressions(&self, now: Timestamp) -> Result<Vec<StoredSuppression>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, rule, service, peer, until, reason, created_at FROM suppressions
                 WHERE until IS NULL OR until > ?1 ORDER BY id",
            )
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map([ms(now)], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, Option<i64>>(4)?,
                    r.get::<_, Option<String>>(5)?,
                    r.get::<_, i64>(6)?,
                ))
            })
            .map_err(|e| self.sql(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, rule, service, peer, until, reason, created) = row.map_err(|e| self.sql(e))?;
            let decode = |what: &'static str, detail: String| StoreError::Decode {
                path: self.path.clone(),
                what,
                detail,
            };
            let rule = rule
                .map(|r| {
                    serde_json::from_value::<RuleId>(serde_json::Value::String(r.clone()))
                        .map_err(|_| decode("suppression rule", r))
                })
                .transpose()?;
            let peer = peer
                .map(|p| IpAddr::from_str(&p).map_err(|_| decode("suppression peer", p)))
                .transpose()?;
            out.push(StoredSuppression {
                id,
                suppression: Suppression {
                    rule,
                    service,
                    peer,
                    until: until.map(from_ms),
                },
                reason,
                created_at: from_ms(created),
            });
        }
        Ok(out)
    }

    /// Lifts suppression `id`; a running agent reloads its suppressions.
    pub fn lift_suppression(&mut self, id: i64, now: Timestamp) -> Result<(), StoreError> {
        let gone = self
            .conn
            .execute("DELETE FROM suppressions WHERE id = ?1", [id])
            .map_err(|e| self.sql(e))?;
        if gone == 0 {
            return Err(StoreError::NoSuchSuppression(id));
        }
        self.apply_operator(&[], &[OperatorAction::ReloadSuppressions], now)
    }

    /// Marks every pending operator action applied (a starting agent loads their effects
    /// from the tables instead).
    pub fn discard_operator_actions(&self) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE operator_actions SET applied = 1 WHERE applied = 0",
                [],
            )
            .map(drop)
            .map_err(|e| self.sql(e))
    }

    /// Deletes resolved alerts last updated before `before`, with their history. Returns
    /// how many alerts went.
    pub fn prune_resolved(&mut self, before: Timestamp) -> Result<u64, StoreError> {
        let path = self.path.clone();
        let err = |e| super::classify(&path, e);
        let tx = self.conn.transaction().map_err(err)?;
        tx.execute_batch(
            "CREATE TEMP TABLE IF NOT EXISTS prune_ids (id TEXT PRIMARY KEY);
             DELETE FROM prune_ids;",
        )
        .map_err(err)?;
        // An alert goes only when every sink delivered all its events (the outbox).
        tx.execute(
            "INSERT INTO prune_ids SELECT id FROM alerts a
             WHERE status = 'resolved' AND updated_at < ?1 AND NOT EXISTS (
                SELECT 1 FROM alert_events e WHERE e.alert_id = a.id
                AND e.seq > coalesce((SELECT min(seq) FROM sink_cursors), 9223372036854775807))",
            [ms(before)],
        )
        .map_err(err)?;
        tx.execute(
            "DELETE FROM alert_events WHERE alert_id IN (SELECT id FROM prune_ids)",
            [],
        )
        .map_err(err)?;
        let gone = tx
            .execute(
                "DELETE FROM alerts WHERE id IN (SELECT id FROM prune_ids)",
                [],
            )
            .map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(gone as u64)
    }

    /// Count of alerts by status (for `doctor`-like summaries and tests).
    pub fn alert_count(&self, status: Option<AlertStatus>) -> Result<u64, StoreError> {
        self.conn
            .query_row(
                "SELECT count(*) FROM alerts WHERE ?1 IS NULL OR status = ?1",
                [status.map(AlertStatus::name)],
                |r| r.get::<_, i64>(0),
            )
            .optional()
            .map(|n| n.unwrap_or_default() as u64)
            .map_err(|e| self.sql(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        config::{Config, Origin},
        detect::{
            Detector,
            alerts::{AlertBook, Lifecycle, fixtures},
        },
    };

    fn ts(secs: i64) -> Timestamp {
        Timestamp::from_second(1_790_000_000 + secs).unwrap()
    }

    fn opened(peer: &str, at: i64) -> AlertEvent {
        let mut book = AlertBook::new(Lifecycle {
            resolve_after_secs: 900,
            update_every_secs: 60,
            max_new_per_minute: 10,
        });
        book.raise(
            fixtures::condition(RuleId::UnknownVolume, peer, 50 << 20, ts(at), ts(at)),
            ts(at),
        )
        .unwrap()
    }

    #[test]
    fn alerts_are_listed_found_acknowledged_and_suppressed() {
        let mut store = Store::in_memory().unwrap();
        let a = opened("203.0.113.9", 0);
        let b = opened("203.0.113.10", 10);
        store.record(&[a.clone(), b.clone()], &[]).unwrap();
        let list = store.list_alerts(&AlertFilter::default()).unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].id, b.alert.id, "newest first");
        assert_eq!(
            store.find_alert(&a.alert.id.to_string()[..6]).unwrap(),
            a.alert
        );
        assert!(matches!(
            store.find_alert(""),
            Err(StoreError::AmbiguousAlert { count: 2, .. })
        ));
        assert!(matches!(
            store.find_alert("ffff"),
            Err(StoreError::NoSuchAlert(_))
        ));

        let acked = store
            .acknowledge(&a.alert.id.to_string(), true, ts(20))
            .unwrap();
        assert!(acked.acknowledged);
        let history = store.alert_history(a.alert.id).unwrap();
        assert_eq!(
            history.iter().map(|e| e.event).collect::<Vec<_>>(),
            vec![AlertEventKind::Opened, AlertEventKind::Acknowledged]
        );
        let actions = store.take_operator_actions().unwrap();
        assert_eq!(actions.len(), 2, "{actions:?}");
        assert!(
            store.take_operator_actions().unwrap().is_empty(),
            "taken once"
        );

        let closed = store
            .suppress(
                Suppression {
                    rule: None,
                    service: Some("messaging".into()),
                    peer: Some("203.0.113.10".parse().unwrap()),
                    until: Some(ts(3600)),
                },
                Some("known migration"),
                ts(30),
            )
            .unwrap();
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].id, b.alert.id);
        assert_eq!(store.alert_count(Some(AlertStatus::Open)).unwrap(), 1);
        let listed = store.list_suppressions(ts(40)).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].reason.as_deref(), Some("known migration"));
        assert_eq!(
            store.active_suppressions(ts(4000)).unwrap().len(),
            0,
            "expired"
        );

        // Retention: only resolved alerts older than the horizon go, with their history.
        assert_eq!(store.prune_resolved(ts(20)).unwrap(), 0, "resolved at 30");
        assert_eq!(store.prune_resolved(ts(31)).unwrap(), 1);
        assert_eq!(store.alert_history(b.alert.id).unwrap(), vec![]);
        assert_eq!(store.alert_count(None).unwrap(), 1, "the open one stays");

        // A detector loaded from this state knows all of it.
        let config = Config::parse("", &Origin::Embedded).unwrap();
        let mut detector = Detector::new(&config);
        let restored = store.load_into(&mut detector, ts(40)).unwrap();
        assert_eq!(
            (
                restored.open_alerts,
                restored.suppressions,
                restored.learned
            ),
            (1, 1, 1)
        );
        let open: Vec<_> = detector.book().open_alerts().collect();
        assert!(open[0].acknowledged);
    }
}
