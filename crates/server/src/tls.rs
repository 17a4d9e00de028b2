//! TLS with rustls (the `ring` provider: no OpenSSL, no system library): the listener's
//! certificate, and the CA certificates the node and the client trust.
//!
//! - `--tls-cert` and `--tls-key` together make the listener speak HTTPS only (TLS 1.2 or
//!   1.3, ALPN `http/1.1`, the only protocol the listener serves): clients, probes and
//!   peers all use https; a plain-HTTP request fails its handshake and is closed.
//! - `--tls-ca` is what the node trusts when it calls its peers, and nothing else: not the
//!   system's roots, which would accept any certificate a public authority issued for a
//!   peer's name. A node with TLS and peers refuses to start without it.
//! - No client certificates: clients prove who they are with bearer tokens and nodes with
//!   the cluster secret; TLS keeps both off the wire and proves each node to its caller.
//!
//! Every file is read and parsed at start, so that a missing, unreadable or malformed one
//! stops the node with a message naming its flag. Messages say what is wrong with a file,
//! never what is in it.

use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

/// The TLS side of the listener, from `--tls-cert` and `--tls-key`.
pub fn acceptor(cert: &Path, key: &Path) -> anyhow::Result<TlsAcceptor> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| file_error("--tls-cert", cert, "certificate", &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_error("--tls-cert", cert, "certificate", &e))?;
    if chain.is_empty() {
        bail!(
            "--tls-cert {}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it",
            cert.display()
        );
    }
    let private_key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| file_error("--tls-key", key, "private key", &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("the TLS provider supports no protocol version")?
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .map_err(|e| {
            anyhow!(
                "--tls-cert {} and --tls-key {} cannot be used together: {e}",
                cert.display(),
                key.display()
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The text of the CA file named by `flag`, checked to hold at least one certificate and
/// only certificates a TLS client can trust.
pub fn read_ca(flag: &str, path: &Path) -> anyhow::Result<Vec<u8>> {
    let text = std::fs::read(path)
        .with_context(|| format!("{flag} {}: cannot read it", path.display()))?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&text) {
        let cert = cert.map_err(|e| file_error(flag, path, "certificate", &e))?;
        roots.add(cert).map_err(|e| {
            anyhow!(
                "{flag} {}: a certificate in it cannot be trusted: {e}",
                path.display()
            )
        })?;
    }
    if roots.is_empty() {
        bail!(
            "{flag} {}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it",
            path.display()
        );
    }
    Ok(text)
}

/// What is wrong with a PEM file, without quoting it (it may be a key).
fn file_error(flag: &str, path: &Path, what: &str, error: &pem::Error) -> anyhow::Error {
    let why = match error {
        pem::Error::Io(e) => format!("cannot read it: {e}"),
        pem::Error::NoItemsFound => format!("no PEM {what} in it"),
        pem::Error::MissingSectionEnd { .. } => "a PEM section has no END line".into(),
        pem::Error::IllegalSectionStart { .. } => "a PEM BEGIN line is malformed".into(),
        pem::Error::Base64Decode(_) => "a PEM section is not valid base64".into(),
        pem::Error::SectionTooLarge => "a PEM section is too large".into(),
        _ => format!("not a PEM {what} file"),
    };
    anyhow!("{flag} {}: {why}", path.display())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn a_file_without_certificates_is_refused_naming_the_flag() {
        let files = tempfile::tempdir().unwrap();
        let dir = files.path();
        let garbage = dir.join("garbage.pem");
        std::fs::write(&garbage, "not a certificate\n").unwrap();
        let error = read_ca("--tls-ca", &garbage).unwrap_err().to_string();
        assert!(error.starts_with("--tls-ca "), "{error}");
        assert!(error.contains("no PEM certificate"), "{error}");

        let broken = dir.join("broken.pem");
        std::fs::write(&broken, "-----BEGIN CERTIFICATE-----\n@@@@\n").unwrap();
        let error = read_ca("--tls-ca", &broken).unwrap_err().to_string();
        assert!(error.contains("no END line"), "{error}");

        let missing = dir.join("missing.pem");
        let Err(error) = acceptor(&missing, &missing) else {
            panic!("a missing certificate file was accepted");
        };
        let error = error.to_string();
        assert!(error.starts_with("--tls-cert "), "{error}");
        assert!(error.contains("cannot read it"), "{error}");
    }
}
