//! `docs/openapi.yaml` matches the router: every (method, path) the gateway serves
//! (`helios_bins::gateway::routes()`) is documented and every documented operation is
//! served; every operation documents at least one error response as
//! `application/problem+json` with the shared `Problem` schema; every operation needs a
//! Bearer token except the open ones (ops and the three ways to get a token), which are
//! documented as open; and every `{param}` of a path is declared as a path parameter.

use serde_json::Value;
use std::collections::BTreeSet;

const DOC: &str = "../docs/openapi.yaml";
const PROBLEM_REF: &str = "#/components/schemas/Problem";
const PROBLEM_MEDIA: &str = "application/problem+json";
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// The operations that take no token.
const OPEN: [(&str, &str); 6] = [
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
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
