//! The gateway end to end, over real sockets on 127.0.0.1 (port 0), with a hyper client:
//! auth flow, KV with ETags and conditional writes, errors as problem+json, 404/405/413,
//! 401 for missing or bad tokens, RBAC, rate limiting with its headers, metrics, and a
//! graceful shutdown that flushes ATLAS so a restart keeps everything.

mod common;

use common::{
    ADMIN_PW, Server, admin_token, claim, config, enqueue, login, start, start_temp,
    start_temp_with, user_id,
};
use http::{Method, StatusCode};
use serde_json::{Value, json};

#[tokio::test]
async fn auth_kv_errors_and_restart() {
    let (dir, s) = start_temp(1000).await;
    let (st, h, _) = s.call(Method::GET, "/healthz", None, None, &[]).await;
    assert_eq!(st, StatusCode::OK);
    assert!(h.contains_key("x-request-id"));
    s.expect(Method::GET, "/readyz", None, None, 200).await;

    let token = login(&s, "alice").await;
    let t = Some(token.as_str());
    let me = s.expect(Method::GET, "/api/v1/auth/me", t, None, 200).await;
    assert_eq!(me["username"], "alice");
    assert_eq!(me["roles"], json!(["user"]));

    // KV: create, read with ETag, conditional writes, list, delete.
    let key = "/api/v1/kv/greeting%20one";
    let body = json!({"value": {"hello": "world"}});
    let (st, h, _) = s.call(Method::PUT, key, t, Some(body), &[]).await;
    assert_eq!(st, StatusCode::CREATED);
    let etag = h["etag"].to_str().unwrap().to_owned();
    let (st, h, v) = s.call(Method::GET, key, t, None, &[]).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        v,
        json!({"key": "greeting one", "value": {"hello": "world"}, "ttl_seconds": null})
    );
    assert_eq!(h["etag"].to_str().unwrap(), etag);
    let if_none = [("if-none-match", "*")];
    let (st, _, v) = s
        .call(Method::PUT, key, t, Some(json!({"value": 1})), &if_none)
        .await;
    assert_eq!(st, StatusCode::PRECONDITION_FAILED, "{v}");
    assert_eq!(v["type"], "https://helios.dev/problems/precondition-failed");
    let stale = [("if-match", "\"0000000000000000\"")];
    let (st, _, _) = s
        .call(Method::PUT, key, t, Some(json!({"value": 2})), &stale)
        .await;
    assert_eq!(st, StatusCode::PRECONDITION_FAILED);
    let body = json!({"value": 3, "ttl_seconds": 600});
    let (st, _, _) = s
        .call(Method::PUT, key, t, Some(body), &[("if-match", &etag)])
        .await;
    assert_eq!(st, StatusCode::OK);
    let (_, v) = s.get(key, &token).await;
    assert_eq!(v["value"], 3);
    assert_eq!(v["ttl_seconds"], 600);
    for i in 0..3 {
        s.put_value(&format!("/api/v1/kv/list-{i}"), &token, json!(i))
            .await;
    }
    let (st, v) = s.get("/api/v1/kv?prefix=list-&limit=2", &token).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["items"].as_array().unwrap().len(), 2);
    let cursor = v["next_cursor"].as_str().unwrap().to_owned();
    let (_, v) = s
        .get(&format!("/api/v1/kv?prefix=list-&cursor={cursor}"), &token)
        .await;
    assert_eq!(v["items"], json!([{"key": "list-2", "value": 2}]));
    assert_eq!(v["next_cursor"], Value::Null);
    s.expect(Method::DELETE, "/api/v1/kv/list-0", t, None, 204)
        .await;
    s.expect(Method::DELETE, "/api/v1/kv/list-0", t, None, 404)
        .await;

    // Errors.
    let (st, h, v) = s.call(Method::GET, "/api/v1/kv/x", None, None, &[]).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert_eq!(h["content-type"], "application/problem+json");
    assert_eq!(v["status"], 401);
    s.expect(Method::GET, "/api/v1/kv/x", Some("garbage"), None, 401)
        .await;
    let (st, v) = s.send(Method::GET, "/nope", None, None).await;
    assert_eq!(
        (st, v["type"].as_str().unwrap()),
        (
            StatusCode::NOT_FOUND,
            "https://helios.dev/problems/not-found"
        )
    );
    let (st, h, _) = s.call(Method::PATCH, "/api/v1/kv/x", t, None, &[]).await;
    assert_eq!(st, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(h["allow"], "GET, PUT, DELETE");
    let (st, v) = s
        .put_value("/api/v1/kv/big", &token, json!("x".repeat(5000)))
        .await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    let body = Some(json!({"valu": 1}));
    let (st, v) = s.send(Method::PUT, "/api/v1/kv/k", t, body).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(v["detail"].as_str().unwrap().contains("valu"), "{v}");

    // RBAC: a readonly user can read but not write.
    let admin = admin_token(&s).await;
    // On the API listener, /metrics needs metrics:read (admins have it; users do not).
    let (st, _) = s.send(Method::GET, "/metrics", None, None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, _) = s.get("/metrics", &token).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (_, v) = s.get("/metrics", &admin).await;
    let text = v.as_str().unwrap();
    assert!(text.contains("helios_requests_total{"), "{text}");
    assert!(text.contains("helios_request_duration_seconds_bucket"));
    // The text format 0.0.4 without an Accept (OpenMetrics when asked: tests/metrics.rs).
    assert!(
        text.contains("# TYPE atlas_aof_bytes gauge\natlas_aof_bytes "),
        "{text}"
    );
    assert!(text.contains("# TYPE atlas_snapshot_duration_seconds histogram\n"));
    assert!(!text.contains("# EOF"), "{text}");

    // Logout revokes the token.
    s.expect(Method::POST, "/api/v1/auth/logout", t, None, 204)
        .await;
    s.expect(Method::GET, "/api/v1/auth/me", t, None, 401).await;
    s.stop().await;

    // Restart: data and users are there.
    let s = start(config(dir.path(), 1000)).await;
    let token = login(&s, "alice").await;
    let (_, v) = s.get(key, &token).await;
    assert_eq!(v["value"], 3);
    s.stop().await;
}

