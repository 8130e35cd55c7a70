//! helios-atlasd over the wire, with the real `redis` client crate (sync API) and raw
//! sockets: every command's success and error paths, pipelining, MULTI/EXEC, TTLs on a
//! manual clock, AUTH, HELLO 3, protocol limits, SCAN, and restart persistence. Each test
//! starts its own server on 127.0.0.1:0 over a temp dir; it stops when the test ends.

mod common;

use common::atlasd::{
    ADMIN_PW, ALICE_PW, BOB_PW, Server, add_user, gateway_dir, gateway_state, sorted, start,
    start_with,
};
use helios_atlas::{Atlas, Options};
use helios_bins::atlasd::config::AtlasdConfig;
use helios_core::ManualClock;
use redis::{Commands, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

/// Sends raw bytes, reads until `want` bytes arrived or the peer closed.
fn roundtrip(s: &mut TcpStream, send: &[u8], want: usize) -> Vec<u8> {
    s.write_all(send).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.len() < want {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    got
}

/// Sends raw bytes and asserts the exact reply (reading exactly its length).
fn expect(s: &mut TcpStream, send: &[u8], want: &str) {
    let got = roundtrip(s, send, want.len());
    assert_eq!(String::from_utf8_lossy(&got), want);
}

fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    got
}

/// One request as a RESP array (binary-safe, any size).
fn resp_request(args: &[&[u8]]) -> Vec<u8> {
    let mut out = bytes::BytesMut::new();
    helios_bins::atlasd::resp::encode_request(args, &mut out);
    out.to_vec()
}

/// A 4 MiB value: a reply of it is more than a socket takes at once.
fn big_value() -> Vec<u8> {
    (0..4 * 1024 * 1024u32)
        .map(|i| b'a' + (i % 26) as u8)
        .collect()
}

/// The RESP2 bulk reply of `v`.
fn bulk(v: &[u8]) -> Vec<u8> {
    let mut r = format!("${}\r\n", v.len()).into_bytes();
    r.extend_from_slice(v);
    r.extend_from_slice(b"\r\n");
    r
}

fn err_of<T: std::fmt::Debug>(r: redis::RedisResult<T>) -> String {
    let e = r.unwrap_err();
    // "CODE: detail" -> the wire form "CODE detail".
    match (e.code(), e.detail()) {
        (Some(c), Some(d)) => format!("{c} {d}"),
        (Some(c), None) => c.to_owned(),
        _ => e.to_string(),
    }
}

fn cmd(args: &[&str]) -> redis::Cmd {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c
}

fn q<T: redis::FromRedisValue>(con: &mut redis::Connection, args: &[&str]) -> T {
    cmd(args).query(con).unwrap()
}

fn e(con: &mut redis::Connection, args: &[&str]) -> String {
    err_of(cmd(args).query::<Value>(con))
}

#[test]
fn strings_and_errors() {
    let (_d, s) = start();
    let mut c = s.client();
    assert_eq!(q::<String>(&mut c, &["PING"]), "PONG");
    assert_eq!(q::<String>(&mut c, &["PING", "hi"]), "hi");
    assert_eq!(q::<String>(&mut c, &["ECHO", "x y"]), "x y");
    assert_eq!(q::<String>(&mut c, &["SET", "k", "v"]), "OK");
    assert_eq!(q::<String>(&mut c, &["GET", "k"]), "v");
    assert_eq!(q::<Option<String>>(&mut c, &["GET", "nope"]), None);
    // Binary-safe values.
    let bin: Vec<u8> = (0..=255u8).collect();
    let _: () = c.set("bin", &bin).unwrap();
    assert_eq!(c.get::<_, Vec<u8>>("bin").unwrap(), bin);
    // Empty keys are refused by rule (ATLAS keys are 1 to 64 KiB); binary keys are
    // fine (`binary_keys`).
    assert_eq!(
        err_of(redis::cmd("SET").arg("").arg("v").query::<Value>(&mut c)),
        "ERR invalid key: empty keys are not supported"
    );
    // SET options.
    assert_eq!(q::<Option<String>>(&mut c, &["SET", "k", "w", "NX"]), None);
    assert_eq!(q::<String>(&mut c, &["SET", "k", "w", "XX"]), "OK");
    assert_eq!(
        q::<Option<String>>(&mut c, &["SET", "new", "w", "XX"]),
        None
    );
    assert_eq!(
        q::<Option<String>>(&mut c, &["SET", "k", "z", "GET"]),
        Some("w".into())
    );
    assert_eq!(
        q::<Option<String>>(&mut c, &["SET", "fresh", "1", "NX", "GET"]),
        None
    );
    assert_eq!(
        e(&mut c, &["SET", "k", "v", "NX", "XX"]),
        "ERR syntax error"
    );
    assert_eq!(e(&mut c, &["SET", "k", "v", "EX"]), "ERR syntax error");
    assert_eq!(
        e(&mut c, &["SET", "k", "v", "EX", "x"]),
        "ERR value is not an integer or out of range"
    );
    assert_eq!(
        e(&mut c, &["SET", "k", "v", "EX", "0"]),
        "ERR invalid expire time in 'set' command"
    );
    assert_eq!(
        e(&mut c, &["SET", "k", "v", "EX", "10", "KEEPTTL"]),
        "ERR syntax error"
    );
    assert_eq!(
        e(&mut c, &["SET", "k"]),
        "ERR wrong number of arguments for 'set' command"
    );
    assert_eq!(
        e(&mut c, &["GET"]),
        "ERR wrong number of arguments for 'get' command"
    );
    assert!(
        e(&mut c, &["NOSUCH", "a"])
            .starts_with("ERR unknown command 'NOSUCH', with args beginning with: 'a'")
    );
    // SETNX / SETEX / PSETEX / GETSET / GETDEL.
    assert_eq!(q::<i64>(&mut c, &["SETNX", "nx", "1"]), 1);
    assert_eq!(q::<i64>(&mut c, &["SETNX", "nx", "2"]), 0);
    assert_eq!(q::<String>(&mut c, &["SETEX", "ex", "100", "v"]), "OK");
    assert_eq!(
        e(&mut c, &["SETEX", "ex", "-1", "v"]),
        "ERR invalid expire time in 'setex' command"
    );
    assert_eq!(q::<String>(&mut c, &["PSETEX", "pex", "100000", "v"]), "OK");
    assert_eq!(
        e(&mut c, &["PSETEX", "pex", "zz", "v"]),
        "ERR value is not an integer or out of range"
    );
    assert_eq!(q::<Option<String>>(&mut c, &["GETSET", "gs", "1"]), None);
    assert_eq!(
        q::<Option<String>>(&mut c, &["GETSET", "gs", "2"]),
        Some("1".into())
    );
    assert_eq!(
        q::<Option<String>>(&mut c, &["GETDEL", "gs"]),
        Some("2".into())
    );
    assert_eq!(q::<Option<String>>(&mut c, &["GETDEL", "gs"]), None);
    // MGET / MSET / MSETNX.
    assert_eq!(q::<String>(&mut c, &["MSET", "a", "1", "b", "2"]), "OK");
    assert_eq!(
        e(&mut c, &["MSET", "a", "1", "b"]),
        "ERR wrong number of arguments for 'mset' command"
    );
    assert_eq!(
        q::<Vec<Option<String>>>(&mut c, &["MGET", "a", "zz", "b"]),
        vec![Some("1".into()), None, Some("2".into())]
    );
    assert_eq!(q::<i64>(&mut c, &["MSETNX", "a", "9", "c", "3"]), 0);
    assert_eq!(q::<Option<String>>(&mut c, &["GET", "c"]), None);
    assert_eq!(q::<i64>(&mut c, &["MSETNX", "c", "3", "d", "4"]), 1);
    // APPEND / STRLEN.
    assert_eq!(q::<i64>(&mut c, &["APPEND", "ap", "ab"]), 2);
    assert_eq!(q::<i64>(&mut c, &["APPEND", "ap", "cd"]), 4);
    assert_eq!(q::<i64>(&mut c, &["STRLEN", "ap"]), 4);
    assert_eq!(q::<i64>(&mut c, &["STRLEN", "none"]), 0);
    // INCR family.
    assert_eq!(q::<i64>(&mut c, &["INCR", "n"]), 1);
    assert_eq!(q::<i64>(&mut c, &["INCRBY", "n", "10"]), 11);
    assert_eq!(q::<i64>(&mut c, &["DECR", "n"]), 10);
    assert_eq!(q::<i64>(&mut c, &["DECRBY", "n", "20"]), -10);
    assert_eq!(
        e(&mut c, &["INCR", "ap"]),
        "ERR value is not an integer or out of range"
    );
    assert_eq!(
        e(&mut c, &["INCRBY", "n", "1.5"]),
        "ERR value is not an integer or out of range"
    );
    assert_eq!(
        q::<String>(&mut c, &["SET", "big", "9223372036854775807"]),
        "OK"
    );
    assert_eq!(
        e(&mut c, &["INCR", "big"]),
        "ERR increment or decrement would overflow"
    );
    assert_eq!(q::<String>(&mut c, &["INCRBYFLOAT", "f", "10.5"]), "10.5");
    assert_eq!(q::<String>(&mut c, &["INCRBYFLOAT", "f", "0.1"]), "10.6");
    assert_eq!(q::<String>(&mut c, &["INCRBYFLOAT", "f", "-5"]), "5.6");
    assert_eq!(
        e(&mut c, &["INCRBYFLOAT", "f", "abc"]),
        "ERR value is not a valid float"
    );
    assert_eq!(
        e(&mut c, &["INCRBYFLOAT", "ap", "1"]),
        "ERR value is not a valid float"
    );
    // DEL / UNLINK / EXISTS / TYPE.
    assert_eq!(q::<i64>(&mut c, &["EXISTS", "a", "a", "zz"]), 2);
    assert_eq!(q::<String>(&mut c, &["TYPE", "a"]), "string");
    assert_eq!(q::<String>(&mut c, &["TYPE", "zz"]), "none");
    assert_eq!(q::<i64>(&mut c, &["DEL", "a", "zz"]), 1);
    assert_eq!(q::<i64>(&mut c, &["UNLINK", "b", "c"]), 2);
    // RENAME / RENAMENX.
    assert_eq!(e(&mut c, &["RENAME", "zz", "yy"]), "ERR no such key");
    assert_eq!(q::<String>(&mut c, &["RENAME", "d", "d2"]), "OK");
    assert_eq!(
        q::<Option<String>>(&mut c, &["GET", "d2"]),
        Some("4".into())
    );
    assert_eq!(q::<i64>(&mut c, &["RENAMENX", "d2", "k"]), 0);
    assert_eq!(q::<i64>(&mut c, &["RENAMENX", "d2", "d3"]), 1);
    assert_eq!(q::<i64>(&mut c, &["EXISTS", "d2"]), 0);
    // SELECT / DBSIZE / FLUSHDB.
    assert_eq!(q::<String>(&mut c, &["SELECT", "0"]), "OK");
    assert_eq!(e(&mut c, &["SELECT", "1"]), "ERR DB index is out of range");
    assert!(q::<i64>(&mut c, &["DBSIZE"]) > 5);
    assert_eq!(q::<String>(&mut c, &["FLUSHDB"]), "OK");
    assert_eq!(q::<i64>(&mut c, &["DBSIZE"]), 0);
    assert_eq!(q::<String>(&mut c, &["FLUSHALL", "SYNC"]), "OK");
    assert_eq!(e(&mut c, &["FLUSHALL", "NOW"]), "ERR syntax error");
}

#[test]
fn ttl_semantics_on_a_manual_clock() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let s = Server::start(dir.path(), Some(clock.clone()), |_| {});
    let mut c = s.client();
    assert_eq!(q::<i64>(&mut c, &["TTL", "missing"]), -2);
    assert_eq!(q::<i64>(&mut c, &["PTTL", "missing"]), -2);
    assert_eq!(q::<i64>(&mut c, &["EXPIRE", "missing", "10"]), 0);
    q::<String>(&mut c, &["SET", "k", "v"]);
    assert_eq!(q::<i64>(&mut c, &["TTL", "k"]), -1);
    assert_eq!(q::<i64>(&mut c, &["EXPIRETIME", "k"]), -1);
    assert_eq!(q::<i64>(&mut c, &["EXPIRE", "k", "100"]), 1);
    assert_eq!(q::<i64>(&mut c, &["TTL", "k"]), 100);
    assert_eq!(q::<i64>(&mut c, &["PTTL", "k"]), 100_000);
    assert_eq!(q::<i64>(&mut c, &["EXPIRETIME", "k"]), 1_700_000_100);
    assert_eq!(q::<i64>(&mut c, &["PEXPIRETIME", "k"]), 1_700_000_100_000);
    clock.advance_ms(40_400);
    assert_eq!(q::<i64>(&mut c, &["TTL", "k"]), 60);
    // LASTSAVE is on the server's clock too (its context), not the wall clock.
    assert_eq!(q::<i64>(&mut c, &["LASTSAVE"]), 1_700_000_000);
    assert_eq!(q::<String>(&mut c, &["SAVE"]), "OK");
    assert_eq!(q::<i64>(&mut c, &["LASTSAVE"]), 1_700_000_040);
    // NX/XX/GT/LT.
    assert_eq!(q::<i64>(&mut c, &["EXPIRE", "k", "10", "NX"]), 0);
    assert_eq!(q::<i64>(&mut c, &["EXPIRE", "k", "10", "GT"]), 0);
    assert_eq!(q::<i64>(&mut c, &["EXPIRE", "k", "10", "LT"]), 1);
    assert_eq!(q::<i64>(&mut c, &["TTL", "k"]), 10);
    assert_eq!(
        e(&mut c, &["EXPIRE", "k", "10", "NX", "XX"]),
        "ERR NX and XX, GT or LT options at the same time are not compatible"
    );
    assert_eq!(
        e(&mut c, &["EXPIRE", "k", "x"]),
        "ERR value is not an integer or out of range"
    );
    // SET clears the TTL unless KEEPTTL.
    q::<String>(&mut c, &["SET", "k", "v2", "KEEPTTL"]);
    assert_eq!(q::<i64>(&mut c, &["TTL", "k"]), 10);
    q::<String>(&mut c, &["SET", "k", "v3"]);
    assert_eq!(q::<i64>(&mut c, &["TTL", "k"]), -1);
    // PEXPIRE / PERSIST / INCR keeps TTL / APPEND keeps TTL.
    assert_eq!(q::<i64>(&mut c, &["PEXPIRE", "k", "1500"]), 1);
    assert_eq!(q::<i64>(&mut c, &["PTTL", "k"]), 1500);
    assert_eq!(q::<i64>(&mut c, &["PERSIST", "k"]), 1);
    assert_eq!(q::<i64>(&mut c, &["PERSIST", "k"]), 0);
    q::<String>(&mut c, &["SET", "n", "1", "EX", "50"]);
    q::<i64>(&mut c, &["INCR", "n"]);
    assert_eq!(q::<i64>(&mut c, &["TTL", "n"]), 50);
    q::<i64>(&mut c, &["APPEND", "n", "0"]);
    assert_eq!(q::<i64>(&mut c, &["TTL", "n"]), 50);
    // Expiry: the key is gone when the clock passes it.
    clock.advance_ms(50_000);
    assert_eq!(q::<Option<String>>(&mut c, &["GET", "n"]), None);
    assert_eq!(q::<i64>(&mut c, &["TTL", "n"]), -2);
    // EXPIRE with a non-positive ttl deletes; EXPIREAT/PEXPIREAT in the past delete.
    q::<String>(&mut c, &["SET", "d", "v"]);
    assert_eq!(q::<i64>(&mut c, &["EXPIRE", "d", "0"]), 1);
    assert_eq!(q::<i64>(&mut c, &["EXISTS", "d"]), 0);
    q::<String>(&mut c, &["SET", "d", "v"]);
    assert_eq!(q::<i64>(&mut c, &["EXPIREAT", "d", "1000"]), 1);
    assert_eq!(q::<i64>(&mut c, &["EXISTS", "d"]), 0);
    q::<String>(&mut c, &["SET", "d", "v"]);
    let now_ms = 1_700_000_000_000i64 + 90_400;
    assert_eq!(
        q::<i64>(&mut c, &["PEXPIREAT", "d", &(now_ms + 5000).to_string()]),
        1
    );
    assert_eq!(q::<i64>(&mut c, &["PTTL", "d"]), 5000);
    // SET with EX/PX/EXAT/PXAT, SETEX, GETEX.
    q::<String>(&mut c, &["SET", "a", "1", "PX", "2500"]);
    assert_eq!(q::<i64>(&mut c, &["PTTL", "a"]), 2500);
    q::<String>(
        &mut c,
        &["SET", "a", "1", "EXAT", &((now_ms / 1000) + 30).to_string()],
    );
    assert_eq!(q::<i64>(&mut c, &["TTL", "a"]), 30);
    q::<String>(
        &mut c,
        &["SET", "a", "1", "PXAT", &(now_ms + 700).to_string()],
    );
    assert_eq!(q::<i64>(&mut c, &["PTTL", "a"]), 700);
    assert_eq!(
        q::<Option<String>>(&mut c, &["GETEX", "a", "EX", "99"]),
        Some("1".into())
    );
    assert_eq!(q::<i64>(&mut c, &["TTL", "a"]), 99);
    assert_eq!(
        q::<Option<String>>(&mut c, &["GETEX", "a", "PERSIST"]),
        Some("1".into())
    );
    assert_eq!(q::<i64>(&mut c, &["TTL", "a"]), -1);
    assert_eq!(
        q::<Option<String>>(&mut c, &["GETEX", "zz", "EX", "9"]),
        None
    );
    assert_eq!(
        e(&mut c, &["GETEX", "a", "EX", "0"]),
        "ERR invalid expire time in 'getex' command"
    );
    assert_eq!(e(&mut c, &["GETEX", "a", "BAD"]), "ERR syntax error");
    // RENAME moves the TTL.
    q::<String>(&mut c, &["SETEX", "r", "77", "v"]);
    q::<String>(&mut c, &["RENAME", "r", "r2"]);
    assert_eq!(q::<i64>(&mut c, &["TTL", "r2"]), 77);
}

