//! `/metrics` of every binary (gateway, proxy, worker, atlasd) on 127.0.0.1:0, scraped as
//! Prometheus does: the text format 0.0.4 without an `Accept`, OpenMetrics when asked,
//! the seed's names with their types, process metrics everywhere, `promtool` on both
//! bodies when installed; and `atlas_aof_bytes` against the AOF's files on disk.

mod common;

use common::scrape::{Want, check_both, scrape};
use common::{admin_token, start_temp};
use helios_bins::atlasd::config::AtlasdConfig;
use helios_proxy::ProxyConfig;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const ATLAS: [Want<'static>; 7] = [
    ("atlas_aof_bytes", "gauge"),
    ("atlas_snapshot_duration_seconds", "histogram"),
    ("atlas_fsync_duration_seconds", "histogram"),
    ("atlas_keys", "gauge"),
    ("atlas_memory_bytes", "gauge"),
    ("atlas_last_fsync_age_seconds", "gauge"),
    ("atlas_write_error", "gauge"),
];

#[tokio::test]
async fn gateway_metrics_in_both_formats() {
    let (_dir, s) = start_temp(100).await;
    let admin = admin_token(&s).await;
    let (st, _) = s.get("/api/v1/kv/k", &admin).await;
    assert_eq!(st, 404);
    let (st, _) = s.get("/healthz", &admin).await;
    assert_eq!(st, 200);
    let (st, _) = s
        .put_value("/api/v1/kv/k", &admin, serde_json::json!("v"))
        .await;
    assert!(st.is_success(), "{st}");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(helios_bins::gateway::run_metrics(
        listener,
        s.state.clone(),
        async {
            let _ = rx.await;
        },
    ));
    let mut want = vec![
        ("helios_requests", "counter"),
        ("helios_request_duration_seconds", "histogram"),
        ("rate_limiter_denied", "counter"),
        ("worker_job_queue_depth", "gauge"),
    ];
    want.extend(ATLAS);
    // A job, so the queue has a depth to show.
    let (st, _) = common::enqueue(
        &s,
        &admin,
        serde_json::json!({"queue": "emails", "payload": {}}),
    )
    .await;
    assert!(st.is_success(), "{st}");
    let text = check_both(addr, &want).await;
    // Durations by route pattern (bounded: never the path).
    assert!(
        text.contains("helios_request_duration_seconds_count{route=\"/api/v1/kv/{key}\"} "),
        "{text}"
    );
    assert!(
        text.contains("helios_requests_total{route=\"/api/v1/kv/{key}\",method=\"PUT\",status=\""),
        "{text}"
    );
    assert!(
        text.contains("worker_job_queue_depth{queue=\"emails\",state=\"pending\"} 1\n"),
        "{text}"
    );
    let keys = gauge(&text, "atlas_keys");
    assert!(keys >= 2.0, "the admin and the key at least: {keys}");
    assert!(gauge(&text, "atlas_aof_bytes") > 0.0);
    assert!(
        text.contains("atlas_fsync_duration_seconds_count "),
        "{text}"
    );
    let _ = tx.send(());
    task.await.unwrap().unwrap();
    s.stop().await;
}

#[tokio::test]
async fn proxy_metrics_in_both_formats() {
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let cfg = ProxyConfig::quick("127.0.0.1:0", &[format!("http://{dead}")], None).unwrap();
    let state = helios_bins::proxy::start(
        cfg,
        &helios_bins::config::TlsSection::default(),
        &helios_bins::app::Context::system(),
    )
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(helios_bins::proxy::run_metrics(listener, state, async {
        let _ = rx.await;
    }));
    check_both(
        addr,
        &[
            ("proxy_requests", "counter"),
            ("proxy_backend_healthy", "gauge"),
            ("proxy_backend_breaker_state", "gauge"),
            ("proxy_retries", "counter"),
            ("proxy_route_retries", "counter"),
        ],
    )
    .await;
    let _ = tx.send(());
    task.await.unwrap();
}

