//! What the detector learned, saved and loaded: services (learning period, baselines),
//! learned destinations, the per-peer windows (checkpoints, so a restart mid-window keeps the
//! bytes already counted) and the open alerts.

use std::sync::Arc;

use jiff::Timestamp;
use rusqlite::{OptionalExtension as _, params};

use super::{Store, StoreError};
use crate::detect::{
    Detector,
    acquaintances::{Acquaintances, Identity},
    baseline::{Distribution, TIME_OF_DAY_SIGFIG, TimeOfDay},
    peers::{DIRTY, LEARNED, PeerKey, PeerState},
    population::Populations,
};

/// What a load restored, for the start-up log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Restored {
    pub services: usize,
    pub learned: usize,
    pub peers: usize,
    pub acquaintances: usize,
    pub open_alerts: usize,
    pub suppressions: usize,
}

/// What a checkpoint wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Checkpointed {
    pub services: usize,
    pub peers: usize,
    pub acquaintances: usize,
}

impl Store {
    /// Loads everything into a fresh detector.
    pub fn load_into(
        &mut self,
        detector: &mut Detector,
        now: Timestamp,
    ) -> Result<Restored, StoreError> {
        let host: Option<String> = self
            .conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'host_learn_until'",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.sql(e))?;
        if let Some(v) = host {
            let secs = v
                .parse()
                .map_err(|_| self.decode_error("host learning period", v.clone()))?;
            detector.set_host_learn_until(secs);
        }
        let sweep: Option<String> = self
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'last_sweep'", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| self.sql(e))?;
        if let Some(v) = sweep {
            let secs = v
                .parse()
                .map_err(|_| self.decode_error("last sweep", v.clone()))?;
            detector.set_last_sweep(secs);
        }
        let mut restored = Restored {
            services: self.load_services(detector)?,
            learned: self.load_learned(detector)?,
            peers: self.load_peers(detector)?,
            acquaintances: self.load_acquaintances(detector)?,
            ..Restored::default()
        };
        let open = self.open_alerts()?;
        restored.open_alerts = open.len();
        for alert in open {
            detector.book_mut().restore(alert);
        }
        let suppressions = self.active_suppressions(now)?;
        restored.suppressions = suppressions.len();
        detector.book_mut().set_suppressions(suppressions);
        self.discard_operator_actions()?;
        Ok(restored)
    }

    fn decode_error(&self, what: &'static str, detail: String) -> StoreError {
        StoreError::Decode {
            path: self.path.clone(),
            what,
            detail,
        }
    }

