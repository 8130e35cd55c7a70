//! [`MemStorage`]: an in-memory, fault-injecting file system for crash and corruption tests.
//!
//! The model (after redb's `CrashBackend` and turmoil's fs): each file is an inode whose
//! bytes are append-only between syncs, so its durable content is always a prefix
//! (`synced_len`) of what was written. Names live in two maps: the current one, and the
//! durable one that only [`Storage::sync_dir`] updates. A power loss keeps the durable
//! names, and for each file its synced bytes plus, depending on [`CrashTear`], none, all
//! or a torn prefix of the unsynced ones.
//!
//! A process crash ([`MemStorage::kill_process`]) is not a power loss: the handles of the
//! dead process stop working, but what it wrote stays readable (synced or not, its names
//! durable or not) until a power loss decides what of it was durable.
//!
//! After a crash the storage is "down": every operation fails, including those of handles
//! opened before, until [`MemStorage::restart`]. That stops a store that is still running
//! (its background threads, its `Drop`) from writing to the rebooted disk.
//!
//! Log padding ([`MemStorage::with_log_padding`], off by default): a log file
//! ([`Storage::create_log`]) then keeps padding ([`LOG_PAD`](super::LOG_PAD) bytes) after
//! its appends, as [`FsStorage`](super::FsStorage) does: the file reads as its data
//! followed by the padding, an append overwrites padding, and more is added (and synced
//! at once, with the appends before it) when less than a quarter chunk is left. A power
//! loss keeps, after the surviving prefix of the data, what was durable there (the
//! padding as of the last sync), so a torn append reads as a record cut short in padding.
//! [`Storage::open_log`] appends at the offset it is given and reuses whatever follows as
//! it is, zeros included, as the real one does.
//!
//! Zeros ([`MemStorage::set_zero_unsynced_padding`]): a power loss may also keep some of
//! the padding that was written but never synced, as zeros (the new size made durable
//! without the data, as unwritten extents read).
//!
//! Failed syncs drop data as Linux does: [`MemStorage::fail_one_sync_after`] fails one
//! sync, whose unsynced bytes are then marked clean but never reach the disk; a later
//! sync succeeds and does not write them, and a power loss puts back what the disk held
//! under them.
//!
//! Directories are names too: one [`Storage::create_dir_all`] creates is lost by a power
//! loss (with everything in it) until a [`Storage::sync_dir`] of its parent; a root (a
//! path without a parent, or the empty path) always exists.
//!
//! Simplifications, stated so tests don't rely on more: `create` always makes a new inode; truncation is durable at once (the trait
//! says so); padding does not count against [`MemStorage::set_capacity`].

use super::{DirLock, Storage, StorageFile};
use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What survives of a file's unsynced bytes when the power goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashTear {
    /// Nothing unsynced survives.
    DropUnsynced,
    /// Everything written survives (a process crash: the page cache lives on).
    KeepUnsynced,
    /// A random prefix of the unsynced bytes survives, any length.
    RandomPrefix {
        /// Seed of the choice.
        seed: u64,
    },
    /// A random prefix ending on a multiple of `block_size` (or at the synced length)
    /// survives: a write torn at sector or page boundaries.
    BlockBoundary {
        /// 512 for sectors, 4096 for pages.
        block_size: u64,
        /// Seed of the choice.
        seed: u64,
    },
    /// Each unsynced 512-byte sector of a padded log lands or not, independently: writes
    /// into preallocated space reach the disk in no particular order, and a sector that
    /// did not land still holds padding. Other files keep a prefix, as `BlockBoundary`
    /// with 512-byte blocks.
    LostSectors {
        /// Seed of the choice.
        seed: u64,
    },
}

#[derive(Debug, Default)]
struct Inode {
    data: Vec<u8>,
    // Invariant: synced_len <= data.len(); data[..synced_len] is durable.
    synced_len: usize,
    // What the file holds past `data`: log padding (LOG_PAD bytes), or the zeros a power
    // loss left where padding was never synced. The file reads as `data` then `tail`.
    tail: Vec<u8>,
    // What was durable past `synced_len` at the last sync (the tail then): what a power
    // loss leaves there, under unsynced bytes that did not land.
    synced_tail: Vec<u8>,
    // Bytes whose writeback failed (a failed sync): clean in the page cache, so no later
    // sync writes them, and never on disk. (offset, what the disk still holds there),
    // put back by a power loss.
    lost: Vec<(usize, Vec<u8>)>,
    log: bool,
}

impl Inode {
    fn contents(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(self.data.len() + self.tail.len());
        b.extend_from_slice(&self.data);
        b.extend_from_slice(&self.tail);
        b
    }

    fn len(&self) -> usize {
        self.data.len() + self.tail.len()
    }

