//! The audit log (issue 22), on 127.0.0.1:0: each security event (registration, login
//! success and failure, a lockout, password change, refresh, logout, user and role
//! changes, rate-limit and proxy configuration, lockouts lifted, admin actions, an admin
//! reading a user's data, a refused admin call) is one JSON line in its own 0600 file with
//! the time, actor, client address, request id and outcome; no password or token is in it.

mod common;

use common::*;
use http::{Method, StatusCode};
use serde_json::{Value, json};
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;

const NEW_PW: &str = "marmalade-zeppelin-93-quartz";

fn lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The one line of `event` with `outcome` (the test triggers each once).
fn one<'a>(all: &'a [Value], event: &str, outcome: &str) -> &'a Value {
    let found: Vec<&Value> = all
        .iter()
        .filter(|l| l["event"] == event && l["outcome"] == outcome)
        .collect();
    assert_eq!(found.len(), 1, "{event} {outcome}: {all:#?}");
    found[0]
}

#[tokio::test]
async fn every_security_event_is_one_line_with_actor_client_and_outcome() {
    let (dir, s) = start_temp(10_000).await;
    let path = dir.path().join("audit/audit.log");
    let admin = admin_token(&s).await;
    let a = Some(admin.as_str());
    let admin_id = user_id(&s, &admin, "admin").await;

    // Registration and logins: success, a wrong password, then a lockout of the pair.
    let alice = register(&s, "alice", USER_PW).await;
    let alice_id = alice["id"].as_str().unwrap().to_owned();
    let (st, headers, pair) = s
        .call(
            Method::POST,
            "/api/v1/auth/login",
            None,
            credentials("alice", USER_PW),
            &[("x-request-id", "audit-login-1")],
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{pair}");
    assert_eq!(headers["x-request-id"], "audit-login-1");
    let token = pair["access_token"].as_str().unwrap().to_owned();
    let refresh = pair["refresh_token"].as_str().unwrap().to_owned();
    let mallory = s.client_at(Ipv4Addr::new(127, 0, 0, 3));
    let (st, _) = try_login(&mallory, "bob", "wrong-password-1").await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let _ = register(&s, "bob", USER_PW).await;
    let mut locked = false;
    for _ in 0..10 {
        let (st, v) = try_login(&mallory, "bob", "wrong-password-2").await;
        if st == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(problem_type(&v), "locked-out");
            locked = true;
            break;
        }
    }
    assert!(locked, "the pair was never locked");

    // The user's own security actions.
    let v = s
        .expect(
            Method::POST,
            "/api/v1/auth/refresh",
            None,
            Some(json!({"refresh_token": refresh})),
            200,
        )
        .await;
    let token2 = v["access_token"].as_str().unwrap().to_owned();
    let v = s
        .expect(
            Method::POST,
            "/api/v1/auth/password",
            Some(&token2),
            Some(json!({"current_password": USER_PW, "new_password": NEW_PW})),
            200,
        )
        .await;
    let token3 = v["access_token"].as_str().unwrap().to_owned();
    s.expect(
        Method::POST,
        "/api/v1/auth/logout",
        Some(&token3),
        None,
        204,
    )
    .await;
    let _ = login_with(&s, "alice", NEW_PW).await;

    // Admin actions.
    let users = format!("/admin/users/{alice_id}");
    s.expect_each([
        (
            Method::POST,
            format!("{users}/roles").as_str(),
            a,
            Some(json!({"role": "worker"})),
            204,
        ),
        (
            Method::DELETE,
            format!("{users}/roles/worker").as_str(),
            a,
            None,
            204,
        ),
        (
            Method::PUT,
            "/admin/roles/auditor",
            a,
            Some(json!({"permissions": ["metrics:read"]})),
            204,
        ),
        (Method::DELETE, "/admin/roles/auditor", a, None, 204),
        (Method::DELETE, "/admin/lockouts/bob", a, None, 204),
        (Method::POST, "/admin/snapshot", a, None, 200),
        (
            Method::PUT,
            "/admin/rate-limits",
            a,
            Some(json!({"default": {"capacity": 10_000, "refill_tokens": 1, "refill_period_ms": 1000}})),
            204,
        ),
        (
            Method::PUT,
            "/admin/proxy/backends/b1",
            a,
            Some(json!({"url": "http://127.0.0.1:9"})),
            201,
        ),
        (Method::DELETE, "/admin/proxy/backends/b1", a, None, 204),
        (Method::GET, format!("{users}/kv").as_str(), a, None, 200),
        (Method::POST, format!("{users}/disable").as_str(), a, None, 204),
        (Method::POST, format!("{users}/enable").as_str(), a, None, 204),
    ])
    .await;
    // Not audited: reads that touch no user's data.
    s.expect(Method::GET, "/admin/users", a, None, 200).await;
    // A refused admin call, by alice (disabling ended her sessions: a new one).
    let alice_token = login_with(&s, "alice", NEW_PW).await;
    s.expect(
        Method::POST,
        "/admin/snapshot",
        Some(&alice_token),
        None,
        403,
    )
    .await;

    let all = lines(&path);
    let login = all
        .iter()
        .find(|l| l["request_id"] == "audit-login-1")
        .expect("the login's line, by its request id");
    assert_eq!(
        (&login["event"], &login["outcome"]),
        (&json!("auth.login"), &json!("success"))
    );
    assert_eq!(login["actor"], alice_id.as_str());
    assert_eq!(login["username"], "alice");
    assert_eq!(login["client"], "127.0.0.1");
    assert_eq!(login["request_id"], "audit-login-1");
    assert_eq!(login["status"], 200);
    assert!(login["time"].as_str().unwrap().ends_with('Z'));
    assert!(login["time_ms"].as_u64().unwrap() > 1_600_000_000_000);
    let reg = all
        .iter()
        .find(|l| l["event"] == "user.register" && l["username"] == "alice")
        .expect("alice's registration");
    assert_eq!(reg["outcome"], "success");
    let failed: Vec<&Value> = all
        .iter()
        .filter(|l| l["event"] == "auth.login" && l["outcome"] == "failure")
        .collect();
    assert!(failed.len() >= 2, "{failed:#?}");
    assert!(
        failed
            .iter()
            .all(|l| l["client"] == "127.0.0.3" && l["username"] == "bob" && l["actor"].is_null())
    );
    let lockout = one(&all, "auth.login", "locked_out");
    assert_eq!(
        (&lockout["username"], lockout["status"].as_u64()),
        (&json!("bob"), Some(429))
    );
    one(&all, "auth.refresh", "success");
    assert_eq!(
        one(&all, "auth.logout", "success")["actor"],
        alice_id.as_str()
    );
    assert_eq!(
        one(&all, "auth.password_change", "success")["actor"],
        alice_id.as_str()
    );
    for (event, target) in [
        ("user.role_assign", format!("{alice_id}/worker")),
        ("user.role_revoke", format!("{alice_id}/worker")),
        ("role.put", "auditor".to_owned()),
        ("role.delete", "auditor".to_owned()),
        ("lockout.clear", "bob".to_owned()),
        ("config.proxy_backend.put", "b1".to_owned()),
        ("config.proxy_backend.delete", "b1".to_owned()),
        ("admin.user_kv.read", alice_id.clone()),
        ("user.disable", alice_id.clone()),
        ("user.enable", alice_id.clone()),
    ] {
        let l = one(&all, event, "success");
        assert_eq!(l["actor"], admin_id.as_str(), "{l}");
        assert_eq!(l["target"], target.as_str(), "{l}");
    }
    assert_eq!(
        one(&all, "config.rate_limits", "success")["actor"],
        admin_id.as_str()
    );
    assert_eq!(
        all.iter()
            .filter(|l| l["event"] == "admin.snapshot" && l["outcome"] == "success")
            .count(),
        1
    );
    let denied = one(&all, "admin.snapshot", "denied");
    assert_eq!(denied["actor"], alice_id.as_str());
    assert_eq!(denied["status"], 403);
    // Every line is one of the events above: the listing of users made none.
    let known = [
        "user.register",
        "auth.login",
        "auth.refresh",
        "auth.logout",
        "auth.password_change",
        "user.role_assign",
        "user.role_revoke",
        "role.put",
        "role.delete",
        "lockout.clear",
        "admin.snapshot",
        "config.rate_limits",
        "config.proxy_backend.put",
        "config.proxy_backend.delete",
        "admin.user_kv.read",
        "user.disable",
        "user.enable",
    ];
    for l in &all {
        assert!(known.contains(&l["event"].as_str().unwrap()), "{l}");
    }
    // Nothing secret.
    let text = std::fs::read_to_string(&path).unwrap();
    for secret in [USER_PW, NEW_PW, "wrong-password", &token, &refresh] {
        assert!(!text.contains(secret), "the audit log holds a secret");
    }
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    s.stop().await;
}

/// With `audit.enabled: false` no file is written; a path that cannot be a file stops the
/// start naming the key.
#[tokio::test]
async fn the_audit_log_can_be_off_and_a_bad_path_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), 1_000);
    cfg.audit.enabled = false;
    let s = start(cfg).await;
    let _ = login(&s, "alice").await;
    assert!(!dir.path().join("audit").exists());
    s.stop().await;

    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), 1_000);
    std::fs::create_dir_all(dir.path().join("taken")).unwrap();
    cfg.audit.path = dir.path().join("taken");
    let e = tokio::task::spawn_blocking(move || {
        helios_bins::gateway::start(cfg, Some(ADMIN_PW.to_owned()))
    })
    .await
    .unwrap()
    .expect_err("a directory is no audit file");
    assert!(e.contains("audit.path"), "{e}");
}
