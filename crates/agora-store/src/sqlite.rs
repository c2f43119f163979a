//! The SQLite backend of [`Store`], on one `rusqlite` connection.
//!
//! Durability: the database runs in WAL mode with `synchronous=FULL`. In WAL mode, `FULL`
//! fsyncs the write-ahead log at every commit, so a commit that returned has reached the disk
//! and survives power loss; `NORMAL` would only survive a process crash and could lose the last
//! acknowledged commits on power loss, breaking "nothing acknowledged is lost". The price is one
//! fsync per commit, which is why callers batch events into one `append` (group commit). WAL
//! also lets readers in other processes (a backup, `sqlite3` for debugging) read while the
//! server writes.
//!
//! Schema version 1:
//!
//! ```sql
//! meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL)           -- 'schema_version' = 1
//! events(seq INTEGER PRIMARY KEY, payload BLOB NOT NULL)
//! snapshots(seq INTEGER PRIMARY KEY, payload BLOB NOT NULL)     -- only the newest is kept
//! logs(seq INTEGER PRIMARY KEY AUTOINCREMENT, job, lease, rank, stream, data, data_bytes)
//! logs_by_job ON logs(job, seq, data_bytes)
//! ```
//!
//! `logs.data_bytes` caches the UTF-8 length of `data` because SQLite's `length()` counts
//! characters of TEXT, and so that pruning reads only the index (which covers it) instead of
//! every record's text.

use std::path::Path;
use std::time::Duration;

use agora_types::{JobId, LeaseId};
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};

use crate::{LogRecord, LogStream, Store, StoreError, StoredLog};

/// The schema version this build writes and the newest it can read.
const SCHEMA_VERSION: i64 = 1;

/// How long a statement waits for another connection's lock before failing with
/// [`StoreError::Busy`]. Only another process (a backup, an operator's `sqlite3`) can hold the
/// lock, so a few seconds is plenty and still bounds a stuck commit loop.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Enough cached statements for every query below, with room to spare.
const STATEMENT_CACHE_CAPACITY: usize = 32;

const CREATE_SCHEMA_V1: &str = "
    CREATE TABLE events (
        seq INTEGER PRIMARY KEY,
        payload BLOB NOT NULL
    );
    CREATE TABLE snapshots (
        seq INTEGER PRIMARY KEY,
        payload BLOB NOT NULL
    );
    -- AUTOINCREMENT so that a seq is never reused after the newest records are pruned: a
    -- reader following a job from its last seen seq would otherwise miss new records.
    CREATE TABLE logs (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        job INTEGER NOT NULL,
        lease INTEGER NOT NULL,
        rank INTEGER NOT NULL,
        stream TEXT NOT NULL CHECK (stream IN ('stdout', 'stderr')),
        data TEXT NOT NULL,
        data_bytes INTEGER NOT NULL
    );
    CREATE INDEX logs_by_job ON logs (job, seq, data_bytes);
";

const SQL_LAST_SEQ: &str = "SELECT COALESCE(MAX(seq), 0) FROM events";

/// A [`Store`] in a SQLite database file (or in memory, for tests).
pub struct SqliteStore {
    conn: Connection,
}

impl SqliteStore {
    /// Opens the store at `path`, creating the file and the schema if missing.
    ///
    /// Refuses a database written by a newer schema version ([`StoreError::NewerSchema`]) and a
    /// database that holds other tables but no agora schema ([`StoreError::NotAnAgoraStore`]).
    /// The parent directory must exist.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        // No SQLITE_OPEN_URI: a path is a path, even if it starts with `file:`. NO_MUTEX because
        // the connection is never shared between threads (`Connection` is not `Sync`).
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(|err| StoreError::Open {
            path: path.to_owned(),
            reason: err.to_string(),
        })?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Backend(format!(
                "sqlite refused write-ahead logging (journal_mode is {mode})"
            )));
        }
        Self::init(conn)
    }

    /// Opens a fresh store that lives in memory and vanishes when dropped; for tests.
    pub fn open_in_memory() -> Result<Self, StoreError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(mut conn: Connection) -> Result<Self, StoreError> {
        conn.pragma_update(None, "synchronous", "FULL")?;
        let synchronous: i64 = conn.pragma_query_value(None, "synchronous", |row| row.get(0))?;
        // 2 is FULL; anything weaker would acknowledge commits that power loss can undo.
        if synchronous < 2 {
            return Err(StoreError::Backend(format!(
                "sqlite refused synchronous=FULL (it is {synchronous})"
            )));
        }
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE_CAPACITY);
        migrate(&mut conn)?;
        Ok(Self { conn })
    }
}

