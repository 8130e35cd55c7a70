//! The `helios` CLI: online commands against a gateway on 127.0.0.1:0 (login, kv, jobs,
//! workers, schedules, admin) with their exit codes and messages (not logged in, session expired), passwords
//! from stdin and the missing-password usage error (the built binary, stdin not a
//! terminal), `--version` and `--help`, and the offline tools (aof check/repair, backup,
//! restore) on data directories, whose errors print as messages.

mod common;

use clap::Parser;
use helios_bins::cli::{Cli, EXIT_REFUSED, EXIT_UNREACHABLE, EXIT_USAGE, Failure, run};
use helios_bins::config::GatewayConfig;
use std::io::Write;
use std::process::{Command, Output, Stdio};

async fn cli(args: &[&str]) -> Result<(), u8> {
    cli_failure(args).await.map_err(|f| f.code)
}

async fn cli_failure(args: &[&str]) -> Result<(), Failure> {
    let mut all = vec!["helios"];
    all.extend_from_slice(args);
    run(Cli::parse_from(all)).await
}

/// Runs the built `helios` binary with `stdin` (None: stdin is /dev/null), without the
/// password variables of the environment, on a blocking thread (the test's gateway keeps
/// serving meanwhile).
/// Spawning a process copies this process's descriptors into the child until it execs,
/// a data directory's `LOCK` among them: for that moment the child holds the lock (flock
/// belongs to the open file description), and a test that closes a store and reopens it
/// at once can find it still locked. Spawns take this shared; the tests that close and
/// reopen stores take it exclusively.
static SPAWNS: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

async fn binary(args: Vec<String>, stdin: Option<&'static str>) -> Output {
    tokio::task::spawn_blocking(move || {
        let _spawning = SPAWNS.blocking_read();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_helios"));
        cmd.args(&args)
            .env_remove("HELIOS_PASSWORD")
            .env_remove("HELIOS_NEW_PASSWORD")
            .env_remove("HELIOS_URL")
            .env_remove("HELIOS_TOKEN_FILE")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        match stdin {
            None => {
                cmd.stdin(Stdio::null());
                cmd.output().unwrap()
            }
            Some(text) => {
                cmd.stdin(Stdio::piped());
                let mut child = cmd.spawn().unwrap();
                child
                    .stdin
                    .take()
                    .unwrap()
                    .write_all(text.as_bytes())
                    .unwrap();
                child.wait_with_output().unwrap()
            }
        }
    })
    .await
    .unwrap()
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| (*a).to_owned()).collect()
}

#[tokio::test]
async fn online_commands_and_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = GatewayConfig {
        data_dir: dir.path().join("data"),
        backup_dir: dir.path().join("backups"),
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
        "no token yet: not logged in"
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
    // An online backup while the server runs; the name is the server's to refuse twice.
    cli(&with(&["kv", "set", "kept", "\"in the backup\""]))
        .await
        .unwrap();
    cli(&with(&["backup", "--name", "b1"])).await.unwrap();
    assert_eq!(
        cli(&with(&["backup", "--name", "b1"])).await,
        Err(EXIT_REFUSED),
        "409: exists"
    );
    cli(&with(&["kv", "set", "after", "\"not in it\""]))
        .await
        .unwrap();

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
    let f = cli_failure(&with(&["admin", "stats"])).await.unwrap_err();
    assert_eq!(f.code, EXIT_REFUSED);
    assert!(
        f.message.contains("session has expired")
            && f.message.contains("helios login --username NAME")
            && f.message.contains("401"),
        "{}",
        f.message
    );
    let _ = tx.send(());
    server.await.unwrap().unwrap();
    assert_eq!(
        cli(&with(&["kv", "get", "k"])).await,
        Err(EXIT_UNREACHABLE),
        "server gone"
    );
    // Restored offline into a new directory: the write before the backup is there, the
    // one after it is not.
    let b1 = dir.path().join("backups").join("b1");
    let restored = dir.path().join("restored");
    cli(&[
        "restore",
        "--from",
        b1.to_str().unwrap(),
        "--data-dir",
        restored.to_str().unwrap(),
    ])
    .await
    .unwrap();
    let db = helios_atlas::Atlas::open(&restored, helios_atlas::Options::default()).unwrap();
    let keys: Vec<String> = db.with_keyspace(|ks| {
        ks.iter()
            .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
            .collect()
    });
    assert!(keys.iter().any(|k| k.ends_with(":kept")), "{keys:?}");
    assert!(!keys.iter().any(|k| k.ends_with(":after")), "{keys:?}");
}

