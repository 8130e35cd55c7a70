//! The gateway's side of the worker runtime (issue 21), over HTTP on 127.0.0.1:0: batches
//! of acks, nacks and heartbeats (`POST /api/v1/jobs/batch`) answered per item with the
//! single actions' statuses and access rules, permanent nacks, what a claim tells a
//! worker, and the worker registry (`/api/v1/workers`): owners, strangers, permissions and
//! records that vanish after their TTL.

mod common;

use common::{Api, admin_token, claim, enqueue, login, problem_type, user_id};
use http::{Method, StatusCode};
use serde_json::{Value, json};

/// Gives `user` the `role` (as `admin`), creating it with `permissions` first if given.
async fn grant(s: &Api, admin: &str, user: &str, role: &str, permissions: Option<&[&str]>) {
    if let Some(p) = permissions {
        let path = format!("/admin/roles/{role}");
        let (st, v) = s
            .send(
                Method::PUT,
                &path,
                Some(admin),
                Some(json!({"permissions": p})),
            )
            .await;
        assert!(st.is_success(), "role {role}: {v}");
    }
    let id = user_id(s, admin, user).await;
    let path = format!("/admin/users/{id}/roles");
    s.expect(
        Method::POST,
        &path,
        Some(admin),
        Some(json!({"role": role})),
        204,
    )
    .await;
}

async fn batch(s: &Api, token: &str, items: Value) -> (StatusCode, Value) {
    s.send(
        Method::POST,
        "/api/v1/jobs/batch",
        Some(token),
        Some(json!({"items": items})),
    )
    .await
}

async fn job(s: &Api, token: &str, id: &str) -> Value {
    s.expect(
        Method::GET,
        &format!("/api/v1/jobs/{id}"),
        Some(token),
        None,
        200,
    )
    .await
}

