//! An in-memory mail store: users, passwords and messages held in memory,
//! shared by every connection, with injectable faults and counters.
//!
//! It is the one store of this project's tests, examples and conformance
//! suite, and a test POP3 server for client developers. It is sans-IO like
//! the rest of this crate: each call answers at once, and a [`Fault::Hang`]
//! comes back as [`StoreError::Hang`] for the caller to turn into a call
//! that never returns. `pop3-driver` implements its handler traits for
//! [`MemoryHandler`] and [`MemoryBody`].
//!
//! Faults are injected per call site ([`MemoryStore::inject`]): refusals,
//! internal errors, panics and hangs, so every failure can be seen on the
//! wire. The store counts locks, unlocks, session errors, body octets handed
//! out and commits, and hands bodies out in chunks of a set size.
//!
//! ```
//! use pop3_proto::memory::{Fault, FaultPoint, MemoryStore};
//!
//! let store = MemoryStore::new();
//! store.add_user("alice", "wonderland");
//! store.deliver("alice", "Subject: hi\r\n\r\nHello\r\n");
//! store.inject(FaultPoint::Commit, Fault::Internal);
//! let mut handler = store.handler(); // one per connection
//! let drop = handler.try_lock("alice").unwrap();
//! assert_eq!(drop.messages().len(), 1);
//! handler.release();
//! assert_eq!((store.locks(), store.unlocks()), (1, 1));
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

use crate::body::transmitted_size;
use crate::event::Credential;
use crate::maildrop::{Maildrop, MessageInfo, MessageRef, Uid};
use crate::reply::Refusal;
use crate::scram::{ScramCredentials, MIN_SCRAM_ITERATIONS};

/// Octets per body chunk unless [`MemoryStore::set_chunk_size`] says otherwise.
pub const DEFAULT_CHUNK: usize = 32 * 1024;

/// Where an injected [`Fault`] strikes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultPoint {
    /// The credential check.
    Authenticate,
    /// The lock (before the lock is taken).
    Lock,
    /// The opening of a message.
    Open,
    /// The request for a body's second chunk (for a one-chunk body, the
    /// request for its end): the message is cut after its first chunk.
    MidBody,
    /// The commit (before anything is removed).
    Commit,
}

/// What an injected fault does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answers with this refusal (the client gets `-ERR`, the session goes
    /// on). At [`FaultPoint::MidBody`] a body cannot refuse: it fails as
    /// [`Fault::Internal`] does.
    Refuse(Refusal),
    /// Fails with an internal error (the session ends).
    Internal,
    /// Panics.
    Panic,
    /// Never answers: the call gives [`StoreError::Hang`], and the caller
    /// keeps the request pending (counted in [`MemoryStore::hanging`]
    /// while a [`Hanging`] guard lives).
    Hang,
}

/// Why a store call did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// A reportable refusal: the client gets `-ERR` with it.
    Refused(Refusal),
    /// An internal error: the session ends.
    Internal(String),
    /// An injected [`Fault::Hang`]: the call must never return.
    Hang,
}

/// One stored message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Its unique id.
    pub uid: String,
    /// Its bytes as stored (line ends need not be CRLF).
    pub body: Vec<u8>,
}

#[derive(Debug, Default)]
struct Mailbox {
    password: String,
    messages: Vec<(Uid, Bytes)>,
    locked: bool,
    /// Holds mail with UTF-8 headers that needs RFC 6856 UTF-8 mode.
    utf8_only: bool,
}

#[derive(Debug, Default)]
struct Counters {
    locks: usize,
    unlocks: usize,
    session_errors: usize,
    body_bytes_pulled: usize,
    hanging: usize,
    commits: Vec<Vec<String>>,
}

#[derive(Debug)]
struct State {
    boxes: HashMap<String, Mailbox>,
    /// OAuth bearer tokens and the user each was issued for.
    tokens: HashMap<String, String>,
    /// Users whose password opens any maildrop (SASL authorization identity).
    masters: Vec<String>,
    next_uid: u64,
    /// Injected faults, in order; each strikes once.
    faults: Vec<(FaultPoint, Fault)>,
    chunk: usize,
    counters: Counters,
}

impl Default for State {
    fn default() -> Self {
        Self {
            boxes: HashMap::new(),
            tokens: HashMap::new(),
            masters: Vec::new(),
            next_uid: 0,
            faults: Vec::new(),
            chunk: DEFAULT_CHUNK,
            counters: Counters::default(),
        }
    }
}

/// Users and their messages, in memory. Clones share the same store.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore(Arc<Mutex<State>>);

