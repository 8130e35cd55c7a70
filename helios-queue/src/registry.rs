//! The worker registry: which workers are alive, stored in ATLAS as one JSON
//! [`WorkerRecord`] per worker under `worker:{id}` (`helios_core::keys::worker`) with the
//! record's own time-to-live. A worker renews its record every few seconds; one that dies
//! stops renewing and its record expires (its jobs come back when their leases do: the
//! registry is for seeing workers, never for fencing them).
//!
//! Owns the `worker:*` keys (the only writer). Ownership: a record names its `owner` (the
//! user who registered it, `None` for an in-process worker); a live record is replaced or
//! removed only by its owner. To anyone else it does not exist
//! ([`QueueError::WorkerNotFound`], the gateway's 404): a stranger learns nothing of it and
//! cannot take its id over. Each check-and-write is one ATLAS transaction.
//!
//! Time: `heartbeat_at_ms` comes from the injected clock (the queue's); the expiry is a
//! relative TTL handed to ATLAS, so it runs on the store's clock.

use crate::error::{QueueError, Result};
use crate::job::{validate_id, validate_owner, validate_queue_name};
use crate::limits::{
    WORKER_HOST_SIZE_MAX, WORKER_QUEUES_MAX, WORKER_TTL_MS_MAX, WORKER_TTL_MS_MIN,
    WORKER_VERSION_SIZE_MAX,
};
use helios_atlas::{Atlas, Expiry};
use helios_core::{Clock, keys};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// Keys per page when listing the registry.
const SCAN_PAGE: usize = 1_000;

/// What the registry keeps about one worker.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct WorkerRecord {
    /// The worker's id (chosen by the worker; [`validate_id`]).
    pub id: String,
    /// Who registered it (a user id), or `None` for an in-process worker.
    pub owner: Option<String>,
    /// The worker's software version.
    pub version: String,
    /// The queues it works.
    pub queues: Vec<String>,
    /// Jobs it holds now.
    pub in_flight: u64,
    /// When it started, ms since the Unix epoch (as the worker tells it).
    pub started_at_ms: u64,
    /// When the record was last written, on the registry's clock (set by [`Registry::put`]).
    pub heartbeat_at_ms: u64,
    /// The host it runs on.
    pub host: String,
    /// How long the record lives without renewal, in ms.
    pub ttl_ms: u64,
}

impl WorkerRecord {
    /// When the record expires unless renewed: `heartbeat_at_ms + ttl_ms`.
    pub fn expires_at_ms(&self) -> u64 {
        self.heartbeat_at_ms.saturating_add(self.ttl_ms)
    }

    /// Checks every field, naming the first bad one.
    pub fn validate(&self) -> Result<()> {
        validate_id("id", &self.id)?;
        if let Some(o) = &self.owner {
            validate_owner(o)?;
        }
        if !(WORKER_TTL_MS_MIN..=WORKER_TTL_MS_MAX).contains(&self.ttl_ms) {
            return Err(QueueError::Invalid {
                field: "ttl_ms",
                reason: format!(
                    "{} is outside {WORKER_TTL_MS_MIN}..={WORKER_TTL_MS_MAX}",
                    self.ttl_ms
                ),
            });
        }
        text("host", &self.host, WORKER_HOST_SIZE_MAX)?;
        text("version", &self.version, WORKER_VERSION_SIZE_MAX)?;
        if self.queues.len() > WORKER_QUEUES_MAX {
            return Err(QueueError::Invalid {
                field: "queues",
                reason: format!("{} queues; at most {WORKER_QUEUES_MAX}", self.queues.len()),
            });
        }
        for q in &self.queues {
            validate_queue_name(q)?;
        }
        Ok(())
    }
}

/// A short text field: at most `max` bytes, no control characters.
fn text(field: &'static str, value: &str, max: usize) -> Result<()> {
    if value.len() > max || value.chars().any(char::is_control) {
        return Err(QueueError::Invalid {
            field,
            reason: format!("must be at most {max} bytes without control characters"),
        });
    }
    Ok(())
}

/// The key of worker `id`.
fn key_of(id: &str) -> Result<String> {
    keys::worker(id).map_err(|e| QueueError::Invalid {
        field: "id",
        reason: e.to_string(),
    })
}

/// Reads the record stored under `key`; a value that is not one (or is another worker's)
/// is [`QueueError::CorruptRecord`] naming the key.
fn decode(key: &str, id: &str, value: &[u8]) -> Result<WorkerRecord> {
    let r: WorkerRecord = serde_json::from_slice(value).map_err(|e| QueueError::CorruptRecord {
        key: key.to_owned(),
        reason: e.to_string(),
    })?;
    if r.id != id {
        return Err(QueueError::CorruptRecord {
            key: key.to_owned(),
            reason: format!("holds the record of worker {:?}", r.id),
        });
    }
    Ok(r)
}

