//! The RBAC matrix over HTTP: every protected route and method, called by an `admin`, a
//! `user` and a `readonly` user; each call is either refused with 403 or not (whatever
//! else it answers with the dummy arguments), exactly as this table says.

mod common;

use bytes::Bytes;
use helios_bins::config::GatewayConfig;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

/// (method, path with dummy parameters, pattern, allowed for [admin, user, readonly]).
const MATRIX: &[(&str, &str, &str, [bool; 3])] = &[
    (
        "GET",
        "/api/v1/auth/me",
        "/api/v1/auth/me",
        [true, true, true],
    ),
    ("GET", "/api/v1/kv", "/api/v1/kv", [true, true, true]),
    (
        "GET",
        "/api/v1/kv/k",
        "/api/v1/kv/{key}",
        [true, true, true],
    ),
    (
        "PUT",
        "/api/v1/kv/k",
        "/api/v1/kv/{key}",
        [true, true, false],
    ),
    (
        "DELETE",
        "/api/v1/kv/k",
        "/api/v1/kv/{key}",
        [true, true, false],
    ),
    ("POST", "/api/v1/jobs", "/api/v1/jobs", [true, true, false]),
    ("GET", "/api/v1/jobs", "/api/v1/jobs", [true, false, false]),
    (
        "POST",
        "/api/v1/jobs/claim",
        "/api/v1/jobs/claim",
        [true, false, false],
    ),
    (
        "GET",
        "/api/v1/jobs/00000000000000000000000000000001",
        "/api/v1/jobs/{id}",
        [true, true, false],
    ),
    (
        "POST",
        "/api/v1/jobs/00000000000000000000000000000001/ack",
        "/api/v1/jobs/{id}/{action}",
        [true, false, false],
    ),
    (
        "GET",
        "/api/v1/queues",
        "/api/v1/queues",
        [true, false, false],
    ),
    (
        "GET",
        "/api/v1/queues/q/dlq",
        "/api/v1/queues/{queue}/dlq",
        [true, false, false],
    ),
    (
        "POST",
        "/api/v1/queues/q/dlq/redrive",
        "/api/v1/queues/{queue}/dlq/redrive",
        [true, false, false],
    ),
    ("GET", "/admin/stats", "/admin/stats", [true, false, false]),
    (
        "POST",
        "/admin/snapshot",
        "/admin/snapshot",
        [true, false, false],
    ),
    (
        "POST",
        "/admin/aof/rewrite",
        "/admin/aof/rewrite",
        [true, false, false],
    ),
    ("GET", "/admin/users", "/admin/users", [true, false, false]),
    (
        "POST",
        "/admin/users/nobody/roles",
        "/admin/users/{id}/roles",
        [true, false, false],
    ),
    (
        "DELETE",
        "/admin/users/nobody/roles/r",
        "/admin/users/{id}/roles/{role}",
        [true, false, false],
    ),
    (
        "POST",
        "/admin/users/nobody/disable",
        "/admin/users/{id}/{action}",
        [true, false, false],
    ),
    ("GET", "/admin/roles", "/admin/roles", [true, false, false]),
    (
        "PUT",
        "/admin/roles/r",
        "/admin/roles/{name}",
        [true, false, false],
    ),
    (
        "DELETE",
        "/admin/roles/r",
        "/admin/roles/{name}",
        [true, false, false],
    ),
    (
        "GET",
        "/admin/rate-limits",
        "/admin/rate-limits",
        [true, false, false],
    ),
    (
        "PUT",
        "/admin/rate-limits",
        "/admin/rate-limits",
        [true, false, false],
    ),
];

#[tokio::test]
async fn each_role_on_each_route() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = GatewayConfig {
        data_dir: dir.path().to_path_buf(),
        ..GatewayConfig::default()
    };
    cfg.auth.bcrypt_cost = 4;
    cfg.rate_limit.capacity = 100_000;
    let (addr, _, tx, server) = common::spawn(cfg).await;
    let base = format!("http://{addr}");
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let call = |method: &str, path: &str, token: Option<&str>, body: Value| {
        let mut b = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).unwrap())
            .uri(format!("{base}{path}"));
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        let req = b.body(Full::new(Bytes::from(body.to_string()))).unwrap();
        let client = client.clone();
        async move {
            let r = client.request(req).await.unwrap();
            let st = r.status();
            let v: Value =
                serde_json::from_slice(&r.into_body().collect().await.unwrap().to_bytes())
                    .unwrap_or(Value::Null);
            (st, v)
        }
    };
    let pw = "correct horse battery";
    let login = |name: &'static str, pass: &'static str| {
        let call = &call;
        async move {
            let (st, v) = call(
                "POST",
                "/api/v1/auth/login",
                None,
                json!({"username": name, "password": pass}),
            )
            .await;
            assert_eq!(st, StatusCode::OK, "{v}");
            v["access_token"].as_str().unwrap().to_owned()
        }
    };
    let admin = login("admin", "admin password 1").await;
    for name in ["plainuser", "reader"] {
        let (st, _) = call(
            "POST",
            "/api/v1/auth/register",
            None,
            json!({"username": name, "password": pw}),
        )
        .await;
        assert_eq!(st, StatusCode::CREATED);
    }
    let (_, users) = call("GET", "/admin/users", Some(&admin), json!(null)).await;
    let reader_id = users["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == "reader")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    call(
        "POST",
        &format!("/admin/users/{reader_id}/roles"),
        Some(&admin),
        json!({"role": "readonly"}),
    )
    .await;
    call(
        "DELETE",
        &format!("/admin/users/{reader_id}/roles/user"),
        Some(&admin),
        json!(null),
    )
    .await;
    let user = login("plainuser", pw).await;
    let reader = login("reader", pw).await;
    let mut checked = std::collections::BTreeSet::new();
    for (method, path, pattern, allowed) in MATRIX {
        for (i, token) in [&admin, &user, &reader].into_iter().enumerate() {
            let (st, v) = call(method, path, Some(token), json!({})).await;
            let who = ["admin", "user", "readonly"][i];
            if allowed[i] {
                assert_ne!(st, StatusCode::FORBIDDEN, "{who} {method} {path}: {v}");
            } else {
                assert_eq!(st, StatusCode::FORBIDDEN, "{who} {method} {path}: {v}");
            }
        }
        checked.insert((method.to_string(), pattern.to_string()));
    }
    // The table covers every protected route the router serves.
    let open = [
        "/",
        "/api/v1",
        "/openapi.yaml",
        "/healthz",
        "/readyz",
        "/metrics",
        "/api/v1/auth/register",
        "/api/v1/auth/login",
        "/api/v1/auth/refresh",
        "/api/v1/auth/logout",
    ];
    for (pattern, methods) in helios_bins::gateway::routes() {
        if open.contains(&pattern) {
            continue;
        }
        for m in methods {
            assert!(
                checked.contains(&(m.to_string(), pattern.to_string())),
                "{m} {pattern} is missing from the matrix"
            );
        }
    }
    let _ = tx.send(());
    server.await.unwrap().unwrap();
}
