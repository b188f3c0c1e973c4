//! Model-based property tests for the TRANSACTION state: every reply to a
//! random command sequence is checked against a tiny reference model of the
//! maildrop and its deletion marks, and the way the session ends (QUIT, the
//! peer hanging up, the idle timeout, or not at all) decides what is deleted
//! and that the lock is released exactly once.

use pop3_proto::testing::{
    check_locks, check_store_after, check_stuffed, check_top, encode_body, escape_bytes,
    normalize_body, Harness, MemoryStore, StoredMessage,
};
use pop3_proto::{CloseReason, Config, Event, Request};
use proptest::prelude::*;

const USER: &str = "alice";
const PASSWORD: &str = "secret";

/// A command of the TRANSACTION state. Message numbers may be 0 or past the end.
#[derive(Debug, Clone)]
enum Op {
    Stat,
    List(Option<u32>),
    Uidl(Option<u32>),
    Dele(u32),
    Rset,
    Noop,
    Retr(u32),
    Top(u32, u64),
}

impl Op {
    fn line(&self) -> String {
        match self {
            Self::Stat => "STAT".into(),
            Self::List(None) => "LIST".into(),
            Self::List(Some(n)) => format!("LIST {n}"),
            Self::Uidl(None) => "UIDL".into(),
            Self::Uidl(Some(n)) => format!("UIDL {n}"),
            Self::Dele(n) => format!("DELE {n}"),
            Self::Rset => "RSET".into(),
            Self::Noop => "NOOP".into(),
            Self::Retr(n) => format!("RETR {n}"),
            Self::Top(n, k) => format!("TOP {n} {k}"),
        }
    }
}

/// How the session ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Quit,
    Eof,
    Timeout,
    Nothing,
}

/// The reference model: the maildrop as listed at login, and the marks.
struct Model {
    /// Size (normalized) and uid of each message, message 1 first.
    messages: Vec<(u64, String)>,
    /// `None` once marked deleted.
    live: Vec<Option<(u64, String)>>,
}

impl Model {
    fn new(messages: &[StoredMessage]) -> Self {
        let messages: Vec<(u64, String)> = messages
            .iter()
            .map(|m| (normalize_body(&m.body).len() as u64, m.uid.clone()))
            .collect();
        let live = messages.iter().cloned().map(Some).collect();
        Self { messages, live }
    }

    /// The live message with this 1-based number.
    fn get(&self, n: u32) -> Option<&(u64, String)> {
        let i = (n as usize).checked_sub(1)?;
        self.live.get(i)?.as_ref()
    }

    fn stat(&self) -> (usize, u64) {
        let live: Vec<_> = self.live.iter().flatten().collect();
        (live.len(), live.iter().map(|(s, _)| s).sum())
    }

    fn marked(&self) -> Vec<u32> {
        (1..=self.live.len() as u32)
            .filter(|&n| self.live[n as usize - 1].is_none())
            .collect()
    }
}

/// A body biased towards dots and line-end bytes, often with a header/body split.
fn body() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        4 => Just(b'.'),
        4 => Just(b'\r'),
        4 => Just(b'\n'),
        3 => Just(b'a'),
        1 => any::<u8>(),
    ];
    (
        prop::option::of("[A-Z][a-z]{0,4}: [a-z]{0,5}\r?\n\r?\n"),
        prop::collection::vec(byte, 0..80),
    )
        .prop_map(|(head, tail)| {
            let mut out = head.map(String::into_bytes).unwrap_or_default();
            out.extend(tail);
            out
        })
}

fn messages() -> impl Strategy<Value = Vec<StoredMessage>> {
    prop::collection::vec(body(), 0..=5).prop_map(|bodies| {
        bodies
            .into_iter()
            .enumerate()
            .map(|(i, body)| StoredMessage {
                uid: format!("uid-{i}.{}", i * 7 % 5),
                body,
            })
            .collect()
    })
}

fn op(count: u32) -> impl Strategy<Value = Op> {
    let n = 0..=count + 2;
    prop_oneof![
        2 => Just(Op::Stat),
        1 => Just(Op::List(None)),
        2 => n.clone().prop_map(|n| Op::List(Some(n))),
        1 => Just(Op::Uidl(None)),
        2 => n.clone().prop_map(|n| Op::Uidl(Some(n))),
        4 => n.clone().prop_map(Op::Dele),
        1 => Just(Op::Rset),
        1 => Just(Op::Noop),
        2 => n.clone().prop_map(Op::Retr),
        2 => (n, 0u64..6).prop_map(|(n, k)| Op::Top(n, k)),
    ]
}

fn ending() -> impl Strategy<Value = Ending> {
    prop_oneof![
        Just(Ending::Quit),
        Just(Ending::Eof),
        Just(Ending::Timeout),
        Just(Ending::Nothing),
    ]
}

fn scenario() -> impl Strategy<Value = (Vec<StoredMessage>, Vec<Op>, Ending)> {
    messages().prop_flat_map(|m| {
        let count = m.len() as u32;
        (Just(m), prop::collection::vec(op(count), 0..30), ending())
    })
}

