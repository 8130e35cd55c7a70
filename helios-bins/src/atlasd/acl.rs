//! What a helios-auth user may do (with `auth_users: true`): Redis ACL semantics over
//! helios-auth's RBAC.
//!
//! A connection is either unrestricted (no [`Scope`]: the `default` user of
//! `requirepass`, a connection that needs no AUTH, or a helios-auth user holding
//! `admin:*`), seeing the raw keyspace verbatim; or scoped to one helios-auth user who
//! does not hold `admin:*`. A scoped connection behaves as a Redis 7 ACL user
//! `on +@all -@admin -@dangerous %R~<own>* %W~<own>*`:
//!
//! - **Keys.** Its keys live in the user's own KV namespace, the one the gateway's
//!   `/api/v1/kv` serves: client key `k` is ATLAS key `kv:u:{userId}:k`
//!   ([`KvSpace::User`]). Every key argument (the key positions of the command table,
//!   both keys of RENAME, every key of MSET/DEL/EXISTS) is mapped before the command runs,
//!   and replies that name keys (KEYS, SCAN, RANDOMKEY) give them back without the prefix;
//!   KEYS and SCAN patterns match the client's key. DBSIZE counts the namespace only. So
//!   any other key (another user's, `auth:`, `rbac:`, `rate:`, `job:`, `meta:`) cannot be
//!   named at all: `GET auth:user:x` reads the user's own key `auth:user:x`.
//! - **Rights on keys** follow RBAC ([`helios_auth::Auth::authorize`] at AUTH): `kv:read`
//!   reads, `kv:write` writes, as Redis's key permissions: a command that reads a value
//!   needs `kv:read`, one that changes a key needs `kv:write`, and a write that also returns
//!   what was stored (GETSET, GETDEL, GETEX, SET ... GET, INCR and friends, RENAME's
//!   source) needs both. Refused: `-NOPERM No permissions to access a key`, and nothing runs.
//!   KEYS, SCAN, RANDOMKEY and DBSIZE need `kv:read`.
//! - **Server commands** that act on the whole server (FLUSHALL, FLUSHDB, SAVE, BGSAVE,
//!   BGREWRITEAOF, LASTSAVE, CONFIG, INFO, SHUTDOWN) need `admin:*`:
//!   `-NOPERM User <name> has no permissions to run the '<cmd>' command` (Redis 7's text,
//!   `config|get` for a subcommand). Connection commands (PING, ECHO, TIME, HELLO, AUTH,
//!   SELECT, CLIENT, COMMAND, QUIT, RESET, MULTI/EXEC/DISCARD) are open to everyone.
//!
//! A refusal inside MULTI fails the transaction (EXEC answers `EXECABORT`), as in Redis.
//! A connection's rights are fixed when it authenticates.
//!
//! Cost: only scoped connections pay anything (one check and one allocation per key);
//! a connection without a scope takes one `None` branch per command.

use super::cmd::{Exec, Spec, Srv};
use super::kv::key_arg;
use bytes::Bytes;
use helios_core::keys::{KvSpace, parse_kv_bytes};

/// The reply to a command on a key the caller may not read or write (Redis 7's text).
pub const NOPERM_KEY: &str = "NOPERM No permissions to access a key";

/// A connection scoped to one non-admin helios-auth user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    username: String,
    user_id: String,
    // `kv:u:{userId}:`, built by `KvSpace` (never by hand).
    prefix: String,
    read: bool,
    write: bool,
}

/// Write commands that also return what was stored (Redis's key-spec `ACCESS` flag): they
/// need `kv:read` as well as `kv:write`. SET only with its GET option.
const READING_WRITES: &[&str] = &[
    "getset",
    "getdel",
    "getex",
    "incr",
    "decr",
    "incrby",
    "decrby",
    "incrbyfloat",
    "rename",
    "renamenx",
    "setbit",
    "bitfield",
    "bitop",
    "copy",
];

impl Scope {
    /// The scope of user `user_id` (`username` for error texts) with its rights on its own
    /// namespace; `None` if the id cannot name a namespace.
    pub fn new(username: String, user_id: String, read: bool, write: bool) -> Option<Scope> {
        let prefix = KvSpace::User(&user_id).prefix().ok()?;
        Some(Scope {
            username,
            user_id,
            prefix,
            read,
            write,
        })
    }

    /// The user's name.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// The ATLAS prefix of the namespace (`kv:u:{userId}:`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Whether the user may read its keys (KEYS, SCAN, RANDOMKEY, DBSIZE and reads).
    pub fn may_read(&self) -> bool {
        self.read
    }

