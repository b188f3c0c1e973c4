//! The users file: Dovecot's passwd-file format, so an operator can move
//! over unchanged.
//!
//! One user per line, `user:{SCHEME}data`, more `:`-separated fields
//! (uid, gid, home, ...) allowed and ignored. Schemes: `ARGON2ID`,
//! `SHA512-CRYPT`, `BLF-CRYPT`, `SCRAM-SHA-256` (Dovecot's form:
//! `iterations,salt,StoredKey,ServerKey`) and `PLAIN`. Only users with a
//! `{PLAIN}` secret can log in with APOP, which needs the secret itself;
//! only `{SCRAM-SHA-256}` users can use SASL SCRAM-SHA-256 (and their
//! password works with USER/PASS and PLAIN too).

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};
use argon2::Argon2;
use pop3_proto::{ApopCredential, ScramCredentials, Secret};

use crate::hashing::Scratch;

/// A stored password.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Stored {
    /// `{PLAIN}`: the secret itself (also good for APOP).
    Plain(Secret<String>),
    /// `{ARGON2ID}`: a PHC string.
    Argon2id(String),
    /// `{SHA512-CRYPT}`: `$6$...`.
    Sha512Crypt(String),
    /// `{BLF-CRYPT}`: bcrypt, `$2y$...`.
    BlfCrypt(String),
    /// `{SCRAM-SHA-256}`: salt, iterations and the derived keys.
    Scram(ScramCredentials),
}

impl fmt::Debug for Stored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Plain(_) => "{PLAIN}..",
            Self::Argon2id(_) => "{ARGON2ID}..",
            Self::Sha512Crypt(_) => "{SHA512-CRYPT}..",
            Self::BlfCrypt(_) => "{BLF-CRYPT}..",
            Self::Scram(_) => "{SCRAM-SHA-256}..",
        })
    }
}

impl Stored {
    /// Parses `{SCHEME}data`.
    pub(crate) fn parse(field: &str) -> Result<Self, UsersError> {
        let (scheme, data) = field
            .strip_prefix('{')
            .and_then(|r| r.split_once('}'))
            .ok_or(UsersError::NoScheme)?;
        let data = data.to_owned();
        let stored = match scheme.to_ascii_uppercase().as_str() {
            "PLAIN" => Self::Plain(Secret::new(data)),
            "ARGON2ID" => {
                PasswordHash::new(&data).map_err(|_| UsersError::BadHash("ARGON2ID"))?;
                Self::Argon2id(data)
            }
            "SHA512-CRYPT" if data.starts_with("$6$") => Self::Sha512Crypt(data),
            "BLF-CRYPT" if data.starts_with("$2") => Self::BlfCrypt(data),
            "SCRAM-SHA-256" => Self::Scram(
                data.parse()
                    .map_err(|_| UsersError::BadHash("SCRAM-SHA-256"))?,
            ),
            "SHA512-CRYPT" => return Err(UsersError::BadHash("SHA512-CRYPT")),
            "BLF-CRYPT" => return Err(UsersError::BadHash("BLF-CRYPT")),
            other => return Err(UsersError::UnknownScheme(other.to_owned())),
        };
        Ok(stored)
    }

    /// The users-file password field: `{SCHEME}data`, as [`parse`](Self::parse) reads it.
    pub(crate) fn field(&self) -> String {
        match self {
            Self::Plain(secret) => format!("{{PLAIN}}{}", secret.expose()),
            Self::Argon2id(phc) => format!("{{ARGON2ID}}{phc}"),
            Self::Sha512Crypt(hash) => format!("{{SHA512-CRYPT}}{hash}"),
            Self::BlfCrypt(hash) => format!("{{BLF-CRYPT}}{hash}"),
            Self::Scram(keys) => format!("{{SCRAM-SHA-256}}{keys}"),
        }
    }