#[tokio::test]
async fn a_batch_answers_each_item_and_settles_them() {
    let (_dir, s) = common::start_temp_with(100_000, common::ADMIN_PW, |c| {
        c.http.body_size_max = 1024 * 1024;
    })
    .await;
    let admin = admin_token(&s).await;
    // alice enqueues and works every queue; bob works `other` only; carol works nothing.
    let alice = login(&s, "alice").await;
    let bob = login(&s, "bob").await;
    let carol = login(&s, "carol").await;
    grant(&s, &admin, "alice", "worker", None).await;
    grant(
        &s,
        &admin,
        "bob",
        "other-worker",
        Some(&["jobs:work:other"]),
    )
    .await;
    let mut ids = Vec::new();
    for n in 0..5 {
        let (st, v) = enqueue(
            &s,
            &alice,
            json!({"queue": "emails", "payload": n, "max_attempts": 3}),
        )
        .await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
        ids.push(v["id"].as_str().unwrap().to_owned());
    }
    let (st, v) = enqueue(&s, &alice, json!({"queue": "other", "payload": 9})).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let other = v["id"].as_str().unwrap().to_owned();
    let body = json!({"queue": "emails", "worker_id": "w1", "lease_seconds": 30, "max_jobs": 5});
    let (st, claimed) = claim(&s, &alice, body).await;
    assert_eq!(st, StatusCode::OK, "{claimed}");
    let jobs = claimed["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 5);
    // A claim tells the worker the queue and the attempts allowed.
    for j in jobs {
        assert_eq!(j["queue"], "emails");
        assert_eq!(j["max_attempts"], 3);
        assert_eq!(j["attempt"], 1);
    }
    let token = |i: usize| jobs[i]["lease_token"].as_str().unwrap().to_owned();
    let missing = "00000000000000000000000000000001";
    let items = json!([
        {"id": ids[0], "lease_token": token(0), "action": "ack", "result": {"sent": true}},
        {"id": ids[1], "lease_token": token(1), "action": "nack", "error": "503", "retry_in_seconds": 0},
        {"id": ids[2], "lease_token": token(2), "action": "heartbeat", "lease_seconds": 120},
        {"id": ids[3], "lease_token": token(3), "action": "nack", "error": "400 bad address", "permanent": true},
        {"id": ids[4], "lease_token": "1", "action": "ack"},
        {"id": missing, "lease_token": "1", "action": "ack"},
        {"id": ids[0], "lease_token": token(0), "action": "ack"},
        {"id": "not-an-id", "lease_token": "1", "action": "ack"},
        {"id": ids[4], "lease_token": token(4), "action": "ack", "error": "nack only"},
        {"id": other, "lease_token": "1", "action": "ack"},
    ]);
    let (st, v) = batch(&s, &alice, items).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let out = v["items"].as_array().unwrap();
    let statuses: Vec<u64> = out.iter().map(|i| i["status"].as_u64().unwrap()).collect();
    assert_eq!(
        statuses,
        [204, 200, 200, 200, 409, 404, 400, 400, 400, 409],
        "{v}"
    );
    // Answers in request order, with their ids as sent.
    assert_eq!(out[7]["id"], "not-an-id");
    assert_eq!(out[5]["id"], missing);
    assert_eq!(out[1]["state"], "PENDING");
    assert_eq!(out[3]["state"], "FAILED");
    assert!(out[2]["lease_expires_at"].as_u64().unwrap() > 0);
    assert!(out[0].get("type").is_none() && out[0].get("detail").is_none());
    assert_eq!(problem_type(&out[4]), "stale-lease");
    assert_eq!(problem_type(&out[5]), "not-found");
    assert!(out[6]["detail"].as_str().unwrap().contains("appears twice"));
    assert_eq!(problem_type(&out[9]), "wrong-state", "other is pending");
    // The jobs as settled.
    let j = job(&s, &alice, &ids[0]).await;
    assert_eq!(
        (j["state"].as_str(), &j["result"]),
        (Some("DONE"), &json!({"sent": true}))
    );
    let j = job(&s, &alice, &ids[1]).await;
    assert_eq!(
        (j["state"].as_str(), j["attempts"].as_u64()),
        (Some("PENDING"), Some(1))
    );
    assert_eq!(job(&s, &alice, &ids[2]).await["state"], "IN_PROGRESS");
    // The permanent nack dead-lettered on attempt 1 of 3.
    let j = job(&s, &alice, &ids[3]).await;
    assert_eq!(j["state"], "FAILED");
    assert_eq!(j["attempts"], 1);
    assert_eq!(j["last_error"], "400 bad address");
    let dlq = s
        .expect(
            Method::GET,
            "/api/v1/queues/emails/dlq",
            Some(&admin),
            None,
            200,
        )
        .await;
    assert_eq!(dlq["items"][0]["id"], ids[3].as_str());
    assert_eq!(job(&s, &alice, &ids[4]).await["state"], "IN_PROGRESS");
    // The nacked job is ready again at once.
    let body = json!({"queue": "emails", "worker_id": "w1", "lease_seconds": 30});
    let (_, again) = claim(&s, &alice, body).await;
    assert_eq!(again["jobs"][0]["id"], ids[1].as_str());
    assert_eq!(again["jobs"][0]["attempt"], 2);

    // bob works `other` only: an `emails` job is as missing as an absent one.
    let body = json!({"queue": "other", "worker_id": "w2", "lease_seconds": 30});
    let (st, v) = claim(&s, &bob, body).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let other_token = v["jobs"][0]["lease_token"].as_str().unwrap().to_owned();
    let items = json!([
        {"id": ids[4], "lease_token": token(4), "action": "ack"},
        {"id": other, "lease_token": other_token, "action": "ack"},
    ]);
    let (st, v) = batch(&s, &bob, items).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["items"][0]["status"], 404, "{v}");
    assert_eq!(v["items"][1]["status"], 204, "{v}");
    assert_eq!(job(&s, &alice, &ids[4]).await["state"], "IN_PROGRESS");
    // No `jobs:work` at all: the whole request is refused.
    let (st, v) = batch(&s, &carol, json!([])).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
    // An empty list is an empty answer; over 1000 items, unknown fields: 400.
    let (st, v) = batch(&s, &alice, json!([])).await;
    assert_eq!((st, v), (StatusCode::OK, json!({"items": []})));
    let many: Vec<Value> = (0..1001)
        .map(|_| json!({"id": missing, "lease_token": "1", "action": "ack"}))
        .collect();
    let (st, v) = batch(&s, &alice, Value::Array(many)).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("items"), "{v}");
    let (st, v) = s
        .send(
            Method::POST,
            "/api/v1/jobs/batch",
            Some(&alice),
            Some(json!({"items": [], "extra": 1})),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    let item = json!([{"id": missing, "lease_token": "1", "action": "ack", "bogus": 1}]);
    let (st, v) = batch(&s, &alice, item).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    // The single nack takes `permanent` too.
    let (_, v) = enqueue(&s, &alice, json!({"queue": "emails", "payload": 0})).await;
    let id = v["id"].as_str().unwrap().to_owned();
    let body = json!({"queue": "emails", "worker_id": "w1", "lease_seconds": 30});
    let (_, v) = claim(&s, &alice, body).await;
    let token = v["jobs"][0]["lease_token"].as_str().unwrap().to_owned();
    assert_eq!(v["jobs"][0]["id"], id.as_str());
    let body = json!({"lease_token": token, "error": "invalid", "permanent": true});
    let v = s
        .expect(
            Method::POST,
            &format!("/api/v1/jobs/{id}/nack"),
            Some(&alice),
            Some(body),
            200,
        )
        .await;
    assert_eq!(v["state"], "FAILED");
    s.stop().await;
}

