//! The worker registry: which workers are alive, stored in ATLAS as one JSON
//! [`WorkerRecord`] per worker under `worker:{owner}/{id}` (`helios_core::keys::worker`) with the
//! record's own time-to-live. A worker renews its record every few seconds; one that dies
//! stops renewing and its record expires (its jobs come back when their leases do: the
//! registry is for seeing workers, never for fencing them).
//!
//! Owns the `worker:*` keys (the only writer). Ownership: a record names its `owner` (the
//! user who registered it, `None` for an in-process worker), and worker ids are scoped by
//! owner: the key is `worker:{owner}/{id}` (`worker:/{id}` without an owner; owners hold
//! no `'/'`), so two owners' workers of the same id are two records. A stranger can
//! neither replace nor remove another's worker, nor learn that an id is in use: whatever
//! id they pick is free in their own scope.
//!
//! Bounds: at most [`WORKER_PER_OWNER_MAX`] live records per owner and
//! [`WORKER_COUNT_MAX`] in all ([`QueueError::WorkerLimit`]); renewing a live record is
//! never refused. Writes are serialized by the registry (count, then write), so
//! concurrent registrations cannot overshoot a bound. Each write is one ATLAS write.
//!
//! Time: `heartbeat_at_ms` comes from the injected clock (the queue's); the expiry is a
//! relative TTL handed to ATLAS, so it runs on the store's clock.

use crate::error::{QueueError, Result};
use crate::job::{validate_id, validate_owner, validate_queue_name};
use crate::limits::{
    WORKER_COUNT_MAX, WORKER_HOST_SIZE_MAX, WORKER_PER_OWNER_MAX, WORKER_QUEUES_MAX,
    WORKER_TTL_MS_MAX, WORKER_TTL_MS_MIN, WORKER_VERSION_SIZE_MAX,
};
use helios_atlas::{Atlas, Expiry, SetOptions};
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

/// The key prefix of `owner`'s workers: `worker:{owner}/` (`worker:/` for none).
fn scope_of(owner: Option<&str>) -> Result<String> {
    keys::worker_scope(owner).map_err(|e| QueueError::Invalid {
        field: "owner",
        reason: e.to_string(),
    })
}

/// The key of `owner`'s worker `id`: `worker:{owner}/{id}`.
fn key_of(owner: Option<&str>, id: &str) -> Result<String> {
    if let Some(o) = owner {
        validate_owner(o)?;
    }
    validate_id("id", id)?;
    keys::owned_worker(owner, id).map_err(|e| QueueError::Invalid {
        field: "id",
        reason: e.to_string(),
    })
}

/// Reads the record stored under `key`; a value that is not one, or not the one the key
/// names (its owner's scope and id), is [`QueueError::CorruptRecord`] naming the key.
fn decode(key: &str, value: &[u8]) -> Result<WorkerRecord> {
    let corrupt = |reason: String| QueueError::CorruptRecord {
        key: key.to_owned(),
        reason,
    };
    let r: WorkerRecord = serde_json::from_slice(value).map_err(|e| corrupt(e.to_string()))?;
    let expected = keys::owned_worker(r.owner.as_deref(), &r.id);
    if expected.as_deref().ok() != Some(key) {
        return Err(corrupt(format!(
            "holds the record of worker {:?} of owner {:?}",
            r.id, r.owner
        )));
    }
    Ok(r)
}