impl MemoryStore {
    /// An empty store handing out bodies in chunks of [`DEFAULT_CHUNK`] octets.
    pub fn new() -> Self {
        Self::default()
    }

    /// RFC 1939's example user `mrose` (password and APOP secret `tanstaaf`)
    /// with two messages of 120 and 200 octets, uids `one` and `two`.
    pub fn rfc1939() -> Self {
        let store = Self::new();
        store.add_user_with(
            "mrose",
            "tanstaaf",
            [message_of_size("one", 120), message_of_size("two", 200)],
        );
        store
    }

    /// Adds a user (or changes the password of an existing one). The password
    /// is also the user's APOP secret.
    pub fn add_user(&self, user: &str, password: &str) {
        self.state()
            .boxes
            .entry(user.to_owned())
            .or_default()
            .password = password.to_owned();
    }

    /// Marks `user`'s maildrop as one that needs UTF-8 mode (see
    /// [`Maildrop::with_utf8_only`]).
    pub fn set_utf8_only(&self, user: &str) {
        self.state()
            .boxes
            .entry(user.to_owned())
            .or_default()
            .utf8_only = true;
    }

    /// Issues an OAuth bearer token for `user` (SASL `XOAUTH2`, `OAUTHBEARER`).
    pub fn add_token(&self, user: &str, token: &str) {
        self.state()
            .tokens
            .insert(token.to_owned(), user.to_owned());
    }

    /// Lets `user`'s password open every maildrop (a master user, named as
    /// the authentication identity of SASL `PLAIN`).
    pub fn add_master(&self, user: &str) {
        self.state().masters.push(user.to_owned());
    }

    /// Adds a user with these messages.
    ///
    /// # Panics
    /// If a message's uid is not a valid unique-id.
    pub fn add_user_with(
        &self,
        user: &str,
        password: &str,
        messages: impl IntoIterator<Item = StoredMessage>,
    ) {
        self.add_user(user, password);
        for message in messages {
            self.deliver_as(user, &message.uid, message.body);
        }
    }

    /// Appends a message to a user's maildrop and returns its unique id.
    ///
    /// # Panics
    /// If the user does not exist.
    pub fn deliver(&self, user: &str, message: impl Into<Bytes>) -> Uid {
        let uid = {
            let mut state = self.state();
            state.next_uid += 1;
            format!("mem-{}", state.next_uid)
        };
        self.deliver_as(user, &uid, message)
    }

    /// Appends a message with this unique id to a user's maildrop.
    ///
    /// # Panics
    /// If the user does not exist or `uid` is not a valid unique-id.
    pub fn deliver_as(&self, user: &str, uid: &str, message: impl Into<Bytes>) -> Uid {
        let uid = Uid::new(uid).expect("a valid unique-id");
        self.state()
            .boxes
            .get_mut(user)
            .expect("deliver to an existing user")
            .messages
            .push((uid.clone(), message.into()));
        uid
    }

