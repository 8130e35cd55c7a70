//! The authorization matrix (issue 17, point 10): every route of the router and every
//! method it serves, called by each of seven callers, with the exact status each must get:
//!
//! - anonymous (no token);
//! - A, a `user` who owns the objects the paths name (a KV key, a job);
//! - B, another `user` (someone else's objects: 404, never 403, where ownership decides);
//! - a `readonly` user; a `worker` (role `worker`: `jobs:work`);
//! - a custom role holding only `users:admin`; and `admin`.
//!
//! Rows run in order against one gateway, and within a row the callers in [`CALL_ORDER`]
//! (A's own destructive calls after the others'), so a row's writes are part of what the
//! next calls see. A route or method of the router missing from the table fails the test:
//! a new route cannot skip it. Open routes (no token at all) are listed apart and checked
//! to answer anonymous callers.

mod common;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use std::collections::BTreeSet;

const ADMIN_PASSWORD: &str = "matrix-admin-Quartz-91-lantern";
const PASSWORD: &str = "tangerine-kayak-47-violet";

/// Callers, by index into each row's expectations.
const ANON: usize = 0;
const A: usize = 1;
const B: usize = 2;
const RO: usize = 3;
const WK: usize = 4;
const UA: usize = 5;
const AD: usize = 6;
const NAMES: [&str; 7] = [
    "anonymous",
    "user A",
    "user B",
    "readonly",
    "worker",
    "users:admin only",
    "admin",
];
/// The order callers make each row's call in.
const CALL_ORDER: [usize; 7] = [ANON, B, RO, WK, UA, A, AD];

/// Placeholders in paths and bodies: A's user id, B's user id, the admin's user id, A's job,
/// A's cron schedule.
fn fill(text: &str, ids: &Ids) -> String {
    text.replace("{A}", &ids.a)
        .replace("{B}", &ids.b)
        .replace("{ADMIN}", &ids.admin)
        .replace("{JOB}", &ids.job)
        .replace("{SCHED}", &ids.schedule)
}

struct Ids {
    a: String,
    b: String,
    admin: String,
    job: String,
    schedule: String,
}

/// (method, path, pattern, body, expected status per caller: anon, A, B, ro, worker,
/// users-admin, admin).
type Row = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    [u16; 7],
);