#[test]
fn pipelining_keeps_order_and_sees_earlier_writes() {
    let (_d, s) = start();
    let mut c = s.client();
    let mut p = redis::pipe();
    for i in 0..200 {
        p.cmd("SET").arg(format!("k{i}")).arg(i);
        p.cmd("INCR").arg(format!("k{i}"));
        p.cmd("GET").arg(format!("k{i}"));
    }
    let r: Vec<Value> = p.query(&mut c).unwrap();
    for i in 0..200 {
        assert_eq!(r[3 * i], Value::Okay);
        assert_eq!(r[3 * i + 1], Value::Int(i as i64 + 1));
        assert_eq!(
            r[3 * i + 2],
            Value::BulkString((i + 1).to_string().into_bytes())
        );
    }
    // An error in a pipeline is that command's reply only (the crate reports its index).
    let mut p = redis::pipe();
    p.cmd("SET").arg("e1").arg("1");
    p.cmd("INCR").arg("k0").arg("extra");
    p.cmd("SET").arg("e2").arg("1");
    let err = p.query::<Vec<Value>>(&mut c).unwrap_err().to_string();
    assert!(
        err.contains("wrong number of arguments for 'incr' command"),
        "{err}"
    );
    assert_eq!(q::<i64>(&mut c, &["EXISTS", "e1", "e2"]), 2);
    // Without the bad command, check each reply.
    let mut p = redis::pipe();
    for i in 0..100 {
        p.cmd("INCR").arg(format!("k{i}"));
        p.cmd("GET").arg(format!("k{i}"));
    }
    let r: Vec<i64> = p.query(&mut c).unwrap();
    for i in 0..100 {
        assert_eq!(r[2 * i], i as i64 + 2);
        assert_eq!(r[2 * i + 1], i as i64 + 2);
    }
    // Raw: many commands in one write, replies in order in one read; an error mid-pipeline
    // is that command's reply only.
    let mut raw = s.raw();
    expect(
        &mut raw,
        b"*3\r\n$3\r\nSET\r\n$1\r\nx\r\n$1\r\n1\r\n*2\r\n$4\r\nINCR\r\n$1\r\nx\r\nBOGUS\r\n*2\r\n$3\r\nGET\r\n$1\r\nx\r\nPING\r\n",
        "+OK\r\n:2\r\n-ERR unknown command 'BOGUS', with args beginning with: \r\n$1\r\n2\r\n+PONG\r\n",
    );
}

#[test]
fn multi_exec_discard_execabort() {
    let (_d, s) = start();
    let mut c = s.client();
    let r: (String, i64, String) = redis::pipe()
        .atomic()
        .cmd("SET")
        .arg("a")
        .arg("1")
        .cmd("INCR")
        .arg("a")
        .cmd("GET")
        .arg("a")
        .query(&mut c)
        .unwrap();
    assert_eq!(r, ("OK".into(), 2, "2".into()));
    // Runtime error inside EXEC: that command's reply; the others apply.
    let mut raw = s.raw();
    expect(
        &mut raw,
        b"MULTI\r\nSET s abc\r\nINCR s\r\nSET t 1\r\nEXEC\r\n",
        "+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n*3\r\n+OK\r\n-ERR value is not an integer or out of range\r\n+OK\r\n",
    );
    assert_eq!(q::<String>(&mut c, &["GET", "t"]), "1");
    // Queue-time error: EXECABORT, nothing applied.
    expect(
        &mut raw,
        b"MULTI\r\nSET u 1\r\nGET\r\nEXEC\r\n",
        "+OK\r\n+QUEUED\r\n-ERR wrong number of arguments for 'get' command\r\n-EXECABORT Transaction discarded because of previous errors.\r\n",
    );
    assert_eq!(q::<Option<String>>(&mut c, &["GET", "u"]), None);
    // DISCARD, nesting, EXEC/DISCARD without MULTI.
    expect(
        &mut raw,
        b"MULTI\r\nMULTI\r\nSET u 1\r\nDISCARD\r\nEXEC\r\nDISCARD\r\n",
        "+OK\r\n-ERR MULTI calls can not be nested\r\n+QUEUED\r\n+OK\r\n-ERR EXEC without MULTI\r\n-ERR DISCARD without MULTI\r\n",
    );
    assert_eq!(q::<Option<String>>(&mut c, &["GET", "u"]), None);
    // Read-only EXEC, and an empty one.
    expect(
        &mut raw,
        b"MULTI\r\nGET t\r\nEXEC\r\nMULTI\r\nEXEC\r\n",
        "+OK\r\n+QUEUED\r\n*1\r\n$1\r\n1\r\n+OK\r\n*0\r\n",
    );
}