#[tokio::test]
async fn rate_limit_headers_and_429() {
    let (_dir, s) = start_temp(3).await;
    let token = login(&s, "bob").await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let (st, h, _) = s
            .call(Method::GET, "/api/v1/kv/none", Some(&token), None, &[])
            .await;
        statuses.push(st);
        assert!(h.contains_key("ratelimit-policy"), "{h:?}");
        if st == StatusCode::TOO_MANY_REQUESTS {
            assert!(h.contains_key("retry-after"));
            assert!(h["ratelimit"].to_str().unwrap().contains("r=0"));
        }
    }
    let allowed = statuses
        .iter()
        .filter(|s| **s == StatusCode::NOT_FOUND)
        .count();
    assert!(
        (3..=4).contains(&allowed),
        "capacity 3 (+1 refill at most): {statuses:?}"
    );
    assert!(statuses.contains(&StatusCode::TOO_MANY_REQUESTS));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_holds_under_concurrent_clients() {
    let dir = tempfile::tempdir().unwrap();
    // Capacity 20, refill 1 per second.
    let s = std::sync::Arc::new(start(config(dir.path(), 20)).await);
    let carol = login(&s, "carol").await;
    let dave = login(&s, "dave").await;
    let started = std::time::Instant::now();
    // 40 concurrent clients with carol's token, 5 requests each, all at once.
    let tasks: Vec<_> = (0..40)
        .map(|_| {
            let s = s.clone();
            let token = carol.clone();
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                for _ in 0..5 {
                    let (st, _) = s
                        .send(Method::GET, "/api/v1/kv/none", Some(&token), None)
                        .await;
                    statuses.push(st);
                }
                statuses
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    let admitted = statuses
        .iter()
        .filter(|s| **s == StatusCode::NOT_FOUND)
        .count();
    let limited = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!(admitted + limited, 200, "only 404 or 429: {statuses:?}");
    // Never more than the burst plus what refilled while the run lasted.
    let ceiling = 20 + elapsed.floor() as usize + 1;
    assert!(
        admitted <= ceiling,
        "{admitted} admitted in {elapsed:.2} s; at most {ceiling}"
    );
    assert!(admitted >= 20, "the whole burst is usable: {admitted}");
    // Another client's bucket is its own.
    let (st, _) = s
        .send(Method::GET, "/api/v1/kv/none", Some(&dave), None)
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let s = std::sync::Arc::try_unwrap(s).ok().expect("no other handle");
    s.stop().await;
}

#[tokio::test]
async fn a_full_queue_answers_429_with_retry_after() {
    let (_dir, s) = start_temp_with(1_000, ADMIN_PW, |c| c.queue.depth_max = 2).await;
    let token = login(&s, "erin").await;
    let t = Some(token.as_str());
    let job = json!({"queue": "small", "payload": {}});
    for _ in 0..2 {
        s.expect(Method::POST, "/api/v1/jobs", t, Some(job.clone()), 201)
            .await;
    }
    let (st, h, v) = s
        .call(Method::POST, "/api/v1/jobs", t, Some(job), &[])
        .await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS, "{v}");
    assert!(h.contains_key("retry-after"));
    assert!(v["type"].as_str().unwrap().ends_with("queue-full"), "{v}");
    // Another queue is not affected.
    let other = json!({"queue": "other", "payload": {}});
    s.expect(Method::POST, "/api/v1/jobs", t, Some(other), 201)
        .await;
    s.stop().await;
}

#[tokio::test]
async fn a_failed_store_refuses_writes_with_503_and_still_serves_reads() {
    use helios_atlas::storage::MemStorage;
    let disk = MemStorage::new();
    let mut cfg = config(std::path::Path::new("/gw"), 1_000);
    cfg.auth.jwt_secret = "a test secret of at least thirty-two bytes".into();
    let atlas = helios_atlas::Atlas::open(
        "/gw",
        helios_atlas::Options {
            fsync: helios_atlas::FsyncPolicy::Always,
            storage: std::sync::Arc::new(disk.clone()),
            maintenance_interval_ms: None,
            ..helios_atlas::Options::default()
        },
    )
    .unwrap();
    let s = common::start_over(cfg, atlas, helios_bins::app::Context::system()).await;
    let token = login(&s, "frank").await;
    let (st, _) = s.put_value("/api/v1/kv/k", &token, json!(1)).await;
    assert_eq!(st, StatusCode::CREATED);

    // The disk starts failing every fsync: ATLAS fails stop.
    disk.fail_sync_after(0);
    let body = Some(json!({"value": 2}));
    let (st, h, v) = s
        .call(Method::PUT, "/api/v1/kv/k", Some(&token), body, &[])
        .await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert!(h.contains_key("retry-after"));
    let (st, v) = s.put_value("/api/v1/kv/j", &token, json!(3)).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "stays refused: {v}");
    // Reads are still served, with the last acknowledged value.
    let (st, v) = s.get("/api/v1/kv/k", &token).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["value"], 1);
    let (st, _) = s.send(Method::GET, "/readyz", None, None).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "not ready for writes");
    let (st, _) = s.send(Method::GET, "/healthz", None, None).await;
    assert_eq!(st, StatusCode::OK, "the process is up");
    // Shutting down reports the failed store instead of pretending it flushed.
    assert!(s.stop_result().await.is_err());
}

