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
}
