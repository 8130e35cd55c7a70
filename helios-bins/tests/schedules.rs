//! Cron schedules over HTTP (issue 21), on 127.0.0.1:0: a schedule that fires every second
//! produces jobs (owned by its creator, one per fire time, a long-polling claim woken by
//! them), a stranger neither sees nor deletes it, `jobs:admin` sees everyone's, bad
//! expressions are refused naming the field, and a deleted schedule fires no more.
//!
//! The gateway's queue runs on its own monotonic clock (not the test's), so this test uses
//! real seconds: an every-second expression and waits of a few seconds.

mod common;

use common::{admin_token, claim, login, problem_type, user_id};
use http::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

async fn jobs_of(s: &common::Api, token: &str, queue: &str) -> Vec<Value> {
    let (st, v) = s
        .get(&format!("/api/v1/jobs?queue={queue}&limit=1000"), token)
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v["items"].as_array().unwrap().clone()
}

#[tokio::test]
async fn a_schedule_enqueues_for_its_owner_and_stops_when_deleted() {
    let (_dir, s) = common::start_temp(100_000).await;
    let admin = admin_token(&s).await;
    let alice = login(&s, "alice").await;
    let bob = login(&s, "bob").await;
    let alice_id = user_id(&s, &admin, "alice").await;

    // Bad requests name the field.
    for (body, field) in [
        (json!({"queue": "ticks", "cron": "61 * * * *"}), "cron"),
        (json!({"queue": "ticks", "cron": "0 0 30 2 *"}), "cron"),
        (json!({"queue": "a b", "cron": "* * * * *"}), "queue"),
        (
            json!({"queue": "ticks", "cron": "* * * * *", "max_attempts": 0}),
            "max_attempts",
        ),
    ] {
        let v = s
            .expect(
                Method::POST,
                "/api/v1/schedules",
                Some(&alice),
                Some(body),
                400,
            )
            .await;
        assert_eq!(problem_type(&v), "invalid-field");
        assert!(v["detail"].as_str().unwrap().contains(field), "{v}");
    }
    s.expect(
        Method::POST,
        "/api/v1/schedules",
        Some(&alice),
        Some(json!({"queue": "ticks", "cron": "* * * * *", "every": 1})),
        400,
    )
    .await;

    let created = s
        .expect(
            Method::POST,
            "/api/v1/schedules",
            Some(&alice),
            Some(json!({"queue": "ticks", "cron": "* * * * * *", "payload": {"n": 1}, "priority": 3, "max_attempts": 2})),
            201,
        )
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 32);
    assert_eq!(created["owner"], alice_id.as_str());
    assert_eq!(created["cron"], "* * * * * *");
    assert_eq!(created["runs"], 0);
    assert_eq!(created["last_run_at"], Value::Null);
    assert_eq!(created["max_attempts"], 2);
    let next = created["next_run_at"].as_u64().unwrap();
    assert_eq!(next % 1000, 0, "fire times are whole seconds");
    assert!(next > created["created_at"].as_u64().unwrap());
    let path = format!("/api/v1/schedules/{id}");

    // A stranger: 404 on it, an empty listing; the admin sees it.
    s.expect(Method::GET, &path, Some(&bob), None, 404).await;
    s.expect(Method::DELETE, &path, Some(&bob), None, 404).await;
    let v = s
        .expect(Method::GET, "/api/v1/schedules", Some(&bob), None, 200)
        .await;
    assert_eq!(v["items"], json!([]));
    let v = s
        .expect(Method::GET, "/api/v1/schedules", Some(&admin), None, 200)
        .await;
    assert!(
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["id"] == id.as_str())
    );
    let v = s
        .expect(Method::GET, "/api/v1/schedules", Some(&alice), None, 200)
        .await;
    assert_eq!(v["items"].as_array().unwrap().len(), 1);
    assert_eq!(v["next_cursor"], Value::Null);
    s.expect(
        Method::GET,
        "/api/v1/schedules/not-an-id",
        Some(&alice),
        None,
        400,
    )
    .await;

    // A long-polling claim on the queue is woken by the schedule's first job.
    let worker_role = json!({"role": "worker"});
    s.expect(
        Method::POST,
        &format!("/admin/users/{alice_id}/roles"),
        Some(&admin),
        Some(worker_role),
        204,
    )
    .await;
    let started = Instant::now();
    let body = json!({"queue": "ticks", "worker_id": "w1", "lease_seconds": 30, "wait_seconds": 5});
    let (st, claimed) = claim(&s, &alice, body).await;
    assert_eq!(st, StatusCode::OK, "{claimed}");
    let jobs = claimed["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 1, "{claimed}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "woken by the fire"
    );
    assert_eq!(jobs[0]["payload"], json!({"n": 1}));

    // More fire times come, one job each, owned by alice.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut jobs = jobs_of(&s, &alice, "ticks").await;
    while jobs.len() < 2 {
        assert!(Instant::now() < deadline, "the schedule made no second job");
        tokio::time::sleep(Duration::from_millis(200)).await;
        jobs = jobs_of(&s, &alice, "ticks").await;
    }
    for j in &jobs {
        assert_eq!(j["owner"], alice_id.as_str());
        assert_eq!(j["priority"], 3);
        assert_eq!(j["max_attempts"], 2);
        assert_eq!(j["run_at"].as_u64().unwrap() % 1000, 0);
    }
    let mut times: Vec<u64> = jobs.iter().map(|j| j["run_at"].as_u64().unwrap()).collect();
    times.sort_unstable();
    times.dedup();
    assert_eq!(times.len(), jobs.len(), "one job per fire time");
    assert!(
        jobs_of(&s, &bob, "ticks").await.is_empty(),
        "bob sees none of them"
    );
    let v = s.expect(Method::GET, &path, Some(&alice), None, 200).await;
    assert!(v["runs"].as_u64().unwrap() >= 2, "{v}");
    let last = v["last_run_at"].as_u64().unwrap();
    assert!(v["next_run_at"].as_u64().unwrap() > last);
    assert!(v["last_job_id"].is_string());

    // Deleted: it fires no more; its jobs stay.
    s.expect(Method::DELETE, &path, Some(&alice), None, 204)
        .await;
    s.expect(Method::GET, &path, Some(&alice), None, 404).await;
    s.expect(Method::DELETE, &path, Some(&admin), None, 404)
        .await;
    // Pending plus the claimed one.
    let count = |pending: usize| pending + 1;
    let before = count(jobs_of(&s, &alice, "ticks").await.len());
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let after = count(jobs_of(&s, &alice, "ticks").await.len());
    assert_eq!(before, after, "a deleted schedule made a job");
    s.stop().await;
}

