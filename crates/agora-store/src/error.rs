//! The one error type of the store.
//!
//! Every operation of [`crate::Store`] shares the same failure modes (the disk, the database,
//! what was read back), so there is one enum for all of them rather than one per operation.
//! The store has no business aborts: a refused request here is either a caller bug reported with
//! typed fields ([`StoreError::SnapshotAhead`], [`StoreError::OutOfRange`]) or a storage failure.

use std::path::PathBuf;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The location given to `open_store` is malformed.
    #[error("invalid store location {location:?}: {reason}")]
    InvalidLocation { location: String, reason: String },

    /// The location names a backend this build cannot open.
    #[error("unsupported store backend {scheme:?}: this build supports sqlite files only")]
    UnsupportedBackend { scheme: String },

    /// The file or directory could not be opened or created.
    #[error("cannot open store at {}: {reason}", path.display())]
    Open { path: PathBuf, reason: String },

    /// The database was written by a newer agora whose schema this build does not know.
    #[error("store schema version {found} is newer than the newest this build knows ({supported}); upgrade agora")]
    NewerSchema { found: i64, supported: i64 },

    /// The database holds tables but no agora schema: opening it would mix our tables into
    /// someone else's data.
    #[error("database is not an agora store (it has tables but no agora schema version)")]
    NotAnAgoraStore,

    /// A snapshot was offered for an event that has not been appended.
    #[error("snapshot at seq {seq} is ahead of the last event {last_seq}")]
    SnapshotAhead { seq: u64, last_seq: u64 },

    /// Compaction was asked to forget events that no snapshot covers.
    #[error("cannot forget events through seq {through}: the newest snapshot is at {snapshot}")]
    CompactAhead { through: u64, snapshot: u64 },

    /// A seq or id does not fit the signed 64-bit integers the backends store.
    #[error("{what} {value} does not fit a signed 64-bit integer")]
    OutOfRange { what: &'static str, value: u64 },

    /// What was read back breaks the store's invariants or the database reports corruption.
    #[error("store is corrupt: {0}")]
    Corrupt(String),

    /// The disk or file system failed: full, read-only, permission denied, I/O error.
    #[error("storage io error: {0}")]
    Io(String),

    /// Another process holds the database lock longer than the busy timeout.
    #[error("store is busy: {0}")]
    Busy(String),

    /// Any other failure reported by the backend.
    #[error("storage backend error: {0}")]
    Backend(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode;
        match &err {
            rusqlite::Error::SqliteFailure(failure, _) => match failure.code {
                ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase => StoreError::Corrupt(err.to_string()),
                ErrorCode::DiskFull
                | ErrorCode::SystemIoFailure
                | ErrorCode::CannotOpen
                | ErrorCode::ReadOnly
                | ErrorCode::PermissionDenied => StoreError::Io(err.to_string()),
                ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => StoreError::Busy(err.to_string()),
                _ => StoreError::Backend(err.to_string()),
            },
            // A stored value of the wrong type or range means the file no longer matches the
            // schema we wrote.
            rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::IntegralValueOutOfRange(..) => StoreError::Corrupt(err.to_string()),
            _ => StoreError::Backend(err.to_string()),
        }
    }
}