#[tokio::test]
async fn worker_metrics_in_both_formats() {
    let metrics = Arc::new(helios_bins::worker::metrics::Metrics::new(["emails"]));
    metrics.queues["emails"].observe(Duration::from_millis(3));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(helios_bins::worker::run_metrics(listener, metrics, async {
        let _ = rx.await;
    }));
    check_both(
        addr,
        &[
            ("worker_jobs_claimed", "counter"),
            ("worker_jobs_processed", "counter"),
            ("worker_connector_errors", "counter"),
            ("worker_jobs_in_flight", "gauge"),
            ("worker_job_duration_seconds", "histogram"),
        ],
    )
    .await;
    let _ = tx.send(());
    task.await.unwrap();
}

/// helios-atlasd with its metrics listener, on the binary's runtime on a thread of its
/// own; stopped when dropped.
struct Atlasd {
    port: u16,
    metrics: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Atlasd {
    fn start(dir: &Path) -> Self {
        let cfg = AtlasdConfig {
            data_dir: dir.to_path_buf(),
            appendfsync: "always".into(),
            ..AtlasdConfig::default()
        };
        // Opened as the binary does: through the runner, so the fsyncs are timed.
        let atlas = helios_bins::atlasd::open_atlas(&cfg).unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let (rt, turns) = helios_bins::atlasd::runtime(&cfg).unwrap();
            rt.block_on(async move {
                let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
                let ml = TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx
                    .send((
                        listener.local_addr().unwrap().port(),
                        ml.local_addr().unwrap(),
                    ))
                    .unwrap();
                let (mtx, mrx) = oneshot::channel::<()>();
                let m = tokio::spawn(helios_bins::atlasd::run_metrics(ml, atlas.clone(), async {
                    let _ = mrx.await;
                }));
                let stop = async {
                    let _ = rx.await;
                };
                helios_bins::atlasd::run(listener, atlas, cfg, stop, turns)
                    .await
                    .unwrap();
                let _ = mtx.send(());
                m.await.unwrap();
            });
        });
        let (port, metrics) = addr_rx.recv().unwrap();
        Atlasd {
            port,
            metrics,
            stop: Some(tx),
            thread: Some(thread),
        }
    }

    fn client(&self) -> redis::Connection {
        redis::Client::open(format!("redis://127.0.0.1:{}/", self.port))
            .unwrap()
            .get_connection()
            .unwrap()
    }
}

