//! The proxy inside the gateway's process: the gateway's `embedded_proxy` section, and the
//! follower that reads the routes and backends from the shared store (no HTTP hop:
//! [`helios_proxy::ProxyStore::follow`], a snapshot then each change) and puts each
//! catalog's table in service, as `--control` does over the gateway's feed.
//!
//! Invariant: the follower runs on its own thread (it waits on the store's feed) and
//! ends when its stop flag is set or the store closes.

use super::State;
use helios_proxy::{
    BreakerConfig, Catalog, FeedEvent, HealthCheck, HealthConfig, ProxyConfig, ProxyStore,
    RetryConfig, ServerLimits, Timeouts,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The gateway's `embedded_proxy` section: a reverse proxy served by the gateway's
/// process on its own listener, its routes and backends those of `/admin/proxy/*`.
/// `Default`: off, `127.0.0.1:8081` when on, the standalone proxy's defaults otherwise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbeddedProxySection {
    /// Serve the proxy.
    pub enabled: bool,
    /// Address to serve it on.
    pub listen: String,
    /// Peers whose forwarding headers are believed (CIDR blocks).
    pub trusted_proxies: Vec<String>,
    /// The active check's request.
    pub health_check: HealthCheck,
    /// Health thresholds and outlier ejection.
    pub health: HealthConfig,
    /// Per-backend circuit breakers.
    pub breaker: BreakerConfig,
    /// Retries.
    pub retry: RetryConfig,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// Connections, streams, drain.
    pub limits: ServerLimits,
}

impl Default for EmbeddedProxySection {
    fn default() -> Self {
        let p = ProxyConfig::default();
        EmbeddedProxySection {
            enabled: false,
            listen: p.listen,
            trusted_proxies: p.trusted_proxies,
            health_check: p.health_check,
            health: p.health,
            breaker: p.breaker,
            retry: p.retry,
            timeouts: p.timeouts,
            limits: p.limits,
        }
    }
}

impl EmbeddedProxySection {
    /// The proxy's configuration: these settings, no route yet (they come from the store).
    pub fn to_config(&self) -> ProxyConfig {
        ProxyConfig {
            listen: self.listen.clone(),
            trusted_proxies: self.trusted_proxies.clone(),
            health_check: self.health_check.clone(),
            health: self.health,
            breaker: self.breaker,
            retry: self.retry,
            timeouts: self.timeouts,
            limits: self.limits,
            ..ProxyConfig::default()
        }
    }

    /// Checks the settings when the proxy is on: the first bad key (within the section)
    /// and why.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if !self.enabled {
            return Ok(());
        }
        match self.to_config().validate_settings() {
            Ok(_) => Ok(()),
            Err(helios_proxy::ProxyError::Invalid { field, reason }) => Err((field, reason)),
            Err(other) => Err(("embedded_proxy", other.to_string())),
        }
    }
}

/// Follows the store's catalog on a thread of its own until `stop` is set or the store
/// closes, putting each catalog's table in service.
pub fn follow_store(
    state: Arc<State>,
    store: Arc<ProxyStore>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("proxy-follow".into())
        .spawn(move || {
            let mut follow = match store.follow(None) {
                Ok(f) => f,
                Err(e) => {
                    tracing::error!(error = %e, "cannot follow the proxy's routes in the store");
                    return;
                }
            };
            let mut catalog = Catalog::default();
            while !stop.load(Ordering::Acquire) {
                match follow.next(Duration::from_millis(250)) {
                    Ok(Some(FeedEvent::Snapshot { loaded, .. })) => {
                        for e in &loaded.skipped {
                            tracing::warn!(error = %e, "a stored proxy value is not valid; skipped");
                        }
                        catalog = loaded.catalog;
                    }
                    Ok(Some(FeedEvent::Change { ops, .. })) => {
                        for op in &ops {
                            if let Err(e) = catalog.apply_op(op) {
                                tracing::warn!(error = %e, "a proxy change is not valid; skipped");
                            }
                        }
                    }
                    Ok(None) => continue,
                    Err(helios_atlas::AtlasError::Closed) => return,
                    Err(e) => {
                        tracing::error!(error = %e, "following the proxy's routes failed");
                        return;
                    }
                }
                state.install_catalog(&catalog, "store");
            }
        })
}