fn config() -> Config {
    Config::builder()
        .hostname("mail.example")
        // Commands with message number 0 are syntax errors; never close for them.
        .max_bad_commands(1000)
        .build()
        .unwrap()
}

/// True if `reply` is exactly one line starting with `status`.
fn one_line(reply: &[u8], status: &str) -> bool {
    reply.starts_with(status.as_bytes())
        && reply.ends_with(b"\r\n")
        && !reply[..reply.len() - 2].contains(&b'\n')
}

/// Splits a multi-line reply into its status line (with CRLF) and the rest.
fn split_status(reply: &[u8]) -> (&[u8], &[u8]) {
    match reply.iter().position(|&b| b == b'\n') {
        Some(i) => reply.split_at(i + 1),
        None => (reply, &[]),
    }
}

fn fail(msg: String) -> Result<(), TestCaseError> {
    Err(TestCaseError::fail(msg))
}

/// Checks one reply against the model and updates the model.
fn check_reply(
    op: &Op,
    reply: &[u8],
    new_events: &[Event],
    model: &mut Model,
    stored: &[StoredMessage],
) -> Result<(), TestCaseError> {
    let shown = escape_bytes(reply);
    let expect_err = |ok: bool| -> Result<(), TestCaseError> {
        if ok {
            Ok(())
        } else {
            fail(format!("{op:?}: expected one -ERR line, got {shown}"))
        }
    };
    match op {
        Op::Stat => {
            let (count, size) = model.stat();
            prop_assert_eq!(
                shown,
                escape_bytes(format!("+OK {count} {size}\r\n").as_bytes())
            );
        }
        Op::List(None) | Op::Uidl(None) => {
            let uids = matches!(op, Op::Uidl(None));
            let (status, rest) = split_status(reply);
            prop_assert!(
                one_line(status, "+OK"),
                "{:?}: bad status line in {}",
                op,
                shown
            );
            let mut want = String::new();
            for (i, m) in model.live.iter().enumerate() {
                if let Some((size, uid)) = m {
                    if uids {
                        want.push_str(&format!("{} {uid}\r\n", i + 1));
                    } else {
                        want.push_str(&format!("{} {size}\r\n", i + 1));
                    }
                }
            }
            want.push_str(".\r\n");
            prop_assert_eq!(
                escape_bytes(rest),
                escape_bytes(want.as_bytes()),
                "{:?}",
                op
            );
        }
        Op::List(Some(n)) | Op::Uidl(Some(n)) => match model.get(*n) {
            Some((size, uid)) => {
                let want = if matches!(op, Op::List(_)) {
                    format!("+OK {n} {size}\r\n")
                } else {
                    format!("+OK {n} {uid}\r\n")
                };
                prop_assert_eq!(shown, escape_bytes(want.as_bytes()), "{:?}", op);
            }
            None => expect_err(one_line(reply, "-ERR"))?,
        },
        Op::Dele(n) => {
            if model.get(*n).is_some() {
                prop_assert!(one_line(reply, "+OK"), "{:?}: got {}", op, shown);
                model.live[*n as usize - 1] = None;
            } else {
                expect_err(one_line(reply, "-ERR"))?;
            }
        }
        Op::Rset => {
            prop_assert!(one_line(reply, "+OK"), "RSET: got {}", shown);
            model.live = model.messages.iter().cloned().map(Some).collect();
        }
        Op::Noop => prop_assert!(one_line(reply, "+OK"), "NOOP: got {}", shown),
        Op::Retr(n) | Op::Top(n, _) => {
            let top = match op {
                Op::Top(_, k) => Some(*k),
                _ => None,
            };
            let Some((size, uid)) = model.get(*n).cloned() else {
                prop_assert!(new_events.is_empty(), "{:?}: asked {:?}", op, new_events);
                return expect_err(one_line(reply, "-ERR"));
            };
            // The handler was asked for exactly this message.
            match new_events {
                [Event::Request(Request::Retrieve { message, top_lines })] => {
                    prop_assert_eq!(message.number, *n);
                    prop_assert_eq!(message.uid.as_str(), uid.as_str());
                    prop_assert_eq!(message.size, size);
                    prop_assert_eq!(*top_lines, top);
                }
                other => return fail(format!("{op:?}: expected one Retrieve, got {other:?}")),
            }
            let body = &stored[*n as usize - 1].body;
            let (status, rest) = split_status(reply);
            prop_assert!(
                one_line(status, "+OK"),
                "{:?}: bad status line in {}",
                op,
                shown
            );
            let checked = match top {
                None => {
                    prop_assert!(
                        status.starts_with(format!("+OK {size} octets").as_bytes()),
                        "RETR status {}",
                        escape_bytes(status)
                    );
                    check_stuffed(body, rest)
                }
                Some(k) => check_top(body, k, rest, &encode_body(&[body], None)),
            };
            if let Err(e) = checked {
                return fail(format!("{op:?}: {e}\nbody: {}", escape_bytes(body)));
            }
        }
    }
    Ok(())
}

