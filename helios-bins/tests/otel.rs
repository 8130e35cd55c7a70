//! OpenTelemetry export end to end (the `otel` feature), offline: a fake OTLP/HTTP
//! collector on 127.0.0.1:0 decodes what the exporter POSTs (protobuf, with
//! `opentelemetry-proto`'s types) and the tests follow one trace through it:
//! - a request with a `traceparent` that enqueues a job, which a worker (over the
//!   gateway's HTTP routes) runs through the HTTP connector to a test service: one trace
//!   id across the request, enqueue, commit, job and connector spans, each the child of
//!   the one before, and the service handed the connector span's context;
//! - a request with a `traceparent` through the proxy to a backend: the backend sees the
//!   same trace with the proxy's span as its parent.
//!
//! One telemetry pipeline per process (the `tracing` subscriber is global), so the
//! collector and the pipeline start once, on threads of their own, for both tests; each
//! test picks its spans by its own trace id.

#![cfg(feature = "otel")]

mod common;

use bytes::Bytes;
use common::hook::{Hook, until, worker_gateway};
use common::*;
use helios_bins::app::client::{Credentials, Gateway};
use helios_bins::app::telemetry::TelemetrySection;
use helios_bins::app::{Context, Telemetry};
use helios_bins::config::{LogSection, TlsSection};
use helios_bins::worker::config::{ServiceSpec, WorkerSettings, build_services};
use helios_bins::worker::{Connectors, HttpSource, Worker};
use helios_queue::JobState;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use parking_lot::Mutex;
use prost::Message;
use serde_json::json;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// One span as the collector received it.
#[derive(Debug, Clone)]
struct Got {
    name: String,
    trace_id: String,
    span_id: String,
    parent: String,
    service: String,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The fake collector: where it listens and every span it decoded.
struct Collector {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<Got>>>,
}

fn decode(body: &[u8]) -> Vec<Got> {
    let Ok(req) = ExportTraceServiceRequest::decode(body) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for rs in req.resource_spans {
        let service = rs
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|a| a.key == "service.name")
            .and_then(|a| a.value.as_ref())
            .and_then(|v| match &v.value {
                Some(opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(s)) => {
                    Some(s.clone())
                }
                _ => None,
            })
            .unwrap_or_default();
        for ss in rs.scope_spans {
            for s in ss.spans {
                out.push(Got {
                    name: s.name,
                    trace_id: hex(&s.trace_id),
                    span_id: hex(&s.span_id),
                    parent: hex(&s.parent_span_id),
                    service: service.clone(),
                });
            }
        }
    }
    out
}

/// Starts the collector on a thread and runtime of its own (each test has its own
/// runtime; the collector outlives them).
fn start_collector() -> Collector {
    let spans: Arc<Mutex<Vec<Got>>> = Arc::default();
    let (tx, rx) = std::sync::mpsc::channel();
    let log = spans.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let log = log.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let log = log.clone();
                        async move {
                            let ok = req.uri().path() == "/v1/traces"
                                && req
                                    .headers()
                                    .get("content-type")
                                    .is_some_and(|v| v == "application/x-protobuf");
                            let body = req.into_body().collect().await?.to_bytes();
                            if ok {
                                log.lock().extend(decode(&body));
                            }
                            let mut r = http::Response::new(Full::new(Bytes::new()));
                            if !ok {
                                *r.status_mut() = http::StatusCode::BAD_REQUEST;
                            }
                            Ok::<_, hyper::Error>(r)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
    });
    let addr = rx.recv().unwrap();
    Collector { addr, spans }
}

/// The process's collector and telemetry, started by the first test that asks.
fn pipeline() -> &'static (Collector, Telemetry) {
    static P: OnceLock<(Collector, Telemetry)> = OnceLock::new();
    P.get_or_init(|| {
        let c = start_collector();
        let mut t = TelemetrySection::for_service("helios-test");
        t.enabled = true;
        t.endpoint = format!("http://{}/v1/traces", c.addr);
        t.export_timeout_ms = 5_000;
        let log = LogSection::new("json", "warn");
        let telemetry = helios_bins::app::init_tracing("gateway", &log, &t);
        assert!(telemetry.exporting(), "the exporter started");
        (c, telemetry)
    })
}

/// Waits (up to 20 s) until job `id` is done on gateway `s`.
async fn job_done(s: &common::Server, id: &str) {
    until(20, "the job done", || {
        s.state
            .queue
            .get(id.parse().unwrap())
            .is_some_and(|j| j.state == JobState::Done)
    })
    .await;
}