#[test]
fn multi_exec_is_atomic_against_concurrent_clients() {
    let (_d, s) = start();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let mut c = s.client();
            std::thread::spawn(move || {
                for _ in 0..100 {
                    let (a, b): (i64, i64) = redis::pipe()
                        .atomic()
                        .cmd("INCR")
                        .arg("x")
                        .cmd("INCR")
                        .arg("y")
                        .query(&mut c)
                        .unwrap();
                    assert_eq!(a, b, "both counters move together");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut c = s.client();
    assert_eq!(q::<i64>(&mut c, &["GET", "x"]), 400);
}

#[test]
fn auth_and_noauth() {
    let (_dir, s) = start_with(|c| c.requirepass = "s3cret".into());
    let mut raw = s.raw();
    expect(
        &mut raw,
        b"GET a\r\n",
        "-NOAUTH Authentication required.\r\n",
    );
    expect(
        &mut raw,
        b"AUTH wrong\r\n",
        "-WRONGPASS invalid username-password pair or user is disabled.\r\n",
    );
    expect(
        &mut raw,
        b"AUTH default s3cret\r\nPING\r\n",
        "+OK\r\n+PONG\r\n",
    );
    // The redis crate with a password in the URL.
    let mut c = s.login("", "s3cret");
    assert_eq!(q::<String>(&mut c, &["PING"]), "PONG");
    // The password is never given back, by name or by pattern.
    let cfg: Vec<String> = q(&mut c, &["CONFIG", "GET", "requirepass"]);
    assert_eq!(cfg, vec!["requirepass".to_string(), "<redacted>".into()]);
    let all: Vec<String> = q(&mut c, &["CONFIG", "GET", "*"]);
    assert!(all.iter().any(|v| v == "requirepass"), "{all:?}");
    assert!(!all.iter().any(|v| v.contains("s3cret")), "{all:?}");
    let pass: Vec<String> = q(&mut c, &["CONFIG", "GET", "*pass*"]);
    assert_eq!(pass, vec!["requirepass".to_string(), "<redacted>".into()]);
    // No password configured.
    let (_d2, s2) = start();
    let mut c2 = s2.client();
    assert!(
        e(&mut c2, &["AUTH", "x"])
            .starts_with("ERR AUTH <password> called without any password configured")
    );
}

#[test]
fn hello3_speaks_resp3() {
    let (_d, s) = start();
    let mut raw = s.raw();
    let got = roundtrip(&mut raw, b"HELLO 3\r\n", 100);
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.starts_with("%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n"),
        "{text:?}"
    );
    assert!(text.contains("$5\r\nproto\r\n:3\r\n"), "{text:?}");
    expect(
        &mut raw,
        b"GET nope\r\nINCRBYFLOAT f 1.5\r\n",
        "_\r\n$3\r\n1.5\r\n",
    );
    let got = roundtrip(&mut raw, b"CONFIG GET port\r\n", 10);
    assert!(String::from_utf8_lossy(&got).starts_with("%1\r\n$4\r\nport\r\n"));
    // COMMAND entries as Redis 7 sends them in RESP3: flags, ACL categories and tips are
    // sets; key specs and subcommands are arrays.
    expect(
        &mut raw,
        b"COMMAND INFO get\r\n",
        "*1\r\n*10\r\n$3\r\nget\r\n:2\r\n~2\r\n+readonly\r\n+fast\r\n:1\r\n:1\r\n:1\r\n~0\r\n~0\r\n*0\r\n*0\r\n",
    );
    expect(
        &mut raw,
        b"HELLO 4\r\n",
        "-NOPROTO unsupported protocol version\r\n",
    );
    raw.write_all(b"HELLO 2\r\nGET nope\r\n").unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.ends_with(b"$-1\r\n") {
        let n = raw.read(&mut buf).unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got.starts_with(b"*14\r\n$6\r\nserver\r\n"));
}

#[test]
fn protocol_limits_and_errors_close_only_that_connection() {
    let (_dir, s) = start_with(|c| {
        c.bulk_size_max = 1024;
        c.array_count_max = 16;
    });
    let mut other = s.client();
    let mut raw = s.raw();
    raw.write_all(b"PING\r\n*1\r\n$2000\r\n").unwrap();
    assert_eq!(
        String::from_utf8_lossy(&read_to_close(&mut raw)),
        "+PONG\r\n-ERR Protocol error: invalid bulk length\r\n"
    );
    let mut raw = s.raw();
    raw.write_all(b"*100\r\n").unwrap();
    assert_eq!(
        String::from_utf8_lossy(&read_to_close(&mut raw)),
        "-ERR Protocol error: invalid multibulk length\r\n"
    );
    let mut raw = s.raw();
    raw.write_all(b"*1\r\n:5\r\n").unwrap();
    assert_eq!(
        String::from_utf8_lossy(&read_to_close(&mut raw)),
        "-ERR Protocol error: expected '$', got ':'\r\n"
    );
    let mut raw = s.raw();
    raw.write_all(&vec![b'a'; 70_000]).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&read_to_close(&mut raw)),
        "-ERR Protocol error: too big inline request\r\n"
    );
    // Other connections are unaffected.
    assert_eq!(q::<String>(&mut other, &["PING"]), "PONG");
    // Inline commands with quotes, and QUIT.
    let mut raw = s.raw();
    raw.write_all(b"SET \"a b\" 'c d'\r\nGET \"a b\"\r\nQUIT\r\n")
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&read_to_close(&mut raw)),
        "+OK\r\n$3\r\nc d\r\n+OK\r\n"
    );
}

#[test]
fn server_commands() {
    let (_d, s) = start();
    let mut c = s.client();
    // CLIENT.
    let id: i64 = q(&mut c, &["CLIENT", "ID"]);
    assert!(id > 0);
    assert_eq!(q::<Option<String>>(&mut c, &["CLIENT", "GETNAME"]), None);
    assert_eq!(q::<String>(&mut c, &["CLIENT", "SETNAME", "me"]), "OK");
    assert_eq!(
        q::<Option<String>>(&mut c, &["CLIENT", "GETNAME"]),
        Some("me".into())
    );
    assert_eq!(
        e(&mut c, &["CLIENT", "SETNAME", "a b"]),
        "ERR Client names cannot contain spaces, newlines or special characters."
    );
    assert!(e(&mut c, &["CLIENT", "NOPE"]).starts_with("ERR unknown subcommand"));
    // COMMAND.
    let n: i64 = q(&mut c, &["COMMAND", "COUNT"]);
    assert!(n > 50);
    let all: Vec<Value> = q(&mut c, &["COMMAND"]);
    assert_eq!(all.len() as i64, n);
    let info: Vec<Value> = q(&mut c, &["COMMAND", "INFO", "get", "nope"]);
    assert_eq!(info.len(), 2);
    assert_eq!(info[1], Value::Nil);
    let _docs: Value = q(&mut c, &["COMMAND", "DOCS"]);
    // INFO.
    q::<String>(&mut c, &["SET", "a", "1"]);
    q::<String>(&mut c, &["SET", "b", "1", "EX", "100"]);
    let info: String = q(&mut c, &["INFO"]);
    for f in [
        "# Server",
        "redis_version:",
        "uptime_in_seconds:",
        "# Clients",
        "connected_clients:1",
        "# Memory",
        "used_memory:",
        "# Persistence",
        "aof_enabled:1",
        "aof_last_write_status:ok",
        "rdb_last_save_time:",
        "# Stats",
        "total_commands_processed:",
        "# Keyspace",
        "db0:keys=2,expires=1,avg_ttl=0",
    ] {
        assert!(info.contains(f), "{f} missing in {info}");
    }
    let info: String = q(&mut c, &["INFO", "keyspace"]);
    assert!(!info.contains("# Server"));
    // CONFIG GET.
    let v: Vec<String> = q(&mut c, &["CONFIG", "GET", "appendfsync"]);
    assert_eq!(v, vec!["appendfsync".to_string(), "everysec".into()]);
    let v: Vec<String> = q(&mut c, &["CONFIG", "GET", "*max*"]);
    assert!(v.contains(&"maxclients".to_string()));
    let v: Vec<String> = q(&mut c, &["CONFIG", "GET", "io-threads"]);
    assert_eq!(v, vec!["io-threads".to_string(), "1".into()]);
    assert!(
        e(&mut c, &["CONFIG", "SET", "appendfsync", "no"])
            .starts_with("ERR CONFIG SET is not supported")
    );
    // TIME, LASTSAVE, SAVE, BGSAVE, BGREWRITEAOF.
    let t: Vec<String> = q(&mut c, &["TIME"]);
    assert!(t[0].parse::<u64>().unwrap() > 1_600_000_000);
    let before: i64 = q(&mut c, &["LASTSAVE"]);
    assert_eq!(q::<String>(&mut c, &["SAVE"]), "OK");
    assert!(q::<i64>(&mut c, &["LASTSAVE"]) >= before);
    assert_eq!(
        q::<String>(&mut c, &["BGSAVE"]),
        "Background saving started"
    );
    std::thread::sleep(Duration::from_millis(200));
    let r = cmd(&["BGREWRITEAOF"]).query::<String>(&mut c);
    assert!(r.is_ok() || err_of(r).contains("already in progress"));
    // RANDOMKEY.
    let k: Option<String> = q(&mut c, &["RANDOMKEY"]);
    assert!(matches!(k.as_deref(), Some("a" | "b")));
    q::<String>(&mut c, &["FLUSHALL"]);
    assert_eq!(q::<Option<String>>(&mut c, &["RANDOMKEY"]), None);
}

#[test]
fn keys_and_scan() {
    let (_d, s) = start();
    let mut c = s.client();
    for i in 0..250 {
        q::<String>(&mut c, &["SET", &format!("user:{i}"), "x"]);
        q::<String>(&mut c, &["SET", &format!("item:{i}"), "x"]);
    }
    let mut keys: Vec<String> = q(&mut c, &["KEYS", "user:1?"]);
    keys.sort();
    assert_eq!(
        keys,
        (10..20).map(|i| format!("user:{i}")).collect::<Vec<_>>()
    );
    let k: Vec<String> = q(&mut c, &["KEYS", "user:[12]"]);
    assert_eq!(k.len(), 2);
    let k: Vec<String> = q(&mut c, &["KEYS", "*"]);
    assert_eq!(k.len(), 500);
    // The redis crate's scan iterator parses the cursor as an integer.
    let mut seen: Vec<String> = c
        .scan_match::<_, String>("item:*")
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 250);
    // By hand, with COUNT: every key at least once, cursor 0 at the end.
    let mut cursor = "0".to_string();
    let mut all = std::collections::BTreeSet::new();
    let mut rounds = 0;
    loop {
        let (next, page): (String, Vec<String>) = q(&mut c, &["SCAN", &cursor, "COUNT", "37"]);
        assert!(page.len() <= 37);
        all.extend(page);
        rounds += 1;
        if next == "0" {
            break;
        }
        cursor = next;
    }
    assert_eq!(all.len(), 500);
    assert!(rounds >= 14);
    assert_eq!(e(&mut c, &["SCAN", "abc"]), "ERR invalid cursor");
    assert_eq!(e(&mut c, &["SCAN", "0", "COUNT", "0"]), "ERR syntax error");
    assert_eq!(e(&mut c, &["SCAN", "0", "BOGUS", "1"]), "ERR syntax error");
    let (_, none): (String, Vec<String>) = q(&mut c, &["SCAN", "0", "TYPE", "list"]);
    assert!(none.is_empty());
}

#[test]
fn restart_keeps_data() {
    let (dir, s) = start_with(|c| c.appendfsync = "always".into());
    let mut c = s.client();
    q::<String>(&mut c, &["MSET", "a", "1", "b", "2"]);
    q::<String>(&mut c, &["SET", "t", "x", "EX", "1000"]);
    q::<i64>(&mut c, &["INCRBY", "n", "41"]);
    q::<String>(&mut c, &["SAVE"]);
    q::<i64>(&mut c, &["INCR", "n"]);
    q::<i64>(&mut c, &["DEL", "b"]);
    drop(c);
    s.stop();
    let s = Server::start(dir.path(), None, |_| {});
    let mut c = s.client();
    assert_eq!(q::<Option<String>>(&mut c, &["GET", "a"]), Some("1".into()));
    assert_eq!(q::<Option<String>>(&mut c, &["GET", "b"]), None);
    assert_eq!(q::<i64>(&mut c, &["GET", "n"]), 42);
    let ttl: i64 = q(&mut c, &["TTL", "t"]);
    assert!((990..=1000).contains(&ttl), "{ttl}");
}

