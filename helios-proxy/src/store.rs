//! The dynamic configuration's home in ATLAS: what the gateway's admin routes
//! (`/admin/proxy/routes`, `/admin/proxy/backends`) call. Each write is checked against
//! the whole catalog it would make, so the store only ever holds a catalog whose table
//! builds: a route names existing backends, no two routes serve the same host and
//! prefix, a backend still named by a route is not deleted ([`ProxyError::InUse`]).
//!
//! Followers (a proxy in the gateway's process, or a standalone one through the gateway's
//! change feed) read the catalog with [`ProxyStore::catalog`] and the changes after it
//! with `Atlas::subscribe(catalog::PREFIX, ..)` (see [`crate::catalog`]).
//!
//! Invariant: writes go one at a time (a mutex), each a read of the catalog then one
//! ATLAS write, so no two concurrent writes can each pass the check and together break it.
//! Writers around this type (raw ATLAS access) are not checked; followers then refuse a
//! catalog that does not build and keep their last table.

use crate::catalog::{self, Catalog, Change};
use crate::error::ProxyError;
use crate::route::{BackendSpec, RouteSpec};
use helios_atlas::{Atlas, AtlasError, Op, Subscription};
use helios_core::keys;
use parking_lot::Mutex;
use std::time::Duration;

/// Keys read per scan page.
const PAGE: usize = 1_000;

/// Errors of the store's operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The request breaks a rule of the catalog.
    #[error(transparent)]
    Proxy(#[from] ProxyError),
    /// ATLAS failed.
    #[error(transparent)]
    Atlas(#[from] AtlasError),
}

/// Whether a put created the object or replaced it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    /// It did not exist.
    Created,
    /// It replaced one with the same id.
    Replaced,
}

/// A catalog read from the store, with the stored values it had to skip.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    /// The valid routes and backends.
    pub catalog: Catalog,
    /// Values under proxy keys that are not valid specs (written around this type).
    pub skipped: Vec<ProxyError>,
}

/// The routes and backends in ATLAS. See the module docs.
#[derive(Debug)]
pub struct ProxyStore {
    atlas: Atlas,
    writes: Mutex<()>,
}

fn key_error(e: keys::KeyError) -> ProxyError {
    ProxyError::Invalid {
        field: "id",
        reason: e.to_string(),
    }
}

impl ProxyStore {
    /// The store over `atlas`.
    pub fn new(atlas: Atlas) -> Self {
        ProxyStore {
            atlas,
            writes: Mutex::new(()),
        }
    }

    /// Every route and backend stored now.
    pub fn catalog(&self) -> Result<Loaded, AtlasError> {
        load(&self.atlas)
    }

    /// Follows the catalog from record `from` on (`None`: from a snapshot now); see
    /// [`Follow`].
    pub fn follow(&self, from: Option<u64>) -> Result<Follow, AtlasError> {
        let sub = match from.map(|f| self.atlas.subscribe(catalog::PREFIX, f)) {
            Some(Ok(sub)) => Some(sub),
            Some(Err(AtlasError::FeedCompacted { .. })) | None => None,
            Some(Err(e)) => return Err(e),
        };
        Ok(Follow {
            atlas: self.atlas.clone(),
            sub,
        })
    }

    /// Creates or replaces backend `spec.id`. Refused if the catalog it makes does not
    /// build (a bad id or URL).
    pub fn put_backend(&self, spec: BackendSpec) -> Result<Put, StoreError> {
        let key = keys::proxy_backend(&spec.id).map_err(key_error)?;
        self.put(&key, &spec, |c, s| {
            c.backends.insert(s.id.clone(), s.clone())
        })
    }

    /// Deletes backend `id`; refused while a route names it.
    pub fn delete_backend(&self, id: &str) -> Result<(), StoreError> {
        let key = keys::proxy_backend(id).map_err(key_error)?;
        let _w = self.writes.lock();
        let c = self.catalog()?.catalog;
        if !c.backends.contains_key(id) {
            return Err(not_found("backend", id));
        }
        let routes = c.routes_using(id);
        if !routes.is_empty() {
            return Err(ProxyError::InUse {
                id: id.to_owned(),
                routes,
            }
            .into());
        }
        self.atlas.delete(&key)?;
        Ok(())
    }

    /// Creates or replaces route `spec.id`. Refused if the catalog it makes does not
    /// build (an unknown backend, a host and prefix another route serves, a bad policy,
    /// weight or prefix), naming the field.
    pub fn put_route(&self, spec: RouteSpec) -> Result<Put, StoreError> {
        let key = keys::proxy_route(&spec.id).map_err(key_error)?;
        self.put(&key, &spec, |c, s| c.routes.insert(s.id.clone(), s.clone()))
    }

