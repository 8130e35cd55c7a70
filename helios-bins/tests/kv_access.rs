//! KV belongs to someone (issue 17, point 1; OWASP API1, BOLA), over HTTP:
//! - `/api/v1/kv` is the caller's own namespace: another user's key is 404 (never 403),
//!   listings show only the caller's keys, a cursor cannot leave the namespace;
//! - `/api/v1/ns/{ns}/kv` is a shared namespace guarded by `kv:read:{ns}` /
//!   `kv:write:{ns}` (a role granting `kv:read` alone does not reach it);
//! - `/admin/users/{id}/kv` lets an admin reach any user's namespace;
//! - keys written by the layout before namespaces move to the `legacy` namespace, which
//!   only admins read;
//! - keys with control characters or bidirectional overrides are refused, naming the byte.

mod common;

use common::{Server, login_with as login};
use http::{Method, StatusCode};
use serde_json::{Value, json};

const ADMIN_PASSWORD: &str = "kv-admin-Quartz-91-lantern";
const PASSWORD: &str = "tangerine-kayak-47-violet";

/// A gateway over `dir` whose `admin` has [`ADMIN_PASSWORD`].
async fn start(dir: &std::path::Path) -> Server {
    common::start_with_admin(common::config(dir, 100_000), ADMIN_PASSWORD).await
}

/// A gateway over a fresh temp dir, as [`start`] configures it.
async fn start_temp() -> (tempfile::TempDir, Server) {
    common::start_temp_with(100_000, ADMIN_PASSWORD, |_| {}).await
}

/// Registers `user` with [`PASSWORD`] and logs it in: its id and access token.
async fn register(s: &Server, user: &str) -> (String, String) {
    let v = common::register(s, user, PASSWORD).await;
    let id = v["id"].as_str().unwrap().to_owned();
    (id, login(s, user, PASSWORD).await)
}

/// Writes what a user's helios-atlasd client could into its namespace `space` (keys are
/// binary-safe there): `b\xff` and `\xfb\xef`, not UTF-8, and `c\x00`, text with a
/// control character, each holding the bytes `raw` (not JSON).
fn write_as_atlasd(s: &Server, space: &helios_core::keys::KvSpace<'_>) {
    for raw in [&b"b\xff"[..], b"c\x00", b"\xfb\xef"] {
        s.state
            .atlas
            .set(space.key_bytes(raw).unwrap(), "raw")
            .unwrap();
    }
}