/// The worker registry over an ATLAS store. Cheap to clone the parts of; `Send + Sync`.
pub struct Registry {
    atlas: Atlas,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("atlas", &self.atlas)
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// The registry stored in `atlas`, stamping heartbeats from `clock`.
    pub fn new(atlas: Atlas, clock: Arc<dyn Clock>) -> Self {
        Self { atlas, clock }
    }

    /// Registers or renews `record` (its `heartbeat_at_ms` set from the clock), to expire
    /// `ttl_ms` from now unless renewed. A live record of the same id with another owner is
    /// [`QueueError::WorkerNotFound`], and stays as it was.
    pub fn put(&self, record: WorkerRecord) -> Result<()> {
        self.put_stored(record).map(|_| ())
    }

    /// [`Registry::put`], returning the record as stored (with its `heartbeat_at_ms`).
    pub fn put_stored(&self, mut record: WorkerRecord) -> Result<WorkerRecord> {
        record.validate()?;
        record.heartbeat_at_ms = self.clock.now_ms();
        let key = key_of(&record.id)?;
        let value = serde_json::to_vec(&record).map_err(|e| QueueError::CorruptRecord {
            key: key.clone(),
            reason: format!("cannot encode: {e}"),
        })?;
        let (id, owner, ttl_ms) = (record.id.clone(), record.owner.clone(), record.ttl_ms);
        self.atlas.transact(move |tx| {
            if let Some(old) = tx.get(&key) {
                let old = decode(&key, &id, &old)?;
                if old.owner != owner {
                    return Err(QueueError::WorkerNotFound { id });
                }
            }
            tx.set(&key, value, Expiry::InMs(ttl_ms))?;
            Ok::<(), QueueError>(())
        })?;
        Ok(record)
    }

    /// The live record of worker `id`, whoever owns it (callers filter by owner).
    pub fn get(&self, id: &str) -> Result<Option<WorkerRecord>> {
        let key = key_of(id)?;
        self.atlas
            .get(&key)
            .map(|v| decode(&key, id, &v))
            .transpose()
    }

