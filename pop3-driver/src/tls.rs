//! TLS settings shared by every adapter: a server certificate that can be
//! replaced while the server runs, and the rustls configuration built from
//! PEM files (ring provider, TLS 1.2 and 1.3 only, ALPN `pop3` offered).
//!
//! The adapters take a [`TlsConfig`] through [`Service::tls`](crate::Service::tls)
//! and run every handshake (after STLS, or first thing on an implicit TLS
//! listener, RFC 8314) with the configuration [`TlsConfig::current`] holds
//! at that moment: a certificate swapped in with [`TlsConfig::reload_pem_files`]
//! serves new handshakes, while sessions already in TLS keep theirs.
//!
//! ```
//! use pop3_driver::tls::TlsConfig;
//!
//! let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
//! let tls = TlsConfig::from_pem(cert.cert.pem().as_bytes(), cert.signing_key.serialize_pem().as_bytes())?;
//! assert_eq!(tls.current().alpn_protocols, [b"pop3".to_vec()]);
//! // A key that does not belong to the certificate is refused, and the old one stays.
//! let other = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
//! let mixed = pop3_driver::tls::server_config(
//!     cert.cert.pem().as_bytes(),
//!     other.signing_key.serialize_pem().as_bytes(),
//! );
//! assert!(mixed.unwrap_err().to_string().contains("do not belong together"));
//! # Ok::<(), pop3_driver::tls::TlsError>(())
//! ```

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use pop3_proto::Config;
pub use rustls;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

/// The ALPN protocol id of POP3 (RFC 8314 §7.2, IANA's ALPN registry): offered
/// by every server configuration built here.
pub const ALPN_POP3: &[u8] = b"pop3";

/// The longest a TLS handshake may take (implicit TLS and after STLS),
/// unless the idle timeout is shorter: see [`handshake_deadline`].
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(60);

/// When a handshake starting at `now` must have finished: after
/// [`HANDSHAKE_TIMEOUT`], or the idle timeout of `config` if that is shorter
/// (tests shorten it with `allow_short_idle_timeout`).
pub fn handshake_deadline(config: &Config, now: Instant) -> Instant {
    now + config.idle_timeout().min(HANDSHAKE_TIMEOUT)
}

/// Why a certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The certificate chain has no `CERTIFICATE` block, or a broken one.
    #[error("{what}: no usable PEM certificate ({reason}); expected \"-----BEGIN CERTIFICATE-----\" blocks, the server's first")]
    Certificate {
        /// The file, or "certificate chain" for bytes.
        what: String,
        /// What was wrong.
        reason: String,
    },
    /// The key has no unencrypted private key block, or a broken one.
    #[error("{what}: no usable PEM private key ({reason}); expected an unencrypted PKCS#8, RSA or EC private key block")]
    Key {
        /// The file, or "private key" for bytes.
        what: String,
        /// What was wrong.
        reason: String,
    },
    /// rustls refused the pair: a key it cannot use, or one that does not
    /// belong to the first certificate.
    #[error("the certificate and the key do not belong together, or the key is unusable: {0}")]
    Rejected(rustls::Error),
}

/// Builds the server configuration for a PEM certificate chain (the
/// server's certificate first, then its intermediates) and a PEM private
/// key: ring provider, TLS 1.3 and 1.2 only, no client certificates, ALPN
/// [`ALPN_POP3`].
///
/// # Errors
/// [`TlsError`] saying what is wrong with the chain or the key.
pub fn server_config(cert_chain_pem: &[u8], key_pem: &[u8]) -> Result<ServerConfig, TlsError> {
    build(cert_chain_pem, "certificate chain", key_pem, "private key")
}

