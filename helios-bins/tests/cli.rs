//! The `helios` CLI: online commands against a gateway on 127.0.0.1:0 (login, kv, jobs,
//! admin) with their exit codes, and the offline tools (aof check/repair, backup, restore)
//! on data directories.

mod common;

use clap::Parser;
use helios_bins::cli::{Cli, EXIT_REFUSED, EXIT_UNREACHABLE, run};
use helios_bins::config::GatewayConfig;

async fn cli(args: &[&str]) -> Result<(), u8> {
    let mut all = vec!["helios"];
    all.extend_from_slice(args);
    run(Cli::parse_from(all)).await.map_err(|f| f.code)
}

#[tokio::test]
async fn online_commands_and_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = GatewayConfig {
        data_dir: dir.path().join("data"),
        ..GatewayConfig::default()
    };
    cfg.auth.bcrypt_cost = 4;
    let (addr, _, tx, server) = common::spawn(cfg).await;
    let url = format!("http://{addr}");
    let token = dir.path().join("token");
    let t = token.to_str().unwrap();
    let base = ["--url", url.as_str(), "--token-file", t];
    let with = |rest: &[&'static str]| -> Vec<&str> {
        let mut v: Vec<&str> = base.to_vec();
        v.extend_from_slice(rest);
        v
    };
    assert_eq!(
        cli(&with(&["kv", "get", "k"])).await,
        Err(EXIT_REFUSED),
        "no token yet: 401"
    );
    assert_eq!(
        cli(&with(&[
            "login",
            "--username",
            "admin",
            "--password",
            "wrong password"
        ]))
        .await,
        Err(EXIT_REFUSED)
    );
    cli(&with(&[
        "login",
        "--username",
        "admin",
        "--password",
        "admin password 1",
    ]))
    .await
    .unwrap();
    cli(&with(&[
        "kv",
        "set",
        "greeting",
        "\"hello\"",
        "--ttl",
        "60",
    ]))
    .await
    .unwrap();
    cli(&with(&["kv", "get", "greeting"])).await.unwrap();
    cli(&with(&["kv", "list"])).await.unwrap();
    cli(&with(&["kv", "del", "greeting"])).await.unwrap();
    assert_eq!(
        cli(&with(&["kv", "get", "greeting"])).await,
        Err(EXIT_REFUSED),
        "404"
    );
    cli(&with(&["jobs", "enqueue", "mail", "{\"to\":\"x\"}"]))
        .await
        .unwrap();
    cli(&with(&["jobs", "list", "mail"])).await.unwrap();
    cli(&with(&["jobs", "dlq", "mail"])).await.unwrap();
    cli(&with(&["admin", "stats"])).await.unwrap();
    cli(&with(&["admin", "snapshot"])).await.unwrap();
    cli(&with(&["users", "roles"])).await.unwrap();

    // The token file holds the pair, owner-only; an access token that no longer works is
    // renewed with the refresh token (saved again), without a new login.
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&token).unwrap()).unwrap();
    let refresh = saved["refresh_token"].as_str().unwrap().to_owned();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    std::fs::write(
        &token,
        serde_json::json!({"access_token": "expired.or.garbage", "refresh_token": refresh})
            .to_string(),
    )
    .unwrap();
    cli(&with(&["admin", "stats"])).await.unwrap();
    let renewed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&token).unwrap()).unwrap();
    assert_ne!(renewed["access_token"], "expired.or.garbage");
    assert_ne!(
        renewed["refresh_token"].as_str().unwrap(),
        refresh,
        "rotated"
    );
    // A spent refresh token (reused) is refused and revokes its family: 401 stays 401.
    std::fs::write(
        &token,
        serde_json::json!({"access_token": "garbage", "refresh_token": refresh}).to_string(),
    )
    .unwrap();
    assert_eq!(cli(&with(&["admin", "stats"])).await, Err(EXIT_REFUSED));
    let _ = tx.send(());
    server.await.unwrap().unwrap();
    assert_eq!(
        cli(&with(&["kv", "get", "k"])).await,
        Err(EXIT_UNREACHABLE),
        "server gone"
    );
}

#[tokio::test]
async fn offline_check_repair_backup_restore() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    {
        let db = helios_atlas::Atlas::open(&data, helios_atlas::Options::default()).unwrap();
        for i in 0..10 {
            db.set(&format!("k{i}"), "v").unwrap();
        }
        db.close().unwrap();
    }
    let d = data.to_str().unwrap().to_owned();
    cli(&["aof", "check", "--data-dir", &d]).await.unwrap();
    let backup = dir.path().join("backup");
    let b = backup.to_str().unwrap().to_owned();
    cli(&["backup", "--data-dir", &d, "--out", &b])
        .await
        .unwrap();
    let restored = dir.path().join("restored");
    let r = restored.to_str().unwrap().to_owned();
    cli(&["restore", "--from", &b, "--data-dir", &r])
        .await
        .unwrap();
    let db = helios_atlas::Atlas::open(&restored, helios_atlas::Options::default()).unwrap();
    assert_eq!(db.key_count(), 10);
    drop(db);
    assert_eq!(
        cli(&["restore", "--from", &b, "--data-dir", &r]).await,
        Err(2),
        "target not empty"
    );
    // Damage the AOF: check reports it (exit 1), repair fixes it.
    let seg = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("aof-"))
        .unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes.extend_from_slice(b"{\"seq\":999,\"crc\":\"00000000\",\"ops\":[]}\n");
    std::fs::write(&seg, &bytes).unwrap();
    assert_eq!(
        cli(&["aof", "check", "--data-dir", &d]).await,
        Err(EXIT_REFUSED)
    );
    cli(&["aof", "repair", "--data-dir", &d]).await.unwrap();
    cli(&["aof", "check", "--data-dir", &d]).await.unwrap();
}
