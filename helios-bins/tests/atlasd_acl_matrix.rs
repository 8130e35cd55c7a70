//! helios-atlasd with `auth_users: true`, table-driven (issue 17, point 10): every command
//! class against the caller's own keys, another user's keys and internal keys, for a plain
//! user (`alice`, and `bob` whose keys are the "other" ones), a `readonly` user (`reader`)
//! and an admin, each row with its exact expected reply.
//!
//! A non-admin user's key arguments are names inside its own namespace (`k` is ATLAS key
//! `kv:u:{userId}:k`): bob's key name as alice writes it is alice's own key, and a raw full
//! key (`kv:u:{bobId}:bk`, `auth:user:{id}`, `rbac:user_roles:{id}`, `rate:x`, `job:x`,
//! `meta:kv_layout`) is a literal name in alice's namespace, never the real record. A
//! `readonly` user gets `-NOPERM No permissions to access a key` on every write; server
//! commands need `admin:*`. After the table an admin connection checks, over the raw
//! keyspace, that nothing outside alice's namespace changed (byte for byte) and that her
//! writes landed under `kv:u:{aliceId}:`.
//!
//! The table ([`ROWS`]) is data: one loop runs it in order (rows build on the state the
//! rows before them left) and collects every mismatch into one failure message.

mod common;

use common::atlasd::{ADMIN_PW, ALICE_PW, BOB_PW, Server, add_user, gateway_dir, sorted};
use redis::Value;
use std::collections::BTreeMap;

const READER_PW: &str = "Saffron-Meadow-Piston-56";

/// The user ids of the data directory.
struct Ids {
    alice: String,
    bob: String,
    reader: String,
}

/// A data directory as the gateway leaves it: the bootstrap `admin`, `alice` and `bob`
/// (role `user`), `reader` (role `readonly`).
fn users_dir() -> (tempfile::TempDir, Ids) {
    gateway_dir(|state| Ids {
        alice: add_user(state, "alice", ALICE_PW, "user"),
        bob: add_user(state, "bob", BOB_PW, "user"),
        reader: add_user(state, "reader", READER_PW, "readonly"),
    })
}

// ---- the table ----

/// Who sends the row's command (each one connection, kept for the whole table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
enum Who {
    /// Role `user`: reads and writes its own namespace.
    Alice,
    /// Role `user`: the owner of the "other" keys (only reads in the table, so its keys
    /// stay as seeded).
    Bob,
    /// Role `readonly`.
    Reader,
    /// `admin:*`: the raw keyspace.
    Admin,
}

impl Who {
    /// In discriminant order (the index of each one's connection).
    const ALL: [Who; 4] = [Who::Alice, Who::Bob, Who::Reader, Who::Admin];

    fn name(self) -> &'static str {
        match self {
            Who::Alice => "alice",
            Who::Bob => "bob",
            Who::Reader => "reader",
            Who::Admin => "admin",
        }
    }

    fn password(self) -> &'static str {
        match self {
            Who::Alice => ALICE_PW,
            Who::Bob => BOB_PW,
            Who::Reader => READER_PW,
            Who::Admin => ADMIN_PW,
        }
    }
}

/// What the row's key arguments point at (from the caller's point of view).
#[derive(Clone, Copy, Debug)]
enum Target {
    /// The caller's own keys.
    Own,
    /// Another user's client key name (`bk` is bob's; for alice it names her own `bk`).
    OthersName,
    /// Another user's raw ATLAS key (`kv:u:{bobId}:bk`, `kv:u:{aliceId}:ak`).
    OthersRaw,
    /// Internal keys (`auth:`, `rbac:`, `rate:`, `job:`, `meta:`).
    Internal,
    /// Several key positions, own and other/internal mixed.
    Mixed,
    /// No key: keyspace listing, server and connection commands.
    NoKey,
}

