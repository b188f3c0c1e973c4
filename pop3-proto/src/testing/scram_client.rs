//! The client's side of SCRAM-SHA-256 (RFC 5802 §3), to test servers with.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// A SCRAM-SHA-256 client without channel binding, with a fixed nonce.
#[derive(Debug, Clone)]
pub struct ScramClient {
    password: String,
    first_bare: String,
}

/// What the client sends last, and what the server must answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScramFinal {
    /// The client's final message, base64 (an AUTH response line).
    pub response: String,
    /// The server's final message the client expects, base64 (`v=`).
    pub server_final: String,
}

impl ScramClient {
    /// A client that logs in as `user` with `password`.
    pub fn new(user: &str, password: &str) -> Self {
        Self {
            password: password.to_owned(),
            first_bare: format!("n={user},r=fyko+d2lbbFgONRv9qkxdawL"),
        }
    }

    /// The client's first message, base64 (the AUTH initial response).
    pub fn first(&self) -> String {
        STANDARD.encode(format!("n,,{}", self.first_bare))
    }

    /// The final message for the server's first message (decoded), and
    /// the server signature the server must then send.
    ///
    /// # Panics
    /// If the server's first message lacks `r=`, `s=` or `i=`.
    pub fn finish(&self, server_first: &str) -> ScramFinal {
        let field = |name: &str| {
            server_first
                .split(',')
                .find_map(|f| f.strip_prefix(name))
                .unwrap_or_else(|| panic!("no {name} in {server_first:?}"))
        };
        let nonce = field("r=");
        let salt = STANDARD.decode(field("s=")).expect("base64 salt");
        let iterations = field("i=").parse().expect("an iteration count");
        let mut salted = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(self.password.as_bytes(), &salt, iterations, &mut salted);
        let client_key = hmac(&salted, b"Client Key");
        let stored_key = Sha256::digest(client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.first_bare);
        let signature = hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let server_signature = hmac(&hmac(&salted, b"Server Key"), auth_message.as_bytes());
        ScramFinal {
            response: STANDARD.encode(format!("{without_proof},p={}", STANDARD.encode(proof))),
            server_final: STANDARD.encode(format!("v={}", STANDARD.encode(server_signature))),
        }
    }
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}
