//! The state store: one SQLite file (`state.db`, WAL mode) holding learned destinations,
//! baselines, checkpointed windows, alerts with their history, and operator decisions.
//!
//! Recovery: a file that is not a database, fails `PRAGMA quick_check`, or was written by a
//! newer schema is refused with an error that says so; `--reset-state` moves it aside
//! (`state.db.reset-<time>`, with its `-wal`/`-shm`) and starts empty. Nothing is deleted.

pub mod alerts;
pub mod containments;
pub mod detector_state;
pub mod outbox;
mod schema;

use std::{
    fs,
    os::unix::fs::{DirBuilderExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use jiff::Timestamp;
use rusqlite::{Connection, ErrorCode, OpenFlags};
use thiserror::Error;

pub use self::{
    alerts::{AlertFilter, OperatorAction, StoredSuppression},
    outbox::Pending,
};

pub const FILE_NAME: &str = "state.db";

/// Advice appended to every "cannot use this file" error.
const RECOVERY: &str = "run the agent once with --reset-state to move it aside and start with \
                        an empty state (the old file is kept, renamed)";

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("creating the state directory or database {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("state database {path} is corrupt or not a database ({detail}); {RECOVERY}")]
    Corrupt { path: PathBuf, detail: String },
    #[error(
        "state database {path} has schema version {found}, newer than this build's {known}; \
         use a newer egress-monitor, or {RECOVERY}"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("state database {path}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("moving {from} aside to {to}")]
    MoveAside {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("state database {path}: stored {what} is unreadable: {detail}")]
    Decode {
        path: PathBuf,
        what: &'static str,
        detail: String,
    },
    #[error(
        "no state database at {path} (has the agent run with this state directory? see --state-dir)"
    )]
    Missing { path: PathBuf },
    #[error("no suppression with id {0} (see `alerts suppressions`)")]
    NoSuchSuppression(i64),
    #[error("no alert matches id {0:?}")]
    NoSuchAlert(String),
    #[error("id prefix {prefix:?} matches {count} alerts; give more characters")]
    AmbiguousAlert { prefix: String, count: usize },
    #[error("no containment matches id {0:?} (`egress-monitor contain list --all`)")]
    NoSuchContainment(String),
    #[error("id prefix {prefix:?} matches {count} containments; give more characters")]
    AmbiguousContainment { prefix: String, count: usize },
}

pub struct Store {
    conn: Connection,
    path: PathBuf,
    /// Unix day of the latest purge of expired client identities (once a day is enough: the
    /// purge scans the table).
    identities_purged_day: Option<i64>,
}

impl Store {
    /// Opens (creating if needed) `dir/state.db` and brings its schema up to date.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        // Alerts carry command lines and addresses: not for every local user to read.
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(dir)
            .map_err(|source| StoreError::CreateDir {
                path: dir.to_owned(),
                source,
            })?;
        let path = dir.join(FILE_NAME);
        let created = !path.exists();
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| classify(&path, e))?;
        if created {
            // SQLite gives its -wal and -shm files the database file's mode.
            fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).map_err(|source| {
                StoreError::CreateDir {
                    path: path.clone(),
                    source,
                }
            })?;
        }
        Self::init(conn, path)
    }

    /// Opens an existing `dir/state.db` (the `alerts` commands: they must not create one).
    pub fn open_existing(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join(FILE_NAME);
        if !path.exists() {
            return Err(StoreError::Missing { path });
        }
        Self::open(dir)
    }

    /// A private in-memory database (replay without `--state`).
    pub fn in_memory() -> Result<Self, StoreError> {
        let path = PathBuf::from(":memory:");
        let conn = Connection::open_in_memory().map_err(|e| classify(&path, e))?;
        Self::init(conn, path)
    }

    fn init(mut conn: Connection, path: PathBuf) -> Result<Self, StoreError> {
        let err = |e| classify(&path, e);
        // A few seconds of patience when `alerts ack` and the agent write at once.
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(err)?;
        let check: String = conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(err)?;
        if check != "ok" {
            return Err(StoreError::Corrupt {
                path,
                detail: check,
            });
        }
        if path.as_os_str() != ":memory:" {
            let mode: String = conn
                .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
                .map_err(err)?;
            if !mode.eq_ignore_ascii_case("wal") {
                tracing::warn!(path = %path.display(), mode, "state database not in WAL mode");
            }
        }
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(err)?;
        // 1 MiB of page cache instead of SQLite's 2 MiB default: the agent's writes are
        // small and its memory budget is tight (64 MiB at 100k sockets).
        conn.pragma_update(None, "cache_size", -1024).map_err(err)?;
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(err)?;
        migrate(&mut conn, &path)?;
        Ok(Self {
            conn,
            path,
            identities_purged_day: None,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn sql(&self, source: rusqlite::Error) -> StoreError {
        classify(&self.path, source)
    }

    pub fn schema_version(&self) -> Result<i64, StoreError> {
        self.conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| self.sql(e))
    }
}

/// Applies the migrations the file lacks, each in its own transaction.
fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let err = |e| classify(path, e);
    let found: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(err)?;
    let known = schema::current_version();
    if found > known {
        return Err(StoreError::TooNew {
            path: path.to_owned(),
            found,
            known,
        });
    }
    for (i, sql) in schema::MIGRATIONS.iter().enumerate().skip(found as usize) {
        let tx = conn.transaction().map_err(err)?;
        tx.execute_batch(sql).map_err(err)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)
            .map_err(err)?;
        tx.commit().map_err(err)?;
        tracing::info!(path = %path.display(), version = i + 1, "state schema migrated");
    }
    Ok(())
}

