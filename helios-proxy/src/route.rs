//! The route table: which route (and so which pool of backends) serves a request, by host
//! and path prefix, the longest prefix winning (nginx's prefix locations, Envoy's prefix
//! routes). Built from specs (YAML config, or the ATLAS records `proxy:route:{id}` and
//! `proxy:backend:{id}`, whose keys come from `helios_core::keys`), validated as a whole:
//! a table either builds or names what is wrong.
//!
//! Matching: the request's host is compared without its port and case-insensitively.
//! Routes naming that host are tried first, longest prefix first; then routes naming no
//! host. A prefix matches when the path starts with it (no segment rule, as nginx and
//! Envoy: `/api` matches `/apix`; write `/api/` to mean the directory).
//!
//! Invariant (property-tested against a brute-force search): [`RouteTable::route`] returns
//! the matching route with the longest prefix among those of the request's host, else
//! among the host-less ones, else none.

use crate::balance::{Policy, WEIGHT_MAX};
use crate::error::ProxyError;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Most routes in one table: a lookup scans a host's routes.
pub const ROUTES_MAX: usize = 10_000;
/// Longest path prefix and host name.
pub const MATCH_SIZE_MAX: usize = 1024;

/// A backend: where requests go. Stored as `proxy:backend:{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendSpec {
    /// Its id (`[A-Za-z0-9._-]`, 1 to 64).
    pub id: String,
    /// `http://host:port` (an origin: no path, no query).
    pub url: String,
}

/// A backend in a route, with its weight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteBackend {
    /// The backend's id.
    pub backend: String,
    /// Its weight under the weighted policy (default 1).
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

/// A route. Stored as `proxy:route:{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// Its id (`[A-Za-z0-9._-]`, 1 to 64).
    pub id: String,
    /// The host it serves (without a port), or none for every host.
    #[serde(default)]
    pub host: Option<String>,
    /// The path prefix it serves; starts with `/`.
    pub path_prefix: String,
    /// Its backends.
    pub backends: Vec<RouteBackend>,
    /// `round-robin` (default), `least-conn`, `weighted` or `p2c-ewma`.
    #[serde(default = "round_robin")]
    pub balance: String,
}

fn round_robin() -> String {
    "round-robin".to_owned()
}

/// A backend's origin, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// `host:port` (the port made explicit: 80 when the URL has none).
    pub authority: String,
}

/// A route of a built table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The route's position in the specs the table was built from: a server keeps its
    /// per-route state in a list by this index, with no lookup by id per request.
    pub index: usize,
    /// The route's id.
    pub id: String,
    /// Lowercased host, if the route names one.
    pub host: Option<String>,
    /// The path prefix.
    pub path_prefix: String,
    /// The policy.
    pub policy: Policy,
    /// The backends, in the spec's order (a pool's index is a position here), with their
    /// origins and weights.
    pub backends: Vec<(String, Origin, u32)>,
}

/// Routes by host, then host-less ones; each list longest prefix first.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    by_host: BTreeMap<String, Vec<Route>>,
    any_host: Vec<Route>,
}

fn invalid(field: &'static str, reason: String) -> ProxyError {
    ProxyError::Invalid { field, reason }
}

fn check_id(field: &'static str, id: &str) -> Result<(), ProxyError> {
    let ok = (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("{id:?}: 1 to 64 of A-Z a-z 0-9 . _ -"),
        ))
    }
}

/// Parses an origin URL: `http://host[:port]`, optionally with a trailing `/`.
pub fn parse_origin(url: &str) -> Result<Origin, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url:?}: only http:// backends are supported"))?;
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() || authority.contains(['/', '?', '#', '@', ' ']) {
        return Err(format!(
            "{url:?}: an origin is http://host:port, with no path"
        ));
    }
    let port_of = |p: &str| {
        p.parse::<u16>()
            .ok()
            .filter(|&p| p > 0)
            .ok_or_else(|| format!("{url:?}: bad port {p:?}"))
    };
    let (host, port) = if authority.starts_with('[') {
        // An IPv6 literal: [addr] or [addr]:port.
        let (h, rest) = authority
            .split_once(']')
            .ok_or_else(|| format!("{url:?}: unclosed ["))?;
        let host = &authority[..h.len() + 1];
        match rest {
            "" => (host, 80),
            _ => match rest.strip_prefix(':') {
                Some(p) => (host, port_of(p)?),
                None => return Err(format!("{url:?}: junk after ]")),
            },
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, port_of(p)?),
            None => (authority, 80),
        }
    };
    if host.is_empty() {
        return Err(format!("{url:?}: no host"));
    }
    Ok(Origin {
        authority: format!("{host}:{port}"),
    })
}