impl Drop for Atlasd {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The value of an unlabelled gauge in a text body.
fn gauge(text: &str, name: &str) -> f64 {
    let prefix = format!("{name} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
        .parse()
        .unwrap()
}

/// The AOF's bytes on disk: each segment's records, without the padding the current one
/// keeps preallocated (newlines past the last record).
fn aof_on_disk(dir: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if helios_atlas::aof::parse_segment_name(&name).is_none() {
            continue;
        }
        let bytes = std::fs::read(e.path()).unwrap();
        let end = bytes.iter().rposition(|b| *b != b'\n').map_or(0, |i| i + 2);
        total += end.min(bytes.len()) as u64;
    }
    total
}

#[test]
fn atlasd_metrics_and_the_aof_size_gauge() {
    let dir = tempfile::tempdir().unwrap();
    let server = Atlasd::start(dir.path());
    let mut c = server.client();
    let value = "v".repeat(200);
    for i in 0..300 {
        let _: () = redis::cmd("SET")
            .arg(format!("key{}", i % 20))
            .arg(&value)
            .query(&mut c)
            .unwrap();
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut want = vec![];
    want.extend(ATLAS);
    let text = rt.block_on(check_both(server.metrics, &want));
    let grown = gauge(&text, "atlas_aof_bytes");
    assert_eq!(grown as u64, aof_on_disk(dir.path()), "{text}");
    assert!(grown > 300.0 * 200.0, "{grown}");
    assert_eq!(gauge(&text, "atlas_keys"), 20.0);
    assert!(gauge(&text, "atlas_memory_bytes") > 20.0 * 200.0);
    assert!(gauge(&text, "atlas_last_fsync_age_seconds") < 60.0);
    assert_eq!(gauge(&text, "atlas_write_error"), 0.0);
    assert!(
        text.contains("atlas_snapshot_duration_seconds_count 0\n"),
        "{text}"
    );
    let fsyncs: f64 = gauge(&text, "atlas_fsync_duration_seconds_count");
    assert!(fsyncs >= 1.0, "appendfsync always: {text}");
    // A snapshot compacts the log: the gauge shrinks with the files, and the snapshot is
    // observed once.
    let _: () = redis::cmd("SAVE").query(&mut c).unwrap();
    let (_, _, text) = rt.block_on(scrape(server.metrics, None));
    let shrunk = gauge(&text, "atlas_aof_bytes");
    assert_eq!(shrunk as u64, aof_on_disk(dir.path()), "{text}");
    assert!(shrunk < grown / 10.0, "{shrunk} vs {grown}");
    assert!(
        text.contains("atlas_snapshot_duration_seconds_count 1\n"),
        "{text}"
    );
    assert!(
        text.contains("atlas_snapshot_duration_seconds_bucket{le=\"+Inf\"} 1\n"),
        "{text}"
    );
    // And a rewrite after more writes.
    for i in 0..50 {
        let _: () = redis::cmd("SET")
            .arg(format!("key{i}"))
            .arg(&value)
            .query(&mut c)
            .unwrap();
    }
    let (_, _, text) = rt.block_on(scrape(server.metrics, None));
    let grown = gauge(&text, "atlas_aof_bytes");
    assert_eq!(grown as u64, aof_on_disk(dir.path()));
    let _: () = redis::cmd("BGREWRITEAOF").query(&mut c).unwrap();
    let mut shrunk = grown;
    for _ in 0..200 {
        let (_, _, text) = rt.block_on(scrape(server.metrics, None));
        shrunk = gauge(&text, "atlas_aof_bytes");
        if shrunk < grown {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(shrunk < grown, "{shrunk} vs {grown}");
    assert_eq!(shrunk as u64, aof_on_disk(dir.path()));
}

/// The metric names a PromQL expression reads: identifiers that are not functions,
/// aggregations, keywords, label names or durations.
fn promql_metrics(expr: &str) -> Vec<String> {
    // Drop strings, label matchers, grouping clauses and ranges first.
    let mut s = String::new();
    let mut depth_brace = 0;
    let mut in_str = false;
    for c in expr.chars() {
        match c {
            '"' => in_str = !in_str,
            _ if in_str => {}
            '{' => depth_brace += 1,
            '}' => depth_brace -= 1,
            _ if depth_brace > 0 => {}
            _ => s.push(c),
        }
    }
    let mut out = Vec::new();
    let bytes: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut skip_group = false;
    while i < bytes.len() {
        let c = bytes[i];
        if c == '[' {
            while i < bytes.len() && bytes[i] != ']' {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < bytes.len()
                && (bytes[i].is_ascii_alphanumeric() || bytes[i] == '_' || bytes[i] == ':')
            {
                i += 1;
            }
            let word: String = bytes[start..i].iter().collect();
            let next = bytes[i..].iter().find(|c| !c.is_whitespace());
            if matches!(
                word.as_str(),
                "by" | "without" | "on" | "ignoring" | "group_left" | "group_right"
            ) {
                skip_group = true;
                continue;
            }
            if skip_group {
                // The label list after a grouping keyword: `by (le, route)`.
                if next == Some(&')') || next == Some(&',') {
                    continue;
                }
            }
            let aggregation = matches!(
                word.as_str(),
                "sum"
                    | "min"
                    | "max"
                    | "avg"
                    | "count"
                    | "group"
                    | "stddev"
                    | "stdvar"
                    | "topk"
                    | "bottomk"
                    | "quantile"
                    | "count_values"
            );
            if next == Some(&'(')
                || aggregation
                || matches!(word.as_str(), "bool" | "and" | "or" | "unless" | "offset")
            {
                continue;
            }
            out.push(word);
            continue;
        } else if c == ')' {
            skip_group = false;
        }
        i += 1;
    }
    out
}

#[test]
fn promql_names_are_found() {
    assert_eq!(
        promql_metrics(
            "histogram_quantile(0.99, sum by (le, route) (rate(helios_request_duration_seconds_bucket{route=~\"a|b\"}[5m])))"
        ),
        ["helios_request_duration_seconds_bucket"]
    );
    assert_eq!(
        promql_metrics("rate(a_sum[1h]) / rate(a_count[1h])"),
        ["a_sum", "a_count"]
    );
}

/// Every series a dashboard in `deploy/grafana/` queries is exported by some binary
/// (names as Prometheus stores them: `_total`, `_bucket`, `_count`, `_sum`), read from
/// real scrapes of the gateway, the proxy, the worker and atlasd.
#[test]
fn dashboards_query_only_exported_series() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let atlasd = Atlasd::start(dir.path());
    let mut exported = std::collections::BTreeSet::new();
    let mut add = |text: &str| {
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            exported.insert(line[..end].to_owned());
        }
    };
    let bodies: Vec<String> = rt.block_on(async {
        let mut bodies = Vec::new();
        // The gateway, with a job so the queue has a depth.
        let (_gdir, s) = start_temp(100).await;
        let admin = admin_token(&s).await;
        let _ = common::enqueue(&s, &admin, serde_json::json!({"queue": "q", "payload": {}})).await;
        let _ = s.get("/api/v1/kv/k", &admin).await;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(helios_bins::gateway::run_metrics(
            listener,
            s.state.clone(),
            async {
                let _ = rx.await;
            },
        ));
        bodies.push(scrape(addr, None).await.2);
        let _ = tx.send(());
        task.await.unwrap().unwrap();
        s.stop().await;
        // The proxy, one route over a live backend, after one exchange.
        let backend = common::hook::Hook::start().await;
        let base = backend.url.trim_end_matches("/hook").to_owned();
        let cfg = ProxyConfig::quick("127.0.0.1:0", &[base], None).unwrap();
        let state = helios_bins::proxy::start(
            cfg,
            &helios_bins::config::TlsSection::default(),
            &helios_bins::app::Context::system(),
        )
        .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let paddr = listener.local_addr().unwrap();
        let (ptx, prx) = oneshot::channel::<()>();
        let served = tokio::spawn(helios_bins::proxy::run(listener, state.clone(), async {
            let _ = prx.await;
        }));
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<http_body_util::Full<bytes::Bytes>>();
        let req = http::Request::post(format!("http://{paddr}/hook"))
            .body(http_body_util::Full::new(bytes::Bytes::from_static(b"{}")))
            .unwrap();
        let resp = client.request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(helios_bins::proxy::run_metrics(listener, state, async {
            let _ = rx.await;
        }));
        bodies.push(scrape(addr, None).await.2);
        let _ = tx.send(());
        task.await.unwrap();
        let _ = ptx.send(());
        served.await.unwrap().unwrap();
        // The worker.
        let metrics = Arc::new(helios_bins::worker::metrics::Metrics::new(["q"]));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(helios_bins::worker::run_metrics(listener, metrics, async {
            let _ = rx.await;
        }));
        bodies.push(scrape(addr, None).await.2);
        let _ = tx.send(());
        task.await.unwrap();
        bodies.push(scrape(atlasd.metrics, None).await.2);
        bodies
    });
    for b in &bodies {
        add(b);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana");
    let mut checked = 0;
    for entry in std::fs::read_dir(&root).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let board: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            board["uid"].is_string() && board["title"].is_string(),
            "{}",
            path.display()
        );
        let panels = board["panels"].as_array().expect("panels");
        assert!(!panels.is_empty());
        for p in panels {
            for t in p["targets"].as_array().expect("targets") {
                let expr = t["expr"].as_str().expect("expr");
                let names = promql_metrics(expr);
                assert!(!names.is_empty(), "{}: {expr}", path.display());
                for n in names {
                    assert!(
                        exported.contains(&n),
                        "{}: panel {:?} queries {n}, which no binary exports",
                        path.display(),
                        p["title"]
                    );
                    checked += 1;
                }
            }
        }
    }
    assert!(checked >= 30, "{checked} series checked");
}
