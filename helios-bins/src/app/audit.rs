//! The audit log: security events (logins and their failures, lockouts, password changes,
//! user and role changes, token revocation, admin actions, configuration changes) as
//! append-only JSON lines in a file of their own, apart from the operational logs.
//!
//! One line per event, written whole with one `write` on a file opened for appending
//! (mode 0600, created so): `time` (RFC 3339, UTC, ms) and `time_ms`, `event`
//! (`auth.login`, `user.disable`, ...), `outcome` (`success`, `failure`, `denied`,
//! `locked_out`, `error`), `status` (the HTTP status answered), `actor` (the user id acting,
//! `null` before authentication), `username` (the name a login or registration gave),
//! `client` (the peer address), `request_id`, and `target` (the object acted on, if any).
//! Nothing secret is written: no password, token or request body.
//!
//! Rotation by size: a line that would take the file past `max_bytes` first moves
//! `audit.log` to `audit.log.1` (and `.1` to `.2`, ..., dropping the one past `keep`), so the
//! log's disk use is bounded by about `max_bytes * (keep + 1)`.
//!
//! Invariants: lines are never rewritten or reordered (append only; rotation renames
//! whole files); a failed write is reported on the operational log (`error`) and counted,
//! never a panic and never a refused request; writes are serialized by one lock, so lines
//! never interleave. Lines reach the OS at once (no buffering in the process); they are
//! not fsynced one by one (a power loss may take the last lines; a process crash does not).

use parking_lot::Mutex;
use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// One security event, as the caller knows it.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEvent<'a> {
    /// What happened: `auth.login`, `user.role_assign`, `config.rate_limits`, ...
    pub event: &'a str,
    /// `success`, `failure`, `denied`, `locked_out` or `error`.
    pub outcome: &'a str,
    /// The HTTP status answered.
    pub status: u16,
    /// The acting user's id (`None` before authentication).
    pub actor: Option<&'a str>,
    /// The username a login or registration named (`None` elsewhere).
    pub username: Option<&'a str>,
    /// The peer address.
    pub client: &'a str,
    /// The request id (`X-Request-Id`).
    pub request_id: &'a str,
    /// The object acted on: a user id, role, route id, `user/role`, ...
    pub target: Option<&'a str>,
}

#[derive(Serialize)]
struct Line<'a> {
    time: String,
    time_ms: u64,
    #[serde(flatten)]
    event: &'a AuditEvent<'a>,
}

struct Writer {
    file: Option<File>,
    size: u64,
}

/// An audit log file with size rotation. `Send + Sync`; share it in an `Arc`.
pub struct AuditLog {
    path: PathBuf,
    max_bytes: u64,
    keep: u32,
    writer: Mutex<Writer>,
    failures: AtomicU64,
    written: AtomicU64,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("path", &self.path)
            .field("max_bytes", &self.max_bytes)
            .field("keep", &self.keep)
            .finish_non_exhaustive()
    }
}

/// Opens `path` for appending, creating it with mode 0600. An existing file keeps its
/// mode (an operator may have widened it on purpose); its size counts toward rotation.
fn open_append(path: &Path) -> std::io::Result<(File, u64)> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    let size = file.metadata()?.len();
    Ok((file, size))
}