    /// The file's length at its last sync.
    fn synced_file_len(&self) -> usize {
        self.synced_len + self.synced_tail.len()
    }

    /// What the disk holds at `at`, past the synced data (`at >= synced_len`): the durable
    /// tail, or padding past the durable length.
    fn durable_at(&self, at: usize) -> u8 {
        self.synced_tail
            .get(at - self.synced_len)
            .copied()
            .unwrap_or(super::LOG_PAD)
    }

    /// A power loss that lands each unsynced sector or not: a sector that did not land
    /// holds what the disk held there (the durable padding, or zeros), and the file keeps
    /// at least its synced length.
    fn lose_sectors(&mut self, rng: &mut SplitMix) {
        let mut bytes = self.contents();
        let file_len = bytes.len();
        let mut sector = self.synced_len / 512 * 512;
        let mut landed_end = self.synced_len;
        while sector < self.data.len() {
            let end = (sector + 512).min(file_len);
            if rng.below(2) == 0 {
                // Not landed: the old content past the synced data.
                let from = sector.max(self.synced_len);
                for (at, b) in bytes[from..end].iter_mut().enumerate() {
                    *b = self.durable_at(from + at);
                }
            } else {
                landed_end = landed_end.max(end.min(self.data.len()));
            }
            sector += 512;
        }
        let kept = self.synced_file_len().max(landed_end);
        bytes.truncate(kept);
        self.tail = bytes.split_off(landed_end);
        self.data = bytes;
    }

    /// Keeps `keep` bytes of the data; past them, what was durable there.
    fn keep_prefix(&mut self, keep: usize) {
        let from = keep.saturating_sub(self.synced_len);
        self.tail = self.synced_tail.get(from..).unwrap_or_default().to_vec();
        self.data.truncate(keep);
    }

    /// Puts back what the disk held under the bytes whose writeback failed.
    fn restore_lost(&mut self) {
        for (at, old) in std::mem::take(&mut self.lost) {
            let mut bytes = self.contents();
            let end = (at + old.len()).min(bytes.len());
            if at < end {
                bytes[at..end].copy_from_slice(&old[..end - at]);
            }
            self.tail = bytes.split_off(self.data.len().min(bytes.len()));
            self.data = bytes;
        }
    }

    fn mark_synced(&mut self) {
        self.synced_len = self.data.len();
        self.synced_tail.clone_from(&self.tail);
    }

    /// A failed sync: the unsynced bytes are marked clean without reaching the disk (Linux).
    fn fail_writeback(&mut self) {
        if self.data.len() > self.synced_len {
            let old = (self.synced_len..self.data.len())
                .map(|at| {
                    if at < self.synced_file_len() {
                        self.durable_at(at)
                    } else {
                        0
                    }
                })
                .collect();
            self.lost.push((self.synced_len, old));
        }
        self.mark_synced();
    }
}

#[derive(Debug, Default)]
struct State {
    inodes: BTreeMap<u64, Inode>,
    inode_next: u64,
    names: BTreeMap<PathBuf, u64>,
    durable_names: BTreeMap<PathBuf, u64>,
    dirs: BTreeSet<PathBuf>,
    // The directories a power loss keeps (with their parent): made durable by a
    // `sync_dir` of their parent.
    durable_dirs: BTreeSet<PathBuf>,
    locks: BTreeSet<PathBuf>,
    generation: u64,
    down: bool,
    ops_count: u64,
    crash_at_ops: Option<(u64, CrashTear)>,
    fail_sync_after: Option<u64>,
    sync_failing: bool,
    fail_one_sync_after: Option<u64>,
    fail_append_after: Option<u64>,
    capacity_size: Option<u64>,
    sync_count: u64,
    // Some(chunk): log files keep padding (see the module docs).
    log_pad_chunk: Option<usize>,
    // A power loss may leave unsynced padding as zeros (see the module docs).
    zero_unsynced_padding: bool,
}

/// The in-memory fault-injecting storage. Clones share one "disk".
#[derive(Debug, Clone, Default)]
pub struct MemStorage {
    state: Arc<Mutex<State>>,
    hold: Arc<SyncHold>,
}

/// File syncs wait while `held` (a slow disk, in the tests' hands).
#[derive(Debug, Default)]
struct SyncHold {
    held: Mutex<bool>,
    waiting: Mutex<usize>,
    cv: parking_lot::Condvar,
}

impl SyncHold {
    fn wait(&self) {
        let mut held = self.held.lock();
        if *held {
            *self.waiting.lock() += 1;
            while *held {
                self.cv.wait(&mut held);
            }
            *self.waiting.lock() -= 1;
        }
    }
}

/// A root: always there, never created.
fn is_root(dir: &Path) -> bool {
    dir.parent().is_none() || dir.as_os_str().is_empty()
}

fn down_error() -> io::Error {
    io::Error::other("simulated power loss: storage is down")
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: no such file", path.display()),
    )
}

struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}

impl State {
    fn used_size(&self) -> u64 {
        self.inodes.values().map(|i| i.data.len() as u64).sum()
    }

    /// Counts a mutating operation; fires an armed crash. Returns an error if the storage
    /// is (or just went) down.
    fn tick_op(&mut self) -> io::Result<()> {
        if self.down {
            return Err(down_error());
        }
        self.ops_count += 1;
        if let Some((at, tear)) = self.crash_at_ops
            && self.ops_count > at
        {
            self.crash_at_ops = None;
            self.power_loss(tear);
            return Err(down_error());
        }
        Ok(())
    }

    fn power_loss(&mut self, tear: CrashTear) {
        let mut rng = SplitMix(match tear {
            CrashTear::RandomPrefix { seed }
            | CrashTear::BlockBoundary { seed, .. }
            | CrashTear::LostSectors { seed } => seed,
            _ => 0,
        });
        // A directory survives if its name and its parent's are durable; a file if its
        // name is durable and its directory survives.
        let mut dirs = BTreeSet::new();
        for d in &self.durable_dirs {
            if d.ancestors()
                .skip(1)
                .all(|a| is_root(a) || self.durable_dirs.contains(a))
            {
                dirs.insert(d.clone());
            }
        }
        self.durable_dirs.clone_from(&dirs);
        self.dirs = dirs;
        let dirs = &self.dirs;
        self.durable_names
            .retain(|p, _| p.parent().is_some_and(|d| is_root(d) || dirs.contains(d)));
        let live: BTreeSet<u64> = self.durable_names.values().copied().collect();
        self.inodes.retain(|id, _| live.contains(id));
        let zeros = self.zero_unsynced_padding;
        for inode in self.inodes.values_mut() {
            let written_len = inode.len();
            inode.power_loss(tear, &mut rng);
            // Padding written but never synced, past what survived: the file system may
            // have made the size durable without the data (unwritten extents read as zeros).
            if zeros
                && inode.log
                && tear != CrashTear::KeepUnsynced
                && written_len > inode.len()
                && rng.below(2) == 0
            {
                let extra = rng.below((written_len - inode.len()) as u64 + 1) as usize;
                inode.tail.resize(inode.tail.len() + extra, 0);
            }
            inode.mark_synced();
        }
        self.names = self.durable_names.clone();
        self.locks.clear();
        self.generation += 1;
        self.down = true;
        self.crash_at_ops = None;
        self.sync_failing = false;
        self.fail_sync_after = None;
        self.fail_one_sync_after = None;
        self.fail_append_after = None;
    }

    /// Whether `dir` exists.
    fn has_dir(&self, dir: &Path) -> bool {
        is_root(dir) || self.dirs.contains(dir)
    }

    fn inode_of(&self, path: &Path) -> io::Result<u64> {
        self.names.get(path).copied().ok_or_else(|| not_found(path))
    }
}

impl Inode {
    /// What of this file a power loss keeps (see [`CrashTear`]), before it is marked
    /// synced.
    fn power_loss(&mut self, tear: CrashTear, rng: &mut SplitMix) {
        {
            let inode = self;
            inode.restore_lost();
            let synced = inode.synced_len as u64;
            let len = inode.data.len() as u64;
            // Padding was durable past the synced data: the unsynced bytes overwrote it.
            let padded = inode.log && inode.synced_file_len() > inode.synced_len;
            if let (CrashTear::LostSectors { .. }, true) = (tear, padded) {
                inode.lose_sectors(rng);
                return;
            }
            let block = |block_size: u64, rng: &mut SplitMix| -> u64 {
                let block_size = block_size.max(1);
                let mut candidates = vec![synced];
                let mut b = synced.div_ceil(block_size) * block_size;
                while b <= len {
                    if b > synced {
                        candidates.push(b);
                    }
                    b += block_size;
                }
                let pick = rng.below(candidates.len() as u64) as usize;
                candidates[pick]
            };
            let keep = match tear {
                CrashTear::DropUnsynced => synced,
                CrashTear::KeepUnsynced => len,
                // A padded log tears at sectors (a cut elsewhere is not one a disk makes).
                CrashTear::RandomPrefix { .. } if padded => block(512, rng),
                CrashTear::RandomPrefix { .. } => synced + rng.below(len - synced + 1),
                CrashTear::BlockBoundary { block_size, .. } => block(block_size, rng),
                CrashTear::LostSectors { .. } => block(512, rng),
            };
            if tear != CrashTear::KeepUnsynced {
                // What was durable past the kept data: padding, up to the synced length.
                inode.keep_prefix(keep as usize);
            }
        }
    }
}