impl RouteTable {
    /// Builds a table from routes and the backends they name. Refuses, naming the route or
    /// backend: bad ids, duplicate ids, a prefix not starting with `/`, two routes with the
    /// same host and prefix, a route without backends or naming an unknown one, a bad
    /// weight, URL or policy, too many routes.
    pub fn new(routes: &[RouteSpec], backends: &[BackendSpec]) -> Result<Self, ProxyError> {
        if routes.len() > ROUTES_MAX {
            return Err(invalid(
                "routes",
                format!("{} routes; at most {ROUTES_MAX}", routes.len()),
            ));
        }
        let mut origins = BTreeMap::new();
        for b in backends {
            check_id("backend.id", &b.id)?;
            let origin = parse_origin(&b.url)
                .map_err(|e| invalid("backend.url", format!("backend {}: {e}", b.id)))?;
            if origins.insert(b.id.clone(), origin).is_some() {
                return Err(invalid(
                    "backend.id",
                    format!("{:?} is defined twice", b.id),
                ));
            }
        }
        let mut table = RouteTable::default();
        let mut ids = BTreeSet::new();
        let mut places = BTreeSet::new();
        for (index, r) in routes.iter().enumerate() {
            check_id("route.id", &r.id)?;
            if !ids.insert(r.id.as_str()) {
                return Err(invalid("route.id", format!("{:?} is defined twice", r.id)));
            }
            let at = |field, reason: String| invalid(field, format!("route {}: {reason}", r.id));
            if !r.path_prefix.starts_with('/') || r.path_prefix.len() > MATCH_SIZE_MAX {
                return Err(at(
                    "route.path_prefix",
                    format!(
                        "{:?} must start with / (at most {MATCH_SIZE_MAX} bytes)",
                        r.path_prefix
                    ),
                ));
            }
            let host = match &r.host {
                None => None,
                Some(h) => {
                    let h = h.to_ascii_lowercase();
                    if h.is_empty() || h.len() > MATCH_SIZE_MAX || h.contains([':', '/', ' ']) {
                        return Err(at(
                            "route.host",
                            format!("{h:?} is not a host name (no port)"),
                        ));
                    }
                    Some(h)
                }
            };
            if !places.insert((host.clone(), r.path_prefix.clone())) {
                return Err(at(
                    "route.path_prefix",
                    format!("another route serves {:?} on the same host", r.path_prefix),
                ));
            }
            if r.backends.is_empty() {
                return Err(at("route.backends", "no backend".to_owned()));
            }
            let policy: Policy = r
                .balance
                .parse()
                .map_err(|e: ProxyError| at("route.balance", e.to_string()))?;
            let mut list = Vec::with_capacity(r.backends.len());
            for rb in &r.backends {
                let origin = origins.get(&rb.backend).ok_or_else(|| {
                    at(
                        "route.backends",
                        format!("unknown backend {:?}", rb.backend),
                    )
                })?;
                if !(1..=WEIGHT_MAX).contains(&rb.weight) {
                    return Err(at(
                        "route.backends.weight",
                        format!("{} is outside 1..={WEIGHT_MAX}", rb.weight),
                    ));
                }
                list.push((rb.backend.clone(), origin.clone(), rb.weight));
            }
            let route = Route {
                index,
                id: r.id.clone(),
                host: host.clone(),
                path_prefix: r.path_prefix.clone(),
                policy,
                backends: list,
            };
            match host {
                Some(h) => table.by_host.entry(h).or_default().push(route),
                None => table.any_host.push(route),
            }
        }
        let longest_first =
            |v: &mut Vec<Route>| v.sort_by_key(|r| std::cmp::Reverse(r.path_prefix.len()));
        table.by_host.values_mut().for_each(longest_first);
        longest_first(&mut table.any_host);
        Ok(table)
    }

    /// The route for a request to `host` (a `Host` header or `:authority`, a port allowed)
    /// and `path`. See the module docs.
    pub fn route(&self, host: Option<&str>, path: &str) -> Option<&Route> {
        let matching = |routes: &'_ [Route]| -> Option<usize> {
            routes.iter().position(|r| path.starts_with(&r.path_prefix))
        };
        if let Some(h) = host {
            let name = strip_port(h).to_ascii_lowercase();
            if let Some(routes) = self.by_host.get(&name)
                && let Some(i) = matching(routes)
            {
                return Some(&routes[i]);
            }
        }
        matching(&self.any_host).map(|i| &self.any_host[i])
    }

    /// Number of routes.
    pub fn len(&self) -> usize {
        self.any_host.len() + self.by_host.values().map(Vec::len).sum::<usize>()
    }

    /// Whether the table has no route.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every route, host-specific ones first.
    pub fn routes(&self) -> impl Iterator<Item = &Route> {
        self.by_host.values().flatten().chain(&self.any_host)
    }
}