/// Corruption and "not a database" become `Corrupt` (with the recovery advice).
fn classify(path: &Path, e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => StoreError::Corrupt {
            path: path.to_owned(),
            detail: e.to_string(),
        },
        _ => StoreError::Sqlite {
            path: path.to_owned(),
            source: e,
        },
    }
}

/// Moves `dir/state.db` (and its WAL files) aside as `state.db.reset-<time>`; returns the new
/// name of the main file, or `None` when there was no file.
pub fn reset(dir: &Path, now: Timestamp) -> Result<Option<PathBuf>, StoreError> {
    let main = dir.join(FILE_NAME);
    if !main.exists() {
        return Ok(None);
    }
    let stamp = now.strftime("%Y%m%dT%H%M%SZ").to_string();
    let mut target = dir.join(format!("{FILE_NAME}.reset-{stamp}"));
    let mut n = 1;
    while target.exists() {
        target = dir.join(format!("{FILE_NAME}.reset-{stamp}.{n}"));
        n += 1;
    }
    for suffix in ["", "-wal", "-shm"] {
        let from = PathBuf::from(format!("{}{suffix}", main.display()));
        if from.exists() {
            let to = PathBuf::from(format!("{}{suffix}", target.display()));
            fs::rename(&from, &to).map_err(|source| StoreError::MoveAside { from, to, source })?;
        }
    }
    Ok(Some(target))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "egress-monitor-store-{name}-{}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn creates_schema_in_wal_mode_and_reopens() {
        let dir = temp_dir("create");
        let store = Store::open(&dir).unwrap();
        assert_eq!(store.schema_version().unwrap(), schema::current_version());
        let file_mode = fs::metadata(dir.join(FILE_NAME))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(file_mode & 0o777, 0o640, "{file_mode:o}");
        let mode: String = store
            .conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        drop(store);
        let again = Store::open(&dir).unwrap();
        assert_eq!(again.schema_version().unwrap(), schema::current_version());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_older_schema_is_migrated_and_keeps_its_data() {
        let dir = temp_dir("migrate");
        fs::create_dir_all(&dir).unwrap();
        {
            // A database written by the first release: schema 1 only.
            let conn = Connection::open(dir.join(FILE_NAME)).unwrap();
            conn.execute_batch(schema::MIGRATIONS[0]).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            conn.execute(
                "INSERT INTO learned VALUES ('messaging', '198.51.100.7', 'learning', 0)",
                [],
            )
            .unwrap();
        }
        let store = Store::open(&dir).unwrap();
        assert_eq!(store.schema_version().unwrap(), schema::current_version());
        let kept: i64 = store
            .conn
            .query_row("SELECT count(*) FROM learned", [], |r| r.get(0))
            .unwrap();
        assert_eq!(kept, 1);
        store
            .conn
            .execute("INSERT INTO meta VALUES ('k', 'v')", [])
            .expect("the table of migration 2");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_outbox_rebuilt_for_containments_keeps_its_sequence_and_cursors() {
        let dir = temp_dir("outbox-v6");
        fs::create_dir_all(&dir).unwrap();
        {
            let conn = Connection::open(dir.join(FILE_NAME)).unwrap();
            for sql in &schema::MIGRATIONS[..5] {
                conn.execute_batch(sql).unwrap();
            }
            conn.pragma_update(None, "user_version", 5).unwrap();
            conn.execute_batch(
                "INSERT INTO alerts VALUES ('a1', 'peer_outlier', 'messaging', NULL, 'high',
                    'open', 0, 0, 0, '{}');
                 INSERT INTO alert_events (alert_id, event, at, body) VALUES
                    ('a1', 'opened', 0, '{}'), ('a1', 'updated', 1, '{}'), ('a1', 'updated', 2, '{}');
                 DELETE FROM alert_events WHERE seq = 3;
                 INSERT INTO sink_cursors VALUES ('siem', 2);",
            )
            .unwrap();
        }
        let store = Store::open(&dir).unwrap();
        let rows: Vec<(i64, String)> = store
            .conn
            .prepare("SELECT seq, kind FROM alert_events ORDER BY seq")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(rows, [(1, "alert".to_owned()), (2, "alert".to_owned())]);
        store
            .conn
            .execute(
                "INSERT INTO alert_events (alert_id, event, at, body, kind)
                 VALUES ('c1', 'started', 3, '{}', 'containment')",
                [],
            )
            .expect("no reference to alerts any more");
        let seq: i64 = store
            .conn
            .query_row("SELECT max(seq) FROM alert_events", [], |r| r.get(0))
            .unwrap();
        assert_eq!(seq, 4, "the sequence goes on past every number ever used");
        let entries: i64 = store
            .conn
            .query_row(
                "SELECT count(*) FROM sqlite_sequence WHERE name = 'alert_events'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(entries, 1, "one sequence for the table");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn garbage_file_is_refused_with_recovery_advice() {
        let dir = temp_dir("garbage");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(FILE_NAME), vec![0x5a; 8192]).unwrap();
        let e = Store::open(&dir).err().expect("garbage must be refused");
        let text = e.to_string();
        assert!(matches!(e, StoreError::Corrupt { .. }), "{text}");
        assert!(
            text.contains("--reset-state") && text.contains(FILE_NAME),
            "{text}"
        );
        let moved = reset(&dir, Timestamp::from_second(1_790_000_000).unwrap())
            .unwrap()
            .unwrap();
        assert!(
            moved
                .to_string_lossy()
                .contains("state.db.reset-20260921T141320Z"),
            "{}",
            moved.display()
        );
        assert_eq!(
            fs::read(&moved).unwrap(),
            vec![0x5a; 8192],
            "kept, not deleted"
        );
        Store::open(&dir).unwrap();
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = temp_dir("newer");
        let store = Store::open(&dir).unwrap();
        store.conn.pragma_update(None, "user_version", 99).unwrap();
        drop(store);
        let e = Store::open(&dir).err().unwrap().to_string();
        assert!(
            e.contains("schema version 99") && e.contains("--reset-state"),
            "{e}"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reading_commands_do_not_create_a_database() {
        let dir = temp_dir("missing");
        let e = Store::open_existing(&dir).err().unwrap().to_string();
        assert!(
            e.starts_with("no state database at") && e.contains("--state-dir"),
            "{e}"
        );
        assert!(!dir.exists());
    }

    #[test]
    fn reset_without_a_file_does_nothing() {
        let dir = temp_dir("none");
        fs::create_dir_all(&dir).unwrap();
        assert_eq!(reset(&dir, Timestamp::UNIX_EPOCH).unwrap(), None);
        fs::remove_dir_all(&dir).unwrap();
    }
}
