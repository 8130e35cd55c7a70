//! Access control that holds (issue 17), over HTTP and through the CLI: wrong passwords
//! from one address never lock the account for another (`/admin/lockouts` shows and lifts
//! lockouts), a `users:admin` holder cannot escalate to admin or touch the admin, the last
//! admin stays, disabling ends every session for good and is no password oracle, passwords
//! must be strong (the bootstrap's `HELIOS_ADMIN_PASSWORD` too), the password change route
//! ends the other sessions, and a bad rate-limit body is a `400` naming the field.
//!
//! Two client addresses: the loopback network is all of 127.0.0.0/8 on Linux, so a client
//! bound to 127.0.0.2 reaches the gateway on 127.0.0.1 from another address.

mod common;

use bytes::Bytes;
use common::*;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

const ADMIN_PW: &str = "admin password 1";
const PW: &str = "tangerine-kayak-47-violet";

/// A JSON call to `s` from the local address `from`.
async fn call_from(
    s: &Server,
    from: Ipv4Addr,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Value,
) -> (StatusCode, Value) {
    let mut connector = HttpConnector::new();
    connector.set_local_address(Some(IpAddr::V4(from)));
    let client = Client::builder(TokioExecutor::new()).build::<_, Full<Bytes>>(connector);
    let mut b = Request::builder()
        .method(method)
        .uri(format!("http://{}{path}", s.addr));
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    let resp = client
        .request(b.body(Full::new(Bytes::from(body.to_string()))).unwrap())
        .await
        .unwrap();
    let st = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (st, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

async fn call(
    s: &Server,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let (st, _, v) = s.call(method, path, token, body, &[]).await;
    (st, v)
}

async fn login_as(s: &Server, name: &str, password: &str) -> Value {
    let (st, v) = call(
        s,
        Method::POST,
        "/api/v1/auth/login",
        None,
        Some(json!({"username": name, "password": password})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{name}: {v}");
    v
}

fn token(v: &Value) -> String {
    v["access_token"].as_str().unwrap().to_owned()
}

fn problem_type(v: &Value) -> &str {
    v["type"]
        .as_str()
        .unwrap_or("")
        .trim_start_matches("https://helios.dev/problems/")
}

async fn user_id(s: &Server, admin: &str, name: &str) -> String {
    let (_, users) = call(s, Method::GET, "/admin/users", Some(admin), None).await;
    users["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == name)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn wrong_passwords_from_one_address_never_lock_out_another() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(config(dir.path(), 1_000)).await;
    let attacker = Ipv4Addr::new(127, 0, 0, 2);
    let login = |pw: &'static str| json!({"username": "admin", "password": pw});
    for _ in 0..5 {
        let (st, v) = call_from(
            &s,
            attacker,
            Method::POST,
            "/api/v1/auth/login",
            None,
            login("not the admin password"),
        )
        .await;
        assert_eq!(st, StatusCode::UNAUTHORIZED, "{v}");
    }
    // The guessing address is locked out of the account, right password or not.
    let (st, v) = call_from(
        &s,
        attacker,
        Method::POST,
        "/api/v1/auth/login",
        None,
        login(ADMIN_PW),
    )
    .await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS, "{v}");
    assert_eq!(problem_type(&v), "locked-out");
    // The admin, from another address, gets in: after the name's bounded delay.
    let started = Instant::now();
    let admin = token(&login_as(&s, "admin", ADMIN_PW).await);
    assert!(started.elapsed().as_millis() >= 900, "the delay was served");
    // Admins see the lockout and lift it (and the CLI does the same).
    let (st, v) = call(&s, Method::GET, "/admin/lockouts", Some(&admin), None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let keys: Vec<&str> = v["lockouts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["key"].as_str())
        .collect();
    assert!(keys.contains(&"pair:admin@127.0.0.2"), "{v}");
    let (st, _) = call(
        &s,
        Method::DELETE,
        "/admin/lockouts/Admin",
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, v) = call(
        &s,
        Method::DELETE,
        "/admin/lockouts/admin",
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
    let (st, v) = call_from(
        &s,
        attacker,
        Method::POST,
        "/api/v1/auth/login",
        None,
        login(ADMIN_PW),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "lifted: {v}");
    s.stop().await;
}

#[tokio::test]
async fn a_users_admin_cannot_escalate_and_the_last_admin_stays() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(config(dir.path(), 1_000)).await;
    let admin = token(&login_as(&s, "admin", ADMIN_PW).await);
    let admin_id = user_id(&s, &admin, "admin").await;
    let (st, _) = call(
        &s,
        Method::PUT,
        "/admin/roles/user-admin",
        Some(&admin),
        Some(json!({"permissions": ["users:admin"]})),
    )
    .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    login(&s, "manager").await;
    let manager_id = user_id(&s, &admin, "manager").await;
    for (method, path, body) in [
        (
            Method::POST,
            format!("/admin/users/{manager_id}/roles"),
            Some(json!({"role": "user-admin"})),
        ),
        (
            Method::DELETE,
            format!("/admin/users/{manager_id}/roles/user"),
            None,
        ),
    ] {
        let (st, v) = call(&s, method, &path, Some(&admin), body).await;
        assert_eq!(st, StatusCode::NO_CONTENT, "{v}");
    }
    let manager = token(&login_as(&s, "manager", "correct horse battery").await);
    // What the issue saw: grant itself admin, then disable the real admin.
    for (method, path, body) in [
        (
            Method::POST,
            format!("/admin/users/{manager_id}/roles"),
            Some(json!({"role": "admin"})),
        ),
        (
            Method::PUT,
            "/admin/roles/sneaky".to_owned(),
            Some(json!({"permissions": ["*"]})),
        ),
        (
            Method::PUT,
            "/admin/roles/admin".to_owned(),
            Some(json!({"permissions": ["users:admin"]})),
        ),
        (
            Method::POST,
            format!("/admin/users/{admin_id}/disable"),
            None,
        ),
        (
            Method::DELETE,
            format!("/admin/users/{admin_id}/roles/admin"),
            None,
        ),
    ] {
        let (st, v) = call(&s, method.clone(), &path, Some(&manager), body).await;
        assert_eq!(st, StatusCode::FORBIDDEN, "{method} {path}: {v}");
        assert_eq!(problem_type(&v), "privilege-escalation", "{v}");
    }
    let (st, _) = call(&s, Method::POST, "/admin/snapshot", Some(&manager), None).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    // The admin is still the admin, and cannot remove itself as the last one.
    for (method, path) in [
        (Method::POST, format!("/admin/users/{admin_id}/disable")),
        (
            Method::DELETE,
            format!("/admin/users/{admin_id}/roles/admin"),
        ),
        (Method::DELETE, "/admin/roles/admin".to_owned()),
    ] {
        let (st, v) = call(&s, method, &path, Some(&admin), None).await;
        assert_eq!(st, StatusCode::FORBIDDEN, "{path}: {v}");
        assert_eq!(problem_type(&v), "last-admin", "{v}");
    }
    let (st, _) = call(&s, Method::GET, "/admin/stats", Some(&admin), None).await;
    assert_eq!(st, StatusCode::OK);
    s.stop().await;
}

#[tokio::test]
async fn disabling_ends_sessions_for_good_and_answers_like_a_wrong_password() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(config(dir.path(), 1_000)).await;
    let admin = token(&login_as(&s, "admin", ADMIN_PW).await);
    login(&s, "bob").await;
    let pair = login_as(&s, "bob", "correct horse battery").await;
    let bob = user_id(&s, &admin, "bob").await;
    let (st, _) = call(
        &s,
        Method::POST,
        &format!("/admin/users/{bob}/disable"),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let creds = |pw: &str| Some(json!({"username": "bob", "password": pw}));
    let right = call(
        &s,
        Method::POST,
        "/api/v1/auth/login",
        None,
        creds("correct horse battery"),
    )
    .await;
    let wrong = call(
        &s,
        Method::POST,
        "/api/v1/auth/login",
        None,
        creds("not bob's password"),
    )
    .await;
    assert_eq!(right.0, StatusCode::UNAUTHORIZED, "{}", right.1);
    assert_eq!(right, wrong, "no password oracle");
    let (st, _) = call(
        &s,
        Method::POST,
        &format!("/admin/users/{bob}/enable"),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, _) = call(
        &s,
        Method::GET,
        "/api/v1/auth/me",
        Some(&token(&pair)),
        None,
    )
    .await;
    assert_eq!(
        st,
        StatusCode::UNAUTHORIZED,
        "the old access token stays dead"
    );
    let (st, _) = call(
        &s,
        Method::POST,
        "/api/v1/auth/refresh",
        None,
        Some(json!({"refresh_token": pair["refresh_token"]})),
    )
    .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "so does its refresh token");
    login_as(&s, "bob", "correct horse battery").await;
    s.stop().await;
}

#[tokio::test]
async fn passwords_must_be_strong_and_a_change_ends_the_other_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(config(dir.path(), 1_000)).await;
    let (st, v) = call(
        &s,
        Method::POST,
        "/api/v1/auth/register",
        None,
        Some(json!({"username": "carol", "password": "password123"})),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    let detail = v["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("password:") && detail.contains("common"),
        "{detail}"
    );
    let (st, _) = call(
        &s,
        Method::POST,
        "/api/v1/auth/register",
        None,
        Some(json!({"username": "carol", "password": PW})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED);
    let phone = login_as(&s, "carol", PW).await;
    let laptop = login_as(&s, "carol", PW).await;
    let change =
        |current: &str, new: &str| Some(json!({"current_password": current, "new_password": new}));
    let path = "/api/v1/auth/password";
    let t = token(&laptop);
    let (st, v) = call(
        &s,
        Method::POST,
        path,
        Some(&t),
        change("a-wrong-guess", "marmalade-zeppelin-93-quartz"),
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(problem_type(&v), "invalid-credentials");
    let (st, v) = call(&s, Method::POST, path, Some(&t), change(PW, "carol12345")).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["detail"].as_str().unwrap().starts_with("new_password:"),
        "{v}"
    );
    let (st, fresh) = call(
        &s,
        Method::POST,
        path,
        Some(&t),
        change(PW, "marmalade-zeppelin-93-quartz"),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{fresh}");
    for old in [&phone, &laptop] {
        let (st, _) = call(&s, Method::GET, "/api/v1/auth/me", Some(&token(old)), None).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED);
        let (st, _) = call(
            &s,
            Method::POST,
            "/api/v1/auth/refresh",
            None,
            Some(json!({"refresh_token": old["refresh_token"]})),
        )
        .await;
        assert_eq!(st, StatusCode::UNAUTHORIZED);
    }
    let (st, v) = call(
        &s,
        Method::GET,
        "/api/v1/auth/me",
        Some(&token(&fresh)),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    login_as(&s, "carol", "marmalade-zeppelin-93-quartz").await;
    // An invalid rate-limit body names the field (it was a 500).
    let admin = token(&login_as(&s, "admin", ADMIN_PW).await);
    let (st, v) = call(
        &s,
        Method::PUT,
        "/admin/rate-limits",
        Some(&admin),
        Some(json!({
            "default": {"capacity": 10, "refill_tokens": 1, "refill_period_ms": 1000},
            "roles": {"user": {"capacity": 0, "refill_tokens": 1, "refill_period_ms": 1000}},
        })),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(problem_type(&v), "invalid-field");
    assert!(
        v["detail"].as_str().unwrap().starts_with("roles.user:"),
        "{v}"
    );
    s.stop().await;
}

#[tokio::test]
async fn a_weak_admin_password_from_the_environment_fails_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 1_000);
    let err = tokio::task::spawn_blocking(move || {
        helios_bins::gateway::start(cfg, Some("password123".into()))
    })
    .await
    .unwrap()
    .unwrap_err();
    assert!(
        err.contains("HELIOS_ADMIN_PASSWORD") && err.contains("too easy to guess"),
        "{err}"
    );
}

#[tokio::test]
async fn the_cli_changes_the_password_and_lists_and_lifts_lockouts() {
    use clap::Parser;
    use helios_bins::cli::{Cli, run};
    let dir = tempfile::tempdir().unwrap();
    let s = start(config(dir.path(), 1_000)).await;
    login(&s, "dora").await;
    let url = format!("http://{}", s.addr);
    let token_file = dir.path().join("token");
    let cli = |args: &[&str]| {
        let mut all = vec![
            "helios",
            "--url",
            url.as_str(),
            "--token-file",
            token_file.to_str().unwrap(),
        ];
        all.extend_from_slice(args);
        run(Cli::parse_from(all))
    };
    cli(&[
        "login",
        "--username",
        "dora",
        "--password",
        "correct horse battery",
    ])
    .await
    .unwrap();
    let before = std::fs::read_to_string(&token_file).unwrap();
    let weak = cli(&[
        "passwd",
        "--current-password",
        "correct horse battery",
        "--new-password",
        "password123",
    ])
    .await
    .unwrap_err();
    assert!(weak.message.contains("new_password"), "{}", weak.message);
    cli(&[
        "passwd",
        "--current-password",
        "correct horse battery",
        "--new-password",
        PW,
    ])
    .await
    .unwrap();
    assert_ne!(std::fs::read_to_string(&token_file).unwrap(), before);
    // The saved pair is the new session: it still works.
    cli(&["kv", "list"]).await.unwrap();
    // Lockouts: one wrong admin login from another address, then admin lists and lifts.
    for _ in 0..5 {
        call_from(
            &s,
            Ipv4Addr::new(127, 0, 0, 3),
            Method::POST,
            "/api/v1/auth/login",
            None,
            json!({"username": "dora", "password": "not the password"}),
        )
        .await;
    }
    cli(&["login", "--username", "admin", "--password", ADMIN_PW])
        .await
        .unwrap();
    cli(&["admin", "lockouts"]).await.unwrap();
    cli(&["admin", "lockouts", "--lift", "dora"]).await.unwrap();
    let again = cli(&["admin", "lockouts", "--lift", "dora"])
        .await
        .unwrap_err();
    assert!(again.message.contains("no lockout"), "{}", again.message);
    s.stop().await;
}
