//! The dynamic configuration as data: the routes and backends stored in ATLAS as
//! `proxy:route:{id}` and `proxy:backend:{id}` (JSON [`RouteSpec`] / [`BackendSpec`],
//! keys from `helios_core::keys`), and what a follower of the store's change feed keeps of
//! them.
//!
//! A [`Catalog`] is built from a scan of the `proxy:` prefix and moved on by the feed's
//! changes ([`Catalog::apply`]), then turned into a [`RouteTable`] with
//! [`Catalog::table`], which validates the whole (a route naming a missing backend does
//! not build). Changes are whole values (a set replaces, a delete removes), so replaying
//! them is idempotent: a catalog scanned at any point after sequence number `s` and then
//! given every change after `s` equals the catalog of the last change (property-tested
//! below). That is how a follower starts without a consistent snapshot read: note `s`,
//! subscribe from `s + 1`, scan, apply.
//!
//! Invariant: every spec in a catalog has the id its key names.

use crate::error::ProxyError;
use crate::route::{BackendSpec, RouteSpec, RouteTable};
use helios_core::keys::{self, Key};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The key prefix a follower subscribes to (both families).
pub const PREFIX: &str = "proxy:";

/// Most backends in one catalog (as [`crate::route::ROUTES_MAX`] for routes).
pub const BACKENDS_MAX: usize = 10_000;

/// One stored change under [`PREFIX`], as the feed carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change<'a> {
    /// `key` now holds `value`.
    Set {
        /// The key.
        key: &'a str,
        /// The stored JSON.
        value: &'a [u8],
    },
    /// `key` was removed.
    Del {
        /// The key.
        key: &'a str,
    },
}

/// What [`Catalog::apply`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The catalog changed (or was rewritten with the same value).
    Changed,
    /// The key is not a route or backend key: nothing to do.
    Ignored,
}

/// The routes and backends, by id. See the module docs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    /// Routes by id.
    pub routes: BTreeMap<String, RouteSpec>,
    /// Backends by id.
    pub backends: BTreeMap<String, BackendSpec>,
}

/// Which family a key under [`PREFIX`] belongs to, with its id.
fn family(key: &str) -> Option<Key<'_>> {
    match keys::parse(key) {
        Ok(k @ (Key::ProxyRoute(_) | Key::ProxyBackend(_))) => Some(k),
        _ => None,
    }
}

impl Catalog {
    /// Applies one stored change. A value that is not a valid spec for its key (written
    /// around the admin API) is an error naming the key; the catalog is then unchanged
    /// for that key, except that the old spec is dropped (what the store holds is no
    /// longer it).
    pub fn apply(&mut self, change: Change<'_>) -> Result<Applied, ProxyError> {
        let key = match change {
            Change::Set { key, .. } | Change::Del { key } => key,
        };
        let Some(k) = family(key) else {
            return Ok(Applied::Ignored);
        };
        match (k, change) {
            (Key::ProxyRoute(id), Change::Del { .. }) => {
                self.routes.remove(id);
            }
            (Key::ProxyBackend(id), Change::Del { .. }) => {
                self.backends.remove(id);
            }
            (Key::ProxyRoute(id), Change::Set { value, .. }) => {
                self.routes.remove(id);
                let spec: RouteSpec = decode(key, value)?;
                same_id(key, id, &spec.id)?;
                self.routes.insert(id.to_owned(), spec);
            }
            (Key::ProxyBackend(id), Change::Set { value, .. }) => {
                self.backends.remove(id);
                let spec: BackendSpec = decode(key, value)?;
                same_id(key, id, &spec.id)?;
                self.backends.insert(id.to_owned(), spec);
            }
            _ => return Ok(Applied::Ignored),
        }
        Ok(Applied::Changed)
    }

    /// Applies one ATLAS op ([`Catalog::apply`]); an expiry alone changes no spec.
    pub fn apply_op(&mut self, op: &helios_atlas::Op) -> Result<Applied, ProxyError> {
        // Specs are written under text keys; a key that is not text names none.
        let Some(key) = op.key().as_str() else {
            return Ok(Applied::Ignored);
        };
        match op {
            helios_atlas::Op::Set { value, .. } => self.apply(Change::Set { key, value }),
            helios_atlas::Op::Del { .. } => self.apply(Change::Del { key }),
            helios_atlas::Op::Expire { .. } => Ok(Applied::Ignored),
            // Specs are written whole by `Catalog`; a range write (atlasd's SETRANGE)
            // of a spec's bytes would leave it unparsable, so it is no spec change.
            helios_atlas::Op::SetRange { .. } => Ok(Applied::Ignored),
        }
    }

    /// The route table of this catalog, validated as a whole (errors name the route or
    /// backend). An empty catalog builds an empty table (every request 404s).
    pub fn table(&self) -> Result<RouteTable, ProxyError> {
        if self.backends.len() > BACKENDS_MAX {
            return Err(ProxyError::Invalid {
                field: "backends",
                reason: format!("{} backends; at most {BACKENDS_MAX}", self.backends.len()),
            });
        }
        let routes: Vec<RouteSpec> = self.routes.values().cloned().collect();
        let backends: Vec<BackendSpec> = self.backends.values().cloned().collect();
        RouteTable::new(&routes, &backends)
    }