/// The expected reply. Strings may hold the placeholders of [`Ctx::expand`].
#[derive(Debug)]
enum Want {
    /// `+OK`.
    Okay,
    /// A simple string.
    Status(&'static str),
    /// A nil reply.
    Nil,
    Int(i64),
    /// An integer in `lo..=hi` (TTLs).
    IntIn(i64, i64),
    AnyInt,
    /// A bulk string.
    Bulk(&'static str),
    /// A bulk string starting with this.
    BulkStarts(&'static str),
    AnyBulk,
    /// An array of bulk strings or nils, in order (MGET).
    Array(&'static [Option<&'static str>]),
    /// An array of keys, in any order (KEYS).
    Keys(&'static [&'static str]),
    /// A complete SCAN: cursor `0` and these keys, in any order.
    Scan(&'static [&'static str]),
    /// An EXEC reply: one item per queued command.
    Exec(&'static [Want]),
    /// `-NOPERM No permissions to access a key`.
    NoPermKey,
    /// `-NOPERM User <caller> has no permissions to run the '<cmd>' command`.
    NoPermCmd(&'static str),
    /// This exact error.
    ErrIs(&'static str),
    /// One of these.
    AnyOf(&'static [Want]),
}

struct Row {
    /// The command class the row covers.
    class: &'static str,
    who: Who,
    target: Target,
    cmd: &'static [&'static str],
    want: Want,
}

const fn r(
    class: &'static str,
    who: Who,
    target: Target,
    cmd: &'static [&'static str],
    want: Want,
) -> Row {
    Row {
        class,
        who,
        target,
        cmd,
        want,
    }
}

const LIST: &str = "keyspace listing";
const READ: &str = "single-key read";
const WRITE: &str = "single-key write";
const RW: &str = "read-and-write";
const MULTI_KEY: &str = "multi-key";
const TX: &str = "MULTI/EXEC";
const SERVER: &str = "server command";
const CONN: &str = "connection";

const NOPERM_KEY: &str = "NOPERM No permissions to access a key";
const EXECABORT: &str = "EXECABORT Transaction discarded because of previous errors.";
const NOAUTH: &str = "NOAUTH Authentication required.";

use Target::{Internal, Mixed, NoKey, OthersName, OthersRaw, Own};
use Want::{
    AnyBulk, AnyInt, AnyOf, Array, Bulk, BulkStarts, ErrIs, Exec, Int, IntIn, Keys, Nil, NoPermCmd,
    NoPermKey, Okay, Scan, Status,
};
use Who::{Admin, Alice, Bob, Reader};

/// The seed (see `seed`): alice `ak`=`alice-1`, `an`=`10`; bob `bk`=`bob-secret`, `bn`=`42`,
/// `bt`=`bob-ttl` (EX 1000); reader `rk`=`reader-seed` (written by the admin); `rate:x`,
/// `job:x` (admin) and the gateway's `auth:user:*`, `rbac:user_roles:*`, `meta:kv_layout`.
///
/// Comments `NS:` track alice's namespace after the rows above them.
static ROWS: &[Row] = &[
    // ---- keyspace listing, before any write ----
    r(LIST, Alice, NoKey, &["KEYS", "*"], Keys(&["ak", "an"])),
    r(LIST, Alice, Internal, &["KEYS", "auth:*"], Keys(&[])),
    r(LIST, Alice, Internal, &["KEYS", "{auth_bob}"], Keys(&[])),
    r(LIST, Alice, OthersRaw, &["KEYS", "kv:u:*"], Keys(&[])),
    r(LIST, Alice, OthersName, &["KEYS", "b*"], Keys(&[])),
    r(
        LIST,
        Alice,
        NoKey,
        &["SCAN", "0", "MATCH", "*", "COUNT", "1000"],
        Scan(&["ak", "an"]),
    ),
    r(
        LIST,
        Alice,
        Internal,
        &["SCAN", "0", "MATCH", "rbac:*", "COUNT", "1000"],
        Scan(&[]),
    ),
    r(
        LIST,
        Alice,
        NoKey,
        &["RANDOMKEY"],
        AnyOf(&[Bulk("ak"), Bulk("an")]),
    ),
    r(LIST, Alice, NoKey, &["DBSIZE"], Int(2)),
    r(LIST, Bob, NoKey, &["KEYS", "*"], Keys(&["bk", "bn", "bt"])),
    r(LIST, Bob, OthersName, &["KEYS", "a*"], Keys(&[])),
    r(
        LIST,
        Bob,
        NoKey,
        &["SCAN", "0", "MATCH", "b*", "COUNT", "1000"],
        Scan(&["bk", "bn", "bt"]),
    ),
    r(LIST, Bob, NoKey, &["DBSIZE"], Int(3)),
    r(LIST, Reader, NoKey, &["KEYS", "*"], Keys(&["rk"])),
    r(LIST, Reader, Internal, &["KEYS", "auth:*"], Keys(&[])),
    r(
        LIST,
        Reader,
        NoKey,
        &["SCAN", "0", "COUNT", "1000"],
        Scan(&["rk"]),
    ),
    r(LIST, Reader, NoKey, &["RANDOMKEY"], Bulk("rk")),
    r(LIST, Reader, NoKey, &["DBSIZE"], Int(1)),
    r(
        LIST,
        Admin,
        OthersRaw,
        &["KEYS", "kv:u:{bob}:*"],
        Keys(&["{bob_raw}", "kv:u:{bob}:bn", "kv:u:{bob}:bt"]),
    ),
    r(LIST, Admin, Internal, &["KEYS", "job:*"], Keys(&["{job}"])),
    r(
        LIST,
        Admin,
        OthersRaw,
        &["SCAN", "0", "MATCH", "kv:u:{reader}:*", "COUNT", "100000"],
        Scan(&["kv:u:{reader}:rk"]),
    ),
    r(LIST, Admin, NoKey, &["RANDOMKEY"], AnyBulk),
    r(LIST, Admin, NoKey, &["DBSIZE"], AnyInt),
    // ---- single-key reads ----
    r(READ, Alice, Own, &["GET", "ak"], Bulk("alice-1")),
    r(READ, Alice, OthersName, &["GET", "bk"], Nil),
    r(READ, Alice, OthersRaw, &["GET", "{bob_raw}"], Nil),
    r(READ, Alice, Internal, &["GET", "{auth_alice}"], Nil),
    r(READ, Alice, Internal, &["GET", "{auth_bob}"], Nil),
    r(READ, Alice, Internal, &["GET", "{roles_alice}"], Nil),
    r(READ, Alice, Internal, &["GET", "{rate}"], Nil),
    r(READ, Alice, Internal, &["GET", "{job}"], Nil),
    r(READ, Alice, Internal, &["GET", "{meta}"], Nil),
    r(READ, Alice, Own, &["STRLEN", "ak"], Int(7)),
    r(READ, Alice, OthersName, &["STRLEN", "bk"], Int(0)),
    r(READ, Alice, OthersRaw, &["STRLEN", "{bob_raw}"], Int(0)),
    r(READ, Alice, Internal, &["STRLEN", "{rate}"], Int(0)),
    r(READ, Alice, Own, &["EXISTS", "ak"], Int(1)),
    r(READ, Alice, OthersName, &["EXISTS", "bk"], Int(0)),
    r(READ, Alice, OthersRaw, &["EXISTS", "{bob_raw}"], Int(0)),
    r(READ, Alice, Internal, &["EXISTS", "{roles_bob}"], Int(0)),
    r(READ, Alice, Own, &["TTL", "ak"], Int(-1)),
    r(READ, Alice, OthersName, &["TTL", "bt"], Int(-2)),
    r(READ, Alice, OthersRaw, &["TTL", "kv:u:{bob}:bt"], Int(-2)),
    r(READ, Alice, Internal, &["TTL", "{meta}"], Int(-2)),
    r(READ, Alice, Internal, &["PTTL", "{auth_bob}"], Int(-2)),
    r(READ, Alice, Own, &["TYPE", "ak"], Status("string")),
    r(READ, Alice, OthersName, &["TYPE", "bk"], Status("none")),
    r(
        READ,
        Alice,
        Internal,
        &["TYPE", "{auth_alice}"],
        Status("none"),
    ),
    // GETRANGE (issue 23): a read of the caller's own key; a raw full key is a literal
    // name in its namespace (absent: the empty string).
    r(
        READ,
        Alice,
        Own,
        &["GETRANGE", "ak", "0", "-1"],
        Bulk("alice-1"),
    ),
    r(
        READ,
        Alice,
        OthersRaw,
        &["GETRANGE", "{bob_raw}", "0", "-1"],
        Bulk(""),
    ),
    r(READ, Reader, Own, &["GET", "rk"], Bulk("reader-seed")),
    r(READ, Reader, OthersName, &["GET", "bk"], Nil),
    r(READ, Reader, OthersRaw, &["GET", "{bob_raw}"], Nil),
    r(READ, Reader, Internal, &["GET", "{auth_bob}"], Nil),
    r(READ, Reader, Internal, &["GET", "{rate}"], Nil),
    r(READ, Reader, Own, &["STRLEN", "rk"], Int(11)),
    r(READ, Reader, Own, &["EXISTS", "rk"], Int(1)),
    r(READ, Reader, Own, &["TTL", "rk"], Int(-1)),
    r(READ, Reader, Own, &["TYPE", "rk"], Status("string")),
    r(READ, Reader, Internal, &["TYPE", "{job}"], Status("none")),
    r(READ, Bob, Own, &["GET", "bk"], Bulk("bob-secret")),
    r(READ, Bob, Own, &["STRLEN", "bk"], Int(10)),
    r(READ, Bob, Own, &["TTL", "bt"], IntIn(900, 1000)),
    r(READ, Bob, OthersName, &["GET", "ak"], Nil),
    r(READ, Bob, OthersRaw, &["GET", "{alice_raw}"], Nil),
    r(
        READ,
        Admin,
        OthersRaw,
        &["GET", "{bob_raw}"],
        Bulk("bob-secret"),
    ),
    r(
        READ,
        Admin,
        OthersRaw,
        &["GET", "{alice_raw}"],
        Bulk("alice-1"),
    ),
    r(READ, Admin, OthersName, &["GET", "bk"], Nil),
    r(READ, Admin, Internal, &["GET", "{rate}"], Bulk("rate-seed")),
    r(
        READ,
        Admin,
        Internal,
        &["TYPE", "{auth_bob}"],
        Status("string"),
    ),
    r(READ, Admin, Internal, &["EXISTS", "{auth_alice}"], Int(1)),
    // ---- single-key writes ----
    r(WRITE, Alice, OthersName, &["SET", "bk", "alice-bk"], Okay),
    r(WRITE, Alice, OthersName, &["GET", "bk"], Bulk("alice-bk")),
    r(
        WRITE,
        Alice,
        OthersRaw,
        &["SET", "{bob_raw}", "alice-raw"],
        Okay,
    ),
    // The escalation attempt: alice's own literal key of that name.
    r(
        WRITE,
        Alice,
        Internal,
        &["SET", "{roles_alice}", "[\"admin\"]"],
        Okay,
    ),
    r(WRITE, Alice, Own, &["INCR", "an"], Int(11)),
    r(WRITE, Alice, OthersName, &["INCR", "bn"], Int(1)),
    r(WRITE, Alice, Internal, &["INCR", "{rate}"], Int(1)),
    r(WRITE, Alice, Own, &["APPEND", "ak", "+"], Int(8)),
    r(WRITE, Alice, Internal, &["APPEND", "{job}", "j"], Int(1)),
    r(WRITE, Alice, Own, &["EXPIRE", "ak", "1000"], Int(1)),
    r(WRITE, Alice, Own, &["TTL", "ak"], IntIn(900, 1000)),
    r(WRITE, Alice, OthersName, &["EXPIRE", "bt", "1000"], Int(0)),
    r(WRITE, Alice, Internal, &["EXPIRE", "{meta}", "100"], Int(0)),
    r(
        WRITE,
        Alice,
        OthersRaw,
        &["EXPIRE", "{bob_raw}", "5000"],
        Int(1),
    ),
    r(WRITE, Alice, OthersRaw, &["PERSIST", "{bob_raw}"], Int(1)),
    r(WRITE, Alice, Own, &["PERSIST", "ak"], Int(1)),
    r(WRITE, Alice, OthersName, &["PERSIST", "bt"], Int(0)),
    r(WRITE, Alice, Internal, &["PERSIST", "{auth_alice}"], Int(0)),
    r(WRITE, Alice, OthersName, &["DEL", "bk"], Int(1)),
    r(WRITE, Alice, Internal, &["DEL", "{auth_bob}"], Int(0)),
    r(WRITE, Alice, Internal, &["DEL", "{rate}"], Int(1)),
    // NS: ak=alice-1+ an=11 bn=1 {bob_raw}=alice-raw {roles_alice}=["admin"] {job}=j
    r(WRITE, Bob, Own, &["GET", "bk"], Bulk("bob-secret")),
    r(WRITE, Bob, Own, &["GET", "bn"], Bulk("42")),
    r(WRITE, Reader, Own, &["SET", "rk", "x"], NoPermKey),
    r(WRITE, Reader, Own, &["SETNX", "rk2", "x"], NoPermKey),
    r(WRITE, Reader, OthersName, &["SET", "bk", "x"], NoPermKey),
    // Issue 23's string commands: reads need kv:read, range and bit writes kv:write,
    // and the writes that also read (SETBIT, BITFIELD, BITOP, COPY) need both.
    r(
        READ,
        Reader,
        Own,
        &["GETRANGE", "rk", "0", "5"],
        Bulk("reader"),
    ),
    r(READ, Reader, OthersName, &["GETBIT", "bk", "0"], Int(0)),
    r(READ, Reader, Own, &["BITCOUNT", "rk"], AnyInt),
    r(
        READ,
        Alice,
        Internal,
        &["OBJECT", "ENCODING", "{auth_alice}"],
        Nil,
    ),
    r(
        READ,
        Alice,
        Internal,
        &["MEMORY", "USAGE", "{auth_bob}"],
        Nil,
    ),
    // Alice's own keys by those names (written by rows above), never bob's.
    r(
        READ,
        Alice,
        OthersRaw,
        &["LCS", "{bob_raw}", "ak", "LEN"],
        AnyInt,
    ),
    r(READ, Alice, OthersName, &["TOUCH", "bk", "bn"], Int(1)),
    r(READ, Alice, OthersName, &["WATCH", "bk"], Okay),
    r(READ, Alice, NoKey, &["UNWATCH"], Okay),
    r(READ, Reader, Own, &["WATCH", "rk"], Okay),
    r(READ, Reader, NoKey, &["UNWATCH"], Okay),
    r(WRITE, Reader, Own, &["SETRANGE", "rk", "0", "x"], NoPermKey),
    r(WRITE, Reader, Own, &["SETBIT", "rk", "0", "1"], NoPermKey),
    r(
        WRITE,
        Reader,
        Own,
        &["BITFIELD", "rk", "GET", "u8", "0"],
        NoPermKey,
    ),
    r(
        WRITE,
        Reader,
        OthersName,
        &["BITOP", "OR", "rk", "bk"],
        NoPermKey,
    ),
    r(WRITE, Reader, Own, &["COPY", "rk", "rk2"], NoPermKey),
    r(
        WRITE,
        Reader,
        Internal,
        &["SET", "{auth_bob}", "x"],
        NoPermKey,
    ),
    r(WRITE, Reader, Own, &["INCR", "rk"], NoPermKey),
    r(WRITE, Reader, Own, &["APPEND", "rk", "x"], NoPermKey),
    r(WRITE, Reader, Own, &["EXPIRE", "rk", "10"], NoPermKey),
    r(WRITE, Reader, Own, &["PERSIST", "rk"], NoPermKey),
    r(WRITE, Reader, Own, &["DEL", "rk"], NoPermKey),
    r(WRITE, Reader, OthersRaw, &["DEL", "{bob_raw}"], NoPermKey),
    r(WRITE, Reader, Own, &["GET", "rk"], Bulk("reader-seed")),
    r(WRITE, Admin, NoKey, &["SET", "adm:scratch", "v"], Okay),
    r(WRITE, Admin, NoKey, &["INCR", "adm:n"], Int(1)),
    r(
        WRITE,
        Admin,
        NoKey,
        &["DEL", "adm:scratch", "adm:n"],
        Int(2),
    ),
    // ---- read-and-write ----
    r(RW, Alice, OthersName, &["GETSET", "bk", "alice-bk2"], Nil),
    r(RW, Alice, OthersName, &["GET", "bk"], Bulk("alice-bk2")),
    r(RW, Alice, Internal, &["GETSET", "{auth_alice}", "pwn"], Nil),
    r(
        RW,
        Alice,
        Internal,
        &["GETSET", "{auth_alice}", "pwn2"],
        Bulk("pwn"),
    ),
    r(
        RW,
        Alice,
        OthersRaw,
        &["GETDEL", "{bob_raw}"],
        Bulk("alice-raw"),
    ),
    r(RW, Alice, OthersRaw, &["GETDEL", "{bob_raw}"], Nil),
    r(RW, Alice, Internal, &["GETDEL", "{roles_bob}"], Nil),
    r(
        RW,
        Alice,
        Own,
        &["SET", "ak", "v2", "GET"],
        Bulk("alice-1+"),
    ),
    r(RW, Alice, Internal, &["SET", "{meta}", "m", "GET"], Nil),
    r(
        RW,
        Alice,
        Internal,
        &["SET", "{meta}", "m2", "GET"],
        Bulk("m"),
    ),
    r(RW, Alice, Own, &["GETEX", "ak"], Bulk("v2")),
    r(RW, Alice, OthersName, &["GETEX", "bt"], Nil),
    r(RW, Reader, Own, &["GETSET", "rk", "x"], NoPermKey),
    r(RW, Reader, Own, &["GETDEL", "rk"], NoPermKey),
    r(RW, Reader, Own, &["SET", "rk", "x", "GET"], NoPermKey),
    r(RW, Reader, Own, &["GETEX", "rk"], NoPermKey),
    r(RW, Reader, Own, &["INCRBY", "rk", "1"], NoPermKey),
    r(RW, Reader, OthersRaw, &["GETDEL", "{bob_raw}"], NoPermKey),
    // NS: ak=v2 an=11 bn=1 bk=alice-bk2 {roles_alice}=["admin"] {job}=j {auth_alice}=pwn2
    //     {meta}=m2
    // ---- multi-key: every key position ----
    r(
        MULTI_KEY,
        Alice,
        Mixed,
        &[
            "MGET",
            "ak",
            "bk",
            "{bob_raw}",
            "{auth_bob}",
            "{rate}",
            "{meta}",
        ],
        Array(&[Some("v2"), Some("alice-bk2"), None, None, None, Some("m2")]),
    ),
    r(
        MULTI_KEY,
        Alice,
        Mixed,
        &[
            "MSET",
            "m1",
            "1",
            "{bob_raw}",
            "mraw",
            "{auth_bob}",
            "mauth",
        ],
        Okay,
    ),
    r(
        MULTI_KEY,
        Alice,
        Internal,
        &["GET", "{auth_bob}"],
        Bulk("mauth"),
    ),
    r(
        MULTI_KEY,
        Alice,
        Mixed,
        &["MSETNX", "m2", "2", "{job}", "jj"],
        Int(0),
    ),
    r(
        MULTI_KEY,
        Alice,
        Mixed,
        &["MSETNX", "m2", "2", "{roles_bob}", "rr"],
        Int(1),
    ),
    r(
        MULTI_KEY,
        Alice,
        Mixed,
        &["DEL", "m1", "{bob_raw}", "{rate}", "bk"],
        Int(3),
    ),
    r(
        MULTI_KEY,
        Alice,
        Mixed,
        &[
            "EXISTS",
            "ak",
            "bk",
            "{bob_raw}",
            "{auth_bob}",
            "{auth_alice}",
        ],
        Int(3),
    ),
    r(
        MULTI_KEY,
        Alice,
        Internal,
        &["EXISTS", "{meta}", "{meta}"],
        Int(2),
    ),
    // RENAME mine auth:user:x: writes alice's literal `auth:user:x`, not the record.
    r(
        MULTI_KEY,
        Alice,
        Mixed,
        &["RENAME", "m2", "{auth_bob}"],
        Okay,
    ),
    r(
        MULTI_KEY,
        Alice,
        Internal,
        &["GET", "{auth_bob}"],
        Bulk("2"),
    ),
    r(
        MULTI_KEY,
        Alice,
        Mixed,
        &["RENAME", "ak", "{bob_raw}"],
        Okay,
    ),
    r(MULTI_KEY, Alice, Own, &["GET", "ak"], Nil),
    r(
        MULTI_KEY,
        Alice,
        OthersRaw,
        &["GET", "{bob_raw}"],
        Bulk("v2"),
    ),
    r(
        MULTI_KEY,
        Alice,
        Mixed,
        &["RENAME", "{bob_raw}", "ak"],
        Okay,
    ),
    r(
        MULTI_KEY,
        Alice,
        OthersName,
        &["RENAME", "bk", "x"],
        ErrIs("ERR no such key"),
    ),
    r(
        MULTI_KEY,
        Alice,
        Internal,
        &["RENAME", "kv:u:{bob}:bn", "x"],
        ErrIs("ERR no such key"),
    ),
    r(
        MULTI_KEY,
        Alice,
        Internal,
        &["RENAME", "{roles_alice}", "{roles_bob}"],
        Okay,
    ),
    r(
        MULTI_KEY,
        Alice,
        Mixed,
        &["RENAMENX", "ak", "{job}"],
        Int(0),
    ),
    r(
        MULTI_KEY,
        Alice,
        Mixed,
        &["RENAMENX", "ak", "{rate}"],
        Int(1),
    ),
    r(
        MULTI_KEY,
        Alice,
        Mixed,
        &["RENAMENX", "{rate}", "ak"],
        Int(1),
    ),
    r(
        MULTI_KEY,
        Alice,
        Internal,
        &["RENAMENX", "{meta}", "{auth_alice}"],
        Int(0),
    ),
    // NS: ak=v2 an=11 bn=1 {job}=j {auth_alice}=pwn2 {meta}=m2 {auth_bob}=2
    //     {roles_bob}=["admin"]
    r(
        MULTI_KEY,
        Bob,
        Mixed,
        &["MGET", "bk", "ak", "{alice_raw}"],
        Array(&[Some("bob-secret"), None, None]),
    ),
    r(
        MULTI_KEY,
        Bob,
        Mixed,
        &["EXISTS", "bk", "bn", "bt", "ak", "{auth_bob}"],
        Int(3),
    ),
    r(
        MULTI_KEY,
        Reader,
        Mixed,
        &["MGET", "rk", "bk", "{bob_raw}", "{auth_bob}"],
        Array(&[Some("reader-seed"), None, None, None]),
    ),
    r(
        MULTI_KEY,
        Reader,
        Mixed,
        &["EXISTS", "rk", "{bob_raw}", "rk"],
        Int(2),
    ),
    r(
        MULTI_KEY,
        Reader,
        Mixed,
        &["MSET", "rk", "1", "{bob_raw}", "2"],
        NoPermKey,
    ),
    r(
        MULTI_KEY,
        Reader,
        Mixed,
        &["MSETNX", "new", "1", "{auth_bob}", "2"],
        NoPermKey,
    ),
    r(MULTI_KEY, Reader, Mixed, &["DEL", "rk", "bk"], NoPermKey),
    r(
        MULTI_KEY,
        Reader,
        Mixed,
        &["RENAME", "rk", "{auth_bob}"],
        NoPermKey,
    ),
    r(
        MULTI_KEY,
        Reader,
        Mixed,
        &["RENAMENX", "rk", "{bob_raw}"],
        NoPermKey,
    ),
    r(
        MULTI_KEY,
        Admin,
        Mixed,
        &["MGET", "{bob_raw}", "{rate}", "{alice_raw}"],
        Array(&[Some("bob-secret"), Some("rate-seed"), Some("v2")]),
    ),
    // ---- keyspace listing, after the writes ----
    r(
        LIST,
        Alice,
        NoKey,
        &["KEYS", "*"],
        Keys(&[
            "ak",
            "an",
            "bn",
            "{job}",
            "{auth_alice}",
            "{meta}",
            "{auth_bob}",
            "{roles_bob}",
        ]),
    ),
    r(
        LIST,
        Alice,
        Internal,
        &["KEYS", "auth:*"],
        Keys(&["{auth_alice}", "{auth_bob}"]),
    ),
    r(LIST, Alice, OthersRaw, &["KEYS", "kv:u:*"], Keys(&[])),
    r(
        LIST,
        Alice,
        Internal,
        &["KEYS", "rbac:user_roles:*"],
        Keys(&["{roles_bob}"]),
    ),
    r(
        LIST,
        Alice,
        Internal,
        &["SCAN", "0", "MATCH", "*:*", "COUNT", "1000"],
        Scan(&[
            "{job}",
            "{auth_alice}",
            "{meta}",
            "{auth_bob}",
            "{roles_bob}",
        ]),
    ),
    r(LIST, Alice, NoKey, &["DBSIZE"], Int(8)),
    r(LIST, Bob, NoKey, &["KEYS", "*"], Keys(&["bk", "bn", "bt"])),
    r(LIST, Bob, NoKey, &["DBSIZE"], Int(3)),
    r(LIST, Reader, NoKey, &["DBSIZE"], Int(1)),
    // ---- MULTI/EXEC ----
    r(TX, Alice, NoKey, &["MULTI"], Okay),
    r(TX, Alice, Own, &["SET", "tx1", "1"], Status("QUEUED")),
    r(
        TX,
        Alice,
        Internal,
        &["SET", "{auth_bob}", "tx"],
        Status("QUEUED"),
    ),
    r(TX, Alice, NoKey, &["FLUSHALL"], NoPermCmd("flushall")),
    r(TX, Alice, NoKey, &["EXEC"], ErrIs(EXECABORT)),
    r(TX, Alice, Own, &["GET", "tx1"], Nil),
    r(TX, Alice, Internal, &["GET", "{auth_bob}"], Bulk("2")),
    r(TX, Alice, NoKey, &["MULTI"], Okay),
    r(
        TX,
        Alice,
        OthersRaw,
        &["SET", "{bob_raw}", "txraw"],
        Status("QUEUED"),
    ),
    r(TX, Alice, Own, &["INCR", "tx2"], Status("QUEUED")),
    r(TX, Alice, OthersName, &["GET", "bk"], Status("QUEUED")),
    r(TX, Alice, NoKey, &["EXEC"], Exec(&[Okay, Int(1), Nil])),
    r(TX, Alice, OthersRaw, &["GET", "{bob_raw}"], Bulk("txraw")),
    r(TX, Alice, NoKey, &["MULTI"], Okay),
    r(
        TX,
        Alice,
        NoKey,
        &["CONFIG", "GET", "*"],
        NoPermCmd("config|get"),
    ),
    r(TX, Alice, NoKey, &["DISCARD"], Okay),
    r(TX, Reader, NoKey, &["MULTI"], Okay),
    r(TX, Reader, Own, &["GET", "rk"], Status("QUEUED")),
    r(TX, Reader, Own, &["SET", "rk", "x"], NoPermKey),
    r(TX, Reader, NoKey, &["EXEC"], ErrIs(EXECABORT)),
    r(TX, Reader, NoKey, &["MULTI"], Okay),
    r(
        TX,
        Reader,
        Mixed,
        &["MGET", "rk", "{bob_raw}"],
        Status("QUEUED"),
    ),
    r(
        TX,
        Reader,
        NoKey,
        &["EXEC"],
        Exec(&[Array(&[Some("reader-seed"), None])]),
    ),
    r(TX, Reader, Own, &["GET", "rk"], Bulk("reader-seed")),
    r(TX, Bob, NoKey, &["MULTI"], Okay),
    r(TX, Bob, Own, &["GET", "bk"], Status("QUEUED")),
    r(
        TX,
        Bob,
        NoKey,
        &["KEYS", "*"],
        ErrIs(
            "ERR 'keys' inside MULTI is not supported by helios-atlasd (only keyspace commands are)",
        ),
    ),
    r(TX, Bob, NoKey, &["EXEC"], ErrIs(EXECABORT)),
    r(TX, Bob, NoKey, &["MULTI"], Okay),
    r(TX, Bob, Own, &["GET", "bk"], Status("QUEUED")),
    r(
        TX,
        Bob,
        OthersRaw,
        &["GET", "{alice_raw}"],
        Status("QUEUED"),
    ),
    r(TX, Bob, NoKey, &["EXEC"], Exec(&[Bulk("bob-secret"), Nil])),
    // NS: ak=v2 an=11 bn=1 {job}=j {auth_alice}=pwn2 {meta}=m2 {auth_bob}=2
    //     {roles_bob}=["admin"] {bob_raw}=txraw tx2=1
    // ---- server commands (need admin:*) ----
    r(SERVER, Alice, NoKey, &["FLUSHALL"], NoPermCmd("flushall")),
    r(
        SERVER,
        Alice,
        NoKey,
        &["FLUSHALL", "ASYNC"],
        NoPermCmd("flushall"),
    ),
    r(SERVER, Alice, NoKey, &["FLUSHDB"], NoPermCmd("flushdb")),
    r(
        SERVER,
        Alice,
        NoKey,
        &["CONFIG", "GET", "*"],
        NoPermCmd("config|get"),
    ),
    r(
        SERVER,
        Alice,
        NoKey,
        &["CONFIG", "GET", "requirepass"],
        NoPermCmd("config|get"),
    ),
    r(SERVER, Alice, NoKey, &["SAVE"], NoPermCmd("save")),
    r(SERVER, Alice, NoKey, &["BGSAVE"], NoPermCmd("bgsave")),
    r(
        SERVER,
        Alice,
        NoKey,
        &["BGREWRITEAOF"],
        NoPermCmd("bgrewriteaof"),
    ),
    r(SERVER, Alice, NoKey, &["LASTSAVE"], NoPermCmd("lastsave")),
    r(SERVER, Alice, NoKey, &["INFO"], NoPermCmd("info")),
    r(
        SERVER,
        Alice,
        NoKey,
        &["INFO", "keyspace"],
        NoPermCmd("info"),
    ),
    r(SERVER, Bob, NoKey, &["FLUSHALL"], NoPermCmd("flushall")),
    r(SERVER, Bob, NoKey, &["FLUSHDB"], NoPermCmd("flushdb")),
    r(
        SERVER,
        Bob,
        NoKey,
        &["CONFIG", "GET", "*"],
        NoPermCmd("config|get"),
    ),
    r(
        SERVER,
        Bob,
        NoKey,
        &["CONFIG", "GET", "requirepass"],
        NoPermCmd("config|get"),
    ),
    r(SERVER, Bob, NoKey, &["SAVE"], NoPermCmd("save")),
    r(
        SERVER,
        Bob,
        NoKey,
        &["BGREWRITEAOF"],
        NoPermCmd("bgrewriteaof"),
    ),
    r(SERVER, Bob, NoKey, &["INFO"], NoPermCmd("info")),
    r(SERVER, Reader, NoKey, &["FLUSHALL"], NoPermCmd("flushall")),
    r(SERVER, Reader, NoKey, &["FLUSHDB"], NoPermCmd("flushdb")),
    r(
        SERVER,
        Reader,
        NoKey,
        &["CONFIG", "GET", "*"],
        NoPermCmd("config|get"),
    ),
    r(
        SERVER,
        Reader,
        NoKey,
        &["CONFIG", "GET", "requirepass"],
        NoPermCmd("config|get"),
    ),
    r(SERVER, Reader, NoKey, &["SAVE"], NoPermCmd("save")),
    r(SERVER, Reader, NoKey, &["BGSAVE"], NoPermCmd("bgsave")),
    r(
        SERVER,
        Reader,
        NoKey,
        &["BGREWRITEAOF"],
        NoPermCmd("bgrewriteaof"),
    ),
    r(SERVER, Reader, NoKey, &["LASTSAVE"], NoPermCmd("lastsave")),
    r(SERVER, Reader, NoKey, &["INFO"], NoPermCmd("info")),
    // The admin (not FLUSHALL/FLUSHDB/SHUTDOWN: they would end the test's data).
    r(
        SERVER,
        Admin,
        NoKey,
        &["CONFIG", "GET", "requirepass"],
        Array(&[Some("requirepass"), Some("<redacted>")]),
    ),
    r(
        SERVER,
        Admin,
        NoKey,
        &["INFO", "keyspace"],
        BulkStarts("# Keyspace"),
    ),
    r(SERVER, Admin, NoKey, &["SAVE"], Okay),
    r(SERVER, Admin, NoKey, &["LASTSAVE"], AnyInt),
    r(
        SERVER,
        Admin,
        NoKey,
        &["BGREWRITEAOF"],
        AnyOf(&[
            Status("Background append only file rewriting started"),
            ErrIs("ERR Background save already in progress"),
        ]),
    ),
    // ---- connection commands: open to everyone ----
    r(CONN, Alice, NoKey, &["PING"], Status("PONG")),
    r(CONN, Reader, NoKey, &["SELECT", "0"], Okay),
    r(
        CONN,
        Reader,
        NoKey,
        &["SELECT", "1"],
        ErrIs("ERR DB index is out of range"),
    ),
    // ---- last: SHUTDOWN, refused to non-admins (the server must still answer after) ----
    r(
        SERVER,
        Alice,
        NoKey,
        &["SHUTDOWN", "NOSAVE"],
        NoPermCmd("shutdown"),
    ),
    r(SERVER, Bob, NoKey, &["SHUTDOWN"], NoPermCmd("shutdown")),
    r(
        SERVER,
        Reader,
        NoKey,
        &["SHUTDOWN", "NOSAVE"],
        NoPermCmd("shutdown"),
    ),
    r(CONN, Alice, NoKey, &["PING"], Status("PONG")),
    // RESET drops the user: back to unauthenticated, not to an unrestricted connection.
    r(CONN, Bob, NoKey, &["RESET"], Status("RESET")),
    r(CONN, Bob, OthersRaw, &["GET", "{bob_raw}"], ErrIs(NOAUTH)),
];

/// Alice's namespace after the table (client key, value), keys with placeholders.
const ALICE_FINAL: &[(&str, &str)] = &[
    ("ak", "v2"),
    ("an", "11"),
    ("bn", "1"),
    ("{job}", "j"),
    ("{auth_alice}", "pwn2"),
    ("{meta}", "m2"),
    ("{auth_bob}", "2"),
    ("{roles_bob}", "[\"admin\"]"),
    ("{bob_raw}", "txraw"),
    ("tx2", "1"),
];

// ---- running it ----

/// The test's ids and the placeholders of the table.
struct Ctx {
    subst: Vec<(&'static str, String)>,
}

impl Ctx {
    fn new(ids: &Ids) -> Ctx {
        let kv = |id: &str, k: &str| helios_core::keys::KvSpace::User(id).key(k).unwrap();
        let keys = helios_core::keys::auth_user;
        let roles = helios_core::keys::rbac_user_roles;
        Ctx {
            subst: vec![
                ("{alice}", ids.alice.clone()),
                ("{bob}", ids.bob.clone()),
                ("{reader}", ids.reader.clone()),
                ("{alice_raw}", kv(&ids.alice, "ak")),
                ("{bob_raw}", kv(&ids.bob, "bk")),
                ("{auth_alice}", keys(&ids.alice).unwrap()),
                ("{auth_bob}", keys(&ids.bob).unwrap()),
                ("{roles_alice}", roles(&ids.alice).unwrap()),
                ("{roles_bob}", roles(&ids.bob).unwrap()),
                ("{rate}", "rate:x".to_owned()),
                ("{job}", "job:x".to_owned()),
                (
                    "{meta}",
                    helios_core::keys::meta(helios_core::keys::META_KV_LAYOUT).unwrap(),
                ),
            ],
        }
    }

    fn expand(&self, s: &str) -> String {
        let mut s = s.to_owned();
        for (p, v) in &self.subst {
            s = s.replace(p, v);
        }
        s
    }
}

/// The reply, or the error as it is on the wire (`CODE detail`).
type Reply = Result<Value, String>;

fn send(con: &mut redis::Connection, args: &[String]) -> Reply {
    let mut c = redis::cmd(&args[0]);
    for a in &args[1..] {
        c.arg(a.as_str());
    }
    c.query::<Value>(con)
        .map_err(|e| match (e.code(), e.detail()) {
            (Some(c), Some(d)) => format!("{c} {d}"),
            (Some(c), None) => c.to_owned(),
            _ => e.to_string(),
        })
}

fn bulk_is(v: &Value, want: &str) -> bool {
    matches!(v, Value::BulkString(b) if b == want.as_bytes())
}

fn bulks(v: &Value) -> Option<Vec<String>> {
    match v {
        Value::Array(items) => items
            .iter()
            .map(|i| match i {
                Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

fn same_keys(got: &Value, want: &[&str], x: &Ctx) -> bool {
    let want = sorted(want.iter().map(|k| x.expand(k)).collect());
    bulks(got).is_some_and(|g| sorted(g) == want)
}

fn matches(want: &Want, got: &Reply, who: Who, x: &Ctx) -> bool {
    match (want, got) {
        (NoPermKey, Err(e)) => e == NOPERM_KEY,
        (NoPermCmd(cmd), Err(e)) => {
            *e == format!(
                "NOPERM User {} has no permissions to run the '{cmd}' command",
                who.name()
            )
        }
        (ErrIs(w), Err(e)) => *e == x.expand(w),
        (AnyOf(ws), g) => ws.iter().any(|w| matches(w, g, who, x)),
        (_, Err(_)) => false,
        (Okay, Ok(v)) => {
            matches!(v, Value::Okay) || matches!(v, Value::SimpleString(s) if s == "OK")
        }
        (Status(w), Ok(v)) => match v {
            Value::SimpleString(s) => s == w,
            Value::Okay => *w == "OK",
            _ => false,
        },
        (Nil, Ok(v)) => matches!(v, Value::Nil),
        (Int(n), Ok(v)) => matches!(v, Value::Int(i) if i == n),
        (IntIn(lo, hi), Ok(v)) => matches!(v, Value::Int(i) if (lo..=hi).contains(&i)),
        (AnyInt, Ok(v)) => matches!(v, Value::Int(_)),
        (Bulk(w), Ok(v)) => bulk_is(v, &x.expand(w)),
        (BulkStarts(w), Ok(v)) => {
            matches!(v, Value::BulkString(b) if b.starts_with(x.expand(w).as_bytes()))
        }
        (AnyBulk, Ok(v)) => matches!(v, Value::BulkString(_)),
        (Array(ws), Ok(Value::Array(items))) => {
            items.len() == ws.len()
                && ws.iter().zip(items).all(|(w, i)| match w {
                    Some(w) => bulk_is(i, &x.expand(w)),
                    None => matches!(i, Value::Nil),
                })
        }
        (Keys(ws), Ok(v)) => same_keys(v, ws, x),
        (Scan(ws), Ok(Value::Array(items))) => {
            items.len() == 2 && bulk_is(&items[0], "0") && same_keys(&items[1], ws, x)
        }
        (Exec(ws), Ok(Value::Array(items))) => {
            items.len() == ws.len()
                && ws
                    .iter()
                    .zip(items)
                    .all(|(w, i)| matches(w, &Ok(i.clone()), who, x))
        }
        _ => false,
    }
}

/// A short form of a reply for the failure message.
fn show(got: &Reply) -> String {
    fn one(v: &Value) -> String {
        match v {
            Value::Nil => "nil".into(),
            Value::Int(i) => format!("(integer) {i}"),
            Value::BulkString(b) => format!("{:?}", String::from_utf8_lossy(b)),
            Value::SimpleString(s) => format!("+{s}"),
            Value::Okay => "+OK".into(),
            Value::Array(items) => {
                format!("[{}]", items.iter().map(one).collect::<Vec<_>>().join(", "))
            }
            other => format!("{other:?}"),
        }
    }
    match got {
        Ok(x) => one(x),
        Err(e) => format!("-{e}"),
    }
}

/// Every key of the raw keyspace with its value and whether it has a TTL (admin view).
fn raw_keyspace(admin: &mut redis::Connection) -> BTreeMap<String, (Vec<u8>, bool)> {
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(admin).unwrap();
    keys.into_iter()
        .map(|k| {
            let v: Vec<u8> = redis::cmd("GET").arg(&k).query(admin).unwrap();
            let pttl: i64 = redis::cmd("PTTL").arg(&k).query(admin).unwrap();
            (k, (v, pttl >= 0))
        })
        .collect()
}

fn set(con: &mut redis::Connection, args: &[&str]) {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    let () = c.query(con).unwrap();
}

#[test]
fn acl_matrix_each_command_class_against_own_other_and_internal_keys() {
    let (dir, ids) = users_dir();
    let server = Server::with_users(dir.path());
    let x = Ctx::new(&ids);
    // Every login before the seed snapshot (a login may touch the user's records).
    let mut cons: Vec<redis::Connection> = Who::ALL
        .iter()
        .map(|w| server.login(w.name(), w.password()))
        .collect();
    macro_rules! c {
        ($w:expr) => {
            &mut cons[$w as usize]
        };
    }

    // ---- seed ----
    set(c!(Alice), &["SET", "ak", "alice-1"]);
    set(c!(Alice), &["SET", "an", "10"]);
    set(c!(Bob), &["SET", "bk", "bob-secret"]);
    set(c!(Bob), &["SET", "bn", "42"]);
    set(c!(Bob), &["SET", "bt", "bob-ttl", "EX", "1000"]);
    let reader_rk = x.expand("kv:u:{reader}:rk");
    set(c!(Admin), &["SET", &reader_rk, "reader-seed"]);
    set(c!(Admin), &["SET", "rate:x", "rate-seed"]);
    set(c!(Admin), &["SET", "job:x", "job-seed"]);
    let seed = raw_keyspace(c!(Admin));
    // The seed holds what the table aims at.
    for k in [
        "{auth_alice}",
        "{auth_bob}",
        "{roles_alice}",
        "{roles_bob}",
        "{rate}",
        "{job}",
        "{meta}",
        "{bob_raw}",
        "{alice_raw}",
        "kv:u:{bob}:bn",
        "kv:u:{bob}:bt",
        "kv:u:{reader}:rk",
    ] {
        assert!(seed.contains_key(&x.expand(k)), "seed lacks {k}");
    }
    assert_eq!(seed[&x.expand("{bob_raw}")].0, b"bob-secret");

    // ---- the table ----
    let mut failures = Vec::new();
    for (i, row) in ROWS.iter().enumerate() {
        let args: Vec<String> = row.cmd.iter().map(|a| x.expand(a)).collect();
        let got = send(c!(row.who), &args);
        if !matches(&row.want, &got, row.who, &x) {
            failures.push(format!(
                "row {i} [{}] {:?} -> {:?} as {}: `{}`\n    expected {:?}\n    got      {}",
                row.class,
                row.target,
                row.cmd.join(" "),
                row.who.name(),
                args.join(" "),
                row.want,
                show(&got)
            ));
        }
    }

    // ---- afterwards, from the admin (raw keyspace) ----
    let admin = c!(Admin);
    let pong: String = redis::cmd("PING").query(admin).unwrap();
    assert_eq!(pong, "PONG", "the server stopped: a SHUTDOWN was obeyed");
    let after = raw_keyspace(admin);
    let alice_prefix = x.expand("kv:u:{alice}:");
    // Nothing outside alice's namespace changed: bob's and reader's keys and every
    // internal key byte-identical, none added or removed.
    let outside = |m: &BTreeMap<String, (Vec<u8>, bool)>| -> BTreeMap<String, (Vec<u8>, bool)> {
        m.iter()
            .filter(|(k, _)| !k.starts_with(&alice_prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    let (before_out, after_out) = (outside(&seed), outside(&after));
    for (k, v) in &before_out {
        match after_out.get(k) {
            None => failures.push(format!(
                "post-table: `{k}` (outside alice's namespace) is gone"
            )),
            Some(a) if a != v => failures.push(format!(
                "post-table: `{k}` (outside alice's namespace) changed: {:?} ttl={} -> {:?} ttl={}",
                String::from_utf8_lossy(&v.0),
                v.1,
                String::from_utf8_lossy(&a.0),
                a.1
            )),
            Some(_) => {}
        }
    }
    for k in after_out.keys().filter(|k| !before_out.contains_key(*k)) {
        failures.push(format!(
            "post-table: `{k}` appeared outside alice's namespace (a write escaped it)"
        ));
    }
    // Alice's writes landed under kv:u:{aliceId}:, exactly.
    let alice_after: BTreeMap<String, String> = after
        .iter()
        .filter(|(k, _)| k.starts_with(&alice_prefix))
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned()))
        .collect();
    let alice_want: BTreeMap<String, String> = ALICE_FINAL
        .iter()
        .map(|(k, v)| (format!("{alice_prefix}{}", x.expand(k)), x.expand(v)))
        .collect();
    if alice_after != alice_want {
        failures.push(format!(
            "post-table: alice's namespace is\n    {alice_after:?}\n  expected\n    {alice_want:?}"
        ));
    }
    if after
        .iter()
        .any(|(k, v)| k.starts_with(&alice_prefix) && v.1)
    {
        failures.push("post-table: a key of alice's namespace kept a TTL".into());
    }

    drop(cons);
    server.stop();
    assert!(
        failures.is_empty(),
        "ACL MATRIX FAILED: {} of {} rows/checks mismatched (a mismatch on a NOPERM row or a \
         post-table check is a security bug: a missing refusal or a write escaping the \
         namespace)\n{}",
        failures.len(),
        ROWS.len(),
        failures.join("\n")
    );
}