/// Keys are binary-safe, as in Redis: keys that are not UTF-8 (NULs, 0xff, CRLF) work in
/// every key position, KEYS/SCAN return and match them byte for byte, and they survive a
/// restart (AOF and snapshot).
#[test]
fn binary_keys() {
    let (dir, s) = start_with(|c| c.appendfsync = "always".into());
    let mut c = s.client();
    let k1: &[u8] = b"bin\xff\x00\r\nkey";
    let k2: &[u8] = b"bin\xfe";
    let k3: &[u8] = b"\x80";
    let get = |c: &mut redis::Connection, k: &[u8]| -> Option<Vec<u8>> {
        redis::cmd("GET").arg(k).query(c).unwrap()
    };
    let _: () = redis::cmd("SET").arg(k1).arg("v1").query(&mut c).unwrap();
    let _: () = redis::cmd("MSET")
        .arg(k2)
        .arg("v2")
        .arg(k3)
        .arg("7")
        .query(&mut c)
        .unwrap();
    assert_eq!(get(&mut c, k1).as_deref(), Some(&b"v1"[..]));
    let n: i64 = redis::cmd("INCR").arg(k3).query(&mut c).unwrap();
    assert_eq!(n, 8);
    let _: () = redis::cmd("SETRANGE")
        .arg(k2)
        .arg(1)
        .arg(b"\xff")
        .query(&mut c)
        .map(|_: i64| ())
        .unwrap();
    assert_eq!(get(&mut c, k2).as_deref(), Some(&b"v\xff"[..]));
    let mut keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg(b"bin*").query(&mut c).unwrap();
    keys.sort();
    assert_eq!(keys, vec![k2.to_vec(), k1.to_vec()]);
    let keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg(b"bin\xff*").query(&mut c).unwrap();
    assert_eq!(keys, vec![k1.to_vec()], "patterns match bytes");
    let (next, page): (String, Vec<Vec<u8>>) = redis::cmd("SCAN")
        .arg(0)
        .arg("MATCH")
        .arg(b"\x80")
        .arg("COUNT")
        .arg(100)
        .query(&mut c)
        .unwrap();
    assert_eq!((next.as_str(), page), ("0", vec![k3.to_vec()]));
    let _: () = redis::cmd("RENAME")
        .arg(k1)
        .arg(b"\xff")
        .query(&mut c)
        .unwrap();
    assert_eq!(get(&mut c, b"\xff").as_deref(), Some(&b"v1"[..]));
    assert_eq!(get(&mut c, k1), None);
    let copied: i64 = redis::cmd("COPY")
        .arg(b"\xff")
        .arg(k1)
        .query(&mut c)
        .unwrap();
    assert_eq!(copied, 1);
    let ttl_set: i64 = redis::cmd("EXPIRE")
        .arg(k1)
        .arg(1000)
        .query(&mut c)
        .unwrap();
    assert_eq!(ttl_set, 1);
    q::<String>(&mut c, &["SAVE"]);
    let deleted: i64 = redis::cmd("DEL").arg(b"\xff").query(&mut c).unwrap();
    assert_eq!(deleted, 1);
    drop(c);
    s.stop();
    let s = Server::start(dir.path(), None, |_| {});
    let mut c = s.client();
    assert_eq!(get(&mut c, k1).as_deref(), Some(&b"v1"[..]));
    assert_eq!(get(&mut c, b"\xff"), None);
    assert_eq!(get(&mut c, k3).as_deref(), Some(&b"8"[..]));
    let ttl: i64 = redis::cmd("TTL").arg(k1).query(&mut c).unwrap();
    assert!((990..=1000).contains(&ttl), "{ttl}");
    assert_eq!(q::<i64>(&mut c, &["DBSIZE"]), 3);
}

/// OBJECT ENCODING answers as Redis does, history included: a string changed in place
/// (SETRANGE, SETBIT, APPEND to an existing key) or built by BITOP is `raw` until written
/// whole again; RENAME and COPY carry that; a restart encodes from the content, as Redis
/// does when it loads its files.
#[test]
fn object_encoding_follows_redis() {
    let (dir, s) = start();
    let mut c = s.client();
    let enc = |c: &mut redis::Connection, k: &str| -> String { q(c, &["OBJECT", "ENCODING", k]) };
    // On a fresh server (nothing marked yet), inside one job: the job's own changes decide,
    // for OBJECT and for RENAME's source.
    let (_, _, e0): (i64, String, String) = redis::pipe()
        .atomic()
        .cmd("SETRANGE")
        .arg("m0")
        .arg(0)
        .arg("8")
        .cmd("SET")
        .arg("m0")
        .arg("9")
        .cmd("OBJECT")
        .arg("ENCODING")
        .arg("m0")
        .query(&mut c)
        .unwrap();
    assert_eq!(e0, "int");
    assert_eq!(enc(&mut c, "m0"), "int");
    let (_, _, _, e1): (String, i64, String, String) = redis::pipe()
        .atomic()
        .cmd("SET")
        .arg("r0")
        .arg("1")
        .cmd("SETRANGE")
        .arg("r0")
        .arg(0)
        .arg("2")
        .cmd("RENAME")
        .arg("r0")
        .arg("r1")
        .cmd("OBJECT")
        .arg("ENCODING")
        .arg("r1")
        .query(&mut c)
        .unwrap();
    assert_eq!(e1, "raw");
    assert_eq!(enc(&mut c, "r1"), "raw");
    // A source marked, then written whole earlier in the same job, moves unmarked.
    let (_, _, e2): (String, String, String) = redis::pipe()
        .atomic()
        .cmd("SET")
        .arg("r1")
        .arg("5")
        .cmd("RENAME")
        .arg("r1")
        .arg("r2")
        .cmd("OBJECT")
        .arg("ENCODING")
        .arg("r2")
        .query(&mut c)
        .unwrap();
    assert_eq!(e2, "int");
    q::<String>(&mut c, &["SET", "k", "1234"]);
    assert_eq!(enc(&mut c, "k"), "int");
    assert_eq!(q::<i64>(&mut c, &["SETRANGE", "k", "0", ""]), 4);
    assert_eq!(enc(&mut c, "k"), "int", "an empty range writes nothing");
    assert_eq!(q::<i64>(&mut c, &["SETRANGE", "k", "0", "2"]), 4);
    assert_eq!(enc(&mut c, "k"), "raw");
    assert_eq!(q::<String>(&mut c, &["GET", "k"]), "2234");
    q::<String>(&mut c, &["RENAME", "k", "k2"]);
    assert_eq!(enc(&mut c, "k2"), "raw", "RENAME moves the object");
    assert_eq!(q::<i64>(&mut c, &["COPY", "k2", "k3"]), 1);
    assert_eq!(enc(&mut c, "k3"), "raw", "COPY duplicates it");
    assert_eq!(q::<i64>(&mut c, &["INCR", "k2"]), 2235);
    assert_eq!(enc(&mut c, "k2"), "int", "INCR writes a new integer");
    q::<String>(&mut c, &["SET", "s", "abc"]);
    assert_eq!(enc(&mut c, "s"), "embstr");
    assert_eq!(q::<i64>(&mut c, &["APPEND", "s", "d"]), 4);
    assert_eq!(enc(&mut c, "s"), "raw");
    assert_eq!(q::<i64>(&mut c, &["APPEND", "fresh", "12"]), 2);
    assert_eq!(
        enc(&mut c, "fresh"),
        "int",
        "APPEND to a missing key stores the value"
    );
    q::<String>(&mut c, &["SET", "b", "1"]);
    assert_eq!(q::<i64>(&mut c, &["SETBIT", "b", "6", "1"]), 0);
    assert_eq!(enc(&mut c, "b"), "raw");
    assert_eq!(q::<i64>(&mut c, &["BITOP", "OR", "dst", "fresh"]), 2);
    assert_eq!(enc(&mut c, "dst"), "raw");
    q::<String>(&mut c, &["SET", &"x".repeat(45), &"y".repeat(45)]);
    assert_eq!(enc(&mut c, &"x".repeat(45)), "raw", "longer than embstr");
    // Inside MULTI, in order.
    let (_, _, e1, _, e2): (String, i64, String, String, String) = redis::pipe()
        .atomic()
        .cmd("SET")
        .arg("m")
        .arg("7")
        .cmd("SETRANGE")
        .arg("m")
        .arg(0)
        .arg("8")
        .cmd("OBJECT")
        .arg("ENCODING")
        .arg("m")
        .cmd("SET")
        .arg("m")
        .arg("9")
        .cmd("OBJECT")
        .arg("ENCODING")
        .arg("m")
        .query(&mut c)
        .unwrap();
    assert_eq!((e1.as_str(), e2.as_str()), ("raw", "int"));
    // A delete clears the mark: the next value is encoded from its content.
    q::<String>(&mut c, &["DEL", "s"]);
    q::<String>(&mut c, &["SET", "s", "abc"]);
    assert_eq!(enc(&mut c, "s"), "embstr");
    assert_eq!(enc(&mut c, "k3"), "raw");
    drop(c);
    s.stop();
    let s = Server::start(dir.path(), None, |_| {});
    let mut c = s.client();
    assert_eq!(
        enc(&mut c, "k3"),
        "int",
        "encoded from the content after a restart"
    );
    q::<String>(&mut c, &["SETRANGE", "k3", "0", "3"]);
    q::<String>(&mut c, &["FLUSHALL"]);
    q::<String>(&mut c, &["SET", "k3", "1"]);
    assert_eq!(enc(&mut c, "k3"), "int");
}

#[test]
fn shutdown_command_stops_the_server() {
    let (dir, s) = start();
    let mut c = s.client();
    q::<String>(&mut c, &["SET", "a", "1"]);
    let _ = cmd(&["SHUTDOWN"]).query::<Value>(&mut c);
    // The server thread ends by itself, having closed ATLAS.
    s.wait();
    let atlas = Atlas::open(dir.path(), Options::default()).unwrap();
    assert_eq!(atlas.get("a").unwrap(), "1");
}

#[test]
fn max_clients_and_idle_timeout() {
    let (_dir, s) = start_with(|c| {
        c.clients_max = 1;
        c.idle_timeout_s = 1;
    });
    let mut first = s.raw();
    assert_eq!(roundtrip(&mut first, b"PING\r\n", 7), b"+PONG\r\n");
    let mut second = s.raw();
    assert_eq!(
        String::from_utf8_lossy(&read_to_close(&mut second)),
        "-ERR max number of clients reached\r\n"
    );
    // The idle first client is closed after ~1 s, freeing the slot.
    let started = std::time::Instant::now();
    assert!(read_to_close(&mut first).is_empty());
    assert!(started.elapsed() >= Duration::from_millis(500));
    std::thread::sleep(Duration::from_millis(50));
    let mut third = s.raw();
    assert_eq!(roundtrip(&mut third, b"PING\r\n", 7), b"+PONG\r\n");
}

/// A connection forgets its socket's readiness after a short read (one `recv` per
/// request): bytes that arrive later, after a pause, must still wake it, at every split.
#[test]
fn requests_split_across_reads_with_pauses_are_served() {
    let (_d, s) = start();
    let mut c = s.raw();
    let req = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\nvv\r\n";
    for cut in 1..req.len() {
        c.write_all(&req[..cut]).unwrap();
        std::thread::sleep(Duration::from_millis(15));
        expect(&mut c, &req[cut..], "+OK\r\n");
    }
    // Request after request, each after a pause, on the same connection.
    for i in 0..5 {
        std::thread::sleep(Duration::from_millis(15));
        expect(&mut c, b"INCR n\r\n", &format!(":{}\r\n", i + 1));
    }
}

