//! Specs the unit tests build (catalog and store tests share them).

use crate::route::{BackendSpec, RouteBackend, RouteSpec};

/// Backend `id` at 127.0.0.1:`port`.
pub(crate) fn backend(id: &str, port: u16) -> BackendSpec {
    BackendSpec {
        id: id.into(),
        url: format!("http://127.0.0.1:{port}"),
    }
}

/// Route `id` for every host on `prefix` over `backends` (weight 1, round-robin).
pub(crate) fn route(id: &str, prefix: &str, backends: &[&str]) -> RouteSpec {
    RouteSpec {
        id: id.into(),
        host: None,
        path_prefix: prefix.into(),
        backends: backends
            .iter()
            .map(|b| RouteBackend {
                backend: (*b).into(),
                weight: 1,
            })
            .collect(),
        balance: "round-robin".into(),
    }
}
