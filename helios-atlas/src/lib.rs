//! ATLAS: an embeddable in-memory key-value store made durable by an append-only file
//! (AOF) and snapshots, with TTLs, atomic batches, a change feed and crash recovery.
//!
//! ```no_run
//! use helios_atlas::{Atlas, Options, FsyncPolicy, SetOptions, Expiry};
//! let db = Atlas::open("data", Options { fsync: FsyncPolicy::Always, ..Options::default() })?;
//! db.set("kv:greeting", "hello")?;
//! db.set_with("kv:session", "abc", SetOptions { expiry: Expiry::InMs(60_000), ..Default::default() })?;
//! assert_eq!(db.get("kv:greeting").as_deref(), Some(&b"hello"[..]));
//! db.close()?;
//! # Ok::<(), helios_atlas::AtlasError>(())
//! ```
//!
//! Map of the crate (each module's docs state its invariants):
//! - [`Atlas`] (`db`): the handle: reads, the group-commit write pipeline, snapshots,
//!   compaction, maintenance, close.
//! - `keyspace`: the pure state machine; `command`: how requests become logged effects
//!   ([`Op`]); `op`: the effects and their JSON form.
//! - `tx`: [`Tx`], the read-modify-write transaction of [`Atlas::transact`] (one AOF
//!   record, planned in the commit pipeline like any write).
//! - `aof`, `snapshot`, `recovery`: the on-disk formats, and how a directory is opened,
//!   checked ([`check`]) and repaired ([`repair`]).
//! - [`storage`]: the one trait all file I/O goes through, with the real file system and
//!   a fault-injecting in-memory disk.
//! - `feed`: the change feed ([`Subscription`]).
//! - `backup`: online backups ([`Atlas::backup`]), [`verify_backup`], [`restore_backup`].
//! - [`limits`]: every bound, with its reason.
//!
//! Durability contracts are argued case by case in `docs/durability.md`.

pub mod aof;
mod backup;
mod command;
mod db;
mod error;
mod feed;
#[doc(hidden)]
pub mod fuzzing;
mod histogram;
mod key;
mod keyspace;
pub mod limits;
mod op;
mod options;
mod recovery;
pub mod snapshot;
pub mod storage;
mod tx;
mod value;

pub use backup::{
    BACKUP_FORMAT, BACKUP_VERSION, BackupFile, BackupManifest, MANIFEST_NAME, restore_backup,
    verify_backup,
};
pub use command::{Expiry, Precondition, SetCondition, SetOptions, WriteBatch};
pub use db::{Atlas, KeyTtl, ScanPage, Stats};
pub use error::{AtlasError, Result};
pub use feed::{ChangeEvent, Subscription};
pub use histogram::{Histogram, SNAPSHOT_BOUNDS_MS};
pub use key::Key;
pub use keyspace::{Entry, Keyspace, SnapshotEntry};
pub use op::{Op, PatchedValue};
pub use options::{FsyncPolicy, Options};
pub use recovery::{CheckReport, FileCheck, FileStatus, RepairReport, check, repair};
pub use tx::Tx;
pub use value::{INLINE_VALUE_SIZE_MAX, copy_value};