#[test]
fn large_values_round_trip() {
    let (_d, s) = start();
    let mut c = s.client();
    let v = vec![7u8; 3 * 1024 * 1024];
    let _: () = c.set("big", &v).unwrap();
    assert_eq!(c.get::<_, Vec<u8>>("big").unwrap(), v);
}

#[test]
fn auth_user_pass_checks_helios_auth_users() {
    let dir = tempfile::tempdir().unwrap();
    // The gateway bootstraps an `admin` user in the directory, then lets it go.
    let state = gateway_state(dir.path(), Some("admin password 1"));
    state.atlas.close().unwrap();
    drop(state); // Its lock on the directory goes with it.
    let s = Server::with_users(dir.path());
    let wrong = "-WRONGPASS invalid username-password pair or user is disabled.\r\n";
    let mut raw = s.raw();
    expect(&mut raw, b"AUTH admin wrong-password\r\n", wrong);
    expect(&mut raw, b"AUTH nobody x\r\n", wrong);
    expect(
        &mut raw,
        b"AUTH admin \"admin password 1\"\r\nPING\r\n",
        "+OK\r\n+PONG\r\n",
    );
    // Five failures lock the username from this address (the gateway login's throttle,
    // through `Auth::authenticate`): then even the right password is refused, with the
    // same reply.
    let mut raw = s.raw();
    for _ in 0..5 {
        expect(&mut raw, b"AUTH admin wrong-password\r\n", wrong);
    }
    expect(&mut raw, b"AUTH admin \"admin password 1\"\r\n", wrong);
    // HELLO with AUTH, on a fresh connection.
    let mut raw = s.raw();
    let got = roundtrip(&mut raw, b"HELLO 3 AUTH default s3cret\r\n", 20);
    assert!(
        got.starts_with(b"%7\r\n"),
        "{}",
        String::from_utf8_lossy(&got)
    );
}

#[test]
fn random_commands_never_break_the_server() {
    let (_d, s) = start();
    let mut c = s.client();
    let names: Vec<String> = q::<Vec<String>>(&mut c, &["COMMAND", "LIST"])
        .into_iter()
        .filter(|n| {
            !matches!(
                n.as_str(),
                "shutdown" | "quit" | "multi" | "flushall" | "flushdb"
            )
        })
        .collect();
    let words = [
        "",
        "k",
        "k2",
        "0",
        "-1",
        "1",
        "9223372036854775807",
        "1.5",
        "nan",
        "EX",
        "PX",
        "NX",
        "XX",
        "GET",
        "KEEPTTL",
        "PERSIST",
        "COUNT",
        "MATCH",
        "*",
        "[",
        "\\",
        "EXAT",
        "GT",
        "LT",
        "\u{e9}",
        "3",
        "AUTH",
        "SETNAME",
        "GETNAME",
        "ID",
        "INFO",
    ];
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..3000 {
        let name = &names[(next() % names.len() as u64) as usize];
        let mut cmd = redis::cmd(name);
        for _ in 0..next() % 6 {
            cmd.arg(words[(next() % words.len() as u64) as usize]);
        }
        // Any reply, error replies included, is fine; a dropped connection is not.
        match cmd.query::<Value>(&mut c) {
            Ok(_) => {}
            Err(e) => assert!(e.code().is_some() || e.detail().is_some(), "{name}: {e}"),
        }
    }
    assert_eq!(q::<String>(&mut c, &["PING"]), "PONG");
}

#[test]
fn review_fixes_redis_parity_and_safety() {
    let (_dir, s) = start_with(|c| c.requirepass = "pw".into());

    // Before AUTH, Redis's small limits: a big array is a protocol error and closes.
    let mut raw = s.raw();
    let mut big = b"*11\r\n".to_vec();
    for _ in 0..11 {
        big.extend_from_slice(b"$1\r\nx\r\n");
    }
    let got = String::from_utf8_lossy(&{
        raw.write_all(&big).unwrap();
        read_to_close(&mut raw)
    })
    .into_owned();
    assert_eq!(
        got,
        "-ERR Protocol error: unauthenticated multibulk length\r\n"
    );
    let mut raw = s.raw();
    let got = String::from_utf8_lossy(&{
        raw.write_all(b"*2\r\n$4\r\nAUTH\r\n$20000\r\n").unwrap();
        read_to_close(&mut raw)
    })
    .into_owned();
    assert_eq!(got, "-ERR Protocol error: unauthenticated bulk length\r\n");
    // A pipelined AUTH lifts them for what follows it.
    let mut raw = s.raw();
    let mut piped = b"AUTH pw\r\n".to_vec();
    piped.extend_from_slice(&big);
    let want = "+OK\r\n-ERR unknown command 'x', with args beginning with: ";
    let got = roundtrip(&mut raw, &piped, want.len());
    assert!(
        got.starts_with(want.as_bytes()),
        "{}",
        String::from_utf8_lossy(&got)
    );

    let mut c = s.client();
    let _: () = redis::cmd("AUTH").arg("pw").query(&mut c).unwrap();
    // INCRBYFLOAT text as Redis makes it.
    let _: () = q(&mut c, &["SET", "f", "0.1"]);
    assert_eq!(q::<String>(&mut c, &["INCRBYFLOAT", "f", "0.2"]), "0.3");
    assert_eq!(q::<String>(&mut c, &["INCRBYFLOAT", "z", "1e-20"]), "0");
    // EXPIRETIME rounds to the nearest second.
    let _: () = q(&mut c, &["SET", "t", "v"]);
    let _: i64 = q(&mut c, &["PEXPIREAT", "t", "99999999999600"]);
    assert_eq!(q::<i64>(&mut c, &["EXPIRETIME", "t"]), 100_000_000_000);

    // A write the store refuses inside EXEC aborts all of it: nothing half applied.
    let _: () = q(&mut c, &["SET", "src", "keep me"]);
    let long_key = "k".repeat(70_000);
    let _: () = q(&mut c, &["MULTI"]);
    let _: String = q(&mut c, &["SET", "a", "1"]);
    let _: String = q(&mut c, &["RENAME", "src", &long_key]);
    let r = cmd(&["EXEC"]).query::<Value>(&mut c);
    assert!(r.is_err(), "{r:?}");
    assert_eq!(q::<Option<String>>(&mut c, &["GET", "a"]), None);
    assert_eq!(
        q::<Option<String>>(&mut c, &["GET", "src"]).as_deref(),
        Some("keep me")
    );

    // Reply parity: GETEX option word before its number, a missing key is nil before the
    // expire time is checked; SET NX NX; CONFIG GET arity; SHUTDOWN ABORT.
    assert_eq!(
        e(&mut c, &["GETEX", "src", "FOO", "abc"]),
        "ERR syntax error"
    );
    assert_eq!(
        q::<Option<String>>(&mut c, &["GETEX", "missing", "EX", "0"]),
        None
    );
    assert_eq!(
        e(&mut c, &["GETEX", "src", "EX", "0"]),
        "ERR invalid expire time in 'getex' command"
    );
    assert_eq!(q::<String>(&mut c, &["SET", "nx", "1", "NX", "NX"]), "OK");
    assert_eq!(
        e(&mut c, &["SET", "nx", "1", "NX", "XX"]),
        "ERR syntax error"
    );
    assert_eq!(
        e(&mut c, &["CONFIG", "GET"]),
        "ERR wrong number of arguments for 'config|get' command"
    );
    assert_eq!(
        e(&mut c, &["SHUTDOWN", "ABORT"]),
        "ERR No shutdown in progress."
    );
    assert_eq!(q::<String>(&mut c, &["PING"]), "PONG", "still serving");
    drop(s);

    // No requirepass: `AUTH default <anything>` is accepted, as in Redis 7.
    let (_dir, s) = start();
    let mut raw = s.raw();
    expect(&mut raw, b"AUTH default whatever\r\n", "+OK\r\n");

    // RANDOMKEY while another client writes: no deadlock.
    let mut w = s.client();
    let _: () = q(&mut w, &["SET", "seed", "1"]);
    let writer = std::thread::spawn(move || {
        for i in 0..2_000 {
            let _: () = q(&mut w, &["SET", &format!("w{i}"), "v"]);
        }
    });
    let mut r = s.client();
    for _ in 0..2_000 {
        let k: Option<String> = q(&mut r, &["RANDOMKEY"]);
        assert!(k.is_some());
    }
    writer.join().unwrap();
}

