//! AUTH exchanges (PLAIN, LOGIN, XOAUTH2, OAUTHBEARER, SCRAM-SHA-256 and
//! unknown names) with well-formed responses for right and wrong
//! credentials, arbitrary bytes in base64, raw lines, `*` and `=`, mixed
//! with commands, faults at the credential check, and the clock. Checked:
//! the shared invariants (as `session_bytes`), every `+ ` challenge is
//! valid base64, and a login happens only with the right credentials: a
//! `Lock` follows either a credential check this target verifies against
//! the users' table itself (and whose user and secret the client did send),
//! or a SCRAM exchange whose final message this target computed with the
//! user's real password.
//!
//! Input: see `pop3_fuzz::split_input` (operations, then raw lines).

#![no_main]

use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use pop3_fuzz::{quiet_injected_panics, split_input, store, Run, Stream, MASTER, TOKENS, USERS};
use pop3_proto::testing::{escape_bytes, Fault, FaultPoint, ScramClient};
use pop3_proto::{Channel, Config, Credential, Event, Mechanism, PlaintextAuth, Refusal, Request};

const NAMES: [&str; 7] = ["alice", "bob", "admin", "jörg", "nobody", "", "ALICE"];
const SECRETS: [&str; 7] = [
    "wonderland",
    "builder",
    "masterpw",
    "pässwort",
    "wrong",
    "",
    "Wonderland",
];
const TOKEN_LIST: [&str; 4] = ["tok-alice", "tok-bob", "bad-token", ""];

fn name(i: u8) -> &'static str {
    NAMES[usize::from(i) % NAMES.len()]
}
fn secret(i: u8) -> &'static str {
    SECRETS[usize::from(i) % SECRETS.len()]
}
fn token(i: u8) -> &'static str {
    TOKEN_LIST[usize::from(i) % TOKEN_LIST.len()]
}

#[derive(Debug, Arbitrary)]
enum Mech {
    Plain,
    Login,
    XOAuth2,
    OAuthBearer,
    Scram,
    Other(String),
    LowerPlain,
}

#[derive(Debug, Arbitrary)]
enum Resp {
    Base64(Vec<u8>),
    Raw(Vec<u8>),
    Cancel,
    Empty,
    Plain {
        authz: u8,
        authc: u8,
        password: u8,
    },
    Text(u8),
    Secret(u8),
    XOAuth2 {
        user: u8,
        token: u8,
    },
    OAuthBearer {
        user: Option<u8>,
        token: u8,
    },
    ScramFirst(u8),
    /// The final message for the last server-first, with this password.
    ScramFinal(u8),
}

#[derive(Debug, Arbitrary)]
enum Op {
    Auth { mech: Mech, initial: Option<Resp> },
    Respond(Resp),
    Raw(u16),
    Capa,
    AuthList,
    Quit,
    Stat,
    User(u8),
    Pass(u8),
    Inject(u8),
    Advance(u16),
    AdvanceToDeadline,
    Eof,
}

/// What the target sent in SASL, decoded: with the bytes the session was
/// given, the oracle's evidence.
#[derive(Default)]
struct Said {
    /// Every SASL response this target encoded, decoded.
    bytes: Vec<u8>,
    /// The user of the last SCRAM first message this target made.
    scram_user: Option<String>,
    /// (user, password right) of every SCRAM final message this target made.
    scram_finals: Vec<(String, bool)>,
}

/// What the client said, as evidence a login had the right secret: the
/// responses this target encoded, every byte the session was given (one
/// contiguous stream: a secret may arrive split over reads), and each line
/// and word of that stream base64-decoded.
fn evidence(said: &Said, client_bytes: &[u8]) -> Vec<u8> {
    let mut all = said.bytes.clone();
    all.push(0);
    all.extend_from_slice(client_bytes);
    all.push(0);
    for line in client_bytes.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        for word in std::iter::once(line).chain(line.split(|&b| b == b' ')) {
            if let Ok(decoded) = STANDARD.decode(word) {
                all.extend(decoded);
                all.push(0);
            }
        }
    }
    all
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

fn password_of(user: &str) -> Option<&'static str> {
    USERS.iter().find(|(u, _)| *u == user).map(|(_, p)| *p)
}

/// The last `+ ` challenge the session sent, decoded.
fn last_challenge(sent: &[u8]) -> Option<Vec<u8>> {
    let text = sent.strip_suffix(b"\r\n")?;
    let start = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let line = text[start..].strip_prefix(b"+ ")?;
    STANDARD.decode(line).ok()
}

