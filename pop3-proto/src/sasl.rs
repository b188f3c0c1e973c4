//! SASL for POP3 (RFC 5034): the mechanisms as small sans-IO exchanges.
//!
//! An exchange turns the client's decoded responses into either the next
//! challenge or a credential for the handler; the session does the
//! framing (`AUTH`, `+ ` lines, base64, `*`) and asks the handler.

use std::borrow::Cow;
use std::fmt;

use crate::event::Credential;
use crate::lang::Text;
use crate::scram::{ClientFirst, Final, ServerFirst};
use crate::secret::Secret;

/// A SASL mechanism this crate can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Mechanism {
    /// RFC 4616: authorization identity, user and password in one response.
    Plain,
    /// The de facto `LOGIN`: user name, then password, each asked for.
    Login,
    /// Google's and Microsoft's `XOAUTH2`: a user and an OAuth 2.0 bearer token.
    XOAuth2,
    /// RFC 7628 `OAUTHBEARER`: an OAuth 2.0 bearer token with a GS2 header.
    OAuthBearer,
    /// RFC 7677 `SCRAM-SHA-256` without channel binding: no password
    /// crosses the wire, the store keeps derived keys only.
    ScramSha256,
}

impl Mechanism {
    /// Every mechanism, in the order they are offered.
    pub const ALL: [Self; 5] = [
        Self::ScramSha256,
        Self::Plain,
        Self::Login,
        Self::XOAuth2,
        Self::OAuthBearer,
    ];

