//! SCRAM-SHA-256 (RFC 5802, RFC 7677) as a server, without channel binding
//! (so only `SCRAM-SHA-256` is offered, never `SCRAM-SHA-256-PLUS`).
//!
//! The store keeps [`ScramCredentials`] (the salt, the iteration count and
//! two keys derived from the password), never the password; the session
//! runs the exchange and checks the client's proof itself.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::lang::Text;

type HmacSha256 = Hmac<Sha256>;

/// The least iteration count accepted (RFC 7677 §4 asks for at least 4096).
pub const MIN_SCRAM_ITERATIONS: u32 = 4096;

/// What a store keeps to check SCRAM-SHA-256 logins: the salt, the
/// iteration count, `StoredKey` and `ServerKey` (RFC 5802 §3).
///
/// It parses from and displays as `iterations,salt,stored_key,server_key`
/// with the last three in base64: the form Dovecot keeps after its
/// `{SCRAM-SHA-256}` scheme prefix.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramCredentials {
    iterations: u32,
    salt: Vec<u8>,
    stored_key: [u8; 32],
    server_key: [u8; 32],
}

impl ScramCredentials {
    /// Derives the keys from a password (the password is not kept).
    /// Use a random salt of at least 16 octets per user and at least
    /// [`MIN_SCRAM_ITERATIONS`].
    pub fn derive(password: &[u8], salt: &[u8], iterations: u32) -> Self {
        let mut salted = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations.max(1), &mut salted);
        let client_key = hmac(&salted, b"Client Key");
        Self {
            iterations,
            salt: salt.to_vec(),
            stored_key: Sha256::digest(client_key).into(),
            server_key: hmac(&salted, b"Server Key"),
        }
    }

    /// Credentials for a user who does not exist, so that the exchange runs
    /// exactly as for one who does and fails only at the proof. The salt
    /// depends on `secret` (keep one random secret per server, for its
    /// life) and `user`, so the same unknown user always gets the same salt.
    pub fn decoy(secret: &[u8], user: &str, iterations: u32) -> Self {
        let keyed = |label: &[u8]| {
            let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes any key length");
            mac.update(label);
            mac.update(user.as_bytes());
            <[u8; 32]>::from(mac.finalize().into_bytes())
        };
        Self {
            iterations,
            salt: keyed(b"salt:")[..16].to_vec(),
            stored_key: keyed(b"stored:"),
            server_key: keyed(b"server:"),
        }
    }

    /// The iteration count.
    pub fn iterations(&self) -> u32 {
        self.iterations
    }

    /// The salt.
    pub fn salt(&self) -> &[u8] {
        &self.salt
    }
}

impl fmt::Debug for ScramCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramCredentials")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for ScramCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{},{},{},{}",
            self.iterations,
            STANDARD.encode(&self.salt),
            STANDARD.encode(self.stored_key),
            STANDARD.encode(self.server_key)
        )
    }
}

/// Stored SCRAM credentials that do not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("SCRAM credentials must be iterations,salt,stored_key,server_key (base64, {MIN_SCRAM_ITERATIONS} iterations or more)")]
pub struct ScramParseError;

impl FromStr for ScramCredentials {
    type Err = ScramParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut fields = s.trim().split(',');
        let mut next = || fields.next().ok_or(ScramParseError);
        let iterations: u32 = next()?.parse().map_err(|_| ScramParseError)?;
        let salt = STANDARD.decode(next()?).map_err(|_| ScramParseError)?;
        let key = |field: &str| -> Result<[u8; 32], ScramParseError> {
            let bytes = STANDARD.decode(field).map_err(|_| ScramParseError)?;
            bytes.try_into().map_err(|_| ScramParseError)
        };
        let stored_key = key(next()?)?;
        let server_key = key(next()?)?;
        if fields.next().is_some() || iterations < MIN_SCRAM_ITERATIONS || salt.is_empty() {
            return Err(ScramParseError);
        }
        Ok(Self {
            iterations,
            salt,
            stored_key,
            server_key,
        })
    }
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// The client's first message, parsed (RFC 5802 §7).
#[derive(Debug)]
pub(crate) struct ClientFirst {
    /// The user name (`n=`, unescaped).
    pub(crate) user: String,
    /// The GS2 header as sent (`n,,` or `y,,`), for the `c=` check.
    gs2_header: String,
    /// `client-first-message-bare`, for the AuthMessage.
    bare: String,
    client_nonce: String,
}

/// Why a SCRAM message is refused.
pub(crate) type Malformed = Text;

