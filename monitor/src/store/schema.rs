//! The state database's schema, versioned by `PRAGMA user_version`. Migrations only ever
//! append: a released step is never edited, a new one is added at the end.

/// Migration `i` brings the schema from version `i` to `i + 1`.
pub const MIGRATIONS: &[&str] = &[
    // 1: learned destinations, baselines, checkpointed windows, alerts and their history,
    // operator decisions.
    "
    CREATE TABLE services (
        name TEXT PRIMARY KEY,
        first_seen INTEGER NOT NULL,      -- Unix seconds
        learn_until INTEGER NOT NULL,     -- Unix seconds
        peer_volumes BLOB,                -- hdrhistogram V2 (rule 2)
        time_of_day BLOB                  -- 25 hdrhistograms (rule 3), see store/detector_state.rs
    ) STRICT;
    CREATE TABLE learned (
        service TEXT NOT NULL,
        addr TEXT NOT NULL,
        source TEXT NOT NULL CHECK (source IN ('learning', 'operator')),
        learned_at INTEGER NOT NULL,      -- Unix milliseconds
        PRIMARY KEY (service, addr)
    ) STRICT, WITHOUT ROWID;
    CREATE TABLE peer_windows (
        service TEXT NOT NULL,
        addr TEXT NOT NULL,
        state BLOB NOT NULL,              -- PeerState::encode
        PRIMARY KEY (service, addr)
    ) STRICT, WITHOUT ROWID;
    CREATE TABLE alerts (
        id TEXT PRIMARY KEY,
        rule TEXT NOT NULL,
        service TEXT NOT NULL,
        peer TEXT,
        severity TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('open', 'resolved')),
        acknowledged INTEGER NOT NULL,
        opened_at INTEGER NOT NULL,       -- Unix milliseconds
        updated_at INTEGER NOT NULL,
        body TEXT NOT NULL                -- the alert as JSON (the agent's alert schema)
    ) STRICT;
    CREATE INDEX alerts_by_status ON alerts (status, opened_at);
    CREATE TABLE alert_events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        alert_id TEXT NOT NULL REFERENCES alerts (id),
        event TEXT NOT NULL,
        at INTEGER NOT NULL,              -- Unix milliseconds
        body TEXT NOT NULL                -- the AlertEvent as JSON
    ) STRICT;
    CREATE INDEX alert_events_by_alert ON alert_events (alert_id, seq);
    CREATE TABLE suppressions (
        id INTEGER PRIMARY KEY,
        rule TEXT,
        service TEXT,
        peer TEXT,
        until INTEGER,                    -- Unix milliseconds; NULL = forever
        reason TEXT,
        created_at INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE operator_actions (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        body TEXT NOT NULL,               -- OperatorAction as JSON
        created_at INTEGER NOT NULL,
        applied INTEGER NOT NULL DEFAULT 0
    ) STRICT;
    ",
    // 2: key-value facts of the host (the end of its learning period).
    "
    CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) STRICT, WITHOUT ROWID;
    ",
    // 3: per-sink delivery cursors over alert_events (the outbox).
    "
    CREATE TABLE sink_cursors (
        sink TEXT PRIMARY KEY,
        seq INTEGER NOT NULL              -- last alert_events.seq delivered
    ) STRICT, WITHOUT ROWID;
    ",
    // 4: the populations (clients, learned destinations, prefix groups), rule 8's curve and
    // the service's own windows. peer_windows.addr may now be a prefix (`198.51.100.0/24`).
    "
    ALTER TABLE services ADD COLUMN populations BLOB;       -- Populations::encode
    ALTER TABLE services ADD COLUMN new_client_curve BLOB;  -- 25 hdrhistograms (rule 8)
    ALTER TABLE services ADD COLUMN windows BLOB;           -- ServiceState::encode_windows
    ",
    // 5: client identities met before (who is a newcomer), kept for 30 days after they were
    // last met, beyond the peer table's 25 hours.
    "
    CREATE TABLE acquaintances (
        service TEXT NOT NULL,
        identity TEXT NOT NULL,           -- an IPv4 address, or an IPv6 /64
        first_seen INTEGER NOT NULL,      -- Unix seconds
        last_day INTEGER NOT NULL,        -- Unix day
        PRIMARY KEY (service, identity)
    ) STRICT, WITHOUT ROWID;
    ",
    // 6: containments. The outbox (`alert_events`) also carries containment events: rebuilt
    // with a `kind` and without the reference to `alerts` (a containment event's subject is
    // its containment). Same rows, same sequence numbers: every sink's cursor stays valid.
    "
    CREATE TABLE alert_events_v6 (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        alert_id TEXT NOT NULL,           -- the alert's id, or the containment's
        event TEXT NOT NULL,
        at INTEGER NOT NULL,              -- Unix milliseconds
        body TEXT NOT NULL,               -- the AlertEvent or ContainmentEvent as JSON
        kind TEXT NOT NULL DEFAULT 'alert' CHECK (kind IN ('alert', 'containment'))
    ) STRICT;
    INSERT INTO alert_events_v6 (seq, alert_id, event, at, body)
        SELECT seq, alert_id, event, at, body FROM alert_events;
    -- The sequence goes on from the highest number ever used (rows of pruned alerts are
    -- gone, but a sink's cursor may be past them): a new event must never get a number a
    -- cursor already passed.
    INSERT INTO sqlite_sequence (name, seq) SELECT 'alert_events_v6', 0
        WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'alert_events_v6');
    UPDATE sqlite_sequence SET seq = max(
        seq,
        coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'alert_events'), 0),
        coalesce((SELECT max(seq) FROM sink_cursors), 0)
    ) WHERE name = 'alert_events_v6';
    DROP TABLE alert_events;
    ALTER TABLE alert_events_v6 RENAME TO alert_events;
    CREATE INDEX alert_events_by_alert ON alert_events (alert_id, seq);
    CREATE TABLE containments (
        id TEXT PRIMARY KEY,
        service TEXT NOT NULL,
        target TEXT NOT NULL,             -- 198.51.100.7/32, 2001:db8::/48
        action TEXT NOT NULL CHECK (action IN ('throttle', 'block')),
        enforcement TEXT NOT NULL CHECK (enforcement IN ('dry_run', 'enforced')),
        state TEXT NOT NULL CHECK (state IN ('active', 'lifted', 'expired')),
        alert_id TEXT,
        started_at INTEGER NOT NULL,      -- Unix milliseconds
        expires_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        body TEXT NOT NULL                -- the Containment as JSON
    ) STRICT;
    CREATE INDEX containments_by_state ON containments (state, started_at);
    ",
];

/// The schema version this build writes.
pub fn current_version() -> i64 {
    MIGRATIONS.len() as i64
}