/// Checks every `+ ` line sent is valid base64.
fn check_challenges(sent: &[u8]) {
    for line in sent.split(|&b| b == b'\n') {
        if let Some(b64) = line.strip_prefix(b"+ ") {
            let b64 = b64.strip_suffix(b"\r").unwrap_or(b64);
            if STANDARD.decode(b64).is_err() {
                panic!("a challenge that is not base64: {}", escape_bytes(line));
            }
        }
    }
}

fn encode(run: &Run, said: &mut Said, resp: Resp) -> Vec<u8> {
    let decoded: Vec<u8> = match resp {
        Resp::Raw(mut bytes) => {
            bytes.retain(|&b| b != b'\n');
            return bytes;
        }
        Resp::Cancel => return b"*".to_vec(),
        Resp::Empty => return b"=".to_vec(),
        Resp::Base64(bytes) => bytes,
        Resp::Plain {
            authz,
            authc,
            password,
        } => format!("{}\0{}\0{}", name(authz), name(authc), secret(password)).into_bytes(),
        Resp::Text(i) => name(i).as_bytes().to_vec(),
        Resp::Secret(i) => secret(i).as_bytes().to_vec(),
        Resp::XOAuth2 { user, token: t } => {
            format!("user={}\x01auth=Bearer {}\x01\x01", name(user), token(t)).into_bytes()
        }
        Resp::OAuthBearer { user, token: t } => {
            let authz = user.map(|u| format!("a={}", name(u))).unwrap_or_default();
            format!("n,{authz},\x01auth=Bearer {}\x01\x01", token(t)).into_bytes()
        }
        Resp::ScramFirst(u) => {
            let user = name(u);
            said.scram_user = Some(user.to_owned());
            let first = ScramClient::new(user, "").first();
            said.bytes
                .extend(STANDARD.decode(&first).unwrap_or_default());
            said.bytes.push(0);
            return first.into_bytes();
        }
        Resp::ScramFinal(p) => {
            let server_first = last_challenge(&run.h.sent)
                .and_then(|c| String::from_utf8(c).ok())
                .filter(|s| {
                    let field = |n: &str| s.split(',').find_map(|f| f.strip_prefix(n));
                    field("r=").is_some()
                        && field("s=").is_some_and(|salt| STANDARD.decode(salt).is_ok())
                        && field("i=")
                            .is_some_and(|i| i.parse::<u32>().is_ok_and(|i| i > 0 && i <= 100_000))
                });
            match (server_first, said.scram_user.clone()) {
                (Some(server_first), Some(user)) => {
                    let password = secret(p);
                    let right = password_of(&user) == Some(password);
                    said.scram_finals.push((user.clone(), right));
                    let fin = ScramClient::new(&user, password).finish(&server_first);
                    return fin.response.into_bytes();
                }
                _ => b"c=biws,r=x,p=AAAA".to_vec(),
            }
        }
    };
    said.bytes.extend_from_slice(&decoded);
    said.bytes.push(0);
    STANDARD.encode(decoded).into_bytes()
}