    /// Every live record, in id order; with `Some(owner)`, only that owner's.
    pub fn list(&self, owner: Option<&str>) -> Result<Vec<WorkerRecord>> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = self
                .atlas
                .scan(keys::WORKER_PREFIX, cursor.as_deref(), SCAN_PAGE)?;
            for (key, value) in &page.entries {
                let id = match keys::parse(key) {
                    Ok(keys::Key::Worker(id)) => id,
                    Ok(_) | Err(_) => {
                        return Err(QueueError::CorruptRecord {
                            key: key.clone(),
                            reason: "not a worker key".to_owned(),
                        });
                    }
                };
                let r = decode(key, id, value)?;
                if owner.is_none_or(|o| r.owner.as_deref() == Some(o)) {
                    out.push(r);
                }
            }
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        Ok(out)
    }

    /// Removes worker `id` if its record is `owner`'s (`None`: a record without an owner).
    /// Returns whether one was removed: `false` for a missing worker and for someone
    /// else's alike.
    pub fn remove(&self, id: &str, owner: Option<&str>) -> Result<bool> {
        let key = key_of(id)?;
        let (id, owner) = (id.to_owned(), owner.map(str::to_owned));
        self.atlas.transact(move |tx| {
            let Some(old) = tx.get(&key) else {
                return Ok(false);
            };
            let old = decode(&key, &id, &old)?;
            if old.owner != owner {
                return Ok(false);
            }
            tx.delete(&key)?;
            Ok::<bool, QueueError>(true)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use helios_atlas::storage::MemStorage;
    use helios_atlas::{FsyncPolicy, Options};
    use helios_core::ManualClock;
    use std::path::PathBuf;

    fn setup() -> (Registry, Atlas, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(1_700_000_000_000));
        let atlas = Atlas::open(
            PathBuf::from("/r"),
            Options {
                fsync: FsyncPolicy::Always,
                storage: Arc::new(MemStorage::new()),
                clock: clock.clone(),
                maintenance_interval_ms: None,
                ..Options::default()
            },
        )
        .expect("open atlas");
        (Registry::new(atlas.clone(), clock.clone()), atlas, clock)
    }

    fn rec(id: &str, owner: Option<&str>) -> WorkerRecord {
        WorkerRecord {
            id: id.to_owned(),
            owner: owner.map(str::to_owned),
            version: "0.1.0".to_owned(),
            queues: vec!["emails".to_owned()],
            in_flight: 2,
            started_at_ms: 1_600_000_000_000,
            heartbeat_at_ms: 0,
            host: "box-1".to_owned(),
            ttl_ms: 5_000,
        }
    }

    #[test]
    fn put_get_and_expiry_after_ttl() {
        let (reg, _, clock) = setup();
        let stored = reg.put_stored(rec("w1", Some("alice"))).expect("put");
        assert_eq!(stored.heartbeat_at_ms, 1_700_000_000_000);
        assert_eq!(stored.expires_at_ms(), 1_700_000_005_000);
        assert_eq!(reg.get("w1").expect("get"), Some(stored.clone()));
        clock.advance_ms(4_999);
        assert!(
            reg.get("w1").expect("get").is_some(),
            "alive within its TTL"
        );
        // A renewal moves the expiry on.
        reg.put(rec("w1", Some("alice"))).expect("renew");
        clock.advance_ms(4_999);
        assert!(reg.get("w1").expect("get").is_some(), "renewed");
        clock.advance_ms(1);
        assert_eq!(reg.get("w1").expect("get"), None, "gone after its TTL");
        assert!(reg.list(None).expect("list").is_empty());
    }

    #[test]
    fn owners_keep_their_workers() {
        let (reg, _, _) = setup();
        reg.put(rec("w1", Some("alice"))).expect("put");
        reg.put(rec("w2", Some("bob"))).expect("put");
        reg.put(rec("w3", None)).expect("put");
        // Bob cannot take alice's id over, nor remove it; she keeps it unchanged.
        let mut taken = rec("w1", Some("bob"));
        taken.host = "evil".to_owned();
        assert!(matches!(
            reg.put(taken),
            Err(QueueError::WorkerNotFound { ref id }) if id == "w1"
        ));
        assert!(matches!(
            reg.put(rec("w1", None)),
            Err(QueueError::WorkerNotFound { .. })
        ));
        assert!(!reg.remove("w1", Some("bob")).expect("remove"));
        assert!(!reg.remove("w1", None).expect("remove"));
        assert_eq!(reg.get("w1").expect("get").expect("kept").host, "box-1");
        let ids = |owner| -> Vec<String> {
            reg.list(owner)
                .expect("list")
                .into_iter()
                .map(|r| r.id)
                .collect()
        };
        assert_eq!(ids(None), ["w1", "w2", "w3"]);
        assert_eq!(ids(Some("alice")), ["w1"]);
        assert_eq!(ids(Some("bob")), ["w2"]);
        assert!(ids(Some("carol")).is_empty());
        assert!(reg.remove("w1", Some("alice")).expect("remove"));
        assert!(!reg.remove("w1", Some("alice")).expect("gone"));
        assert!(reg.remove("w3", None).expect("remove ownerless"));
        // Once gone, the id is free for anyone.
        reg.put(rec("w1", Some("bob"))).expect("put");
    }

    #[test]
    fn bad_records_are_refused_naming_the_field() {
        let (reg, _, _) = setup();
        let field = |r: WorkerRecord| match reg.put(r) {
            Err(QueueError::Invalid { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        let mut r = rec("w:1", None);
        assert_eq!(field(r.clone()), "id");
        r = rec("", None);
        assert_eq!(field(r), "id");
        r = rec("w", None);
        r.ttl_ms = 999;
        assert_eq!(field(r.clone()), "ttl_ms");
        r.ttl_ms = 3_600_001;
        assert_eq!(field(r), "ttl_ms");
        r = rec("w", None);
        r.host = "h".repeat(256);
        assert_eq!(field(r), "host");
        r = rec("w", None);
        r.version = "v\n1".to_owned();
        assert_eq!(field(r), "version");
        r = rec("w", None);
        r.queues = vec!["bad queue".to_owned()];
        assert_eq!(field(r), "queue");
        r = rec("w", None);
        r.queues = vec!["q".to_owned(); WORKER_QUEUES_MAX + 1];
        assert_eq!(field(r), "queues");
        r = rec("w", Some("a/b"));
        assert_eq!(field(r), "owner");
        assert!(reg.list(None).expect("list").is_empty(), "nothing stored");
    }

    #[test]
    fn a_corrupt_record_is_an_error_naming_its_key() {
        let (reg, atlas, _) = setup();
        reg.put(rec("ok", None)).expect("put");
        let key = keys::worker("bad").expect("key");
        atlas.set(&key, "not json").expect("set");
        let named = |e: QueueError| match e {
            QueueError::CorruptRecord { key, .. } => key,
            other => panic!("{other:?}"),
        };
        assert_eq!(named(reg.get("bad").expect_err("corrupt")), "worker:bad");
        assert_eq!(named(reg.list(None).expect_err("corrupt")), "worker:bad");
        assert_eq!(
            named(reg.put(rec("bad", None)).expect_err("corrupt")),
            "worker:bad"
        );
        // A record stored under another worker's key.
        let other = serde_json::to_vec(&rec("elsewhere", None)).expect("json");
        atlas.set(&key, other).expect("set");
        let e = reg.get("bad").expect_err("misplaced");
        assert!(e.to_string().contains("worker:bad"), "{e}");
    }
}
