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

mod mem;

pub use mem::{CrashTear, MemStorage};

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// An open file, written only by appending. Methods take `&self` so one thread can append
/// while another fsyncs the same file (the `everysec` policy does exactly that).
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
    /// Creates `dir` and its parents if missing.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Names (not paths) of the regular files directly in `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// The whole content of a file.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Creates `path`, truncating it if it exists, and opens it for appending.
    fn create(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>>;
    /// Opens an existing file for appending at its end.
    fn open_append(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>>;
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

#[derive(Debug)]
struct FsFile {
    file: File,
}

impl StorageFile for FsFile {
    fn append(&self, buf: &[u8]) -> io::Result<()> {
        (&self.file).write_all(buf)
    }
    fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
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

impl Storage for FsStorage {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
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

    fn create(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(path)?;
        Ok(Arc::new(FsFile { file }))
    }

    fn open_append(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        let file = OpenOptions::new().append(true).open(path)?;
        Ok(Arc::new(FsFile { file }))
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
        File::open(dir)?.sync_all()
    }

    fn lock_dir(&self, dir: &Path) -> io::Result<Box<dyn DirLock>> {
        let path: PathBuf = dir.join(LOCK_FILE_NAME);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        match file.try_lock() {
            Ok(()) => Ok(Box::new(FsLock { _file: file })),
            Err(fs::TryLockError::WouldBlock) => Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("{} is held by another opener", path.display()),
            )),
            Err(fs::TryLockError::Error(e)) => Err(e),
        }
    }
}
