//! What the fuzz targets share: the users and messages of the in-memory
//! store, a harness-driven session that checks the shared invariants of
//! `pop3_proto::testing` as it goes, and the split of a fuzz input into
//! structured operations and a raw client byte stream.
//!
//! Every check here is one of `pop3_proto::testing`'s (the same functions
//! the proptest suites call); this crate only wires them to fuzz inputs.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Once;
use std::time::Duration;

use pop3_proto::testing::{
    awkward_messages, check_buffer_bounds, check_locks, check_store_after, escape_bytes,
    message_of_size, Harness, MemoryStore, ReplyChecker, StoredMessage, HARNESS_READ,
};
use pop3_proto::{Channel, CloseReason, Config, Event, Request};

/// The users of every target's store: name, password.
pub const USERS: [(&str, &str); 4] = [
    ("alice", "wonderland"),
    ("bob", "builder"),
    ("admin", "masterpw"),
    ("jörg", "pässwort"),
];

/// `admin`'s password opens every maildrop (SASL PLAIN authorization identity).
pub const MASTER: &str = "admin";

/// OAuth bearer tokens and the user each is for.
pub const TOKENS: [(&str, &str); 2] = [("tok-alice", "alice"), ("tok-bob", "bob")];

/// Bodies with the awkward parts (see `testing::awkward_messages`).
pub fn alice_messages() -> Vec<StoredMessage> {
    awkward_messages()
}

/// The store every session target starts from: alice with
/// [`alice_messages`], bob with a maildrop that needs UTF-8 mode, admin
/// (a master user, empty maildrop), jörg (a UTF-8 name), two tokens.
pub fn store() -> MemoryStore {
    let store = MemoryStore::new();
    store.add_user_with("alice", "wonderland", alice_messages());
    store.add_user_with(
        "bob",
        "builder",
        [StoredMessage {
            uid: "bob-1".into(),
            body: "Subject: caf\u{e9}\r\n\r\nUTF-8 header\r\n".into(),
        }],
    );
    store.set_utf8_only("bob");
    store.add_user("admin", "masterpw");
    store.add_master(MASTER);
    store.add_user_with("jörg", "pässwort", [message_of_size("j-1", 200)]);
    for (token, user) in TOKENS {
        store.add_token(user, token);
    }
    store
}

/// Lets injected panics (the store's `Fault::Panic`, a blocking
/// `Fault::Hang`) unwind quietly to where the target or the drive loop
/// catches them; every other panic still aborts through libFuzzer's hook.
pub fn quiet_injected_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let text = info
                .payload_as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| info.to_string());
            if !is_injected(&text) {
                previous(info);
            }
        }));
    });
}

fn is_injected(text: &str) -> bool {
    text.starts_with("injected panic at ") || text.starts_with("injected Fault::Hang")
}

fn payload_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

/// Splits a fuzz input into an operations part and a client byte stream:
/// the first two octets (little-endian) give the operations part's
/// length. An input without operations (`00 00` then a transcript) is
/// the stream alone, which is how the seeds are made.
pub fn split_input(data: &[u8]) -> (&[u8], &[u8]) {
    if data.len() < 2 {
        return (&[], data);
    }
    let n = usize::from(u16::from_le_bytes([data[0], data[1]])).min(data.len() - 2);
    data[2..].split_at(n)
}

/// A cursor over the client byte stream.
#[derive(Debug)]
pub struct Stream<'a>(pub &'a [u8]);

impl<'a> Stream<'a> {
    /// The next `n` octets (fewer at the end).
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        let n = self.0.len();
        self.take(n)
    }
}

/// A session over the in-memory store, driven by the harness, watched by a
/// [`ReplyChecker`] that sees every read and everything sent, in order.
/// Injected panics are caught and answered as the drive loop does (an
/// internal error: `fail`).
#[derive(Debug)]
pub struct Run {
    /// The harness.
    pub h: Harness,
    /// The client's view of the conversation.
    pub checker: ReplyChecker,
    /// Bytes of `h.sent` the checker has seen.
    seen: usize,
    /// Every user's messages when the session started.
    before: Vec<(String, Vec<StoredMessage>)>,
    /// The largest body chunk the store was set to hand out.
    pub max_chunk: usize,
    /// Locks the harness took and gave back itself for a repeated `Lock`
    /// answer the session refused (not the session's).
    harness_locks: usize,
    /// Every byte the session was given, in order (reads the harness
    /// dropped are not in it).
    pub client_bytes: Vec<u8>,
}