    /// The routes that name backend `id`, by id.
    pub fn routes_using(&self, id: &str) -> Vec<String> {
        self.routes
            .values()
            .filter(|r| r.backends.iter().any(|b| b.backend == id))
            .map(|r| r.id.clone())
            .collect()
    }
}

/// A stored spec's JSON.
pub fn encode<T: Serialize>(spec: &T) -> Vec<u8> {
    // Specs are plain structs of strings and numbers: serializing cannot fail.
    serde_json::to_vec(spec).unwrap_or_default()
}

fn decode<'de, T: Deserialize<'de>>(key: &str, value: &'de [u8]) -> Result<T, ProxyError> {
    serde_json::from_slice(value).map_err(|e| ProxyError::Stored {
        key: key.to_owned(),
        reason: e.to_string(),
    })
}

fn same_id(key: &str, id: &str, spec_id: &str) -> Result<(), ProxyError> {
    if id == spec_id {
        Ok(())
    } else {
        Err(ProxyError::Stored {
            key: key.to_owned(),
            reason: format!("the value's id {spec_id:?} is not the key's"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{backend, route};
    use proptest::prelude::*;

    fn set<'a>(key: &'a str, value: &'a [u8]) -> Change<'a> {
        Change::Set { key, value }
    }

    #[test]
    fn changes_build_the_table_and_bad_values_are_named() {
        let mut c = Catalog::default();
        let b = encode(&backend("b1", 9001));
        let r = encode(&route("api", "/api/", &["b1"]));
        assert_eq!(c.apply(set("proxy:backend:b1", &b)), Ok(Applied::Changed));
        assert_eq!(c.apply(set("proxy:route:api", &r)), Ok(Applied::Changed));
        assert_eq!(c.apply(set("kv:u:1:x", b"1")), Ok(Applied::Ignored));
        let t = c.table().unwrap();
        assert_eq!(t.route(None, "/api/x").unwrap().id, "api");
        assert!(t.route(None, "/other").is_none());
        assert_eq!(c.routes_using("b1"), ["api"]);
        // A route naming a missing backend does not build.
        c.apply(Change::Del {
            key: "proxy:backend:b1",
        })
        .unwrap();
        match c.table() {
            Err(ProxyError::Invalid { field, .. }) => assert_eq!(field, "route.backends"),
            other => panic!("{other:?}"),
        }
        // A value that is not a spec, or names another id, is refused by key.
        match c.apply(set("proxy:route:api", b"{nope")) {
            Err(ProxyError::Stored { key, .. }) => assert_eq!(key, "proxy:route:api"),
            other => panic!("{other:?}"),
        }
        assert!(c.routes.is_empty(), "the old spec is gone from the store");
        let other = encode(&backend("b2", 9002));
        assert!(matches!(
            c.apply(set("proxy:backend:b1", &other)),
            Err(ProxyError::Stored { .. })
        ));
        assert_eq!(Catalog::default().table().unwrap().routes().count(), 0);
    }

    /// One write to the store: key index (routes 0-2, backends 3-5) and value, or a delete.
    type Write = (usize, Option<u16>);

    fn key_of(i: usize) -> String {
        if i < 3 {
            format!("proxy:route:r{i}")
        } else {
            format!("proxy:backend:b{}", i - 3)
        }
    }

    fn value_of(i: usize, v: u16) -> Vec<u8> {
        if i < 3 {
            let b = format!("b{}", v % 3);
            encode(&route(&format!("r{i}"), &format!("/p{v}"), &[b.as_str()]))
        } else {
            encode(&backend(&format!("b{}", i - 3), 9000 + v))
        }
    }

    /// The store's contents after `writes`.
    fn store_after(writes: &[Write]) -> BTreeMap<String, Vec<u8>> {
        let mut m = BTreeMap::new();
        for &(i, v) in writes {
            match v {
                Some(v) => m.insert(key_of(i), value_of(i, v)),
                None => m.remove(&key_of(i)),
            };
        }
        m
    }

    fn apply_write(c: &mut Catalog, &(i, v): &Write) {
        let key = key_of(i);
        let change = match v {
            Some(v) => {
                let value = value_of(i, v);
                c.apply(set(&key, &value)).unwrap();
                return;
            }
            None => Change::Del { key: &key },
        };
        c.apply(change).unwrap();
    }

    proptest! {
        /// A follower that notes sequence number `s`, scans the store at any later point
        /// `t`, then applies every change after `s` ends with the catalog of the store.
        #[test]
        fn scan_after_the_position_then_replay_converges(
            writes in proptest::collection::vec((0usize..6, proptest::option::of(0u16..50)), 0..60),
            s in 0usize..60,
            t in 0usize..60,
        ) {
            let n = writes.len();
            let s = s.min(n);
            let t = s + t.min(n - s);
            let mut follower = Catalog::default();
            for (k, v) in store_after(&writes[..t]) {
                follower.apply(set(&k, &v)).unwrap();
            }
            for w in &writes[s..] {
                apply_write(&mut follower, w);
            }
            let mut truth = Catalog::default();
            for (k, v) in store_after(&writes) {
                truth.apply(set(&k, &v)).unwrap();
            }
            prop_assert_eq!(follower, truth);
        }
    }
}