const MATRIX: &[Row] = &[
    // Identity.
    (
        "GET",
        "/api/v1/auth/me",
        "/api/v1/auth/me",
        "",
        [401, 200, 200, 200, 200, 403, 200],
    ),
    (
        "POST",
        "/api/v1/auth/password",
        "/api/v1/auth/password",
        r#"{"current_password":"not-the-Password-19","new_password":"another-Strong-pass-77"}"#,
        [401, 403, 403, 403, 403, 403, 403],
    ),
    (
        "GET",
        "/metrics",
        "/metrics",
        "",
        [401, 403, 403, 403, 403, 403, 200],
    ),
    // The caller's own namespace: A's key does not exist for anyone else.
    (
        "GET",
        "/api/v1/kv",
        "/api/v1/kv",
        "",
        [401, 200, 200, 200, 403, 403, 200],
    ),
    (
        "GET",
        "/api/v1/kv/a-key",
        "/api/v1/kv/{key}",
        "",
        [401, 200, 404, 404, 403, 403, 404],
    ),
    // B and the admin create their own `a-key`; A replaces hers.
    (
        "PUT",
        "/api/v1/kv/a-key",
        "/api/v1/kv/{key}",
        r#"{"value":1}"#,
        [401, 200, 201, 403, 403, 403, 201],
    ),
    // A shared namespace nobody but the admin holds a permission for.
    (
        "GET",
        "/api/v1/ns/team/kv",
        "/api/v1/ns/{ns}/kv",
        "",
        [401, 403, 403, 403, 403, 403, 200],
    ),
    (
        "GET",
        "/api/v1/ns/team/kv/t",
        "/api/v1/ns/{ns}/kv/{key}",
        "",
        [401, 403, 403, 403, 403, 403, 200],
    ),
    (
        "PUT",
        "/api/v1/ns/team/kv/t",
        "/api/v1/ns/{ns}/kv/{key}",
        r#"{"value":2}"#,
        [401, 403, 403, 403, 403, 403, 200],
    ),
    // The admin's view of A's namespace.
    (
        "GET",
        "/admin/users/{A}/kv",
        "/admin/users/{id}/kv",
        "",
        [401, 403, 403, 403, 403, 403, 200],
    ),
    (
        "GET",
        "/admin/users/{A}/kv/a-key",
        "/admin/users/{id}/kv/{key}",
        "",
        [401, 403, 403, 403, 403, 403, 200],
    ),
    (
        "PUT",
        "/admin/users/{A}/kv/by-admin",
        "/admin/users/{id}/kv/{key}",
        r#"{"value":3}"#,
        [401, 403, 403, 403, 403, 403, 201],
    ),
    (
        "DELETE",
        "/admin/users/{A}/kv/by-admin",
        "/admin/users/{id}/kv/{key}",
        "",
        [401, 403, 403, 403, 403, 403, 204],
    ),
    // Jobs: A owns {JOB}.
    (
        "POST",
        "/api/v1/jobs",
        "/api/v1/jobs",
        r#"{"queue":"q","payload":1}"#,
        [401, 201, 201, 403, 403, 403, 201],
    ),
    (
        "GET",
        "/api/v1/jobs?queue=q",
        "/api/v1/jobs",
        "",
        [401, 200, 200, 403, 403, 403, 200],
    ),
    (
        "GET",
        "/api/v1/jobs/{JOB}",
        "/api/v1/jobs/{id}",
        "",
        [401, 200, 404, 403, 403, 403, 200],
    ),
    // Only workers ack, and a pending job has no lease to ack.
    (
        "POST",
        "/api/v1/jobs/{JOB}/ack",
        "/api/v1/jobs/{id}/{action}",
        r#"{"lease_token":"1"}"#,
        [401, 403, 403, 403, 409, 403, 409],
    ),
    // A batch: `jobs:work` for the request, then per job (pending: no lease, so the item
    // is a 409 inside a 200).
    (
        "POST",
        "/api/v1/jobs/batch",
        "/api/v1/jobs/batch",
        r#"{"items":[{"id":"{JOB}","lease_token":"1","action":"ack"}]}"#,
        [401, 403, 403, 403, 200, 403, 200],
    ),
    // The worker registry: ids are scoped by owner, so the worker's w1 and the admin's
    // w1 are two records (each registers and removes its own; neither reaches the other's).
    (
        "PUT",
        "/api/v1/workers/w1",
        "/api/v1/workers/{id}",
        r#"{"version":"1","queues":["q"],"in_flight":0,"started_at":0,"host":"h","ttl_seconds":60}"#,
        [401, 403, 403, 403, 200, 403, 200],
    ),
    (
        "GET",
        "/api/v1/workers",
        "/api/v1/workers",
        "",
        [401, 403, 403, 403, 200, 403, 200],
    ),
    (
        "DELETE",
        "/api/v1/workers/w1",
        "/api/v1/workers/{id}",
        "",
        [401, 403, 403, 403, 204, 403, 204],
    ),
    // Cron schedules: A owns {SCHED}; creating is enqueueing, the rest per schedule.
    (
        "POST",
        "/api/v1/schedules",
        "/api/v1/schedules",
        r#"{"queue":"q","cron":"0 0 1 1 *"}"#,
        [401, 201, 201, 403, 403, 403, 201],
    ),
    (
        "GET",
        "/api/v1/schedules",
        "/api/v1/schedules",
        "",
        [401, 200, 200, 403, 403, 403, 200],
    ),
    (
        "GET",
        "/api/v1/schedules/{SCHED}",
        "/api/v1/schedules/{id}",
        "",
        [401, 200, 404, 403, 403, 403, 200],
    ),
    // The owner deletes it; then it is gone for the admin too.
    (
        "DELETE",
        "/api/v1/schedules/{SCHED}",
        "/api/v1/schedules/{id}",
        "",
        [401, 204, 404, 403, 403, 403, 404],
    ),
    // The owner cancels; then it is no longer pending for the admin.
    (
        "POST",
        "/api/v1/jobs/{JOB}/cancel",
        "/api/v1/jobs/{id}/{action}",
        "",
        [401, 204, 404, 403, 403, 403, 409],
    ),
    (
        "POST",
        "/api/v1/jobs/claim",
        "/api/v1/jobs/claim",
        r#"{"queue":"q","worker_id":"w","lease_seconds":60}"#,
        [401, 403, 403, 403, 200, 403, 200],
    ),
    (
        "GET",
        "/api/v1/queues",
        "/api/v1/queues",
        "",
        [401, 403, 403, 403, 403, 403, 200],
    ),
    (
        "GET",
        "/api/v1/queues/q/dlq",
        "/api/v1/queues/{queue}/dlq",
        "",
        [401, 403, 403, 403, 403, 403, 200],
    ),
    (
        "POST",
        "/api/v1/queues/q/dlq/redrive",
        "/api/v1/queues/{queue}/dlq/redrive",
        "{}",
        [401, 403, 403, 403, 403, 403, 200],
    ),
    // The store: admin:* only (users:admin is not enough).
    (
        "GET",
        "/admin/stats",
        "/admin/stats",
        "",
        [401, 403, 403, 403, 403, 403, 200],
    ),
    (
        "POST",
        "/admin/snapshot",
        "/admin/snapshot",
        "",
        [401, 403, 403, 403, 403, 403, 200],
    ),
    (
        "POST",
        "/admin/aof/rewrite",
        "/admin/aof/rewrite",
        "",
        [401, 403, 403, 403, 403, 403, 200],
    ),
    (
        "POST",
        "/admin/backup",
        "/admin/backup",
        "",
        [401, 403, 403, 403, 403, 403, 201],
    ),
    // The proxy's configuration: proxy:admin (admin:* here), nobody else.
    (
        "PUT",
        "/admin/proxy/backends/m1",
        "/admin/proxy/backends/{id}",
        r#"{"url":"http://127.0.0.1:9001"}"#,
        [401, 403, 403, 403, 403, 403, 201],
    ),
    (
        "GET",
        "/admin/proxy/backends",
        "/admin/proxy/backends",
        "",
        [401, 403, 403, 403, 403, 403, 200],
    ),
    (
        "GET",
        "/admin/proxy/backends/m1",
        "/admin/proxy/backends/{id}",
        "",
        [401, 403, 403, 403, 403, 403, 200],
    ),
    (
        "PUT",
        "/admin/proxy/routes/m",
        "/admin/proxy/routes/{id}",
        r#"{"path_prefix":"/m/","backends":[{"backend":"m1"}]}"#,
        [401, 403, 403, 403, 403, 403, 201],
    ),
    (
        "GET",
        "/admin/proxy/feed",
        "/admin/proxy/feed",
        "",
        [401, 403, 403, 403, 403, 403, 200],
    ),
    (
        "GET",
        "/admin/proxy/routes",
        "/admin/proxy/routes",
        "",
        [401, 403, 403, 403, 403, 403, 200],
    ),
    (
        "GET",
        "/admin/proxy/routes/m",
        "/admin/proxy/routes/{id}",
        "",
        [401, 403, 403, 403, 403, 403, 200],
    ),
    (
        "DELETE",
        "/admin/proxy/backends/m1",
        "/admin/proxy/backends/{id}",
        "",
        [401, 403, 403, 403, 403, 403, 409],
    ),
    (
        "DELETE",
        "/admin/proxy/routes/m",
        "/admin/proxy/routes/{id}",
        "",
        [401, 403, 403, 403, 403, 403, 204],
    ),
    (
        "DELETE",
        "/admin/proxy/backends/m1",
        "/admin/proxy/backends/{id}",
        "",
        [401, 403, 403, 403, 403, 403, 204],
    ),
    // Users and roles: users:admin, never past what the granter holds.
    (
        "GET",
        "/admin/users",
        "/admin/users",
        "",
        [401, 403, 403, 403, 403, 200, 200],
    ),
    (
        "POST",
        "/admin/users/{B}/roles",
        "/admin/users/{id}/roles",
        r#"{"role":"readonly"}"#,
        [401, 403, 403, 403, 403, 403, 204],
    ),
    (
        "DELETE",
        "/admin/users/{B}/roles/readonly",
        "/admin/users/{id}/roles/{role}",
        "",
        [401, 403, 403, 403, 403, 403, 204],
    ),
    (
        "POST",
        "/admin/users/nobody/disable",
        "/admin/users/{id}/{action}",
        "",
        [401, 403, 403, 403, 403, 404, 404],
    ),
    // Nobody but an admin touches an admin, and the last admin stays.
    (
        "POST",
        "/admin/users/{ADMIN}/disable",
        "/admin/users/{id}/{action}",
        "",
        [401, 403, 403, 403, 403, 403, 403],
    ),
    (
        "GET",
        "/admin/roles",
        "/admin/roles",
        "",
        [401, 403, 403, 403, 403, 200, 200],
    ),
    (
        "PUT",
        "/admin/roles/readers",
        "/admin/roles/{name}",
        r#"{"permissions":["kv:read"]}"#,
        [401, 403, 403, 403, 403, 403, 204],
    ),
    (
        "PUT",
        "/admin/roles/useradmins",
        "/admin/roles/{name}",
        r#"{"permissions":["users:admin"]}"#,
        [401, 403, 403, 403, 403, 204, 204],
    ),
    (
        "DELETE",
        "/admin/roles/readers",
        "/admin/roles/{name}",
        "",
        [401, 403, 403, 403, 403, 403, 204],
    ),
    (
        "GET",
        "/admin/rate-limits",
        "/admin/rate-limits",
        "",
        [401, 403, 403, 403, 403, 200, 200],
    ),
    (
        "PUT",
        "/admin/rate-limits",
        "/admin/rate-limits",
        r#"{"bogus":1}"#,
        [401, 403, 403, 403, 403, 403, 400],
    ),
    (
        "GET",
        "/admin/lockouts",
        "/admin/lockouts",
        "",
        [401, 403, 403, 403, 403, 200, 200],
    ),
    (
        "DELETE",
        "/admin/lockouts/nobody",
        "/admin/lockouts/{username}",
        "",
        [401, 403, 403, 403, 403, 404, 404],
    ),
    // Locks that guard an admin, or every account (an address), are admin:*'s to lift
    // (the wrong current passwords of the password row above left both).
    (
        "DELETE",
        "/admin/lockouts/admin",
        "/admin/lockouts/{username}",
        "",
        [401, 403, 403, 403, 403, 403, 204],
    ),
    (
        "DELETE",
        "/admin/lockouts/client%3A127.0.0.1",
        "/admin/lockouts/{username}",
        "",
        [401, 403, 403, 403, 403, 403, 204],
    ),
    // Deletes: each caller's own key (A's last), the shared key by the admin.
    (
        "DELETE",
        "/api/v1/ns/team/kv/t",
        "/api/v1/ns/{ns}/kv/{key}",
        "",
        [401, 403, 403, 403, 403, 403, 204],
    ),
    (
        "DELETE",
        "/api/v1/kv/a-key",
        "/api/v1/kv/{key}",
        "",
        [401, 204, 204, 403, 403, 403, 204],
    ),
    // Last: logging out ends each caller's token.
    (
        "POST",
        "/api/v1/auth/logout",
        "/api/v1/auth/logout",
        "",
        [401, 204, 204, 204, 204, 204, 204],
    ),
];