impl ClientFirst {
    pub(crate) fn parse(message: &[u8]) -> Result<Self, Malformed> {
        let message = std::str::from_utf8(message).map_err(|_| Text::ScramInvalidMessage)?;
        let (flag, rest) = message.split_once(',').ok_or(Text::ScramInvalidMessage)?;
        match flag {
            "n" | "y" => {}
            _ if flag.starts_with("p=") => return Err(Text::ScramChannelBindingUnsupported),
            _ => return Err(Text::ScramInvalidMessage),
        }
        let (authzid, bare) = rest.split_once(',').ok_or(Text::ScramInvalidMessage)?;
        let mut fields = bare.split(',');
        let user = match fields.next() {
            Some(f) if f.starts_with("m=") => return Err(Text::ScramExtensionsUnsupported),
            Some(f) => f.strip_prefix("n=").ok_or(Text::ScramInvalidMessage)?,
            None => return Err(Text::ScramInvalidMessage),
        };
        let user = unescape(user).ok_or(Text::InvalidUserName)?;
        let client_nonce = fields
            .next()
            .and_then(|f| f.strip_prefix("r="))
            .filter(|n| is_nonce(n))
            .ok_or(Text::ScramInvalidNonce)?;
        if !authzid.is_empty() {
            let authzid = authzid
                .strip_prefix("a=")
                .and_then(unescape)
                .ok_or(Text::ScramInvalidMessage)?;
            if authzid != user {
                return Err(Text::ScramAuthorizationIdentityUnsupported);
            }
        }
        Ok(Self {
            user,
            gs2_header: format!("{flag},{authzid},"),
            bare: bare.to_owned(),
            client_nonce: client_nonce.to_owned(),
        })
    }

    /// The server's first message, with the server's part of the nonce;
    /// returns it and the state that waits for the client's final message.
    pub(crate) fn server_first(
        self,
        credentials: ScramCredentials,
        server_nonce: &str,
    ) -> (String, ServerFirst) {
        let nonce = format!("{}{server_nonce}", self.client_nonce);
        let message = format!(
            "r={nonce},s={},i={}",
            STANDARD.encode(&credentials.salt),
            credentials.iterations
        );
        let auth_prefix = format!("{},{message},", self.bare);
        let state = ServerFirst {
            user: self.user,
            channel_binding: STANDARD.encode(self.gs2_header),
            nonce,
            auth_prefix,
            credentials,
        };
        (message, state)
    }
}

/// Waiting for the client's final message.
#[derive(Debug)]
pub(crate) struct ServerFirst {
    pub(crate) user: String,
    /// The expected `c=` value: base64 of the GS2 header.
    channel_binding: String,
    nonce: String,
    /// `client-first-message-bare , server-first-message ,`.
    auth_prefix: String,
    credentials: ScramCredentials,
}

/// The outcome of the client's final message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Final {
    /// The proof holds: send this server-final message.
    Verified(String),
    /// The proof is wrong: a failed login.
    WrongProof,
    /// Not a valid final message.
    Malformed(Malformed),
}

impl ServerFirst {
    pub(crate) fn verify(&self, message: &[u8]) -> Final {
        let Ok(message) = std::str::from_utf8(message) else {
            return Final::Malformed(Text::ScramInvalidMessage);
        };
        let Some((without_proof, proof)) = message.rsplit_once(",p=") else {
            return Final::Malformed(Text::ScramInvalidMessage);
        };
        let mut fields = without_proof.split(',');
        if fields.next().and_then(|f| f.strip_prefix("c=")) != Some(&self.channel_binding) {
            return Final::Malformed(Text::ScramChannelBindingMismatch);
        }
        if fields.next().and_then(|f| f.strip_prefix("r=")) != Some(&self.nonce) {
            return Final::Malformed(Text::ScramNonceMismatch);
        }
        let Ok(proof) = <[u8; 32]>::try_from(STANDARD.decode(proof).unwrap_or_default()) else {
            return Final::Malformed(Text::ScramInvalidProof);
        };
        let auth_message = format!("{}{without_proof}", self.auth_prefix);
        let signature = hmac(&self.credentials.stored_key, auth_message.as_bytes());
        let mut client_key = proof;
        for (k, s) in client_key.iter_mut().zip(signature) {
            *k ^= s;
        }
        let stored: [u8; 32] = Sha256::digest(client_key).into();
        // Constant time: every octet is compared whatever the first differs.
        let differ = stored
            .iter()
            .zip(self.credentials.stored_key)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if differ != 0 {
            return Final::WrongProof;
        }
        let server_signature = hmac(&self.credentials.server_key, auth_message.as_bytes());
        Final::Verified(format!("v={}", STANDARD.encode(server_signature)))
    }
}

