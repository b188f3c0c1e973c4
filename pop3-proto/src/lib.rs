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
//! 1. Create a [`Session`] when a connection is accepted.
//! 2. Drain output: call [`Session::poll_transmit`] until it returns `None`,
//!    writing every buffer to the peer in order, each by the deadline
//!    [`Session::poll_timeout`] gives (a peer that stops reading is cut off).
//! 3. Take one [`Event`] from [`Session::poll_event`] and act on it: answer a
//!    [`Request`], push a body chunk on [`Event::NeedBody`], start TLS on
//!    [`Event::StartTls`], release the maildrop lock on [`Event::Unlock`], or
//!    close the connection on [`Event::Closed`]. Then go back to step 2.
//! 4. When there is no event, wait for the peer: if
//!    [`Session::wants_input`], read with [`Session::poll_timeout`] as the
//!    deadline and pass the bytes to [`Session::handle_input`]; at end of
//!    stream call [`Session::handle_eof`] (commands already received are
//!    still answered); when reading or writing fails call
//!    [`Session::handle_connection_lost`]; when the deadline passes call
//!    [`Session::handle_timeout`]. Then go back to step 2.
//!
//! Needing more input is not an error: the session simply has no output and
//! no event. `Result`s report only the caller's mistakes ([`UsageError`]),
//! such as an answer that does not fit the pending request; those change
//! nothing. A peer's bad input becomes an `-ERR` reply or a [`CloseReason`].
//!
//! One command is handled at a time. While a request is with the handler,
//! further pipelined input waits in a bounded buffer and
//! [`Session::wants_input`] turns false when it is full. Bodies are pulled
//! chunk by chunk only while the output is below a high-water mark, so a huge
//! message costs a small, bounded amount of memory.
//!
//! # Example
//!
//! A whole session over an in-memory maildrop, with the peer's bytes taken
//! from a script in deliberately odd-sized pieces:
//!
//! ```
//! use std::{sync::Arc, time::Instant};
//! use bytes::Bytes;
//! use pop3_proto::{
//!     CloseReason, Config, Credential, Event, Greeting, Maildrop, MessageInfo, Refusal,
//!     Request, Session, Uid,
//! };
//!
//! let messages: [&[u8]; 2] = [
//!     b"Subject: one\r\n\r\n.first line starts with a dot\r\n",
//!     b"Subject: two\r\n\r\nbye\r\n",
//! ];
//! let config = Arc::new(Config::builder().hostname("mail.example").build()?);
//! let mut session = Session::new(config, Greeting { nonce: 7, unix_time: 0 }, Instant::now());
//!
//! let mut peer: &[u8] = b"USER alice\r\nPASS open sesame\r\nSTAT\r\nRETR 1\r\nDELE 2\r\nQUIT\r\n";
//! let mut sent = Vec::new();
//! let mut body: Option<&[u8]> = None;
//! let mut deleted = Vec::new();
//! loop {
//!     // 2. Write out everything the session has to say.
//!     while let Some(bytes) = session.poll_transmit(Instant::now()) {
//!         sent.extend_from_slice(&bytes);
//!     }
//!     // 3. Handle one event, then drain output again.
//!     if let Some(event) = session.poll_event() {
//!         let now = Instant::now();
//!         match event {
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
//!             Event::Closed(reason) => {
//!                 assert_eq!(reason, CloseReason::Quit);
//!                 break;
//!             }
//!         }
//!         continue;
//!     }
//!     // 4. Wait for the peer (here: the next 5 bytes of the script).
//!     if session.wants_input() && !peer.is_empty() {
//!         let n = peer.len().min(5);
//!         session.handle_input(Instant::now(), &peer[..n])?;
//!         peer = &peer[n..];
//!     } else {
//!         session.handle_eof(Instant::now());
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
mod line;
mod maildrop;
mod output;
mod reply;
mod secret;
mod session;

#[cfg(feature = "testing")]
pub mod testing;

pub use apop::{digest as apop_digest, ApopCredential, ApopTimestamp, Greeting};
pub use body::{transmitted_size, BodyProgress, SizeCounter};
pub use config::{
    Config, ConfigBuilder, Expire, MAX_AUTH_FAILURE_DELAY, MAX_IDLE_TIMEOUT, MIN_IDLE_TIMEOUT,
    RFC_MAX_COMMAND_LINE,
};
pub use error::{ConfigError, UsageError};
pub use event::{CloseReason, Credential, Event, Request};
pub use maildrop::{Maildrop, MaildropError, MessageInfo, MessageRef, Uid};
pub use reply::{Refusal, ResponseCode};
pub use secret::Secret;
pub use output::{Output, Transmit, Wait};
pub use session::{Phase, Session, SessionStats};