/// The worker registry over an ATLAS store. Cheap to clone the parts of; `Send + Sync`.
pub struct Registry {
    atlas: Atlas,
    clock: Arc<dyn Clock>,
    /// Held from counting to writing a new record, so no two registrations overshoot a
    /// bound together.
    writes: parking_lot::Mutex<()>,
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
        Self {
            atlas,
            clock,
            writes: parking_lot::Mutex::new(()),
        }
    }

    /// Registers or renews `record` (its `heartbeat_at_ms` set from the clock) in its
    /// owner's scope, to expire `ttl_ms` from now unless renewed. A new record past
    /// [`WORKER_PER_OWNER_MAX`] of its owner or [`WORKER_COUNT_MAX`] in all is
    /// [`QueueError::WorkerLimit`].
    pub fn put(&self, record: WorkerRecord) -> Result<()> {
        self.put_stored(record).map(|_| ())
    }

    /// [`Registry::put`], returning the record as stored (with its `heartbeat_at_ms`).
    pub fn put_stored(&self, mut record: WorkerRecord) -> Result<WorkerRecord> {
        record.validate()?;
        record.heartbeat_at_ms = self.clock.now_ms();
        let key = key_of(record.owner.as_deref(), &record.id)?;
        let value = serde_json::to_vec(&record).map_err(|e| QueueError::CorruptRecord {
            key: key.clone(),
            reason: format!("cannot encode: {e}"),
        })?;
        let _w = self.writes.lock();
        if !self.atlas.exists(&key) {
            let scope = scope_of(record.owner.as_deref())?;
            if self.count(&scope, WORKER_PER_OWNER_MAX)? >= WORKER_PER_OWNER_MAX {
                return Err(QueueError::WorkerLimit {
                    scope: "per owner",
                    max: WORKER_PER_OWNER_MAX,
                });
            }
            if self.count(keys::WORKER_PREFIX, WORKER_COUNT_MAX)? >= WORKER_COUNT_MAX {
                return Err(QueueError::WorkerLimit {
                    scope: "in all",
                    max: WORKER_COUNT_MAX,
                });
            }
        }
        let options = SetOptions {
            expiry: Expiry::InMs(record.ttl_ms),
            ..SetOptions::default()
        };
        self.atlas.set_with(&key, value, options)?;
        Ok(record)
    }

    /// How many live records are under `prefix`, counted up to `max`.
    fn count(&self, prefix: &str, max: usize) -> Result<usize> {
        let mut n = 0;
        let mut cursor: Option<helios_atlas::Key> = None;
        loop {
            let page = self.atlas.scan(prefix, cursor.as_deref(), SCAN_PAGE)?;
            n += page.entries.len();
            match page.next_cursor {
                Some(c) if n < max => cursor = Some(c),
                _ => return Ok(n),
            }
        }
    }

    /// The live record of `owner`'s worker `id`.
    pub fn get(&self, owner: Option<&str>, id: &str) -> Result<Option<WorkerRecord>> {
        let key = key_of(owner, id)?;
        self.atlas.get(&key).map(|v| decode(&key, &v)).transpose()
    }

    /// Every live record in (owner, id) order; with `Some(owner)`, only that owner's.
    pub fn list(&self, owner: Option<&str>) -> Result<Vec<WorkerRecord>> {
        let prefix = match owner {
            Some(o) => {
                validate_owner(o)?;
                scope_of(Some(o))?
            }
            None => keys::WORKER_PREFIX.to_owned(),
        };
        let mut out = Vec::new();
        let mut cursor: Option<helios_atlas::Key> = None;
        loop {
            let page = self.atlas.scan(&prefix, cursor.as_deref(), SCAN_PAGE)?;
            for (key, value) in &page.entries {
                // Records of the `worker:{id}` layout before ids were scoped by owner
                // expire by their TTL (at most an hour); they are not listed. Nor is a
                // key that is not text: this crate writes none.
                let Some(key) = key.as_str() else {
                    continue;
                };
                if !key[keys::WORKER_PREFIX.len()..].contains('/') {
                    continue;
                }
                out.push(decode(key, value)?);
            }
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        Ok(out)
    }

    /// Removes `owner`'s worker `id` (`None`: a worker without an owner). Returns whether
    /// one was removed.
    pub fn remove(&self, id: &str, owner: Option<&str>) -> Result<bool> {
        let key = key_of(owner, id)?;
        let _w = self.writes.lock();
        Ok(self.atlas.delete(&key)?)
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
        let (reg, atlas, clock) = setup();
        let stored = reg.put_stored(rec("w1", Some("alice"))).expect("put");
        assert_eq!(stored.heartbeat_at_ms, 1_700_000_000_000);
        assert_eq!(stored.expires_at_ms(), 1_700_000_005_000);
        assert!(
            atlas.exists("worker:alice/w1"),
            "stored in its owner's scope"
        );
        let get = || reg.get(Some("alice"), "w1").expect("get");
        assert_eq!(get(), Some(stored.clone()));
        clock.advance_ms(4_999);
        assert!(get().is_some(), "alive within its TTL");
        // A renewal moves the expiry on.
        reg.put(rec("w1", Some("alice"))).expect("renew");
        clock.advance_ms(4_999);
        assert!(get().is_some(), "renewed");
        clock.advance_ms(1);
        assert_eq!(get(), None, "gone after its TTL");
        assert!(reg.list(None).expect("list").is_empty());
    }

    /// Shows worker ids are scoped by owner: a stranger's put of the same id is their own
    /// record (no takeover, and nothing tells them the id was in use), and remove reaches
    /// one's own only.
    #[test]
    fn owners_keep_their_workers() {
        let (reg, _, _) = setup();
        reg.put(rec("w1", Some("alice"))).expect("put");
        reg.put(rec("w2", Some("bob"))).expect("put");
        reg.put(rec("w3", None)).expect("put");
        let mut bobs = rec("w1", Some("bob"));
        bobs.host = "bobs-box".to_owned();
        reg.put(bobs).expect("bob's own w1");
        reg.put(rec("w1", None)).expect("an ownerless w1");
        assert_eq!(
            reg.get(Some("alice"), "w1")
                .expect("get")
                .expect("kept")
                .host,
            "box-1"
        );
        assert_eq!(
            reg.get(Some("bob"), "w1").expect("get").expect("his").host,
            "bobs-box"
        );
        assert!(reg.get(Some("carol"), "w1").expect("get").is_none());
        let ids = |owner| -> Vec<(Option<String>, String)> {
            reg.list(owner)
                .expect("list")
                .into_iter()
                .map(|r| (r.owner, r.id))
                .collect()
        };
        let o = |s: &str| Some(s.to_owned());
        assert_eq!(
            ids(None),
            [
                (None, "w1".to_owned()),
                (None, "w3".to_owned()),
                (o("alice"), "w1".to_owned()),
                (o("bob"), "w1".to_owned()),
                (o("bob"), "w2".to_owned()),
            ]
        );
        assert_eq!(ids(Some("alice")), [(o("alice"), "w1".to_owned())]);
        assert_eq!(ids(Some("bob")).len(), 2);
        assert!(ids(Some("carol")).is_empty());
        assert!(!reg.remove("w2", Some("alice")).expect("not hers"));
        assert!(reg.remove("w1", Some("alice")).expect("remove"));
        assert!(!reg.remove("w1", Some("alice")).expect("gone"));
        assert!(
            reg.get(Some("bob"), "w1").expect("get").is_some(),
            "bob's stays"
        );
        assert!(reg.remove("w3", None).expect("remove ownerless"));
    }

    /// Shows the per-owner bound refuses a new record but never a renewal, and frees up
    /// as records expire.
    #[test]
    fn an_owner_holds_a_bounded_number_of_workers() {
        let (reg, _, clock) = setup();
        for i in 0..WORKER_PER_OWNER_MAX {
            reg.put(rec(&format!("w{i}"), Some("alice"))).expect("put");
        }
        let e = reg
            .put(rec("one-more", Some("alice")))
            .expect_err("bounded");
        assert!(
            matches!(e, QueueError::WorkerLimit { scope: "per owner", max } if max == WORKER_PER_OWNER_MAX),
            "{e}"
        );
        reg.put(rec("w0", Some("alice")))
            .expect("a renewal is never refused");
        reg.put(rec("w0", Some("bob")))
            .expect("another owner is not bounded by hers");
        clock.advance_ms(5_000);
        reg.put(rec("one-more", Some("alice")))
            .expect("free again after the TTL");
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

    /// Shows a record of the layout before ids were scoped by owner (`worker:{id}`) is not
    /// listed (it expires by its TTL) and does not fail the listing.
    #[test]
    fn records_of_the_old_layout_are_skipped() {
        let (reg, atlas, _) = setup();
        let old = serde_json::to_vec(&rec("w1", Some("alice"))).expect("json");
        atlas.set("worker:w1", old).expect("set");
        reg.put(rec("w2", Some("alice"))).expect("put");
        let ids: Vec<String> = reg
            .list(None)
            .expect("list")
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(ids, ["w2"]);
    }

    #[test]
    fn a_corrupt_record_is_an_error_naming_its_key() {
        let (reg, atlas, _) = setup();
        reg.put(rec("ok", None)).expect("put");
        let key = keys::worker("alice/bad").expect("key");
        atlas.set(&key, "not json").expect("set");
        let named = |e: QueueError| match e {
            QueueError::CorruptRecord { key, .. } => key,
            other => panic!("{other:?}"),
        };
        let get = || reg.get(Some("alice"), "bad");
        assert_eq!(named(get().expect_err("corrupt")), "worker:alice/bad");
        assert_eq!(
            named(reg.list(None).expect_err("corrupt")),
            "worker:alice/bad"
        );
        // A renewal replaces it.
        reg.put(rec("bad", Some("alice"))).expect("put");
        assert!(get().expect("get").is_some());
        // A record stored under another worker's key, or another owner's.
        for other in [rec("elsewhere", Some("alice")), rec("bad", Some("bob"))] {
            atlas
                .set(&key, serde_json::to_vec(&other).expect("json"))
                .expect("set");
            let e = get().expect_err("misplaced");
            assert!(e.to_string().contains("worker:alice/bad"), "{e}");
        }
    }
}
