//! Containments as stored: one row per containment (its latest state) and its events in the
//! outbox (`alert_events`, kind `containment`), written in one transaction, so every sink
//! exports every start, renewal and lift. `contain add` and `contain lift` write here too and
//! leave an operator action for the running agent.

use rusqlite::params;
use uuid::Uuid;

use super::{
    OperatorAction, Store, StoreError,
    alerts::{ByPrefix, ms},
};
use crate::contain::record::{Containment, ContainmentEvent, ContainmentState};

impl Store {
    /// Writes containment events: the containment's row and the event in the outbox.
    pub fn record_containments(&mut self, events: &[ContainmentEvent]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let path = self.path.clone();
        let err = |e| super::classify(&path, e);
        let tx = self.conn.transaction().map_err(err)?;
        {
            let mut upsert = tx
                .prepare_cached(
                    "INSERT INTO containments (id, service, target, action, enforcement, state,
                        alert_id, started_at, expires_at, updated_at, body)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                     ON CONFLICT (id) DO UPDATE SET enforcement = excluded.enforcement,
                        state = excluded.state, expires_at = excluded.expires_at,
                        updated_at = excluded.updated_at, body = excluded.body",
                )
                .map_err(err)?;
            let mut outbox = tx
                .prepare_cached(
                    "INSERT INTO alert_events (alert_id, event, at, body, kind)
                     VALUES (?1, ?2, ?3, ?4, 'containment')",
                )
                .map_err(err)?;
            for e in events {
                let c = &e.containment;
                upsert
                    .execute(params![
                        c.id.to_string(),
                        c.service,
                        c.target.to_string(),
                        c.action.name(),
                        c.enforcement.name(),
                        c.state.name(),
                        c.alert_id.map(|a| a.to_string()),
                        ms(c.started_at),
                        ms(c.expires_at),
                        ms(e.at),
                        serde_json::to_string(c).unwrap_or_default(),
                    ])
                    .map_err(err)?;
                outbox
                    .execute(params![
                        c.id.to_string(),
                        e.event.name(),
                        ms(e.at),
                        serde_json::to_string(e).unwrap_or_default(),
                    ])
                    .map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }

    /// Containments, newest first: the active ones, or all (`limit` at most).
    pub fn list_containments(
        &self,
        active_only: bool,
        limit: usize,
    ) -> Result<Vec<Containment>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT body FROM containments WHERE (?1 = 0 OR state = 'active')
                 ORDER BY started_at DESC, id LIMIT ?2",
            )
            .map_err(|e| self.sql(e))?;
        let bodies: Vec<String> = stmt
            .query_map(params![active_only, limit as i64], |r| r.get(0))
            .map_err(|e| self.sql(e))?
            .collect::<Result<_, _>>()
            .map_err(|e| self.sql(e))?;
        bodies.iter().map(|b| self.decode_containment(b)).collect()
    }

    /// The containment whose id starts with `id`.
    pub fn find_containment(&self, id: &str) -> Result<Containment, StoreError> {
        let prefix = id.trim().to_ascii_lowercase();
        match self.by_id_prefix("containments", &prefix)? {
            ByPrefix::None => Err(StoreError::NoSuchContainment(id.to_owned())),
            ByPrefix::One(body) => self.decode_containment(&body),
            ByPrefix::Many(count) => Err(StoreError::AmbiguousContainment { prefix, count }),
        }
    }

    /// The events of one containment, oldest first.
    pub fn containment_history(&self, id: Uuid) -> Result<Vec<ContainmentEvent>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT body FROM alert_events WHERE alert_id = ?1 AND kind = 'containment'
                 ORDER BY seq",
            )
            .map_err(|e| self.sql(e))?;
        let bodies: Vec<String> = stmt
            .query_map([id.to_string()], |r| r.get(0))
            .map_err(|e| self.sql(e))?
            .collect::<Result<_, _>>()
            .map_err(|e| self.sql(e))?;
        bodies
            .iter()
            .map(|b| {
                serde_json::from_str(b).map_err(|e| StoreError::Decode {
                    path: self.path.clone(),
                    what: "containment event",
                    detail: e.to_string(),
                })
            })
            .collect()
    }

    /// `contain add`: stores the start and tells a running agent.
    pub fn operator_contain(&mut self, event: &ContainmentEvent) -> Result<(), StoreError> {
        self.record_containments(std::slice::from_ref(event))?;
        self.push_operator_actions(
            &[OperatorAction::Contain {
                containment: Box::new(event.containment.clone()),
            }],
            event.at,
        )
    }

    /// `contain lift`: stores the lift and tells a running agent.
    pub fn operator_lift(&mut self, event: &ContainmentEvent) -> Result<(), StoreError> {
        debug_assert_ne!(event.containment.state, ContainmentState::Active);
        self.record_containments(std::slice::from_ref(event))?;
        self.push_operator_actions(
            &[OperatorAction::Lift {
                containment: event.containment.id,
            }],
            event.at,
        )
    }

    /// Deletes ended containments last updated before `before` whose events every sink
    /// delivered, with their events. Returns how many went.
    pub fn prune_containments(&mut self, before: jiff::Timestamp) -> Result<u64, StoreError> {
        let path = self.path.clone();
        let err = |e| super::classify(&path, e);
        let tx = self.conn.transaction().map_err(err)?;
        tx.execute_batch(
            "CREATE TEMP TABLE IF NOT EXISTS prune_containment_ids (id TEXT PRIMARY KEY);
             DELETE FROM prune_containment_ids;",
        )
        .map_err(err)?;
        tx.execute(
            "INSERT INTO prune_containment_ids SELECT id FROM containments c
             WHERE state != 'active' AND updated_at < ?1 AND NOT EXISTS (
                SELECT 1 FROM alert_events e WHERE e.alert_id = c.id
                AND e.seq > coalesce((SELECT min(seq) FROM sink_cursors), 9223372036854775807))",
            [ms(before)],
        )
        .map_err(err)?;
        tx.execute(
            "DELETE FROM alert_events WHERE kind = 'containment'
             AND alert_id IN (SELECT id FROM prune_containment_ids)",
            [],
        )
        .map_err(err)?;
        let gone = tx
            .execute(
                "DELETE FROM containments WHERE id IN (SELECT id FROM prune_containment_ids)",
                [],
            )
            .map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(gone as u64)
    }

    /// A destination learned for `service` (by learning or an operator) inside `target`, or
    /// a learned network holding it: the rails never contain those.
    pub fn learned_within(
        &self,
        service: &str,
        target: &ipnet::IpNet,
    ) -> Result<Option<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT addr FROM learned WHERE service = ?1")
            .map_err(|e| self.sql(e))?;
        let addrs: Vec<String> = stmt
            .query_map([service], |r| r.get(0))
            .map_err(|e| self.sql(e))?
            .collect::<Result<_, _>>()
            .map_err(|e| self.sql(e))?;
        Ok(addrs.into_iter().find(|text| {
            let net = text.parse::<ipnet::IpNet>().ok().or_else(|| {
                text.parse::<std::net::IpAddr>()
                    .ok()
                    .map(ipnet::IpNet::from)
            });
            net.is_some_and(|n| target.contains(&n) || n.contains(target))
        }))
    }

    /// Open alerts whose containment an operator lifted (`contain lift`): the policy leaves
    /// their peer alone until they end, across restarts too.
    pub fn spared_alerts(&self) -> Result<Vec<Uuid>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT DISTINCT c.alert_id FROM containments c JOIN alerts a ON a.id = c.alert_id
                 WHERE c.state = 'lifted' AND a.status = 'open'
                   AND json_extract(c.body, '$.ended_by.kind') = 'operator'",
            )
            .map_err(|e| self.sql(e))?;
        let ids: Vec<String> = stmt
            .query_map([], |r| r.get(0))
            .map_err(|e| self.sql(e))?
            .collect::<Result<_, _>>()
            .map_err(|e| self.sql(e))?;
        Ok(ids.iter().filter_map(|t| t.parse().ok()).collect())
    }

    fn decode_containment(&self, body: &str) -> Result<Containment, StoreError> {
        serde_json::from_str(body).map_err(|e| StoreError::Decode {
            path: self.path.clone(),
            what: "containment",
            detail: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;

    use super::*;
    use crate::contain::record::{
        Action, ContainmentEventKind, ContainmentState, Decider, Enforcement,
    };

    fn ts(secs: i64) -> Timestamp {
        Timestamp::from_second(1_790_000_000 + secs).unwrap()
    }

    fn started(target: &str, at: i64) -> ContainmentEvent {
        let target: ipnet::IpNet = target.parse().unwrap();
        ContainmentEvent {
            event: ContainmentEventKind::Started,
            at: ts(at),
            containment: Containment {
                id: Containment::id_for("messaging", &target, ts(at)),
                service: "messaging".into(),
                target,
                action: Action::Throttle {
                    bytes_per_sec: 1 << 20,
                },
                enforcement: Enforcement::DryRun,
                state: ContainmentState::Active,
                alert_id: None,
                rule: None,
                reason: "by hand".into(),
                decided_by: Decider::Operator {
                    user: "alice".into(),
                },
                started_at: ts(at),
                renewed_at: ts(at),
                expires_at: ts(at + 3600),
                renewals: 0,
                ended_at: None,
                end_reason: None,
                ended_by: None,
                dropped_bytes: 0,
                dropped_packets: 0,
            },
        }
    }

    #[test]
    fn containments_are_stored_listed_found_and_lifted_for_the_agent() {
        let mut store = Store::in_memory().unwrap();
        let a = started("198.51.100.7/32", 0);
        let b = started("198.51.100.0/24", 10);
        store.operator_contain(&a).unwrap();
        store.record_containments(std::slice::from_ref(&b)).unwrap();
        let active = store.list_containments(true, 10).unwrap();
        assert_eq!(active.len(), 2);
        assert_eq!(active[0].id, b.containment.id, "newest first");
        assert_eq!(
            store
                .find_containment(&a.containment.id.to_string()[..8])
                .unwrap(),
            a.containment
        );
        assert!(matches!(
            store.find_containment(""),
            Err(StoreError::AmbiguousContainment { count: 2, .. })
        ));
        assert!(matches!(
            store.find_containment("zz"),
            Err(StoreError::NoSuchContainment(_))
        ));

        let mut lifted = a.clone();
        lifted.event = ContainmentEventKind::Lifted;
        lifted.at = ts(20);
        lifted.containment.state = ContainmentState::Lifted;
        lifted.containment.ended_at = Some(ts(20));
        store.operator_lift(&lifted).unwrap();
        assert_eq!(store.list_containments(true, 10).unwrap().len(), 1);
        assert_eq!(store.list_containments(false, 10).unwrap().len(), 2);
        let history = store.containment_history(a.containment.id).unwrap();
        assert_eq!(
            history.iter().map(|e| e.event).collect::<Vec<_>>(),
            [ContainmentEventKind::Started, ContainmentEventKind::Lifted]
        );
        let actions = store.take_operator_actions().unwrap();
        assert!(matches!(
            actions.as_slice(),
            [
                OperatorAction::Contain { containment },
                OperatorAction::Lift { containment: lifted_id },
            ] if containment.id == a.containment.id && *lifted_id == a.containment.id
        ));
    }

    #[test]
    fn an_open_alert_whose_containment_an_operator_lifted_is_spared() {
        let mut store = Store::in_memory().unwrap();
        let alert = crate::export::fixtures::opened();
        store.record(std::slice::from_ref(&alert), &[]).unwrap();
        let mut by_policy = started("198.51.100.7/32", 0);
        by_policy.containment.alert_id = Some(alert.alert.id);
        by_policy.containment.decided_by = Decider::Policy;
        store
            .record_containments(std::slice::from_ref(&by_policy))
            .unwrap();
        assert_eq!(
            store.spared_alerts().unwrap(),
            Vec::<Uuid>::new(),
            "still active"
        );

        let mut lifted = by_policy.clone();
        lifted.event = ContainmentEventKind::Lifted;
        lifted.containment.state = ContainmentState::Lifted;
        lifted.containment.ended_by = Some(Decider::Policy);
        store
            .record_containments(std::slice::from_ref(&lifted))
            .unwrap();
        assert_eq!(
            store.spared_alerts().unwrap(),
            Vec::<Uuid>::new(),
            "lifted by the policy, not an operator"
        );
        lifted.containment.ended_by = Some(Decider::Operator {
            user: "alice".into(),
        });
        store.operator_lift(&lifted).unwrap();
        assert_eq!(store.spared_alerts().unwrap(), [alert.alert.id]);

        let mut resolved = alert.clone();
        resolved.event = crate::detect::alerts::AlertEventKind::Resolved;
        resolved.alert.status = crate::detect::alerts::AlertStatus::Resolved;
        store.record(&[resolved], &[]).unwrap();
        assert_eq!(
            store.spared_alerts().unwrap(),
            Vec::<Uuid>::new(),
            "its alert ended"
        );
    }

    #[test]
    fn learned_destinations_inside_or_around_a_target_are_found() {
        let store = Store::in_memory().unwrap();
        store
            .conn
            .execute_batch(
                "INSERT INTO learned VALUES ('messaging', '198.51.100.9', 'operator', 0);
                 INSERT INTO learned VALUES ('messaging', '2001:db8::/48', 'learning', 0);
                 INSERT INTO learned VALUES ('other', '203.0.113.1', 'learning', 0);",
            )
            .unwrap();
        let within = |t: &str| {
            store
                .learned_within("messaging", &t.parse().unwrap())
                .unwrap()
        };
        assert_eq!(within("198.51.100.0/24").as_deref(), Some("198.51.100.9"));
        assert_eq!(within("198.51.100.9/32").as_deref(), Some("198.51.100.9"));
        assert_eq!(
            within("2001:db8:0:1::5/128").as_deref(),
            Some("2001:db8::/48")
        );
        assert_eq!(within("198.51.100.10/32"), None);
        assert_eq!(within("203.0.113.1/32"), None, "another service's");
    }

    #[test]
    fn ended_containments_are_pruned_once_delivered() {
        let mut store = Store::in_memory().unwrap();
        store.cursor("siem").unwrap();
        let mut e = started("198.51.100.7/32", 0);
        store.record_containments(std::slice::from_ref(&e)).unwrap();
        e.event = ContainmentEventKind::Expired;
        e.containment.state = ContainmentState::Expired;
        store.record_containments(std::slice::from_ref(&e)).unwrap();
        assert_eq!(
            store.prune_containments(ts(100)).unwrap(),
            0,
            "not delivered yet"
        );
        let last = store.pending("siem", 10).unwrap().last().unwrap().seq;
        store.advance("siem", last).unwrap();
        assert_eq!(store.prune_containments(ts(100)).unwrap(), 1);
        assert_eq!(store.list_containments(false, 10).unwrap().len(), 0);
    }
}
