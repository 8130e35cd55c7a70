//! `docs/openapi.yaml` matches the router: every (method, path) the gateway serves
//! (`helios_bins::gateway::routes()`) is documented and every documented operation is
//! served; every operation documents at least one error response as
//! `application/problem+json` with the shared `Problem` schema; every operation needs a
//! Bearer token except the open ones (ops and the three ways to get a token), which are
//! documented as open; and every `{param}` of a path is declared as a path parameter.
//! The document also parses as a typed OpenAPI 3.1 model (`oas3`), and real answers of a
//! running gateway (50+ calls over every route family, success and error paths) have a
//! documented status and a body that validates against the documented schema
//! (`jsonschema`, draft 2020-12).

use serde_json::Value;
use std::collections::BTreeSet;

const DOC: &str = "../docs/openapi.yaml";
const PROBLEM_REF: &str = "#/components/schemas/Problem";
const PROBLEM_MEDIA: &str = "application/problem+json";
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// The operations that take no token.
const OPEN: [(&str, &str); 8] = [
    ("GET", "/"),
    ("GET", "/api/v1"),
    ("GET", "/openapi.yaml"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("POST", "/api/v1/auth/register"),
    ("POST", "/api/v1/auth/login"),
    ("POST", "/api/v1/auth/refresh"),
];

fn load() -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(DOC);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let doc: Value =
        serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()));
    let version = doc["openapi"].as_str().unwrap_or_default();
    assert!(
        version.starts_with("3.1"),
        "openapi must be 3.1.x, got {:?}",
        doc["openapi"]
    );
    doc
}

/// Follows local `$ref`s (`#/components/...`) until a value without one.
fn resolve<'a>(doc: &'a Value, mut v: &'a Value) -> &'a Value {
    for _ in 0..16 {
        let Some(r) = v.get("$ref").and_then(Value::as_str) else {
            return v;
        };
        let pointer = r
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("only local $refs are supported: {r}"));
        v = doc
            .pointer(pointer)
            .unwrap_or_else(|| panic!("$ref {r} points nowhere"));
    }
    panic!("$ref chain too long");
}

/// Every operation: (METHOD, path, path item, operation).
fn operations(doc: &Value) -> Vec<(String, String, &Value, &Value)> {
    let paths = doc["paths"].as_object().expect("`paths` is a map");
    let mut out = Vec::new();
    for (path, item) in paths {
        let item = resolve(doc, item);
        for m in METHODS {
            if let Some(op) = item.get(m) {
                out.push((m.to_ascii_uppercase(), path.clone(), item, op));
            }
        }
    }
    out
}

#[test]
fn every_served_route_is_documented_and_every_documented_one_is_served() {
    let doc = load();
    let documented: BTreeSet<(String, String)> = operations(&doc)
        .into_iter()
        .map(|(m, p, _, _)| (m, p))
        .collect();
    let served: BTreeSet<(String, String)> = helios_bins::gateway::routes()
        .into_iter()
        .flat_map(|(pattern, methods)| {
            methods
                .into_iter()
                .map(move |m| (m.as_str().to_owned(), pattern.to_owned()))
        })
        .collect();
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty() && unserved.is_empty(),
        "docs/openapi.yaml and the router disagree\n\
         served but not documented ({}): {undocumented:#?}\n\
         documented but not served ({}): {unserved:#?}",
        undocumented.len(),
        unserved.len(),
    );
}

#[test]
fn every_operation_documents_problem_json_errors() {
    let doc = load();
    let problem = doc
        .pointer("/components/schemas/Problem")
        .expect("components.schemas.Problem exists");
    let required: BTreeSet<&str> = problem["required"]
        .as_array()
        .expect("Problem lists its required fields")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for field in ["type", "title", "status", "detail"] {
        assert!(required.contains(field), "Problem must require {field}");
        assert!(
            problem["properties"].get(field).is_some(),
            "Problem must describe {field}"
        );
    }
    let mut missing = Vec::new();
    for (method, path, _, op) in operations(&doc) {
        let responses = op["responses"]
            .as_object()
            .unwrap_or_else(|| panic!("{method} {path} has no responses"));
        let has_problem = responses.iter().any(|(code, resp)| {
            let is_error = code.starts_with('4') || code.starts_with('5');
            let schema = resolve(&doc, resp).pointer(&format!(
                "/content/{}/schema",
                PROBLEM_MEDIA.replace('/', "~1")
            ));
            is_error
                && schema.and_then(|s| s.get("$ref")).and_then(Value::as_str) == Some(PROBLEM_REF)
        });
        if !has_problem {
            missing.push(format!("{method} {path}"));
        }
    }
    assert!(
        missing.is_empty(),
        "operations without a 4xx/5xx {PROBLEM_MEDIA} response referencing {PROBLEM_REF}: \
         {missing:#?}"
    );
}