/// Under `always`, the writes of concurrent clients are committed by the committer thread
/// in shared groups: every acknowledged write is there (also after a restart), each
/// client's writes apply in its order, a refused write in one client's pipeline does not
/// disturb the others, and the fsyncs are fewer than the writes (group commit).
#[test]
fn always_commits_concurrent_clients_in_shared_groups() {
    let (dir, s) = start_with(|c| c.appendfsync = "always".into());
    let port = s.port;
    let clients = 8;
    let rounds = 150;
    let threads: Vec<_> = (0..clients)
        .map(|t| {
            std::thread::spawn(move || {
                let mut c = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
                    .unwrap()
                    .get_connection()
                    .unwrap();
                for i in 0..rounds {
                    let n: i64 = redis::cmd("INCR").arg("shared").query(&mut c).unwrap();
                    assert!(n >= 1);
                    let () = redis::cmd("SET")
                        .arg(format!("own:{t}"))
                        .arg(i)
                        .query(&mut c)
                        .unwrap();
                    // A pipeline: one transaction, in order, seeing its own writes.
                    let (a, n, e): (String, i64, i64) = redis::pipe()
                        .cmd("SET")
                        .arg(format!("p:{t}:{i}"))
                        .arg("v")
                        .cmd("INCR")
                        .arg(format!("count:{t}"))
                        .cmd("EXISTS")
                        .arg(format!("p:{t}:{i}"))
                        .query(&mut c)
                        .unwrap();
                    assert_eq!((a.as_str(), n, e), ("OK", i + 1, 1));
                    // A command error is that command's reply; the connection goes on.
                    let err = redis::cmd("INCR")
                        .arg(format!("p:{t}:{i}"))
                        .query::<i64>(&mut c)
                        .unwrap_err();
                    assert!(err.to_string().contains("not an integer"), "{err}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut c = s.client();
    assert_eq!(q::<i64>(&mut c, &["GET", "shared"]), clients * rounds);
    for t in 0..clients {
        assert_eq!(
            q::<i64>(&mut c, &["GET", &format!("own:{t}")]),
            rounds - 1,
            "client {t}'s writes applied in its order"
        );
    }
    let info: String = q(&mut c, &["INFO", "persistence"]);
    let fsyncs: i64 = info
        .lines()
        .find_map(|l| l.strip_prefix("aof_fsyncs:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let writes = clients * rounds * 3;
    assert!(
        fsyncs < writes,
        "{fsyncs} fsyncs for {writes} write commands: groups are shared"
    );
    drop(c);
    s.stop();
    let s = Server::start(dir.path(), None, |_| {});
    let mut c = s.client();
    assert_eq!(q::<i64>(&mut c, &["GET", "shared"]), clients * rounds);
    assert_eq!(q::<i64>(&mut c, &["EXISTS", "p:7:149"]), 1);
}

/// Under `always`, the committer writes committed replies to the socket itself (right after
/// the group's fsync) when nothing of the connection's waits before them; the others go
/// through the connection's buffer. Either way the replies of a pipeline arrive whole and
/// in order, also a 4 MiB one. (That a reply larger than the socket takes comes back to the
/// connection in order is the committer's unit test, with a small receive buffer.)
#[test]
fn always_replies_written_by_the_committer_keep_their_order() {
    let (_dir, s) = start_with(|c| c.appendfsync = "always".into());
    let mut c = s.raw();
    // A write first (committer writes), a server command, a write after it (buffered).
    expect(
        &mut c,
        b"SET a 1\r\nPING\r\nINCR a\r\nGET a\r\n",
        "+OK\r\n+PONG\r\n:2\r\n$1\r\n2\r\n",
    );
    // A read before a write in one run, then an error, then a write.
    expect(
        &mut c,
        b"GET a\r\nINCR a\r\nBOGUS\r\nINCR a\r\n",
        "$1\r\n2\r\n:3\r\n-ERR unknown command 'BOGUS', with args beginning with: \r\n:4\r\n",
    );
    // A 4 MiB reply from a write, then a PING: the reply arrives whole, the PONG after it.
    let old = big_value();
    let new = vec![b'z'; old.len()];
    let mut req = resp_request(&[b"SET", b"big", &old]);
    req.extend_from_slice(&resp_request(&[b"GETSET", b"big", &new]));
    req.extend_from_slice(b"PING\r\n");
    let mut want = b"+OK\r\n".to_vec();
    want.extend_from_slice(&bulk(&old));
    want.extend_from_slice(b"+PONG\r\n");
    let got = roundtrip(&mut c, &req, want.len());
    assert!(
        got == want,
        "got {} bytes, not the replies in order",
        got.len()
    );
    let mut con = s.client();
    assert_eq!(q::<i64>(&mut con, &["STRLEN", "big"]), new.len() as i64);
    s.stop();
}

/// Reads until `n` reply lines (CRLF-terminated) arrived.
fn read_lines(s: &mut TcpStream, n: usize) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.windows(2).filter(|w| w == b"\r\n").count() < n {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn always_writes_left_in_flight_are_answered_whole_and_in_order() {
    // A write run that ends a read is left in flight (its replies written by the
    // committer) while the connection reads on: its answer must still reach the client
    // whole when the socket does not take it at once, and a refused write must still get
    // its error, before any later reply.
    let (_dir, s) = start_with(|c| c.appendfsync = "always".into());
    let mut c = s.raw();
    c.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let old = big_value();
    let set = resp_request(&[b"SET", b"big", &old]);
    expect(&mut c, &set, "+OK\r\n");
    // A lone GETSET whose 4 MiB reply the socket cannot take while the client does not
    // read: the rest comes back to the connection, which writes it.
    c.write_all(b"GETSET big small\r\n").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let mut want = bulk(&old);
    want.extend_from_slice(b"+PONG\r\n");
    let got = roundtrip(&mut c, b"PING\r\n", want.len());
    assert!(got == want, "got {} bytes, not the reply whole", got.len());
    // A refused write (a key over ATLAS's size limit) in a run in flight: the run is
    // redone command by command, so the other write applies and the refusal is reported
    // on its own command, before the PONG.
    let key = "k".repeat(helios_atlas::limits::KEY_SIZE_MAX as usize + 1);
    let set_big_key = resp_request(&[b"SET", key.as_bytes(), b"v"]);
    c.write_all(&[&b"SET ok 1\r\n"[..], &set_big_key].concat())
        .unwrap();
    let got = read_lines(&mut c, 2);
    assert!(
        got.starts_with("+OK\r\n-ERR ") && !got.contains("Protocol"),
        "{got}"
    );
    expect(&mut c, b"PING\r\n", "+PONG\r\n");
    // A lone refused write, then a read that must see nothing of it.
    c.write_all(&set_big_key).unwrap();
    let got = read_lines(&mut c, 1);
    assert!(
        got.starts_with("-ERR ") && !got.contains("Protocol"),
        "{got}"
    );
    expect(&mut c, b"EXISTS ok\r\nDBSIZE\r\n", ":1\r\n:2\r\n");
    // A client that half-closes right after its last request still gets that request's
    // whole reply (4 MiB: more than the socket takes at once), or its error.
    expect(&mut c, &set, "+OK\r\n");
    let mut h = s.raw();
    h.write_all(b"GETSET big small\r\n").unwrap();
    h.shutdown(std::net::Shutdown::Write).unwrap();
    let want = bulk(&old);
    let got = read_to_close(&mut h);
    assert!(got == want, "got {} bytes, not the reply whole", got.len());
    let mut h = s.raw();
    h.write_all(&set_big_key).unwrap();
    h.shutdown(std::net::Shutdown::Write).unwrap();
    let got = String::from_utf8_lossy(&read_to_close(&mut h)).into_owned();
    assert!(
        got.starts_with("-ERR ") && !got.contains("Protocol"),
        "{got}"
    );
    s.stop();
}

// ---- helios-auth users (auth_users: true): scoping and AUTH throttling (issue 17, 3) ----

const RITA_PW: &str = "Saffron-Meadow-Piston-56";
const DORA_PW: &str = "Indigo-Harbor-Thistle-29";

/// Ids of the users a gateway left in a data directory.
struct Users {
    alice: String,
    bob: String,
}

/// A data directory as the gateway leaves it: the bootstrap `admin`, users `alice` and
/// `bob` (role `user`), `rita` (`readonly`) and `dora` (disabled); alice has a KV entry
/// `greeting` written the gateway's way (her namespace).
fn users_dir() -> (tempfile::TempDir, Users) {
    gateway_dir(|state| {
        let alice = add_user(state, "alice", ALICE_PW, "user");
        let bob = add_user(state, "bob", BOB_PW, "user");
        add_user(state, "rita", RITA_PW, "readonly");
        let dora = add_user(state, "dora", DORA_PW, "user");
        state.auth.set_disabled(&dora, true).unwrap();
        let greeting = helios_core::keys::KvSpace::User(&alice)
            .key("greeting")
            .unwrap();
        state
            .atlas
            .set(&greeting, "hello from the gateway")
            .unwrap();
        Users { alice, bob }
    })
}

fn noperm_cmd(user: &str, cmd: &str) -> String {
    format!("NOPERM User {user} has no permissions to run the '{cmd}' command")
}

/// A non-admin helios-auth user sees and touches only its own KV namespace (the gateway's
/// `kv:u:{id}:`), without the prefix; internal keys and other users' keys cannot be named.
/// A scoped user's binary keys (a `:` and NUL inside, `\xff`) live under its own
/// `kv:u:{id}:` prefix, come back without it from KEYS/SCAN/RANDOMKEY, and are absent
/// for another user.
#[test]
fn auth_users_binary_keys_stay_in_their_namespace() {
    let (dir, u) = users_dir();
    let s = Server::with_users(dir.path());
    let mut alice = s.login("alice", ALICE_PW);
    let bin: &[u8] = b"\xff:x\x00y";
    let _: () = redis::cmd("SET")
        .arg(bin)
        .arg("v")
        .query(&mut alice)
        .unwrap();
    let _: () = redis::cmd("RENAME")
        .arg(bin)
        .arg(b"\xfe")
        .query(&mut alice)
        .unwrap();
    let mut keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg("*").query(&mut alice).unwrap();
    keys.sort();
    assert_eq!(keys, vec![b"greeting".to_vec(), b"\xfe".to_vec()]);
    let (_, page): (String, Vec<Vec<u8>>) = redis::cmd("SCAN")
        .arg(0)
        .arg("MATCH")
        .arg(b"\xfe")
        .query(&mut alice)
        .unwrap();
    assert_eq!(page, vec![b"\xfe".to_vec()]);
    let mut bob = s.login("bob", BOB_PW);
    let theirs: Option<Vec<u8>> = redis::cmd("GET").arg(b"\xfe").query(&mut bob).unwrap();
    assert_eq!(theirs, None);
    assert!(q::<Vec<Vec<u8>>>(&mut bob, &["KEYS", "*"]).is_empty());
    drop((alice, bob));
    s.stop();
    let atlas = Atlas::open(dir.path(), Options::default()).unwrap();
    let full = helios_core::keys::KvSpace::User(&u.alice)
        .key_bytes(b"\xfe")
        .unwrap();
    assert_eq!(atlas.get(&full).unwrap(), "v");
    let mut under_alice = atlas
        .scan(
            helios_core::keys::KvSpace::User(&u.alice).prefix().unwrap(),
            None,
            100,
        )
        .unwrap()
        .entries
        .into_iter()
        .map(|(k, _)| k.into_bytes())
        .collect::<Vec<_>>();
    under_alice.sort();
    assert_eq!(under_alice.len(), 2, "greeting and the renamed key only");
    assert!(under_alice.contains(&full));
}

#[test]
fn auth_users_see_only_their_own_namespace() {
    let (dir, u) = users_dir();
    let s = Server::with_users(dir.path());
    let mut alice = s.login("alice", ALICE_PW);
    // The gateway's entry, by its client key.
    assert_eq!(
        q::<String>(&mut alice, &["GET", "greeting"]),
        "hello from the gateway"
    );
    // Every keyed command works inside the namespace.
    let _: () = q(&mut alice, &["SET", "k1", "v1"]);
    let _: () = q(&mut alice, &["MSET", "k2", "1", "k3", "3"]);
    assert_eq!(q::<i64>(&mut alice, &["INCR", "k2"]), 2);
    let _: () = q(&mut alice, &["RENAME", "k3", "k4"]);
    assert_eq!(q::<i64>(&mut alice, &["EXISTS", "k1", "k3", "k4"]), 2);
    assert_eq!(q::<i64>(&mut alice, &["EXPIRE", "k1", "100"]), 1);
    assert!(q::<i64>(&mut alice, &["TTL", "k1"]) > 0);
    assert_eq!(
        q::<Vec<Option<String>>>(&mut alice, &["MGET", "k1", "k2", "nope"]),
        vec![Some("v1".into()), Some("2".into()), None]
    );
    let mine = vec!["greeting", "k1", "k2", "k4"];
    assert_eq!(sorted(q(&mut alice, &["KEYS", "*"])), mine);
    assert_eq!(sorted(q(&mut alice, &["KEYS", "k*"])), ["k1", "k2", "k4"]);
    let (cursor, page): (String, Vec<String>) =
        q(&mut alice, &["SCAN", "0", "MATCH", "*", "COUNT", "1000"]);
    assert_eq!(
        (cursor.as_str(), sorted(page)),
        ("0", sorted(q(&mut alice, &["KEYS", "*"])))
    );
    let mut scanned: Vec<String> = alice
        .scan_match::<_, String>("k*")
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    scanned.sort();
    assert_eq!(scanned, ["k1", "k2", "k4"]);
    assert_eq!(q::<i64>(&mut alice, &["DBSIZE"]), 4);
    let r: String = q(&mut alice, &["RANDOMKEY"]);
    assert!(mine.contains(&r.as_str()), "{r}");

    // Internal keys cannot be reached: they name the user's own (absent) keys.
    let auth_key = helios_core::keys::auth_user(&u.alice).unwrap();
    let roles_key = helios_core::keys::rbac_user_roles(&u.alice).unwrap();
    let bob_key = helios_core::keys::KvSpace::User(&u.bob).key("x").unwrap();
    assert_eq!(q::<Option<String>>(&mut alice, &["GET", &auth_key]), None);
    assert_eq!(q::<Option<String>>(&mut alice, &["GET", &roles_key]), None);
    assert_eq!(
        q::<Option<String>>(&mut alice, &["GET", "meta:kv_layout"]),
        None
    );
    assert_eq!(
        q::<i64>(
            &mut alice,
            &["DEL", &helios_core::keys::auth_user(&u.bob).unwrap()]
        ),
        0
    );
    assert_eq!(q::<i64>(&mut alice, &["EXISTS", &bob_key]), 0);
    let none: Vec<String> = q(&mut alice, &["KEYS", "auth:*"]);
    assert!(none.is_empty());
    // The escalation of the issue writes only the user's own key of that name.
    let _: () = q(&mut alice, &["SET", &roles_key, r#"["admin"]"#]);
    assert_eq!(
        sorted(q(&mut alice, &["KEYS", "rbac:*"])),
        vec![roles_key.clone()]
    );
    assert_eq!(
        e(&mut alice, &["FLUSHALL"]),
        noperm_cmd("alice", "flushall")
    );

    // Server commands need admin:*, and change nothing.
    for (c, name) in [
        (&["FLUSHDB"][..], "flushdb"),
        (&["SAVE"], "save"),
        (&["BGSAVE"], "bgsave"),
        (&["BGREWRITEAOF"], "bgrewriteaof"),
        (&["LASTSAVE"], "lastsave"),
        (&["INFO"], "info"),
        (&["CONFIG", "GET", "*"], "config|get"),
        (&["SHUTDOWN", "NOSAVE"], "shutdown"),
    ] {
        assert_eq!(e(&mut alice, c), noperm_cmd("alice", name), "{c:?}");
    }
    // MULTI/EXEC inside the namespace; a refused command aborts the transaction.
    let _: () = q(&mut alice, &["MULTI"]);
    let _: String = q(&mut alice, &["SET", "m", "1"]);
    let _: String = q(&mut alice, &["INCR", "m"]);
    assert_eq!(
        q::<Vec<Value>>(&mut alice, &["EXEC"]),
        vec![Value::Okay, Value::Int(2)]
    );
    let _: () = q(&mut alice, &["MULTI"]);
    let _: String = q(&mut alice, &["SET", "m", "5"]);
    assert_eq!(
        e(&mut alice, &["FLUSHALL"]),
        noperm_cmd("alice", "flushall")
    );
    assert!(e(&mut alice, &["EXEC"]).starts_with("EXECABORT"));
    assert_eq!(q::<String>(&mut alice, &["GET", "m"]), "2");

    // Another user sees none of it.
    let mut bob = s.login("bob", BOB_PW);
    assert!(q::<Vec<String>>(&mut bob, &["KEYS", "*"]).is_empty());
    assert_eq!(q::<Option<String>>(&mut bob, &["GET", "greeting"]), None);
    assert_eq!(q::<i64>(&mut bob, &["DBSIZE"]), 0);
    assert_eq!(q::<Option<String>>(&mut bob, &["RANDOMKEY"]), None);
    let (_, page): (String, Vec<String>) = q(&mut bob, &["SCAN", "0", "COUNT", "1000"]);
    assert!(page.is_empty());

    // A readonly user reads, and every write is refused with nothing changed.
    let mut rita = s.login("rita", RITA_PW);
    assert_eq!(q::<Option<String>>(&mut rita, &["GET", "x"]), None);
    for w in [
        &["SET", "x", "1"][..],
        &["DEL", "x"],
        &["MSET", "x", "1", "y", "2"],
        &["INCR", "x"],
        &["EXPIRE", "x", "5"],
    ] {
        assert_eq!(
            e(&mut rita, w),
            "NOPERM No permissions to access a key",
            "{w:?}"
        );
    }
    assert!(q::<Vec<String>>(&mut rita, &["KEYS", "*"]).is_empty());

    // A disabled user answers like a wrong password.
    let mut raw = s.raw();
    expect(
        &mut raw,
        format!("AUTH dora {DORA_PW}\r\n").as_bytes(),
        "-WRONGPASS invalid username-password pair or user is disabled.\r\n",
    );
    // With auth_users and no AUTH, nothing runs.
    expect(
        &mut raw,
        b"GET greeting\r\n",
        "-NOAUTH Authentication required.\r\n",
    );

    // An admin, and the default user, see the raw keyspace verbatim.
    let mut admin = s.login("admin", ADMIN_PW);
    let raw_roles: String = q(&mut admin, &["GET", &roles_key]);
    assert_eq!(raw_roles, r#"["user"]"#, "the real record is unchanged");
    let alices: Vec<String> = q(&mut admin, &["KEYS", &format!("kv:u:{}:*", u.alice)]);
    assert_eq!(alices.len(), 6, "{alices:?}");
    assert!(q::<Vec<String>>(&mut admin, &["KEYS", "auth:user:*"]).len() >= 5);
    let mut default = redis::Client::open(format!("redis://:s3cret@127.0.0.1:{}/", s.port))
        .unwrap()
        .get_connection()
        .unwrap();
    assert_eq!(
        q::<i64>(&mut default, &["DBSIZE"]),
        q::<i64>(&mut admin, &["DBSIZE"])
    );
    assert_eq!(
        q::<String>(&mut default, &["GET", &roles_key]),
        r#"["user"]"#
    );
    // A scoped user becomes unrestricted by AUTHing as another user, and back.
    let _: () = redis::cmd("AUTH").arg("s3cret").query(&mut alice).unwrap();
    assert_eq!(q::<String>(&mut alice, &["GET", &roles_key]), r#"["user"]"#);
    s.stop();

    // What the gateway sees afterwards: alice is still a plain user, her writes are in her
    // namespace.
    let atlas = Atlas::open(dir.path(), Options::default()).unwrap();
    assert_eq!(atlas.get(&roles_key).as_deref(), Some(&br#"["user"]"#[..]));
    let space = helios_core::keys::KvSpace::User(&u.alice);
    assert_eq!(
        atlas.get(space.key("k1").unwrap()).as_deref(),
        Some(&b"v1"[..])
    );
    assert!(atlas.get(space.key(&roles_key).unwrap()).is_some());
    assert!(atlas.get("k1").is_none());
    atlas.close().unwrap();
}

/// `AUTH <requirepass>` is throttled per client address: after a few failures each attempt
/// waits longer, the right password as long as a wrong one, on any connection of the
/// address; the right password clears it.
#[test]
fn requirepass_auth_is_throttled_per_address() {
    use helios_bins::atlasd::auth::{DELAY_MS_BASE, FREE_FAILURES};
    let (_dir, s) = start_with(|c| c.requirepass = "s3cret".into());
    let wrong = "-WRONGPASS invalid username-password pair or user is disabled.\r\n";
    let mut one = s.raw();
    for i in 0..FREE_FAILURES {
        // Both forms, and HELLO's, count.
        let req: &[u8] = match i % 3 {
            0 => b"AUTH guess\r\n",
            1 => b"AUTH default guess\r\n",
            _ => b"HELLO 2 AUTH default guess\r\n",
        };
        expect(&mut one, req, wrong);
    }
    let timed = |c: &mut TcpStream, req: &[u8], want: &str| {
        let t = std::time::Instant::now();
        expect(c, req, want);
        t.elapsed()
    };
    // The next guess waits (lower bounds only: a slow machine only waits longer).
    let took = timed(&mut one, b"AUTH guess\r\n", wrong);
    assert!(took >= Duration::from_millis(DELAY_MS_BASE), "{took:?}");
    // So does the next one, longer, on another connection of the same address.
    let mut two = s.raw();
    let took = timed(&mut two, b"AUTH guess\r\n", wrong);
    assert!(
        took >= Duration::from_millis(2 * DELAY_MS_BASE - 20),
        "{took:?}"
    );
    // The right password waits its turn too (never faster than a wrong one), then passes.
    let took = timed(&mut two, b"AUTH s3cret\r\nPING\r\n", "+OK\r\n+PONG\r\n");
    assert!(
        took >= Duration::from_millis(4 * DELAY_MS_BASE - 20),
        "{took:?}"
    );
    // It cleared the address: the free failures are back.
    let mut three = s.raw();
    for _ in 0..FREE_FAILURES {
        expect(&mut three, b"AUTH guess\r\n", wrong);
    }
    expect(&mut three, b"AUTH s3cret\r\n", "+OK\r\n");
}

/// `AUTH user pass` goes through helios-auth's one check (`Auth::authenticate`), with the
/// gateway login's throttle: the per-username delay is served before the check.
#[test]
fn auth_users_are_throttled_like_the_gateway_login() {
    let (dir, _) = users_dir();
    let s = Server::with_users(dir.path());
    let wrong = "-WRONGPASS invalid username-password pair or user is disabled.\r\n";
    let delay = helios_auth::ThrottleConfig::default().user_delay_ms_base;
    let mut raw = s.raw();
    for _ in 0..helios_auth::ThrottleConfig::default().failures_before_lock {
        expect(&mut raw, b"AUTH bob not-the-password\r\n", wrong);
    }
    // Bob's name now costs a delay before any check, and this address is locked out of
    // bob: even the right password is refused.
    let t = std::time::Instant::now();
    expect(&mut raw, format!("AUTH bob {BOB_PW}\r\n").as_bytes(), wrong);
    assert!(
        t.elapsed() >= Duration::from_millis(delay),
        "{:?}",
        t.elapsed()
    );
    // Other users are not affected.
    expect(
        &mut raw,
        format!("AUTH alice {ALICE_PW}\r\nGET greeting\r\n").as_bytes(),
        "+OK\r\n$22\r\nhello from the gateway\r\n",
    );
}

/// A gateway data directory of the KV layout before namespaces: users (the bootstrap
/// `admin` and `alice`), a layout-1 key `kv:x`, and no `meta:kv_layout`; with alice's id.
fn layout1_gateway_dir() -> (tempfile::TempDir, String) {
    gateway_dir(|state| {
        let alice = add_user(state, "alice", ALICE_PW, "user");
        // Back to layout 1, as an older gateway left it.
        assert!(state.atlas.delete("meta:kv_layout").unwrap());
        state.atlas.set("kv:x", "old").unwrap();
        alice
    })
}

/// With `auth_users`, atlasd serves the gateway's directory, so it brings the KV keys to
/// the gateway's layout before serving, as the gateway's start does: what its users write
/// then stays theirs when the gateway starts later. Without `auth_users` nothing is moved.
#[test]
fn auth_users_brings_a_gateway_directory_to_the_current_kv_layout() {
    let (dir, alice_id) = layout1_gateway_dir();
    // A plain keyspace (no auth_users): atlasd's own, left as it is.
    let s = Server::start(dir.path(), None, |_| {});
    let mut c = s.client();
    assert_eq!(
        q::<Option<String>>(&mut c, &["GET", "meta:kv_layout"]),
        None
    );
    assert_eq!(q::<String>(&mut c, &["GET", "kv:x"]), "old");
    s.stop();
    // With auth_users: migrated before the first connection is served.
    let s = Server::with_users(dir.path());
    let mut admin = s.login("admin", ADMIN_PW);
    assert_eq!(q::<String>(&mut admin, &["GET", "meta:kv_layout"]), "2");
    assert_eq!(q::<String>(&mut admin, &["GET", "kv:ns:legacy:x"]), "old");
    assert_eq!(q::<i64>(&mut admin, &["EXISTS", "kv:x"]), 0);
    let mut alice = s.login("alice", ALICE_PW);
    let _: () = q(&mut alice, &["SET", "mine", "v"]);
    s.stop();
    // The gateway starts later: alice's key is still in her namespace.
    let state = gateway_state(dir.path(), None);
    let mine = helios_core::keys::KvSpace::User(&alice_id)
        .key("mine")
        .unwrap();
    assert_eq!(state.atlas.get(&mine).as_deref(), Some(&b"v"[..]));
    assert_eq!(
        state.atlas.get("kv:ns:legacy:x").as_deref(),
        Some(&b"old"[..])
    );
    state.atlas.close().unwrap();
}

/// A layout atlasd cannot bring to the current one (written by a newer build) fails the
/// start with `auth_users`, and serves nothing.
#[test]
fn auth_users_refuses_an_unknown_kv_layout() {
    let (dir, _) = layout1_gateway_dir();
    let atlas = Atlas::open(dir.path(), Options::default()).unwrap();
    atlas.set("meta:kv_layout", "99").unwrap();
    let cfg = AtlasdConfig {
        data_dir: dir.path().to_path_buf(),
        auth_users: true,
        ..AtlasdConfig::default()
    };
    let (rt, turns) = helios_bins::atlasd::runtime(&cfg).unwrap();
    let err = rt
        .block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            helios_bins::atlasd::run(listener, atlas.clone(), cfg, std::future::pending(), turns)
                .await
        })
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("moving KV keys to namespaces:") && msg.contains("99"),
        "{msg}"
    );
    // Nothing moved.
    assert_eq!(atlas.get("kv:x").as_deref(), Some(&b"old"[..]));
    atlas.close().unwrap();
}

/// Issue 23: the string commands added (ranges, bits, BITFIELD, LCS, COPY, OBJECT, ...)
/// with Redis's replies and errors, and their limits.
#[test]
fn string_range_and_bit_commands() {
    let (_d, s) = start();
    let mut c = s.client();
    assert_eq!(q::<i64>(&mut c, &["SETRANGE", "r", "5", "ab"]), 7);
    assert_eq!(q::<Vec<u8>>(&mut c, &["GET", "r"]), b"\0\0\0\0\0ab");
    assert_eq!(q::<i64>(&mut c, &["SETRANGE", "r", "0", "xy"]), 7);
    assert_eq!(q::<String>(&mut c, &["GETRANGE", "r", "-2", "-1"]), "ab");
    assert_eq!(q::<String>(&mut c, &["SUBSTR", "r", "0", "1"]), "xy");
    assert_eq!(q::<i64>(&mut c, &["SETRANGE", "none", "3", ""]), 0);
    assert_eq!(q::<i64>(&mut c, &["EXISTS", "none"]), 0);
    assert_eq!(
        e(&mut c, &["SETRANGE", "r", "-1", "a"]),
        "ERR offset is out of range"
    );
    for off in ["536870911", "9223372036854775807"] {
        assert_eq!(
            e(&mut c, &["SETRANGE", "r", off, "AB"]),
            "ERR string exceeds maximum allowed size (proto-max-bulk-len)"
        );
    }
    assert_eq!(q::<i64>(&mut c, &["SETBIT", "b", "7", "1"]), 0);
    assert_eq!(q::<i64>(&mut c, &["SETBIT", "b", "7", "1"]), 1);
    assert_eq!(q::<i64>(&mut c, &["GETBIT", "b", "7"]), 1);
    assert_eq!(q::<i64>(&mut c, &["GETBIT", "b", "100"]), 0);
    assert_eq!(
        e(&mut c, &["SETBIT", "b", "4294967296", "1"]),
        "ERR bit offset is not an integer or out of range"
    );
    assert_eq!(
        e(&mut c, &["SETBIT", "b", "1", "2"]),
        "ERR bit is not an integer or out of range"
    );
    let _: () = c.set("f", "foobar").unwrap();
    assert_eq!(q::<i64>(&mut c, &["BITCOUNT", "f"]), 26);
    assert_eq!(q::<i64>(&mut c, &["BITCOUNT", "f", "1", "1"]), 6);
    assert_eq!(q::<i64>(&mut c, &["BITCOUNT", "f", "5", "30", "BIT"]), 17);
    assert_eq!(e(&mut c, &["BITCOUNT", "f", "0"]), "ERR syntax error");
    let _: () = c.set("p", b"\xff\xf0\x00".as_slice()).unwrap();
    assert_eq!(q::<i64>(&mut c, &["BITPOS", "p", "0"]), 12);
    assert_eq!(q::<i64>(&mut c, &["BITPOS", "p", "1", "2"]), -1);
    assert_eq!(q::<i64>(&mut c, &["BITPOS", "p", "1", "7", "15", "BIT"]), 7);
    let _: () = c.set("x1", "abc").unwrap();
    let _: () = c.set("x2", "a").unwrap();
    assert_eq!(q::<i64>(&mut c, &["BITOP", "AND", "dst", "x1", "x2"]), 3);
    assert_eq!(q::<Vec<u8>>(&mut c, &["GET", "dst"]), b"a\0\0");
    assert_eq!(
        e(&mut c, &["BITOP", "NOT", "dst", "x1", "x2"]),
        "ERR BITOP NOT must be called with a single source key."
    );
    let v: Vec<Option<i64>> = q(
        &mut c,
        &[
            "BITFIELD", "bf", "SET", "i8", "0", "100", "INCRBY", "i8", "0", "100", "GET", "u4", "0",
        ],
    );
    assert_eq!(v, vec![Some(0), Some(-56), Some(12)]);
    let v: Vec<Option<i64>> = q(
        &mut c,
        &[
            "BITFIELD", "bf", "OVERFLOW", "FAIL", "INCRBY", "u2", "100", "5",
        ],
    );
    assert_eq!(v, vec![None]);
    assert_eq!(
        e(&mut c, &["BITFIELD_RO", "bf", "SET", "u8", "0", "1"]),
        "ERR BITFIELD_RO only supports the GET subcommand"
    );
    let _: () = c.set("l1", "ohmytext").unwrap();
    let _: () = c.set("l2", "mynewtext").unwrap();
    assert_eq!(q::<String>(&mut c, &["LCS", "l1", "l2"]), "mytext");
    assert_eq!(q::<i64>(&mut c, &["LCS", "l1", "l2", "LEN"]), 6);
    let _: () = c.set("src", "v").unwrap();
    let _: () = c.pexpire("src", 100_000).unwrap();
    assert_eq!(q::<i64>(&mut c, &["COPY", "src", "cp"]), 1);
    assert_eq!(q::<i64>(&mut c, &["COPY", "src", "cp"]), 0);
    assert_eq!(
        q::<i64>(&mut c, &["COPY", "src", "cp", "DB", "0", "REPLACE"]),
        1
    );
    assert!(q::<i64>(&mut c, &["PTTL", "cp"]) > 0);
    assert_eq!(
        e(&mut c, &["COPY", "src", "cp", "DB", "1"]),
        "ERR DB index is out of range"
    );
    assert_eq!(
        e(&mut c, &["COPY", "src", "cp", "DB", "x"]),
        "ERR value is not an integer or out of range"
    );
    assert_eq!(
        q::<String>(&mut c, &["OBJECT", "ENCODING", "src"]),
        "embstr"
    );
    assert_eq!(q::<i64>(&mut c, &["TOUCH", "src", "cp", "nope"]), 2);
    assert!(q::<i64>(&mut c, &["MEMORY", "USAGE", "src"]) > 0);
    assert_eq!(q::<i64>(&mut c, &["WAIT", "0", "0"]), 0);
    assert_eq!(
        q::<String>(&mut c, &["INCRBYFLOAT", "fl", "0.024390243902439025"]),
        "0.02439024390243902"
    );
    assert_eq!(
        q::<String>(&mut c, &["INCRBYFLOAT", "fl", "-0.024390243902439025"]),
        "0"
    );
}

/// Issue 23: WATCH/EXEC, atomic with the store's commit. Another client's write (or a
/// delete, or an expiry) of a watched key between WATCH and EXEC makes EXEC answer a nil
/// array and apply nothing; concurrent read-modify-write loops under WATCH lose no update.
#[test]
fn watch_aborts_exec_on_a_change_and_counters_lose_nothing() {
    let (_d, s) = start();
    let mut a = s.client();
    let mut b = s.client();
    let _: () = a.set("w", "1").unwrap();
    for change in [
        &["SET", "w", "1"][..],
        &["DEL", "w"],
        &["PEXPIRE", "w", "1"],
    ] {
        let _: () = a.set("w", "1").unwrap();
        assert_eq!(q::<String>(&mut a, &["WATCH", "w"]), "OK");
        let _: redis::Value = q(&mut b, change);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(q::<String>(&mut a, &["MULTI"]), "OK");
        assert_eq!(q::<String>(&mut a, &["SET", "other", "x"]), "QUEUED");
        let v: Value = q(&mut a, &["EXEC"]);
        assert_eq!(v, Value::Nil, "after {change:?}");
        assert_eq!(q::<Option<String>>(&mut a, &["GET", "other"]), None);
    }
    // Unchanged: EXEC runs; UNWATCH forgets.
    let _: () = a.set("w", "1").unwrap();
    assert_eq!(q::<String>(&mut a, &["WATCH", "w"]), "OK");
    assert_eq!(q::<String>(&mut a, &["UNWATCH"]), "OK");
    let _: () = b.set("w", "2").unwrap();
    assert_eq!(q::<String>(&mut a, &["MULTI"]), "OK");
    assert_eq!(q::<String>(&mut a, &["GET", "w"]), "QUEUED");
    let v: Vec<String> = q(&mut a, &["EXEC"]);
    assert_eq!(v, vec!["2"]);
    assert_eq!(q::<String>(&mut a, &["MULTI"]), "OK");
    assert_eq!(
        e(&mut a, &["WATCH", "w"]),
        "ERR Command not allowed inside a transaction"
    );
    let _: redis::Value = q(&mut a, &["DISCARD"]);

    // Concurrent clients: each adds 1 to a counter 50 times with WATCH/GET/MULTI/SET/EXEC
    // and retries on a nil EXEC: the final count is exact.
    let _: () = a.set("ctr", "0").unwrap();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let mut c = s.client();
            std::thread::spawn(move || {
                let mut aborted = 0;
                for _ in 0..50 {
                    loop {
                        let _: String = q(&mut c, &["WATCH", "ctr"]);
                        let n: i64 = q::<String>(&mut c, &["GET", "ctr"]).parse().unwrap();
                        let _: String = q(&mut c, &["MULTI"]);
                        let next = (n + 1).to_string();
                        let _: String = q(&mut c, &["SET", "ctr", &next]);
                        if q::<Value>(&mut c, &["EXEC"]) != Value::Nil {
                            break;
                        }
                        aborted += 1;
                    }
                }
                aborted
            })
        })
        .collect();
    let aborted: i32 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(
        q::<String>(&mut a, &["GET", "ctr"]),
        "200",
        "{aborted} retries"
    );
}

/// The bounds that keep one small command from holding the server (review of issue 23):
/// BITOP's work (longest source x sources), BITFIELD's write window checked before it is
/// built, LCS's table and the keys one connection watches. (The values one commit's range
/// writes build are bounded in ATLAS: helios-atlas/tests/set_range.rs.)
#[test]
fn costly_string_commands_are_bounded() {
    let (_d, s) = start();
    let mut c = s.client();
    // A 256 MiB value (the largest) from one small command.
    assert_eq!(
        q::<i64>(&mut c, &["SETRANGE", "big", "268435455", "x"]),
        268_435_456
    );
    assert_eq!(
        q::<i64>(&mut c, &["BITOP", "OR", "d", "big", "big", "big", "big"]),
        268_435_456
    );
    assert!(
        e(
            &mut c,
            &["BITOP", "OR", "d", "big", "big", "big", "big", "big"]
        )
        .contains("BITOP would read more than 1 GiB"),
    );
    let _: () = redis::cmd("DEL").arg("big").arg("d").query(&mut c).unwrap();
    // BITFIELD past the largest value: refused at once.
    assert_eq!(
        e(&mut c, &["BITFIELD", "bf", "SET", "u8", "#536870910", "1"]),
        "ERR string exceeds maximum allowed size (proto-max-bulk-len)"
    );
    assert_eq!(q::<i64>(&mut c, &["EXISTS", "bf"]), 0);
    // LCS of two 5,000-byte strings needs a 100 MB table: refused.
    let a = "a".repeat(5_000);
    let _: () = redis::cmd("SET").arg("l1").arg(&a).query(&mut c).unwrap();
    let _: () = redis::cmd("SET").arg("l2").arg(&a).query(&mut c).unwrap();
    assert!(e(&mut c, &["LCS", "l1", "l2"]).starts_with("ERR Insufficient memory"));
    // WATCH: at most 1,024 keys a connection.
    let mut watch = redis::cmd("WATCH");
    for i in 0..1_025 {
        watch.arg(format!("w{i}"));
    }
    let r: redis::RedisResult<()> = watch.query(&mut c);
    assert!(r.is_err(), "{r:?}");
    let _: () = redis::cmd("UNWATCH").query(&mut c).unwrap();
}