    /// Stores `spec` under `key` if the catalog with it (`insert`, which says whether it
    /// replaced one) still builds.
    fn put<T: serde::Serialize>(
        &self,
        key: &str,
        spec: &T,
        insert: impl FnOnce(&mut Catalog, &T) -> Option<T>,
    ) -> Result<Put, StoreError> {
        let _w = self.writes.lock();
        let mut c = self.catalog()?.catalog;
        let put = put_kind(insert(&mut c, spec).is_some());
        c.table()?;
        self.atlas.set(key, catalog::encode(spec))?;
        Ok(put)
    }

    /// Deletes route `id`.
    pub fn delete_route(&self, id: &str) -> Result<(), StoreError> {
        let key = keys::proxy_route(id).map_err(key_error)?;
        let _w = self.writes.lock();
        if !self.atlas.delete(&key)? {
            return Err(not_found("route", id));
        }
        Ok(())
    }
}

/// Every route and backend in `atlas` now.
fn load(atlas: &Atlas) -> Result<Loaded, AtlasError> {
    let mut loaded = Loaded::default();
    let mut cursor: Option<helios_atlas::Key> = None;
    loop {
        let page = atlas.scan(catalog::PREFIX, cursor.as_deref(), PAGE)?;
        for (key, value) in &page.entries {
            // Specs are written under text keys; a key that is not text names none.
            let Some(key) = key.as_str() else {
                continue;
            };
            if let Err(e) = loaded.catalog.apply(Change::Set { key, value }) {
                loaded.skipped.push(e);
            }
        }
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return Ok(loaded),
        }
    }
}

/// What a follower of the stored catalog gets next.
#[derive(Debug, Clone)]
pub enum FeedEvent {
    /// The whole catalog as of some point after record `seq`: start over from it and
    /// apply every later change (replaying converges: [`crate::catalog`]).
    Snapshot {
        /// The record it follows.
        seq: u64,
        /// The routes and backends.
        loaded: Loaded,
    },
    /// Record `seq`'s changes under `proxy:`.
    Change {
        /// The record's sequence number.
        seq: u64,
        /// Its ops on proxy keys, in order.
        ops: Vec<Op>,
    },
}

/// A follower of the stored catalog: a snapshot first (when it starts without a
/// position, or its position was compacted away), then each record's changes. What the
/// gateway's change feed streams and what a proxy in the gateway's process applies.
#[derive(Debug)]
pub struct Follow {
    atlas: Atlas,
    sub: Option<Subscription>,
}

impl Follow {
    /// The next event, waiting up to `timeout` for one (`Ok(None)`: nothing yet).
    /// `Err(AtlasError::Closed)` once the store is closed.
    pub fn next(&mut self, timeout: Duration) -> Result<Option<FeedEvent>, AtlasError> {
        let Some(sub) = self.sub.as_mut() else {
            return self.snapshot().map(Some);
        };
        match sub.next_timeout(timeout) {
            Ok(Some(ev)) => Ok(Some(FeedEvent::Change {
                seq: ev.seq,
                ops: ev.changes,
            })),
            Ok(None) => Ok(None),
            Err(AtlasError::FeedCompacted { .. }) => self.snapshot().map(Some),
            Err(e) => Err(e),
        }
    }

    /// Notes the position, subscribes after it, then reads the catalog.
    fn snapshot(&mut self) -> Result<FeedEvent, AtlasError> {
        let seq = self.atlas.last_seq();
        self.sub = Some(self.atlas.subscribe(catalog::PREFIX, seq + 1)?);
        Ok(FeedEvent::Snapshot {
            seq,
            loaded: load(&self.atlas)?,
        })
    }
}

fn put_kind(replaced: bool) -> Put {
    if replaced {
        Put::Replaced
    } else {
        Put::Created
    }
}

