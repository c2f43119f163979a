//! Durable storage of the exchange behind one narrow interface, [`Store`].
//!
//! The store keeps three things:
//!
//! - the **event log**: opaque byte payloads (JSON produced by the server) numbered by a dense
//!   sequence `1, 2, 3, …`. Every state change is appended here before it is acknowledged, and
//!   state is rebuilt from the latest snapshot plus the events after it;
//! - **snapshots**: opaque bytes describing the state as of one event seq;
//! - **job log output** (stdout/stderr lines of running jobs) with bounded retention.
//!
//! Architecture invariants:
//!
//! - The store knows nothing about the exchange's event types; it never decodes a payload.
//! - Events are never updated or deleted: seqs are dense from 1 for the life of a store.
//! - When `append` returns `Ok`, the events survive `kill -9` and power loss.
//! - Every backend passes the same [`conformance`] suite; SQLite is the first, PostgreSQL comes
//!   next through [`open_store`].

pub mod conformance;
mod error;
mod sqlite;

use std::path::Path;

use agora_types::{JobId, LeaseId};
use serde::{Deserialize, Serialize};

pub use error::StoreError;
pub use sqlite::SqliteStore;

/// The storage contract every backend implements.
///
/// A store is owned by one dedicated thread (the server's commit loop): it is `Send` but need
/// not be `Sync`, so a backend may hold a single non-thread-safe connection.
///
/// Sequence numbers and ids are stored as signed 64-bit integers by every backend (SQLite
/// `INTEGER`, PostgreSQL `BIGINT`), so values above `i64::MAX` are refused with
/// [`StoreError::OutOfRange`].
pub trait Store: Send {
    /// Appends `events` durably in one transaction and returns the seq of the last one.
    ///
    /// Seqs start at 1 and are dense. Appending an empty slice writes nothing and returns the
    /// current [`Store::last_seq`]. When this returns `Ok`, every event of the batch survives a
    /// process kill or power loss; when it returns `Err`, none of them was written. Batching many
    /// events in one call (group commit) is how the server reaches thousands of durable
    /// submissions per second: the cost of a commit is one fsync, whatever the batch size.
    fn append(&mut self, events: &[Vec<u8>]) -> Result<u64, StoreError>;

    /// The seq of the last appended event, 0 when the log is empty.
    fn last_seq(&self) -> Result<u64, StoreError>;

    /// Events with seq greater than `after`, in seq order, at most `limit` of them.
    fn read_events(&self, after: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError>;

    /// Saves a snapshot of the state as of event `seq` (opaque bytes).
    ///
    /// Only the newest snapshot is kept: saving replaces an older one in the same transaction
    /// (there is never a moment without a snapshot once one was saved), saving the same seq
    /// again replaces its bytes, and saving a seq older than the stored one changes nothing.
    /// A snapshot of an event that does not exist yet is refused with
    /// [`StoreError::SnapshotAhead`]: recovering from it would skip events appended later.
    fn save_snapshot(&mut self, seq: u64, bytes: &[u8]) -> Result<(), StoreError>;

    /// The newest snapshot and the seq it was taken at, if any.
    fn latest_snapshot(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError>;

    /// Forgets the events up to `through`, which the newest snapshot covers:
    /// recovery (that snapshot, then the events after it) needs none of them,
    /// and a long run's log stays bounded. The newest event is always kept,
    /// so that seqs go on from it. A `through` past the newest snapshot is
    /// refused with [`StoreError::CompactAhead`]. Returns how many events were
    /// forgotten; [`Store::read_events`] then starts after them.
    fn compact(&mut self, through: u64) -> Result<u64, StoreError>;

    /// Appends job log records in one transaction. Each gets a store-assigned seq that increases
    /// across the whole store (not per job) and is never reused, even after pruning, so a reader
    /// can follow a job with `read_logs(job, last_seen_seq, …)`.
    fn append_logs(&mut self, records: &[LogRecord]) -> Result<(), StoreError>;

    /// Log records of `job` with seq greater than `after_seq`, in seq order, at most `limit`.
    fn read_logs(&self, job: JobId, after_seq: u64, limit: usize) -> Result<Vec<StoredLog>, StoreError>;

    /// Deletes the oldest log records of `job` until at most `keep_bytes` bytes of `data` remain
    /// (counted as UTF-8 bytes) and returns the number of bytes deleted.
    ///
    /// Records are deleted whole, so what remains is the longest run of newest records that fits
    /// the budget; a single newest record larger than `keep_bytes` is deleted too.
    fn prune_logs(&mut self, job: JobId, keep_bytes: u64) -> Result<u64, StoreError>;
}

/// Which output stream of a job a log record came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    Stdout,
    Stderr,
}

impl LogStream {
    /// The name stored in the database and shown to users.
    pub fn as_str(self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
        }
    }

    /// The inverse of [`LogStream::as_str`]; `None` for any other name.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "stdout" => Some(LogStream::Stdout),
            "stderr" => Some(LogStream::Stderr),
            _ => None,
        }
    }
}