    /// Its registered name, as in CAPA's `SASL` line and the `AUTH` command.
    pub fn name(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::Login => "LOGIN",
            Self::XOAuth2 => "XOAUTH2",
            Self::OAuthBearer => "OAUTHBEARER",
            Self::ScramSha256 => "SCRAM-SHA-256",
        }
    }

    /// The mechanism named `name` (case-insensitive).
    pub fn from_name(name: &[u8]) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|m| m.name().as_bytes().eq_ignore_ascii_case(name))
    }

    /// True if the secret crosses the wire as it is (a password or a
    /// bearer token): then the plaintext policy applies.
    pub fn is_plaintext(self) -> bool {
        !matches!(self, Self::ScramSha256)
    }

    /// True for the OAuth 2.0 mechanisms, whose failure is told in a
    /// challenge the client must answer before the `-ERR`.
    pub(crate) fn is_bearer(self) -> bool {
        matches!(self, Self::XOAuth2 | Self::OAuthBearer)
    }

    /// The error challenge sent when a bearer token is refused (RFC 7628
    /// §3.2.2; Google's XOAUTH2 documentation for its form).
    pub(crate) fn bearer_error(self) -> &'static [u8] {
        match self {
            Self::OAuthBearer => br#"{"status":"invalid_token","schemes":"bearer"}"#,
            _ => br#"{"status":"401","schemes":"bearer"}"#,
        }
    }

    /// Starts an exchange.
    pub(crate) fn start(self) -> Exchange {
        match self {
            Self::Plain => Exchange::Plain,
            Self::Login => Exchange::LoginUser,
            Self::XOAuth2 => Exchange::XOAuth2,
            Self::OAuthBearer => Exchange::OAuthBearer,
            Self::ScramSha256 => Exchange::ScramFirst,
        }
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where an exchange is: what the next client response must carry.
#[derive(Debug)]
pub(crate) enum Exchange {
    Plain,
    LoginUser,
    LoginPassword(String),
    XOAuth2,
    OAuthBearer,
    /// SCRAM: the client's first message is next.
    ScramFirst,
    /// SCRAM: the server's first message is out, the client's final is next.
    ScramFinal(Box<ServerFirst>),
    /// SCRAM: the proof held and the server's final message is out; the
    /// client's empty response ends the exchange.
    ScramVerified(String),
}

/// What an exchange does with a response.
#[derive(Debug)]
pub(crate) enum Step {
    /// Send this challenge (the session base64-encodes it) and wait.
    Challenge(Cow<'static, [u8]>),
    /// The client has proved something: ask the handler.
    Authenticate {
        /// Whose maildrop the client wants.
        user: String,
        /// The proof.
        credential: Credential,
    },
    /// The response is malformed: the exchange fails with this text.
    Malformed(Text),
    /// SCRAM: ask the store for this user's keys.
    ScramLookup(Box<ClientFirst>),
    /// SCRAM: the client proved it knows the user's password.
    Verified(String),
    /// SCRAM: the proof is wrong.
    WrongProof,
}

impl Exchange {
    /// The challenge that asks for the first response when the client sent
    /// no initial response.
    pub(crate) fn first_challenge(&self) -> &'static [u8] {
        match self {
            Self::LoginUser => b"Username:",
            _ => b"",
        }
    }

    /// Takes the client's next (decoded) response.
    pub(crate) fn respond(&mut self, response: Vec<u8>) -> Step {
        match self {
            Self::Plain => plain(&response),
            Self::LoginUser => match identity(&response) {
                Some(user) => {
                    *self = Self::LoginPassword(user);
                    Step::Challenge(Cow::Borrowed(b"Password:"))
                }
                None => Step::Malformed(Text::InvalidUserName),
            },
            Self::LoginPassword(user) => Step::Authenticate {
                user: std::mem::take(user),
                credential: Credential::Password(Secret::new(response)),
            },
            Self::XOAuth2 => xoauth2(&response),
            Self::OAuthBearer => oauthbearer(&response),
            Self::ScramFirst => match ClientFirst::parse(&response) {
                Ok(first) => Step::ScramLookup(Box::new(first)),
                Err(text) => Step::Malformed(text),
            },
            Self::ScramFinal(state) => match state.verify(&response) {
                Final::Verified(server_final) => {
                    *self = Self::ScramVerified(std::mem::take(&mut state.user));
                    Step::Challenge(Cow::Owned(server_final.into_bytes()))
                }
                Final::WrongProof => Step::WrongProof,
                Final::Malformed(text) => Step::Malformed(text),
            },
            Self::ScramVerified(user) if response.is_empty() => {
                Step::Verified(std::mem::take(user))
            }
            Self::ScramVerified(_) => Step::Malformed(Text::ScramExpectsEmpty),
        }
    }
}

/// A user name from the wire: UTF-8, not empty, no control characters.
fn identity(raw: &[u8]) -> Option<String> {
    let name = std::str::from_utf8(raw).ok()?;
    (!name.is_empty() && !name.chars().any(char::is_control)).then(|| name.to_owned())
}

/// RFC 4616: `[authzid] NUL authcid NUL passwd`.
fn plain(response: &[u8]) -> Step {
    let mut parts = response.splitn(3, |&b| b == 0);
    let (Some(authzid), Some(authcid), Some(password)) = (parts.next(), parts.next(), parts.next())
    else {
        return Step::Malformed(Text::PlainForm);
    };
    if password.is_empty() {
        return Step::Malformed(Text::PlainNeedsPassword);
    }
    let Some(authcid) = identity(authcid) else {
        return Step::Malformed(Text::InvalidUserName);
    };
    let password = Secret::new(password.to_vec());
    if authzid.is_empty() || authzid == authcid.as_bytes() {
        return Step::Authenticate {
            user: authcid,
            credential: Credential::Password(password),
        };
    }
    match identity(authzid) {
        Some(authzid) => Step::Authenticate {
            user: authzid,
            credential: Credential::PasswordFor {
                authenticator: authcid,
                password,
            },
        },
        None => Step::Malformed(Text::InvalidAuthorizationIdentity),
    }
}

/// `user=<user>^Aauth=Bearer <token>^A^A`.
fn xoauth2(response: &[u8]) -> Step {
    let mut user = None;
    let mut token = None;
    for field in response.split(|&b| b == 1).filter(|f| !f.is_empty()) {
        if let Some(u) = field.strip_prefix(b"user=") {
            user = identity(u);
        } else if let Some(t) = bearer(field) {
            token = Some(t);
        }
    }
    match (user, token) {
        (Some(user), Some(token)) => Step::Authenticate {
            user,
            credential: Credential::Bearer(Secret::new(token)),
        },
        _ => Step::Malformed(Text::XOAuth2Form),
    }
}

/// RFC 7628 §3.1: `gs2-header ^A [key=value ^A]... ^A`, with
/// `auth=Bearer <token>` among the pairs and the user in `a=`.
fn oauthbearer(response: &[u8]) -> Step {
    let mut fields = response.split(|&b| b == 1);
    let header = fields.next().unwrap_or_default();
    // gs2-header: "n," or "y," (no channel binding here), then "a=user", then ",".
    let mut gs2 = header.splitn(3, |&b| b == b',');
    let (Some(cb), Some(authzid), Some(rest)) = (gs2.next(), gs2.next(), gs2.next()) else {
        return Step::Malformed(Text::OAuthBearerNeedsGs2);
    };
    if !(cb == b"n" || cb == b"y") || !rest.is_empty() {
        return Step::Malformed(Text::OAuthBearerGs2Unsupported);
    }
    let Some(user) = authzid
        .strip_prefix(b"a=")
        .and_then(|a| identity(&unescape_saslname(a)?))
    else {
        return Step::Malformed(Text::OAuthBearerNeedsUser);
    };
    match fields.find_map(bearer) {
        Some(token) => Step::Authenticate {
            user,
            credential: Credential::Bearer(Secret::new(token)),
        },
        None => Step::Malformed(Text::OAuthBearerNeedsToken),
    }
}

/// `auth=Bearer <token>` (the scheme is case-insensitive, RFC 6750 §2.1).
fn bearer(field: &[u8]) -> Option<String> {
    let value = field.strip_prefix(b"auth=")?;
    let (scheme, token) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"Bearer ") || token.is_empty() {
        return None;
    }
    let token = std::str::from_utf8(token).ok()?;
    (!token.chars().any(|c| c.is_control() || c == ' ')).then(|| token.to_owned())
}

