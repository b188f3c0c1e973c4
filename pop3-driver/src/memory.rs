//! An in-memory mail store: users, passwords and messages held in memory,
//! shared by every connection. For examples, tests, and as a test POP3
//! server for client developers.
//!
//! Faults can be injected at each handler call ([`MemoryStore::inject`]):
//! refusals, internal errors, panics and calls that never return, so a
//! client (or a server test) can see how every failure looks on the wire.
//! The store counts locks, unlocks, `session_error` calls and body octets
//! handed out, and hands bodies out in chunks of a configurable size.
//!
//! ```
//! use pop3_driver::memory::{Fault, FaultPoint, MemoryStore};
//!
//! let store = MemoryStore::new();
//! store.add_user("alice", "wonderland");
//! store.deliver("alice", "Subject: hi\r\n\r\nHello\r\n");
//! store.inject(FaultPoint::Commit, Fault::Internal);
//! let handler = store.handler(); // one per connection
//! # drop(handler);
//! assert_eq!(store.locks(), 0);
//! ```

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use pop3_proto::{transmitted_size, Credential, Maildrop, MessageInfo, MessageRef, Refusal, Uid};

use crate::handler::{
    AsyncBodySource, AsyncHandler, BodySource, Handler, HandlerError, HandlerResult, DEFAULT_CHUNK,
};

/// Where an injected [`Fault`] strikes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultPoint {
    /// The `authenticate` call.
    Authenticate,
    /// The `lock` call (before the lock is taken).
    Lock,
    /// The `open` call.
    Open,
    /// The request for a body's second chunk (for a one-chunk body, the
    /// request for its end): the message is cut after its first chunk.
    MidBody,
    /// The `commit` call (before anything is removed).
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
    /// Never returns: an async call stays pending (counted in
    /// [`MemoryStore::hanging`]) until it is dropped. A blocking call
    /// cannot be abandoned, so there it panics instead.
    Hang,
}

#[derive(Debug, Default)]
struct Mailbox {
    password: String,
    messages: Vec<(Uid, Bytes)>,
    locked: bool,
}

#[derive(Debug, Default)]
struct Counters {
    locks: usize,
    unlocks: usize,
    session_errors: usize,
    body_bytes_pulled: usize,
    hanging: usize,
}

#[derive(Debug)]
struct State {
    boxes: HashMap<String, Mailbox>,
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
            next_uid: 0,
            faults: Vec::new(),
            chunk: DEFAULT_CHUNK,
            counters: Counters::default(),
        }
    }
}

/// Users and their messages, in memory, with injectable faults and
/// counters. Clones share the same store.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore(Arc<Mutex<State>>);

