//! APOP (RFC 1939 §7): the greeting timestamp and the MD5 digest check.

use std::fmt;

use md5::{Digest, Md5};

/// Values the core cannot produce itself for a new session: a per-connection
/// nonce and the wall-clock time, used to build the APOP timestamp.
///
/// RFC 1939 §7 asks that the timestamp differ for every greeting. Build the
/// nonce from a source that never repeats for this server: a random `u64`, or
/// a process-wide counter mixed with the process id. The core reads neither a
/// clock nor a random number generator, so both values are arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Greeting {
    /// A value unique to this connection.
    pub nonce: u64,
    /// Seconds since the Unix epoch when the connection was accepted.
    pub unix_time: u64,
}

/// The APOP timestamp of a greeting, e.g. `<1896.697170952@dbc.mtview.ca.us>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApopTimestamp(String);

impl ApopTimestamp {
    /// Builds `<nonce.unix_time@hostname>`.
    pub(crate) fn new(greeting: Greeting, hostname: &str) -> Self {
        Self(format!(
            "<{}.{}@{}>",
            greeting.nonce, greeting.unix_time, hostname
        ))
    }

    /// The timestamp, angle brackets included, as the digest covers it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ApopTimestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What an `APOP name digest` command proved: a digest over this session's
/// timestamp. The handler checks it against the user's shared secret with
/// [`ApopCredential::verify`]; the digest never needs to be handled by hand.
#[derive(Clone, PartialEq, Eq)]
pub struct ApopCredential {
    timestamp: ApopTimestamp,
    digest: [u8; 16],
}

impl ApopCredential {
    pub(crate) fn new(timestamp: ApopTimestamp, digest: [u8; 16]) -> Self {
        Self { timestamp, digest }
    }

    /// The timestamp of the greeting the client answered.
    pub fn timestamp(&self) -> &ApopTimestamp {
        &self.timestamp
    }

    /// True if the digest is MD5(timestamp ‖ secret). The comparison takes
    /// the same time wherever the digests differ.
    pub fn verify(&self, secret: &[u8]) -> bool {
        let expected = digest(&self.timestamp, secret);
        let diff = expected
            .iter()
            .zip(self.digest.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        diff == 0
    }
}

impl fmt::Debug for ApopCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApopCredential")
            .field("timestamp", &self.timestamp)
            .field("digest", &"..")
            .finish()
    }
}

/// MD5(timestamp ‖ secret), as a client computes it for `APOP`.
pub fn digest(timestamp: &ApopTimestamp, secret: &[u8]) -> [u8; 16] {
    let mut md5 = Md5::new();
    md5.update(timestamp.as_str().as_bytes());
    md5.update(secret);
    md5.finalize().into()
}

/// Parses the 32 hexadecimal digits of an APOP digest (either case).
pub(crate) fn parse_hex_digest(text: &[u8]) -> Option<[u8; 16]> {
    if text.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        *byte = (hi * 16 + lo) as u8;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rfc_timestamp() -> ApopTimestamp {
        ApopTimestamp::new(
            Greeting {
                nonce: 1896,
                unix_time: 697170952,
            },
            "dbc.mtview.ca.us",
        )
    }

    #[test]
    fn rfc1939_example_digest() {
        // RFC 1939 §7: shared secret "tanstaaf".
        let ts = rfc_timestamp();
        assert_eq!(ts.as_str(), "<1896.697170952@dbc.mtview.ca.us>");
        let d = parse_hex_digest(b"c4c9334bac560ecc979e58001b3e22fb").unwrap();
        assert_eq!(digest(&ts, b"tanstaaf"), d);
        let cred = ApopCredential::new(ts, d);
        assert!(cred.verify(b"tanstaaf"));
        assert!(!cred.verify(b"tanstaaF"));
        assert!(!cred.verify(b""));
        assert!(!format!("{cred:?}").contains("c4c9"));
    }

    #[test]
    fn hex_digest_parsing() {
        assert!(parse_hex_digest(b"C4C9334BAC560ECC979E58001B3E22FB").is_some());
        assert!(parse_hex_digest(b"c4c9334bac560ecc979e58001b3e22f").is_none());
        assert!(parse_hex_digest(b"g4c9334bac560ecc979e58001b3e22fb").is_none());
        assert!(parse_hex_digest(b"+4c9334bac560ecc979e58001b3e22fb").is_none());
    }
}