impl MemStorage {
    /// An empty disk.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty disk whose log files keep padding, `chunk` bytes at a time (see the
    /// module docs).
    pub fn with_log_padding(chunk: usize) -> Self {
        let m = Self::default();
        m.state.lock().log_pad_chunk = Some(chunk.max(4));
        m
    }

    /// Power loss now: see [`CrashTear`]. The storage stays down until [`Self::restart`].
    pub fn crash(&self, tear: CrashTear) {
        let mut s = self.state.lock();
        if !s.down {
            s.power_loss(tear);
        }
    }

    /// Arms a power loss that happens during the mutating operation after `ops` more
    /// (`ops = 0`: the next one fails). That operation has no effect.
    pub fn arm_crash(&self, ops: u64, tear: CrashTear) {
        let mut s = self.state.lock();
        let at = s.ops_count + ops;
        s.crash_at_ops = Some((at, tear));
    }

    /// A process crash (`kill -9`) of every opener of this disk, without a power loss:
    /// their file handles and directory locks are gone (later operations through those
    /// handles fail), while the page cache lives on: every byte written, synced or not,
    /// and every name, durable or not, is there for the next process to read. A power
    /// loss later can still take back whatever was never synced.
    pub fn kill_process(&self) {
        let mut s = self.state.lock();
        s.locks.clear();
        s.generation += 1;
    }

    /// Whether a crash has happened and [`Self::restart`] has not been called.
    pub fn is_down(&self) -> bool {
        self.state.lock().down
    }

    /// From now on, file syncs wait (before they start) until [`Self::release_syncs`]: a
    /// disk whose fsync takes as long as the test likes.
    pub fn hold_syncs(&self) {
        *self.hold.held.lock() = true;
    }

    /// Lets held syncs go on, and later ones run at once.
    pub fn release_syncs(&self) {
        *self.hold.held.lock() = false;
        self.hold.cv.notify_all();
    }

    /// File syncs waiting on [`Self::hold_syncs`] now.
    pub fn held_sync_count(&self) -> usize {
        *self.hold.waiting.lock()
    }

    /// Powers the disk back on after a crash.
    pub fn restart(&self) {
        self.state.lock().down = false;
    }

    /// Mutating operations performed so far (appends, syncs, creates, renames, removes,
    /// truncates, directory syncs).
    pub fn ops_count(&self) -> u64 {
        self.state.lock().ops_count
    }

    /// Successful file and directory syncs so far.
    pub fn sync_count(&self) -> u64 {
        self.state.lock().sync_count
    }

    /// After `n` more successful syncs, every sync fails until [`Self::clear_faults`].
    pub fn fail_sync_after(&self, n: u64) {
        self.state.lock().fail_sync_after = Some(n);
    }

    /// After `n` more successful file syncs, ONE sync fails the way Linux fails it: the
    /// unsynced bytes are marked clean without reaching the disk (still read back, gone at
    /// the next power loss), and the next sync succeeds without writing them
    /// ("fsyncgate"). A store that retries the fsync and acknowledges loses those writes.
    pub fn fail_one_sync_after(&self, n: u64) {
        self.state.lock().fail_one_sync_after = Some(n);
    }

    /// Whether a power loss may leave padding that was written but never synced as zeros
    /// (the file's new size durable, its data not: unwritten extents read as zeros).
    pub fn set_zero_unsynced_padding(&self, on: bool) {
        self.state.lock().zero_unsynced_padding = on;
    }

    /// After `n` more successful appends, the next append writes half its buffer and
    /// fails (a torn write); later appends go through.
    pub fn fail_append_after(&self, n: u64) {
        self.state.lock().fail_append_after = Some(n);
    }

    /// Limits the total bytes of all files; an append past it writes what fits and fails
    /// with "no space left on device".
    pub fn set_capacity(&self, size: Option<u64>) {
        self.state.lock().capacity_size = size;
    }

    /// Removes the injected sync, append and capacity faults (not an armed crash).
    pub fn clear_faults(&self) {
        let mut s = self.state.lock();
        s.fail_sync_after = None;
        s.sync_failing = false;
        s.fail_one_sync_after = None;
        s.fail_append_after = None;
        s.capacity_size = None;
    }