fn count(events: &[Event], pred: impl Fn(&Event) -> bool) -> usize {
    events.iter().filter(|e| pred(e)).count()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Every TRANSACTION reply matches the reference model, and only QUIT commits exactly the marked messages, with one unlock per closed session.
    #[test]
    fn transaction_matches_the_model((stored, ops, ending) in scenario()) {
        let store = MemoryStore::new();
        store.add_user_with(USER, PASSWORD, stored.clone());
        let config = config();
        let idle = config.idle_timeout();
        let mut h = Harness::new(config, store);
        h.command(&format!("USER {USER}"));
        h.command(&format!("PASS {PASSWORD}"));
        let login = h.take_sent();
        prop_assert!(
            login.ends_with(" octets)\r\n") && login.contains("\r\n+OK "),
            "login: {}",
            login
        );
        prop_assert_eq!(h.store.locks(), 1);

        let mut model = Model::new(&stored);
        for op in &ops {
            let before = h.events.len();
            h.command(&op.line());
            let reply = std::mem::take(&mut h.sent);
            check_reply(op, &reply, &h.events[before..], &mut model, &stored)?;
            prop_assert!(!h.session.is_closed());
        }

        let before = h.events.len();
        match ending {
            Ending::Quit => h.command("QUIT"),
            Ending::Eof => h.eof(),
            Ending::Timeout => h.advance(idle),
            Ending::Nothing => {}
        }
        let tail = h.events[before..].to_vec();
        let commits: Vec<&Vec<pop3_proto::MessageRef>> = h
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Request(Request::Commit { deleted }) => Some(deleted),
                _ => None,
            })
            .collect();
        let marked = model.marked();
        match ending {
            Ending::Quit => {
                prop_assert_eq!(commits.len(), 1, "events: {:?}", tail);
                let deleted = commits[0];
                let numbers: Vec<u32> = deleted.iter().map(|m| m.number).collect();
                prop_assert_eq!(numbers, marked.clone());
                for m in deleted {
                    let (size, uid) = &model.messages[m.number as usize - 1];
                    prop_assert_eq!(m.uid.as_str(), uid.as_str());
                    prop_assert_eq!(m.size, *size);
                }
                let farewell = h.take_sent();
                prop_assert!(one_line(farewell.as_bytes(), "+OK"), "QUIT: {}", farewell);
                let left: Vec<&StoredMessage> = stored
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !marked.contains(&(*i as u32 + 1)))
                    .map(|(_, m)| m)
                    .collect();
                let now = h.store.messages(USER);
                let now: Vec<&StoredMessage> = now.iter().collect();
                prop_assert_eq!(now, left);
                prop_assert_eq!(h.session.close_reason(), Some(CloseReason::Quit));
            }
            Ending::Eof | Ending::Timeout => {
                prop_assert!(commits.is_empty(), "commit without QUIT: {:?}", tail);
                prop_assert!(h.sent.is_empty(), "sent at close: {}", escape_bytes(&h.sent));
                prop_assert_eq!(h.store.messages(USER), &stored[..]);
                prop_assert!(h.store.commits().is_empty());
                let reason = if ending == Ending::Eof {
                    CloseReason::PeerClosed
                } else {
                    CloseReason::IdleTimeout
                };
                prop_assert_eq!(h.session.close_reason(), Some(reason));
            }
            Ending::Nothing => {
                prop_assert!(commits.is_empty());
                prop_assert!(!h.session.is_closed());
                prop_assert_eq!(h.store.messages(USER), &stored[..]);
                prop_assert!(h.store.is_locked(USER));
            }
        }

        let kept = check_store_after(&stored, &h.store.messages(USER), &h.store.commits());
        prop_assert!(kept.is_ok(), "{}", kept.unwrap_err());
        let unlocks = count(&h.events, |e| *e == Event::Unlock);
        let closes = count(&h.events, |e| matches!(e, Event::Closed(_)));
        if h.session.is_closed() {
            prop_assert_eq!((h.store.locks(), h.store.unlocks()), (1, 1));
            let locks = check_locks(&h.events, h.store.locks(), h.store.unlocks(), true);
            prop_assert!(locks.is_ok(), "{}", locks.unwrap_err());
            prop_assert_eq!(unlocks, 1, "events: {:?}", tail);
            prop_assert_eq!(closes, 1);
            prop_assert!(matches!(h.events.last(), Some(Event::Closed(_))), "events: {:?}", tail);
            let unlock_at = h.events.iter().position(|e| *e == Event::Unlock);
            let commit_at = h
                .events
                .iter()
                .position(|e| matches!(e, Event::Request(Request::Commit { .. })));
            if let Some(commit_at) = commit_at {
                prop_assert!(unlock_at > Some(commit_at), "unlock before commit: {:?}", tail);
            }
            prop_assert!(!h.store.is_locked(USER));
        } else {
            prop_assert_eq!((h.store.locks(), h.store.unlocks()), (1, 0));
            let locks = check_locks(&h.events, h.store.locks(), h.store.unlocks(), false);
            prop_assert!(locks.is_ok(), "{}", locks.unwrap_err());
            prop_assert_eq!(unlocks, 0);
            prop_assert_eq!(closes, 0);
        }
    }
}
