//! pop3d's certificate: from PEM files (reloaded on SIGHUP, a bad new one
//! keeping the old), or for the demo a self-signed one made at start.

use std::path::PathBuf;

use pop3_tokio::TlsConfig;
use tracing::{error, info, warn};

/// Where the certificate comes from.
#[derive(Debug)]
enum Source {
    /// `--tls-cert` and `--tls-key`.
    Files { cert: PathBuf, key: PathBuf },
    /// Generated at start (the demo).
    Generated,
}

/// The server's TLS configuration and where it came from.
#[derive(Debug)]
pub(crate) struct Tls {
    /// What the service hands every handshake; reloading replaces its contents.
    pub(crate) config: TlsConfig,
    source: Source,
}

impl Tls {
    /// The PEM certificate chain and key in these files.
    pub(crate) fn from_files(cert: PathBuf, key: PathBuf) -> Result<Self, String> {
        let config = TlsConfig::from_pem_files(&cert, &key).map_err(|e| e.to_string())?;
        Ok(Self {
            config,
            source: Source::Files { cert, key },
        })
    }

    /// A self-signed certificate for `localhost`, 127.0.0.1 and ::1, made now.
    pub(crate) fn generated() -> Result<Self, String> {
        let names = ["localhost", "127.0.0.1", "::1"]
            .map(str::to_owned)
            .to_vec();
        let made = rcgen::generate_simple_self_signed(names)
            .map_err(|e| format!("cannot make the demo certificate: {e}"))?;
        let config = TlsConfig::from_pem(
            made.cert.pem().as_bytes(),
            made.signing_key.serialize_pem().as_bytes(),
        )
        .map_err(|e| format!("demo certificate: {e}"))?;
        Ok(Self {
            config,
            source: Source::Generated,
        })
    }

    /// Reads the certificate files again (SIGHUP): new handshakes get the
    /// new certificate, sessions keep theirs; a bad one keeps the old.
    pub(crate) fn reload(&self) {
        match &self.source {
            Source::Files { cert, key } => match self.config.reload_pem_files(cert, key) {
                Ok(()) => info!(cert = %cert.display(), "TLS certificate reloaded"),
                Err(e) => error!("TLS certificate not reloaded, keeping the old certificate: {e}"),
            },
            Source::Generated => {
                warn!("SIGHUP: the demo certificate is made at start; there is nothing to reload")
            }
        }
    }
}