impl Run {
    /// A session with `config` over `store` (chunks of `chunk` octets).
    pub fn new(config: Config, store: MemoryStore, channel: Channel, chunk: usize) -> Self {
        store.set_chunk_size(chunk);
        let before = USERS
            .iter()
            .map(|(u, _)| ((*u).to_owned(), store.messages(u)))
            .collect();
        let h = Harness::with_channel(config, store, channel);
        let mut run = Self {
            h,
            checker: ReplyChecker::new(),
            seen: 0,
            before,
            max_chunk: chunk.max(1),
            harness_locks: 0,
            client_bytes: Vec::new(),
        };
        run.sync();
        run
    }

    /// Shows the checker what was sent since the last call.
    fn sync(&mut self) {
        let new = &self.h.sent[self.seen..];
        if let Err(e) = self.checker.server(new) {
            panic!(
                "invariant broken: {e}\nsent so far: {}",
                escape_bytes(&self.h.sent)
            );
        }
        self.seen = self.h.sent.len();
    }

    /// Runs `f` on the harness; an injected panic becomes `fail`, as the
    /// drive loop makes it.
    fn guarded(&mut self, f: impl FnOnce(&mut Harness)) {
        let mut outcome = catch_unwind(AssertUnwindSafe(|| f(&mut self.h)));
        while let Err(payload) = outcome {
            let text = payload_text(&*payload);
            if !is_injected(&text) {
                std::panic::resume_unwind(payload);
            }
            let h = &mut self.h;
            let _ = h.session.fail(h.now);
            outcome = catch_unwind(AssertUnwindSafe(|| h.run()));
        }
        self.sync();
    }

    /// The client sends `bytes` (in reads of at most [`HARNESS_READ`] octets).
    pub fn feed(&mut self, bytes: &[u8]) {
        for read in bytes.chunks(HARNESS_READ) {
            // Wait (on the clock, as the harness would) until the session
            // wants input, so that the checker learns of the read only when
            // the session gets it: what STLS throws away depends on that.
            while !self.h.session.is_closed() && !self.h.session.wants_input() {
                let before = self.h.now;
                let mut moved = false;
                self.guarded(|h| moved = h.advance_to_deadline() && h.now != before);
                if !moved {
                    break;
                }
            }
            if !self.h.session.wants_input() {
                // Closed, or backpressure with a request that hangs: the
                // harness would drop the read, so the client never sent it.
                continue;
            }
            self.checker.client(read);
            self.client_bytes.extend_from_slice(read);
            self.guarded(|h| h.feed(read));
        }
    }

    /// The client sends `line` and CRLF.
    pub fn line(&mut self, line: &[u8]) {
        let mut bytes = line.to_vec();
        bytes.extend_from_slice(b"\r\n");
        self.feed(&bytes);
    }

    /// The peer closes its side.
    pub fn eof(&mut self) {
        self.guarded(Harness::eof);
    }

    /// The connection is lost.
    pub fn lost(&mut self) {
        self.guarded(|h| {
            h.session.handle_connection_lost(h.now);
            h.run();
        });
    }

    /// The server shuts down.
    pub fn shutdown(&mut self) {
        self.guarded(|h| {
            h.session.handle_shutdown(h.now);
            h.run();
        });
    }

    /// The handler fails on its own (the session's `fail`, at any time).
    pub fn fail(&mut self) {
        self.guarded(|h| {
            let _ = h.session.fail(h.now);
            h.run();
        });
    }

    /// The clock moves on.
    pub fn advance(&mut self, by: Duration) {
        self.guarded(|h| h.advance(by));
    }

    /// The clock moves to the next deadline; false if there is none.
    pub fn advance_to_deadline(&mut self) -> bool {
        let mut moved = false;
        self.guarded(|h| moved = h.advance_to_deadline());
        moved
    }