/// One chunk of a job's output, as handed to [`Store::append_logs`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRecord {
    pub job: JobId,
    /// The lease the output was produced under: a job that is preempted and placed again keeps
    /// its id but gets a new lease, and users want to tell the attempts apart.
    pub lease: LeaseId,
    /// The rank of the process within the job's gang.
    pub rank: u32,
    pub stream: LogStream,
    pub data: String,
}

/// A log record as stored, with its store-assigned seq.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredLog {
    pub seq: u64,
    pub job: JobId,
    pub lease: LeaseId,
    pub rank: u32,
    pub stream: LogStream,
    pub data: String,
}

impl StoredLog {
    /// The record as it was appended, without its seq.
    pub fn record(&self) -> LogRecord {
        LogRecord {
            job: self.job,
            lease: self.lease,
            rank: self.rank,
            stream: self.stream,
            data: self.data.clone(),
        }
    }
}

/// Where [`open_store`] should go, parsed from its argument.
#[derive(Debug, PartialEq, Eq)]
enum Location<'a> {
    SqliteFile(&'a Path),
    SqliteMemory,
}

/// Opens the store named by `url_or_path`:
///
/// - `sqlite://PATH`, `sqlite:PATH` or a plain file path: a SQLite file, created if missing
///   (`sqlite:///abs/file.db` is an absolute path, `sqlite://data/agora.db` a relative one);
/// - `:memory:` or `sqlite::memory:`: a throwaway in-memory SQLite store;
/// - `postgres://…` / `postgresql://…`: not supported yet, refused with
///   [`StoreError::UnsupportedBackend`], as is any other `scheme://`.
pub fn open_store(url_or_path: &str) -> Result<Box<dyn Store>, StoreError> {
    match parse_location(url_or_path)? {
        Location::SqliteFile(path) => Ok(Box::new(SqliteStore::open(path)?)),
        Location::SqliteMemory => Ok(Box::new(SqliteStore::open_in_memory()?)),
    }
}

fn parse_location(url_or_path: &str) -> Result<Location<'_>, StoreError> {
    let invalid = |reason: &str| StoreError::InvalidLocation {
        location: url_or_path.to_owned(),
        reason: reason.to_owned(),
    };
    if url_or_path.is_empty() {
        return Err(invalid("empty store location"));
    }
    if url_or_path == ":memory:" || url_or_path == "sqlite::memory:" {
        return Ok(Location::SqliteMemory);
    }
    let sqlite_path = url_or_path
        .strip_prefix("sqlite://")
        .or_else(|| url_or_path.strip_prefix("sqlite:"));
    if let Some(path) = sqlite_path {
        if path.is_empty() {
            return Err(invalid("the sqlite url names no file"));
        }
        // sqlx-style options such as `?mode=rwc` would otherwise silently become part of the
        // file name.
        if path.contains('?') {
            return Err(invalid("query parameters are not supported in a sqlite url"));
        }
        return Ok(Location::SqliteFile(Path::new(path)));
    }
    if let Some((scheme, _)) = url_or_path.split_once("://") {
        return Err(StoreError::UnsupportedBackend {
            scheme: scheme.to_owned(),
        });
    }
    Ok(Location::SqliteFile(Path::new(url_or_path)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_to_the_expected_backend() {
        let file = |p: &'static str| Some(Location::SqliteFile(Path::new(p)));
        assert_eq!(parse_location("agora.db").ok(), file("agora.db"));
        assert_eq!(parse_location("/var/lib/agora.db").ok(), file("/var/lib/agora.db"));
        assert_eq!(parse_location("sqlite://data/agora.db").ok(), file("data/agora.db"));
        assert_eq!(parse_location("sqlite:///abs/agora.db").ok(), file("/abs/agora.db"));
        assert_eq!(parse_location("sqlite:agora.db").ok(), file("agora.db"));
        assert_eq!(parse_location(":memory:").ok(), Some(Location::SqliteMemory));
        assert_eq!(parse_location("sqlite::memory:").ok(), Some(Location::SqliteMemory));
    }

    #[test]
    fn postgres_is_refused_as_unsupported_backend() {
        for url in ["postgres://u:p@127.0.0.1:5432/agora", "postgresql://localhost/agora"] {
            let err = open_store(url).err().expect("postgres must be refused for now");
            assert!(
                matches!(&err, StoreError::UnsupportedBackend { scheme } if url.starts_with(scheme.as_str())),
                "{err:?}"
            );
            assert!(err.to_string().contains("unsupported store backend"), "{err}");
        }
    }

    #[test]
    fn malformed_locations_are_refused() {
        for bad in ["", "sqlite://", "sqlite:", "sqlite://agora.db?mode=rwc"] {
            assert!(
                matches!(parse_location(bad), Err(StoreError::InvalidLocation { .. })),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn log_stream_names_round_trip() {
        for stream in [LogStream::Stdout, LogStream::Stderr] {
            assert_eq!(LogStream::from_name(stream.as_str()), Some(stream));
        }
        assert_eq!(LogStream::from_name("STDOUT"), None);
    }
}