/// RFC 5801 saslname: `=2C` is `,` and `=3D` is `=`; any other `=` is an error.
fn unescape_saslname(raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'=' {
            match raw.get(i + 1..i + 3)? {
                b"2C" => out.push(b','),
                b"3D" => out.push(b'='),
                _ => return None,
            }
            i += 3;
        } else {
            out.push(raw[i]);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(step: Step) -> (String, Credential) {
        match step {
            Step::Authenticate { user, credential } => (user, credential),
            other => panic!("expected a credential, got {other:?}"),
        }
    }

    fn password(p: &str) -> Credential {
        Credential::Password(Secret::new(p.as_bytes().to_vec()))
    }

    #[test]
    fn names_are_case_insensitive() {
        assert_eq!(Mechanism::from_name(b"plain"), Some(Mechanism::Plain));
        assert_eq!(Mechanism::from_name(b"XOAuth2"), Some(Mechanism::XOAuth2));
        assert_eq!(Mechanism::from_name(b"CRAM-MD5"), None);
    }

    #[test]
    fn plain_with_and_without_authzid() {
        let mut e = Mechanism::Plain.start();
        assert_eq!(
            auth(e.respond(b"\0tim\0tanstaaftanstaaf".to_vec())),
            ("tim".into(), password("tanstaaftanstaaf"))
        );
        let mut e = Mechanism::Plain.start();
        assert_eq!(
            auth(e.respond(b"tim\0tim\0pw".to_vec())),
            ("tim".into(), password("pw"))
        );
        let mut e = Mechanism::Plain.start();
        assert_eq!(
            auth(e.respond(b"ann\0master\0pw".to_vec())),
            (
                "ann".into(),
                Credential::PasswordFor {
                    authenticator: "master".into(),
                    password: Secret::new(b"pw".to_vec())
                }
            )
        );
        for bad in [&b"tim\0pw"[..], b"\0\0pw", b"\0tim\0", b"\0ti\x01m\0pw"] {
            let mut e = Mechanism::Plain.start();
            assert!(
                matches!(e.respond(bad.to_vec()), Step::Malformed(_)),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn login_asks_user_then_password() {
        let mut e = Mechanism::Login.start();
        assert_eq!(e.first_challenge(), b"Username:");
        assert!(matches!(
            e.respond(b"tim".to_vec()),
            Step::Challenge(c) if *c == *b"Password:"
        ));
        assert_eq!(
            auth(e.respond(b"p w".to_vec())),
            ("tim".into(), password("p w"))
        );
    }

    #[test]
    fn bearer_tokens() {
        let mut e = Mechanism::XOAuth2.start();
        let (user, cred) = auth(e.respond(b"user=a@b.c\x01auth=Bearer ya29.tok\x01\x01".to_vec()));
        assert_eq!(user, "a@b.c");
        assert_eq!(cred, Credential::Bearer(Secret::new("ya29.tok".into())));

        let mut e = Mechanism::OAuthBearer.start();
        let (user, cred) = auth(e.respond(
            b"n,a=user=3Dx=2Cy@example.com,\x01host=server.example.com\x01port=110\x01auth=bearer vF9dft4qmT\x01\x01"
                .to_vec(),
        ));
        assert_eq!(user, "user=x,y@example.com");
        assert_eq!(cred, Credential::Bearer(Secret::new("vF9dft4qmT".into())));

        for bad in [
            &b"n,,\x01auth=Bearer t\x01\x01"[..],
            b"p=tls-unique,a=u,\x01auth=Bearer t\x01\x01",
            b"n,a=u,\x01auth=Basic t\x01\x01",
            b"n,a=u=4,\x01auth=Bearer t\x01\x01",
        ] {
            let mut e = Mechanism::OAuthBearer.start();
            assert!(
                matches!(e.respond(bad.to_vec()), Step::Malformed(_)),
                "{bad:?}"
            );
        }
        let mut e = Mechanism::XOAuth2.start();
        assert!(matches!(
            e.respond(b"user=u\x01\x01".to_vec()),
            Step::Malformed(_)
        ));
    }
}