    /// Answers the last request again (late, after a hang, or a second
    /// time, which the session must refuse without changing anything).
    pub fn answer_again(&mut self) {
        let last = self
            .h
            .events
            .iter()
            .rev()
            .find(|e| matches!(e, Event::Request(_)))
            .cloned();
        if let Some(event) = last {
            let (locks, unlocks) = (self.h.store.locks(), self.h.store.unlocks());
            let mut refused = false;
            self.guarded(|h| {
                refused = h.try_answer(event).is_err();
                h.run();
            });
            if refused {
                // A lock taken for a refused grant was given back at once.
                let taken = self.h.store.locks() - locks;
                if taken > 0 && self.h.store.unlocks() - unlocks >= taken {
                    self.harness_locks += taken;
                }
            }
        }
    }

    /// Ends the session the usual way: end of stream, then the clock runs
    /// through every deadline (held replies, the idle timeout).
    pub fn settle(&mut self) {
        if !self.h.session.is_closed() {
            self.eof();
        }
        for _ in 0..64 {
            if self.h.session.is_closed() || !self.advance_to_deadline() {
                break;
            }
        }
    }

    /// The messages `user` had when the session started.
    pub fn messages_before(&self, user: &str) -> Vec<StoredMessage> {
        self.before
            .iter()
            .find(|(u, _)| u == user)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }

    /// Every end-of-session invariant: the output ends at a line boundary
    /// outside a body (unless a handler failure cut one), one unlock per
    /// lock, a commit only at QUIT with exactly the marked messages, every
    /// RETR and TOP body right, the store changed only by commits, bounded
    /// buffers.
    ///
    /// # Panics
    /// On the first invariant broken.
    pub fn check(&self) {
        let h = &self.h;
        let fail = |what: String| -> ! {
            panic!(
                "invariant broken: {what}\nsent: {}\nevents: {:?}\nclient view: {:?}",
                escape_bytes(&h.sent),
                h.events,
                self.checker
            )
        };
        let reason = h.session.close_reason();
        let cut_ok = reason == Some(CloseReason::HandlerFailed);
        if let Err(e) = self.checker.finish(cut_ok) {
            fail(e.to_string());
        }
        let closed = h.session.is_closed();
        let locks = h.store.locks() - self.harness_locks;
        let unlocks = h.store.unlocks() - self.harness_locks;
        if let Err(e) = check_locks(&h.events, locks, unlocks, closed) {
            fail(e.to_string());
        }
        if let Err(e) = self.checker.check_commits(&h.events) {
            fail(e.to_string());
        }
        // The maildrop the bodies came from: the last one locked.
        let locked = h.events.iter().rev().find_map(|e| match e {
            Event::Request(Request::Lock { user }) => Some(user.clone()),
            _ => None,
        });
        if let Some(user) = locked {
            let messages = self.messages_before(&user);
            let bodies: Vec<&[u8]> = messages.iter().map(|m| m.body.as_slice()).collect();
            if let Err(e) = self.checker.check_bodies(&bodies) {
                fail(format!("{user}: {e}"));
            }
        }
        let commits = h.store.commits();
        for (user, before) in &self.before {
            if let Err(e) = check_store_after(before, &h.store.messages(user), &commits) {
                fail(format!("{user}: {e}"));
            }
        }
        if let Err(e) = check_buffer_bounds(
            h.session.config(),
            HARNESS_READ,
            self.max_chunk,
            h.peak_input,
            h.peak_output,
        ) {
            fail(e.to_string());
        }
        if closed && reason.is_none() {
            fail("closed without a reason".into());
        }
    }
}

/// The one fixed configuration of `session_bytes`: everything offered
/// (STLS, APOP, every SASL mechanism, UTF8, LANG), plaintext allowed,
/// small buffers so that flow control is exercised, no failed-login delay.
pub fn wide_config() -> Config {
    Config::builder()
        .hostname("fuzz.example")
        .apop(true)
        .stls(true)
        .sasl(&pop3_proto::Mechanism::ALL)
        .plaintext_auth(pop3_proto::PlaintextAuth::Allow)
        .utf8(true)
        .lang(true)
        .auth_failure_delay(Duration::ZERO)
        .max_auth_failures(5)
        .max_bad_commands(50)
        .input_buffer(1024)
        .output_high_water(256)
        .build()
        .expect("a valid config")
}