impl MemoryStore {
    /// An empty store handing out bodies in chunks of [`DEFAULT_CHUNK`] octets.
    pub fn new() -> Self {
        Self::default()
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

    /// Appends a message to a user's maildrop and returns its unique id.
    ///
    /// # Panics
    /// If the user does not exist.
    pub fn deliver(&self, user: &str, message: impl Into<Bytes>) -> Uid {
        let mut state = self.state();
        state.next_uid += 1;
        let uid = Uid::new(format!("mem-{}", state.next_uid)).expect("valid uid");
        state
            .boxes
            .get_mut(user)
            .expect("deliver to an existing user")
            .messages
            .push((uid.clone(), message.into()));
        uid
    }

    /// The messages now in a user's maildrop.
    pub fn messages(&self, user: &str) -> Vec<Bytes> {
        self.state()
            .boxes
            .get(user)
            .map(|b| b.messages.iter().map(|(_, m)| m.clone()).collect())
            .unwrap_or_default()
    }

    /// True while a session holds the user's maildrop.
    pub fn is_locked(&self, user: &str) -> bool {
        self.state().boxes.get(user).is_some_and(|b| b.locked)
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

    /// Successful `lock` calls so far.
    pub fn locks(&self) -> usize {
        self.state().counters.locks
    }

    /// `unlock` calls so far.
    pub fn unlocks(&self) -> usize {
        self.state().counters.unlocks
    }

    /// `session_error` calls so far.
    pub fn session_errors(&self) -> usize {
        self.state().counters.session_errors
    }

    /// Body octets handed to sessions so far.
    pub fn body_bytes_pulled(&self) -> usize {
        self.state().counters.body_bytes_pulled
    }

    /// Async handler calls now pending in a [`Fault::Hang`].
    pub fn hanging(&self) -> usize {
        self.state().counters.hanging
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panicking handler elsewhere must not take the store down.
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

    /// Applies a fault of a blocking call (the store is not locked here, so
    /// a panic poisons nothing).
    fn strike(point: FaultPoint, fault: Option<Fault>) -> HandlerResult<()> {
        match fault {
            None => Ok(()),
            Some(Fault::Refuse(r)) => Err(r.into()),
            Some(Fault::Internal) => Err(HandlerError::internal(format!(
                "injected internal error at {point:?}"
            ))),
            Some(Fault::Panic) => panic!("injected panic at {point:?}"),
            Some(Fault::Hang) => panic!("injected Fault::Hang at {point:?} in a blocking call"),
        }
    }

    fn fault(&self, point: FaultPoint) -> HandlerResult<()> {
        Self::strike(point, self.take_fault(point))
    }

    async fn fault_async(&self, point: FaultPoint) -> HandlerResult<()> {
        match self.take_fault(point) {
            Some(Fault::Hang) => self.hang().await,
            fault => Self::strike(point, fault),
        }
    }

    /// Stays pending, counted in `hanging` until dropped.
    async fn hang<T>(&self) -> T {
        struct Hanging(MemoryStore);
        impl Drop for Hanging {
            fn drop(&mut self) {
                self.0.state().counters.hanging -= 1;
            }
        }
        self.state().counters.hanging += 1;
        let _guard = Hanging(self.clone());
        std::future::pending().await
    }
}

/// One connection's view of a [`MemoryStore`]; implements both [`Handler`]
/// and [`AsyncHandler`], obeying the store's injected faults.
#[derive(Debug)]
pub struct MemoryHandler {
    store: MemoryStore,
    locked: Option<String>,
}

impl MemoryHandler {
    fn check(&self, user: &str, credential: &Credential) -> HandlerResult<()> {
        let state = self.store.state();
        let ok = state.boxes.get(user).is_some_and(|b| match credential {
            Credential::Password(p) => p.expose() == b.password.as_bytes(),
            Credential::Apop(apop) => apop.verify(b.password.as_bytes()),
        });
        if ok {
            Ok(())
        } else {
            Err(Refusal::auth("invalid user name or password").into())
        }
    }

    fn take_lock(&mut self, user: &str) -> HandlerResult<Maildrop> {
        let mut state = self.store.state();
        let mailbox = state
            .boxes
            .get_mut(user)
            .ok_or_else(|| HandlerError::internal("authenticated user has no mailbox"))?;
        if mailbox.locked {
            return Err(Refusal::in_use("maildrop is in use by another session").into());
        }
        let listing = mailbox.messages.iter().map(|(uid, m)| MessageInfo {
            size: transmitted_size(m),
            uid: uid.clone(),
        });
        let drop = Maildrop::new(listing).map_err(HandlerError::internal)?;
        mailbox.locked = true;
        state.counters.locks += 1;
        self.locked = Some(user.to_owned());
        Ok(drop)
    }

    fn body(&self, message: &MessageRef) -> HandlerResult<MemoryBody> {
        let state = self.store.state();
        let whole = state
            .boxes
            .get(self.locked.as_deref().unwrap_or_default())
            .and_then(|b| b.messages.iter().find(|(uid, _)| *uid == message.uid))
            .map(|(_, m)| m.clone())
            .ok_or_else(|| HandlerError::from(Refusal::sys_perm("message vanished")))?;
        Ok(MemoryBody {
            rest: whole,
            chunk: state.chunk,
            chunks_sent: 0,
            store: self.store.clone(),
        })
    }

    fn remove(&self, deleted: &[MessageRef]) -> HandlerResult<()> {
        let mut state = self.store.state();
        let user = self.locked.as_deref().unwrap_or_default();
        let mailbox = state
            .boxes
            .get_mut(user)
            .ok_or_else(|| HandlerError::internal("commit without a lock"))?;
        mailbox
            .messages
            .retain(|(uid, _)| !deleted.iter().any(|d| d.uid == *uid));
        Ok(())
    }

    fn release(&mut self) {
        let mut state = self.store.state();
        state.counters.unlocks += 1;
        if let Some(user) = self.locked.take() {
            if let Some(b) = state.boxes.get_mut(&user) {
                b.locked = false;
            }
        }
    }

    fn count_session_error(&self) {
        self.store.state().counters.session_errors += 1;
    }
}

impl Handler for MemoryHandler {
    type Body = MemoryBody;

    fn authenticate(&mut self, user: &str, credential: &Credential) -> HandlerResult<()> {
        self.store.fault(FaultPoint::Authenticate)?;
        self.check(user, credential)
    }

    fn lock(&mut self, user: &str) -> HandlerResult<Maildrop> {
        self.store.fault(FaultPoint::Lock)?;
        self.take_lock(user)
    }

    fn open(&mut self, message: &MessageRef, _top: Option<u64>) -> HandlerResult<MemoryBody> {
        self.store.fault(FaultPoint::Open)?;
        self.body(message)
    }

    fn commit(&mut self, deleted: &[MessageRef]) -> HandlerResult<()> {
        self.store.fault(FaultPoint::Commit)?;
        self.remove(deleted)
    }

    fn unlock(&mut self) {
        self.release();
    }

    fn session_error(&mut self, _error: &HandlerError) {
        self.count_session_error();
    }
}

impl AsyncHandler for MemoryHandler {
    type Body = MemoryBody;

    async fn authenticate(&mut self, user: &str, credential: &Credential) -> HandlerResult<()> {
        self.store.fault_async(FaultPoint::Authenticate).await?;
        self.check(user, credential)
    }

    async fn lock(&mut self, user: &str) -> HandlerResult<Maildrop> {
        self.store.fault_async(FaultPoint::Lock).await?;
        self.take_lock(user)
    }

    async fn open(&mut self, message: &MessageRef, _top: Option<u64>) -> HandlerResult<MemoryBody> {
        self.store.fault_async(FaultPoint::Open).await?;
        self.body(message)
    }

    async fn commit(&mut self, deleted: &[MessageRef]) -> HandlerResult<()> {
        self.store.fault_async(FaultPoint::Commit).await?;
        self.remove(deleted)
    }

    async fn unlock(&mut self) {
        self.release();
    }

    fn session_error(&mut self, _error: &HandlerError) {
        self.count_session_error();
    }
}

/// A message body from a [`MemoryStore`], handed out in the store's chunk
/// size (blocking and async), counting the octets handed out and obeying
/// a [`FaultPoint::MidBody`] fault.
#[derive(Debug)]
pub struct MemoryBody {
    rest: Bytes,
    chunk: usize,
    chunks_sent: usize,
    store: MemoryStore,
}

impl MemoryBody {
    fn mid_body_fault(&self) -> Option<Fault> {
        if self.chunks_sent == 1 {
            self.store.take_fault(FaultPoint::MidBody)
        } else {
            None
        }
    }

    fn strike(fault: Fault) -> io::Result<Option<Bytes>> {
        match fault {
            Fault::Panic => panic!("injected panic at {:?}", FaultPoint::MidBody),
            Fault::Hang => panic!("injected Fault::Hang at MidBody in a blocking body"),
            Fault::Refuse(_) | Fault::Internal => {
                Err(io::Error::other("injected failure in the middle of a body"))
            }
        }
    }

    fn next(&mut self) -> Option<Bytes> {
        self.chunks_sent += 1;
        if self.rest.is_empty() {
            return None;
        }
        let chunk = self.rest.split_to(self.chunk.min(self.rest.len()));
        self.store.state().counters.body_bytes_pulled += chunk.len();
        Some(chunk)
    }
}

impl BodySource for MemoryBody {
    fn next_chunk(&mut self) -> io::Result<Option<Bytes>> {
        match self.mid_body_fault() {
            Some(fault) => Self::strike(fault),
            None => Ok(self.next()),
        }
    }
}

impl AsyncBodySource for MemoryBody {
    async fn next_chunk(&mut self) -> io::Result<Option<Bytes>> {
        match self.mid_body_fault() {
            Some(Fault::Hang) => self.store.hang().await,
            Some(fault) => Self::strike(fault),
            None => Ok(self.next()),
        }
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

    fn message(store: &MemoryStore) -> MessageRef {
        let mut h = store.handler();
        let drop = Handler::lock(&mut h, "u").unwrap();
        let info = &drop.messages()[0];
        let m = MessageRef {
            number: 1,
            uid: info.uid.clone(),
            size: info.size,
        };
        Handler::unlock(&mut h);
        m
    }

    #[test]
    fn faults_strike_once_in_order() {
        let store = store();
        store.inject(FaultPoint::Lock, Fault::Internal);
        store.inject(FaultPoint::Lock, Fault::Refuse(Refusal::in_use("x")));
        let mut h = store.handler();
        assert!(matches!(
            Handler::lock(&mut h, "u"),
            Err(HandlerError::Internal(_))
        ));
        assert!(matches!(
            Handler::lock(&mut h, "u"),
            Err(HandlerError::Reportable(_))
        ));
        assert!(Handler::lock(&mut h, "u").is_ok());
        Handler::unlock(&mut h);
        assert_eq!((store.locks(), store.unlocks()), (1, 1));
        assert!(!store.is_locked("u"));
    }

    #[test]
    fn bodies_come_in_chunks_and_fail_mid_body() {
        let store = store();
        let m = message(&store);
        store.set_chunk_size(4);
        let mut h = store.handler();
        Handler::lock(&mut h, "u").unwrap();
        let mut body = Handler::open(&mut h, &m, None).unwrap();
        let mut chunks = Vec::new();
        while let Some(c) = BodySource::next_chunk(&mut body).unwrap() {
            chunks.push(c);
        }
        assert_eq!(chunks, ["0123", "4567", "89"]);
        assert_eq!(store.body_bytes_pulled(), 10);

        store.inject(FaultPoint::MidBody, Fault::Internal);
        let mut body = Handler::open(&mut h, &m, None).unwrap();
        assert!(BodySource::next_chunk(&mut body).unwrap().is_some());
        assert!(BodySource::next_chunk(&mut body).is_err());
        assert_eq!(store.body_bytes_pulled(), 14);
    }

    #[test]
    fn hang_is_pending_and_counted_until_dropped() {
        use std::future::Future;
        use std::task::{Context, Poll, Waker};
        let store = store();
        store.inject(FaultPoint::Authenticate, Fault::Hang);
        let mut h = store.handler();
        let credential = Credential::Password(pop3_proto::Secret::new(b"p".to_vec()));
        {
            let call = AsyncHandler::authenticate(&mut h, "u", &credential);
            let mut call = std::pin::pin!(call);
            let mut cx = Context::from_waker(Waker::noop());
            assert!(matches!(call.as_mut().poll(&mut cx), Poll::Pending));
            assert_eq!(store.hanging(), 1);
        }
        assert_eq!(store.hanging(), 0);
        let again =
            futures_lite::future::block_on(AsyncHandler::authenticate(&mut h, "u", &credential));
        assert!(again.is_ok());
    }
}