fn not_found(kind: &'static str, id: &str) -> StoreError {
    ProxyError::NotFound {
        kind,
        id: id.to_owned(),
    }
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{backend, route};
    use helios_atlas::storage::MemStorage;
    use helios_atlas::{FsyncPolicy, Options};
    use helios_core::ManualClock;
    use std::path::PathBuf;
    use std::sync::Arc;

    fn open(disk: &MemStorage) -> Atlas {
        Atlas::open(
            PathBuf::from("/proxy"),
            Options {
                fsync: FsyncPolicy::Always,
                storage: Arc::new(disk.clone()),
                clock: Arc::new(ManualClock::new(1_700_000_000_000)),
                ..Options::default()
            },
        )
        .expect("atlas")
    }

    fn field(r: Result<Put, StoreError>) -> &'static str {
        match r {
            Err(StoreError::Proxy(ProxyError::Invalid { field, .. })) => field,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn writes_keep_the_catalog_buildable_and_survive_a_reopen() {
        let disk = MemStorage::new();
        let atlas = open(&disk);
        let s = ProxyStore::new(atlas.clone());
        assert_eq!(s.put_backend(backend("b1", 9001)).unwrap(), Put::Created);
        assert_eq!(s.put_backend(backend("b1", 9002)).unwrap(), Put::Replaced);
        assert_eq!(field(s.put_backend(backend("bad id", 9001))), "backend.id");
        let mut bad_url = backend("b2", 1);
        bad_url.url = "https://x".into();
        assert_eq!(field(s.put_backend(bad_url)), "backend.url");
        // A route naming an unknown backend, or the place of another route, is refused.
        assert_eq!(
            field(s.put_route(route("api", "/api/", &["nope"]))),
            "route.backends"
        );
        assert_eq!(
            s.put_route(route("api", "/api/", &["b1"])).unwrap(),
            Put::Created
        );
        assert_eq!(
            field(s.put_route(route("api2", "/api/", &["b1"]))),
            "route.path_prefix"
        );
        // A backend in use is not deleted.
        match s.delete_backend("b1") {
            Err(StoreError::Proxy(ProxyError::InUse { routes, .. })) => {
                assert_eq!(routes, ["api"])
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            s.delete_backend("b9"),
            Err(StoreError::Proxy(ProxyError::NotFound { .. }))
        ));
        assert!(matches!(
            s.delete_route("nope"),
            Err(StoreError::Proxy(ProxyError::NotFound { .. }))
        ));
        // What was acknowledged is there after a power loss.
        drop(s);
        disk.crash(helios_atlas::storage::CrashTear::DropUnsynced);
        drop(atlas);
        disk.restart();
        let s = ProxyStore::new(open(&disk));
        let c = s.catalog().unwrap();
        assert!(c.skipped.is_empty());
        assert_eq!(c.catalog.backends["b1"].url, "http://127.0.0.1:9002");
        assert_eq!(
            c.catalog.table().unwrap().route(None, "/api/x").unwrap().id,
            "api"
        );
        s.delete_route("api").unwrap();
        s.delete_backend("b1").unwrap();
        assert_eq!(s.catalog().unwrap().catalog, Catalog::default());
    }

    #[test]
    fn a_follower_gets_a_snapshot_then_changes_and_starts_over_after_compaction() {
        let disk = MemStorage::new();
        let atlas = open(&disk);
        let s = ProxyStore::new(atlas.clone());
        s.put_backend(backend("b1", 9001)).unwrap();
        let mut f = s.follow(None).unwrap();
        let t = Duration::from_millis(10);
        let (seq, mut c) = match f.next(t).unwrap() {
            Some(FeedEvent::Snapshot { seq, loaded }) => (seq, loaded.catalog),
            other => panic!("{other:?}"),
        };
        assert_eq!(c.backends.len(), 1);
        assert!(f.next(t).unwrap().is_none());
        s.put_route(route("r", "/", &["b1"])).unwrap();
        atlas.set("kv:u:1:x", "not a proxy key").unwrap();
        s.delete_route("r").unwrap();
        let mut last = seq;
        for _ in 0..2 {
            match f.next(t).unwrap() {
                Some(FeedEvent::Change { seq, ops }) => {
                    assert!(seq > last);
                    last = seq;
                    for op in &ops {
                        c.apply_op(op).unwrap();
                    }
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(c.routes.is_empty());
        assert!(
            f.next(t).unwrap().is_none(),
            "the KV write is not a proxy change"
        );
        // A follower resuming from a position compaction removed (and no ring of
        // recent records holds: nobody was subscribed) starts over.
        drop(f);
        s.put_route(route("r2", "/", &["b1"])).unwrap();
        atlas.rewrite_aof().unwrap();
        let mut late = s.follow(Some(seq + 1)).unwrap();
        let ev = late.next(t);
        assert!(matches!(ev, Ok(Some(FeedEvent::Snapshot { .. }))), "{ev:?}");
    }

    #[test]
    fn a_value_written_around_the_store_is_skipped_by_key() {
        let disk = MemStorage::new();
        let atlas = open(&disk);
        let s = ProxyStore::new(atlas.clone());
        s.put_backend(backend("b1", 9001)).unwrap();
        atlas.set("proxy:route:junk", "not json").unwrap();
        let c = s.catalog().unwrap();
        assert_eq!(c.catalog.backends.len(), 1);
        assert!(c.catalog.routes.is_empty());
        match &c.skipped[..] {
            [ProxyError::Stored { key, .. }] => assert_eq!(key, "proxy:route:junk"),
            other => panic!("{other:?}"),
        }
        // The store still takes valid writes.
        s.put_route(route("r", "/", &["b1"])).unwrap();
    }
}