    /// The messages now in a user's maildrop.
    pub fn messages(&self, user: &str) -> Vec<StoredMessage> {
        self.state()
            .boxes
            .get(user)
            .map(|b| {
                b.messages
                    .iter()
                    .map(|(uid, m)| StoredMessage {
                        uid: uid.as_str().to_owned(),
                        body: m.to_vec(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// True while a session holds the user's maildrop.
    pub fn is_locked(&self, user: &str) -> bool {
        self.state().boxes.get(user).is_some_and(|b| b.locked)
    }

    /// Marks a user's maildrop as held by a session elsewhere: locks are
    /// refused with `[IN-USE]`.
    pub fn lock_elsewhere(&self, user: &str) {
        self.state()
            .boxes
            .entry(user.to_owned())
            .or_default()
            .locked = true;
    }

    /// A handler for one connection.
    pub fn handler(&self) -> MemoryHandler {
        MemoryHandler {
            store: self.clone(),
            locked: None,
        }
    }

    /// Makes the next call at `point` (of any connection) fail with `fault`.
    /// Faults injected at one point strike in the order they were injected,
    /// once each.
    pub fn inject(&self, point: FaultPoint, fault: Fault) {
        self.state().faults.push((point, fault));
    }

    /// Hands out bodies opened from now on in chunks of `octets` (at least 1).
    pub fn set_chunk_size(&self, octets: usize) {
        self.state().chunk = octets.max(1);
    }

    /// Successful locks so far.
    pub fn locks(&self) -> usize {
        self.state().counters.locks
    }

    /// Unlocks so far.
    pub fn unlocks(&self) -> usize {
        self.state().counters.unlocks
    }

    /// Session errors reported so far ([`MemoryHandler::count_session_error`]).
    pub fn session_errors(&self) -> usize {
        self.state().counters.session_errors
    }

    /// Body octets handed to sessions so far.
    pub fn body_bytes_pulled(&self) -> usize {
        self.state().counters.body_bytes_pulled
    }

    /// Calls now pending in a [`Fault::Hang`] (live [`Hanging`] guards).
    pub fn hanging(&self) -> usize {
        self.state().counters.hanging
    }

    /// The commits carried out, each with the uids it removed.
    pub fn commits(&self) -> Vec<Vec<String>> {
        self.state().counters.commits.clone()
    }

    /// Counts a hanging call until the guard is dropped.
    pub fn hanging_guard(&self) -> Hanging {
        self.state().counters.hanging += 1;
        Hanging(self.clone())
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panicking caller elsewhere must not take the store down.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes the first fault injected at `point`.
    fn take_fault(&self, point: FaultPoint) -> Option<Fault> {
        let mut state = self.state();
        let i = state.faults.iter().position(|(p, _)| *p == point)?;
        Some(state.faults.remove(i).1)
    }

    /// Applies the next fault at `point`, if any (with the store unlocked,
    /// so a panic poisons nothing).
    fn strike(&self, point: FaultPoint) -> Result<(), StoreError> {
        match self.take_fault(point) {
            None => Ok(()),
            Some(Fault::Refuse(r)) => Err(StoreError::Refused(r)),
            Some(Fault::Internal) => Err(StoreError::Internal(format!(
                "injected internal error at {point:?}"
            ))),
            Some(Fault::Panic) => panic!("injected panic at {point:?}"),
            Some(Fault::Hang) => Err(StoreError::Hang),
        }
    }
}

/// Counts one hanging call in [`MemoryStore::hanging`] while it lives.
#[derive(Debug)]
pub struct Hanging(MemoryStore);

impl Drop for Hanging {
    fn drop(&mut self) {
        self.0.state().counters.hanging -= 1;
    }
}

/// One connection's view of a [`MemoryStore`], obeying its injected faults.
#[derive(Debug)]
pub struct MemoryHandler {
    store: MemoryStore,
    locked: Option<String>,
}

impl MemoryHandler {
    /// The store this handler works on.
    pub fn store(&self) -> &MemoryStore {
        &self.store
    }

    /// Checks a credential (a password, or an APOP digest of the password).
    ///
    /// # Errors
    /// A refusal for a wrong credential or an unknown user, or an injected fault.
    pub fn try_authenticate(&self, user: &str, credential: &Credential) -> Result<(), StoreError> {
        self.store.strike(FaultPoint::Authenticate)?;
        let state = self.store.state();
        let password_of = |name: &str| state.boxes.get(name).map(|b| b.password.as_bytes());
        let ok = state.boxes.contains_key(user)
            && match credential {
                Credential::Password(p) => password_of(user) == Some(p.expose()),
                Credential::Apop(apop) => password_of(user).is_some_and(|p| apop.verify(p)),
                Credential::PasswordFor {
                    authenticator,
                    password,
                } => {
                    state.masters.contains(authenticator)
                        && password_of(authenticator) == Some(password.expose())
                }
                Credential::Bearer(token) => {
                    state.tokens.get(token.expose()).map(String::as_str) == Some(user)
                }
            };
        if ok {
            Ok(())
        } else {
            Err(StoreError::Refused(Refusal::auth(
                "invalid user name or password",
            )))
        }
    }

    /// A user's SCRAM-SHA-256 keys, derived from the stored password (salt
    /// `salt:<user>`, 4096 iterations), or stable decoy keys for a user who
    /// does not exist.
    ///
    /// # Errors
    /// An injected fault (at [`FaultPoint::Authenticate`]).
    pub fn try_scram_credentials(&self, user: &str) -> Result<ScramCredentials, StoreError> {
        self.store.strike(FaultPoint::Authenticate)?;
        let state = self.store.state();
        Ok(match state.boxes.get(user) {
            Some(b) => ScramCredentials::derive(
                b.password.as_bytes(),
                format!("salt:{user}").as_bytes(),
                MIN_SCRAM_ITERATIONS,
            ),
            None => ScramCredentials::decoy(b"memory store", user, MIN_SCRAM_ITERATIONS),
        })
    }

    /// Locks a user's maildrop and lists it.
    ///
    /// # Errors
    /// `[IN-USE]` if it is locked already, or an injected fault.
    pub fn try_lock(&mut self, user: &str) -> Result<Maildrop, StoreError> {
        self.store.strike(FaultPoint::Lock)?;
        let mut state = self.store.state();
        let mailbox = state
            .boxes
            .get_mut(user)
            .ok_or_else(|| StoreError::Internal("authenticated user has no mailbox".into()))?;
        if mailbox.locked {
            return Err(StoreError::Refused(Refusal::in_use(
                "maildrop is in use by another session",
            )));
        }
        let listing = mailbox.messages.iter().map(|(uid, m)| MessageInfo {
            size: transmitted_size(m),
            uid: uid.clone(),
        });
        let mut drop = Maildrop::new(listing).map_err(|e| StoreError::Internal(e.to_string()))?;
        if mailbox.utf8_only {
            drop = drop.with_utf8_only();
        }
        mailbox.locked = true;
        state.counters.locks += 1;
        self.locked = Some(user.to_owned());
        Ok(drop)
    }

    /// Opens a message of the locked maildrop.
    ///
    /// # Errors
    /// `[SYS/PERM]` if it is gone, or an injected fault.
    pub fn try_open(&self, message: &MessageRef) -> Result<MemoryBody, StoreError> {
        self.store.strike(FaultPoint::Open)?;
        let state = self.store.state();
        let whole = state
            .boxes
            .get(self.locked.as_deref().unwrap_or_default())
            .and_then(|b| b.messages.iter().find(|(uid, _)| *uid == message.uid))
            .map(|(_, m)| m.clone())
            .ok_or_else(|| StoreError::Refused(Refusal::sys_perm("message vanished")))?;
        Ok(MemoryBody {
            rest: whole,
            chunk: state.chunk,
            chunks_sent: 0,
            store: self.store.clone(),
        })
    }

    /// Removes these messages from the locked maildrop, all of them.
    ///
    /// # Errors
    /// An injected fault (then nothing is removed).
    pub fn try_commit(&self, deleted: &[MessageRef]) -> Result<(), StoreError> {
        self.store.strike(FaultPoint::Commit)?;
        let mut state = self.store.state();
        let user = self.locked.as_deref().unwrap_or_default();
        let mailbox = state
            .boxes
            .get_mut(user)
            .ok_or_else(|| StoreError::Internal("commit without a lock".into()))?;
        mailbox
            .messages
            .retain(|(uid, _)| !deleted.iter().any(|d| d.uid == *uid));
        let removed = deleted.iter().map(|d| d.uid.as_str().to_owned()).collect();
        state.counters.commits.push(removed);
        Ok(())
    }

    /// Releases the lock (counted even without one, so a test sees a
    /// stray unlock).
    pub fn release(&mut self) {
        let mut state = self.store.state();
        state.counters.unlocks += 1;
        if let Some(user) = self.locked.take() {
            if let Some(b) = state.boxes.get_mut(&user) {
                b.locked = false;
            }
        }
    }

    /// Counts an internal error reported for this connection.
    pub fn count_session_error(&self) {
        self.store.state().counters.session_errors += 1;
    }
}

/// A message body from a [`MemoryStore`], handed out in the store's chunk
/// size, counting the octets handed out and obeying a
/// [`FaultPoint::MidBody`] fault.
#[derive(Debug)]
pub struct MemoryBody {
    rest: Bytes,
    chunk: usize,
    chunks_sent: usize,
    store: MemoryStore,
}

impl MemoryBody {
    /// The store this body comes from.
    pub fn store(&self) -> &MemoryStore {
        &self.store
    }

    /// The next chunk, or `None` at the end.
    ///
    /// # Errors
    /// An injected [`FaultPoint::MidBody`] fault on the second request
    /// ([`StoreError::Internal`] for a refusal or an internal error).
    pub fn try_next_chunk(&mut self) -> Result<Option<Bytes>, StoreError> {
        if self.chunks_sent == 1 {
            match self.store.strike(FaultPoint::MidBody) {
                Err(StoreError::Refused(_)) => {
                    return Err(StoreError::Internal(
                        "injected failure in the middle of a body".into(),
                    ))
                }
                other => other?,
            }
        }
        self.chunks_sent += 1;
        if self.rest.is_empty() {
            return Ok(None);
        }
        let chunk = self.rest.split_to(self.chunk.min(self.rest.len()));
        self.store.state().counters.body_bytes_pulled += chunk.len();
        Ok(Some(chunk))
    }
}

/// Messages with the awkward parts, uids `uid-0`, `uid-1`, …: dot lines,
/// bare LFs, lone CRs, no final line end, an empty message, one without
/// headers, one that is a lone dot line, and one of 3000 octets (many chunks).
pub fn awkward_messages() -> Vec<StoredMessage> {
    let bodies: [&[u8]; 6] = [
        b"Subject: dots\r\n\r\n.leading dot\r\n..two dots\r\n.\r\nend\r\n",
        b"Subject: bare\n\nbare lf body\n.\n\nlast line without end",
        b"Subject: cr\r\nX-A: b\r\n\r\nline\r\r\n\r\n.\r\nx\ry\r",
        b"",
        b"no headers at all\n.just text\n",
        b".\r\n",
    ];
    let mut messages: Vec<StoredMessage> = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| StoredMessage {
            uid: format!("uid-{i}"),
            body: b.to_vec(),
        })
        .collect();
    messages.push(message_of_size("big", 3000));
    messages
}

/// A plausible message of exactly `size` octets, CRLF line ends throughout.
///
/// # Panics
/// If `size` is too small for the header and a line end.
pub fn message_of_size(uid: &str, size: usize) -> StoredMessage {
    let mut body = format!("Subject: message {uid}\r\n\r\n").into_bytes();
    assert!(
        size >= body.len() && size - body.len() != 1,
        "size {size} too small"
    );
    let mut left = size - body.len();
    while left > 0 {
        let mut n = left.min(62);
        if left - n == 1 {
            n -= 1;
        }
        body.extend(std::iter::repeat_n(b'x', n - 2));
        body.extend_from_slice(b"\r\n");
        left -= n;
    }
    StoredMessage {
        uid: uid.into(),
        body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> MemoryStore {
        let store = MemoryStore::new();
        store.add_user("u", "p");
        store.deliver("u", "0123456789");
        store
    }

    fn first(store: &MemoryStore) -> MessageRef {
        let mut h = store.handler();
        let drop = h.try_lock("u").unwrap();
        let info = &drop.messages()[0];
        let m = MessageRef {
            number: 1,
            uid: info.uid.clone(),
            size: info.size,
        };
        h.release();
        m
    }

    #[test]
    fn faults_strike_once_in_order() {
        let store = store();
        store.inject(FaultPoint::Lock, Fault::Internal);
        store.inject(FaultPoint::Lock, Fault::Refuse(Refusal::in_use("x")));
        let mut h = store.handler();
        assert!(matches!(h.try_lock("u"), Err(StoreError::Internal(_))));
        assert!(matches!(h.try_lock("u"), Err(StoreError::Refused(_))));
        assert!(h.try_lock("u").is_ok());
        assert!(
            matches!(h.try_lock("u"), Err(StoreError::Refused(_))),
            "locked"
        );
        h.release();
        assert_eq!((store.locks(), store.unlocks()), (1, 1));
        assert!(!store.is_locked("u"));
    }

    #[test]
    fn bodies_come_in_chunks_and_fail_mid_body() {
        let store = store();
        let m = first(&store);
        store.set_chunk_size(4);
        let mut h = store.handler();
        h.try_lock("u").unwrap();
        let mut body = h.try_open(&m).unwrap();
        let mut chunks = Vec::new();
        while let Some(c) = body.try_next_chunk().unwrap() {
            chunks.push(c);
        }
        assert_eq!(chunks, ["0123", "4567", "89"]);
        assert_eq!(store.body_bytes_pulled(), 10);

        store.inject(FaultPoint::MidBody, Fault::Internal);
        let mut body = h.try_open(&m).unwrap();
        assert!(body.try_next_chunk().unwrap().is_some());
        assert!(body.try_next_chunk().is_err());
        assert_eq!(store.body_bytes_pulled(), 14);
    }

    #[test]
    fn commits_remove_and_are_recorded() {
        let store = store();
        let m = first(&store);
        let mut h = store.handler();
        h.try_lock("u").unwrap();
        store.inject(FaultPoint::Commit, Fault::Hang);
        assert_eq!(
            h.try_commit(std::slice::from_ref(&m)),
            Err(StoreError::Hang)
        );
        assert_eq!(
            store.messages("u").len(),
            1,
            "a hung commit removes nothing"
        );
        h.try_commit(&[m]).unwrap();
        assert!(store.messages("u").is_empty());
        assert_eq!(store.commits().len(), 1);
        let guard = store.hanging_guard();
        assert_eq!(store.hanging(), 1);
        drop(guard);
        assert_eq!(store.hanging(), 0);
    }
}
