//! The command table: what each command is ([`Exec`]: a keyspace function of
//! [`crate::atlasd::kv`] and whether it may write, or a server command, [`Srv`]), its
//! Redis arity and key positions ([`Spec`], as `COMMAND` reports them), and the lookup by
//! name.
//!
//! Invariant: [`SPECS`] is the one list of the commands served (`COMMAND`, the ACL checks
//! and dispatch all read it); names are lowercase there and looked up in any case.

use crate::atlasd::kv::{self, KvFn};
use crate::atlasd::strings;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::LazyLock;

/// What a command is.
#[derive(Clone, Copy)]
pub enum Exec {
    /// A keyspace command, and whether it may write.
    Kv(KvFn, bool),
    /// A server command.
    Server(Srv),
}

/// Server commands (connection state, admin, whole-keyspace reads).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Srv {
    Hello,
    Auth,
    Select,
    Quit,
    Client,
    Command,
    Info,
    Dbsize,
    Keys,
    Scan,
    Randomkey,
    Flushdb,
    Flushall,
    Save,
    Bgsave,
    Bgrewriteaof,
    Lastsave,
    Config,
    Multi,
    Exec,
    Discard,
    Shutdown,
    Reset,
    Watch,
    Unwatch,
}

/// One row of the command table.
pub struct Spec {
    /// Lowercase name (as in Redis's error messages).
    pub name: &'static str,
    /// Redis arity: `n` exactly n arguments (name included), `-n` at least n.
    pub arity: i32,
    /// What runs.
    pub exec: Exec,
    /// First key, last key (-1: last argument), step: for `COMMAND`.
    pub keys: (i32, i32, i32),
}

const NO_KEYS: (i32, i32, i32) = (0, 0, 0);
const KEY1: (i32, i32, i32) = (1, 1, 1);
const ALL_KEYS: (i32, i32, i32) = (1, -1, 1);

macro_rules! kv {
    ($name:literal, $arity:expr, $f:path, $w:expr, $keys:expr) => {
        Spec {
            name: $name,
            arity: $arity,
            exec: Exec::Kv($f, $w),
            keys: $keys,
        }
    };
}
macro_rules! srv {
    ($name:literal, $arity:expr, $c:ident) => {
        Spec {
            name: $name,
            arity: $arity,
            exec: Exec::Server(Srv::$c),
            keys: NO_KEYS,
        }
    };
}