fn keys_of(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["key"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_users_keys_are_their_own() {
    let (_dir, s) = start_temp().await;
    let (alice_id, alice) = register(&s, "alice").await;
    let (_, bob) = register(&s, "bob").await;

    let private = "/api/v1/kv/alice-private";
    let (st, _) = s.put_value(private, &alice, json!("secret")).await;
    assert_eq!(st, StatusCode::CREATED);
    // Bob cannot read, list, delete or overwrite it: it does not exist for him.
    let (st, v) = s.get(private, &bob).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
    assert_eq!(v["type"], "https://helios.dev/problems/not-found");
    s.expect(Method::DELETE, private, Some(&bob), None, 404)
        .await;
    let (_, list) = s.get("/api/v1/kv", &bob).await;
    assert!(keys_of(&list).is_empty(), "{list}");
    // His PUT of the same name creates his own key.
    let (st, _) = s.put_value(private, &bob, json!("bob's")).await;
    assert_eq!(st, StatusCode::CREATED);
    let (_, v) = s.get(private, &alice).await;
    assert_eq!(v["value"], "secret");
    let (_, v) = s.get(private, &bob).await;
    assert_eq!(v["value"], "bob's");

    // Listings and cursors stay in the caller's namespace, whatever the cursor says.
    for i in 0..3 {
        s.put_value(&format!("/api/v1/kv/a{i}"), &alice, json!(i))
            .await;
    }
    let (_, list) = s.get("/api/v1/kv?limit=1000", &bob).await;
    assert_eq!(keys_of(&list), ["alice-private"]);
    for cursor in [
        "",
        "%00",
        "..%2F..",
        &format!("kv%3Au%3A{alice_id}%3A"),
        &format!("..%2Fu%3A{alice_id}%3Aa0"),
    ] {
        let (st, list) = s.get(&format!("/api/v1/kv?cursor={cursor}"), &bob).await;
        if st == StatusCode::OK {
            assert!(
                keys_of(&list).iter().all(|k| k == "alice-private"),
                "cursor {cursor:?}: {list}"
            );
            assert_ne!(list["next_cursor"], json!("a0"));
        } else {
            assert_eq!(st, StatusCode::BAD_REQUEST, "cursor {cursor:?}: {list}");
        }
    }
    let (_, list) = s.get("/api/v1/kv?prefix=a&limit=2", &alice).await;
    assert_eq!(keys_of(&list), ["a0", "a1"]);
    let next = list["next_cursor"].as_str().unwrap().to_owned();
    let (_, list) = s
        .get(&format!("/api/v1/kv?prefix=a&cursor={next}"), &alice)
        .await;
    assert_eq!(keys_of(&list), ["a2", "alice-private"]);

    // The admin route reaches a user's namespace; a user cannot use it.
    let admin = login(&s, "admin", ADMIN_PASSWORD).await;
    let theirs = format!("/admin/users/{alice_id}/kv/alice-private");
    let (st, v) = s.get(&theirs, &admin).await;
    assert_eq!((st, &v["value"]), (StatusCode::OK, &json!("secret")), "{v}");
    let (_, list) = s.get(&format!("/admin/users/{alice_id}/kv"), &admin).await;
    assert_eq!(keys_of(&list), ["a0", "a1", "a2", "alice-private"]);
    let (st, _) = s.get("/admin/users/nobody/kv", &admin).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _) = s.get(&theirs, &bob).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    // The admin's own /api/v1/kv is the admin's namespace too.
    let (_, list) = s.get("/api/v1/kv", &admin).await;
    assert!(keys_of(&list).is_empty(), "{list}");
    s.stop().await;
}

/// A namespace may hold keys that are not UTF-8 (helios-atlasd's keys are binary-safe,
/// and a user's atlasd keys are its gateway keys): listings show them as `key_base64`, a
/// cursor at one comes back as `next_cursor_base64`, and `cursor_base64` continues from it
/// (a `+` left unencoded included). A text key with a control character (written through
/// atlasd too) is listed as text, and its cursor is taken back.
#[tokio::test]
async fn binary_keys_written_by_atlasd_are_listed_in_base64() {
    let (_dir, s) = start_temp().await;
    let (alice_id, alice) = register(&s, "alice").await;
    let space = helios_core::keys::KvSpace::User(&alice_id);
    s.put_value("/api/v1/kv/a", &alice, json!(1)).await;
    s.put_value("/api/v1/kv/d", &alice, json!(4)).await;
    write_as_atlasd(&s, &space);
    let page = |q: String| {
        let s = &s;
        let alice = &alice;
        async move {
            let (st, list) = s.get(&format!("/api/v1/kv?{q}"), alice).await;
            assert_eq!(st, StatusCode::OK, "{q}: {list}");
            list
        }
    };
    assert_eq!(
        page("limit=2".into()).await,
        json!({
            "items": [
                {"key": "a", "value": 1},
                {"key_base64": "Yv8=", "value": null, "value_base64": "cmF3"},
            ],
            "next_cursor": null,
            "next_cursor_base64": "Yv8=",
        })
    );
    let list = page("limit=1&cursor_base64=Yv8%3D".into()).await;
    assert_eq!(
        list["items"],
        json!([{"key": "c\u{0}", "value": null, "value_base64": "cmF3"}])
    );
    assert_eq!(list["next_cursor"], json!("c\u{0}"));
    let list = page("limit=1&cursor=c%00".into()).await;
    assert_eq!(keys_of(&list), ["d"]);
    let list = page("cursor=d".into()).await;
    assert_eq!(
        list,
        json!({
            "items": [{"key_base64": "++8=", "value": null, "value_base64": "cmF3"}],
            "next_cursor": null,
        })
    );
    // `+` unencoded in the query string reads as a space: taken as `+`.
    let list = page("cursor_base64=++8=".into()).await;
    assert_eq!(list["items"], json!([]));
    for bad in [
        "cursor_base64=!!",
        "cursor_base64=",
        "cursor=a&cursor_base64=YQ%3D%3D",
    ] {
        let (st, v) = s.get(&format!("/api/v1/kv?{bad}"), &alice).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}: {v}");
    }
    s.stop().await;
}