    fn load_services(&self, detector: &mut Detector) -> Result<usize, StoreError> {
        type Row = (
            String,
            i64,
            i64,
            Option<Vec<u8>>,
            Option<Vec<u8>>,
            Option<Vec<u8>>,
            Option<Vec<u8>>,
        );
        // `peer_volumes` (rule 2's single distribution before the populations) is left
        // unread: the populations learn anew, per kind of peer.
        let mut stmt = self
            .conn
            .prepare(
                "SELECT name, first_seen, learn_until, time_of_day, populations,
                        new_client_curve, windows FROM services",
            )
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                ))
            })
            .map_err(|e| self.sql(e))?;
        let mut count = 0;
        for row in rows {
            let (name, first_seen, learn_until, tod, populations, new_clients, windows): Row =
                row.map_err(|e| self.sql(e))?;
            let sid = detector.service_id(&name);
            let svc = &mut detector.services_mut()[sid as usize];
            svc.first_seen = first_seen.max(0) as u64;
            svc.learn_until = learn_until.max(0) as u64;
            if let Some(bytes) = tod {
                svc.time_of_day = decode_time_of_day(&bytes)
                    .map_err(|detail| self.decode_error("time-of-day baseline", detail))?;
            }
            if let Some(bytes) = populations {
                svc.populations = Populations::decode(&bytes)
                    .map_err(|detail| self.decode_error("populations", detail))?;
            }
            if let Some(bytes) = new_clients {
                svc.new_client_curve = decode_time_of_day(&bytes)
                    .map_err(|detail| self.decode_error("new-client curve", detail))?;
            }
            if let Some(bytes) = windows {
                svc.decode_windows(&bytes).ok_or_else(|| {
                    self.decode_error("service windows", format!("{} bytes", bytes.len()))
                })?;
            }
            svc.dirty = false;
            count += 1;
        }
        Ok(count)
    }

    fn load_learned(&self, detector: &mut Detector) -> Result<usize, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT service, addr FROM learned")
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(|e| self.sql(e))?;
        let mut count = 0;
        for row in rows {
            let (service, addr) = row.map_err(|e| self.sql(e))?;
            let key = PeerKey::parse(0, &addr)
                .ok_or_else(|| self.decode_error("learned address", addr.clone()))?;
            // A confirmed prefix group is heavy: its state (and curve) comes with the
            // checkpointed windows.
            if !key.is_group() {
                detector.learn(&service, key.ip());
            }
            count += 1;
        }
        Ok(count)
    }

    /// Reads every row of `sql` (no parameters) with `read` and hands it to `handle`, one at
    /// a time (a million checkpointed peers are not held at once); returns the rows' count.
    fn each_row<T>(
        &self,
        sql: &str,
        read: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
        mut handle: impl FnMut(T) -> Result<(), StoreError>,
    ) -> Result<usize, StoreError> {
        let mut stmt = self.conn.prepare(sql).map_err(|e| self.sql(e))?;
        let mut count = 0;
        for row in stmt.query_map([], read).map_err(|e| self.sql(e))? {
            handle(row.map_err(|e| self.sql(e))?)?;
            count += 1;
        }
        Ok(count)
    }

    fn load_acquaintances(&self, detector: &mut Detector) -> Result<usize, StoreError> {
        let read = |r: &rusqlite::Row<'_>| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
            ))
        };
        let sql = "SELECT service, identity, first_seen, last_day FROM acquaintances";
        self.each_row(sql, read, |(service, identity, first_seen, last_day)| {
            let sid = detector.service_id(&service);
            let id = Identity::parse(sid, &identity)
                .ok_or_else(|| self.decode_error("client identity", identity.clone()))?;
            let first = u32::try_from(first_seen).map_err(|_| {
                self.decode_error("identity first sighting", first_seen.to_string())
            })?;
            let day = u16::try_from(last_day)
                .map_err(|_| self.decode_error("identity last day", last_day.to_string()))?;
            detector.acquaintances_mut().restore(id, first, day);
            Ok(())
        })
    }

    fn load_peers(&self, detector: &mut Detector) -> Result<usize, StoreError> {
        let read = |r: &rusqlite::Row<'_>| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Vec<u8>>(2)?,
            ))
        };
        let sql = "SELECT service, addr, state FROM peer_windows";
        let count = self.each_row(sql, read, |(service, addr, state)| {
            let sid = detector.service_id(&service);
            let key = PeerKey::parse(sid, &addr)
                .ok_or_else(|| self.decode_error("peer address", addr.clone()))?;
            let mut state = PeerState::decode(key, &state)
                .ok_or_else(|| self.decode_error("peer windows", format!("{service} {addr}")))?;
            let peers = detector.peers_mut();
            if peers.get(&key).is_some_and(PeerState::learned) {
                state.flags |= LEARNED;
            }
            peers.insert(state);
            Ok(())
        })?;
        detector.rebuild_prefix_index();
        Ok(count)
    }

    /// Saves what changed since the last checkpoint (everything changed, on the first).
    pub fn checkpoint(&mut self, detector: &mut Detector) -> Result<Checkpointed, StoreError> {
        let path = self.path.clone();
        let err = |e| super::classify(&path, e);
        let mut written = Checkpointed::default();
        let today = i64::try_from(detector.now_secs() / 86_400).unwrap_or(i64::MAX);
        let tx = self.conn.transaction().map_err(err)?;
        if detector.host_learn_until() > 0 {
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('host_learn_until', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [detector.host_learn_until().to_string()],
            )
            .map_err(err)?;
        }
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('last_sweep', ?1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [detector.last_sweep().to_string()],
        )
        .map_err(err)?;
        {
            let mut service = tx
                .prepare_cached(
                    "INSERT INTO services (name, first_seen, learn_until, time_of_day, populations,
                        new_client_curve, windows)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT (name) DO UPDATE SET first_seen = excluded.first_seen,
                        learn_until = excluded.learn_until, time_of_day = excluded.time_of_day,
                        populations = excluded.populations,
                        new_client_curve = excluded.new_client_curve, windows = excluded.windows",
                )
                .map_err(err)?;
            let names: Vec<Arc<str>> = detector.services().iter().map(|s| s.name.clone()).collect();
            for svc in detector.services_mut() {
                // The service's windows change with every sample: saved at each checkpoint.
                if svc.first_seen == 0 {
                    continue;
                }
                service
                    .execute(params![
                        &*svc.name,
                        svc.first_seen as i64,
                        svc.learn_until as i64,
                        encode_time_of_day(&svc.time_of_day),
                        svc.populations.encode(),
                        encode_time_of_day(&svc.new_client_curve),
                        svc.encode_windows(),
                    ])
                    .map_err(err)?;
                svc.dirty = false;
                written.services += 1;
            }
            let mut peer = tx
                .prepare_cached(
                    "INSERT INTO peer_windows (service, addr, state) VALUES (?1, ?2, ?3)
                     ON CONFLICT (service, addr) DO UPDATE SET state = excluded.state",
                )
                .map_err(err)?;
            for (_, state) in detector.peers_mut().iter_mut() {
                if state.flags & DIRTY == 0 || state.first_seen == 0 {
                    continue;
                }
                let Some(name) = names.get(state.key.service as usize) else {
                    continue;
                };
                peer.execute(params![&**name, state.key.addr_text(), state.encode()])
                    .map_err(err)?;
                state.flags &= !DIRTY;
                written.peers += 1;
            }
            let purge = self.identities_purged_day != Some(today);
            written.acquaintances =
                save_acquaintances(&tx, detector, &names, purge).map_err(err)?;
            let mut forget = tx
                .prepare_cached("DELETE FROM peer_windows WHERE service = ?1 AND addr = ?2")
                .map_err(err)?;
            for (service, key) in detector.take_forgotten() {
                forget
                    .execute(params![&*service, key.addr_text()])
                    .map_err(err)?;
            }
            // Open alerts' latest totals and last-exceeded time, so a restart resolves them
            // when the run without a restart would have.
            let mut alert = tx
                .prepare_cached("UPDATE alerts SET body = ?2 WHERE id = ?1 AND status = 'open'")
                .map_err(err)?;
            for a in detector.book().open_alerts() {
                alert
                    .execute(params![
                        a.id.to_string(),
                        serde_json::to_string(a).unwrap_or_default()
                    ])
                    .map_err(err)?;
            }
        }
        tx.commit().map_err(err)?;
        self.identities_purged_day = Some(today);
        Ok(written)
    }
}

