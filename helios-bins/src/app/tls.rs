//! TLS termination for the HTTP servers (the gateway's API, the proxy): rustls with the
//! aws-lc-rs provider, from PEM files named in the config (`tls.cert_file`, `tls.key_file`).
//!
//! Owns loading and checking the certificate chain and key at start, so a bad file fails
//! the start naming the key and the file, never the first handshake. ALPN offers `h2` and
//! `http/1.1`. The handshake runs inside the connection's task, bounded by the header read
//! timeout, so a client that opens a socket and never finishes a handshake holds a
//! connection slot no longer than one that never sends a request head.

use crate::config::TlsSection;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;

/// A configured TLS acceptor.
#[derive(Clone)]
pub struct Tls {
    acceptor: TlsAcceptor,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").finish_non_exhaustive()
    }
}

impl Tls {
    /// Loads the files named in `cfg`; `Ok(None)` when TLS is off. Errors name the config
    /// key and the file.
    pub fn load(cfg: &TlsSection) -> Result<Option<Tls>, String> {
        if !cfg.enabled() {
            return Ok(None);
        }
        // The process-wide default; a second install (tests, embedders) is harmless.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cfg.cert_file)
            .map_err(|e| format!("tls.cert_file {}: {e}", cfg.cert_file))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("tls.cert_file {}: {e}", cfg.cert_file))?;
        if certs.is_empty() {
            return Err(format!(
                "tls.cert_file {}: no CERTIFICATE block in the file",
                cfg.cert_file
            ));
        }
        let key = PrivateKeyDer::from_pem_file(&cfg.key_file)
            .map_err(|e| format!("tls.key_file {}: {e}", cfg.key_file))?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("tls: {e}"))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| {
                format!(
                    "tls.key_file {}: does not fit tls.cert_file {}: {e}",
                    cfg.key_file, cfg.cert_file
                )
            })?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Some(Tls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
        }))
    }

    /// The acceptor for one connection.
    pub fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }
}