/// Every command served.
pub static SPECS: &[Spec] = &[
    kv!("ping", -1, kv::ping, false, NO_KEYS),
    kv!("echo", 2, kv::echo, false, NO_KEYS),
    kv!("time", 1, kv::time, false, NO_KEYS),
    kv!("get", 2, kv::get, false, KEY1),
    kv!("set", -3, kv::set, true, KEY1),
    kv!("setnx", 3, kv::setnx, true, KEY1),
    kv!("setex", 4, kv::setex, true, KEY1),
    kv!("psetex", 4, kv::psetex, true, KEY1),
    kv!("getset", 3, kv::getset, true, KEY1),
    kv!("getdel", 2, kv::getdel, true, KEY1),
    kv!("getex", -2, kv::getex, true, KEY1),
    kv!("mget", -2, kv::mget, false, ALL_KEYS),
    kv!("mset", -3, kv::mset, true, (1, -1, 2)),
    kv!("msetnx", -3, kv::msetnx, true, (1, -1, 2)),
    kv!("append", 3, kv::append, true, KEY1),
    kv!("strlen", 2, kv::strlen, false, KEY1),
    kv!("incr", 2, kv::incr, true, KEY1),
    kv!("decr", 2, kv::decr, true, KEY1),
    kv!("incrby", 3, kv::incrby, true, KEY1),
    kv!("decrby", 3, kv::decrby, true, KEY1),
    kv!("incrbyfloat", 3, kv::incrbyfloat, true, KEY1),
    kv!("del", -2, kv::del, true, ALL_KEYS),
    kv!("unlink", -2, kv::del, true, ALL_KEYS),
    kv!("exists", -2, kv::exists, false, ALL_KEYS),
    kv!("type", 2, kv::type_, false, KEY1),
    kv!("rename", 3, kv::rename, true, (1, 2, 1)),
    kv!("renamenx", 3, kv::renamenx, true, (1, 2, 1)),
    kv!("expire", -3, kv::expire, true, KEY1),
    kv!("pexpire", -3, kv::pexpire, true, KEY1),
    kv!("expireat", -3, kv::expireat, true, KEY1),
    kv!("pexpireat", -3, kv::pexpireat, true, KEY1),
    kv!("ttl", 2, kv::ttl, false, KEY1),
    kv!("pttl", 2, kv::pttl, false, KEY1),
    kv!("expiretime", 2, kv::expiretime, false, KEY1),
    kv!("pexpiretime", 2, kv::pexpiretime, false, KEY1),
    kv!("persist", 2, kv::persist, true, KEY1),
    kv!("setrange", 4, strings::setrange, true, KEY1),
    kv!("getrange", 4, strings::getrange, false, KEY1),
    kv!("substr", 4, strings::getrange, false, KEY1),
    kv!("setbit", 4, strings::setbit, true, KEY1),
    kv!("getbit", 3, strings::getbit, false, KEY1),
    kv!("bitcount", -2, strings::bitcount, false, KEY1),
    kv!("bitpos", -3, strings::bitpos, false, KEY1),
    kv!("bitop", -4, strings::bitop, true, (2, -1, 1)),
    kv!("bitfield", -2, strings::bitfield, true, KEY1),
    kv!("bitfield_ro", -2, strings::bitfield_ro, false, KEY1),
    kv!("lcs", -3, strings::lcs, false, (1, 2, 1)),
    kv!("copy", -3, strings::copy, true, (1, 2, 1)),
    kv!("touch", -2, strings::touch, false, ALL_KEYS),
    kv!("object", -2, strings::object, false, (2, 2, 1)),
    kv!("memory", -2, strings::memory, false, (2, 2, 1)),
    kv!("wait", 3, strings::wait, false, NO_KEYS),
    kv!("function", -2, strings::function, false, NO_KEYS),
    srv!("hello", -1, Hello),
    srv!("auth", -2, Auth),
    srv!("select", 2, Select),
    srv!("quit", -1, Quit),
    srv!("client", -2, Client),
    srv!("command", -1, Command),
    srv!("info", -1, Info),
    srv!("dbsize", 1, Dbsize),
    srv!("keys", 2, Keys),
    srv!("scan", -2, Scan),
    srv!("randomkey", 1, Randomkey),
    srv!("flushdb", -1, Flushdb),
    srv!("flushall", -1, Flushall),
    srv!("save", 1, Save),
    srv!("bgsave", -1, Bgsave),
    srv!("bgrewriteaof", 1, Bgrewriteaof),
    srv!("lastsave", 1, Lastsave),
    srv!("config", -2, Config),
    srv!("multi", 1, Multi),
    srv!("exec", 1, Exec),
    srv!("discard", 1, Discard),
    srv!("shutdown", -1, Shutdown),
    srv!("reset", 1, Reset),
    Spec {
        name: "watch",
        arity: -2,
        exec: Exec::Server(Srv::Watch),
        keys: ALL_KEYS,
    },
    srv!("unwatch", 1, Unwatch),
];

static TABLE: LazyLock<HashMap<&'static str, &'static Spec>> =
    LazyLock::new(|| SPECS.iter().map(|s| (s.name, s)).collect());

/// The spec of a command name (any case).
pub fn lookup(name: &[u8]) -> Option<&'static Spec> {
    let mut buf = [0u8; 16];
    let n = name.len();
    if n > buf.len() {
        return None;
    }
    for (d, s) in buf.iter_mut().zip(name) {
        *d = s.to_ascii_lowercase();
    }
    TABLE.get(std::str::from_utf8(&buf[..n]).ok()?).copied()
}

/// The Redis error line of an unknown command (its name and first arguments, cut).
pub(super) fn unknown_command(args: &[Bytes]) -> String {
    let mut s = format!(
        "ERR unknown command '{}', with args beginning with: ",
        String::from_utf8_lossy(&args[0][..args[0].len().min(128)])
    );
    for a in args.iter().skip(1).take(8) {
        s.push('\'');
        s.push_str(&String::from_utf8_lossy(&a[..a.len().min(128)]));
        s.push_str("' ");
    }
    s
}
