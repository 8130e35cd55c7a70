//! The storage trait: every byte ATLAS reads or writes goes through [`Storage`].
//!
//! Two implementations:
//! - [`FsStorage`]: the real file system (std `File`, `sync_data`, directory fsync, and a
//!   `LOCK` file held with `File::try_lock`).
//! - [`MemStorage`]: an in-memory file system that keeps written and synced bytes apart and
//!   injects faults: a simulated crash drops unsynced bytes (or keeps a torn prefix of
//!   them), names not made durable by a directory fsync vanish, fsync and write can be made
//!   to fail, and the "disk" can fill up.
//!
//! The trait is deliberately small: append-only files, whole-file reads, rename, remove,
//! truncate and directory fsync are all ATLAS needs. Paths are full paths; the data
//! directory is flat.
//!
//! Log files ([`Storage::create_log`], [`Storage::open_log`]) may be preallocated: the
//! real file system keeps [`LOG_PAD_AHEAD_MIN`] plus one to two [`LOG_PAD_CHUNK`]s of
//! padding ([`LOG_PAD`] newlines) written past the last append, so that the `fdatasync` of an
//! append overwrites blocks that are already allocated, written and inside the file's
//! size: no block allocation, no extent conversion and no size change to commit to the
//! file system's journal, only the data pages (docs/performance.md, "fdatasync of an
//! append, by the state of the file", has the figures).
//! Records are only ever written over padding that is durable: a sector that a crash did
//! not let land then still reads as padding, never as the zeros of an unwritten extent,
//! and zeros followed by data stay a sign of damage (`aof::scan_segment`). So padding is
//! written a chunk ahead of need, and any successful sync of the file makes the padding
//! written before it durable. A new chunk also starts a short-lived background thread
//! (one at a time per file) that fsyncs the file unless another sync (under `always`, a
//! commit's own) covered the chunk first; an append that reaches padding not yet durable
//! waits for that sync, or syncs itself. At most one extra fsync per [`LOG_PAD_CHUNK`]
//! appended (none under `always`), off the writer's path unless the writer outruns the
//! disk. For the same
//! reason recovery cuts whatever follows the records (padding a crash may have turned to
//! zeros, or sectors of an append that was never synced) before the first append.
//! Readers of a log treat trailing padding as the end of the log, and a crash's torn tail
//! by where it stops and what follows.
//!
//! # Fsync failures
//! Linux reports a failed writeback once per file description and then marks the pages
//! clean: a second `fsync` returns 0 although the data never reached the disk
//! ("fsyncgate"). So [`FailStopFile`] (which the store wraps every log in) serializes the
//! fsyncs of a file and keeps the first error: every later sync and append of that file
//! fails with it, and no sync racing a failed one can report success.

mod failstop;
mod mem;

pub use failstop::FailStopFile;
pub(crate) use failstop::SyncGate;
pub use mem::{CrashTear, MemStorage};

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// An open file, written only by appending. Methods take `&self` so one thread can append
/// while another fsyncs the same file (the `everysec` policy does exactly that). The
/// implementations do not remember failures: wrap a file in [`FailStopFile`] for that.
pub trait StorageFile: Send + Sync + fmt::Debug {
    /// Appends all of `buf`. On error, a prefix of `buf` may have been written.
    fn append(&self, buf: &[u8]) -> io::Result<()>;
    /// Makes every appended byte durable (`fdatasync`).
    fn sync(&self) -> io::Result<()>;
}

/// Held while a data directory is open; dropping it releases the lock.
pub trait DirLock: Send + Sync + fmt::Debug {}

