//! A sans-IO POP3 server: the whole protocol as a state machine.
//!
//! `pop3-proto` implements RFC 1939 (POP3), RFC 2449 (CAPA, response codes,
//! PIPELINING), RFC 3206 (`SYS` and `AUTH` codes) and the RFC 2595 STLS
//! barrier. It never touches a socket, a thread, a clock or a random number
//! generator: bytes from the peer, the current time and the handler's answers
//! go in; bytes to send, requests for the handler and deadlines come out. The
//! same [`Session`] therefore runs under any runtime, in tests with simulated
//! time, and under a fuzzer.
//!
//! The handler (your mail store) answers only what the protocol cannot:
//! are these credentials good, lock and describe this maildrop, stream me
//! message *k*, delete these messages. Everything else (states, parsing,
//! STAT/LIST/UIDL, deletion marks, CAPA, dot-stuffing, the TOP cut-off,
//! limits, timers) is done here.
//!
//! # The driving contract
//!
//! 1. Create a [`Session`] when a connection is accepted, with a
//!    [`Greeting`] whose nonce is unique to the connection.
//! 2. Call [`Session::poll_output`] and act on the [`Output`], then poll
//!    again. Outputs come in the order the driver must act on them:
//!    - [`Output::Transmit`]: write all its segments to the peer by its
//!      [`deadline`](Transmit::deadline), then give it back with
//!      [`Session::handle_written`]. Until then the session has nothing
//!      else to hand out.
//!    - [`Output::Event`]: answer a [`Request`], push a body chunk on
//!      [`Event::NeedBody`] (or end the body; [`Session::fail`] if the
//!      message cannot be read), run the TLS handshake on
//!      [`Event::StartTls`], release the maildrop lock on [`Event::Unlock`],
//!      or close the connection on [`Event::Closed`], which is always last.
//!    - [`Output::Wait`]: nothing to do until the peer or the clock moves.
//!      If [`Wait::read`], read from the peer and pass the bytes to
//!      [`Session::handle_input`]; at end of stream call
//!      [`Session::handle_eof`] (commands already received are still
//!      answered). At [`Wait::deadline`] call [`Session::handle_timeout`].
//!      A wait without `read` is not the end of the stream: the input
//!      buffer is full, a TLS handshake or a write is under way, or a
//!      request is with the handler.
//! 3. When reading or writing fails, call [`Session::handle_connection_lost`];
//!    when a write misses its deadline, [`Session::handle_timeout`].
//!
//! Needing more input is not an error: the session simply waits. `Result`s
//! report only the caller's mistakes ([`UsageError`]), such as an answer that
//! does not fit the pending request; those change nothing. A peer's bad input
//! becomes an `-ERR` reply or a [`CloseReason`].
//!
//! One command is handled at a time. While a request is with the handler,
//! further pipelined input waits in a bounded buffer and the session stops
//! asking for reads when it is full. Bodies are pulled chunk by chunk only
//! while the output is below a high-water mark, so a huge message costs a
//! small, bounded amount of memory.
//!
//! # Example
//!
//! A whole session over an in-memory maildrop, with the peer's bytes taken
//! from a script in deliberately odd-sized pieces:
//!
//! ```
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use std::{sync::Arc, time::Instant};
//! use bytes::Bytes;
//! use pop3_proto::{
//!     CloseReason, Config, Credential, Event, Greeting, Maildrop, MessageInfo, Output, Refusal,
//!     Request, Session, Uid, Wait,
//! };
//!
//! // The APOP timestamp must differ for every connection: a counter (or a
//! // random number) per connection, never a constant.
//! static CONNECTIONS: AtomicU64 = AtomicU64::new(1);
//!
//! let messages: [&[u8]; 2] = [
//!     b"Subject: one\r\n\r\n.first line starts with a dot\r\n",
//!     b"Subject: two\r\n\r\nbye\r\n",
//! ];
//! let config = Arc::new(Config::builder().hostname("mail.example").build()?);
//! let greeting = Greeting { nonce: CONNECTIONS.fetch_add(1, Ordering::Relaxed), unix_time: 0 };
//! let mut session = Session::new(config, greeting, Instant::now());
//!
//! let mut peer: &[u8] = b"USER alice\r\nPASS open sesame\r\nSTAT\r\nRETR 1\r\nDELE 2\r\nQUIT\r\n";
//! let mut sent = Vec::new();
//! let mut body: Option<&[u8]> = None;
//! let mut deleted = Vec::new();
//! loop {
//!     let now = Instant::now();
//!     match session.poll_output(now) {
//!         Output::Transmit(transmit) => {
//!             // A real driver writes the segments with one vectored write.
//!             for segment in transmit.segments() {
//!                 sent.extend_from_slice(segment);
//!             }
//!             session.handle_written(now, transmit)?;
//!         }
//!         Output::Event(event) => match event {
//!             Event::Request(Request::Authenticate { user, credential }) => match credential {
//!                 Credential::Password(p) if user == "alice" && p.expose() == b"open sesame" => {
//!                     session.accept_login(now)?
//!                 }
//!                 _ => session.refuse(now, Refusal::auth("invalid user name or password"))?,
//!             },
//!             Event::Request(Request::Lock { .. }) => {
//!                 let listing = messages.iter().enumerate().map(|(i, m)| MessageInfo {
//!                     size: m.len() as u64,
//!                     uid: Uid::new(format!("uid-{i}")).unwrap(),
//!                 });
//!                 session.grant_maildrop(now, Maildrop::new(listing)?)?
//!             }
//!             Event::Request(Request::Retrieve { message, .. }) => {
//!                 body = Some(messages[message.number as usize - 1]);
//!                 session.begin_body(now)?
//!             }
//!             Event::NeedBody => match body.take() {
//!                 Some(bytes) => {
//!                     session.push_body(now, Bytes::from_static(bytes))?;
//!                 }
//!                 None => session.end_body(now)?,
//!             },
//!             Event::Request(Request::Commit { deleted: marked }) => {
//!                 deleted = marked; // remove them from the store, all or none
//!                 session.commit_done(now)?
//!             }
//!             Event::Unlock => { /* release the maildrop lock */ }
//!             Event::StartTls => unreachable!("STLS is not offered"),
//!             Event::Request(Request::ScramCredentials { .. }) => {
//!                 unreachable!("SCRAM-SHA-256 is not offered")
//!             }
//!             Event::Closed(reason) => {
//!                 assert_eq!(reason, CloseReason::Quit);
//!                 break;
//!             }
//!         },
//!         // Read from the peer (here: the next 5 bytes of the script).
//!         Output::Wait(Wait { read: true, .. }) if !peer.is_empty() => {
//!             let n = peer.len().min(5);
//!             session.handle_input(now, &peer[..n])?;
//!             peer = &peer[n..];
//!         }
//!         Output::Wait(Wait { read: true, .. }) => session.handle_eof(now),
//!         // Not reading: sleep until the deadline (a real driver also
//!         // watches the handler and the TLS handshake meanwhile).
//!         Output::Wait(Wait { deadline: Some(at), .. }) => session.handle_timeout(at),
//!         Output::Wait(_) => unreachable!("every request is answered at once"),
//!     }
//! }
//! let sent = String::from_utf8(sent)?;
//! assert!(sent.starts_with("+OK POP3 server ready\r\n+OK send PASS\r\n"));
//! assert!(sent.contains("+OK 2 68\r\n"));
//! assert!(sent.contains("\r\n\r\n..first line starts with a dot\r\n.\r\n"));
//! assert!(sent.ends_with("+OK mail.example POP3 server signing off (1 messages left)\r\n"));
//! assert_eq!(deleted.len(), 1);
//! assert_eq!(deleted[0].uid.as_str(), "uid-1");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