/// Flushes the exporter until the spans of `trace` hold every name of `names`; they are
/// returned by name (the last one of each).
async fn spans_of(trace: &str, names: &[&str]) -> HashMap<String, Got> {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        // The flush blocks until the batch thread exported: off the runtime's threads.
        tokio::task::spawn_blocking(|| pipeline().1.flush())
            .await
            .unwrap();
        let got: HashMap<String, Got> = pipeline()
            .0
            .spans
            .lock()
            .iter()
            .filter(|s| s.trace_id == trace)
            .map(|s| (s.name.clone(), s.clone()))
            .collect();
        if names.iter().all(|n| got.contains_key(*n)) {
            return got;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "spans of trace {trace}: want {names:?}, got {:?}",
            got.keys().collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `00-{trace}-{parent}-{flags}` split into the trace and parent ids.
fn ids(traceparent: &str) -> (&str, &str) {
    (&traceparent[3..35], &traceparent[36..52])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_from_the_request_through_the_job_to_the_service() {
    let _ = pipeline();
    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const CALLER: &str = "00f067aa0ba902b7";
    let tp = format!("00-{TRACE}-{CALLER}-01");
    let (_dir, s, producer) = worker_gateway(|_| {}).await;
    let hook = Hook::start().await;
    // A worker over the gateway's HTTP routes: the claim's answer carries the trace.
    let mut cfg = WorkerSettings {
        id: "w".into(),
        poll_wait_ms: 1_000,
        ..WorkerSettings::default()
    };
    cfg.services
        .insert("traced".into(), ServiceSpec::new("http", &hook.url));
    let gateway = Gateway::new(
        &format!("http://{}", s.addr),
        Credentials::Login {
            username: "worker".into(),
            password: USER_PW.into(),
        },
    );
    let services = build_services(&cfg, "worker", &Connectors::default()).unwrap();
    let ctx = Context::system();
    let settings = cfg.runtime_settings("test", "localhost", ctx.random_u64());
    let worker = Worker::new(Arc::new(HttpSource::new(gateway)), services, settings, ctx);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let done = tokio::spawn(worker.clone().run(
        async {
            let _ = stopped.await;
        },
        std::future::pending::<()>(),
    ));

    let (st, _, v) = s
        .call(
            Method::POST,
            "/api/v1/jobs",
            Some(&producer),
            Some(json!({"queue": "traced", "payload": {"n": 1}})),
            &[("traceparent", &tp), ("tracestate", "vendor=abc")],
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    // The job stores the enqueue span's context: the caller's trace, a new parent id.
    let stored = v["trace"]["traceparent"].as_str().unwrap().to_owned();
    assert_eq!(ids(&stored).0, TRACE, "{v}");
    assert_ne!(ids(&stored).1, CALLER, "{v}");
    assert_eq!(v["trace"]["tracestate"], "vendor=abc", "{v}");
    job_done(&s, &id).await;

    let got = spans_of(
        TRACE,
        &[
            "request",
            "queue.enqueue",
            "atlas.commit",
            "job.run",
            "connector.call",
        ],
    )
    .await;
    let span = |n: &str| got[n].clone();
    let (request, enqueue, commit, job, call) = (
        span("request"),
        span("queue.enqueue"),
        span("atlas.commit"),
        span("job.run"),
        span("connector.call"),
    );
    assert_eq!(
        request.parent, CALLER,
        "the caller's span is the request's parent"
    );
    assert_eq!(enqueue.parent, request.span_id);
    assert_eq!(commit.parent, enqueue.span_id);
    assert_eq!(
        ids(&stored).1,
        enqueue.span_id,
        "the job stores the enqueue span"
    );
    assert_eq!(
        job.parent, enqueue.span_id,
        "the job's run continues the enqueue"
    );
    assert_eq!(call.parent, job.span_id);
    assert_eq!(request.service, "helios-test");
    // The service got the connector call's context, and the caller's tracestate.
    let seen = hook.seen.lock().clone();
    let x = seen.iter().find(|x| x.key == id).unwrap();
    assert_eq!(ids(&x.traceparent), (TRACE, call.span_id.as_str()), "{x:?}");
    assert_eq!(x.tracestate, "vendor=abc");

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(20), done)
        .await
        .unwrap()
        .unwrap();
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_continues_the_callers_trace_to_the_backend() {
    let _ = pipeline();
    const TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
    const CALLER: &str = "b7ad6b7169203331";
    let tp = format!("00-{TRACE}-{CALLER}-01");
    let backend = Hook::start().await;
    let base = backend.url.trim_end_matches("/hook").to_owned();
    let cfg = helios_proxy::ProxyConfig::quick("127.0.0.1:0", &[base], None).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = helios_bins::proxy::start(cfg, &TlsSection::default(), &Context::system()).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let done = tokio::spawn(helios_bins::proxy::run(listener, state, async {
        let _ = stopped.await;
    }));

    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let req = Request::post(format!("http://{addr}/hook"))
        .header("traceparent", &tp)
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let _ = resp.into_body().collect().await;

    let got = spans_of(TRACE, &["proxy.request"]).await;
    let proxy = &got["proxy.request"];
    assert_eq!(
        proxy.parent, CALLER,
        "the caller's span is the proxy's parent"
    );
    let seen = backend.seen.lock().clone();
    let x = seen
        .iter()
        .find(|x| x.traceparent.contains(TRACE))
        .expect("the backend got the trace");
    assert_eq!(
        ids(&x.traceparent),
        (TRACE, proxy.span_id.as_str()),
        "the backend's parent is the proxy's span: {x:?}"
    );

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), done)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

/// The whole chain as one trace: a request through the proxy to the gateway that
/// enqueues a job, which a worker runs through the HTTP connector to a service. Every
/// span has the caller's trace id and its parent is the span before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_through_the_proxy_the_gateway_the_job_and_the_service() {
    let _ = pipeline();
    const TRACE: &str = "5c1f0e3a8d9b4e7fa2c6d8e0b1f3a5c7";
    const CALLER: &str = "1a2b3c4d5e6f7081";
    let tp = format!("00-{TRACE}-{CALLER}-01");
    let (_dir, s, producer) = worker_gateway(|_| {}).await;
    let hook = Hook::start().await;
    // The proxy in front of the gateway.
    let cfg =
        helios_proxy::ProxyConfig::quick("127.0.0.1:0", &[format!("http://{}", s.addr)], None)
            .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let paddr = listener.local_addr().unwrap();
    let state = helios_bins::proxy::start(cfg, &TlsSection::default(), &Context::system()).unwrap();
    let (pstop, pstopped) = tokio::sync::oneshot::channel::<()>();
    let proxy_done = tokio::spawn(helios_bins::proxy::run(listener, state, async {
        let _ = pstopped.await;
    }));
    // A worker over the gateway's HTTP routes.
    let mut cfg = WorkerSettings {
        id: "w-chain".into(),
        poll_wait_ms: 1_000,
        ..WorkerSettings::default()
    };
    cfg.services
        .insert("chain".into(), ServiceSpec::new("http", &hook.url));
    let gateway = Gateway::new(
        &format!("http://{}", s.addr),
        Credentials::Login {
            username: "worker".into(),
            password: USER_PW.into(),
        },
    );
    let services = build_services(&cfg, "worker", &Connectors::default()).unwrap();
    let ctx = Context::system();
    let settings = cfg.runtime_settings("test", "localhost", ctx.random_u64());
    let worker = Worker::new(Arc::new(HttpSource::new(gateway)), services, settings, ctx);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let done = tokio::spawn(worker.clone().run(
        async {
            let _ = stopped.await;
        },
        std::future::pending::<()>(),
    ));

    // The enqueue goes through the proxy.
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let body = json!({"queue": "chain", "payload": {"n": 1}}).to_string();
    let req = Request::post(format!("http://{paddr}/api/v1/jobs"))
        .header("traceparent", &tp)
        .header("authorization", format!("Bearer {producer}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), 201);
    let v: serde_json::Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    let id = v["id"].as_str().unwrap().to_owned();
    job_done(&s, &id).await;

    let got = spans_of(
        TRACE,
        &[
            "proxy.request",
            "request",
            "queue.enqueue",
            "job.run",
            "connector.call",
        ],
    )
    .await;
    let span = |n: &str| got[n].clone();
    let (proxy, request, enqueue, job, call) = (
        span("proxy.request"),
        span("request"),
        span("queue.enqueue"),
        span("job.run"),
        span("connector.call"),
    );
    assert_eq!(
        proxy.parent, CALLER,
        "the caller's span is the proxy's parent"
    );
    assert_eq!(
        request.parent, proxy.span_id,
        "the gateway continues the proxy's span"
    );
    assert_eq!(enqueue.parent, request.span_id);
    assert_eq!(job.parent, enqueue.span_id);
    assert_eq!(call.parent, job.span_id);
    let seen = hook.seen.lock().clone();
    let x = seen.iter().find(|x| x.key == id).unwrap();
    assert_eq!(ids(&x.traceparent), (TRACE, call.span_id.as_str()), "{x:?}");

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(20), done)
        .await
        .unwrap()
        .unwrap();
    let _ = pstop.send(());
    tokio::time::timeout(Duration::from_secs(10), proxy_done)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    s.stop().await;
}