/// Routes that take no token, and what an anonymous caller gets from each.
const OPEN: &[(&str, &str, &str, u16)] = &[
    ("GET", "/", "{}", 200),
    ("GET", "/api/v1", "{}", 200),
    ("GET", "/openapi.yaml", "", 200),
    ("GET", "/healthz", "", 200),
    ("GET", "/readyz", "", 200),
    ("POST", "/api/v1/auth/register", r#"{"username":"x"}"#, 400),
    ("POST", "/api/v1/auth/login", r#"{"username":"x"}"#, 400),
    (
        "POST",
        "/api/v1/auth/refresh",
        r#"{"refresh_token":"nope"}"#,
        401,
    ),
];

#[tokio::test]
async fn every_route_for_every_caller() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::config(dir.path(), 100_000);
    cfg.http.body_size_max = 64 * 1024;
    let s = common::start_with_admin(cfg, ADMIN_PASSWORD).await;
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let base = format!("http://{}", s.addr);
    let call = |method: &str, path: &str, token: Option<&str>, body: &str| {
        let mut b = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).unwrap())
            .uri(format!("{base}{path}"))
            .header("content-type", "application/json");
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        let req = b.body(Full::new(Bytes::from(body.to_owned()))).unwrap();
        let client = client.clone();
        async move {
            let r = client.request(req).await.unwrap();
            let st = r.status();
            // A stream (the proxy's change feed) is judged by its head: its body lasts
            // as long as the token.
            if r.headers()
                .get("content-type")
                .is_some_and(|v| v == "text/event-stream")
            {
                return (st, Value::Null);
            }
            let bytes = r.into_body().collect().await.unwrap().to_bytes();
            let v: Value = serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
            (st, v)
        }
    };
    let login = |name: &'static str, password: &'static str| {
        let call = &call;
        async move {
            let body = json!({"username": name, "password": password}).to_string();
            let (st, v) = call("POST", "/api/v1/auth/login", None, &body).await;
            assert_eq!(st, StatusCode::OK, "login {name}: {v}");
            v["access_token"].as_str().unwrap().to_owned()
        }
    };
    let admin = login("admin", ADMIN_PASSWORD).await;
    let mut ids = std::collections::HashMap::new();
    for name in ["alice", "bob", "reader", "wkr", "uadm"] {
        let body = json!({"username": name, "password": PASSWORD}).to_string();
        let (st, v) = call("POST", "/api/v1/auth/register", None, &body).await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
        ids.insert(name, v["id"].as_str().unwrap().to_owned());
    }
    let (st, v) = call(
        "PUT",
        "/admin/roles/useradmin",
        Some(&admin),
        r#"{"permissions":["users:admin"]}"#,
    )
    .await;
    assert!(st.is_success(), "{v}");
    for (name, role) in [
        ("reader", "readonly"),
        ("wkr", "worker"),
        ("uadm", "useradmin"),
    ] {
        let id = &ids[name];
        let body = json!({ "role": role }).to_string();
        let (st, v) = call(
            "POST",
            &format!("/admin/users/{id}/roles"),
            Some(&admin),
            &body,
        )
        .await;
        assert!(st.is_success(), "{name} +{role}: {v}");
        let (st, v) = call(
            "DELETE",
            &format!("/admin/users/{id}/roles/user"),
            Some(&admin),
            "",
        )
        .await;
        assert!(st.is_success(), "{name} -user: {v}");
    }
    let tokens: [Option<String>; 7] = [
        None,
        Some(login("alice", PASSWORD).await),
        Some(login("bob", PASSWORD).await),
        Some(login("reader", PASSWORD).await),
        Some(login("wkr", PASSWORD).await),
        Some(login("uadm", PASSWORD).await),
        Some(admin.clone()),
    ];
    let alice = tokens[A].as_deref();
    // A's objects, and a shared key.
    let (st, v) = call("PUT", "/api/v1/kv/a-key", alice, r#"{"value":"A's"}"#).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let (st, v) = call(
        "POST",
        "/api/v1/jobs",
        alice,
        r#"{"queue":"q","payload":"A's"}"#,
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let job = v["id"].as_str().unwrap().to_owned();
    let (st, v) = call(
        "POST",
        "/api/v1/schedules",
        alice,
        r#"{"queue":"q","cron":"0 0 1 1 *","payload":"A's"}"#,
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let schedule = v["id"].as_str().unwrap().to_owned();
    let (st, v) = call(
        "PUT",
        "/api/v1/ns/team/kv/t",
        Some(&admin),
        r#"{"value":0}"#,
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let (_, me) = call("GET", "/api/v1/auth/me", Some(&admin), "").await;
    let ids = Ids {
        a: ids["alice"].clone(),
        b: ids["bob"].clone(),
        admin: me["id"].as_str().unwrap().to_owned(),
        job,
        schedule,
    };

    let mut failures = Vec::new();
    let mut covered = BTreeSet::new();
    for (method, path, pattern, body, expected) in MATRIX {
        let path = fill(path, &ids);
        let body = fill(body, &ids);
        for who in CALL_ORDER {
            let (st, v) = call(method, &path, tokens[who].as_deref(), &body).await;
            if st.as_u16() != expected[who] {
                failures.push(format!(
                    "{method} {path} as {}: {} (expected {}): {v}",
                    NAMES[who],
                    st.as_u16(),
                    expected[who]
                ));
            }
        }
        covered.insert((method.to_string(), pattern.to_string()));
    }
    for (method, path, body, expected) in OPEN {
        let (st, v) = call(method, path, None, body).await;
        if st.as_u16() != *expected {
            failures.push(format!(
                "{method} {path} as anonymous: {} (expected {expected}): {v}",
                st.as_u16()
            ));
        }
        covered.insert((method.to_string(), path.to_string()));
    }
    assert!(
        failures.is_empty(),
        "{} unexpected statuses:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // The table covers every route and method the router serves.
    for (pattern, methods) in helios_bins::gateway::routes() {
        for m in methods {
            assert!(
                covered.contains(&(m.to_string(), pattern.to_string())),
                "{m} {pattern} is missing from the matrix"
            );
        }
    }
    s.stop().await;
}