/// The admin deletes anyone's schedule; a user without `jobs:enqueue` or `jobs:admin`
/// (the `readonly` role) cannot list, read or create.
#[tokio::test]
async fn admin_reaches_every_schedule_and_readonly_none() {
    let (_dir, s) = common::start_temp(100_000).await;
    let admin = admin_token(&s).await;
    let alice = login(&s, "alice").await;
    let v = s
        .expect(
            Method::POST,
            "/api/v1/schedules",
            Some(&alice),
            Some(json!({"queue": "q", "cron": "@daily"})),
            201,
        )
        .await;
    let path = format!("/api/v1/schedules/{}", v["id"].as_str().unwrap());
    let _ = login(&s, "rita").await;
    let rita_id = user_id(&s, &admin, "rita").await;
    // rita: only `readonly`.
    s.expect(
        Method::DELETE,
        &format!("/admin/users/{rita_id}/roles/user"),
        Some(&admin),
        None,
        204,
    )
    .await;
    s.expect(
        Method::POST,
        &format!("/admin/users/{rita_id}/roles"),
        Some(&admin),
        Some(json!({"role": "readonly"})),
        204,
    )
    .await;
    let rita = login(&s, "rita").await;
    s.expect(Method::GET, "/api/v1/schedules", Some(&rita), None, 403)
        .await;
    s.expect(Method::GET, &path, Some(&rita), None, 403).await;
    s.expect(
        Method::POST,
        "/api/v1/schedules",
        Some(&rita),
        Some(json!({"queue": "q", "cron": "@daily"})),
        403,
    )
    .await;
    s.expect(Method::GET, &path, Some(&admin), None, 200).await;
    s.expect(Method::DELETE, &path, Some(&admin), None, 204)
        .await;
    s.expect(Method::GET, &path, Some(&alice), None, 404).await;
    s.stop().await;
}

/// Authority is judged when a run is due, not only at creation: once the owner is
/// disabled (or loses `jobs:enqueue`), the schedule's fire times are skipped and counted
/// as `denied`, and no job is made in their name; enabled again, it fires again.
#[tokio::test]
async fn a_disabled_owner_s_schedule_makes_no_jobs() {
    let (_dir, s) = common::start_temp(100_000).await;
    let admin = admin_token(&s).await;
    let alice = login(&s, "alice").await;
    let alice_id = user_id(&s, &admin, "alice").await;
    let v = s
        .expect(
            Method::POST,
            "/api/v1/schedules",
            Some(&alice),
            Some(json!({"queue": "ticks", "cron": "* * * * * *"})),
            201,
        )
        .await;
    let path = format!("/api/v1/schedules/{}", v["id"].as_str().unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    while jobs_of(&s, &admin, "ticks").await.is_empty() {
        assert!(Instant::now() < deadline, "the schedule made no job");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    s.expect(
        Method::POST,
        &format!("/admin/users/{alice_id}/disable"),
        Some(&admin),
        None,
        204,
    )
    .await;
    // A tick in flight when the account was disabled may still fire once.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let before = jobs_of(&s, &admin, "ticks").await.len();
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(
        jobs_of(&s, &admin, "ticks").await.len(),
        before,
        "a disabled owner's schedule made a job"
    );
    let v = s.expect(Method::GET, &path, Some(&admin), None, 200).await;
    assert!(v["denied"].as_u64().unwrap() >= 2, "{v}");
    let runs = v["runs"].as_u64().unwrap();
    assert_eq!(runs as usize, before, "{v}");

    // Enabled again: it fires again.
    s.expect(
        Method::POST,
        &format!("/admin/users/{alice_id}/enable"),
        Some(&admin),
        None,
        204,
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while jobs_of(&s, &admin, "ticks").await.len() == before {
        assert!(Instant::now() < deadline, "no job after enabling the owner");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    s.stop().await;
}