    /// Whether `password` matches, for a scheme that costs nothing to
    /// check (`{PLAIN}`); `None` for a hashed one, which must go to
    /// [`verify`](Self::verify) on a hashing thread.
    pub(crate) fn verify_cheap(&self, password: &[u8]) -> Option<bool> {
        match self {
            Self::Plain(secret) => Some(constant_time_eq(secret.expose().as_bytes(), password)),
            _ => None,
        }
    }

    /// True if `password` matches. Slow by design for the hashed schemes;
    /// Argon2 runs in `scratch`, the hashing thread's reused memory.
    pub(crate) fn verify(&self, password: &[u8], scratch: &mut Scratch) -> bool {
        match self {
            Self::Plain(secret) => constant_time_eq(secret.expose().as_bytes(), password),
            Self::Argon2id(phc) => scratch.verify_argon2(phc, password),
            Self::Sha512Crypt(hash) => std::str::from_utf8(password)
                .is_ok_and(|p| sha_crypt::sha512_check(p, hash).is_ok()),
            Self::BlfCrypt(hash) => bcrypt::verify(password, hash).unwrap_or(false),
            Self::Scram(keys) => {
                ScramCredentials::derive(password, keys.salt(), keys.iterations()) == *keys
            }
        }
    }

    /// The SCRAM-SHA-256 keys, for a `{SCRAM-SHA-256}` user.
    pub(crate) fn scram(&self) -> Option<&ScramCredentials> {
        match self {
            Self::Scram(keys) => Some(keys),
            _ => None,
        }
    }

    /// The Argon2 memory a check against this needs, in 1 KiB blocks
    /// (`None` if it is not Argon2).
    pub(crate) fn argon2_blocks(&self) -> Option<usize> {
        let Self::Argon2id(phc) = self else {
            return None;
        };
        let hash = PasswordHash::new(phc).ok()?;
        Some(argon2::Params::try_from(&hash).ok()?.block_count())
    }

    /// True if checking a password against this costs what checking one
    /// against `other` does: both Argon2id, with the same version,
    /// memory, time, parallelism and output length.
    pub(crate) fn same_argon2_cost(&self, other: &Self) -> bool {
        let params = |s: &Self| -> Option<(String, Option<u32>, argon2::Params)> {
            let Self::Argon2id(phc) = s else { return None };
            let hash = PasswordHash::new(phc).ok()?;
            let params = argon2::Params::try_from(&hash).ok()?;
            Some((hash.algorithm.to_string(), hash.version, params))
        };
        matches!((params(self), params(other)), (Some(a), Some(b)) if a == b)
    }

