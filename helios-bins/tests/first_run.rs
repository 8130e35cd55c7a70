//! A new user's first minutes with the real binaries: a busy port fails before anything
//! is created (gateway and atlasd), a fresh gateway writes the generated admin password
//! to an owner-only file (never to stdout) that logs in, `GET /` and `/openapi.yaml`
//! answer, JSON ends with a newline, a second server on the same data directory is told
//! which pid holds it, a data directory that is a file is named as such, SIGINT exits 0,
//! and `--version` / `--help` name the binary, its defaults and its environment.
//! Everything on 127.0.0.1.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const GATEWAY: &str = env!("CARGO_BIN_EXE_helios-gateway");
const ATLASD: &str = env!("CARGO_BIN_EXE_helios-atlasd");
const PROXY: &str = env!("CARGO_BIN_EXE_helios-proxy");
const WORKER: &str = env!("CARGO_BIN_EXE_helios-worker");

/// A port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn gateway(data_dir: &Path, listen: &str) -> Command {
    let mut c = Command::new(GATEWAY);
    c.arg("--data-dir")
        .arg(data_dir)
        .arg("--listen")
        .arg(listen)
        .env_remove("HELIOS_ADMIN_PASSWORD")
        .env("HELIOS_AUTH__BCRYPT_COST", "4")
        .env("HELIOS_LOG__FORMAT", "json");
    c
}

/// Runs `cmd` to its end, failing the test if that takes more than 20 s.
fn run_bounded(mut cmd: Command) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("the process did not exit within 20 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// One HTTP/1.1 request with `Connection: close`: (status, content type, body).
fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head[9..12].parse().unwrap();
    let content_type = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type: ")
                .map(str::to_owned)
        })
        .unwrap_or_default();
    (status, content_type, body.to_owned())
}

fn wait_healthy(addr: SocketAddr, child: &mut Child) {
    let started = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            panic!("the gateway exited early: {st}");
        }
        if TcpStream::connect(addr).is_ok() && http(addr, "GET", "/healthz", "").0 == 200 {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no /healthz");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts `cmd` (a server listening on `addr`) with no stdio and waits until it is healthy.
fn serve_healthy(cmd: &mut Command, addr: SocketAddr) -> Child {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_healthy(addr, &mut child);
    child
}

fn sigint(child: &Child) {
    let st = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no exit after SIGINT"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_busy_port_fails_at_once_and_creates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let data = tmp.path().join("data");
    let out = run_bounded(gateway(&data, &addr));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("cannot listen on {addr}")), "{err}");
    assert!(
        !data.exists(),
        "the gateway created its data dir before binding"
    );

    let data = tmp.path().join("atlasd-data");
    let mut cmd = Command::new(ATLASD);
    cmd.arg("--dir").arg(&data).arg("--listen").arg(&addr);
    let out = run_bounded(cmd);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("cannot listen on {addr}")), "{err}");
    assert!(!data.exists(), "atlasd created its data dir before binding");
}

#[test]
fn the_gateway_takes_its_runtime_threads_from_a_flag() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut cmd = gateway(&data, &format!("127.0.0.1:{}", free_port()));
    cmd.args(["--threads", "1025"]);
    let out = run_bounded(cmd);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("threads") && err.contains("0..=1024"), "{err}");
    assert!(!data.exists(), "a refused config created the data dir");

    // Without the flag the count is one per core, whatever TOKIO_WORKER_THREADS says
    // (tokio would panic on this one).
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut child = serve_healthy(
        gateway(&data, &addr.to_string()).env("TOKIO_WORKER_THREADS", "many"),
        addr,
    );
    sigint(&child);
    assert!(wait_exit(&mut child).success());

    // One runtime thread serves reads and writes (a registration: bcrypt and a commit).
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut child = serve_healthy(
        gateway(&data, &addr.to_string()).args(["--threads", "1"]),
        addr,
    );
    let (st, _, body) = http(
        addr,
        "POST",
        "/api/v1/auth/register",
        r#"{"username":"onethread","password":"one thread password"}"#,
    );
    assert_eq!(st, 201, "{body}");
    let (st, _, body) = http(
        addr,
        "POST",
        "/api/v1/auth/login",
        r#"{"username":"onethread","password":"one thread password"}"#,
    );
    assert_eq!(st, 200, "{body}");
    sigint(&child);
    assert!(wait_exit(&mut child).success());
}

#[test]
fn a_data_dir_that_is_a_file_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("data");
    std::fs::write(&file, "not a dir").unwrap();
    let out = run_bounded(gateway(&file, &format!("127.0.0.1:{}", free_port())));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a directory"), "{err}");
    assert!(
        !err.contains("{ "),
        "a Debug struct reached the user: {err}"
    );
}