/// The keys a listing shows are reachable one by one: any bytes, percent-encoded in the
/// path, for GET and DELETE (in the caller's namespace only; an admin's route reaches a
/// user's); a key the gateway writes stays text. Values that are not JSON come as
/// `value_base64`.
#[tokio::test]
async fn keys_written_by_atlasd_are_read_and_deleted_by_their_bytes() {
    let (_dir, s) = start_temp().await;
    let (alice_id, alice) = register(&s, "alice").await;
    let (_, bob) = register(&s, "bob").await;
    let admin = login(&s, "admin", ADMIN_PASSWORD).await;
    let space = helios_core::keys::KvSpace::User(&alice_id);
    write_as_atlasd(&s, &space);
    // A JSON string holding a byte that is not UTF-8: not JSON text, so never spliced.
    s.state
        .atlas
        .set(space.key_bytes(b"q").unwrap(), &b"\"\xff\""[..])
        .unwrap();
    let (st, v) = s.get("/api/v1/kv/q", &alice).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        (&v["value"], &v["value_base64"]),
        (&json!(null), &json!("Iv8i"))
    );
    let (st, v) = s.get("/api/v1/kv/b%FF", &alice).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        v,
        json!({"key_base64": "Yv8=", "value": null, "value_base64": "cmF3", "ttl_seconds": null})
    );
    let (st, v) = s.get("/api/v1/kv/c%00", &alice).await;
    assert_eq!((st, &v["key"]), (StatusCode::OK, &json!("c\u{0}")), "{v}");
    // The gateway does not write such keys: named, with the byte offset.
    let (st, v) = s.put_value("/api/v1/kv/b%FF", &alice, json!(1)).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("not UTF-8 at byte 1"),
        "{v}"
    );
    let (st, v) = s.put_value("/api/v1/kv/c%00", &alice, json!(1)).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["detail"].as_str().unwrap().contains("U+0000 at byte 1"),
        "{v}"
    );
    for bad in ["/api/v1/kv/%G0", "/api/v1/kv/%F", "/api/v1/kv/%+F"] {
        let (st, v) = s.get(bad, &alice).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}: {v}");
    }
    // Another user's path names their own namespace: absent there, untouched here.
    s.expect(Method::GET, "/api/v1/kv/%FB%EF", Some(&bob), None, 404)
        .await;
    s.expect(Method::DELETE, "/api/v1/kv/%FB%EF", Some(&bob), None, 404)
        .await;
    let v = s
        .expect(
            Method::GET,
            &format!("/admin/users/{alice_id}/kv/%FB%EF"),
            Some(&admin),
            None,
            200,
        )
        .await;
    assert_eq!(v["key_base64"], "++8=");
    s.expect(Method::DELETE, "/api/v1/kv/%FB%EF", Some(&alice), None, 204)
        .await;
    let v = s
        .expect(Method::GET, "/api/v1/kv/%FB%EF", Some(&alice), None, 404)
        .await;
    assert!(v["detail"].as_str().unwrap().contains("base64 ++8="), "{v}");
    assert!(
        s.state
            .atlas
            .get(space.key_bytes(b"\xfb\xef").unwrap())
            .is_none()
    );
    assert!(
        s.state
            .atlas
            .get(space.key_bytes(b"b\xff").unwrap())
            .is_some()
    );
    s.stop().await;
}