/// The oracle: every `Lock` follows a credential check that is right by
/// the users' table (with what the client sent), or a SCRAM exchange
/// finished with the user's real password.
fn check_logins(run: &Run, said: &Said) {
    let events = &run.h.events;
    let evidence = evidence(said, &run.client_bytes);
    for (i, e) in events.iter().enumerate() {
        let Event::Request(Request::Lock { user }) = e else {
            continue;
        };
        let before = events[..i].iter().rev().find_map(|e| match e {
            Event::Request(r) => Some(r),
            _ => None,
        });
        let ok = match before {
            Some(Request::Authenticate {
                user: checked,
                credential,
            }) if checked == user => {
                let (right, secret): (bool, &[u8]) = match credential {
                    Credential::Password(p) => (
                        password_of(user).map(str::as_bytes) == Some(p.expose()),
                        p.expose(),
                    ),
                    Credential::PasswordFor {
                        authenticator,
                        password,
                    } => (
                        authenticator == MASTER
                            && password_of(MASTER).map(str::as_bytes) == Some(password.expose())
                            && password_of(user).is_some(),
                        password.expose(),
                    ),
                    Credential::Bearer(t) => (
                        TOKENS
                            .iter()
                            .any(|(tok, u)| tok.as_bytes() == t.expose().as_bytes() && u == user),
                        t.expose().as_bytes(),
                    ),
                    Credential::Apop(_) => (true, b""),
                    _ => (false, b""),
                };
                let sent = !user.is_ascii()
                    || (contains(&evidence, user.as_bytes()) && contains(&evidence, secret))
                    || !matches!(
                        credential,
                        Credential::Password(_)
                            | Credential::PasswordFor { .. }
                            | Credential::Bearer(_)
                    );
                right && sent
            }
            Some(Request::ScramCredentials { user: looked_up }) if looked_up == user => said
                .scram_finals
                .last()
                .is_some_and(|(u, right)| u == user && *right),
            _ => false,
        };
        if !ok {
            panic!(
                "a login without the right credentials: Lock for {user} after {before:?}\nsent: {}",
                escape_bytes(&run.h.sent)
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    quiet_injected_panics();
    let (ops, stream) = split_input(data);
    let mut u = Unstructured::new(ops);
    let mut stream = Stream(stream);
    let config = Config::builder()
        .hostname("fuzz.example")
        .sasl(&Mechanism::ALL)
        .plaintext_auth(PlaintextAuth::Allow)
        .utf8(true)
        .auth_failure_delay(Duration::ZERO)
        .max_auth_failures(10)
        .max_bad_commands(50)
        .build()
        .expect("a valid config");
    let mut run = Run::new(config, store(), Channel::default(), 512);
    let mut said = Said::default();
    for _ in 0..64 {
        if u.is_empty() || run.h.session.is_closed() {
            break;
        }
        let Ok(op) = Op::arbitrary(&mut u) else {
            break;
        };
        let line: Option<Vec<u8>> = match op {
            Op::Auth { mech, initial } => {
                let mut line = match mech {
                    Mech::Plain => b"AUTH PLAIN".to_vec(),
                    Mech::Login => b"AUTH LOGIN".to_vec(),
                    Mech::XOAuth2 => b"AUTH XOAUTH2".to_vec(),
                    Mech::OAuthBearer => b"AUTH OAUTHBEARER".to_vec(),
                    Mech::Scram => b"AUTH SCRAM-SHA-256".to_vec(),
                    Mech::LowerPlain => b"auth plain".to_vec(),
                    Mech::Other(name) => {
                        let mut l = b"AUTH ".to_vec();
                        l.extend(name.bytes().filter(|&b| b != b'\n' && b != b' ').take(40));
                        l
                    }
                };
                if let Some(r) = initial {
                    line.push(b' ');
                    line.extend(
                        encode(&run, &mut said, r)
                            .into_iter()
                            .filter(|&b| b != b' '),
                    );
                }
                Some(line)
            }
            Op::Respond(r) => Some(encode(&run, &mut said, r)),
            Op::Raw(n) => {
                let bytes = stream.take(usize::from(n) % 2048);
                run.feed(bytes);
                None
            }
            Op::Capa => Some(b"CAPA".to_vec()),
            Op::AuthList => Some(b"AUTH".to_vec()),
            Op::Quit => Some(b"QUIT".to_vec()),
            Op::Stat => Some(b"STAT".to_vec()),
            Op::User(i) => Some(format!("USER {}", name(i)).into_bytes()),
            Op::Pass(i) => Some(format!("PASS {}", secret(i)).into_bytes()),
            Op::Inject(k) => {
                let fault = match k % 4 {
                    0 => Fault::Refuse(Refusal::auth("no")),
                    1 => Fault::Refuse(Refusal::login_delay("later")),
                    2 => Fault::Internal,
                    _ => Fault::Hang,
                };
                run.h.store.inject(FaultPoint::Authenticate, fault);
                None
            }
            Op::Advance(ms) => {
                run.advance(Duration::from_millis(u64::from(ms)));
                None
            }
            Op::AdvanceToDeadline => {
                run.advance_to_deadline();
                None
            }
            Op::Eof => {
                run.eof();
                None
            }
        };
        if let Some(mut line) = line {
            line.retain(|&b| b != b'\n');
            run.line(&line);
        }
    }
    let rest = stream.rest();
    run.feed(rest);
    run.settle();
    if std::env::var_os("FUZZ_DEBUG").is_some() {
        eprintln!(
            "sent: {}\nevents: {:?}",
            escape_bytes(&run.h.sent),
            run.h.events
        );
    }
    check_challenges(&run.h.sent);
    check_logins(&run, &said);
    run.check();
});