/// True for a valid nonce: printable ASCII without `,` (RFC 5802 §7).
pub(crate) fn is_nonce(nonce: &str) -> bool {
    !nonce.is_empty()
        && nonce
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

/// Undoes `=2C` and `=3D` (RFC 5802 §5.1); other `=` sequences are invalid.
fn unescape(name: &str) -> Option<String> {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        let code = rest.get(i + 1..i + 3)?;
        out.push(match code {
            "2C" => ',',
            "3D" => '=',
            _ => return None,
        });
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    (!out.is_empty() && !out.chars().any(char::is_control)).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677 §3's example exchange.
    const CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
    const SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    const SERVER_FIRST: &str =
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    const CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    const SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

    fn pencil() -> ScramCredentials {
        let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        ScramCredentials::derive(b"pencil", &salt, 4096)
    }

    #[test]
    fn rfc7677_example() {
        let first = ClientFirst::parse(CLIENT_FIRST.as_bytes()).unwrap();
        assert_eq!(first.user, "user");
        let (server_first, state) = first.server_first(pencil(), SERVER_NONCE);
        assert_eq!(server_first, SERVER_FIRST);
        assert_eq!(
            state.verify(CLIENT_FINAL.as_bytes()),
            Final::Verified(SERVER_FINAL.into())
        );
    }

    #[test]
    fn wrong_password_or_tampering() {
        let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let wrong = ScramCredentials::derive(b"pencil2", &salt, 4096);
        let first = ClientFirst::parse(CLIENT_FIRST.as_bytes()).unwrap();
        let (_, state) = first.server_first(wrong, SERVER_NONCE);
        assert_eq!(state.verify(CLIENT_FINAL.as_bytes()), Final::WrongProof);

        let first = ClientFirst::parse(CLIENT_FIRST.as_bytes()).unwrap();
        let (_, state) = first.server_first(pencil(), SERVER_NONCE);
        let other_nonce = CLIENT_FINAL.replace("k0,p=", "k1,p=");
        assert_eq!(
            state.verify(other_nonce.as_bytes()),
            Final::Malformed(Text::ScramNonceMismatch)
        );
        let bound = CLIENT_FINAL.replace("c=biws", "c=eSws");
        assert_eq!(
            state.verify(bound.as_bytes()),
            Final::Malformed(Text::ScramChannelBindingMismatch)
        );
    }

    #[test]
    fn client_first_forms() {
        assert!(ClientFirst::parse(b"y,,n=user,r=abc").is_ok());
        let escaped = ClientFirst::parse(b"n,,n=a=2Cb=3Dc,r=abc").unwrap();
        assert_eq!(escaped.user, "a,b=c");
        assert!(ClientFirst::parse(b"n,a=user,n=user,r=abc").is_ok());
        assert_eq!(
            ClientFirst::parse(b"n,a=admin,n=user,r=abc").unwrap_err(),
            Text::ScramAuthorizationIdentityUnsupported
        );
        assert_eq!(
            ClientFirst::parse(b"p=tls-unique,,n=user,r=abc").unwrap_err(),
            Text::ScramChannelBindingUnsupported
        );
        assert!(ClientFirst::parse(b"n,,m=x,n=user,r=abc").is_err());
        assert!(ClientFirst::parse(b"n,,n=us=2Xer,r=abc").is_err());
        assert!(ClientFirst::parse(b"n,,n=user").is_err());
        assert!(ClientFirst::parse(b"n,,n=,r=abc").is_err());
        assert!(ClientFirst::parse(b"\xff").is_err());
    }

    #[test]
    fn stored_form_round_trips() {
        let c = pencil();
        let text = c.to_string();
        assert!(text.starts_with("4096,W22ZaJ0SNY7soEsUEjb6gQ==,"));
        assert_eq!(text.parse::<ScramCredentials>().unwrap(), c);
        assert!("1000,W22ZaJ0SNY7soEsUEjb6gQ==,AAAA,AAAA"
            .parse::<ScramCredentials>()
            .is_err());
        assert!("4096,salt".parse::<ScramCredentials>().is_err());
        assert!(!format!("{c:?}").contains(&STANDARD.encode(c.stored_key)));
    }

    #[test]
    fn decoys_are_stable_per_user_and_secret() {
        let a = ScramCredentials::decoy(b"secret", "nobody", 4096);
        assert_eq!(a, ScramCredentials::decoy(b"secret", "nobody", 4096));
        assert_ne!(
            a.salt,
            ScramCredentials::decoy(b"secret", "other", 4096).salt
        );
        assert_ne!(
            a.salt,
            ScramCredentials::decoy(b"other", "nobody", 4096).salt
        );
    }
}
