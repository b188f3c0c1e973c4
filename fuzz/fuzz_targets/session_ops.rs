//! Structured operation sequences against one session over the in-memory
//! store: reads taken from a client byte stream (or well-formed command
//! lines), the clock (steps and deadlines), end of stream, a lost
//! connection, a shutdown, the handler failing on its own, a late or
//! repeated answer to the last request, body chunk sizes, and a fault at
//! any store call (every kind of refusal with any text, internal errors,
//! panics, hangs). The configuration is chosen too. Checked with the
//! shared invariants as `session_bytes` is.
//!
//! Input: see `pop3_fuzz::split_input` (operations, then the byte stream).

#![no_main]

use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use pop3_fuzz::{quiet_injected_panics, split_input, store, Run, Stream, USERS};
use pop3_proto::testing::{Fault, FaultPoint};
use pop3_proto::{Channel, Config, Mechanism, PlaintextAuth, Refusal, ResponseCode};

#[derive(Debug, Arbitrary)]
struct Setup {
    input_buffer: u16,
    high_water: u16,
    chunk: u16,
    max_bad: u8,
    max_auth_failures: u8,
    delay_ms: u16,
    stls: bool,
    apop: bool,
    user_pass: bool,
    utf8: bool,
    lang: bool,
    plaintext: u8,
    mechanisms: u8,
    tls: bool,
    local: bool,
}

impl Setup {
    fn config(&self) -> Config {
        let mechanisms: Vec<Mechanism> = Mechanism::ALL
            .into_iter()
            .enumerate()
            .filter(|(i, _)| self.mechanisms & (1 << i) != 0)
            .map(|(_, m)| m)
            .collect();
        let plaintext = match self.plaintext % 3 {
            0 => PlaintextAuth::Allow,
            1 => PlaintextAuth::UnlessTlsOffered,
            _ => PlaintextAuth::RequireTls,
        };
        Config::builder()
            .hostname("fuzz.example")
            .apop(self.apop)
            .user_pass(self.user_pass || (!self.apop && mechanisms.is_empty()))
            .stls(self.stls)
            .sasl(&mechanisms)
            .plaintext_auth(plaintext)
            .utf8(self.utf8)
            .lang(self.lang)
            .input_buffer(255 + usize::from(self.input_buffer) % 16_000)
            .output_high_water(1 + usize::from(self.high_water))
            .max_bad_commands(1 + u32::from(self.max_bad % 30))
            .max_auth_failures(1 + u32::from(self.max_auth_failures % 8))
            .auth_failure_delay(Duration::from_millis(u64::from(self.delay_ms % 5000)))
            .build()
            .expect("a valid config")
    }
}

#[derive(Debug, Arbitrary)]
enum Point {
    Authenticate,
    Lock,
    Open,
    MidBody,
    Commit,
}

#[derive(Debug, Arbitrary)]
enum Kind {
    Refuse(u8, String),
    Internal,
    Panic,
    Hang,
}

#[derive(Debug, Arbitrary)]
enum Line {
    User(u8),
    Pass(u8),
    Apop(u8, bool),
    AuthPlain(u8, u8),
    Stat,
    List(Option<u8>),
    Uidl(Option<u8>),
    Retr(u8),
    Top(u8, u8),
    Dele(u8),
    Rset,
    Noop,
    Quit,
    Capa,
    Stls,
    Utf8,
    Lang(Option<u8>),
}

#[derive(Debug, Arbitrary)]
enum Op {
    Feed(u16),
    Line(Line),
    Advance(u32),
    AdvanceToDeadline,
    Eof,
    Lost,
    Shutdown,
    Fail,
    AnswerAgain,
    Inject(Point, Kind),
    Chunk(u16),
}

const PASSWORDS: [&str; 3] = ["wonderland", "builder", "wrong"];

fn user(i: u8) -> &'static str {
    match usize::from(i) % (USERS.len() + 1) {
        i if i < USERS.len() => USERS[i].0,
        _ => "nobody",
    }
}

fn password(i: u8) -> &'static str {
    PASSWORDS[usize::from(i) % PASSWORDS.len()]
}

fn refusal(code: u8, text: String) -> Refusal {
    let code = match code % 8 {
        0 => None,
        1 => Some(ResponseCode::Auth),
        2 => Some(ResponseCode::InUse),
        3 => Some(ResponseCode::LoginDelay),
        4 => Some(ResponseCode::SysTemp),
        5 => Some(ResponseCode::SysPerm),
        6 => Some(ResponseCode::Utf8),
        _ => Some(ResponseCode::Auth),
    };
    match code {
        Some(code) => Refusal::with_code(code, text),
        None => Refusal::new(text),
    }
}