#[test]
fn a_fresh_gateway_keeps_its_admin_password_in_an_owner_only_file() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut child = gateway(&data, &addr.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Drain stderr (the logs) on a thread, so a full pipe never blocks the server.
    let stderr = child.stderr.take().unwrap();
    let logs = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    wait_healthy(addr, &mut child);

    let file = data.join("admin-password");
    let password = std::fs::read_to_string(&file).unwrap().trim().to_owned();
    assert!(password.len() >= 20, "{password:?}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "admin-password is {mode:o}");
        let mode = std::fs::metadata(data.join("gateway.secret"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "gateway.secret is {mode:o}");
        // Everything in a fresh data dir is owner-only (the AOF holds bcrypt hashes).
        let mode = std::fs::metadata(&data).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "the data dir is {mode:o}");
        // Files 0600, directories (the audit log's) 0700, and the files inside them 0600.
        let mut dirs = vec![data.clone()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                let meta = std::fs::metadata(&path).unwrap();
                let mode = meta.permissions().mode() & 0o777;
                let want = if meta.is_dir() { 0o700 } else { 0o600 };
                assert_eq!(mode, want, "{} is {mode:o}", path.display());
                if meta.is_dir() {
                    dirs.push(path);
                }
            }
        }
        assert!(
            data.join("audit/audit.log").exists(),
            "the audit log by default"
        );
    }
    let (st, _, body) = http(
        addr,
        "POST",
        "/api/v1/auth/login",
        &format!(r#"{{"username":"admin","password":"{password}"}}"#),
    );
    assert_eq!(st, 200, "{body}");
    assert!(
        body.ends_with('\n'),
        "JSON without a final newline: {body:?}"
    );

    // The index, the API index and the API description, all without a token.
    let (st, ct, body) = http(addr, "GET", "/", "");
    assert_eq!((st, ct.as_str()), (200, "application/json"), "{body}");
    assert!(body.ends_with("}\n"), "{body:?}");
    let index: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(index["links"]["health"], "/healthz");
    assert_eq!(index["links"]["api"], "/api/v1");
    assert_eq!(index["links"]["openapi"], "/openapi.yaml");
    for link in ["/healthz", "/api/v1", "/openapi.yaml"] {
        assert_eq!(http(addr, "GET", link, "").0, 200, "{link}");
    }
    let (_, ct, yaml) = http(addr, "GET", "/openapi.yaml", "");
    assert_eq!(ct, "application/yaml");
    let doc = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.yaml");
    assert_eq!(yaml, std::fs::read_to_string(doc).unwrap());
    // Errors (problem+json) end with a newline too.
    let (st, _, body) = http(addr, "GET", "/nowhere", "");
    assert_eq!(st, 404);
    assert!(body.ends_with("}\n"), "{body:?}");

    // A request with a W3C traceparent: its log line names the trace.
    {
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            c,
            "GET /api/v1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Request-Id: traced-1\r\n\
             traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\r\n"
        )
        .unwrap();
        let mut raw = Vec::new();
        c.read_to_end(&mut raw).unwrap();
        assert!(raw.starts_with(b"HTTP/1.1 200"));
    }

    // A second gateway on the same data directory names the pid that holds it, and
    // leaves the first one alone.
    let out = run_bounded(gateway(&data, &format!("127.0.0.1:{}", free_port())));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("in use by process {}", child.id()))
            && err.contains("another server"),
        "{err}"
    );
    assert_eq!(http(addr, "GET", "/healthz", "").0, 200);

    sigint(&child);
    let status = wait_exit(&mut child);
    assert!(status.success(), "SIGINT exit status {status}");
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    assert!(
        !stdout.contains(&password),
        "the password went to stdout: {stdout}"
    );
    let logs = logs.join().unwrap();
    assert!(
        logs.iter().any(|l| l.contains("admin-password")
            && l.contains("created user 'admin'")
            && !l.contains(&password)),
        "no log line names the password file: {logs:#?}"
    );
    assert!(logs.iter().all(|l| !l.contains(&password)));
    // JSON lines: level, component, and the request's span fields (request id, trace).
    let served = logs
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["request_id"] == "traced-1" && v["message"] == "served")
        .unwrap_or_else(|| panic!("no served line for traced-1: {logs:#?}"));
    assert_eq!(served["level"], "INFO");
    assert_eq!(served["component"], "gateway");
    assert_eq!(served["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(served["path"], "/api/v1");

    // A restart neither regenerates nor rewrites the file: the user exists.
    let before = std::fs::read_to_string(&file).unwrap();
    let mut child = serve_healthy(&mut gateway(&data, &addr.to_string()), addr);
    sigint(&child);
    assert!(wait_exit(&mut child).success());
    assert_eq!(std::fs::read_to_string(&file).unwrap(), before);
}

#[test]
fn version_and_help_name_the_binary_its_defaults_and_environment() {
    for (bin, name, defaults, env) in [
        (
            GATEWAY,
            "helios-gateway",
            &["127.0.0.1:8080", "./data", "everysec"][..],
            &["HELIOS_ADMIN_PASSWORD", "HELIOS_", "RUST_LOG"][..],
        ),
        (
            ATLASD,
            "helios-atlasd",
            &["127.0.0.1:6380", "./atlasd-data", "everysec"][..],
            &["HELIOS_ATLASD_", "RUST_LOG"][..],
        ),
        (
            PROXY,
            "helios-proxy",
            &[
                "127.0.0.1:8081",
                "--backend",
                "round-robin",
                "least-conn",
                "p2c-ewma",
            ][..],
            &["HELIOS_PROXY__", "RUST_LOG"][..],
        ),
        (
            WORKER,
            "helios-worker",
            &["http://127.0.0.1:8080", "http", "command", "noop", "30 s"][..],
            &[
                "HELIOS_WORKER_TOKEN",
                "HELIOS_WORKER_USERNAME",
                "HELIOS_WORKER__",
                "RUST_LOG",
            ][..],
        ),
    ] {
        let out = Command::new(bin).arg("--version").output().unwrap();
        assert!(out.status.success());
        let v = String::from_utf8(out.stdout).unwrap();
        assert_eq!(v, format!("{name} {}\n", env!("CARGO_PKG_VERSION")));
        let out = Command::new(bin).arg("--help").output().unwrap();
        let help = String::from_utf8(out.stdout).unwrap();
        for want in defaults.iter().chain(env) {
            assert!(help.contains(want), "{name} --help lacks {want}:\n{help}");
        }
    }
}

/// A backend on a thread: answers every request `200 hi` and closes.
fn tiny_backend() -> SocketAddr {
    tiny_backend_saying("hi")
}

/// A backend on a thread: answers every request `200 {word}` (2 bytes) and closes.
fn tiny_backend_saying(word: &'static str) -> SocketAddr {
    assert_eq!(word.len(), 2);
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            let mut buf = [0u8; 4096];
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = s.read(&mut buf);
            let reply =
                format!("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{word}");
            let _ = s.write_all(reply.as_bytes());
        }
    });
    addr
}

