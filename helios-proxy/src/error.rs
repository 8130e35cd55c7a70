//! The proxy core's errors: one enum, each variant naming what the user must fix.

/// Errors of helios-proxy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// A setting or an argument failed its rules.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The setting (`backends`, `weight`, `balance`, ...).
        field: &'static str,
        /// Why, with the offending value.
        reason: String,
    },
    /// A value stored under a proxy key is not a valid spec for it (written around the
    /// admin API).
    #[error("stored {key}: {reason}")]
    Stored {
        /// The ATLAS key.
        key: String,
        /// Why.
        reason: String,
    },
    /// No route or backend has this id.
    #[error("no {kind} {id:?}")]
    NotFound {
        /// `route` or `backend`.
        kind: &'static str,
        /// The id asked for.
        id: String,
    },
    /// A backend that routes still name cannot be deleted.
    #[error("backend {id:?} is used by routes {routes:?}: change or delete them first")]
    InUse {
        /// The backend.
        id: String,
        /// The routes naming it.
        routes: Vec<String>,
    },
}
