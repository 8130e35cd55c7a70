//! The whole-keyspace reads and writes: SCAN and its cursor table ([`ScanCursors`], shared
//! by every connection), KEYS, DBSIZE and RANDOMKEY for a scoped connection (walks of its
//! prefix), and FLUSHDB/FLUSHALL's delete loop.
//!
//! Invariant: a scoped connection's walks and scans never leave its namespace's prefix,
//! whatever cursor the client names, and hand back its keys without the prefix. The
//! walks may take a while: the server commands run them in `block_in_place`; SCAN reads
//! one page (COUNT keys, at most 100 000) in place.

use super::eq;
use super::pipeline::atlas_error_line;
use crate::atlasd::Shared;
use crate::atlasd::acl::Scope;
use crate::atlasd::glob;
use crate::atlasd::kv::{ERR_NOT_INT, ERR_SYNTAX};
use crate::atlasd::resp::Out;
use bytes::Bytes;
use helios_atlas::{AtlasError, Key};
use helios_core::digits::parse_i64_canonical;
use std::collections::HashMap;

/// Calls `f` with every page of live keys under `prefix`, in key order.
fn walk_prefix(shared: &Shared, prefix: &str, mut f: impl FnMut(Vec<(Key, Bytes)>)) {
    let mut cursor: Option<Key> = None;
    loop {
        let Ok(page) = shared.atlas.scan(prefix, cursor.as_deref(), 10_000) else {
            break;
        };
        f(page.entries);
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
}

/// Every live key the connection sees (matching `pattern` if given), in key order: all
/// of them verbatim, or a scope's, without its prefix.
pub(super) fn all_keys(shared: &Shared, scope: Option<&Scope>, pattern: Option<&[u8]>) -> Vec<Key> {
    let mut keys = Vec::new();
    let prefix = scope.map_or("", |sc| sc.prefix());
    walk_prefix(shared, prefix, |entries| {
        keys.extend(entries.into_iter().filter_map(|(k, _)| {
            let k = match scope {
                None => k,
                Some(sc) => Key::from(sc.client_key(&k)?),
            };
            pattern.is_none_or(|p| glob::matches(p, &k)).then_some(k)
        }));
    });
    keys
}

/// How many live keys start with `prefix`.
pub(super) fn count_prefix(shared: &Shared, prefix: &str) -> u64 {
    let mut n = 0u64;
    walk_prefix(shared, prefix, |entries| n += entries.len() as u64);
    n
}

/// A live key under `prefix` drawn uniformly (one walk, reservoir sampling).
pub(super) fn random_in_prefix(shared: &Shared, prefix: &str) -> Option<Key> {
    let mut seen = 0u64;
    let mut pick = None;
    walk_prefix(shared, prefix, |entries| {
        for (k, _) in entries {
            seen += 1;
            if shared.random().is_multiple_of(seen) {
                pick = Some(k);
            }
        }
    });
    pick
}

/// Deletes every key (FLUSHDB, FLUSHALL), a page at a time.
pub(super) fn flush(shared: &Shared) -> Result<(), AtlasError> {
    loop {
        let page = shared.atlas.scan("", None, 10_000)?;
        if page.entries.is_empty() {
            return Ok(());
        }
        let keys: Vec<&Key> = page.entries.iter().map(|(k, _)| k).collect();
        shared.atlas.delete_many(&keys)?;
    }
}

/// SCAN cursor [MATCH pattern] [COUNT count] [TYPE type].
pub(super) fn scan(shared: &Shared, scope: Option<&Scope>, a: &[Bytes], out: &mut Out) {
    let Some(cursor) = std::str::from_utf8(&a[1])
        .ok()
        .and_then(|c| c.parse::<u64>().ok())
    else {
        out.error("ERR invalid cursor");
        return;
    };
    let mut pattern: Option<&[u8]> = None;
    let mut count = 10usize;
    let mut type_ok = true;
    let mut i = 2;
    while i < a.len() {
        let Some(v) = a.get(i + 1) else {
            out.error(ERR_SYNTAX);
            return;
        };
        if eq(&a[i], "MATCH") {
            pattern = Some(v);
        } else if eq(&a[i], "COUNT") {
            match parse_i64_canonical(v) {
                Some(n) if n >= 1 => count = (n as usize).min(100_000),
                Some(_) => {
                    out.error(ERR_SYNTAX);
                    return;
                }
                None => {
                    out.error(ERR_NOT_INT);
                    return;
                }
            }
        } else if eq(&a[i], "TYPE") {
            type_ok = eq(v, "string");
        } else {
            out.error(ERR_SYNTAX);
            return;
        }
        i += 2;
    }
    let after = if cursor == 0 {
        None
    } else {
        match shared.scan_cursors.lock().get(cursor) {
            Some(k) => Some(k),
            None => {
                out.error("ERR invalid cursor");
                return;
            }
        }
    };
    // A scope's cursors are ATLAS keys of its namespace: the scan never leaves the prefix,
    // whatever cursor the client names.
    let prefix = scope.map_or("", |sc| sc.prefix());
    let page = match shared.atlas.scan(prefix, after.as_deref(), count) {
        Ok(p) => p,
        Err(e) => {
            out.error(&atlas_error_line(&e));
            return;
        }
    };
    let next = match page.next_cursor {
        Some(k) => shared.scan_cursors.lock().insert(k),
        None => 0,
    };
    let keys: Vec<&[u8]> = page
        .entries
        .iter()
        .filter_map(|(k, _)| match scope {
            None => Some(k.as_bytes()),
            Some(sc) => sc.client_key(k),
        })
        .filter(|k| type_ok && pattern.is_none_or(|p| glob::matches(p, k)))
        .collect();
    out.array(2);
    out.bulk(next.to_string().as_bytes());
    out.array(keys.len());
    for k in keys {
        out.bulk(k);
    }
}

/// Keeps the bounded table of SCAN cursors: the numeric cursor handed to the client maps
/// to the last key returned, and the next page starts strictly after it, in key order.
/// So every key present for the whole scan is returned at least once, and exactly once
/// when no key is added behind the cursor. Cursors are shared by every connection (a
/// pooled client may continue a scan on another connection).
///
/// Bounded at [`SCAN_CURSOR_COUNT_MAX`] cursors. A cursor that has been continued is kept
/// (a client may retry a page) but is dropped first when the table is full; a cursor not
/// yet continued (the live end of a scan in progress) is dropped only when that many scans
/// are in progress at once. So one client's long scan never invalidates another's, which
/// it did when the oldest cursors were simply dropped. Continuing a dropped cursor fails
/// with `ERR invalid cursor`.
#[derive(Debug, Default)]
pub struct ScanCursors {
    next_id: u64,
    // id -> (last key returned, whether the cursor has been continued).
    keys: HashMap<u64, (Key, bool)>,
    // Cursors in the order they were made (ids since dropped or continued are skipped).
    fresh: std::collections::VecDeque<u64>,
    // Continued cursors, in the order they were first continued.
    used: std::collections::VecDeque<u64>,
}

/// Most SCAN cursors kept.
pub const SCAN_CURSOR_COUNT_MAX: usize = 100_000;

impl ScanCursors {
    fn insert(&mut self, key: Key) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        self.keys.insert(id, (key, false));
        self.fresh.push_back(id);
        while self.keys.len() > SCAN_CURSOR_COUNT_MAX {
            self.evict_one();
        }
        // `fresh` keeps ids of continued cursors until they reach its front: compact it
        // when they outnumber the live ones, so it stays O(table).
        if self.fresh.len() > 2 * SCAN_CURSOR_COUNT_MAX {
            let keys = &self.keys;
            self.fresh
                .retain(|id| keys.get(id).is_some_and(|(_, used)| !used));
        }
        id
    }

    /// Drops one cursor: the oldest continued one, else the oldest live one.
    fn evict_one(&mut self) {
        while let Some(id) = self.used.pop_front() {
            if self.keys.remove(&id).is_some() {
                return;
            }
        }
        while let Some(id) = self.fresh.pop_front() {
            if let Some((_, false)) = self.keys.get(&id) {
                self.keys.remove(&id);
                return;
            }
        }
    }

    fn get(&mut self, id: u64) -> Option<Key> {
        let (key, used) = self.keys.get_mut(&id)?;
        if !*used {
            *used = true;
            self.used.push_back(id);
        }
        Some(key.clone())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.keys.len()
    }
}