/// Whether a list of security requirements lets a request in without credentials.
fn allows_anonymous(reqs: &Value) -> bool {
    match reqs.as_array() {
        None => true,
        Some(a) => {
            a.is_empty()
                || a.iter()
                    .any(|r| r.as_object().is_some_and(serde_json::Map::is_empty))
        }
    }
}

#[test]
fn operations_need_a_bearer_token_except_the_open_ones() {
    let doc = load();
    let schemes = doc
        .pointer("/components/securitySchemes")
        .and_then(Value::as_object)
        .expect("components.securitySchemes exists");
    let global = doc.get("security").unwrap_or(&Value::Null);
    let mut wrong = Vec::new();
    for (method, path, _, op) in operations(&doc) {
        // An operation's own `security` replaces the document's.
        let reqs = op.get("security").unwrap_or(global);
        let open = OPEN.contains(&(method.as_str(), path.as_str()));
        if open {
            if !allows_anonymous(reqs) {
                wrong.push(format!(
                    "{method} {path}: open, but documented as needing a token"
                ));
            }
            continue;
        }
        if allows_anonymous(reqs) {
            wrong.push(format!(
                "{method} {path}: needs a token, but documented as open"
            ));
            continue;
        }
        // Every alternative must be a bearer scheme that is defined.
        for req in reqs.as_array().into_iter().flatten() {
            for name in req.as_object().into_iter().flat_map(|o| o.keys()) {
                let bearer = schemes.get(name).is_some_and(|s| {
                    s["type"] == "http"
                        && s["scheme"]
                            .as_str()
                            .is_some_and(|x| x.eq_ignore_ascii_case("bearer"))
                });
                if !bearer {
                    wrong.push(format!(
                        "{method} {path}: security scheme {name:?} is not a defined bearer scheme"
                    ));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "security requirements: {wrong:#?}");
}

#[test]
fn every_path_parameter_is_declared() {
    let doc = load();
    let mut wrong = Vec::new();
    for (method, path, item, op) in operations(&doc) {
        let declared: BTreeSet<String> = [item.get("parameters"), op.get("parameters")]
            .into_iter()
            .flatten()
            .filter_map(Value::as_array)
            .flatten()
            .map(|p| resolve(&doc, p))
            .filter(|p| p["in"] == "path")
            .filter_map(|p| p["name"].as_str().map(str::to_owned))
            .collect();
        let in_path: BTreeSet<String> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .map(str::to_owned)
            .collect();
        if declared != in_path {
            wrong.push(format!(
                "{method} {path}: path has {in_path:?}, parameters declare {declared:?}"
            ));
        }
    }
    assert!(wrong.is_empty(), "path parameters: {wrong:#?}");
}

/// The document parses as a typed OpenAPI 3.1 model (oas3): every object has the fields
/// and types the specification gives it, and the typed model sees the same operations.
#[test]
fn the_document_is_a_valid_openapi_3_1_model() {
    let doc = load();
    let spec = oas3::from_json(doc.to_string()).unwrap_or_else(|e| panic!("oas3: {e}"));
    let version = spec.validate_version().expect("a supported version");
    assert_eq!((version.major, version.minor), (3, 1));
    let typed: BTreeSet<(String, String)> = spec
        .operations()
        .map(|(path, method, _)| (method.as_str().to_owned(), path))
        .collect();
    let ours: BTreeSet<(String, String)> = operations(&doc)
        .into_iter()
        .map(|(m, p, _, _)| (m, p))
        .collect();
    assert_eq!(typed, ours);
}

mod common;

/// Checks one real response against the document: its status must be documented for the
/// operation (or a `default` response), and its JSON body must validate (JSON Schema
/// 2020-12, the dialect of OpenAPI 3.1) against the schema documented for its media type.
struct Conformance {
    doc: Value,
    checked: usize,
    failures: Vec<String>,
}

impl Conformance {
    fn check(
        &mut self,
        method: &str,
        pattern: &str,
        status: http::StatusCode,
        headers: &http::HeaderMap,
        body: &Value,
    ) {
        self.checked += 1;
        let what = format!("{method} {pattern} -> {status}");
        let esc = |s: &str| s.replace('~', "~0").replace('/', "~1");
        let op_ptr = format!("/paths/{}/{}", esc(pattern), method.to_ascii_lowercase());
        let Some(op) = self.doc.pointer(&op_ptr) else {
            self.failures
                .push(format!("{what}: operation not documented"));
            return;
        };
        let code = status.as_u16().to_string();
        let (mut resp_ptr, resp) = match op["responses"].get(&code) {
            Some(r) => (format!("{op_ptr}/responses/{code}"), r),
            None => match op["responses"].get("default") {
                Some(r) => (format!("{op_ptr}/responses/default"), r),
                None => {
                    self.failures
                        .push(format!("{what}: status not documented ({body})"));
                    return;
                }
            },
        };
        let mut resp = resp;
        if let Some(r) = resp.get("$ref").and_then(Value::as_str) {
            resp_ptr = r.trim_start_matches('#').to_owned();
            resp = self.doc.pointer(&resp_ptr).unwrap_or(&Value::Null);
        }
        if status == http::StatusCode::NO_CONTENT {
            return;
        }
        let media = headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or("").trim().to_owned())
            .unwrap_or_default();
        if resp
            .pointer(&format!("/content/{}/schema", esc(&media)))
            .is_none()
        {
            self.failures
                .push(format!("{what}: no schema for media type {media:?}"));
            return;
        }
        let mut root = self.doc.clone();
        root["$schema"] = "https://json-schema.org/draft/2020-12/schema".into();
        // A JSON pointer inside a URI fragment: braces must be percent-encoded.
        let fragment = format!("{resp_ptr}/content/{}/schema", esc(&media))
            .replace('{', "%7B")
            .replace('}', "%7D");
        root["$ref"] = format!("#{fragment}").into();
        let validator = match jsonschema::draft202012::new(&root) {
            Ok(v) => v,
            Err(e) => {
                self.failures
                    .push(format!("{what}: schema does not compile: {e}"));
                return;
            }
        };
        let errors: Vec<String> = validator
            .iter_errors(body)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        if !errors.is_empty() {
            self.failures
                .push(format!("{what}: body {body} does not match: {errors:?}"));
        }
    }
}

/// Drives the real gateway through every family of routes, success and error paths, and
/// checks each answer against the document.
#[tokio::test]
async fn real_responses_match_the_documented_schemas() {
    use http::Method;
    use serde_json::json;
    let (_dir, s) = common::start_temp(1_000).await;
    let mut c = Conformance {
        doc: load(),
        checked: 0,
        failures: Vec::new(),
    };
    // `call!(METHOD, path, [pattern,] token, body)`: the answer, checked (the pattern is the
    // path where it has no parameters).
    macro_rules! call {
        ($m:ident, $path:expr, $token:expr, $body:expr) => {
            call!($m, $path, $path, $token, $body)
        };
        ($m:ident, $path:expr, $pattern:expr, $token:expr, $body:expr) => {{
            let (st, h, v) = s.call(Method::$m, $path, $token, $body, &[]).await;
            c.check(Method::$m.as_str(), $pattern, st, &h, &v);
            (st, v)
        }};
    }
    let creds = json!({"username": "olga", "password": "correct horse battery"});
    call!(GET, "/", None, None);
    call!(GET, "/api/v1", None, None);
    call!(GET, "/healthz", None, None);
    call!(GET, "/readyz", None, None);
    call!(POST, "/api/v1/auth/register", None, Some(creds.clone()));
    call!(POST, "/api/v1/auth/register", None, Some(creds.clone()));
    call!(
        POST,
        "/api/v1/auth/register",
        None,
        Some(json!({"username": "x"}))
    );
    let (_, v) = call!(POST, "/api/v1/auth/login", None, Some(creds.clone()));
    let token = v["access_token"].as_str().unwrap().to_owned();
    let refresh = v["refresh_token"].as_str().unwrap().to_owned();
    let wrong = json!({"username": "olga", "password": "wrong password!"});
    call!(POST, "/api/v1/auth/login", None, Some(wrong));
    let body = json!({"refresh_token": refresh});
    let (_, v) = call!(POST, "/api/v1/auth/refresh", None, Some(body));
    let token2 = v["access_token"].as_str().unwrap_or(&token).to_owned();
    call!(
        POST,
        "/api/v1/auth/refresh",
        None,
        Some(json!({"refresh_token": "nope"}))
    );
    let t = Some(token2.as_str());
    call!(GET, "/api/v1/auth/me", t, None);
    call!(GET, "/api/v1/auth/me", None, None);

    let kv = "/api/v1/kv/{key}";
    call!(
        PUT,
        "/api/v1/kv/a",
        kv,
        t,
        Some(json!({"value": {"n": 1}, "ttl_seconds": 60}))
    );
    call!(PUT, "/api/v1/kv/a", kv, t, Some(json!({"value": [1, 2]})));
    call!(PUT, "/api/v1/kv/a", kv, t, Some(json!({"valu": 1})));
    call!(GET, "/api/v1/kv/a", kv, t, None);
    call!(GET, "/api/v1/kv/missing", kv, t, None);
    call!(GET, "/api/v1/kv?prefix=a&limit=10", "/api/v1/kv", t, None);
    call!(GET, "/api/v1/kv?limit=0", "/api/v1/kv", t, None);
    call!(DELETE, "/api/v1/kv/a", kv, t, None);
    call!(DELETE, "/api/v1/kv/a", kv, t, None);

    let job = json!({"queue": "mail", "payload": {"to": "a"}, "dedup_id": "d1"});
    let (_, v) = call!(POST, "/api/v1/jobs", t, Some(job.clone()));
    let id = v["id"].as_str().unwrap_or_default().to_owned();
    call!(POST, "/api/v1/jobs", t, Some(job));
    call!(
        POST,
        "/api/v1/jobs",
        t,
        Some(json!({"queue": "bad name!", "payload": 1}))
    );
    let (job, action) = ("/api/v1/jobs/{id}", "/api/v1/jobs/{id}/{action}");
    call!(GET, &format!("/api/v1/jobs/{id}"), job, t, None);
    call!(
        GET,
        "/api/v1/jobs/00000000000000000000000000000000",
        job,
        t,
        None
    );
    call!(
        GET,
        "/api/v1/jobs?queue=mail&state=PENDING&limit=10",
        "/api/v1/jobs",
        t,
        None
    );
    let claim = json!({"queue": "mail", "worker_id": "w1", "lease_seconds": 30});
    let (_, v) = call!(POST, "/api/v1/jobs/claim", t, Some(claim));
    let lease = v["jobs"][0]["lease_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let body = json!({"lease_token": lease, "lease_seconds": 60});
    call!(
        POST,
        &format!("/api/v1/jobs/{id}/heartbeat"),
        action,
        t,
        Some(body)
    );
    let body = json!({"lease_token": "1"});
    call!(
        POST,
        &format!("/api/v1/jobs/{id}/ack"),
        action,
        t,
        Some(body)
    );
    let body = json!({"lease_token": lease, "error": "boom", "retry_in_seconds": 0});
    call!(
        POST,
        &format!("/api/v1/jobs/{id}/nack"),
        action,
        t,
        Some(body)
    );
    let claim = json!({"queue": "mail", "worker_id": "w1", "lease_seconds": 30, "max_jobs": 5});
    let (_, v) = call!(POST, "/api/v1/jobs/claim", t, Some(claim));
    let lease = v["jobs"][0]["lease_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let body = json!({"lease_token": lease, "result": {"ok": true}});
    call!(
        POST,
        &format!("/api/v1/jobs/{id}/ack"),
        action,
        t,
        Some(body)
    );
    call!(POST, &format!("/api/v1/jobs/{id}/cancel"), action, t, None);
    call!(GET, "/api/v1/queues", t, None);
    call!(
        GET,
        "/api/v1/queues/mail/dlq",
        "/api/v1/queues/{queue}/dlq",
        t,
        None
    );
    let redrive = "/api/v1/queues/{queue}/dlq/redrive";
    call!(
        POST,
        "/api/v1/queues/mail/dlq/redrive",
        redrive,
        t,
        Some(json!({}))
    );

    // Admin: refused to a user, then as the admin.
    call!(GET, "/admin/stats", t, None);
    let admin = common::admin_token(&s).await;
    let a = Some(admin.as_str());
    call!(GET, "/admin/stats", a, None);
    // Batches and the worker registry, refused to a user, then as the admin.
    let batch = json!({"items": []});
    call!(POST, "/api/v1/jobs/batch", t, Some(batch));
    let job = json!({"queue": "batch", "payload": 1, "max_attempts": 3});
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (_, v) = call!(POST, "/api/v1/jobs", a, Some(job.clone()));
        ids.push(v["id"].as_str().unwrap_or_default().to_owned());
    }
    let claim = json!({"queue": "batch", "worker_id": "w1", "lease_seconds": 30, "max_jobs": 3});
    let (_, v) = call!(POST, "/api/v1/jobs/claim", a, Some(claim));
    let token = |i: usize| {
        v["jobs"][i]["lease_token"]
            .as_str()
            .unwrap_or("1")
            .to_owned()
    };
    let batch = json!({"items": [
        {"id": ids[0], "lease_token": token(0), "action": "ack", "result": {"ok": true}},
        {"id": ids[1], "lease_token": token(1), "action": "nack", "error": "boom", "permanent": true},
        {"id": ids[2], "lease_token": token(2), "action": "heartbeat", "lease_seconds": 60},
        {"id": ids[0], "lease_token": token(0), "action": "ack"},
        {"id": "00000000000000000000000000000000", "lease_token": "1", "action": "ack"},
        {"id": "nope", "lease_token": "1", "action": "ack"},
    ]});
    call!(POST, "/api/v1/jobs/batch", a, Some(batch));
    call!(
        POST,
        "/api/v1/jobs/batch",
        a,
        Some(json!({"items": [{"id": "x"}]}))
    );
    let worker = "/api/v1/workers/{id}";
    let reg = json!({"version": "1.0", "queues": ["batch"], "in_flight": 1, "started_at": 1, "host": "h", "ttl_seconds": 60});
    call!(PUT, "/api/v1/workers/w1", worker, t, Some(reg.clone()));
    call!(PUT, "/api/v1/workers/w1", worker, a, Some(reg.clone()));
    call!(
        PUT,
        "/api/v1/workers/w1",
        worker,
        a,
        Some(json!({"version": "1"}))
    );
    call!(GET, "/api/v1/workers", t, None);
    call!(GET, "/api/v1/workers", a, None);
    call!(DELETE, "/api/v1/workers/w1", worker, a, None);
    call!(DELETE, "/api/v1/workers/w1", worker, a, None);
    let sched = "/api/v1/schedules/{id}";
    let body =
        json!({"queue": "cron", "cron": "0 0 1 1 *", "payload": {"r": 1}, "max_attempts": 2});
    let (_, v) = call!(POST, "/api/v1/schedules", a, Some(body));
    let sid = v["id"].as_str().unwrap_or_default().to_owned();
    call!(
        POST,
        "/api/v1/schedules",
        a,
        Some(json!({"queue": "cron", "cron": "0 0 30 2 *"}))
    );
    call!(
        GET,
        "/api/v1/schedules?limit=5",
        "/api/v1/schedules",
        a,
        None
    );
    call!(GET, &format!("/api/v1/schedules/{sid}"), sched, a, None);
    call!(GET, "/api/v1/schedules/xyz", sched, a, None);
    call!(DELETE, &format!("/api/v1/schedules/{sid}"), sched, a, None);
    call!(DELETE, &format!("/api/v1/schedules/{sid}"), sched, a, None);
    call!(POST, "/admin/snapshot", a, None);
    call!(POST, "/admin/aof/rewrite", a, None);
    call!(POST, "/admin/backup", a, Some(json!({"name": "nightly"})));
    call!(POST, "/admin/backup", a, Some(json!({"name": "nightly"})));
    call!(POST, "/admin/backup", a, Some(json!({"name": "../up"})));
    let (_, v) = call!(GET, "/admin/users", a, None);
    let uid = v["items"]
        .as_array()
        .or(v["users"].as_array())
        .and_then(|u| u.iter().find(|u| u["username"] == "olga"))
        .and_then(|u| u["id"].as_str())
        .unwrap_or("unknown")
        .to_owned();
    let user = format!("/admin/users/{uid}");
    let (roles, action) = ("/admin/users/{id}/roles", "/admin/users/{id}/{action}");
    call!(
        POST,
        &format!("{user}/roles"),
        roles,
        a,
        Some(json!({"role": "readonly"}))
    );
    let role = "/admin/users/{id}/roles/{role}";
    call!(DELETE, &format!("{user}/roles/readonly"), role, a, None);
    call!(POST, &format!("{user}/disable"), action, a, None);
    call!(POST, &format!("{user}/enable"), action, a, None);
    call!(POST, "/admin/users/nobody/enable", action, a, None);
    call!(GET, "/admin/roles", a, None);
    let auditor = json!({"permissions": ["kv:read"]});
    call!(
        PUT,
        "/admin/roles/auditor",
        "/admin/roles/{name}",
        a,
        Some(auditor)
    );
    call!(
        DELETE,
        "/admin/roles/auditor",
        "/admin/roles/{name}",
        a,
        None
    );
    let (_, limits) = call!(GET, "/admin/rate-limits", a, None);
    call!(PUT, "/admin/rate-limits", a, Some(limits));
    let zero = json!({"default": {"capacity": 0, "refill_tokens": 1, "refill_period_ms": 1}});
    call!(PUT, "/admin/rate-limits", a, Some(zero));
    // The proxy's routes and backends: created, replaced, refused, in use, deleted.
    let backend = json!({"url": "http://127.0.0.1:9001"});
    for _ in 0..2 {
        call!(
            PUT,
            "/admin/proxy/backends/api1",
            "/admin/proxy/backends/{id}",
            a,
            Some(backend.clone())
        );
    }
    call!(
        PUT,
        "/admin/proxy/backends/api2",
        "/admin/proxy/backends/{id}",
        a,
        Some(json!({"url": "ftp://x"}))
    );
    let route = json!({"path_prefix": "/api/", "backends": [{"backend": "api1", "weight": 2}], "balance": "weighted"});
    call!(
        PUT,
        "/admin/proxy/routes/api",
        "/admin/proxy/routes/{id}",
        a,
        Some(route)
    );
    call!(
        PUT,
        "/admin/proxy/routes/other",
        "/admin/proxy/routes/{id}",
        a,
        Some(json!({"path_prefix": "/", "backends": [{"backend": "nope"}]}))
    );
    call!(GET, "/admin/proxy/routes", a, None);
    call!(GET, "/admin/proxy/backends", a, None);
    call!(
        GET,
        "/admin/proxy/routes/api",
        "/admin/proxy/routes/{id}",
        a,
        None
    );
    call!(
        GET,
        "/admin/proxy/backends/api1",
        "/admin/proxy/backends/{id}",
        a,
        None
    );
    for path in ["/admin/proxy/backends/api1", "/admin/proxy/backends/none"] {
        call!(DELETE, path, "/admin/proxy/backends/{id}", a, None);
    }
    for _ in 0..2 {
        call!(
            DELETE,
            "/admin/proxy/routes/api",
            "/admin/proxy/routes/{id}",
            a,
            None
        );
    }
    call!(
        GET,
        "/admin/proxy/routes/api",
        "/admin/proxy/routes/{id}",
        a,
        None
    );
    // Login lockouts: olga's wrong password above left a count to lift.
    call!(GET, "/admin/lockouts", a, None);
    for _ in 0..2 {
        call!(
            DELETE,
            "/admin/lockouts/olga",
            "/admin/lockouts/{username}",
            a,
            None
        );
    }
    // The password change (olga's old token died with the disable above).
    let (_, v) = call!(POST, "/api/v1/auth/login", None, Some(creds.clone()));
    let t3 = v["access_token"].as_str().unwrap_or_default().to_owned();
    let t3 = Some(t3.as_str());
    for body in [
        json!({"current_password": "not-olgas-password", "new_password": "marmalade-zeppelin-93-quartz"}),
        json!({"current_password": creds["password"], "new_password": "password123"}),
        json!({"current_password": creds["password"]}),
    ] {
        call!(POST, "/api/v1/auth/password", t3, Some(body));
    }
    let body = json!({"current_password": creds["password"], "new_password": "marmalade-zeppelin-93-quartz"});
    let (_, v) = call!(POST, "/api/v1/auth/password", t3, Some(body));
    let t4 = v["access_token"].as_str().unwrap_or_default().to_owned();
    call!(POST, "/api/v1/auth/logout", Some(t4.as_str()), None);
    call!(POST, "/api/v1/auth/logout", t, None);
    s.stop().await;
    // The checker has teeth: a body of the wrong shape and an undocumented status fail.
    let mut json_headers = http::HeaderMap::new();
    json_headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    let before = c.failures.len();
    c.check(
        "GET",
        "/api/v1/kv/{key}",
        http::StatusCode::OK,
        &json_headers,
        &json!({"key": 5}),
    );
    c.check(
        "GET",
        "/api/v1/kv/{key}",
        http::StatusCode::IM_A_TEAPOT,
        &json_headers,
        &json!({}),
    );
    assert_eq!(c.failures.len(), before + 2, "{:?}", &c.failures[before..]);
    c.failures.truncate(before);
    assert!(c.checked >= 50, "{} responses checked", c.checked);
    assert!(
        c.failures.is_empty(),
        "{} of {} responses do not match docs/openapi.yaml:\n{}",
        c.failures.len(),
        c.checked,
        c.failures.join("\n")
    );
}
