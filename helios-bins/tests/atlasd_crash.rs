//! kill -9 through the protocol: the built `helios-atlasd` binary runs with
//! `appendfsync always`, a client thread writes (SET, INCR and an atomic MULTI/EXEC pair)
//! and records every reply it got, the server is killed with SIGKILL (`Child::kill`) at a
//! random moment, restarted on the same directory, and every acknowledged write must be
//! there; a MULTI/EXEC pair is there whole or not at all. A few cycles run by default;
//! `cargo test -p helios-bins --test atlasd_crash -- --ignored` runs many more.
//!
//! Also through the binary: the redis-server flags (`--port --bind --dir --requirepass`)
//! and the app wrapper's, an unknown config key failing at start, and a graceful exit on
//! SIGTERM and on `SHUTDOWN` with the data kept.

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn(dir: &std::path::Path) -> (Child, redis::Connection) {
    for _attempt in 0..5 {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_helios-atlasd"))
            .args(["--dir", dir.to_str().unwrap(), "--port", &port.to_string()])
            .args(["--appendfsync", "always"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        let mut child = child;
        while started.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = child.try_wait() {
                break; // port taken, or the directory still locked: try again
            }
            let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
            if let Ok(c) = client.get_connection_with_timeout(Duration::from_millis(200)) {
                return (child, c);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("helios-atlasd did not start");
}

#[derive(Default)]
struct Acked {
    sets: Vec<u64>,
    counter: i64,
    pairs: Vec<u64>,
}

fn cycle(dir: &std::path::Path, seed: u64, base: u64) -> u64 {
    let (mut child, mut con) = spawn(dir);
    let acked = Arc::new(Mutex::new(Acked::default()));
    let a = acked.clone();
    let writer = std::thread::spawn(move || {
        let mut i = base;
        loop {
            i += 1;
            let r: redis::RedisResult<()> = redis::cmd("SET")
                .arg(format!("k:{i}"))
                .arg(i)
                .query(&mut con);
            if r.is_err() {
                return i;
            }
            a.lock().unwrap().sets.push(i);
            let Ok(n) = redis::cmd("INCR").arg("counter").query::<i64>(&mut con) else {
                return i;
            };
            a.lock().unwrap().counter = n;
            let r: redis::RedisResult<(String, String)> = redis::pipe()
                .atomic()
                .cmd("SET")
                .arg(format!("a:{i}"))
                .arg(i)
                .cmd("SET")
                .arg(format!("b:{i}"))
                .arg(i)
                .query(&mut con);
            if r.is_err() {
                return i;
            }
            a.lock().unwrap().pairs.push(i);
        }
    });
    // Kill at a pseudo-random moment after some writes.
    std::thread::sleep(Duration::from_millis(30 + (seed * 7919) % 170));
    child.kill().unwrap();
    child.wait().unwrap();
    let last = writer.join().unwrap();
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    let (mut child, mut con) = spawn(dir);
    for i in &acked.sets {
        let v: Option<u64> = redis::cmd("GET")
            .arg(format!("k:{i}"))
            .query(&mut con)
            .unwrap();
        assert_eq!(v, Some(*i), "seed {seed}: acknowledged SET k:{i} lost");
    }
    let counter: i64 = redis::cmd("GET")
        .arg("counter")
        .query::<Option<i64>>(&mut con)
        .unwrap()
        .unwrap_or(0);
    assert!(
        counter >= acked.counter,
        "seed {seed}: counter {counter} < acknowledged {}",
        acked.counter
    );
    for i in base + 1..=last {
        let (a, b): (Option<u64>, Option<u64>) = redis::pipe()
            .cmd("GET")
            .arg(format!("a:{i}"))
            .cmd("GET")
            .arg(format!("b:{i}"))
            .query(&mut con)
            .unwrap();
        assert_eq!(
            a.is_some(),
            b.is_some(),
            "seed {seed}: half a MULTI/EXEC at {i}"
        );
        if acked.pairs.contains(&i) {
            assert!(a.is_some(), "seed {seed}: acknowledged EXEC {i} lost");
        }
    }
    let _ = redis::cmd("SHUTDOWN").query::<()>(&mut con);
    child.wait().unwrap();
    assert!(
        !acked.sets.is_empty(),
        "seed {seed}: nothing was written before the kill"
    );
    last
}

fn run(cycles: u64) {
    let dir = tempfile::tempdir().unwrap();
    let mut base = 0;
    for seed in 0..cycles {
        base = cycle(dir.path(), seed, base) + 1;
    }
}

#[test]
fn kill_9_loses_no_acknowledged_write() {
    run(3);
}

#[test]
#[ignore = "long: many kill -9 cycles"]
fn kill_9_many_cycles() {
    run(40);
}

#[test]
fn binary_flags_and_bad_config() {
    let bin = env!("CARGO_BIN_EXE_helios-atlasd");
    let help = Command::new(bin).arg("--help").output().unwrap();
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--port",
        "--bind",
        "--dir",
        "--appendfsync",
        "--requirepass",
        "--config",
        "--data-dir",
        "--listen",
    ] {
        assert!(text.contains(flag), "{flag} missing from --help:\n{text}");
    }
    // An unknown config key fails at start, naming the key.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("atlasd.yaml");
    std::fs::write(&cfg, "listen: 127.0.0.1:0\nmaxclientz: 5\n").unwrap();
    let out = Command::new(bin)
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("maxclientz"));
    // --requirepass and --port as on redis-server.
    let port = free_port();
    let mut child = Command::new(bin)
        .args(["--dir", dir.path().join("d").to_str().unwrap()])
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--requirepass", "pw"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
    let started = Instant::now();
    let mut con = loop {
        if let Ok(c) = client.get_connection_with_timeout(Duration::from_millis(200)) {
            break c;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "did not start");
        std::thread::sleep(Duration::from_millis(20));
    };
    let e = redis::cmd("GET")
        .arg("a")
        .query::<Option<String>>(&mut con)
        .unwrap_err();
    assert_eq!(e.code(), Some("NOAUTH"));
    let ok: String = redis::cmd("AUTH").arg("pw").query(&mut con).unwrap();
    assert_eq!(ok, "OK");
    // SIGTERM-like stop via SHUTDOWN: the process exits by itself, successfully.
    let _ = redis::cmd("SHUTDOWN").query::<()>(&mut con);
    assert!(child.wait().unwrap().success());
}

#[test]
fn sigterm_flushes_atlas() {
    let dir = tempfile::tempdir().unwrap();
    // A server of ours on a free port, and a connection to it. The port is only free when
    // picked: another test's server may take it first. Then ours fails to bind and the
    // connection reaches the other one; INFO's process_id tells, and we try again.
    let start = || {
        for _attempt in 0..5 {
            let port = free_port();
            let mut child = Command::new(env!("CARGO_BIN_EXE_helios-atlasd"))
                .args(["--dir", dir.path().to_str().unwrap()])
                .args(["--port", &port.to_string(), "--appendfsync", "no"])
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if let Ok(mut c) = client.get_connection_with_timeout(Duration::from_millis(200)) {
                    let info: String = redis::cmd("INFO").arg("server").query(&mut c).unwrap();
                    if info.contains(&format!("process_id:{}\r\n", child.id())) {
                        return (child, c);
                    }
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("helios-atlasd did not start");
    };
    let (mut child, mut con) = start();
    let _: () = redis::cmd("SET").arg("k").arg("v").query(&mut con).unwrap();
    // SIGTERM through the `kill` utility (no libc in tests).
    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    assert!(child.wait().unwrap().success(), "graceful exit on SIGTERM");
    let (mut child, mut con) = start();
    let v: Option<String> = redis::cmd("GET").arg("k").query(&mut con).unwrap();
    assert_eq!(v.as_deref(), Some("v"));
    let _ = redis::cmd("SHUTDOWN").query::<()>(&mut con);
    child.wait().unwrap();
}