#[cfg(test)]
mod tests {
    use super::{SCAN_CURSOR_COUNT_MAX, ScanCursors};

    #[test]
    fn a_long_scan_does_not_invalidate_another_scans_cursor() {
        let mut t = ScanCursors::default();
        let theirs = t.insert("their-last-key".into());
        let binary = t.insert(vec![0xffu8, 0].into());
        // Another client's scan makes (and continues) many more cursors than the table
        // holds.
        let mut c = t.insert("k0".into());
        for i in 1..(3 * SCAN_CURSOR_COUNT_MAX) {
            assert!(
                t.get(c).is_some(),
                "the live cursor of the long scan, step {i}"
            );
            c = t.insert(format!("k{i}").into());
        }
        assert!(t.len() <= SCAN_CURSOR_COUNT_MAX);
        assert!(t.fresh.len() <= 2 * SCAN_CURSOR_COUNT_MAX + 1);
        assert!(t.used.len() <= SCAN_CURSOR_COUNT_MAX + 1);
        assert_eq!(t.get(theirs).as_deref(), Some(&b"their-last-key"[..]));
        // A retried page (the same cursor continued twice) still works while it is kept.
        assert_eq!(t.get(theirs).as_deref(), Some(&b"their-last-key"[..]));
        assert_eq!(t.get(binary).as_deref(), Some(&[0xffu8, 0][..]));
    }

    #[test]
    fn too_many_scans_in_progress_drop_the_oldest() {
        let mut t = ScanCursors::default();
        let first = t.insert("a".into());
        for i in 0..SCAN_CURSOR_COUNT_MAX {
            t.insert(format!("k{i}").into());
        }
        assert_eq!(t.len(), SCAN_CURSOR_COUNT_MAX);
        assert!(t.get(first).is_none(), "the oldest live cursor went first");
    }
}