/// Writes the identities met or parted since the last checkpoint, and with `purge` deletes
/// those not met for the recall period; returns how many were written.
fn save_acquaintances(
    tx: &rusqlite::Transaction<'_>,
    detector: &mut Detector,
    names: &[Arc<str>],
    purge: bool,
) -> Result<usize, rusqlite::Error> {
    let mut met = tx.prepare_cached(
        "INSERT INTO acquaintances (service, identity, first_seen, last_day)
         VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (service, identity) DO UPDATE SET
            first_seen = excluded.first_seen, last_day = excluded.last_day",
    )?;
    let mut written = 0;
    for (id, a) in detector.acquaintances_mut().take_dirty() {
        let Some(name) = names.get(id.service as usize) else {
            continue;
        };
        met.execute(params![
            &**name,
            id.text(),
            i64::from(a.first_seen),
            i64::from(a.last_day)
        ])?;
        written += 1;
    }
    if !purge {
        return Ok(written);
    }
    let oldest = Acquaintances::oldest_kept_day(detector.now_secs());
    tx.execute("DELETE FROM acquaintances WHERE last_day < ?1", [oldest])?;
    Ok(written)
}

/// 25 length-prefixed V2 histograms (24 hours, then the whole day); an empty hour is a zero
/// length.
fn encode_time_of_day(t: &TimeOfDay) -> Vec<u8> {
    let mut out = Vec::new();
    let mut push = |bytes: &[u8]| {
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(bytes);
    };
    for hour in &t.hours {
        push(&hour.as_ref().map(Distribution::encode).unwrap_or_default());
    }
    push(&t.all_day.encode());
    out
}

