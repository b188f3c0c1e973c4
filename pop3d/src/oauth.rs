//! OAuth 2.0 bearer tokens for SASL `XOAUTH2` and `OAUTHBEARER`: JWT access
//! tokens checked against the issuer's public keys (a JWKS file or a PEM
//! public key), its issuer and audience, and mapped to a user by a claim.

use std::path::Path;

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};

/// What a token must satisfy, and which of its claims names the user.
pub(crate) struct TokenValidator {
    keys: Vec<Key>,
    issuer: String,
    audience: String,
    claim: String,
}

impl std::fmt::Debug for TokenValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenValidator")
            .field("keys", &self.keys.len())
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("claim", &self.claim)
            .finish()
    }
}

/// One public key and the signature algorithms of its family.
struct Key {
    id: Option<String>,
    key: DecodingKey,
    algorithms: &'static [Algorithm],
}

const RSA: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];
const EC: &[Algorithm] = &[Algorithm::ES256, Algorithm::ES384];
const ED: &[Algorithm] = &[Algorithm::EdDSA];

impl TokenValidator {
    /// Loads the keys from `path`: a JWKS document (`{"keys": [...]}`) or
    /// a PEM public key (RSA, EC or Ed25519). Symmetric keys are refused.
    ///
    /// # Errors
    /// A file that cannot be read or holds no usable public key.
    pub(crate) fn load(
        path: &Path,
        issuer: &str,
        audience: &str,
        claim: &str,
    ) -> Result<Self, String> {
        let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let keys = if text.trim_ascii_start().starts_with(b"{") {
            jwks_keys(&text)
        } else {
            pem_key(&text).map(|k| vec![k])
        }
        .map_err(|e| format!("{}: {e}", path.display()))?;
        if keys.is_empty() {
            return Err(format!("{}: no usable public key", path.display()));
        }
        Ok(Self {
            keys,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            claim: claim.to_owned(),
        })
    }

    /// The user a valid token was issued for: its signature checks with one
    /// of the keys, it has not expired (`exp` is required), and its issuer
    /// and audience are the configured ones.
    ///
    /// # Errors
    /// Why the token is not accepted (for the log, never for the client).
    pub(crate) fn user_of(&self, token: &str) -> Result<String, String> {
        let header = decode_header(token).map_err(|e| format!("bad token header: {e}"))?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let mut last = String::from("no key for the token's algorithm and key id");
        let candidates = self.keys.iter().filter(|k| {
            k.algorithms.contains(&header.alg)
                && (header.kid.is_none() || k.id.is_none() || k.id == header.kid)
        });
        for key in candidates {
            match decode::<serde_json::Map<String, serde_json::Value>>(token, &key.key, &validation)
            {
                Ok(data) => {
                    return match data.claims.get(&self.claim) {
                        Some(serde_json::Value::String(user)) if !user.is_empty() => {
                            Ok(user.clone())
                        }
                        _ => Err(format!("the token has no {} claim", self.claim)),
                    };
                }
                Err(e) => last = e.to_string(),
            }
        }
        Err(last)
    }
}

fn jwks_keys(text: &[u8]) -> Result<Vec<Key>, String> {
    let set: JwkSet = serde_json::from_slice(text).map_err(|e| format!("not a JWKS: {e}"))?;
    let mut keys = Vec::new();
    for jwk in &set.keys {
        let algorithms = match jwk.algorithm {
            AlgorithmParameters::RSA(_) => RSA,
            AlgorithmParameters::EllipticCurve(_) => EC,
            AlgorithmParameters::OctetKeyPair(_) => ED,
            // A shared secret is not a public key: refused.
            AlgorithmParameters::OctetKey(_) => continue,
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("bad key: {e}"))?;
        keys.push(Key {
            id: jwk.common.key_id.clone(),
            key,
            algorithms,
        });
    }
    Ok(keys)
}