/// Under `everysec` a write commits on the runtime thread (an append to the page cache).
/// Once the background fsync is stuck and late (`Atlas::writes_may_wait`), writes go to the blocking
/// pool and wait there for the disk, and the runtime goes on serving reads: this test runs
/// the gateway on its own single thread, which an inline write waiting for the held fsync
/// would block (and the read below with it).
#[tokio::test]
async fn a_stuck_everysec_fsync_holds_writes_not_the_runtime() {
    use helios_atlas::storage::MemStorage;
    use helios_core::{Clock, ManualClock};
    let disk = MemStorage::new();
    let clock = std::sync::Arc::new(ManualClock::new(1_000_000));
    let mut cfg = config(std::path::Path::new("/gw"), 1_000);
    cfg.auth.jwt_secret = "a test secret of at least thirty-two bytes".into();
    let atlas = helios_atlas::Atlas::open(
        "/gw",
        helios_atlas::Options {
            fsync: helios_atlas::FsyncPolicy::Everysec,
            everysec_lag_max_ms: 2_000,
            storage: std::sync::Arc::new(disk.clone()),
            clock: clock.clone(),
            maintenance_interval_ms: None,
            ..helios_atlas::Options::default()
        },
    )
    .unwrap();
    let s = common::start_over(cfg, atlas.clone(), helios_bins::app::Context::system()).await;
    let token = login(&s, "hana").await;
    let (st, _) = s.put_value("/api/v1/kv/k", &token, json!(1)).await;
    assert_eq!(st, StatusCode::CREATED);
    assert!(!atlas.writes_may_wait(), "just written");

    // The everysec fsync starts 1.1 s later and hangs.
    clock.advance_ms(1_100);
    disk.hold_syncs();
    // A watchdog: if a write ever blocks this thread behind the held fsync, the test
    // fails (the write did not wait on the pool) instead of hanging.
    let watchdog = disk.clone();
    std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(10));
        watchdog.release_syncs();
    });
    let ticker = {
        let (atlas, now) = (atlas.clone(), clock.now_ms());
        std::thread::spawn(move || atlas.tick(now))
    };
    while disk.held_sync_count() == 0 {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    assert!(!atlas.writes_may_wait(), "an fsync 1.1 s behind: on time");
    clock.advance_ms(1_000);
    assert!(
        atlas.writes_may_wait(),
        "2.1 s behind: late, past the bound"
    );
    let api = common::Api {
        addr: s.addr,
        client: s.client.clone(),
    };
    let writer = {
        let token = token.clone();
        tokio::spawn(async move { api.put_value("/api/v1/kv/k", &token, json!(2)).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let waited = !writer.is_finished();
    let (st, v) = s.get("/api/v1/kv/k", &token).await;
    // Released before any assertion: a failed one would otherwise hang the test at the
    // runtime's end, behind the held fsync.
    disk.release_syncs();
    assert!(waited, "past the bound, the write waits for the disk");
    // Served meanwhile; the value is 2 once the pool has run the write (applied, its
    // acknowledgement waiting for the fsync, as Redis delays a reply, not the write).
    assert_eq!(st, StatusCode::OK, "{v}");
    assert!(v["value"] == json!(1) || v["value"] == json!(2), "{v}");
    ticker.join().unwrap().unwrap();
    let (st, v) = writer.await.unwrap();
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(atlas.stats().fsync_lag_stall_count, 1);
    s.stop().await;
}

#[tokio::test]
async fn expired_and_foreign_tokens_get_401() {
    let secret = "a test secret of at least thirty-two bytes";
    let (_dir, s) = start_temp_with(1_000, ADMIN_PW, |c| c.auth.jwt_secret = secret.into()).await;
    let good = login(&s, "gina").await;
    let (_, me) = s.get("/api/v1/auth/me", &good).await;
    // The same claims, re-signed with the right key, but expired an hour ago (well past
    // the leeway); and a fresh token signed with another key.
    let mut claims: helios_auth::Claims = jsonwebtoken::dangerous::insecure_decode(&good)
        .unwrap()
        .claims;
    let now = claims.iat;
    claims.iat = now - 7_200;
    claims.nbf = now - 7_200;
    claims.exp = now - 3_600;
    let header = jsonwebtoken::Header {
        kid: Some("k1".into()),
        ..jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256)
    };
    let expired = jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap();
    let mut fresh = claims.clone();
    fresh.iat = now;
    fresh.nbf = now;
    fresh.exp = now + 600;
    let foreign = jsonwebtoken::encode(
        &header,
        &fresh,
        &jsonwebtoken::EncodingKey::from_secret(b"another secret of thirty-two bytes or more"),
    )
    .unwrap();
    // An expired token has its own problem type (the client should refresh); a token
    // that is not ours is just invalid.
    for (token, kind) in [(&expired, "token-expired"), (&foreign, "invalid-token")] {
        let (st, h, v) = s
            .call(Method::GET, "/api/v1/auth/me", Some(token), None, &[])
            .await;
        assert_eq!(st, StatusCode::UNAUTHORIZED, "{v}");
        assert_eq!(
            v["type"],
            format!("https://helios.dev/problems/{kind}"),
            "{v}"
        );
        assert!(
            h["www-authenticate"]
                .to_str()
                .unwrap()
                .contains("invalid_token")
        );
    }
    // The genuine token still works.
    let (st, again) = s.get("/api/v1/auth/me", &good).await;
    assert_eq!((st, again), (StatusCode::OK, me));
    s.stop().await;
}

#[tokio::test]
async fn jobs_enqueue_claim_long_poll_ack_nack_dlq() {
    let (_dir, s) = start_temp(1000).await;
    let s = std::sync::Arc::new(s);
    let user = login(&s, "carol").await;
    let admin = admin_token(&s).await;
    let (u, a) = (Some(user.as_str()), Some(admin.as_str()));
    let (_, me) = s.get("/api/v1/auth/me", &user).await;
    assert_eq!(me["roles"], json!(["user"]), "{me}");
    // A user may enqueue but not work or administer.
    let body =
        json!({"queue": "mail", "payload": {"to": "x"}, "dedup_id": "d1", "max_attempts": 1});
    let job = s
        .expect(Method::POST, "/api/v1/jobs", u, Some(body), 201)
        .await;
    let id = job["id"].as_str().unwrap().to_owned();
    let body = json!({"queue": "mail", "payload": {"to": "x"}, "dedup_id": "d1"});
    let (st, again) = s.send(Method::POST, "/api/v1/jobs", u, Some(body)).await;
    assert_eq!(
        (st, again["id"].as_str().unwrap()),
        (StatusCode::OK, id.as_str()),
        "dedup hit"
    );
    let work = json!({"queue": "mail", "worker_id": "w", "lease_seconds": 30});
    s.expect(Method::POST, "/api/v1/jobs/claim", u, Some(work), 403)
        .await;
    s.expect(Method::GET, "/api/v1/queues", u, None, 403).await;

    // Claim, ack; a second ack with the same token is refused.
    let work = json!({"queue": "mail", "worker_id": "w1", "lease_seconds": 30, "max_jobs": 5});
    let c = s
        .expect(Method::POST, "/api/v1/jobs/claim", a, Some(work), 200)
        .await;
    let jobs = c["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0]["attempt"], 1);
    let token = jobs[0]["lease_token"].as_str().unwrap().to_owned();
    let beat = json!({"lease_token": token, "lease_seconds": 60});
    let path = format!("/api/v1/jobs/{id}/heartbeat");
    s.expect(Method::POST, &path, a, Some(beat), 200).await;
    let path = format!("/api/v1/jobs/{id}/ack");
    let ack = json!({"lease_token": token, "result": 7});
    s.expect(Method::POST, &path, a, Some(ack), 204).await;
    let ack = json!({"lease_token": token});
    s.expect(Method::POST, &path, a, Some(ack), 409).await;
    let (_, v) = s.get(&format!("/api/v1/jobs/{id}"), &user).await;
    assert_eq!(
        (v["state"].as_str().unwrap(), &v["result"]),
        ("DONE", &json!(7))
    );

    // Long poll: a claim waits for an enqueue instead of returning empty at once.
    let waiter = {
        let s = s.clone();
        let admin = admin.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let body = json!({"queue": "late", "worker_id": "w2", "lease_seconds": 30, "wait_seconds": 10});
            let (_, c) = claim(&s, &admin, body).await;
            (c, started.elapsed())
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let late = json!({"queue": "late", "max_attempts": 1});
    s.send(Method::POST, "/api/v1/jobs", u, Some(late)).await;
    let (c, waited) = waiter.await.unwrap();
    assert_eq!(c["jobs"].as_array().unwrap().len(), 1, "{c}");
    assert!(
        waited < std::time::Duration::from_secs(9),
        "woken by the enqueue, not the timeout"
    );

    // Nack with no attempts left: dead-lettered; listed; redriven.
    let jid = c["jobs"][0]["id"].as_str().unwrap().to_owned();
    let tok = c["jobs"][0]["lease_token"].as_str().unwrap().to_owned();
    let nack = json!({"lease_token": tok, "error": "boom"});
    let path = format!("/api/v1/jobs/{jid}/nack");
    let (st, v) = s.send(Method::POST, &path, a, Some(nack)).await;
    assert_eq!(
        (st, v["state"].as_str().unwrap()),
        (StatusCode::OK, "FAILED")
    );
    let (_, dlq) = s.get("/api/v1/queues/late/dlq", &admin).await;
    assert_eq!(dlq["items"][0]["last_error"], "boom");
    let path = "/api/v1/queues/late/dlq/redrive";
    let (_, v) = s.send(Method::POST, path, a, Some(json!({}))).await;
    assert_eq!(v["redriven"], 1);
    let (_, qs) = s.get("/api/v1/queues", &admin).await;
    let late = qs["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["queue"] == "late")
        .unwrap()
        .clone();
    assert_eq!(late["pending"], 1);
    let path = format!("/api/v1/jobs/{jid}/cancel");
    s.expect(Method::POST, &path, a, None, 204).await;
    s.expect(Method::GET, "/api/v1/jobs/not-an-id", u, None, 400)
        .await;
    let s = std::sync::Arc::into_inner(s).unwrap();
    s.stop().await;
}

#[tokio::test]
async fn admin_routes_and_their_permissions() {
    let (_dir, s) = start_temp(1000).await;
    let user = login(&s, "dave").await;
    let admin = admin_token(&s).await;
    let (u, a) = (Some(user.as_str()), Some(admin.as_str()));
    for (m, p) in [
        (Method::GET, "/admin/stats"),
        (Method::POST, "/admin/snapshot"),
        (Method::GET, "/admin/users"),
        (Method::GET, "/admin/roles"),
        (Method::GET, "/admin/rate-limits"),
    ] {
        s.expect(m, p, u, None, 403).await;
    }
    let stats = s.expect(Method::GET, "/admin/stats", a, None, 200).await;
    assert!(stats["key_count"].as_u64().unwrap() > 0);
    let v = s
        .expect(Method::POST, "/admin/snapshot", a, None, 200)
        .await;
    assert!(v["seq"].as_u64().is_some());
    s.expect(Method::POST, "/admin/aof/rewrite", a, None, 200)
        .await;
    let id = user_id(&s, &admin, "dave").await;
    // A custom role, assigned: the next request sees it.
    let claim = json!({"queue": "q", "worker_id": "w", "lease_seconds": 5});
    let (jobs, worker) = ("/api/v1/jobs/claim", "/admin/roles/worker");
    let roles = format!("/admin/users/{id}/roles");
    let role = format!("{roles}/worker");
    let can_work = json!({"permissions": ["jobs:work"]});
    let unknown = json!({"permissions": ["nope"]});
    let as_worker = json!({"role": "worker"});
    s.expect_each([
        (Method::PUT, worker, a, Some(can_work), 204),
        (Method::PUT, "/admin/roles/bad", a, Some(unknown), 400),
        (Method::POST, jobs, u, Some(claim.clone()), 403),
        (Method::POST, &roles, a, Some(as_worker), 204),
        (Method::POST, jobs, u, Some(claim.clone()), 200),
        (Method::DELETE, &role, a, None, 204),
        (Method::POST, jobs, u, Some(claim), 403),
        (Method::DELETE, worker, a, None, 204),
        (Method::DELETE, worker, a, None, 404),
    ])
    .await;
    // Disable: the user's token stops working at once, for good: an enable lets the user
    // log in again but does not bring the old token back.
    let (disable, enable) = (
        format!("/admin/users/{id}/disable"),
        format!("/admin/users/{id}/enable"),
    );
    s.expect_each([
        (Method::POST, disable.as_str(), a, None, 204),
        (Method::GET, "/api/v1/auth/me", u, None, 403),
        (Method::POST, &enable, a, None, 204),
        (Method::GET, "/api/v1/auth/me", u, None, 401),
    ])
    .await;
    let user = login(&s, "dave").await;
    s.expect(Method::GET, "/api/v1/auth/me", Some(&user), None, 200)
        .await;
    let path = format!("/admin/users/{id}/explode");
    s.expect(Method::POST, &path, a, None, 404).await;
    // Rate limits change at run time.
    let (_, rl) = s.get("/admin/rate-limits", &admin).await;
    assert_eq!(rl["default"]["capacity"], 1000);
    let body = json!({"default": {"capacity": 2, "refill_tokens": 1, "refill_period_ms": 60000}});
    s.expect(Method::PUT, "/admin/rate-limits", a, Some(body), 204)
        .await;
    let mut codes = Vec::new();
    for _ in 0..4 {
        codes.push(s.get("/api/v1/auth/me", &user).await.0);
    }
    assert!(codes.contains(&StatusCode::TOO_MANY_REQUESTS), "{codes:?}");
    s.stop().await;
}

/// Issue 17, point 2: the job tests' accounts: the admin's token, alice's user id (alice
/// and bob are plain users), wendy also holding the default `worker` role, evan a custom
/// role narrowed to `jobs:work:emails`.
struct JobUsers {
    admin: String,
    alice_id: String,
    wendy: String,
    evan: String,
}

async fn job_users(s: &Server) -> JobUsers {
    let admin = admin_token(s).await;
    let a = Some(admin.as_str());
    let user_id = |token: String| async move {
        let (_, me) = s.get("/api/v1/auth/me", &token).await;
        me["id"].as_str().unwrap().to_owned()
    };
    let alice = login(s, "alice").await;
    let (wendy, evan) = (login(s, "wendy").await, login(s, "evan").await);
    let role = Some(json!({"permissions": ["jobs:work:emails"]}));
    let path = "/admin/roles/emails-worker";
    s.expect(Method::PUT, path, a, role, 204).await;
    for (token, role) in [(&wendy, "worker"), (&evan, "emails-worker")] {
        let path = format!("/admin/users/{}/roles", user_id(token.clone()).await);
        let (st, v) = s
            .send(Method::POST, &path, a, Some(json!({"role": role})))
            .await;
        assert_eq!(st, StatusCode::NO_CONTENT, "{role}: {v}");
    }
    JobUsers {
        alice_id: user_id(alice).await,
        admin,
        wendy,
        evan,
    }
}

/// Issue 17, point 2, first bullet ("each job records its owner"): today bob reads alice's
/// job by id (200 with her payload), lists and cancels it, and a plain user acks. Now a
/// stranger's job is 404 everywhere, exactly like a missing one; claim/ack/nack/heartbeat
/// need `jobs:work` (the default `worker` role) or `jobs:work:{queue}`: 403 without any, 404
/// for a job in a queue one may not work; a job without an owner is `jobs:admin`'s only.
#[tokio::test]
async fn a_strangers_job_is_404_and_working_needs_jobs_work() {
    let (_dir, s) = start_temp(10_000).await;
    let secret = json!({"to": "alice@example.com", "secret": 42});
    let alice = login(&s, "alice").await;
    let bob = login(&s, "bob").await;
    let (st, job) = enqueue(&s, &alice, json!({"queue": "emails", "payload": secret})).await;
    assert_eq!(st, StatusCode::CREATED, "{job}");
    let id = job["id"].as_str().unwrap().to_owned();
    let job_path = format!("/api/v1/jobs/{id}");
    // Reading: bob gets the answer of a job that does not exist.
    let (st, v) = s.get(&job_path, &bob).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "bob reads alice's job: {v}");
    assert!(!v.to_string().contains("alice@example.com"));
    let missing = format!("{}0", &id[..31]);
    let (st, w) = s.get(&format!("/api/v1/jobs/{missing}"), &bob).await;
    assert_eq!((st, &v["type"]), (StatusCode::NOT_FOUND, &w["type"]));
    let u = job_users(&s).await;
    assert_eq!(job["owner"], u.alice_id.as_str());
    let (st, v) = s.get(&job_path, &alice).await;
    assert_eq!((st, &v["payload"]), (StatusCode::OK, &secret));
    s.expect(Method::GET, &job_path, Some(&u.admin), None, 200)
        .await;

    // Listing: one's own jobs; everyone's with jobs:admin.
    let (st, bobs) = enqueue(&s, &bob, json!({"queue": "emails"})).await;
    assert_eq!(st, StatusCode::CREATED);
    let bobs = bobs["id"].as_str().unwrap().to_owned();
    let list = |token: String| {
        let s = &s;
        async move {
            let (st, v) = s.get("/api/v1/jobs?queue=emails", &token).await;
            assert_eq!(st, StatusCode::OK, "{v}");
            v["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|j| j["id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(list(bob.clone()).await, vec![bobs.clone()]);
    assert_eq!(list(alice.clone()).await, vec![id.clone()]);
    assert_eq!(list(u.admin.clone()).await, vec![id.clone(), bobs.clone()]);

    // Cancel: bob cannot touch alice's job (404; it stays pending); he can his own.
    let cancel = format!("{job_path}/cancel");
    s.expect(Method::POST, &cancel, Some(&bob), None, 404).await;
    let (_, v) = s.get(&job_path, &alice).await;
    assert_eq!(v["state"], "PENDING");
    let cancel = format!("/api/v1/jobs/{bobs}/cancel");
    s.expect(Method::POST, &cancel, Some(&bob), None, 204).await;

    // Working: a user may not claim (403); the `worker` role may, in any queue; a
    // `jobs:work:emails` holder in `emails` only (403 elsewhere).
    enqueue(&s, &alice, json!({"queue": "sms"})).await;
    let work = |queue: &str| json!({"queue": queue, "worker_id": "w", "lease_seconds": 60});
    assert_eq!(
        claim(&s, &alice, work("emails")).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        claim(&s, &u.evan, work("sms")).await.0,
        StatusCode::FORBIDDEN
    );
    let (st, c) = claim(&s, &u.wendy, work("sms")).await;
    assert_eq!(st, StatusCode::OK, "{c}");
    let sms_id = c["jobs"][0]["id"].as_str().unwrap().to_owned();
    let sms_token = c["jobs"][0]["lease_token"].as_str().unwrap().to_owned();
    let sms_lease = json!({"lease_token": sms_token});
    let (st, c) = claim(&s, &u.evan, work("emails")).await;
    assert_eq!((st, &c["jobs"][0]["id"]), (StatusCode::OK, &json!(id)));
    let token = c["jobs"][0]["lease_token"].as_str().unwrap().to_owned();
    let lease = json!({"lease_token": token});
    // Ack/nack/heartbeat: no jobs:work at all is 403; a job in a queue one may not work
    // is 404 (evan and the sms job), whatever the token.
    let ack = format!("{job_path}/ack");
    for (who, t) in [("alice", &alice), ("bob", &bob)] {
        let (st, v) = s
            .send(Method::POST, &ack, Some(t), Some(lease.clone()))
            .await;
        assert_eq!(st, StatusCode::FORBIDDEN, "{who}: {v}");
    }
    for action in ["ack", "nack", "heartbeat"] {
        let path = format!("/api/v1/jobs/{sms_id}/{action}");
        let body = Some(sms_lease.clone());
        let (st, v) = s.send(Method::POST, &path, Some(&u.evan), body).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "evan {action}s an sms job: {v}");
    }
    let sms_ack = format!("/api/v1/jobs/{sms_id}/ack");
    let beat = format!("{job_path}/heartbeat");
    for (path, t, body) in [
        (&sms_ack, &u.wendy, &sms_lease),
        (&beat, &u.evan, &lease),
        (&ack, &u.evan, &lease),
    ] {
        let (st, v) = s
            .send(Method::POST, path, Some(t), Some(body.clone()))
            .await;
        assert!(st.is_success(), "{path}: {st} {v}");
    }
    // Working a job does not make it one's own (404), and queue administration stays
    // jobs:admin.
    s.expect(Method::GET, &job_path, Some(&u.evan), None, 404)
        .await;
    for path in ["/api/v1/queues", "/api/v1/queues/emails/dlq"] {
        s.expect(Method::GET, path, Some(&u.wendy), None, 403).await;
    }

    // A job without an owner (the embedded API) is jobs:admin's only.
    let anon = s
        .state
        .queue
        .enqueue(helios_queue::EnqueueRequest::new("emails", json!(1)))
        .unwrap()
        .id;
    let anon_path = format!("/api/v1/jobs/{anon}");
    s.expect(Method::GET, &anon_path, Some(&alice), None, 404)
        .await;
    let (st, v) = s.get(&anon_path, &u.admin).await;
    assert_eq!((st, &v["owner"]), (StatusCode::OK, &Value::Null));
    s.stop().await;
}

/// Issue 17, point 2, second bullet ("dedup ids are scoped per (owner, queue)"): today bob
/// enqueueing with alice's dedup id gets her job back (200, her id and payload), and so
/// keeps her from enqueueing. Now bob gets a job of his own, in her queue or another, and
/// alice's next enqueue with the id still finds her own job.
#[tokio::test]
async fn dedup_ids_are_scoped_per_owner_and_queue() {
    let (_dir, s) = start_temp(10_000).await;
    let alice = login(&s, "alice").await;
    let bob = login(&s, "bob").await;
    let body =
        |queue: &str, who: &str| json!({"queue": queue, "payload": {"who": who}, "dedup_id": "d1"});
    let (st, first) = enqueue(&s, &alice, body("emails", "alice")).await;
    assert_eq!(st, StatusCode::CREATED, "{first}");
    let mut bobs = Vec::new();
    for queue in ["emails", "sms"] {
        let (st, v) = enqueue(&s, &bob, body(queue, "bob")).await;
        assert_eq!(st, StatusCode::CREATED, "bob's own job in {queue}: {v}");
        assert_ne!(v["id"], first["id"]);
        assert_eq!(v["payload"], json!({"who": "bob"}));
        bobs.push(v["id"].clone());
    }
    // Each owner's second enqueue in a queue finds their own first job.
    let (st, v) = enqueue(&s, &alice, body("emails", "alice")).await;
    assert_eq!((st, &v["id"]), (StatusCode::OK, &first["id"]));
    let (st, v) = enqueue(&s, &bob, body("emails", "bob")).await;
    assert_eq!((st, &v["id"]), (StatusCode::OK, &bobs[0]));
    s.stop().await;
}

/// Issue 17, point 2, third bullet ("job ids are not guessable"): today ids are a time and
/// a counter (two jobs in a row differ by one). Now they are UUIDv7 (version 7, variant
/// 10), time-ordered, with 64 random bits, written as 32 lowercase hex digits, the only
/// form a path accepts (the hyphenated UUID is a 400).
#[tokio::test]
async fn job_ids_are_uuid_v7_in_32_hex() {
    let (_dir, s) = start_temp(10_000).await;
    let alice = login(&s, "alice").await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        let (st, v) = enqueue(&s, &alice, json!({"queue": "emails"})).await;
        assert_eq!(st, StatusCode::CREATED);
        ids.push(v["id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        assert_eq!(id.len(), 32);
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_eq!(&id[12..13], "7", "UUID version 7: {id}");
        assert!(
            matches!(&id[16..17], "8" | "9" | "a" | "b"),
            "variant: {id}"
        );
    }
    for w in ids.windows(2) {
        assert!(w[0] < w[1], "time-ordered: {w:?}");
        let low = |id: &str| u64::from_str_radix(&id[16..], 16).unwrap();
        assert!(low(&w[0]).abs_diff(low(&w[1])) > 1 << 20, "random: {w:?}");
    }
    let id = &ids[0];
    let (st, _) = s.get(&format!("/api/v1/jobs/{id}"), &alice).await;
    assert_eq!(st, StatusCode::OK);
    let hyphenated = format!(
        "{}-{}-{}-{}-{}",
        &id[..8],
        &id[8..12],
        &id[12..16],
        &id[16..20],
        &id[20..]
    );
    for bad in [hyphenated, id.to_ascii_uppercase()] {
        let (st, v) = s.get(&format!("/api/v1/jobs/{bad}"), &alice).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}: {v}");
    }
    s.stop().await;
}

/// A data directory written before jobs had owners keeps working through the gateway: a
/// job record of the previous layout (an id of ms + sequence, no owner) is served by its
/// 32-hex id to `jobs:admin` (owner null), is a 404 to a user, lists before newer jobs, and
/// is worked and cancelled as before.
#[tokio::test]
async fn jobs_of_the_previous_layout_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let old = "0000018f6e2b6700000000000000002a";
    let old2 = "0000018f6e2b6700000000000000002b";
    {
        let atlas =
            helios_atlas::Atlas::open(dir.path(), helios_atlas::Options::default()).unwrap();
        for id in [old, old2] {
            // The exact bytes the previous `Job::encode_json` wrote.
            let record = format!(
                r#"{{"id":"{id}","queue":"mail","payload":{{"n":1}},"state":"PENDING","priority":0,"run_at_ms":1715000000000,"attempts":0,"attempts_max":3,"backoff":{{"kind":"exponential","base_ms":1000,"max_ms":300000}},"token_last":0,"created_at_ms":1715000000000,"updated_at_ms":1715000000000}}"#
            );
            atlas.set(format!("job:{id}"), record).unwrap();
        }
        atlas.close().unwrap();
    }
    let s = start(config(dir.path(), 1000)).await;
    let admin = admin_token(&s).await;
    let user = login(&s, "olga").await;
    let path = format!("/api/v1/jobs/{old}");
    let v = s.expect(Method::GET, &path, Some(&admin), None, 200).await;
    assert_eq!((&v["id"], &v["owner"]), (&json!(old), &Value::Null));
    s.expect(Method::GET, &path, Some(&user), None, 404).await;
    let (_, new) = enqueue(&s, &user, json!({"queue": "mail"})).await;
    let new_id = new["id"].as_str().unwrap().to_owned();
    assert!(new_id.as_str() > old2, "{new_id} sorts after the old ids");
    let (_, page) = s.get("/api/v1/jobs?queue=mail", &admin).await;
    let ids: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![old, old2, new_id.as_str()]);
    let body = json!({"queue": "mail", "worker_id": "w", "lease_seconds": 30});
    let (st, c) = claim(&s, &admin, body).await;
    assert_eq!((st, &c["jobs"][0]["id"]), (StatusCode::OK, &json!(old)));
    let cancel = format!("/api/v1/jobs/{old2}/cancel");
    s.expect(Method::POST, &cancel, Some(&admin), None, 204)
        .await;
    s.stop().await;
}

/// Issue 19: the gateway takes its clock (and randomness) from the context, so rate limits
/// and token lifetimes run on a `ManualClock`: exact, with no waiting on the wall clock.
#[tokio::test]
async fn rate_limits_and_tokens_run_on_the_context_clock() {
    let clock = std::sync::Arc::new(helios_core::ManualClock::new(1_800_000_000_000));
    let ctx = helios_bins::app::Context {
        clock: clock.clone(),
        random: std::sync::Arc::new(helios_auth::SeededRandom::new(3)),
    };
    let disk = helios_atlas::storage::MemStorage::new();
    let mut cfg = config(std::path::Path::new("/gw"), 3);
    cfg.auth.access_ttl_s = 60;
    cfg.auth.jwt_secret = "a test secret of at least thirty-two bytes".into();
    let atlas = helios_atlas::Atlas::open(
        "/gw",
        helios_atlas::Options {
            storage: std::sync::Arc::new(disk),
            clock: clock.clone(),
            maintenance_interval_ms: None,
            ..helios_atlas::Options::default()
        },
    )
    .unwrap();
    let s = common::start_over(cfg, atlas, ctx).await;
    let token = login(&s, "clara").await;
    let get = || s.get("/api/v1/kv/none", &token);
    // Capacity 3, refilled at 1 a second of the context's clock: exactly 3, then 429.
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(get().await.0);
    }
    let allowed = statuses
        .iter()
        .filter(|s| **s == StatusCode::NOT_FOUND)
        .count();
    assert_eq!(allowed, 3, "{statuses:?}");
    clock.advance_ms(1_000);
    assert_eq!(get().await.0, StatusCode::NOT_FOUND, "one token refilled");
    assert_eq!(get().await.0, StatusCode::TOO_MANY_REQUESTS);
    // The access token lives 60 s (plus the 30 s leeway) of the same clock.
    clock.advance_ms(95_000);
    let (st, v) = get().await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{v}");
    assert!(
        v["type"].as_str().unwrap_or("").ends_with("token-expired"),
        "{v}"
    );
    s.stop().await;
}