    /// Flips the bits of the byte at `offset` of `path` (written and synced content).
    pub fn corrupt_byte(&self, path: &Path, offset: u64) -> io::Result<()> {
        let mut s = self.state.lock();
        let id = s.inode_of(path)?;
        let inode = s.inodes.get_mut(&id).ok_or_else(|| not_found(path))?;
        let byte = inode
            .data
            .get_mut(offset as usize)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "offset past end"))?;
        *byte ^= 0xFF;
        Ok(())
    }

    /// Overwrites a whole file, durably, its directories included (for tests that craft
    /// files by hand).
    pub fn put_file(&self, path: &Path, data: &[u8]) {
        let mut s = self.state.lock();
        let id = s.inode_next;
        s.inode_next += 1;
        s.inodes.insert(
            id,
            Inode {
                data: data.to_vec(),
                synced_len: data.len(),
                ..Inode::default()
            },
        );
        s.names.insert(path.to_path_buf(), id);
        s.durable_names.insert(path.to_path_buf(), id);
        for a in path.ancestors().skip(1).filter(|a| !is_root(a)) {
            s.dirs.insert(a.to_path_buf());
            s.durable_dirs.insert(a.to_path_buf());
        }
    }

    /// Length in bytes of a file as written (synced or not).
    pub fn file_size(&self, path: &Path) -> io::Result<u64> {
        let s = self.state.lock();
        let id = s.inode_of(path)?;
        Ok(s.inodes.get(&id).map_or(0, |i| i.len() as u64))
    }
}

#[derive(Debug)]
struct MemFile {
    state: Arc<Mutex<State>>,
    hold: Arc<SyncHold>,
    inode: u64,
    generation: u64,
}

impl StorageFile for MemFile {
    fn append(&self, buf: &[u8]) -> io::Result<()> {
        let mut s = self.state.lock();
        if s.generation != self.generation {
            return Err(down_error());
        }
        s.tick_op()?;
        let mut take = buf.len();
        let mut err = None;
        if let Some(n) = s.fail_append_after {
            if n == 0 {
                s.fail_append_after = None;
                take = buf.len() / 2;
                err = Some(io::Error::other("injected write failure"));
            } else {
                s.fail_append_after = Some(n - 1);
            }
        }
        if let Some(cap) = s.capacity_size {
            let free = cap.saturating_sub(s.used_size());
            if (take as u64) > free {
                take = free as usize;
                err = Some(io::Error::new(
                    io::ErrorKind::StorageFull,
                    "no space left on device",
                ));
            }
        }
        let chunk = s.log_pad_chunk;
        let inode = s.inodes.get_mut(&self.inode).ok_or_else(down_error)?;
        inode.data.extend_from_slice(&buf[..take]);
        let over = take.min(inode.tail.len());
        inode.tail.drain(..over);
        if let Some(e) = err {
            return Err(e);
        }
        if inode.log
            && let Some(chunk) = chunk
            && inode.tail.len() < chunk / 4
        {
            // As the real file system does: a new chunk of padding is made durable at once
            // (with the appends before it), so appends only land on durable padding.
            inode.tail.resize(inode.tail.len() + chunk, super::LOG_PAD);
            // A power loss may strike between the chunk's write and its sync.
            s.tick_op()?;
            self.sync_locked(&mut s)?;
        }
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        self.hold.wait();
        let mut s = self.state.lock();
        if s.generation != self.generation {
            return Err(down_error());
        }
        s.tick_op()?;
        self.sync_locked(&mut s)
    }
}

impl MemFile {
    fn sync_locked(&self, s: &mut State) -> io::Result<()> {
        let fail_once = match s.fail_one_sync_after {
            Some(0) => {
                s.fail_one_sync_after = None;
                true
            }
            Some(n) => {
                s.fail_one_sync_after = Some(n - 1);
                false
            }
            None => false,
        };
        let r = if fail_once {
            Err(io::Error::other("injected fsync failure (once)"))
        } else {
            check_sync_fault(s)
        };
        let inode = s.inodes.get_mut(&self.inode).ok_or_else(down_error)?;
        match r {
            Ok(()) => {
                inode.mark_synced();
                s.sync_count += 1;
                Ok(())
            }
            Err(e) => {
                inode.fail_writeback();
                Err(e)
            }
        }
    }
}

fn check_sync_fault(s: &mut State) -> io::Result<()> {
    if s.sync_failing {
        return Err(io::Error::other("injected fsync failure"));
    }
    if let Some(n) = s.fail_sync_after {
        if n == 0 {
            s.fail_sync_after = None;
            s.sync_failing = true;
            return Err(io::Error::other("injected fsync failure"));
        }
        s.fail_sync_after = Some(n - 1);
    }
    Ok(())
}

#[derive(Debug)]
struct MemLock {
    state: Arc<Mutex<State>>,
    dir: PathBuf,
    generation: u64,
}

impl DirLock for MemLock {}

impl Drop for MemLock {
    fn drop(&mut self) {
        let mut s = self.state.lock();
        if s.generation == self.generation {
            s.locks.remove(&self.dir);
        }
    }
}

impl MemStorage {
    fn create_file(&self, path: &Path, log: bool) -> io::Result<Arc<dyn StorageFile>> {
        let mut s = self.state.lock();
        s.tick_op()?;
        match path.parent() {
            Some(p) if s.has_dir(p) => {}
            _ => return Err(not_found(path)),
        }
        let id = s.inode_next;
        s.inode_next += 1;
        s.inodes.insert(
            id,
            Inode {
                log,
                ..Inode::default()
            },
        );
        s.names.insert(path.to_path_buf(), id);
        Ok(Arc::new(MemFile {
            state: self.state.clone(),
            hold: self.hold.clone(),
            inode: id,
            generation: s.generation,
        }))
    }