fn build(
    chain_pem: &[u8],
    chain_name: &str,
    key_pem: &[u8],
    key_name: &str,
) -> Result<ServerConfig, TlsError> {
    let chain = CertificateDer::pem_slice_iter(chain_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Certificate {
            what: chain_name.to_owned(),
            reason: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Certificate {
            what: chain_name.to_owned(),
            reason: "none found".to_owned(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::Key {
        what: key_name.to_owned(),
        reason: match e {
            rustls::pki_types::pem::Error::NoItemsFound => "none found".to_owned(),
            other => other.to_string(),
        },
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::Rejected)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(TlsError::Rejected)?;
    config.alpn_protocols = vec![ALPN_POP3.to_vec()];
    Ok(config)
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// The server's TLS configuration, replaceable while it serves (certificate
/// rotation). Cheap to clone; clones share one configuration, so the clone
/// an operator reloads is the one every adapter's next handshake uses.
#[derive(Clone)]
pub struct TlsConfig {
    current: Arc<RwLock<Arc<ServerConfig>>>,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("alpn_protocols", &self.current().alpn_protocols)
            .finish_non_exhaustive()
    }
}

impl TlsConfig {
    /// Serves with `config` as it is (bring your own rustls configuration;
    /// [`server_config`] builds the usual one).
    pub fn new(config: impl Into<Arc<ServerConfig>>) -> Self {
        Self {
            current: Arc::new(RwLock::new(config.into())),
        }
    }

    /// Serves a PEM certificate chain and key (see [`server_config`]).
    ///
    /// # Errors
    /// What is wrong with them.
    pub fn from_pem(cert_chain_pem: &[u8], key_pem: &[u8]) -> Result<Self, TlsError> {
        Ok(Self::new(server_config(cert_chain_pem, key_pem)?))
    }

    /// Serves the PEM certificate chain (full chain, the server's first)
    /// and private key in these files.
    ///
    /// # Errors
    /// A file that cannot be read, or what is wrong with its contents.
    pub fn from_pem_files(cert_chain: &Path, key: &Path) -> Result<Self, TlsError> {
        Ok(Self::new(Self::load(cert_chain, key)?))
    }

    fn load(cert_chain: &Path, key: &Path) -> Result<ServerConfig, TlsError> {
        build(
            &read(cert_chain)?,
            &cert_chain.display().to_string(),
            &read(key)?,
            &key.display().to_string(),
        )
    }

    /// The configuration a handshake starting now uses.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces the configuration for every later handshake; connections
    /// already in TLS keep theirs.
    pub fn replace(&self, config: impl Into<Arc<ServerConfig>>) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = config.into();
    }

    /// Reads the files again (after a certificate rotation) and serves
    /// them to every later handshake. If they are unusable, nothing
    /// changes: the configuration served so far stays.
    ///
    /// # Errors
    /// Why the new files were not taken.
    pub fn reload_pem_files(&self, cert_chain: &Path, key: &Path) -> Result<(), TlsError> {
        let config = Self::load(cert_chain, key)?;
        self.replace(config);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (String, String) {
        let c = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        (c.cert.pem(), c.signing_key.serialize_pem())
    }

    #[test]
    fn errors_say_why() {
        let (cert, key) = pair();
        let e = server_config(b"", key.as_bytes()).unwrap_err();
        assert!(
            e.to_string()
                .contains("no usable PEM certificate (none found)"),
            "{e}"
        );
        let e = server_config(cert.as_bytes(), cert.as_bytes()).unwrap_err();
        assert!(
            e.to_string()
                .contains("no usable PEM private key (none found)"),
            "{e}"
        );
        let broken = cert.replace("-----END CERTIFICATE-----", "");
        let e = server_config(broken.as_bytes(), key.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("missing section end marker"), "{e}");
        let e = TlsConfig::from_pem_files(Path::new("/nonexistent/cert.pem"), Path::new("k"))
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("cannot read /nonexistent/cert.pem: "),
            "{e}"
        );
    }

    #[test]
    fn versions_and_alpn() {
        let (cert, key) = pair();
        let config = server_config(cert.as_bytes(), key.as_bytes()).unwrap();
        assert_eq!(config.alpn_protocols, [b"pop3".to_vec()]);
        // A key and certificate in one file work too (the key is found among them).
        let both = format!("{cert}{key}");
        assert!(server_config(both.as_bytes(), both.as_bytes()).is_ok());
    }

    #[test]
    fn reload_keeps_the_old_configuration_on_error() {
        let dir = std::env::temp_dir().join(format!("pop3-driver-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
        let (cert, key) = pair();
        std::fs::write(&cert_path, &cert).unwrap();
        std::fs::write(&key_path, &key).unwrap();
        let tls = TlsConfig::from_pem_files(&cert_path, &key_path).unwrap();
        let first = tls.current();
        let clone = tls.clone();
        std::fs::write(&cert_path, "not a certificate").unwrap();
        assert!(clone.reload_pem_files(&cert_path, &key_path).is_err());
        assert!(Arc::ptr_eq(&tls.current(), &first), "the old one stays");
        let (cert, key) = pair();
        std::fs::write(&cert_path, &cert).unwrap();
        std::fs::write(&key_path, &key).unwrap();
        clone.reload_pem_files(&cert_path, &key_path).unwrap();
        assert!(
            !Arc::ptr_eq(&tls.current(), &first),
            "clones share the new one"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn handshake_deadline_is_capped() {
        let now = Instant::now();
        let config = Config::builder().build().unwrap();
        assert_eq!(handshake_deadline(&config, now), now + HANDSHAKE_TIMEOUT);
        let short = Config::builder()
            .allow_short_idle_timeout()
            .idle_timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        assert_eq!(
            handshake_deadline(&short, now),
            now + Duration::from_secs(2)
        );
    }
}