    /// The client key of ATLAS key `full`, if `full` is in this namespace.
    pub fn client_key<'a>(&self, full: &'a [u8]) -> Option<&'a [u8]> {
        match parse_kv_bytes(full) {
            Ok((KvSpace::User(id), key)) if id == self.user_id => Some(key),
            _ => None,
        }
    }

    /// `-NOPERM User <name> has no permissions to run the '<cmd>' command`.
    pub fn command_denied(&self, spec: &Spec, args: &[Bytes]) -> String {
        // Redis names a container's subcommand: `config|get`.
        let sub = args
            .get(1)
            .filter(|s| {
                spec.name == "config" && s.len() <= 16 && s.iter().all(u8::is_ascii_alphabetic)
            })
            .map(|s| format!("|{}", String::from_utf8_lossy(s).to_ascii_lowercase()))
            .unwrap_or_default();
        format!(
            "NOPERM User {} has no permissions to run the '{}{sub}' command",
            self.username, spec.name
        )
    }

    /// Checks that the user may run `args` (of `spec`, arity already checked) and maps its
    /// keys into the namespace; `Err` is the reply, and then nothing of `args` changed.
    pub fn admit(&self, spec: &Spec, args: &mut [Bytes]) -> Result<(), String> {
        match spec.exec {
            Exec::Kv(_, write) => {
                let (first, last, step) = spec.keys;
                if first == 0 {
                    // PING, ECHO, TIME.
                    return Ok(());
                }
                let reads =
                    !write || READING_WRITES.contains(&spec.name) || set_with_get(spec, args);
                if (reads && !self.read) || (write && !self.write) {
                    return Err(NOPERM_KEY.to_owned());
                }
                let n = args.len() as i32;
                let last = if last < 0 { n + last } else { last.min(n - 1) };
                let space = KvSpace::User(&self.user_id);
                let mut i = first;
                while i <= last {
                    let arg = &mut args[i as usize];
                    // A key that is not one (empty) stays as it is: the command refuses or
                    // skips it as it would anyway, and it never reaches ATLAS.
                    if let Ok(k) = key_arg(arg) {
                        // Cannot fail: the id was checked by `new` and `k` is not empty.
                        let full = space.key_bytes(k).map_err(|_| NOPERM_KEY.to_owned())?;
                        *arg = Bytes::from(full);
                    }
                    i += step;
                }
                Ok(())
            }
            Exec::Server(
                Srv::Hello
                | Srv::Auth
                | Srv::Select
                | Srv::Quit
                | Srv::Client
                | Srv::Command
                | Srv::Multi
                | Srv::Exec
                | Srv::Discard
                | Srv::Unwatch
                | Srv::Reset,
            ) => Ok(()),
            // WATCH reads its keys (Redis's key-spec RO): mapped into the namespace.
            Exec::Server(Srv::Watch) => {
                if !self.read {
                    return Err(NOPERM_KEY.to_owned());
                }
                let space = KvSpace::User(&self.user_id);
                for arg in args[1..].iter_mut() {
                    if let Ok(k) = key_arg(arg) {
                        let full = space.key_bytes(k).map_err(|_| NOPERM_KEY.to_owned())?;
                        *arg = Bytes::from(full);
                    }
                }
                Ok(())
            }
            Exec::Server(Srv::Dbsize | Srv::Keys | Srv::Scan | Srv::Randomkey) if self.read => {
                Ok(())
            }
            Exec::Server(_) => Err(self.command_denied(spec, args)),
        }
    }
}