/// The proxy on `addr` with one event loop in front of `backend`, logging JSON lines to a
/// pipe (`stderr`), its stdout discarded.
fn one_loop_proxy(addr: SocketAddr, backend: SocketAddr) -> Command {
    let mut c = Command::new(PROXY);
    c.args(["--threads", "1", "--listen", &addr.to_string(), "--backend"])
        .arg(format!("http://{backend}"))
        .env("HELIOS_LOG__FORMAT", "json")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

#[test]
fn the_proxy_quick_start_serves_logs_access_and_stops_on_sigint() {
    let backend = tiny_backend();
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // One thread: the single event loop (current-thread runtime) serves, logs and stops.
    let mut child = one_loop_proxy(addr, backend).spawn().unwrap();
    let started = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            panic!("the proxy exited early: {st}");
        }
        if TcpStream::connect(addr).is_ok() {
            let (status, _, body) = http(addr, "GET", "/some/path?secret=1", "");
            assert_eq!((status, body.as_str()), (200, "hi"));
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no proxy");
        std::thread::sleep(Duration::from_millis(50));
    }
    sigint(&child);
    assert!(wait_exit(&mut child).success());
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    // One JSON access line for the exchange: status, route, backend, bytes; no query.
    let line = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["target"] == "access" && v["path"] == "/some/path")
        .unwrap_or_else(|| panic!("no access line in:\n{log}"));
    // The runner's JSON line: level and component, the event's fields at the top.
    let f = &line;
    assert_eq!(
        (f["level"].as_str(), f["component"].as_str()),
        (Some("INFO"), Some("proxy"))
    );
    assert_eq!(f["status"], 200, "{line}");
    assert_eq!(f["route"], "default");
    assert_eq!(f["backend"], "b1");
    assert_eq!(f["bytes"], 2);
    assert_eq!(f["method"], "GET");
    assert!(f["request_id"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(!log.contains("secret=1"), "the query string is not logged");
}

/// Nobody reads the proxy's stderr (a stalled log shipper): the pipe fills, and the
/// single event loop keeps serving, dropping the access lines its log queue has no room
/// for and counting them on `/metrics`; the lines written stay whole.
#[test]
fn the_proxy_keeps_serving_when_nobody_reads_its_logs() {
    let backend = tiny_backend();
    let (port, metrics_port) = (free_port(), free_port());
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let metrics: SocketAddr = format!("127.0.0.1:{metrics_port}").parse().unwrap();
    let mut child = one_loop_proxy(addr, backend)
        .args(["--metrics-listen", &metrics.to_string()])
        .env("HELIOS_LOG__QUEUE_LINES", "16")
        .spawn()
        .unwrap();
    let started = Instant::now();
    while TcpStream::connect(addr).is_err() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the proxy exited early"
        );
        assert!(started.elapsed() < Duration::from_secs(30), "no proxy");
        std::thread::sleep(Duration::from_millis(50));
    }
    // ~350 bytes of access line each: 600 lines are three times a 64 KiB pipe. A blocking
    // log write would stall the loop, and `http`'s 10 s read timeout fail the test.
    for i in 0..600 {
        let (status, _, body) = http(addr, "GET", &format!("/p/{i}"), "");
        assert_eq!((status, body.as_str()), (200, "hi"), "request {i}");
    }
    let (status, _, text) = http(metrics, "GET", "/metrics", "");
    assert_eq!(status, 200);
    let dropped: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("helios_log_lines_dropped_total "))
        .unwrap_or_else(|| panic!("no dropped-lines counter in:\n{text}"))
        .trim()
        .parse()
        .unwrap();
    assert!(dropped > 0, "the pipe filled, so lines were dropped");
    sigint(&child);
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut log = String::new();
        stderr.read_to_string(&mut log).unwrap();
        log
    });
    assert!(wait_exit(&mut child).success());
    let log = reader.join().unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    let access = lines.iter().filter(|v| v["target"] == "access").count();
    assert!(access > 50 && access < 600, "{access} access lines of 600");
}