#[tokio::test]
async fn shared_namespaces_are_guarded_by_scoped_permissions() {
    let (_dir, s) = start_temp().await;
    let (bob_id, _) = register(&s, "bob").await;
    let (_, alice) = register(&s, "alice").await;
    let admin = login(&s, "admin", ADMIN_PASSWORD).await;
    let (st, v) = s
        .send(
            Method::PUT,
            "/admin/roles/team-rw",
            Some(&admin),
            Some(json!({"permissions": ["kv:read:team", "kv:write:team"]})),
        )
        .await;
    assert!(st.is_success(), "{st} {v}");
    let (st, v) = s
        .send(
            Method::POST,
            &format!("/admin/users/{bob_id}/roles"),
            Some(&admin),
            Some(json!({"role": "team-rw"})),
        )
        .await;
    assert!(st.is_success(), "{st} {v}");
    let bob = login(&s, "bob", PASSWORD).await;

    let (st, v) = s
        .put_value("/api/v1/ns/team/kv/doc", &bob, json!({"v": 1}))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let (st, v) = s.get("/api/v1/ns/team/kv/doc", &bob).await;
    assert_eq!((st, &v["value"]), (StatusCode::OK, &json!({"v": 1})));
    let (_, list) = s.get("/api/v1/ns/team/kv", &bob).await;
    assert_eq!(keys_of(&list), ["doc"]);
    // The shared key is not in bob's own namespace, nor alice's.
    let (st, _) = s.get("/api/v1/kv/doc", &bob).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    // Alice holds kv:read and kv:write (role user), which do not open a shared namespace.
    for (method, path) in [
        (Method::GET, "/api/v1/ns/team/kv/doc"),
        (Method::GET, "/api/v1/ns/team/kv"),
        (Method::PUT, "/api/v1/ns/team/kv/doc"),
        (Method::DELETE, "/api/v1/ns/team/kv/doc"),
    ] {
        let (st, v) = s
            .send(
                method.clone(),
                path,
                Some(&alice),
                Some(json!({"value": 0})),
            )
            .await;
        assert_eq!(st, StatusCode::FORBIDDEN, "{method} {path}: {v}");
        assert!(v["detail"].as_str().unwrap().contains(":team"), "{v}");
    }
    // Bob's team role does not open another namespace; the admin reaches every one.
    let (st, _) = s.get("/api/v1/ns/other/kv/doc", &bob).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _) = s.get("/api/v1/ns/team/kv/doc", &admin).await;
    assert_eq!(st, StatusCode::OK);
    // Namespace names are [a-z0-9_-]{1,64}.
    for bad in ["Team", "a%3Ab", &"x".repeat(65)] {
        let (st, v) = s.get(&format!("/api/v1/ns/{bad}/kv"), &admin).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}: {v}");
        assert!(v["detail"].as_str().unwrap().starts_with("ns:"), "{v}");
    }
    s.stop().await;
}

#[tokio::test]
async fn keys_of_the_old_layout_move_to_legacy_which_only_admins_read() {
    let dir = tempfile::tempdir().unwrap();
    {
        // A data directory written by the layout before namespaces.
        let db = helios_atlas::Atlas::open(dir.path(), helios_atlas::Options::default()).unwrap();
        db.set("kv:old", "\"from before\"").unwrap();
        db.set("kv:team:notes", "[1,2]").unwrap();
        db.close().unwrap();
    }
    let s = start(dir.path()).await;
    assert_eq!(
        s.state.atlas.get("meta:kv_layout").as_deref(),
        Some(&b"2"[..])
    );
    assert!(s.state.atlas.get("kv:old").is_none());
    let admin = login(&s, "admin", ADMIN_PASSWORD).await;
    let (st, v) = s.get("/api/v1/ns/legacy/kv/old", &admin).await;
    assert_eq!((st, &v["value"]), (StatusCode::OK, &json!("from before")));
    let (_, list) = s.get("/api/v1/ns/legacy/kv", &admin).await;
    assert_eq!(keys_of(&list), ["old", "team:notes"]);
    let (_, alice) = register(&s, "alice").await;
    let (st, _) = s.get("/api/v1/ns/legacy/kv/old", &alice).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _) = s.get("/api/v1/kv/old", &alice).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    s.stop().await;
    // A restart moves nothing again.
    let s = start(dir.path()).await;
    let admin = login(&s, "admin", ADMIN_PASSWORD).await;
    let (_, list) = s.get("/api/v1/ns/legacy/kv", &admin).await;
    assert_eq!(keys_of(&list), ["old", "team:notes"]);
    s.stop().await;
}

#[tokio::test]
async fn control_characters_in_keys_are_refused_with_the_offset() {
    let (_dir, s) = start_temp().await;
    let (_, alice) = register(&s, "alice").await;
    for (path, offset) in [
        ("/api/v1/kv/a%00b", 1),
        ("/api/v1/kv/ab%0D%0A", 2),
        ("/api/v1/kv/%1B%5B31m", 0),
        ("/api/v1/kv/x%E2%80%AEtxt.exe", 1),
    ] {
        let (st, v) = s.put_value(path, &alice, json!(1)).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{path}: {v}");
        assert!(
            v["detail"]
                .as_str()
                .unwrap()
                .contains(&format!("at byte {offset}")),
            "{path}: {v}"
        );
    }
    let (st, v) = s.get("/api/v1/kv?prefix=a%0Ab", &alice).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    s.stop().await;
}