/// A host header without its port (`[v6]:port` keeps its brackets).
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host
            .split_once(']')
            .map_or(host, |(h, _)| &host[..h.len() + 1]);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn backend(id: &str) -> BackendSpec {
        BackendSpec {
            id: id.into(),
            url: format!("http://127.0.0.1:{}", 9000 + id.len()),
        }
    }

    fn route(id: &str, host: Option<&str>, prefix: &str) -> RouteSpec {
        RouteSpec {
            id: id.into(),
            host: host.map(Into::into),
            path_prefix: prefix.into(),
            backends: vec![RouteBackend {
                backend: "b".into(),
                weight: 1,
            }],
            balance: "round-robin".into(),
        }
    }

    #[test]
    fn longest_prefix_and_host_first() {
        let t = RouteTable::new(
            &[
                route("root", None, "/"),
                route("api", None, "/api/"),
                route("api-v2", None, "/api/v2/"),
                route("shop", Some("Shop.Example"), "/"),
            ],
            &[backend("b")],
        )
        .unwrap();
        let id = |h, p| t.route(h, p).map(|r| r.id.as_str());
        assert_eq!(id(None, "/api/v2/x"), Some("api-v2"));
        assert_eq!(id(None, "/api/v1"), Some("api"));
        assert_eq!(id(None, "/other"), Some("root"));
        assert_eq!(id(Some("shop.example:8081"), "/api/v2/x"), Some("shop"));
        assert_eq!(id(Some("elsewhere"), "/api/"), Some("api"));
    }

    #[test]
    fn bad_tables_name_the_route_or_backend() {
        let err = |routes: &[RouteSpec], backends: &[BackendSpec]| match RouteTable::new(
            routes, backends,
        ) {
            Err(ProxyError::Invalid { field, reason }) => (field, reason),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            err(&[route("r", None, "api")], &[backend("b")]).0,
            "route.path_prefix"
        );
        assert_eq!(
            err(
                &[route("r", None, "/"), route("s", None, "/")],
                &[backend("b")]
            )
            .0,
            "route.path_prefix"
        );
        let (f, why) = err(&[route("r", None, "/")], &[]);
        assert_eq!(f, "route.backends");
        assert!(
            why.contains("route r") && why.contains("unknown backend"),
            "{why}"
        );
        let bad_url = BackendSpec {
            id: "b".into(),
            url: "https://x".into(),
        };
        assert_eq!(err(&[], &[bad_url]).0, "backend.url");
        let mut weighted = route("r", None, "/");
        weighted.backends[0].weight = 0;
        assert_eq!(err(&[weighted], &[backend("b")]).0, "route.backends.weight");
    }

    #[test]
    fn origins() {
        assert_eq!(
            parse_origin("http://127.0.0.1:9001").unwrap().authority,
            "127.0.0.1:9001"
        );
        assert_eq!(
            parse_origin("http://backend/").unwrap().authority,
            "backend:80"
        );
        assert_eq!(
            parse_origin("http://[::1]:8080").unwrap().authority,
            "[::1]:8080"
        );
        assert_eq!(parse_origin("http://[::1]").unwrap().authority, "[::1]:80");
        for bad in [
            "127.0.0.1:9001",
            "http://",
            "http://h:0",
            "http://h:x",
            "http://h/p",
            "http://u@h",
        ] {
            assert!(parse_origin(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn specs_round_trip_as_json_records() {
        let r = route("r", Some("h"), "/x");
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<RouteSpec>(&text).unwrap(), r);
        assert!(
            serde_json::from_str::<RouteSpec>(
                r#"{"id":"r","path_prefix":"/","backends":[],"extra":1}"#
            )
            .is_err()
        );
    }

    proptest! {
        /// Against a brute-force search over every route.
        #[test]
        fn lookups_match_the_brute_force_answer(
            specs in proptest::collection::vec(
                (proptest::option::of("[ab]"), "/[xy/]{0,4}"),
                1..12,
            ),
            queries in proptest::collection::vec(
                (proptest::option::of("[abAB](:80)?"), "/[xy/]{0,6}"),
                1..20,
            ),
        ) {
            let mut seen = BTreeSet::new();
            let routes: Vec<RouteSpec> = specs
                .iter()
                .filter(|(h, p)| seen.insert((h.clone(), p.clone())))
                .enumerate()
                .map(|(i, (h, p))| route(&format!("r{i}"), h.as_deref(), p))
                .collect();
            let t = RouteTable::new(&routes, &[backend("b")]).unwrap();
            for (host, path) in &queries {
                let name = host.as_deref().map(|h| strip_port(h).to_ascii_lowercase());
                let best = |want_host: Option<&str>| {
                    routes
                        .iter()
                        .filter(|r| r.host.as_deref() == want_host && path.starts_with(&r.path_prefix))
                        .map(|r| r.path_prefix.len())
                        .max()
                };
                let want = name
                    .as_deref()
                    .and_then(|n| best(Some(n)).map(|len| (Some(n.to_owned()), len)))
                    .or_else(|| best(None).map(|len| (None, len)));
                let found = t.route(host.as_deref(), path);
                if let Some(r) = found {
                    prop_assert_eq!(&routes[r.index].id, &r.id, "index is the spec's position");
                }
                let got = found.map(|r| (r.host.clone(), r.path_prefix.len()));
                prop_assert_eq!(got, want);
            }
            prop_assert_eq!(t.len(), routes.len());
        }
    }
}