/// The file system operations ATLAS uses. See the module docs.
pub trait Storage: Send + Sync + fmt::Debug + 'static {
    /// Creates `dir` and its parents if missing. Returns the directories it created,
    /// outermost first. A new directory's name is durable only after a
    /// [`Storage::sync_dir`] of its parent: [`Storage::create_dir_durable`] does both.
    fn create_dir_all(&self, dir: &Path) -> io::Result<Vec<PathBuf>>;
    /// Creates `dir` and its parents if missing, and makes every name it created durable:
    /// fsyncs the parent of each new directory, outermost first, so a power loss cannot
    /// take back a directory whose files were fsynced. (A directory that already existed
    /// is taken as it is: one created by a process killed before its parent's fsync is
    /// not made durable here.)
    fn create_dir_durable(&self, dir: &Path) -> io::Result<()> {
        for created in self.create_dir_all(dir)? {
            if let Some(parent) = created.parent() {
                self.sync_dir(parent)?;
            }
        }
        Ok(())
    }
    /// Names (not paths) of the regular files directly in `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// The whole content of a file.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// The size of a file, bytes (padding kept past a log's last append included). The
    /// default reads the file; implementations answer from metadata.
    fn file_size(&self, path: &Path) -> io::Result<u64> {
        self.read(path).map(|b| b.len() as u64)
    }
    /// Creates `path`, truncating it if it exists, and opens it for appending.
    fn create(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>>;
    /// As [`Storage::create`], for a log: the implementation may keep padding
    /// ([`LOG_PAD`] bytes) written past the last append (see the module docs).
    fn create_log(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>>;
    /// Opens an existing log for appending at `end`, where its records end: whatever
    /// follows is reused as padding, so the caller cuts anything it does not trust to be
    /// durable padding first (recovery cuts everything: see the module docs).
    /// `InvalidInput` if the file is shorter than `end`.
    fn open_log(&self, path: &Path, end: u64) -> io::Result<Arc<dyn StorageFile>>;
    /// Cuts `path` to `len` bytes and makes the cut durable.
    fn truncate(&self, path: &Path, len: u64) -> io::Result<()>;
    /// Renames `from` to `to`, replacing `to`. Durable only after [`Storage::sync_dir`].
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file. Durable only after [`Storage::sync_dir`].
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Makes the directory's entries (creations, renames, removals) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Takes the exclusive lock of a data directory, or fails with `WouldBlock`.
    fn lock_dir(&self, dir: &Path) -> io::Result<Box<dyn DirLock>>;
}

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct FsStorage;

/// The byte a log's padding is made of: a newline, so a padded log is still JSON lines
/// followed by blank lines (JSON whitespace).
pub const LOG_PAD: u8 = b'\n';
/// How much padding a log file gets at a time.
pub const LOG_PAD_CHUNK: u64 = 1 << 20;
/// A log whose padding left past its last append falls under this plus a chunk gets
/// another chunk (the chunk ahead is being made durable while appends use the one before).
pub const LOG_PAD_AHEAD_MIN: u64 = 256 << 10;

#[derive(Debug)]
struct FsFile {
    shared: Arc<FsShared>,
}

#[derive(Debug)]
struct FsShared {
    file: File,
    // Some for a log: where appends go and how far padding reaches.
    log: Option<parking_lot::Mutex<LogEnd>>,
    // Woken when a background padding sync ends.
    synced: parking_lot::Condvar,
    // The fsyncs of `sync` and of new padding, one at a time; the first failure is final
    // (see `FailStopFile`).
    gate: SyncGate,
}

#[derive(Debug)]
struct LogEnd {
    // Invariant: every byte in [end, padded) is padding: LOG_PAD (written, maybe not yet
    // synced), or zeros a crash left in padding that was never synced.
    end: u64,
    padded: u64,
    // Invariant: durable <= padded, and the padding in [end, durable) is durable.
    durable: u64,
    // A background sync of new padding is running.
    syncing: bool,
    // Padding failed once (e.g. disk full): appends go on without it.
    pad_failed: bool,
}

impl FsFile {
    fn plain(file: File) -> Self {
        FsFile {
            shared: Arc::new(FsShared {
                file,
                log: None,
                synced: parking_lot::Condvar::new(),
                gate: SyncGate::default(),
            }),
        }
    }

    /// A log whose records end at `end` and whose padding, durable, reaches `padded`.
    fn log(file: File, end: u64, padded: u64) -> Self {
        FsFile {
            shared: Arc::new(FsShared {
                file,
                log: Some(parking_lot::Mutex::new(LogEnd {
                    end,
                    padded,
                    durable: padded,
                    syncing: false,
                    pad_failed: false,
                })),
                synced: parking_lot::Condvar::new(),
                gate: SyncGate::default(),
            }),
        }
    }
}

impl FsShared {
    /// Syncs the file; padding written before the sync started is durable after it.
    fn sync_padding(&self, log: &parking_lot::Mutex<LogEnd>) -> io::Result<()> {
        let padded = log.lock().padded;
        self.gate.sync(|| self.file.sync_data())?;
        let mut l = log.lock();
        l.durable = l.durable.max(padded);
        Ok(())
    }

    /// The background sync of new padding: skipped if another sync (a commit's, under
    /// `always`) made it durable meanwhile. Lock order: the gate, then the log.
    fn sync_padding_if_needed(&self, log: &parking_lot::Mutex<LogEnd>) -> io::Result<()> {
        let padded = log.lock().padded;
        self.gate.sync(|| {
            if log.lock().durable >= padded {
                return Ok(());
            }
            self.file.sync_data()
        })?;
        let mut l = log.lock();
        l.durable = l.durable.max(padded);
        Ok(())
    }
}

impl Drop for FsFile {
    /// A log closed (or left for a new segment) is cut to its last append: a cleanly
    /// closed log has no padding. Best effort: the padding is harmless if it stays.
    fn drop(&mut self) {
        if let Some(log) = &self.shared.log {
            let log = log.lock();
            if log.padded > log.end
                && let Err(e) = self.shared.file.set_len(log.end)
            {
                tracing::warn!(error = %e, "cannot cut the log's padding");
            }
        }
    }
}

/// Writes `len` bytes of [`LOG_PAD`] at `at`.
fn write_padding(file: &File, mut at: u64, len: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    static PAD: [u8; 64 << 10] = [LOG_PAD; 64 << 10];
    let end = at + len;
    while at < end {
        let n = (end - at).min(PAD.len() as u64) as usize;
        file.write_all_at(&PAD[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

impl StorageFile for FsFile {
    fn append(&self, buf: &[u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        let sh = &self.shared;
        sh.gate.check()?;
        let Some(log_lock) = &sh.log else {
            return (&sh.file).write_all(buf).map_err(|e| sh.gate.fail(e));
        };
        let mut log = log_lock.lock();
        // Records land only on durable padding (module docs): wait for the background
        // sync of the padding this append reaches, else sync it here.
        let reach = (log.end + buf.len() as u64).min(log.padded);
        while reach > log.durable && log.syncing {
            sh.synced.wait(&mut log);
        }
        if reach > log.durable {
            drop(log);
            sh.sync_padding(log_lock)?;
            log = log_lock.lock();
        }
        // On error a prefix may be written; the file fails stop.
        sh.file
            .write_all_at(buf, log.end)
            .map_err(|e| sh.gate.fail(e))?;
        log.end += buf.len() as u64;
        log.padded = log.padded.max(log.end);
        log.durable = log.durable.max(log.end);
        // Padding is written a chunk ahead of need and a background sync is asked for at
        // once; it is skipped if a sync of the file (under `always`, the commit's own)
        // made the padding durable first. So appends land on durable padding without
        // waiting for it, unless they outrun the disk.
        if !log.pad_failed && log.padded - log.end < LOG_PAD_AHEAD_MIN + LOG_PAD_CHUNK {
            match write_padding(&sh.file, log.padded, LOG_PAD_CHUNK) {
                Ok(()) => log.padded += LOG_PAD_CHUNK,
                Err(e) => {
                    // Only a cost: appends go on into a growing file.
                    tracing::warn!(error = %e, "cannot preallocate the log; appending without");
                    log.pad_failed = true;
                }
            }
        }
        if !log.syncing && log.durable < log.padded && log.durable - log.end < LOG_PAD_CHUNK / 2 {
            log.syncing = true;
            let bg = Arc::clone(sh);
            let started = std::thread::Builder::new()
                .name("atlas-pad-sync".into())
                .spawn(move || {
                    if let Some(l) = &bg.log {
                        // A failure is the gate's: the next append or sync reports it
                        // (fail-stop).
                        let _ = bg.sync_padding_if_needed(l);
                        l.lock().syncing = false;
                        bg.synced.notify_all();
                    }
                });
            if started.is_err() {
                // No thread: the append that needs it syncs itself.
                log.syncing = false;
            }
        }
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        match &self.shared.log {
            Some(log) => self.shared.sync_padding(log),
            None => self.shared.gate.sync(|| self.shared.file.sync_data()),
        }
    }
}

#[derive(Debug)]
struct FsLock {
    // Invariant: the file stays open (and so locked) for as long as the lock lives.
    _file: File,
}

impl DirLock for FsLock {}

/// Name of the lock file inside a data directory.
pub const LOCK_FILE_NAME: &str = "LOCK";

/// Mode of the directories [`FsStorage`] creates: the owner only (the AOF holds every
/// value, the gateway's bcrypt hashes among them).
pub const DIR_MODE: u32 = 0o700;
/// Mode of the files [`FsStorage`] creates: the owner only.
pub const FILE_MODE: u32 = 0o600;

/// Options that create a file with [`FILE_MODE`] from the start (no window in which the
/// umask's looser mode applies).
fn private_options() -> OpenOptions {
    let mut o = OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(FILE_MODE);
    }
    o
}

fn create_private(path: &Path) -> io::Result<File> {
    private_options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
}

impl Storage for FsStorage {
    fn create_dir_all(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        let mut b = fs::DirBuilder::new();
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            b.mode(DIR_MODE);
        }
        // The missing ancestors, innermost first (the empty path of a relative `dir`, and
        // the root, always exist).
        let missing: Vec<&Path> = dir
            .ancestors()
            .filter(|a| !a.as_os_str().is_empty())
            .take_while(|a| fs::symlink_metadata(a).is_err())
            .collect();
        let mut created = Vec::new();
        for a in missing.into_iter().rev() {
            match b.create(a) {
                Ok(()) => created.push(a.to_path_buf()),
                // Created by someone else meanwhile: not ours to make durable.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && a.is_dir() => {}
                Err(e) => return Err(e),
            }
        }
        if !dir.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{} is not a directory", dir.display()),
            ));
        }
        // A directory that existed before keeps its mode (it may be shared on purpose),
        // but the operator hears about it.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir)?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(dir = %dir.display(), mode = format!("{mode:o}"), "the data directory is readable by others; `chmod 700` it");
            }
        }
        Ok(created)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file()
                && let Some(name) = entry.file_name().to_str()
            {
                names.push(name.to_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        fs::read(path)
    }

    fn file_size(&self, path: &Path) -> io::Result<u64> {
        fs::metadata(path).map(|m| m.len())
    }

    fn create(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        Ok(Arc::new(FsFile::plain(create_private(path)?)))
    }

    fn create_log(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        Ok(Arc::new(FsFile::log(create_private(path)?, 0, 0)))
    }

    fn open_log(&self, path: &Path, end: u64) -> io::Result<Arc<dyn StorageFile>> {
        // Not O_APPEND: positioned writes go where `end` says (Linux ignores the offset
        // of a positioned write to an O_APPEND file).
        let file = OpenOptions::new().write(true).open(path)?;
        let len = file.metadata()?.len();
        if len < end {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{}: {len} bytes, records said to end at {end}",
                    path.display()
                ),
            ));
        }
        // Whatever follows is reused as padding (recovery cut anything else).
        Ok(Arc::new(FsFile::log(file, end, len)))
    }

    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        let file = OpenOptions::new().write(true).open(path)?;
        file.set_len(len)?;
        file.sync_all()
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        // The parent of a relative name is the empty path: the current directory.
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        File::open(dir)?.sync_all()
    }

    fn lock_dir(&self, dir: &Path) -> io::Result<Box<dyn DirLock>> {
        let path: PathBuf = dir.join(LOCK_FILE_NAME);
        let file = private_options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        match file.try_lock() {
            Ok(()) => {
                // Our pid, for the error a second opener prints (best effort: the lock
                // is what matters, the text only helps the operator).
                let pid = format!("{}\n", std::process::id());
                if let Err(e) = file
                    .set_len(0)
                    .and_then(|()| (&file).write_all(pid.as_bytes()))
                {
                    tracing::warn!(file = %path.display(), error = %e, "cannot write the pid into the lock file");
                }
                Ok(Box::new(FsLock { _file: file }))
            }
            Err(fs::TryLockError::WouldBlock) => Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("{} is held by another opener", path.display()),
            )),
            Err(fs::TryLockError::Error(e)) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(raw: &FsFile) -> (u64, u64, u64) {
        let l = raw.shared.log.as_ref().unwrap().lock();
        (l.end, l.padded, l.durable)
    }

    #[test]
    fn padding_runs_ahead_and_is_synced_before_records_land_on_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let raw = Arc::new(FsFile::log(create_private(&path).unwrap(), 0, 0));
        let f: Arc<dyn StorageFile> = raw.clone();
        let record = [b'r'; 100];
        for _ in 0..50_000 {
            let (end, padded, _) = state(&raw);
            f.append(&record).unwrap();
            // What this append covered inside the padding was durable when it landed: the
            // append waited for the background sync (or synced) until then.
            let reach = (end + record.len() as u64).min(padded);
            let (_, _, durable) = state(&raw);
            assert!(reach <= durable, "{reach} past {durable}");
        }
        let (end, padded, durable) = state(&raw);
        assert_eq!(end, 5_000_000);
        // A chunk and more stays written ahead of the records.
        assert!(padded - end >= LOG_PAD_AHEAD_MIN, "{padded} {end}");
        assert!(durable <= padded);
        // A sync makes everything written durable, padding included.
        f.sync().unwrap();
        let (_, padded, durable) = state(&raw);
        assert_eq!(durable, padded);
        // The file: the records, then newlines; a clean drop cuts the padding.
        let bytes = std::fs::read(&path).unwrap();
        assert!(bytes[..5_000_000].iter().all(|&b| b == b'r'));
        assert!(bytes[5_000_000..].iter().all(|&b| b == LOG_PAD));
        drop(f);
        drop(raw);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 5_000_000);
    }
}