fn pem_key(text: &[u8]) -> Result<Key, String> {
    let key = |key, algorithms| Key {
        id: None,
        key,
        algorithms,
    };
    DecodingKey::from_ed_pem(text)
        .map(|k| key(k, ED))
        .or_else(|_| DecodingKey::from_ec_pem(text).map(|k| key(k, EC)))
        .or_else(|_| DecodingKey::from_rsa_pem(text).map(|k| key(k, RSA)))
        .map_err(|e| format!("not a PEM public key: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use std::time::{SystemTime, UNIX_EPOCH};

    struct Issuer {
        pair: rcgen::KeyPair,
        alg: Algorithm,
    }

    impl Issuer {
        fn ed25519() -> Self {
            Self {
                pair: rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap(),
                alg: Algorithm::EdDSA,
            }
        }

        fn p256() -> Self {
            Self {
                pair: rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap(),
                alg: Algorithm::ES256,
            }
        }

        fn token(&self, kid: Option<&str>, claims: serde_json::Value) -> String {
            let pem = self.pair.serialize_pem();
            let key = match self.alg {
                Algorithm::EdDSA => EncodingKey::from_ed_pem(pem.as_bytes()),
                _ => EncodingKey::from_ec_pem(pem.as_bytes()),
            }
            .unwrap();
            let mut header = Header::new(self.alg);
            header.kid = kid.map(str::to_owned);
            encode(&header, &claims, &key).unwrap()
        }
    }

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn claims(email: &str, exp: u64) -> serde_json::Value {
        serde_json::json!({
            "iss": "https://idp.test", "aud": "pop3", "exp": exp, "email": email,
        })
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    #[test]
    fn pem_key_issuer_audience_expiry_claim() {
        let idp = Issuer::p256();
        let keyfile = file(&idp.pair.public_key_pem());
        let v = TokenValidator::load(keyfile.path(), "https://idp.test", "pop3", "email").unwrap();
        let good = idp.token(None, claims("alice@example.org", now() + 600));
        assert_eq!(v.user_of(&good).unwrap(), "alice@example.org");
        // Expired, another issuer or audience, no claim, forged: refused.
        assert!(v
            .user_of(&idp.token(None, claims("a", now() - 600)))
            .is_err());
        let mut other = claims("a", now() + 600);
        other["iss"] = "https://evil.test".into();
        assert!(v.user_of(&idp.token(None, other)).is_err());
        let mut other = claims("a", now() + 600);
        other["aud"] = "imap".into();
        assert!(v.user_of(&idp.token(None, other)).is_err());
        let mut other = claims("a", now() + 600);
        other.as_object_mut().unwrap().remove("email");
        assert!(v.user_of(&idp.token(None, other)).is_err());
        let forged = Issuer::p256().token(None, claims("alice@example.org", now() + 600));
        assert!(v.user_of(&forged).is_err());
        assert!(v.user_of("not.a.token").is_err());
    }

    #[test]
    fn jwks_with_key_ids() {
        let (a, b) = (Issuer::ed25519(), Issuer::ed25519());
        let jwk = |kid: &str, idp: &Issuer| {
            serde_json::json!({
                "kty": "OKP", "crv": "Ed25519", "kid": kid,
                "x": URL_SAFE_NO_PAD.encode(idp.pair.public_key_raw()),
            })
        };
        let set = serde_json::json!({ "keys": [jwk("a", &a), jwk("b", &b)] });
        let keyfile = file(&set.to_string());
        let v = TokenValidator::load(keyfile.path(), "https://idp.test", "pop3", "email").unwrap();
        let exp = now() + 600;
        assert_eq!(
            v.user_of(&b.token(Some("b"), claims("bob", exp))).unwrap(),
            "bob"
        );
        assert_eq!(
            v.user_of(&a.token(None, claims("amy", exp))).unwrap(),
            "amy"
        );
        // Signed by a but naming b's key.
        assert!(v.user_of(&a.token(Some("b"), claims("amy", exp))).is_err());
    }

    #[test]
    fn unusable_key_files_are_refused() {
        let secret = file(r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#);
        assert!(TokenValidator::load(secret.path(), "i", "a", "email").is_err());
        let junk = file("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n");
        assert!(TokenValidator::load(junk.path(), "i", "a", "email").is_err());
    }
}