impl AuditLog {
    /// The log at `path` (its directory is created `0700` if missing), rotated past `max_bytes`
    /// (at least 4 KiB), keeping `keep` older files. Fails if the file cannot be opened:
    /// a gateway told to audit does not start without its audit log.
    pub fn open(path: &Path, max_bytes: u64, keep: u32) -> std::io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            use std::os::unix::fs::DirBuilderExt;
            // Owner-only from creation, as the data directory (an existing one is kept).
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        let (file, size) = open_append(path)?;
        Ok(Self {
            path: path.to_owned(),
            max_bytes: max_bytes.max(4096),
            keep,
            writer: Mutex::new(Writer {
                file: Some(file),
                size,
            }),
            failures: AtomicU64::new(0),
            written: AtomicU64::new(0),
        })
    }

    /// The file written to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Events written since start.
    pub fn written_count(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Events that could not be written since start.
    pub fn failure_count(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Appends `event`, stamped `now_ms` (Unix ms), rotating first if the line would take
    /// the file past its bound. A failure is logged and counted.
    pub fn record(&self, now_ms: u64, event: &AuditEvent<'_>) {
        let time = i64::try_from(now_ms)
            .ok()
            .and_then(chrono::DateTime::from_timestamp_millis)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            .unwrap_or_default();
        let line = Line {
            time,
            time_ms: now_ms,
            event,
        };
        let mut text = match serde_json::to_vec(&line) {
            Ok(t) => t,
            Err(e) => return self.failed(&e.to_string()),
        };
        text.push(b'\n');
        let mut w = self.writer.lock();
        if w.size > 0
            && w.size + text.len() as u64 > self.max_bytes
            && let Err(e) = self.rotate(&mut w)
        {
            // Keep appending to the current file rather than lose the event.
            tracing::error!(path = %self.path.display(), error = %e, "audit log rotation failed");
        }
        if w.file.is_none() {
            match open_append(&self.path) {
                Ok((f, size)) => {
                    w.file = Some(f);
                    w.size = size;
                }
                Err(e) => return self.failed(&e.to_string()),
            }
        }
        let result = match w.file.as_mut() {
            Some(f) => f.write_all(&text),
            None => Ok(()),
        };
        match result {
            Ok(()) => {
                w.size += text.len() as u64;
                self.written.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                // Reopen on the next event (the file may have been removed or the disk
                // freed meanwhile).
                w.file = None;
                drop(w);
                self.failed(&e.to_string());
            }
        }
    }

    fn failed(&self, reason: &str) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        tracing::error!(path = %self.path.display(), error = %reason, "audit event not written");
    }

    /// `path.{keep-1}` -> `path.{keep}`, ..., `path` -> `path.1`, then a fresh `path`.
    fn rotate(&self, w: &mut Writer) -> std::io::Result<()> {
        let numbered = |n: u32| {
            let mut p = self.path.clone().into_os_string();
            p.push(format!(".{n}"));
            PathBuf::from(p)
        };
        if self.keep == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            for n in (1..self.keep).rev() {
                match std::fs::rename(numbered(n), numbered(n + 1)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
            std::fs::rename(&self.path, numbered(1))?;
        }
        let (f, size) = open_append(&self.path)?;
        w.file = Some(f);
        w.size = size;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn event(n: usize) -> AuditEvent<'static> {
        AuditEvent {
            event: "auth.login",
            outcome: if n.is_multiple_of(2) {
                "success"
            } else {
                "failure"
            },
            status: 200,
            actor: None,
            username: Some("alice"),
            client: "127.0.0.1",
            request_id: "r-1",
            target: None,
        }
    }

    #[test]
    fn lines_are_json_with_every_field_and_the_file_is_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/audit.log");
        let log = AuditLog::open(&path, 1 << 20, 3).unwrap();
        log.record(1_700_000_000_123, &event(0));
        log.record(1_700_000_000_124, &event(1));
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["time"], "2023-11-14T22:13:20.123Z");
        assert_eq!(lines[0]["time_ms"], 1_700_000_000_123u64);
        assert_eq!(lines[0]["event"], "auth.login");
        assert_eq!(lines[0]["outcome"], "success");
        assert_eq!(lines[1]["outcome"], "failure");
        assert_eq!(lines[0]["actor"], serde_json::Value::Null);
        assert_eq!(lines[0]["username"], "alice");
        assert_eq!(lines[0]["client"], "127.0.0.1");
        assert_eq!(lines[0]["request_id"], "r-1");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(log.written_count(), 2);
    }

    #[test]
    fn rotation_bounds_the_files_and_keeps_every_line_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::open(&path, 4096, 2).unwrap();
        for n in 0..200 {
            log.record(1_700_000_000_000 + n as u64, &event(n));
        }
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["audit.log", "audit.log.1", "audit.log.2"]);
        let mut times = Vec::new();
        for name in ["audit.log.2", "audit.log.1", "audit.log"] {
            let p = dir.path().join(name);
            assert!(std::fs::metadata(&p).unwrap().len() <= 4096, "{name}");
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{name}");
            for l in std::fs::read_to_string(&p).unwrap().lines() {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                times.push(v["time_ms"].as_u64().unwrap());
            }
        }
        // The newest lines, in order, none torn; the oldest rotated away.
        assert!(times.windows(2).all(|w| w[1] == w[0] + 1), "{times:?}");
        assert_eq!(*times.last().unwrap(), 1_700_000_000_199);
        assert!(times.len() < 200);
    }

    #[test]
    fn a_removed_file_is_recreated_and_failures_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::open(&path, 1 << 20, 1).unwrap();
        log.record(1, &event(0));
        // The directory goes away: the write to the open file still lands (unlinked), and
        // a reopen fails later without a panic.
        std::fs::remove_dir_all(dir.path()).unwrap();
        log.writer.lock().file = None;
        log.record(2, &event(1));
        assert_eq!(log.failure_count(), 1);
        std::fs::create_dir_all(dir.path()).unwrap();
        log.record(3, &event(0));
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1);
        assert_eq!(log.written_count(), 2);
    }
}