mod apop;
mod body;
mod capa;
mod command;
mod config;
mod error;
mod event;
mod lang;
mod line;
mod maildrop;
pub mod memory;
mod note;
mod output;
mod reply;
mod sasl;
mod scram;
mod secret;
mod session;

#[cfg(feature = "testing")]
pub mod testing;

pub use apop::{digest as apop_digest, ApopCredential, ApopTimestamp, Greeting};
pub use body::{transmitted_size, BodyProgress, SizeCounter};
pub use config::{
    Config, ConfigBuilder, Expire, PlaintextAuth, DEFAULT_MAX_SASL_LINE, MAX_AUTH_FAILURE_DELAY,
    MAX_HOSTNAME, MAX_IDLE_TIMEOUT, MIN_IDLE_TIMEOUT, RFC_MAX_COMMAND_LINE,
};
pub use error::{ConfigError, UsageError};
pub use event::{CloseReason, Credential, Event, Request};
pub use lang::{Language, Text, MAX_TEXT};
pub use maildrop::{Maildrop, MaildropError, MessageInfo, MessageRef, Uid};
pub use note::{LoginAttempt, LoginMethod, LoginOutcome, Note, MAX_NOTES};
pub use output::{Output, Transmit, Wait};
pub use reply::{Refusal, ResponseCode};
pub use sasl::Mechanism;
pub use scram::{ScramCredentials, ScramParseError, MIN_SCRAM_ITERATIONS};
pub use secret::Secret;
pub use session::{Channel, LoginLimit, Phase, Session, SessionStats, REPLY_HIGH_WATER};
