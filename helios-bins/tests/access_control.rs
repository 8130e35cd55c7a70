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

use common::*;
use http::{Method, StatusCode};
use serde_json::json;
use std::net::Ipv4Addr;
use std::time::Instant;

const PW: &str = "tangerine-kayak-47-violet";

#[tokio::test]
async fn wrong_passwords_from_one_address_never_lock_out_another() {
    let (_dir, s) = start_temp(1_000).await;
    let attacker = s.client_at(Ipv4Addr::new(127, 0, 0, 2));
    for _ in 0..5 {
        let (st, v) = try_login(&attacker, "admin", "not the admin password").await;
        assert_eq!(st, StatusCode::UNAUTHORIZED, "{v}");
    }
    // The guessing address is locked out of the account, right password or not.
    let (st, v) = try_login(&attacker, "admin", ADMIN_PW).await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS, "{v}");
    assert_eq!(problem_type(&v), "locked-out");
    // The admin, from another address, gets in: after the name's bounded delay.
    let started = Instant::now();
    let admin = admin_token(&s).await;
    assert!(started.elapsed().as_millis() >= 900, "the delay was served");
    // Admins see the lockout and lift it (and the CLI does the same).
    let a = Some(admin.as_str());
    let v = s.expect(Method::GET, "/admin/lockouts", a, None, 200).await;
    let keys: Vec<&str> = v["lockouts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["key"].as_str())
        .collect();
    assert!(keys.contains(&"pair:admin@127.0.0.2"), "{v}");
    s.expect(Method::DELETE, "/admin/lockouts/Admin", a, None, 204)
        .await;
    s.expect(Method::DELETE, "/admin/lockouts/admin", a, None, 404)
        .await;
    let (st, v) = try_login(&attacker, "admin", ADMIN_PW).await;
    assert_eq!(st, StatusCode::OK, "lifted: {v}");
    s.stop().await;
}

#[tokio::test]
async fn a_users_admin_cannot_escalate_and_the_last_admin_stays() {
    let (_dir, s) = start_temp(1_000).await;
    let admin = admin_token(&s).await;
    let a = Some(admin.as_str());
    let admin_id = user_id(&s, &admin, "admin").await;
    let body = json!({"permissions": ["users:admin"]});
    s.expect(Method::PUT, "/admin/roles/user-admin", a, Some(body), 204)
        .await;
    login(&s, "manager").await;
    let manager_id = user_id(&s, &admin, "manager").await;
    let roles = format!("/admin/users/{manager_id}/roles");
    let body = json!({"role": "user-admin"});
    s.expect(Method::POST, &roles, a, Some(body), 204).await;
    s.expect(Method::DELETE, &format!("{roles}/user"), a, None, 204)
        .await;
    let manager = login_with(&s, "manager", USER_PW).await;
    // What the issue saw: grant itself admin, then disable the real admin.
    let disable = format!("/admin/users/{admin_id}/disable");
    let unadmin = format!("/admin/users/{admin_id}/roles/admin");
    let everything = json!({"permissions": ["*"]});
    let less_admin = json!({"permissions": ["users:admin"]});
    for (method, path, body) in [
        (Method::POST, roles.as_str(), Some(json!({"role": "admin"}))),
        (Method::PUT, "/admin/roles/sneaky", Some(everything)),
        (Method::PUT, "/admin/roles/admin", Some(less_admin)),
        (Method::POST, disable.as_str(), None),
        (Method::DELETE, unadmin.as_str(), None),
    ] {
        let v = s.expect(method, path, Some(&manager), body, 403).await;
        assert_eq!(problem_type(&v), "privilege-escalation", "{v}");
    }
    s.expect(Method::POST, "/admin/snapshot", Some(&manager), None, 403)
        .await;
    // The admin is still the admin, and cannot remove itself as the last one.
    for (method, path) in [
        (Method::POST, disable.as_str()),
        (Method::DELETE, unadmin.as_str()),
        (Method::DELETE, "/admin/roles/admin"),
    ] {
        let v = s.expect(method, path, a, None, 403).await;
        assert_eq!(problem_type(&v), "last-admin", "{v}");
    }
    s.expect(Method::GET, "/admin/stats", a, None, 200).await;
    s.stop().await;
}

