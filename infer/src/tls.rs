//! TLS with rustls (ring): certificate files, or a self-signed certificate made at start.

use std::path::PathBuf;

use axum_server::tls_rustls::RustlsConfig;

/// How the server speaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain HTTP.
    Off,
    /// HTTPS with a PEM certificate chain and private key.
    Files {
        /// Certificate chain (PEM).
        cert: PathBuf,
        /// Private key (PEM).
        key: PathBuf,
    },
    /// HTTPS with a certificate for `localhost` generated at start.
    SelfSigned,
}

/// The rustls configuration for `mode` (`None` for plain HTTP).
pub async fn rustls_config(mode: &TlsMode) -> Result<Option<RustlsConfig>, String> {
    // One process-wide provider; a second install (tests) is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match mode {
        TlsMode::Off => Ok(None),
        TlsMode::Files { cert, key } => RustlsConfig::from_pem_file(cert, key)
            .await
            .map(Some)
            .map_err(|e| format!("TLS certificate {} / key {}: {e}", cert.display(), key.display())),
        TlsMode::SelfSigned => {
            let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
            let cert =
                rcgen::generate_simple_self_signed(names).map_err(|e| format!("self-signed certificate: {e}"))?;
            RustlsConfig::from_pem(
                cert.cert.pem().into_bytes(),
                cert.signing_key.serialize_pem().into_bytes(),
            )
            .await
            .map(Some)
            .map_err(|e| format!("self-signed certificate: {e}"))
        }
    }
}
