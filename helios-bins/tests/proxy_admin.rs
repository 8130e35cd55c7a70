//! The proxy's dynamic configuration on the gateway: `/admin/proxy/routes` and
//! `/admin/proxy/backends` (permission `proxy:admin`), exact statuses and problems, what
//! lands in the store, and who may touch it. Everything on 127.0.0.1.

mod common;

use common::*;
use http::Method;
use serde_json::{Value, json};

/// A user `name` holding only `permissions` (through a role of the same name): its token.
async fn user_with(s: &Server, admin: &str, name: &str, permissions: &[&str]) -> String {
    let token = login(s, name).await;
    s.expect(
        Method::PUT,
        &format!("/admin/roles/{name}"),
        Some(admin),
        Some(json!({ "permissions": permissions })),
        204,
    )
    .await;
    let id = user_id(s, admin, name).await;
    s.expect(
        Method::POST,
        &format!("/admin/users/{id}/roles"),
        Some(admin),
        Some(json!({ "role": name })),
        204,
    )
    .await;
    s.expect(
        Method::DELETE,
        &format!("/admin/users/{id}/roles/user"),
        Some(admin),
        None,
        204,
    )
    .await;
    token
}

fn detail(v: &Value) -> &str {
    v["detail"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn routes_and_backends_are_created_checked_and_deleted() {
    let (_dir, s) = start_temp(1_000).await;
    let admin = admin_token(&s).await;
    let ops = user_with(&s, &admin, "proxyops", &["proxy:admin"]).await;
    let t = Some(ops.as_str());
    // Created, then replaced; what is stored comes back.
    let v = s
        .expect(
            Method::PUT,
            "/admin/proxy/backends/api1",
            t,
            Some(json!({"url": "http://127.0.0.1:9001"})),
            201,
        )
        .await;
    assert_eq!(v, json!({"id": "api1", "url": "http://127.0.0.1:9001"}));
    s.expect(
        Method::PUT,
        "/admin/proxy/backends/api1",
        t,
        Some(json!({"id": "api1", "url": "http://127.0.0.1:9002"})),
        200,
    )
    .await;
    // Refusals name the field.
    for (path, body, field) in [
        (
            "/admin/proxy/backends/api2",
            json!({"url": "https://x"}),
            "backend.url",
        ),
        (
            "/admin/proxy/backends/api2",
            json!({"id": "other", "url": "http://x:1"}),
            "id",
        ),
        (
            "/admin/proxy/backends/bad%20id",
            json!({"url": "http://x:1"}),
            "backend.id",
        ),
        (
            "/admin/proxy/routes/api",
            json!({"path_prefix": "/api/", "backends": [{"backend": "nope"}]}),
            "route.backends",
        ),
        (
            "/admin/proxy/routes/api",
            json!({"path_prefix": "api", "backends": [{"backend": "api1"}]}),
            "route.path_prefix",
        ),
        (
            "/admin/proxy/routes/api",
            json!({"path_prefix": "/", "backends": [{"backend": "api1"}], "balance": "fastest"}),
            "route.balance",
        ),
        (
            "/admin/proxy/routes/api",
            json!({"path_prefix": "/", "backends": [{"backend": "api1", "weight": 0}]}),
            "route.backends.weight",
        ),
    ] {
        let v = s.expect(Method::PUT, path, t, Some(body), 400).await;
        assert_eq!(problem_type(&v), "invalid-field", "{path}: {v}");
        assert!(detail(&v).contains(field), "{path}: {field} not in {v}");
    }
    let v = s
        .expect(
            Method::PUT,
            "/admin/proxy/routes/api",
            t,
            Some(json!({"path_prefix": "/api/", "extra": 1, "backends": []})),
            400,
        )
        .await;
    assert_eq!(problem_type(&v), "malformed-json");
    let route = json!({"path_prefix": "/api/", "host": "app.test", "backends": [{"backend": "api1", "weight": 3}], "balance": "weighted"});
    let v = s
        .expect(
            Method::PUT,
            "/admin/proxy/routes/api",
            t,
            Some(route.clone()),
            201,
        )
        .await;
    assert_eq!(v["balance"], "weighted");
    assert_eq!(v["backends"][0]["weight"], 3);
    // Another route on the same host and prefix is refused.
    let v = s
        .expect(
            Method::PUT,
            "/admin/proxy/routes/api-two",
            t,
            Some(route.clone()),
            400,
        )
        .await;
    assert!(detail(&v).contains("route.path_prefix"), "{v}");
    // Lists and items.
    let (_, v) = s.get("/admin/proxy/routes", &ops).await;
    assert_eq!(v["routes"].as_array().unwrap().len(), 1);
    assert_eq!(v["routes"][0]["id"], "api");
    let (_, v) = s.get("/admin/proxy/backends", &ops).await;
    assert_eq!(v["backends"][0]["url"], "http://127.0.0.1:9002");
    s.expect(Method::GET, "/admin/proxy/routes/api", t, None, 200)
        .await;
    s.expect(Method::GET, "/admin/proxy/routes/none", t, None, 404)
        .await;
    // A backend in use is not deleted; the problem names the routes.
    let v = s
        .expect(Method::DELETE, "/admin/proxy/backends/api1", t, None, 409)
        .await;
    assert_eq!(problem_type(&v), "backend-in-use");
    assert!(detail(&v).contains("\"api\""), "{v}");
    s.expect_each([
        (Method::DELETE, "/admin/proxy/routes/api", t, None, 204),
        (Method::DELETE, "/admin/proxy/routes/api", t, None, 404),
        (Method::DELETE, "/admin/proxy/backends/api1", t, None, 204),
        (Method::DELETE, "/admin/proxy/backends/api1", t, None, 404),
    ])
    .await;
    // What the API acknowledged is what the store holds, under the documented keys.
    s.expect(
        Method::PUT,
        "/admin/proxy/backends/b",
        t,
        Some(json!({"url": "http://10.0.0.1"})),
        201,
    )
    .await;
    let stored = s.state.atlas.get("proxy:backend:b").expect("stored");
    let spec: Value = serde_json::from_slice(&stored).unwrap();
    assert_eq!(spec, json!({"id": "b", "url": "http://10.0.0.1"}));
    s.stop().await;
}

#[tokio::test]
async fn only_proxy_admin_holders_touch_the_proxy() {
    let (_dir, s) = start_temp(1_000).await;
    let admin = admin_token(&s).await;
    let user = login(&s, "plain").await;
    let users_admin = user_with(&s, &admin, "useradmin", &["users:admin"]).await;
    let ops = user_with(&s, &admin, "proxyops", &["proxy:admin"]).await;
    let body = json!({"url": "http://127.0.0.1:9001"});
    for (token, want) in [
        (None, 401),
        (Some(user.as_str()), 403),
        (Some(users_admin.as_str()), 403),
        (Some(ops.as_str()), 201),
        (Some(admin.as_str()), 200),
    ] {
        s.expect(
            Method::PUT,
            "/admin/proxy/backends/x",
            token,
            Some(body.clone()),
            want,
        )
        .await;
        let list_want = if want >= 400 { want } else { 200 };
        s.expect(Method::GET, "/admin/proxy/backends", token, None, list_want)
            .await;
    }
    // A users:admin cannot hand itself the permission either.
    s.expect(
        Method::PUT,
        "/admin/roles/useradmin",
        Some(users_admin.as_str()),
        Some(json!({"permissions": ["users:admin", "proxy:admin"]})),
        403,
    )
    .await;
    s.stop().await;
}
