//! The error type of ATLAS: one `thiserror` enum whose variants carry what a user needs to
//! act (the key, the file, the byte offset, the limit).

use std::path::PathBuf;

/// Everything that can go wrong in ATLAS.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AtlasError {
    /// The key is empty or longer than [`crate::limits::KEY_SIZE_MAX`].
    #[error("key of {size} bytes is not allowed (keys are 1..={size_max} bytes)")]
    KeyInvalid {
        /// Size of the key that was passed.
        size: u64,
        /// The largest key allowed.
        size_max: u64,
    },
    /// The value is longer than [`crate::limits::VALUE_SIZE_MAX`].
    #[error("value for key {key:?} is {size} bytes; the limit is {size_max}")]
    ValueTooLarge {
        /// The key being written.
        key: crate::Key,
        /// Size of the value.
        size: u64,
        /// The limit.
        size_max: u64,
    },
    /// A batch holds more operations than [`crate::limits::BATCH_OPS_COUNT_MAX`], or its
    /// encoding is larger than a record may be.
    #[error("batch too large: {detail}")]
    BatchTooLarge {
        /// Which bound was exceeded.
        detail: String,
    },
    /// A caller-supplied argument is out of range (a scan limit of 0, a TTL that overflows).
    #[error("invalid argument {name}: {reason}")]
    InvalidArgument {
        /// The argument's name.
        name: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// `incr_by` on a value that is not a decimal 64-bit signed integer.
    #[error("value of key {key:?} is not an integer")]
    NotAnInteger {
        /// The key.
        key: crate::Key,
    },
    /// `incr_by` would overflow an `i64`.
    #[error("increment of key {key:?} would overflow")]
    IncrOverflow {
        /// The key.
        key: crate::Key,
    },
    /// A batch precondition did not hold; nothing in the batch was applied.
    #[error("batch precondition failed on key {key:?}; nothing was applied")]
    PreconditionFailed {
        /// The first key whose precondition failed.
        key: crate::Key,
    },
    /// The write would grow memory past the configured limit (Redis's `noeviction`).
    #[error(
        "memory limit reached: {used_size} of {limit_size} bytes in use; writes that grow memory are refused (reads and deletes go on)"
    )]
    MemoryLimit {
        /// Estimated bytes in use.
        used_size: u64,
        /// The configured limit.
        limit_size: u64,
    },
    /// An earlier write or fsync failed; the store refuses writes until reopened.
    #[error("store refuses writes after an I/O error ({cause}); reopen it")]
    PreviousIo {
        /// The first error that stopped the store.
        cause: String,
    },
    /// The write or fsync of this request failed: it was not acknowledged and the store is
    /// now fail-stopped.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The closure of a [`crate::Atlas::transact`] returned an error: nothing was written.
    #[error("transaction aborted by its closure; nothing was written")]
    TxAborted,
    /// The store was closed.
    #[error("store is closed")]
    Closed,
    /// Another process or handle holds the data directory's lock.
    #[error(
        "data directory {} is in use{}: is another server (or an offline `helios` command) running on it? Stop it first, or choose another directory",
        dir.display(),
        holder_text(*holder_pid)
    )]
    Locked {
        /// The data directory.
        dir: PathBuf,
        /// The process id the lock holder wrote into the `LOCK` file, when known.
        holder_pid: Option<u32>,
    },
    /// The data directory's path names something that is not a directory.
    #[error("data directory {}: not a directory", dir.display())]
    NotADirectory {
        /// The path given.
        dir: PathBuf,
    },
    /// A file in the data directory is corrupt before its tail (or a torn tail was found
    /// while `aof_load_truncated` is off). Refuses to open until `repair`.
    #[error("{file}: corrupt at byte {offset}: {reason}; run `helios aof check` / `repair`")]
    Corrupt {
        /// The file.
        file: PathBuf,
        /// Byte offset of the first bad byte (the start of the bad record).
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A file carries a format version this build does not read.
    #[error("{file}: unsupported format version {found} (this build reads {supported})")]
    UnsupportedVersion {
        /// The file.
        file: PathBuf,
        /// The version found.
        found: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// A change-feed subscriber asked for records that compaction already removed.
    #[error(
        "change feed: sequence {requested} is no longer in the AOF (oldest kept is {oldest_seq}); resync from a snapshot of the keyspace"
    )]
    FeedCompacted {
        /// The sequence number asked for.
        requested: u64,
        /// The oldest sequence number still available.
        oldest_seq: u64,
    },
    /// A backup directory cannot be written to, or is not a complete backup.
    #[error("backup {}: {reason}", dir.display())]
    BackupInvalid {
        /// The directory.
        dir: PathBuf,
        /// Why.
        reason: String,
    },
    /// Options failed validation.
    #[error("invalid option {name}: {reason}")]
    InvalidOption {
        /// The option.
        name: &'static str,
        /// Why.
        reason: String,
    },
}

impl AtlasError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        AtlasError::Io {
            path: path.into(),
            source,
        }
    }

    /// The error for a failed [`crate::storage::Storage::lock_dir`] on `dir`: `Locked`
    /// (naming the holder's pid from the `LOCK` file when it wrote one) for a held lock,
    /// `Io` otherwise.
    pub(crate) fn lock_failed(
        storage: &dyn crate::storage::Storage,
        dir: &std::path::Path,
        e: std::io::Error,
    ) -> Self {
        if e.kind() != std::io::ErrorKind::WouldBlock {
            return AtlasError::io(dir, e);
        }
        let holder_pid = storage
            .read(&dir.join(crate::storage::LOCK_FILE_NAME))
            .ok()
            .and_then(|b| std::str::from_utf8(&b).ok()?.trim().parse().ok());
        AtlasError::Locked {
            dir: dir.to_path_buf(),
            holder_pid,
        }
    }
}

/// Result alias for ATLAS.
pub type Result<T, E = AtlasError> = std::result::Result<T, E>;

fn holder_text(pid: Option<u32>) -> String {
    match pid {
        Some(pid) => format!(" by process {pid}"),
        None => " by another opener".to_owned(),
    }
}
