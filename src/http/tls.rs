//! HTTPS on the main listener (rustls, ring): the certificate and key from PEM files
//! (`tls.cert_path`, `tls.key_path`), HTTP/2 and HTTP/1.1 offered over ALPN, and a
//! reload on SIGHUP. The certificate is handed out per handshake by a resolver whose
//! current pair a reload swaps: open connections keep theirs, new ones get the new
//! one, and a reload that fails keeps the old pair and logs why.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::error::AppError;

/// Why the certificate or key cannot be used; the message names the file.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(String);

/// The first byte of every TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// The serving side of HTTPS: the acceptor for the accept loop, and the files to
/// reload from.
pub struct Tls {
    acceptor: TlsAcceptor,
    resolver: Arc<CertResolver>,
    provider: Arc<CryptoProvider>,
    cert_path: String,
    key_path: String,
}

impl Tls {
    /// Load the pair; a missing, unreadable or wrong file is an error naming it.
    pub fn load(cert_path: &str, key_path: &str) -> Result<Arc<Self>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let pair = load_pair(&provider, cert_path, key_path)?;
        let resolver = Arc::new(CertResolver(RwLock::new(pair)));
        let mut config = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError(format!("TLS setup: {e}")))?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(Self {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            resolver,
            provider,
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
        }))
    }

    pub fn acceptor(&self) -> TlsAcceptor {
        self.acceptor.clone()
    }

    /// Read the files again and serve the new pair to new connections; on an error
    /// the current pair stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let pair = load_pair(&self.provider, &self.cert_path, &self.key_path)?;
        *self.resolver.0.write().unwrap_or_else(|e| e.into_inner()) = pair;
        Ok(())
    }

    /// Reload on every SIGHUP until `stop`. The handler is installed now, so a
    /// signal sent right after the start is not missed (nor kills the process).
    pub fn reload_on_sighup(self: Arc<Self>, stop: CancellationToken) {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let mut hangups = match signal(SignalKind::hangup()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "no SIGHUP handler: the certificate is not reloaded");
                    return;
                }
            };
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        got = hangups.recv() => if got.is_none() { return },
                    }
                    match self.reload() {
                        Ok(()) => {
                            tracing::info!(cert = %self.cert_path, "TLS certificate reloaded")
                        }
                        Err(e) => tracing::warn!(
                            error = %e,
                            "TLS certificate reload failed; the current certificate stays"
                        ),
                    }
                }
            });
        }
        #[cfg(not(unix))]
        let _ = stop;
    }
}

/// Hands the current pair to each handshake.
struct CertResolver(RwLock<Arc<CertifiedKey>>);

impl std::fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CertResolver")
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

fn load_pair(
    provider: &CryptoProvider,
    cert_path: &str,
    key_path: &str,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let pem_error = |what: &str, path: &str, e: pem::Error| match e {
        pem::Error::Io(e) => TlsError(format!("cannot read the TLS {what} {path}: {e}")),
        pem::Error::NoItemsFound => TlsError(format!(
            "the TLS {what} {path} holds no PEM {what} (a -----BEGIN … block)"
        )),
        e => TlsError(format!("the TLS {what} {path} is not valid PEM: {e}")),
    };
    let certs = CertificateDer::pem_file_iter(cert_path)
        .map_err(|e| pem_error("certificate", cert_path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error("certificate", cert_path, e))?;
    if certs.is_empty() {
        return Err(pem_error(
            "certificate",
            cert_path,
            pem::Error::NoItemsFound,
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| pem_error("key", key_path, e))?;
    let pair = CertifiedKey::from_der(certs, key, provider).map_err(|e| {
        TlsError(format!(
            "the TLS key {key_path} cannot be used with the certificate {cert_path}: {e}"
        ))
    })?;
    Ok(Arc::new(pair))
}

/// The TLS handshake on an accepted connection, within `timeout`. A client that
/// speaks plain HTTP to this port gets a short plaintext 400 saying so and is closed;
/// nothing it sent is processed.
pub async fn handshake(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    timeout: Duration,
) -> Option<TlsStream<TcpStream>> {
    let attempt = async {
        let mut first = [0u8; 1];
        let n = stream.peek(&mut first).await.ok()?;
        if n == 1 && first[0] != TLS_HANDSHAKE_RECORD {
            refuse_plaintext(stream).await;
            return None;
        }
        match acceptor.accept(stream).await {
            Ok(tls) => Some(tls),
            Err(e) => {
                tracing::debug!(error = %e, "TLS handshake failed");
                None
            }
        }
    };
    tokio::time::timeout(timeout, attempt).await.ok().flatten()
}

async fn refuse_plaintext(mut stream: TcpStream) {
    // Read what already arrived, so that closing does not reset the connection
    // before the client reads the answer.
    let mut sink = [0u8; 8192];
    while matches!(stream.try_read(&mut sink), Ok(n) if n > 0) {}
    let body = AppError::BadRequest(
        "this port speaks HTTPS: use an https:// URL (plain HTTP is refused)".into(),
    )
    .json_body();
    let head = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(&[head.as_bytes(), &body].concat()).await;
    let _ = stream.shutdown().await;
    tracing::debug!("plain HTTP on the TLS port refused");
}