fn registration(ttl_seconds: u64) -> Value {
    json!({
        "version": "0.1.0",
        "queues": ["emails"],
        "in_flight": 2,
        "started_at": 1_700_000_000_000u64,
        "host": "box-1",
        "ttl_seconds": ttl_seconds,
    })
}

async fn listed(s: &Api, token: &str) -> Vec<String> {
    let v = s
        .expect(Method::GET, "/api/v1/workers", Some(token), None, 200)
        .await;
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn the_registry_keeps_owners_apart_and_forgets_the_dead() {
    let (_dir, s) = common::start_temp(100_000).await;
    let admin = admin_token(&s).await;
    let alice = login(&s, "alice").await;
    let bob = login(&s, "bob").await;
    let carol = login(&s, "carol").await;
    grant(&s, &admin, "alice", "worker", None).await;
    grant(
        &s,
        &admin,
        "bob",
        "other-worker",
        Some(&["jobs:work:other"]),
    )
    .await;
    let alice_id = user_id(&s, &admin, "alice").await;
    let put = |id: &str| format!("/api/v1/workers/{id}");
    let v = s
        .expect(
            Method::PUT,
            &put("w1"),
            Some(&alice),
            Some(registration(60)),
            200,
        )
        .await;
    assert_eq!(v["id"], "w1");
    assert_eq!(v["owner"], alice_id.as_str());
    assert_eq!(v["queues"], json!(["emails"]));
    assert_eq!(v["started_at"], 1_700_000_000_000u64);
    let hb = v["heartbeat_at"].as_u64().unwrap();
    assert_eq!(v["expires_at"].as_u64().unwrap(), hb + 60_000);
    // A renewal by the owner.
    s.expect(
        Method::PUT,
        &put("w1"),
        Some(&alice),
        Some(registration(60)),
        200,
    )
    .await;
    // bob: ids are scoped by owner. His `w1` is his own record (nothing tells him alice
    // has one), and removing it leaves hers.
    let mut his = registration(60);
    his["host"] = json!("bobs-box");
    let v = s
        .expect(Method::PUT, &put("w1"), Some(&bob), Some(his), 200)
        .await;
    assert_ne!(v["owner"], alice_id.as_str());
    assert_eq!(listed(&s, &bob).await, ["w1"]);
    s.expect(Method::DELETE, &put("w1"), Some(&bob), None, 204)
        .await;
    s.expect(Method::DELETE, &put("w1"), Some(&bob), None, 404)
        .await;
    let v = s
        .expect(Method::GET, "/api/v1/workers", Some(&alice), None, 200)
        .await;
    assert_eq!(v["items"][0]["host"], "box-1", "{v}");
    s.expect(
        Method::PUT,
        &put("w2"),
        Some(&bob),
        Some(registration(60)),
        200,
    )
    .await;
    assert_eq!(listed(&s, &bob).await, ["w2"]);
    assert_eq!(listed(&s, &alice).await, ["w1"]);
    let mut all = listed(&s, &admin).await;
    all.sort();
    assert_eq!(all, ["w1", "w2"]);
    // No `jobs:work`: refused.
    s.expect(
        Method::PUT,
        &put("w3"),
        Some(&carol),
        Some(registration(60)),
        403,
    )
    .await;
    s.expect(Method::GET, "/api/v1/workers", Some(&carol), None, 403)
        .await;
    s.expect(Method::DELETE, &put("w1"), Some(&carol), None, 403)
        .await;
    // Bad bodies and ids.
    for body in [
        registration(0),
        registration(3_601),
        json!({"version": "1"}),
        {
            let mut b = registration(60);
            b["extra"] = json!(1);
            b
        },
        {
            let mut b = registration(60);
            b["queues"] = json!(["not a queue"]);
            b
        },
    ] {
        s.expect(Method::PUT, &put("w9"), Some(&alice), Some(body), 400)
            .await;
    }
    s.expect(
        Method::PUT,
        &put("a:b"),
        Some(&alice),
        Some(registration(60)),
        400,
    )
    .await;
    // The owner removes hers.
    s.expect(Method::DELETE, &put("w1"), Some(&alice), None, 204)
        .await;
    s.expect(Method::DELETE, &put("w1"), Some(&alice), None, 404)
        .await;
    assert_eq!(listed(&s, &admin).await, ["w2"]);
    // A worker that stops renewing disappears after its TTL.
    s.expect(
        Method::PUT,
        &put("brief"),
        Some(&alice),
        Some(registration(1)),
        200,
    )
    .await;
    assert_eq!(listed(&s, &alice).await, ["brief"]);
    tokio::time::sleep(std::time::Duration::from_millis(1_300)).await;
    assert!(listed(&s, &alice).await.is_empty());
    assert_eq!(listed(&s, &admin).await, ["w2"]);
    // Its id is free again, for anyone.
    s.expect(
        Method::PUT,
        &put("brief"),
        Some(&bob),
        Some(registration(60)),
        200,
    )
    .await;
    s.stop().await;
}

#[tokio::test]
async fn an_enqueue_carries_writes_to_the_callers_own_namespace() {
    let (_dir, s) = common::start_temp(10_000).await;
    let admin = admin_token(&s).await;
    let alice = login(&s, "alice").await;
    let bob = login(&s, "bob").await;
    s.expect(
        Method::PUT,
        "/api/v1/kv/old",
        Some(&alice),
        Some(json!({"value": 1})),
        201,
    )
    .await;
    let (st, v) = enqueue(
        &s,
        &alice,
        json!({"queue": "mail", "payload": {"order": 7}, "dedup_id": "order-7", "kv": [
            {"key": "order:7", "value": {"state": "paid"}, "ttl_seconds": 3600},
            {"key": "old", "delete": true},
        ]}),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    let first = v["id"].clone();
    let (_, got) = s.get("/api/v1/kv/order:7", &alice).await;
    assert_eq!(got["value"], json!({"state": "paid"}), "{got}");
    assert!(got["ttl_seconds"].as_u64().unwrap() > 3500);
    s.expect(Method::GET, "/api/v1/kv/old", Some(&alice), None, 404)
        .await;
    // The keys are alice's: bob's namespace has none of them.
    s.expect(Method::GET, "/api/v1/kv/order:7", Some(&bob), None, 404)
        .await;
    // A retry (same dedup id) is the same job and writes nothing.
    let (st, v) = enqueue(
        &s,
        &alice,
        json!({"queue": "mail", "dedup_id": "order-7", "kv": [
            {"key": "order:7", "value": {"state": "twice"}},
        ]}),
    )
    .await;
    assert_eq!((st.as_u16(), v["id"].clone()), (200, first));
    let (_, got) = s.get("/api/v1/kv/order:7", &alice).await;
    assert_eq!(got["value"], json!({"state": "paid"}));
    // A bad write names itself, and nothing is enqueued or written.
    for (kv, field) in [
        (json!([{"key": "a\u{0}b", "value": 1}]), "kv[0].key"),
        (
            json!([{"key": "x", "value": 1}, {"key": "y"}]),
            "kv[1].value",
        ),
        (json!([{"key": "x", "value": 1, "delete": true}]), "kv[0]"),
        (
            json!([{"key": "x", "value": 1, "ttl_seconds": 0}]),
            "kv[0].ttl_seconds",
        ),
    ] {
        let (st, v) = enqueue(&s, &alice, json!({"queue": "mail", "kv": kv})).await;
        assert_eq!(st, 400, "{v}");
        assert!(
            v["detail"].as_str().unwrap().contains(field),
            "{field}: {v}"
        );
    }
    s.expect(Method::GET, "/api/v1/kv/x", Some(&alice), None, 404)
        .await;
    // Writes need kv:write as well as jobs:enqueue.
    let carol = login(&s, "carol").await;
    grant(&s, &admin, "carol", "enqueuer", Some(&["jobs:enqueue"])).await;
    let id = user_id(&s, &admin, "carol").await;
    s.expect(
        Method::DELETE,
        &format!("/admin/users/{id}/roles/user"),
        Some(&admin),
        None,
        204,
    )
    .await;
    let (st, v) = enqueue(
        &s,
        &carol,
        json!({"queue": "mail", "kv": [{"key": "k", "value": 1}]}),
    )
    .await;
    assert_eq!((st.as_u16(), problem_type(&v)), (403, "forbidden"), "{v}");
    let (st, _) = enqueue(&s, &carol, json!({"queue": "mail"})).await;
    assert_eq!(st, 201);
    let (_, jobs) = s.get("/api/v1/jobs?queue=mail", &admin).await;
    assert_eq!(jobs["items"].as_array().unwrap().len(), 2, "{jobs}");
    s.stop().await;
}