    /// True if the APOP digest matches; only a `{PLAIN}` secret can tell.
    pub(crate) fn verify_apop(&self, credential: &ApopCredential) -> bool {
        match self {
            Self::Plain(secret) => credential.verify(secret.expose().as_bytes()),
            _ => false,
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A users-file problem of one line.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum UsersError {
    /// The password field does not start with `{SCHEME}`.
    #[error("password field has no {{SCHEME}} prefix")]
    NoScheme,
    /// A scheme this server does not know.
    #[error("unknown password scheme {0:?} (known: ARGON2ID, SHA512-CRYPT, BLF-CRYPT, SCRAM-SHA-256, PLAIN)")]
    UnknownScheme(String),
    /// A hash that does not parse for its scheme.
    #[error("malformed {0} hash")]
    BadHash(&'static str),
    /// A line without `user:password`.
    #[error("expected user:{{SCHEME}}password")]
    BadLine,
    /// A user name that cannot be a maildir name.
    #[error("user name {0:?} must be non-empty and must not contain '/', ':', control characters or start with '.'")]
    BadUser(String),
    /// A user listed twice.
    #[error("user {0:?} appears twice")]
    Duplicate(String),
}

/// The users of the server.
#[derive(Debug, Default, Clone)]
pub(crate) struct Users(HashMap<String, Stored>);

/// A users file as read: the users, and the lines skipped because their
/// password scheme is unknown here (those users cannot log in).
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    pub(crate) users: Users,
    pub(crate) skipped: Vec<(usize, UsersError)>,
}

impl Users {
    /// Parses a users file's text. A line whose password scheme is unknown
    /// or missing is skipped (and reported), as Dovecot would only fail that
    /// user's logins; other errors name the 1-based line and fail.
    pub(crate) fn parse(text: &str) -> Result<Loaded, (usize, UsersError)> {
        let mut users = HashMap::new();
        let mut skipped = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            let err = |e| (i + 1, e);
            let mut fields = line.splitn(3, ':');
            let (Some(user), Some(password)) = (fields.next(), fields.next()) else {
                return Err(err(UsersError::BadLine));
            };
            if !valid_user(user) {
                return Err(err(UsersError::BadUser(user.to_owned())));
            }
            if users.contains_key(user) {
                return Err(err(UsersError::Duplicate(user.to_owned())));
            }
            match Stored::parse(password) {
                Ok(stored) => {
                    users.insert(user.to_owned(), stored);
                }
                Err(e @ (UsersError::UnknownScheme(_) | UsersError::NoScheme)) => {
                    skipped.push((i + 1, e));
                }
                Err(e) => return Err(err(e)),
            }
        }
        Ok(Loaded {
            users: Self(users),
            skipped,
        })
    }

    /// Reads and parses a users file.
    pub(crate) fn load(path: &Path) -> Result<Loaded, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read users file {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|(line, e)| format!("{}:{line}: {e}", path.display()))
    }

    /// A users table with one entry.
    pub(crate) fn single(user: &str, stored: Stored) -> Self {
        Self(HashMap::from([(user.to_owned(), stored)]))
    }

    /// The stored password of `user`.
    pub(crate) fn get(&self, user: &str) -> Option<&Stored> {
        self.0.get(user)
    }

    /// How many users there are.
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// Every user and their stored password, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &Stored)> {
        self.0.iter().map(|(user, stored)| (user.as_str(), stored))
    }

    /// True if some user can log in with SCRAM-SHA-256.
    pub(crate) fn any_scram(&self) -> bool {
        self.0.values().any(|s| s.scram().is_some())
    }
}

/// A user name is also a directory name under the maildir root, and a
/// users-file field.
pub(crate) fn valid_user(user: &str) -> bool {
    !user.is_empty()
        && !user.starts_with('.')
        && !user.contains(['/', ':'])
        && !user.chars().any(char::is_control)
        && user.len() <= 255
}

/// How `pop3d passwd` stores a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub(crate) enum Scheme {
    /// Argon2id (as `doveadm pw -s ARGON2ID` would).
    #[default]
    Argon2id,
    /// SCRAM-SHA-256 keys (as `doveadm pw -s SCRAM-SHA-256` would): also
    /// usable with SASL SCRAM-SHA-256, where no password crosses the wire.
    #[value(name = "scram-sha-256")]
    ScramSha256,
}

/// SCRAM-SHA-256 iterations for new passwords (Dovecot's default).
const SCRAM_ITERATIONS: u32 = pop3_proto::MIN_SCRAM_ITERATIONS;