fn line_text(run: &Run, line: Line) -> Vec<u8> {
    use base64::Engine as _;
    let n = |i: u8| u32::from(i % 10);
    let text = match line {
        Line::User(u) => format!("USER {}", user(u)),
        Line::Pass(p) => format!("PASS {}", password(p)),
        Line::Apop(u, right) => {
            let name = user(u);
            let secret = if right {
                USERS
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map_or("x", |(_, p)| p)
            } else {
                "wrong"
            };
            let hex = match run.h.session.apop_timestamp() {
                Some(ts) => pop3_proto::apop_digest(ts, secret.as_bytes())
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect(),
                None => "0".repeat(32),
            };
            format!("APOP {name} {hex}")
        }
        Line::AuthPlain(u, p) => {
            let response = format!("\0{}\0{}", user(u), password(p));
            format!(
                "AUTH PLAIN {}",
                base64::engine::general_purpose::STANDARD.encode(response)
            )
        }
        Line::Stat => "STAT".into(),
        Line::List(None) => "LIST".into(),
        Line::List(Some(i)) => format!("LIST {}", n(i)),
        Line::Uidl(None) => "UIDL".into(),
        Line::Uidl(Some(i)) => format!("UIDL {}", n(i)),
        Line::Retr(i) => format!("RETR {}", n(i)),
        Line::Top(i, k) => format!("TOP {} {}", n(i), k % 8),
        Line::Dele(i) => format!("DELE {}", n(i)),
        Line::Rset => "RSET".into(),
        Line::Noop => "NOOP".into(),
        Line::Quit => "QUIT".into(),
        Line::Capa => "CAPA".into(),
        Line::Stls => "STLS".into(),
        Line::Utf8 => "UTF8".into(),
        Line::Lang(None) => "LANG".into(),
        Line::Lang(Some(i)) => {
            ["LANG en", "LANG *", "LANG i-default", "LANG fr"][usize::from(i % 4)].into()
        }
    };
    text.into_bytes()
}

fuzz_target!(|data: &[u8]| {
    quiet_injected_panics();
    let (ops, stream) = split_input(data);
    let mut u = Unstructured::new(ops);
    let mut stream = Stream(stream);
    let Ok(setup) = Setup::arbitrary(&mut u) else {
        return;
    };
    let channel = Channel {
        tls: setup.tls,
        local: setup.local,
    };
    let chunk = 1 + usize::from(setup.chunk) % 8192;
    let store = store();
    let mut run = Run::new(setup.config(), store, channel, chunk);
    for _ in 0..256 {
        if u.is_empty() {
            break;
        }
        let Ok(op) = Op::arbitrary(&mut u) else {
            break;
        };
        match op {
            Op::Feed(n) => {
                let bytes = stream.take(1 + usize::from(n) % 4096);
                run.feed(bytes);
            }
            Op::Line(line) => {
                let text = line_text(&run, line);
                run.line(&text);
            }
            Op::Advance(ms) => run.advance(Duration::from_millis(u64::from(ms % 1_000_000))),
            Op::AdvanceToDeadline => {
                run.advance_to_deadline();
            }
            Op::Eof => run.eof(),
            Op::Lost => run.lost(),
            Op::Shutdown => run.shutdown(),
            Op::Fail => run.fail(),
            Op::AnswerAgain => run.answer_again(),
            Op::Inject(point, kind) => {
                let point = match point {
                    Point::Authenticate => FaultPoint::Authenticate,
                    Point::Lock => FaultPoint::Lock,
                    Point::Open => FaultPoint::Open,
                    Point::MidBody => FaultPoint::MidBody,
                    Point::Commit => FaultPoint::Commit,
                };
                let fault = match kind {
                    Kind::Refuse(code, text) => Fault::Refuse(refusal(code, text)),
                    Kind::Internal => Fault::Internal,
                    Kind::Panic => Fault::Panic,
                    Kind::Hang => Fault::Hang,
                };
                run.h.store.inject(point, fault);
            }
            Op::Chunk(n) => {
                let n = 1 + usize::from(n) % 8192;
                run.max_chunk = run.max_chunk.max(n);
                run.h.store.set_chunk_size(n);
            }
        }
    }
    let rest = stream.rest();
    run.feed(rest);
    run.settle();
    run.check();
});