/// Creates the schema of a new database, or checks the version of an existing one.
fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    // IMMEDIATE: two processes opening a new file at once must not both create the schema.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let has_meta: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta')",
        [],
        |row| row.get(0),
    )?;
    if has_meta {
        let version: Option<i64> = tx
            .query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |row| {
                row.get(0)
            })
            .optional()?;
        match version {
            Some(SCHEMA_VERSION) => {}
            Some(found) if found > SCHEMA_VERSION => {
                return Err(StoreError::NewerSchema {
                    found,
                    supported: SCHEMA_VERSION,
                });
            }
            Some(found) => {
                return Err(StoreError::Corrupt(format!("unknown schema version {found}")));
            }
            None => {
                return Err(StoreError::Corrupt("meta table has no schema_version".to_owned()));
            }
        }
    } else {
        let table_count: i64 = tx.query_row("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'", [], |row| {
            row.get(0)
        })?;
        if table_count > 0 {
            return Err(StoreError::NotAnAgoraStore);
        }
        tx.execute_batch(CREATE_SCHEMA_V1)?;
        tx.execute_batch("CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")?;
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('schema_version', ?1)",
            [SCHEMA_VERSION],
        )?;
    }
    tx.commit()?;
    Ok(())
}

/// Converts a seq or id to the signed integer SQLite stores.
fn to_sql_int(what: &'static str, value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::OutOfRange { what, value })
}

/// Converts a stored integer back; a negative one was never written by us.
fn from_sql_int(what: &str, value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("negative {what} {value}")))
}

/// A lower bound for `seq > ?`: every stored seq fits an i64, so a larger bound matches nothing
/// exactly as `i64::MAX` does.
fn after_bound(after: u64) -> i64 {
    i64::try_from(after).unwrap_or(i64::MAX)
}

