//! The client side of TLS for `mqtts://`: the PEM files named on the command line
//! (`--mqtt-ca`, `--mqtt-cert`, `--mqtt-key`, read and checked while parsing) and the
//! rustls configuration built from them ([`MqttTls`]), with the ring provider and the
//! system's CAs as the default trust.
//!
//! Its own module so that [`crate::config`] (which parses the files) and
//! [`crate::mqtt`] (which connects with them) both depend on it rather than on each
//! other. Explaining a failed handshake in words stays with the connection, in
//! [`crate::mqtt::tls_failure`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

/// A PEM file named on the command line, read while parsing (so a missing or
/// unreadable file is a usage error, not a connection failure later). `Debug` shows
/// the path only: the file may hold a private key.
#[derive(Clone, PartialEq, Eq)]
pub struct PemFile {
    path: PathBuf,
    pem: Vec<u8>,
}

impl PemFile {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's contents (PEM text).
    pub fn pem(&self) -> &[u8] {
        &self.pem
    }
}

impl fmt::Debug for PemFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PemFile").field(&self.path).finish()
    }
}

fn read_pem_file(s: &str) -> Result<PemFile, String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    let pem = std::fs::read(s).map_err(|e| format!("cannot read the file: {e}"))?;
    Ok(PemFile {
        path: PathBuf::from(s),
        pem,
    })
}

/// One or more PEM certificates (`-----BEGIN CERTIFICATE-----`), all well-formed.
pub fn parse_certificate_file(s: &str) -> Result<PemFile, String> {
    let file = read_pem_file(s)?;
    let mut count = 0;
    for cert in CertificateDer::pem_slice_iter(&file.pem) {
        cert.map_err(|e| format!("not a valid PEM certificate file ({e})"))?;
        count += 1;
    }
    if count == 0 {
        return Err("no PEM certificate in the file (expected -----BEGIN CERTIFICATE-----)".into());
    }
    Ok(file)
}

/// A PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC).
pub fn parse_key_file(s: &str) -> Result<PemFile, String> {
    let file = read_pem_file(s)?;
    PrivateKeyDer::from_pem_slice(&file.pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            "no PEM private key in the file (expected -----BEGIN PRIVATE KEY-----)".into()
        }
        other => format!("not a valid PEM private key ({other})"),
    })?;
    Ok(file)
}

/// Why TLS files given on the command line cannot be used together.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("{path}: no certificate in it can be used as a CA")]
    NoUsableCa { path: String },
    #[error("--mqtt-cert {cert} and --mqtt-key {key} cannot be used together: {reason}")]
    ClientIdentity {
        cert: String,
        key: String,
        reason: String,
    },
}

/// How `mqtts://` connections check the broker and identify this client: the CA
/// certificates to trust (`--mqtt-ca`, else the system's) and an optional client
/// certificate (`--mqtt-cert`/`--mqtt-key`). Built by [`MqttTls::from_files`], which
/// checks everything, so that building client options later cannot fail.
#[derive(Clone, Default)]
pub struct MqttTls {
    ca: Option<PathBuf>,
    client_cert: Option<PathBuf>,
    /// `None`: the system's CAs and no client certificate ([`system_roots`]).
    config: Option<Arc<ClientConfig>>,
}

impl fmt::Debug for MqttTls {
    // Paths only: the rustls configuration holds the client's private key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MqttTls")
            .field("ca", &self.ca)
            .field("client_cert", &self.client_cert)
            .finish_non_exhaustive()
    }
}

impl MqttTls {
    /// Trust the certificates of `ca` (instead of the system's CAs) and present
    /// `identity` (certificate chain, private key) when the broker asks for one.
    pub fn from_files(
        ca: Option<&PemFile>,
        identity: Option<(&PemFile, &PemFile)>,
    ) -> Result<MqttTls, TlsSetupError> {
        if ca.is_none() && identity.is_none() {
            return Ok(MqttTls::default());
        }
        let roots = match ca {
            Some(file) => {
                let mut roots = RootCertStore::empty();
                // The file was checked while parsing: it holds PEM certificates.
                let certs = CertificateDer::pem_slice_iter(file.pem()).filter_map(Result::ok);
                let (added, _ignored) = roots.add_parsable_certificates(certs);
                if added == 0 {
                    return Err(TlsSetupError::NoUsableCa {
                        path: file.path().display().to_string(),
                    });
                }
                Arc::new(roots)
            }
            None => system_root_store(),
        };
        let builder = config_builder().with_root_certificates(roots);
        let config = match identity {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let identity_error = |reason: String| TlsSetupError::ClientIdentity {
                    cert: cert.path().display().to_string(),
                    key: key.path().display().to_string(),
                    reason,
                };
                let chain = CertificateDer::pem_slice_iter(cert.pem())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| identity_error(e.to_string()))?;
                let key_der = PrivateKeyDer::from_pem_slice(key.pem())
                    .map_err(|e| identity_error(e.to_string()))?;
                // rustls checks here that the key is the certificate's (KeyMismatch).
                builder
                    .with_client_auth_cert(chain, key_der)
                    .map_err(|e| identity_error(explain_identity_error(&e)))?
            }
        };
        Ok(MqttTls {
            ca: ca.map(|f| f.path().to_owned()),
            client_cert: identity.map(|(cert, _)| cert.path().to_owned()),
            config: Some(Arc::new(config)),
        })
    }

    /// The CA file given with `--mqtt-ca`, if any.
    pub fn ca(&self) -> Option<&Path> {
        self.ca.as_deref()
    }

    /// The client certificate given with `--mqtt-cert`, if any.
    pub fn client_cert(&self) -> Option<&Path> {
        self.client_cert.as_deref()
    }

    pub(crate) fn client_config(&self) -> Arc<ClientConfig> {
        self.config.clone().unwrap_or_else(system_roots)
    }
}

/// A rustls configuration builder with the ring provider and TLS 1.2/1.3. Explicit,
/// because the process default cannot be relied on: two providers compiled into one
/// binary make rustls refuse to choose (a panic at the first connection).
fn config_builder() -> rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier> {
    ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports TLS 1.2 and 1.3")
}

/// The system's trusted CAs (/etc/ssl/certs on Debian), read once per process.
fn system_root_store() -> Arc<RootCertStore> {
    static STORE: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    STORE
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::warn!("reading the system's CA certificates: {e}");
            }
            let mut roots = RootCertStore::empty();
            let (added, ignored) = roots.add_parsable_certificates(found.certs);
            tracing::debug!(added, ignored, "system CA certificates for mqtts://");
            Arc::new(roots)
        })
        .clone()
}

/// TLS with the system's CAs and no client certificate: `mqtts://` without
/// `--mqtt-ca`. An empty store (no CA bundle installed) is not an error here: every
/// broker is then refused with "unknown CA", which says what to do.
fn system_roots() -> Arc<ClientConfig> {
    static CONFIG: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            Arc::new(
                config_builder()
                    .with_root_certificates(system_root_store())
                    .with_no_client_auth(),
            )
        })
        .clone()
}

fn explain_identity_error(e: &rustls::Error) -> String {
    match e {
        rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
            "the key does not belong to the certificate".into()
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pem_file_prints_its_path_not_its_contents() {
        let file = PemFile {
            path: PathBuf::from("/etc/arng/client.key"),
            pem: b"-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n".to_vec(),
        };
        let dbg = format!("{file:?}");
        assert!(
            dbg.contains("client.key") && !dbg.contains("c2VjcmV0"),
            "{dbg}"
        );
    }
}
