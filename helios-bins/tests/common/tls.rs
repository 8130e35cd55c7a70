//! The TLS client side of the gateway's and the proxy's tests: a self-signed certificate for `localhost`
//! (rcgen) written into the configuration, a rustls connector that trusts only it, and
//! HTTP/1.1 or HTTP/2 (chosen by ALPN) over the connection.

use bytes::Bytes;
use helios_bins::config::{GatewayConfig, TlsSection};
use http::{Method, Request};
use http_body_util::Empty;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use tokio::net::TcpStream;

/// The test's certificate authority: the one certificate clients trust.
pub struct Pki {
    /// The certificate, PEM.
    pub cert_pem: String,
}

/// A TLS connection to the gateway.
pub type Tls = tokio_rustls::client::TlsStream<TcpStream>;

/// A self-signed certificate for `localhost`, written as PEM files into `dir` and set as
/// `cfg`'s `tls.cert_file` and `tls.key_file`.
pub fn pki(dir: &Path, cfg: &mut GatewayConfig) -> Pki {
    let (pki, tls) = pki_files(dir);
    cfg.tls = tls;
    pki
}

/// A self-signed certificate for `localhost`, written as PEM files into `dir`: the
/// client's trust and the server's `tls` section.
pub fn pki_files(dir: &Path) -> (Pki, TlsSection) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_pem = ck.cert.pem();
    let cert_file = dir.join("cert.pem");
    let key_file = dir.join("key.pem");
    std::fs::write(&cert_file, &cert_pem).unwrap();
    std::fs::write(&key_file, ck.signing_key.serialize_pem()).unwrap();
    let tls = TlsSection {
        cert_file: cert_file.display().to_string(),
        key_file: key_file.display().to_string(),
    };
    (Pki { cert_pem }, tls)
}

/// A rustls connector trusting only `pki`'s certificate, offering `alpn`.
pub fn connector(pki: &Pki, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(pki.cert_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

/// A TLS connection to `localhost` at `addr`, handshake done, offering `alpn`.
pub async fn tls_stream(addr: SocketAddr, pki: &Pki, alpn: &[&[u8]]) -> Tls {
    let tcp = TcpStream::connect(addr).await.unwrap();
    connector(pki, alpn)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap()
}

/// HTTP/1.1 over `tls` (the connection driven by a task of its own): its request sender.
pub async fn http1_over(tls: Tls) -> http1::SendRequest<Empty<Bytes>> {
    let (send, conn) = http1::handshake(TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    send
}

/// HTTP/2 over `tls` (the connection driven by a task of its own): its request sender.
pub async fn http2_over(tls: Tls) -> http2::SendRequest<Empty<Bytes>> {
    let (send, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    send
}

/// A GET of `path` on `https://localhost` at `addr`'s port, without a body.
pub fn get(addr: SocketAddr, path: &str) -> Request<Empty<Bytes>> {
    Request::builder()
        .method(Method::GET)
        .uri(format!("https://localhost:{}{path}", addr.port()))
        .body(Empty::new())
        .unwrap()
}