    fn open_log_at(&self, path: &Path, end: u64) -> io::Result<Arc<dyn StorageFile>> {
        let mut s = self.state.lock();
        if s.down {
            return Err(down_error());
        }
        let id = s.inode_of(path)?;
        let inode = s.inodes.get_mut(&id).ok_or_else(|| not_found(path))?;
        // Appends go at `end`; whatever follows is padding they overwrite, as on the real
        // file system (the caller says it is padding).
        let len = inode.len();
        let end = usize::try_from(end)
            .ok()
            .filter(|&e| e <= len)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "end past the file"))?;
        if inode.synced_len > end {
            // The synced bytes past `end` are durable content after it now.
            let mut durable = inode.data[end..inode.synced_len].to_vec();
            durable.append(&mut inode.synced_tail);
            inode.synced_tail = durable;
            inode.synced_len = end;
        }
        let mut bytes = inode.contents();
        inode.tail = bytes.split_off(end);
        inode.data = bytes;
        inode.log = true;
        // What follows is reused as it is, as on the real file system.
        Ok(Arc::new(MemFile {
            state: self.state.clone(),
            hold: self.hold.clone(),
            inode: id,
            generation: s.generation,
        }))
    }
}

impl Storage for MemStorage {
    fn create_dir_all(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        let mut s = self.state.lock();
        if s.down {
            return Err(down_error());
        }
        if s.names.contains_key(dir) {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{} is a file", dir.display()),
            ));
        }
        let mut created = Vec::new();
        for a in dir.ancestors().filter(|a| !is_root(a)) {
            if s.dirs.insert(a.to_path_buf()) {
                created.push(a.to_path_buf());
            }
        }
        created.reverse();
        Ok(created)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let s = self.state.lock();
        if s.down {
            return Err(down_error());
        }
        if !s.has_dir(dir) {
            return Err(not_found(dir));
        }
        Ok(s.names
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().and_then(|n| n.to_str()).map(str::to_owned))
            .collect())
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let s = self.state.lock();
        if s.down {
            return Err(down_error());
        }
        let id = s.inode_of(path)?;
        Ok(s.inodes.get(&id).map(Inode::contents).unwrap_or_default())
    }

    fn create(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        self.create_file(path, false)
    }

    fn create_log(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        self.create_file(path, true)
    }

    fn open_log(&self, path: &Path, end: u64) -> io::Result<Arc<dyn StorageFile>> {
        self.open_log_at(path, end)
    }

    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        let mut s = self.state.lock();
        s.tick_op()?;
        let id = s.inode_of(path)?;
        let inode = s.inodes.get_mut(&id).ok_or_else(|| not_found(path))?;
        let len = len as usize;
        if len <= inode.data.len() {
            inode.data.truncate(len);
            inode.tail.clear();
        } else {
            inode.tail.truncate(len - inode.data.len());
        }
        inode.lost.clear();
        inode.mark_synced();
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        s.tick_op()?;
        let id = s.names.remove(from).ok_or_else(|| not_found(from))?;
        s.names.insert(to.to_path_buf(), id);
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        s.tick_op()?;
        s.names.remove(path).ok_or_else(|| not_found(path))?;
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        s.tick_op()?;
        check_sync_fault(&mut s)?;
        let current: Vec<(PathBuf, u64)> = s
            .names
            .iter()
            .filter(|(p, _)| p.parent() == Some(dir))
            .map(|(p, id)| (p.clone(), *id))
            .collect();
        s.durable_names.retain(|p, _| p.parent() != Some(dir));
        s.durable_names.extend(current);
        let subdirs: Vec<PathBuf> = s
            .dirs
            .iter()
            .filter(|d| d.parent() == Some(dir))
            .cloned()
            .collect();
        s.durable_dirs.extend(subdirs);
        // Inodes with no name at all are garbage once no durable name refers to them.
        let live: BTreeSet<u64> = s
            .names
            .values()
            .chain(s.durable_names.values())
            .copied()
            .collect();
        s.inodes.retain(|id, _| live.contains(id));
        s.sync_count += 1;
        Ok(())
    }

    fn lock_dir(&self, dir: &Path) -> io::Result<Box<dyn DirLock>> {
        let mut s = self.state.lock();
        if s.down {
            return Err(down_error());
        }
        if !s.locks.insert(dir.to_path_buf()) {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("{} is locked", dir.display()),
            ));
        }
        Ok(Box::new(MemLock {
            state: self.state.clone(),
            dir: dir.to_path_buf(),
            generation: s.generation,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        PathBuf::from("/d")
    }

    /// A disk whose logs keep `chunk` bytes of padding, and a new log on it.
    fn padded_log(chunk: usize) -> (MemStorage, PathBuf, Arc<dyn StorageFile>) {
        let m = MemStorage::with_log_padding(chunk);
        m.create_dir_durable(&dir()).unwrap();
        let path = dir().join("log");
        let f = m.create_log(&path).unwrap();
        m.sync_dir(&dir()).unwrap();
        (m, path, f)
    }

    #[test]
    fn a_padded_log_reads_as_data_then_padding_and_a_crash_keeps_the_durable_padding() {
        let (m, path, f) = padded_log(16);
        f.append(b"abc").unwrap();
        assert_eq!(
            m.read(&path).unwrap(),
            b"abc\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n"
        );
        f.sync().unwrap();
        f.append(b"defgh").unwrap();
        assert_eq!(&m.read(&path).unwrap()[..9], b"abcdefgh\n");
        assert_eq!(m.file_size(&path).unwrap(), 19);
        // The torn append: its first byte landed, the padding synced before stays after it.
        m.crash(CrashTear::BlockBoundary {
            block_size: 4,
            seed: 1,
        });
        m.restart();
        let b = m.read(&path).unwrap();
        assert_eq!(b.len(), 19, "{b:?}");
        assert!(b.starts_with(b"abc"));
        assert!(b[8..].iter().all(|&c| c == b'\n'), "{b:?}");
        // Reopened where its records end: appends overwrite what follows, which is
        // reused as it is (the torn bytes included: recovery's to cut).
        assert!(m.open_log(&path, 20).is_err());
        let f = m.open_log(&path, 3).unwrap();
        f.append(b"Y").unwrap();
        let after = m.read(&path).unwrap();
        assert_eq!((&after[..4], &after[4..]), (&b"abcY"[..], &b[4..]));
        // "Y" was never synced: what was durable there comes back.
        m.crash(CrashTear::DropUnsynced);
        m.restart();
        assert_eq!(m.read(&path).unwrap(), b);
    }

    #[test]
    fn a_new_chunk_of_padding_is_synced_with_the_appends_before_it() {
        let (m, path, f) = padded_log(16);
        let before = m.sync_count();
        f.append(b"abc").unwrap();
        assert_eq!(m.sync_count(), before + 1, "the first chunk's sync");
        m.crash(CrashTear::DropUnsynced);
        m.restart();
        assert_eq!(
            m.read(&path).unwrap(),
            b"abc\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n"
        );
    }

    #[test]
    fn unsynced_padding_may_come_back_as_zeros() {
        let mut zeros_seen = 0;
        for seed in 0..20 {
            let (m, path, f) = padded_log(64);
            m.set_zero_unsynced_padding(true);
            // The power goes after the chunk is written, before its sync.
            m.arm_crash(1, CrashTear::RandomPrefix { seed });
            assert!(f.append(&[b'a'; 60]).is_err());
            m.restart();
            let b = m.read(&path).unwrap();
            let a = b.iter().take_while(|&&c| c == b'a').count();
            assert!(b[a..].iter().all(|&c| c == 0), "seed {seed}: {b:?}");
            assert!(b.len() <= 124);
            zeros_seen += usize::from(b.len() > a);
        }
        assert!(zeros_seen > 0);
    }

    #[test]
    fn a_failed_sync_drops_the_bytes_and_the_next_sync_does_not_bring_them_back() {
        let m = MemStorage::new();
        m.create_dir_durable(&dir()).unwrap();
        let path = dir().join("a");
        let f = m.create(&path).unwrap();
        m.sync_dir(&dir()).unwrap();
        f.append(b"one").unwrap();
        f.sync().unwrap();
        f.append(b"two").unwrap();
        m.fail_one_sync_after(0);
        assert!(f.sync().is_err());
        assert_eq!(m.read(&path).unwrap(), b"onetwo", "still in the page cache");
        f.append(b"three").unwrap();
        f.sync().expect("the next sync succeeds (Linux)");
        m.crash(CrashTear::KeepUnsynced);
        m.restart();
        // "two" never reached the disk: what the disk held there (nothing: zeros).
        assert_eq!(m.read(&path).unwrap(), b"one\0\0\0three");
    }

    #[test]
    fn unsynced_bytes_and_undurable_names_vanish_on_crash() {
        let m = MemStorage::new();
        m.create_dir_durable(&dir()).unwrap();
        let f = m.create(&dir().join("a")).unwrap();
        f.append(b"hello").unwrap();
        f.sync().unwrap();
        // The name is not durable yet: a crash loses the file.
        m.crash(CrashTear::KeepUnsynced);
        m.restart();
        assert!(m.list(&dir()).unwrap().is_empty());

        let f = m.create(&dir().join("a")).unwrap();
        f.append(b"hello").unwrap();
        f.sync().unwrap();
        m.sync_dir(&dir()).unwrap();
        f.append(b" world").unwrap();
        m.crash(CrashTear::DropUnsynced);
        assert!(f.append(b"x").is_err(), "old handles fail after a crash");
        m.restart();
        assert_eq!(m.read(&dir().join("a")).unwrap(), b"hello");
    }

    #[test]
    fn a_new_directory_is_durable_only_once_its_parent_is_synced() {
        let m = MemStorage::new();
        let deep = PathBuf::from("/a/b/c");
        assert_eq!(
            m.create_dir_all(&deep).unwrap(),
            vec![PathBuf::from("/a"), PathBuf::from("/a/b"), deep.clone()]
        );
        assert!(m.create_dir_all(&deep).unwrap().is_empty(), "nothing new");
        let f = m.create(&deep.join("f")).unwrap();
        f.append(b"x").unwrap();
        f.sync().unwrap();
        m.sync_dir(&deep).unwrap();
        // "/a/b" synced, but "/a" itself was never made durable in "/": all gone.
        m.sync_dir(Path::new("/a/b")).unwrap();
        m.crash(CrashTear::KeepUnsynced);
        m.restart();
        assert!(m.list(&deep).is_err());
        assert!(m.read(&deep.join("f")).is_err());

        m.create_dir_durable(&deep).unwrap();
        let f = m.create(&deep.join("f")).unwrap();
        f.append(b"x").unwrap();
        f.sync().unwrap();
        m.sync_dir(&deep).unwrap();
        m.crash(CrashTear::DropUnsynced);
        m.restart();
        assert_eq!(m.read(&deep.join("f")).unwrap(), b"x");
    }

    #[test]
    fn a_killed_process_leaves_the_page_cache_for_the_next_one_until_power_loss() {
        let m = MemStorage::new();
        m.create_dir_durable(&dir()).unwrap();
        let _lock = m.lock_dir(&dir()).unwrap();
        let f = m.create(&dir().join("a")).unwrap();
        f.append(b"hello").unwrap();
        m.kill_process();
        assert!(f.append(b"x").is_err(), "the dead process's handles fail");
        assert!(m.lock_dir(&dir()).is_ok(), "its lock is released");
        // Unsynced bytes and a name never made durable: readable, not durable.
        assert_eq!(m.read(&dir().join("a")).unwrap(), b"hello");
        m.crash(CrashTear::KeepUnsynced);
        m.restart();
        assert!(m.list(&dir()).unwrap().is_empty());
    }

    #[test]
    fn block_boundary_tear_keeps_synced_or_a_boundary() {
        for seed in 0..50 {
            let m = MemStorage::new();
            m.create_dir_durable(&dir()).unwrap();
            let f = m.create(&dir().join("a")).unwrap();
            f.append(&[1u8; 700]).unwrap();
            f.sync().unwrap();
            m.sync_dir(&dir()).unwrap();
            f.append(&[2u8; 2000]).unwrap();
            m.crash(CrashTear::BlockBoundary {
                block_size: 512,
                seed,
            });
            m.restart();
            let len = m.read(&dir().join("a")).unwrap().len();
            assert!(
                len == 700 || (len.is_multiple_of(512) && len > 700 && len <= 2700),
                "{len}"
            );
        }
    }

    #[test]
    fn injected_faults() {
        let m = MemStorage::new();
        m.create_dir_durable(&dir()).unwrap();
        let f = m.create(&dir().join("a")).unwrap();
        m.fail_sync_after(1);
        f.sync().unwrap();
        assert!(f.sync().is_err());
        assert!(f.sync().is_err(), "a failed disk keeps failing");
        m.clear_faults();
        m.set_capacity(Some(10));
        let e = f.append(&[0u8; 20]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::StorageFull);
        assert_eq!(m.file_size(&dir().join("a")).unwrap(), 10);
        m.clear_faults();
        m.fail_append_after(0);
        assert!(f.append(&[0u8; 4]).is_err());
        assert_eq!(m.file_size(&dir().join("a")).unwrap(), 12);
    }

    #[test]
    fn armed_crash_fires_on_the_chosen_op_and_locks_clear() {
        let m = MemStorage::new();
        m.create_dir_durable(&dir()).unwrap();
        let _lock = m.lock_dir(&dir()).unwrap();
        assert!(m.lock_dir(&dir()).is_err());
        let f = m.create(&dir().join("a")).unwrap();
        m.arm_crash(1, CrashTear::KeepUnsynced);
        f.append(b"ok").unwrap();
        assert!(f.sync().is_err());
        assert!(m.is_down());
        m.restart();
        assert!(m.lock_dir(&dir()).is_ok());
    }
}