fn decode_time_of_day(mut bytes: &[u8]) -> Result<TimeOfDay, String> {
    let mut next = || -> Result<Option<Distribution>, String> {
        let len_bytes: [u8; 4] = bytes
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .ok_or("truncated")?;
        let len = u32::from_le_bytes(len_bytes) as usize;
        let body = bytes.get(4..4 + len).ok_or("truncated")?;
        bytes = &bytes[4 + len..];
        if len == 0 {
            return Ok(None);
        }
        Distribution::decode(body, TIME_OF_DAY_SIGFIG)
            .map(Some)
            .map_err(|e| e.to_string())
    };
    let mut t = TimeOfDay::default();
    for hour in 0..24 {
        t.hours[hour] = next()?;
    }
    t.all_day = next()?.unwrap_or_else(|| Distribution::new(TIME_OF_DAY_SIGFIG));
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acquaintances_survive_a_restart_and_expire_from_the_database() {
        let config = crate::detect::tests::config("");
        let mut store = Store::in_memory().unwrap();
        let mut detector = Detector::new(&config);
        let sid = detector.service_id("messaging");
        let day = 20_000 * 86_400;
        let met = detector.acquaintances_mut();
        met.meet(sid, "203.0.113.66".parse().unwrap(), day, true);
        met.meet(sid, "2001:db8:77:1::aaaa".parse().unwrap(), day + 60, true);
        let written = store.checkpoint(&mut detector).unwrap();
        assert_eq!(
            written.acquaintances, 4,
            "two identities and their two networks"
        );
        // Nothing changed: nothing written again.
        assert_eq!(store.checkpoint(&mut detector).unwrap().acquaintances, 0);

        let mut back = Detector::new(&config);
        let restored = store.load_into(&mut back, Timestamp::now()).unwrap();
        assert_eq!(restored.acquaintances, 4);
        let sid = back.service_id("messaging");
        let later = day + 5 * 86_400;
        let met = back.acquaintances_mut();
        let first = met.meet(sid, "2001:db8:77:1::bbbb".parse().unwrap(), later, true);
        assert_eq!(
            u64::from(first.first_seen),
            day + 60,
            "the /64 was met before the restart"
        );
        let lease = met.meet(sid, "203.0.9.9".parse().unwrap(), later, true);
        assert!(
            lease.vouched,
            "the /16 was known before the restart: a new lease of it is vouched for"
        );

        // Rows not met for longer than the recall period go at a checkpoint whose samples'
        // time is that late (here, a sample 40 days on).
        let mut aged = Detector::new(&config);
        store.load_into(&mut aged, Timestamp::now()).unwrap();
        let s = crate::detect::tests::sample(
            &crate::detect::tests::owner(),
            (day + 40 * 86_400) as i64,
            "198.51.100.1",
            443,
            1000,
        );
        aged.observe(&[s], &mut Vec::new());
        store.checkpoint(&mut aged).unwrap();
        let mut empty = Detector::new(&config);
        let restored = store.load_into(&mut empty, Timestamp::now()).unwrap();
        assert_eq!(restored.acquaintances, 0);
    }

    #[test]
    fn time_of_day_encoding_round_trips() {
        let mut t = TimeOfDay::default();
        t.record(3 * 3600, 1000);
        t.record(3 * 3600 + 60, 2000);
        t.record(15 * 3600, 5_000_000);
        let back = decode_time_of_day(&encode_time_of_day(&t)).unwrap();
        assert_eq!(back.all_day.len(), 3);
        assert_eq!(back.hours[3].as_ref().unwrap().len(), 2);
        assert!(back.hours[4].is_none());
        assert!(decode_time_of_day(&[1, 2]).is_err());
    }
}
