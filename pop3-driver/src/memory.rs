//! An in-memory mail store: users, passwords and messages held in memory,
//! shared by every connection. For examples, tests, and as a test POP3
//! server for client developers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use pop3_proto::{transmitted_size, Credential, Maildrop, MessageInfo, MessageRef, Refusal, Uid};

use crate::handler::{AsyncHandler, Handler, HandlerError, HandlerResult};

#[derive(Debug, Default)]
struct Mailbox {
    password: String,
    messages: Vec<(Uid, Bytes)>,
    locked: bool,
}

#[derive(Debug, Default)]
struct State {
    boxes: HashMap<String, Mailbox>,
    next_uid: u64,
}

/// Users and their messages, in memory. Clones share the same store.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore(Arc<Mutex<State>>);

impl MemoryStore {
    /// An empty store.
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

    fn state(&self) -> MutexGuard<'_, State> {
        // A panicking handler elsewhere must not take the store down.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One connection's view of a [`MemoryStore`]; implements both [`Handler`]
/// and [`AsyncHandler`].
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
        self.locked = Some(user.to_owned());
        Ok(drop)
    }

    fn body(&self, message: &MessageRef) -> HandlerResult<Option<Bytes>> {
        let state = self.store.state();
        state
            .boxes
            .get(self.locked.as_deref().unwrap_or_default())
            .and_then(|b| b.messages.iter().find(|(uid, _)| *uid == message.uid))
            .map(|(_, m)| Some(m.clone()))
            .ok_or_else(|| Refusal::sys_perm("message vanished").into())
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
        if let Some(user) = self.locked.take() {
            if let Some(b) = self.store.state().boxes.get_mut(&user) {
                b.locked = false;
            }
        }
    }
}

impl Handler for MemoryHandler {
    type Body = Option<Bytes>;

    fn authenticate(&mut self, user: &str, credential: &Credential) -> HandlerResult<()> {
        self.check(user, credential)
    }

    fn lock(&mut self, user: &str) -> HandlerResult<Maildrop> {
        self.take_lock(user)
    }

    fn open(&mut self, message: &MessageRef, _top: Option<u64>) -> HandlerResult<Self::Body> {
        self.body(message)
    }

    fn commit(&mut self, deleted: &[MessageRef]) -> HandlerResult<()> {
        self.remove(deleted)
    }

    fn unlock(&mut self) {
        self.release();
    }
}

impl AsyncHandler for MemoryHandler {
    type Body = Option<Bytes>;

    async fn authenticate(&mut self, user: &str, credential: &Credential) -> HandlerResult<()> {
        self.check(user, credential)
    }

    async fn lock(&mut self, user: &str) -> HandlerResult<Maildrop> {
        self.take_lock(user)
    }

    async fn open(&mut self, message: &MessageRef, _top: Option<u64>) -> HandlerResult<Self::Body> {
        self.body(message)
    }

    async fn commit(&mut self, deleted: &[MessageRef]) -> HandlerResult<()> {
        self.remove(deleted)
    }

    async fn unlock(&mut self) {
        self.release();
    }
}