/// `helios workers` prints the registry's listing: every worker for an admin; a user
/// without `jobs:work` is refused (exit 1).
#[tokio::test]
async fn workers_lists_the_registry() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = GatewayConfig {
        data_dir: dir.path().join("data"),
        backup_dir: dir.path().join("backups"),
        ..GatewayConfig::default()
    };
    cfg.auth.bcrypt_cost = 4;
    let (addr, state, tx, server) = common::spawn(cfg).await;
    let record = helios_queue::registry::WorkerRecord {
        id: "w-cli".to_owned(),
        owner: None,
        version: "9.9.9".to_owned(),
        queues: vec!["emails".to_owned()],
        in_flight: 4,
        started_at_ms: 1,
        heartbeat_at_ms: 0,
        host: "box-7".to_owned(),
        ttl_ms: 60_000,
    };
    let registry = state.registry.clone();
    tokio::task::spawn_blocking(move || registry.put(record))
        .await
        .unwrap()
        .unwrap();
    let url = format!("http://{addr}");
    let token = dir.path().join("token");
    let t = token.to_str().unwrap().to_owned();
    let base = ["--url", url.as_str(), "--token-file", t.as_str()];
    let with = |rest: &[&str]| -> Vec<String> {
        let mut v = strings(&base);
        v.extend(strings(rest));
        v
    };
    let out = binary(
        with(&["login", "--username", "admin", "--password-stdin"]),
        Some("admin password 1\n"),
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    let out = binary(with(&["workers"]), None).await;
    assert!(out.status.success(), "{out:?}");
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let items = listed["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{listed}");
    assert_eq!(items[0]["id"], "w-cli");
    assert_eq!(items[0]["host"], "box-7");
    assert_eq!(items[0]["in_flight"], 4);
    // A plain user holds no `jobs:work`: refused.
    let user_token = dir.path().join("user-token");
    let u = user_token.to_str().unwrap().to_owned();
    let as_user = |rest: &[&str]| -> Vec<String> {
        let mut v = strings(&["--url", url.as_str(), "--token-file", u.as_str()]);
        v.extend(strings(rest));
        v
    };
    let password = "correct horse battery staple";
    let args = as_user(&["users", "add", "pat", "--password", password]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    cli(&args).await.unwrap();
    let args = as_user(&["login", "--username", "pat", "--password", password]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    cli(&args).await.unwrap();
    let args = as_user(&["workers"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_eq!(cli(&args).await, Err(EXIT_REFUSED), "403");
    let _ = tx.send(());
    server.await.unwrap().unwrap();
}

/// `helios schedules add|list|rm`: a schedule is created with the caller as owner, listed
/// (the binary's stdout is the JSON), and removed; a bad expression and a second removal
/// are refused (exit 1).
#[tokio::test]
async fn schedules_add_list_rm() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = GatewayConfig {
        data_dir: dir.path().join("data"),
        backup_dir: dir.path().join("backups"),
        ..GatewayConfig::default()
    };
    cfg.auth.bcrypt_cost = 4;
    let (addr, _state, tx, server) = common::spawn(cfg).await;
    let url = format!("http://{addr}");
    let token = dir.path().join("token");
    let t = token.to_str().unwrap().to_owned();
    let with = |rest: &[&str]| -> Vec<String> {
        let mut v = strings(&["--url", url.as_str(), "--token-file", t.as_str()]);
        v.extend(strings(rest));
        v
    };
    let password = "correct horse battery staple";
    for args in [
        with(&["users", "add", "sam", "--password", password]),
        with(&["login", "--username", "sam", "--password", password]),
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cli(&args).await.unwrap();
    }
    let out = binary(
        with(&[
            "schedules",
            "add",
            "reports",
            "0 6 * * MON",
            r#"{"r":"weekly"}"#,
        ]),
        None,
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    let created: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["cron"], "0 6 * * MON");
    assert_eq!(created["payload"], serde_json::json!({"r": "weekly"}));
    let out = binary(with(&["schedules", "list"]), None).await;
    assert!(out.status.success(), "{out:?}");
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed["items"][0]["id"], id.as_str());
    let args = with(&["schedules", "add", "reports", "61 * * * *"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_eq!(cli(&args).await, Err(EXIT_REFUSED), "bad cron: 400");
    let args = with(&["schedules", "rm", &id]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    cli(&args).await.unwrap();
    assert_eq!(cli(&args).await, Err(EXIT_REFUSED), "gone: 404");
    let out = binary(with(&["schedules", "list"]), None).await;
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed["items"], serde_json::json!([]));
    let _ = tx.send(());
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn offline_check_repair_backup_restore() {
    let _no_spawns = SPAWNS.write().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    {
        let db = helios_atlas::Atlas::open(&data, helios_atlas::Options::default()).unwrap();
        for i in 0..10 {
            db.set(format!("k{i}"), "v").unwrap();
        }
        db.close().unwrap();
    }
    let d = data.to_str().unwrap().to_owned();
    cli(&["aof", "check", "--data-dir", &d]).await.unwrap();
    let backup = dir.path().join("backup");
    let b = backup.to_str().unwrap().to_owned();
    cli_failure(&["backup", "--data-dir", &d, "--out", &b])
        .await
        .unwrap_or_else(|f| panic!("backup: {} (exit {})", f.message, f.code));
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

#[tokio::test]
async fn not_logged_in_fails_before_contacting_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    let t = token.to_str().unwrap();
    // Port 1 refuses connections: contacting it would be exit 3, not 1.
    let base = ["--url", "http://127.0.0.1:1", "--token-file", t];
    for contents in [None, Some(""), Some("  \n")] {
        if let Some(c) = contents {
            std::fs::write(&token, c).unwrap();
        }
        for cmd in [
            &["kv", "get", "k"][..],
            &["admin", "stats"],
            &["users", "roles"],
        ] {
            let mut args = base.to_vec();
            args.extend_from_slice(cmd);
            let f = cli_failure(&args).await.unwrap_err();
            assert_eq!(f.code, EXIT_REFUSED, "{}", f.message);
            assert_eq!(
                f.message,
                format!(
                    "not logged in (no token in {t}): run `helios login --username NAME` first"
                )
            );
        }
    }
    // The binary prints it and exits 1.
    let out = binary(strings(&[&base[..], &["kv", "list"]].concat()), None).await;
    assert_eq!(out.status.code(), Some(i32::from(EXIT_REFUSED)));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("helios: not logged in (no token in "),
        "{err}"
    );
}

#[tokio::test]
async fn password_stdin_and_the_missing_password_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = GatewayConfig {
        data_dir: dir.path().join("data"),
        ..GatewayConfig::default()
    };
    cfg.auth.bcrypt_cost = 4;
    let (addr, _, tx, server) = common::spawn(cfg).await;
    let url = format!("http://{addr}");
    let token = dir.path().join("token");
    let t = token.to_str().unwrap().to_owned();
    let args =
        |rest: &[&str]| strings(&[&["--url", url.as_str(), "--token-file", &t], rest].concat());

    // No password source, stdin not a terminal: usage error naming the three ways.
    for cmd in [
        &["login", "--username", "admin"][..],
        &["users", "add", "bob"],
    ] {
        let out = binary(args(cmd), None).await;
        assert_eq!(out.status.code(), Some(i32::from(EXIT_USAGE)));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("--password-stdin")
                && err.contains("--password")
                && err.contains("HELIOS_")
                && err.contains("terminal"),
            "{err}"
        );
    }
    assert!(!token.exists());

    // --password-stdin: the first line, its newline (and a CR) stripped.
    let out = binary(
        args(&["login", "--username", "admin", "--password-stdin"]),
        Some("wrong password\n"),
    )
    .await;
    assert_eq!(out.status.code(), Some(i32::from(EXIT_REFUSED)));
    let out = binary(
        args(&["login", "--username", "admin", "--password-stdin"]),
        Some("admin password 1\r\nignored second line\n"),
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("logged in"));
    cli(&["--url", &url, "--token-file", &t, "admin", "stats"])
        .await
        .unwrap();
    // An empty first line is a usage error, before any request.
    let out = binary(
        args(&["login", "--username", "admin", "--password-stdin"]),
        Some("\n"),
    )
    .await;
    assert_eq!(out.status.code(), Some(i32::from(EXIT_USAGE)));

    // users add takes its password the same way; the new user can log in with it.
    let out = binary(
        args(&["users", "add", "bob", "--password-stdin"]),
        Some("bob password 12345"),
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    let out = binary(
        args(&["login", "--username", "bob", "--password-stdin"]),
        Some("bob password 12345\n"),
    )
    .await;
    assert!(out.status.success(), "{out:?}");

    let _ = tx.send(());
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn version_and_help() {
    let out = binary(strings(&["--version"]), None).await;
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("helios {}\n", env!("CARGO_PKG_VERSION"))
    );
    let out = binary(strings(&["--help"]), None).await;
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for wanted in [
        "HELIOS_URL",
        "HELIOS_TOKEN_FILE",
        "HELIOS_PASSWORD",
        "HELIOS_NEW_PASSWORD",
        "http://127.0.0.1:8080",
        "Exit codes",
    ] {
        assert!(help.contains(wanted), "{wanted} missing from:\n{help}");
    }
    // A password in the environment never shows in the help.
    let out = tokio::task::spawn_blocking(|| {
        let _spawning = SPAWNS.blocking_read();
        Command::new(env!("CARGO_BIN_EXE_helios"))
            .args(["login", "--help"])
            .env("HELIOS_PASSWORD", "s3cret-in-env")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--password-stdin"), "{help}");
    assert!(!help.contains("s3cret-in-env"), "{help}");
}

#[tokio::test]
async fn offline_errors_print_as_messages() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap().to_owned();
    let db = helios_atlas::Atlas::open(&data, helios_atlas::Options::default()).unwrap();
    let out = dir.path().join("backup");
    for args in [
        vec!["aof", "repair", "--data-dir", &d],
        vec!["backup", "--data-dir", &d, "--out", out.to_str().unwrap()],
    ] {
        let f = cli_failure(&args).await.unwrap_err();
        assert!(
            f.message.contains(d.as_str()) && !f.message.contains("Locked {"),
            "{}",
            f.message
        );
    }
    db.close().unwrap();
    // A damaged segment reads as text in `aof check`, not as a debug structure.
    let seg = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("aof-"))
        .unwrap();
    let mut f = std::fs::OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(b"{\"seq\":999,\"crc\":\"00000000\",\"ops\":[]}\n")
        .unwrap();
    drop(f);
    let out = binary(strings(&["aof", "check", "--data-dir", &d]), None).await;
    assert_eq!(out.status.code(), Some(i32::from(EXIT_REFUSED)));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("at byte") && !text.contains("Corrupt {") && !text.contains("TornTail"),
        "{text}"
    );
}