/// Whether `args` is a SET with its GET option (which returns the old value).
fn set_with_get(spec: &Spec, args: &[Bytes]) -> bool {
    spec.name == "set" && args.iter().skip(3).any(|a| a.eq_ignore_ascii_case(b"GET"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::atlasd::cmd::lookup;

    fn args(a: &[&str]) -> Vec<Bytes> {
        a.iter()
            .map(|s| Bytes::copy_from_slice(s.as_bytes()))
            .collect()
    }

    fn admit(scope: &Scope, a: &[&str]) -> Result<Vec<String>, String> {
        let mut v = args(a);
        scope.admit(lookup(a[0].as_bytes()).unwrap(), &mut v)?;
        Ok(v.iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect())
    }

    fn user(read: bool, write: bool) -> Scope {
        Scope::new("alice".into(), "a1".into(), read, write).unwrap()
    }

    #[test]
    fn keys_are_mapped_into_the_users_namespace() {
        let s = user(true, true);
        assert_eq!(s.prefix(), "kv:u:a1:");
        assert_eq!(admit(&s, &["GET", "k"]).unwrap(), ["GET", "kv:u:a1:k"]);
        assert_eq!(
            admit(&s, &["RENAME", "a", "b"]).unwrap(),
            ["RENAME", "kv:u:a1:a", "kv:u:a1:b"]
        );
        assert_eq!(
            admit(&s, &["MSET", "a", "1", "b", "2"]).unwrap(),
            ["MSET", "kv:u:a1:a", "1", "kv:u:a1:b", "2"]
        );
        assert_eq!(
            admit(&s, &["DEL", "a", "auth:user:x"]).unwrap(),
            ["DEL", "kv:u:a1:a", "kv:u:a1:auth:user:x"]
        );
        assert_eq!(
            admit(&s, &["SET", "k", "v", "EX", "10"]).unwrap(),
            ["SET", "kv:u:a1:k", "v", "EX", "10"]
        );
        // Not keys: left for the command's own error.
        assert_eq!(admit(&s, &["GET", ""]).unwrap(), ["GET", ""]);
        assert_eq!(admit(&s, &["PING", "x"]).unwrap(), ["PING", "x"]);
        // Back again, only from this namespace.
        assert_eq!(
            s.client_key(b"kv:u:a1:auth:user:x"),
            Some(&b"auth:user:x"[..])
        );
        assert_eq!(s.client_key(b"kv:u:a1:\xff"), Some(&b"\xff"[..]));
        assert_eq!(s.client_key(b"kv:u:a2:k"), None);
        assert_eq!(s.client_key(b"auth:user:a1"), None);
        assert!(Scope::new("x".into(), "a:b".into(), true, true).is_none());
    }

    #[test]
    fn rights_follow_redis_key_permissions() {
        let reader = user(true, false);
        assert!(admit(&reader, &["GET", "k"]).is_ok());
        assert!(admit(&reader, &["KEYS", "*"]).is_ok());
        for w in [
            &["SET", "k", "v"][..],
            &["DEL", "k"],
            &["GETSET", "k", "v"],
            &["EXPIRE", "k", "1"],
        ] {
            assert_eq!(admit(&reader, w).unwrap_err(), NOPERM_KEY, "{w:?}");
        }
        let writer = user(false, true);
        assert!(admit(&writer, &["SET", "k", "v"]).is_ok());
        assert!(admit(&writer, &["DEL", "k"]).is_ok());
        for r in [
            &["GET", "k"][..],
            &["GETDEL", "k"],
            &["INCR", "k"],
            &["SET", "k", "v", "GET"],
            &["RENAME", "a", "b"],
        ] {
            assert_eq!(admit(&writer, r).unwrap_err(), NOPERM_KEY, "{r:?}");
        }
        assert_eq!(
            admit(&writer, &["SCAN", "0"]).unwrap_err(),
            "NOPERM User alice has no permissions to run the 'scan' command"
        );
        // A refusal leaves the arguments as they were.
        let mut a = args(&["SET", "k", "v"]);
        assert!(reader.admit(lookup(b"set").unwrap(), &mut a).is_err());
        assert_eq!(a, args(&["SET", "k", "v"]));
    }

    #[test]
    fn every_command_at_every_valid_arity_is_admitted_or_refused_never_a_panic() {
        use crate::atlasd::cmd::SPECS;
        let s = user(true, true);
        for spec in SPECS {
            for n in 1..9usize {
                let valid = match usize::try_from(spec.arity) {
                    Ok(exact) => n == exact,
                    Err(_) => n >= spec.arity.unsigned_abs() as usize,
                };
                if !valid {
                    continue;
                }
                let mut a: Vec<Bytes> = (0..n).map(|i| Bytes::from(format!("a{i}"))).collect();
                a[0] = Bytes::from_static(spec.name.as_bytes());
                // The first key (argument 2 of BITOP, OBJECT and MEMORY), when given.
                if s.admit(spec, &mut a).is_ok()
                    && spec.keys.0 > 0
                    && let Some(k) = a.get(spec.keys.0 as usize)
                {
                    assert!(k.starts_with(b"kv:u:a1:"), "{}", spec.name);
                }
            }
        }
    }

    #[test]
    fn server_commands_need_admin() {
        let s = user(true, true);
        for (cmd, name) in [
            (&["FLUSHALL"][..], "flushall"),
            (&["FLUSHDB"], "flushdb"),
            (&["SAVE"], "save"),
            (&["BGSAVE"], "bgsave"),
            (&["BGREWRITEAOF"], "bgrewriteaof"),
            (&["LASTSAVE"], "lastsave"),
            (&["INFO"], "info"),
            (&["SHUTDOWN"], "shutdown"),
            (&["CONFIG", "GET", "*"], "config|get"),
            (&["CONFIG", "x y", "*"], "config"),
        ] {
            assert_eq!(
                admit(&s, cmd).unwrap_err(),
                format!("NOPERM User alice has no permissions to run the '{name}' command")
            );
        }
        for ok in [
            &["PING"][..],
            &["HELLO"],
            &["CLIENT", "ID"],
            &["SELECT", "0"],
            &["MULTI"],
            &["DBSIZE"],
        ] {
            assert!(admit(&s, ok).is_ok(), "{ok:?}");
        }
    }
}