#[test]
fn the_proxy_reloads_its_routes_on_sighup_and_keeps_them_on_a_bad_file() {
    let (one, two) = (tiny_backend_saying("b1"), tiny_backend_saying("b2"));
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("proxy.yaml");
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let config = |backend: SocketAddr| {
        format!(
            "proxy:\n  listen: \"{addr}\"\n  backends:\n    - id: app\n      url: \"http://{backend}\"\n  \
             routes:\n    - id: all\n      path_prefix: /\n      backends:\n        - backend: app\n"
        )
    };
    std::fs::write(&file, config(one)).unwrap();
    let mut child = Command::new(PROXY)
        .arg("--config")
        .arg(&file)
        .env("HELIOS_LOG__FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let answer_becomes = |want: &str| {
        let started = Instant::now();
        loop {
            if child_status(&addr).as_deref() == Some(want) {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the proxy never answered {want}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    answer_becomes("b1");
    std::fs::write(&file, config(two)).unwrap();
    signal(&child, "-HUP");
    let took = answer_becomes("b2");
    assert!(took < Duration::from_secs(5), "{took:?}");
    // A file that does not validate is refused; the routes in service stay.
    std::fs::write(&file, "proxy:\n  routes: []\n").unwrap();
    signal(&child, "-HUP");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(child_status(&addr).as_deref(), Some("b2"));
    assert!(child.try_wait().unwrap().is_none(), "still running");
    sigint(&child);
    assert!(wait_exit(&mut child).success());
}

/// What the proxy at `addr` answers to `GET /`, if it answers 200.
fn child_status(addr: &SocketAddr) -> Option<String> {
    TcpStream::connect(addr).ok()?;
    let (status, _, body) = http(*addr, "GET", "/", "");
    (status == 200).then_some(body)
}

fn signal(child: &Child, sig: &str) {
    let st = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn the_proxy_refuses_bad_settings_naming_them() {
    let out = run_bounded({
        let mut c = Command::new(PROXY);
        c.args(["--backend", "ftp://x"]);
        c
    });
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--backend"), "{err}");
    // A control URL that is not an origin, and one without credentials.
    let out = run_bounded({
        let mut c = Command::new(PROXY);
        c.args(["--control", "gateway:8080"]);
        c
    });
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("proxy.control"), "{err}");
    let out = run_bounded({
        let mut c = Command::new(PROXY);
        c.args(["--control", "http://127.0.0.1:1"])
            .env_remove("HELIOS_PROXY_TOKEN")
            .env_remove("HELIOS_PROXY_USERNAME");
        c
    });
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("HELIOS_PROXY_TOKEN"), "{err}");
    // No route at all.
    let out = run_bounded(Command::new(PROXY));
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no route"), "{err}");
}