#[tokio::test]
async fn disabling_ends_sessions_for_good_and_answers_like_a_wrong_password() {
    let (_dir, s) = start_temp(1_000).await;
    let admin = admin_token(&s).await;
    let a = Some(admin.as_str());
    login(&s, "bob").await;
    let pair = login_pair(&s, "bob", USER_PW).await;
    let bob = user_id(&s, &admin, "bob").await;
    let disable = format!("/admin/users/{bob}/disable");
    s.expect(Method::POST, &disable, a, None, 204).await;
    let right = try_login(&s, "bob", USER_PW).await;
    let wrong = try_login(&s, "bob", "not bob's password").await;
    assert_eq!(right.0, StatusCode::UNAUTHORIZED, "{}", right.1);
    assert_eq!(right, wrong, "no password oracle");
    let enable = format!("/admin/users/{bob}/enable");
    s.expect(Method::POST, &enable, a, None, 204).await;
    let (st, _) = s.get("/api/v1/auth/me", &access_token(&pair)).await;
    assert_eq!(
        st,
        StatusCode::UNAUTHORIZED,
        "the old access token stays dead"
    );
    let refresh = Some(json!({"refresh_token": pair["refresh_token"]}));
    let (st, _) = s
        .send(Method::POST, "/api/v1/auth/refresh", None, refresh)
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "so does its refresh token");
    login_pair(&s, "bob", USER_PW).await;
    s.stop().await;
}

#[tokio::test]
async fn passwords_must_be_strong_and_a_change_ends_the_other_sessions() {
    let (_dir, s) = start_temp(1_000).await;
    let path = "/api/v1/auth/register";
    let weak = credentials("carol", "password123");
    let v = s.expect(Method::POST, path, None, weak, 400).await;
    let detail = v["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("password:") && detail.contains("common"),
        "{detail}"
    );
    register(&s, "carol", PW).await;
    let phone = login_pair(&s, "carol", PW).await;
    let laptop = login_pair(&s, "carol", PW).await;
    let change =
        |current: &str, new: &str| Some(json!({"current_password": current, "new_password": new}));
    let path = "/api/v1/auth/password";
    let t = access_token(&laptop);
    let t = Some(t.as_str());
    let guess = change("a-wrong-guess", "marmalade-zeppelin-93-quartz");
    let v = s.expect(Method::POST, path, t, guess, 403).await;
    assert_eq!(problem_type(&v), "invalid-credentials");
    let v = s
        .expect(Method::POST, path, t, change(PW, "carol12345"), 400)
        .await;
    assert!(
        v["detail"].as_str().unwrap().starts_with("new_password:"),
        "{v}"
    );
    let strong = change(PW, "marmalade-zeppelin-93-quartz");
    let fresh = s.expect(Method::POST, path, t, strong, 200).await;
    for old in [&phone, &laptop] {
        let (st, _) = s.get("/api/v1/auth/me", &access_token(old)).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED);
        let refresh = Some(json!({"refresh_token": old["refresh_token"]}));
        let (st, _) = s
            .send(Method::POST, "/api/v1/auth/refresh", None, refresh)
            .await;
        assert_eq!(st, StatusCode::UNAUTHORIZED);
    }
    let (st, v) = s.get("/api/v1/auth/me", &access_token(&fresh)).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    login_pair(&s, "carol", "marmalade-zeppelin-93-quartz").await;
    // An invalid rate-limit body names the field (it was a 500).
    let admin = admin_token(&s).await;
    let limits = json!({
        "default": {"capacity": 10, "refill_tokens": 1, "refill_period_ms": 1000},
        "roles": {"user": {"capacity": 0, "refill_tokens": 1, "refill_period_ms": 1000}},
    });
    let a = Some(admin.as_str());
    let v = s
        .expect(Method::PUT, "/admin/rate-limits", a, Some(limits), 400)
        .await;
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
    let (dir, s) = start_temp(1_000).await;
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
    let other = s.client_at(Ipv4Addr::new(127, 0, 0, 3));
    for _ in 0..5 {
        try_login(&other, "dora", "not the password").await;
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