fn limit_bound(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

impl Store for SqliteStore {
    fn append(&mut self, events: &[Vec<u8>]) -> Result<u64, StoreError> {
        if events.is_empty() {
            return self.last_seq();
        }
        // The seqs are read inside the write transaction, not cached, so that even a second
        // writer process could not make two events share a seq: it would wait on the lock.
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let last: i64 = tx.prepare_cached(SQL_LAST_SEQ)?.query_row([], |row| row.get(0))?;
        let mut seq = from_sql_int("event seq", last)?;
        {
            let mut insert = tx.prepare_cached("INSERT INTO events (seq, payload) VALUES (?1, ?2)")?;
            for payload in events {
                seq += 1;
                insert.execute(params![to_sql_int("event seq", seq)?, payload])?;
            }
        }
        tx.commit()?;
        Ok(seq)
    }

    fn last_seq(&self) -> Result<u64, StoreError> {
        let last: i64 = self
            .conn
            .prepare_cached(SQL_LAST_SEQ)?
            .query_row([], |row| row.get(0))?;
        from_sql_int("event seq", last)
    }

    fn read_events(&self, after: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT seq, payload FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2")?;
        let mut rows = stmt.query(params![after_bound(after), limit_bound(limit)])?;
        let mut events = Vec::new();
        // Events up to the compaction point were forgotten on purpose (see `compact`).
        let compacted: Option<i64> = self
            .conn
            .prepare_cached("SELECT value FROM meta WHERE key = 'compacted_through'")?
            .query_row([], |row| row.get(0))
            .optional()?;
        let compacted = compacted.map_or(Ok(0), |c| from_sql_int("compacted seq", c))?;
        let mut expected = after.max(compacted).saturating_add(1);
        while let Some(row) = rows.next()? {
            let seq = from_sql_int("event seq", row.get(0)?)?;
            // Seqs are dense by construction; a gap means rows were lost or edited behind our
            // back, and replaying across it would silently build the wrong state.
            if seq != expected {
                return Err(StoreError::Corrupt(format!(
                    "event log has a gap: expected seq {expected}, found {seq}"
                )));
            }
            expected += 1;
            events.push((seq, row.get(1)?));
        }
        Ok(events)
    }

    fn save_snapshot(&mut self, seq: u64, bytes: &[u8]) -> Result<(), StoreError> {
        let seq_sql = to_sql_int("snapshot seq", seq)?;
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let last: i64 = tx.prepare_cached(SQL_LAST_SEQ)?.query_row([], |row| row.get(0))?;
        let last_seq = from_sql_int("event seq", last)?;
        if seq > last_seq {
            return Err(StoreError::SnapshotAhead { seq, last_seq });
        }
        tx.prepare_cached("INSERT OR REPLACE INTO snapshots (seq, payload) VALUES (?1, ?2)")?
            .execute(params![seq_sql, bytes])?;
        // Keeps only the newest; if the one just written is older than a stored one, this
        // deletes it again, which is the documented "older changes nothing".
        tx.prepare_cached("DELETE FROM snapshots WHERE seq < (SELECT MAX(seq) FROM snapshots)")?
            .execute([])?;
        tx.commit()?;
        Ok(())
    }

    fn compact(&mut self, through: u64) -> Result<u64, StoreError> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let snapshot: Option<i64> = tx
            .prepare_cached("SELECT MAX(seq) FROM snapshots")?
            .query_row([], |row| row.get(0))?;
        let snapshot = snapshot.map(|s| from_sql_int("snapshot seq", s)).transpose()?;
        match snapshot {
            Some(s) if through <= s => {}
            other => {
                return Err(StoreError::CompactAhead {
                    through,
                    snapshot: other.unwrap_or(0),
                });
            }
        }
        // The newest event stays, so that seqs go on from it.
        let last: i64 = tx.prepare_cached(SQL_LAST_SEQ)?.query_row([], |row| row.get(0))?;
        let through = through.min(from_sql_int("event seq", last)?.saturating_sub(1));
        let through_sql = to_sql_int("event seq", through)?;
        let forgotten = tx
            .prepare_cached("DELETE FROM events WHERE seq <= ?1")?
            .execute([through_sql])?;
        tx.prepare_cached(
            "INSERT INTO meta (key, value) VALUES ('compacted_through', ?1)
             ON CONFLICT (key) DO UPDATE SET value = MAX(value, excluded.value)",
        )?
        .execute([through_sql])?;
        tx.commit()?;
        Ok(forgotten as u64)
    }

    fn latest_snapshot(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        let row: Option<(i64, Vec<u8>)> = self
            .conn
            .prepare_cached("SELECT seq, payload FROM snapshots ORDER BY seq DESC LIMIT 1")?
            .query_row([], |row| Ok((row.get(0)?, row.get(1)?)))
            .optional()?;
        row.map(|(seq, bytes)| Ok((from_sql_int("snapshot seq", seq)?, bytes)))
            .transpose()
    }

    fn append_logs(&mut self, records: &[LogRecord]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO logs (job, lease, rank, stream, data, data_bytes)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for record in records {
                insert.execute(params![
                    to_sql_int("job id", record.job.0)?,
                    to_sql_int("lease id", record.lease.0)?,
                    record.rank,
                    record.stream.as_str(),
                    record.data,
                    to_sql_int("log data bytes", record.data.len() as u64)?,
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn read_logs(&self, job: JobId, after_seq: u64, limit: usize) -> Result<Vec<StoredLog>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, lease, rank, stream, data FROM logs
             WHERE job = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
        )?;
        let mut rows = stmt.query(params![
            to_sql_int("job id", job.0)?,
            after_bound(after_seq),
            limit_bound(limit)
        ])?;
        let mut logs = Vec::new();
        while let Some(row) = rows.next()? {
            let stream_name: String = row.get(3)?;
            let stream = LogStream::from_name(&stream_name)
                .ok_or_else(|| StoreError::Corrupt(format!("unknown log stream {stream_name:?}")))?;
            logs.push(StoredLog {
                seq: from_sql_int("log seq", row.get(0)?)?,
                job,
                lease: LeaseId(from_sql_int("lease id", row.get(1)?)?),
                rank: row.get(2)?,
                stream,
                data: row.get(4)?,
            });
        }
        Ok(logs)
    }

    fn prune_logs(&mut self, job: JobId, keep_bytes: u64) -> Result<u64, StoreError> {
        let job_sql = to_sql_int("job id", job.0)?;
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Walk from the newest record back, keeping records while they fit the budget; the first
        // one that does not fit and everything older goes. This reads only the covering index
        // and only as many entries as are kept, plus one.
        let cutoff: Option<i64> = {
            let mut stmt = tx.prepare_cached("SELECT seq, data_bytes FROM logs WHERE job = ?1 ORDER BY seq DESC")?;
            let mut rows = stmt.query([job_sql])?;
            let mut kept_bytes: u64 = 0;
            let mut cutoff = None;
            while let Some(row) = rows.next()? {
                let bytes = from_sql_int("log data bytes", row.get(1)?)?;
                match kept_bytes.checked_add(bytes) {
                    Some(total) if total <= keep_bytes => kept_bytes = total,
                    _ => {
                        cutoff = Some(row.get(0)?);
                        break;
                    }
                }
            }
            cutoff
        };
        let Some(cutoff) = cutoff else {
            return Ok(0);
        };
        let deleted: i64 = tx
            .prepare_cached("SELECT COALESCE(SUM(data_bytes), 0) FROM logs WHERE job = ?1 AND seq <= ?2")?
            .query_row(params![job_sql, cutoff], |row| row.get(0))?;
        tx.prepare_cached("DELETE FROM logs WHERE job = ?1 AND seq <= ?2")?
            .execute(params![job_sql, cutoff])?;
        tx.commit()?;
        from_sql_int("log data bytes", deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newer_schema_version_is_refused_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agora.db");
        drop(SqliteStore::open(&path).unwrap());
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute(
                "UPDATE meta SET value = ?1 WHERE key = 'schema_version'",
                [SCHEMA_VERSION + 1],
            )
            .unwrap();
        }
        let err = SqliteStore::open(&path).err().expect("newer schema must be refused");
        assert!(
            matches!(err, StoreError::NewerSchema { found, supported }
                if found == SCHEMA_VERSION + 1 && supported == SCHEMA_VERSION),
            "{err:?}"
        );
        assert!(err.to_string().contains("upgrade agora"), "{err}");
    }

    #[test]
    fn foreign_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("other.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch("CREATE TABLE users (id INTEGER PRIMARY KEY)")
                .unwrap();
        }
        let err = SqliteStore::open(&path)
            .err()
            .expect("foreign database must be refused");
        assert!(matches!(err, StoreError::NotAnAgoraStore), "{err:?}");
    }

    #[test]
    fn a_file_that_is_not_sqlite_is_reported_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("garbage.db");
        std::fs::write(&path, vec![0xAB; 8192]).unwrap();
        let err = SqliteStore::open(&path).err().expect("garbage must be refused");
        assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    }

    #[test]
    fn missing_parent_directory_is_an_open_error_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no-such-dir").join("agora.db");
        let err = SqliteStore::open(&path).err().expect("missing directory must fail");
        assert!(
            matches!(&err, StoreError::Open { path: p, .. } if *p == path),
            "{err:?}"
        );
    }

    #[test]
    fn file_store_runs_in_wal_mode_with_full_sync() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("agora.db")).unwrap();
        let mode: String = store
            .conn
            .pragma_query_value(None, "journal_mode", |row| row.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let sync: i64 = store
            .conn
            .pragma_query_value(None, "synchronous", |row| row.get(0))
            .unwrap();
        assert_eq!(sync, 2, "synchronous must be FULL");
    }

    #[test]
    fn a_gap_in_the_event_log_is_reported_corrupt() {
        let mut store = SqliteStore::open_in_memory().unwrap();
        store.append(&[b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]).unwrap();
        store.conn.execute("DELETE FROM events WHERE seq = 2", []).unwrap();
        let err = store.read_events(0, 10).expect_err("gap must be detected");
        assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    }

    #[test]
    fn ids_beyond_i64_are_refused_not_wrapped() {
        let mut store = SqliteStore::open_in_memory().unwrap();
        let record = LogRecord {
            job: JobId(u64::MAX),
            lease: LeaseId(1),
            rank: 0,
            stream: LogStream::Stdout,
            data: "x".to_owned(),
        };
        let err = store.append_logs(&[record]).expect_err("must be refused");
        assert!(matches!(err, StoreError::OutOfRange { what: "job id", .. }), "{err:?}");
        // A read bound beyond i64 simply matches nothing.
        assert!(store.read_events(u64::MAX, 10).unwrap().is_empty());
    }
}