/// The users-file line for `user` with `password`, stored with `scheme`.
pub(crate) fn passwd_line(user: &str, password: &str, scheme: Scheme) -> Result<String, String> {
    if !valid_user(user) {
        return Err(UsersError::BadUser(user.to_owned()).to_string());
    }
    match scheme {
        Scheme::Argon2id => {
            let salt = SaltString::generate(&mut OsRng);
            let hash = Argon2::default()
                .hash_password(password.as_bytes(), &salt)
                .map_err(|e| format!("hashing failed: {e}"))?;
            Ok(format!("{user}:{{ARGON2ID}}{hash}"))
        }
        Scheme::ScramSha256 => {
            use argon2::password_hash::rand_core::RngCore as _;
            let mut salt = [0u8; 16];
            OsRng.fill_bytes(&mut salt);
            let keys = ScramCredentials::derive(password.as_bytes(), &salt, SCRAM_ITERATIONS);
            Ok(format!("{user}:{{SCRAM-SHA-256}}{keys}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scram_users() {
        let scratch = &mut Scratch::standalone();
        let line = passwd_line("eve", "pencil", Scheme::ScramSha256).unwrap();
        assert!(line.starts_with("eve:{SCRAM-SHA-256}4096,"), "{line}");
        let users = Users::parse(&line).unwrap().users;
        let eve = users.get("eve").unwrap();
        assert!(eve.verify(b"pencil", scratch) && !eve.verify(b"pencil2", scratch));
        assert!(eve.scram().is_some() && users.any_scram());
        // A line as Dovecot writes it (RFC 7677's example keys).
        let dovecot = "user:{SCRAM-SHA-256}4096,W22ZaJ0SNY7soEsUEjb6gQ==,WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=,wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";
        let users = Users::parse(dovecot).unwrap().users;
        assert!(users.get("user").unwrap().verify(b"pencil", scratch));
        assert!(Users::parse("x:{SCRAM-SHA-256}4096,bad").is_err());
    }

    #[test]
    fn schemes_verify() {
        let scratch = &mut Scratch::standalone();
        let line = passwd_line("ann", "correct horse", Scheme::Argon2id).unwrap();
        let users = Users::parse(&line).unwrap().users;
        let ann = users.get("ann").unwrap();
        assert!(matches!(ann, Stored::Argon2id(_)));
        assert!(ann.verify(b"correct horse", scratch));
        assert!(!ann.verify(b"correct horsE", scratch));

        let sha =
            sha_crypt::sha512_simple("pw", &sha_crypt::Sha512Params::new(5000).unwrap()).unwrap();
        let blf = bcrypt::hash("pw", 4).unwrap();
        let text = format!(
            "# comment\n\nbob:{{SHA512-CRYPT}}{sha}:1000:1000::/home/bob::\ncat:{{BLF-CRYPT}}{blf}\ndan:{{PLAIN}}pw with spaces\n"
        );
        let users = Users::parse(&text).unwrap().users;
        assert_eq!(users.len(), 3);
        assert!(users.get("bob").unwrap().verify(b"pw", scratch));
        assert!(!users.get("bob").unwrap().verify(b"px", scratch));
        assert!(users.get("cat").unwrap().verify(b"pw", scratch));
        assert!(!users.get("cat").unwrap().verify(b"px", scratch));
        assert!(users.get("dan").unwrap().verify(b"pw with spaces", scratch));
        assert_eq!(
            users.get("dan").unwrap().verify_cheap(b"pw with spaces"),
            Some(true)
        );
        assert_eq!(users.get("dan").unwrap().verify_cheap(b"pw"), Some(false));
        assert_eq!(users.get("bob").unwrap().verify_cheap(b"pw"), None);
        assert_eq!(ann.argon2_blocks(), Some(19 * 1024));
        assert!(!users.get("dan").unwrap().verify(b"pw", scratch));
        assert_eq!(format!("{:?}", users.get("dan").unwrap()), "{PLAIN}..");
    }

    #[test]
    fn bad_lines_are_reported_with_their_number() {
        let loaded = Users::parse("a:{PLAIN}x\nb:nohash\nc:{MD5-CRYPT}$1$x").unwrap();
        assert_eq!(loaded.users.len(), 1);
        assert_eq!(
            loaded.skipped,
            [
                (2, UsersError::NoScheme),
                (3, UsersError::UnknownScheme("MD5-CRYPT".into()))
            ]
        );
        assert!(passwd_line("a:b", "pw", Scheme::Argon2id).is_err());
        assert_eq!(Users::parse("a:{PLAIN}x\na:{PLAIN}y").unwrap_err().0, 2);
        assert!(matches!(
            Users::parse("../x:{PLAIN}y").unwrap_err().1,
            UsersError::BadUser(_)
        ));
        assert_eq!(
            Users::parse("justname").unwrap_err(),
            (1, UsersError::BadLine)
        );
        assert_eq!(
            Users::parse("a:{ARGON2ID}garbage").unwrap_err(),
            (1, UsersError::BadHash("ARGON2ID"))
        );
    }
}
