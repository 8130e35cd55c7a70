//! [`Options`]: how a store is opened, with safe defaults and [`Options::validate`].

use crate::error::{AtlasError, Result};
use crate::storage::{FsStorage, Storage};
use helios_core::{Clock, SystemClock};
use std::sync::Arc;

/// When the AOF is fsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FsyncPolicy {
    /// Before every acknowledgement; concurrent writers share one fsync (group commit).
    /// No acknowledged write is ever lost.
    Always,
    /// About once a second, by the maintenance thread. A power loss loses at most about
    /// the last second (a process crash loses nothing: each write reached the OS first).
    #[default]
    Everysec,
    /// Never by ATLAS between segments: the OS decides. Segment rotation, snapshots and
    /// close still fsync.
    No,
}

impl std::str::FromStr for FsyncPolicy {
    type Err = AtlasError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "always" => Ok(Self::Always),
            "everysec" => Ok(Self::Everysec),
            "no" => Ok(Self::No),
            other => Err(AtlasError::InvalidOption {
                name: "fsync",
                reason: format!("{other:?} is not one of always, everysec, no"),
            }),
        }
    }
}

/// How to open a store. `Options::default()` is safe for production use.
#[derive(Debug, Clone)]
pub struct Options {
    /// The fsync policy (default `everysec`, like Redis).
    pub fsync: FsyncPolicy,
    /// Writes that would grow the estimated memory past this are refused (`None`: no
    /// limit). Reads and deletes go on.
    pub memory_limit_size: Option<u64>,
    /// Open a store whose last AOF record is torn by cutting that record off (with a
    /// warning), like Redis's `aof-load-truncated yes` (default true). When false, such a
    /// store refuses to open until repaired.
    pub aof_load_truncated: bool,
    /// Start a new AOF segment once the current one grows past this many bytes, and take
    /// a snapshot then if the log since the last snapshot is also past
    /// `auto_snapshot_growth_percent` of that snapshot's size (default 64 MiB; `None`:
    /// no automatic snapshots or rotations, only on request).
    pub auto_snapshot_aof_size: Option<u64>,
    /// How much log, in percent of the last snapshot's size, an automatic snapshot waits
    /// for (default 100, as Redis's `auto-aof-rewrite-percentage`): a snapshot rewrites the
    /// whole state, so with a state of 1 GiB one every 64 MiB of log would write 16 bytes
    /// for each byte logged; waiting for the log to match the snapshot bounds that at
    /// about one, and recovery replays at most about the state's size of log. 0: a
    /// snapshot at every `auto_snapshot_aof_size` of log, whatever the state's size.
    pub auto_snapshot_growth_percent: u64,
    /// Snapshots kept on disk (default 2, at least 1). AOF segments are kept back to the
    /// oldest kept snapshot, so a bad newest snapshot can be skipped and the change feed
    /// can resume from that far back.
    pub snapshots_retained_count: usize,
    /// Recent records kept in memory for change-feed subscribers (default 4096); older
    /// ones are read back from the AOF.
    pub feed_buffer_count: usize,
    /// Bytes of recent records kept in memory for change-feed subscribers (default
    /// 64 MiB; keys and values, estimated). Under `memory_limit_size` the ring also gives
    /// way to the keyspace: keys plus ring stay under the limit.
    pub feed_buffer_size: u64,
    /// Period of the maintenance thread (everysec fsync, active expiry, auto snapshots),
    /// default 100 ms. `None` runs no thread: the embedder calls `tick`, `sync` and
    /// `snapshot` itself (tests and simulations do).
    pub maintenance_interval_ms: Option<u64>,
    /// Under `everysec` (default 2000 ms, at least 1000): no write is acknowledged while
    /// a write older than this may be unsynced (the durability horizon, see
    /// `Stats::fsync_last_ok_age_ms`, lies further back: a slow disk, a stalled
    /// maintenance thread); such a writer fsyncs first, waiting behind an fsync in
    /// flight, as Redis's writes wait when its background fsync is over 2 s behind.
    /// Counted in `Stats::fsync_lag_stall_count`. Checked when a write arrives, not by a
    /// timer: writes acknowledged before a stall stay unsynced while it lasts
    /// (docs/durability.md, the `everysec` row).
    pub everysec_lag_max_ms: u64,
    /// The clock that reads "now" for TTLs (default: the system clock).
    pub clock: Arc<dyn Clock>,
    /// Where the bytes go (default: the real file system).
    pub storage: Arc<dyn Storage>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            fsync: FsyncPolicy::default(),
            memory_limit_size: None,
            aof_load_truncated: true,
            auto_snapshot_aof_size: Some(64 * 1024 * 1024),
            auto_snapshot_growth_percent: 100,
            snapshots_retained_count: 2,
            feed_buffer_count: 4096,
            feed_buffer_size: 64 << 20,
            maintenance_interval_ms: Some(100),
            everysec_lag_max_ms: 2000,
            clock: Arc::new(SystemClock),
            storage: Arc::new(FsStorage),
        }
    }
}

impl Options {
    /// Checks every option, naming the first bad one.
    pub fn validate(&self) -> Result<()> {
        if self.snapshots_retained_count == 0 {
            return Err(AtlasError::InvalidOption {
                name: "snapshots_retained_count",
                reason: "must be at least 1".to_owned(),
            });
        }
        if self.feed_buffer_count == 0 {
            return Err(AtlasError::InvalidOption {
                name: "feed_buffer_count",
                reason: "must be at least 1".to_owned(),
            });
        }
        if self.memory_limit_size == Some(0) {
            return Err(AtlasError::InvalidOption {
                name: "memory_limit_size",
                reason: "0 would refuse every write; use None for no limit".to_owned(),
            });
        }
        if self.auto_snapshot_aof_size.is_some_and(|s| s < 4096) {
            return Err(AtlasError::InvalidOption {
                name: "auto_snapshot_aof_size",
                reason: "must be at least 4096 bytes".to_owned(),
            });
        }
        if self.everysec_lag_max_ms < 1000 {
            return Err(AtlasError::InvalidOption {
                name: "everysec_lag_max_ms",
                reason: format!(
                    "{} is under 1000 (the everysec fsync runs once a second)",
                    self.everysec_lag_max_ms
                ),
            });
        }
        if let Some(ms) = self.maintenance_interval_ms
            && !(1..=1000).contains(&ms)
        {
            return Err(AtlasError::InvalidOption {
                name: "maintenance_interval_ms",
                reason: format!("{ms} is outside 1..=1000 (everysec needs at least 1 Hz)"),
            });
        }
        Ok(())
    }
}
