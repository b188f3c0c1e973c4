//! An in-memory mail store with one maildrop per user and injectable faults.

use std::collections::HashMap;

use crate::maildrop::{Maildrop, MessageInfo, MessageRef, Uid};
use crate::reply::Refusal;

use super::invariants::normalize_body;

/// One stored message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Its unique id.
    pub uid: String,
    /// Its bytes as stored (line ends need not be CRLF).
    pub body: Vec<u8>,
}

/// Where a fault can be injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// The next credential check.
    Authenticate,
    /// The next lock.
    Lock,
    /// The next message open.
    Retrieve,
    /// The next body chunk.
    MidBody,
    /// The next commit.
    Commit,
}

/// What an injected fault does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultKind {
    /// A reportable refusal.
    Refuse(Refusal),
    /// An internal error.
    Fail,
}

/// Users, passwords and maildrops in memory. Tracks locks so tests can
/// check that every lock is released exactly once.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    users: HashMap<String, String>,
    drops: HashMap<String, Vec<StoredMessage>>,
    locked: Option<String>,
    faults: HashMap<Fault, FaultKind>,
    /// Body chunk size handed to the session.
    pub chunk_size: usize,
    /// Locks taken.
    pub locks: u32,
    /// Locks released.
    pub unlocks: u32,
    /// Commits carried out, with the uids removed by each.
    pub commits: Vec<Vec<String>>,
}

impl MemoryStore {
    /// An empty store handing out 4 KiB body chunks.
    pub fn new() -> Self {
        Self {
            chunk_size: 4096,
            ..Self::default()
        }
    }

    /// RFC 1939's example user `mrose` (password and APOP secret `tanstaaf`)
    /// with two messages of 120 and 200 octets.
    pub fn rfc1939() -> Self {
        let mut s = Self::new();
        let one = message_of_size("one", 120);
        let two = message_of_size("two", 200);
        s.add_user("mrose", "tanstaaf", vec![one, two]);
        s
    }

    /// Adds a user with a password (also the APOP secret) and messages.
    pub fn add_user(&mut self, user: &str, password: &str, messages: Vec<StoredMessage>) {
        self.users.insert(user.into(), password.into());
        self.drops.insert(user.into(), messages);
    }

    /// Makes the next call at `at` fail in the given way.
    pub fn inject(&mut self, at: Fault, kind: FaultKind) {
        self.faults.insert(at, kind);
    }

    /// The user's current messages.
    pub fn messages(&self, user: &str) -> &[StoredMessage] {
        self.drops.get(user).map_or(&[], Vec::as_slice)
    }

    /// Marks a user's maildrop as locked by another session.
    pub fn lock_elsewhere(&mut self, user: &str) {
        self.locked = Some(user.into());
    }

    /// True while a maildrop is locked.
    pub fn is_locked(&self) -> bool {
        self.locked.is_some()
    }

    pub(super) fn password(&self, user: &str) -> Option<&String> {
        self.users.get(user)
    }

    pub(super) fn take_fault(&mut self, at: Fault) -> Option<FaultKind> {
        self.faults.remove(&at)
    }

    pub(super) fn lock(&mut self, user: &str) -> Option<Maildrop> {
        if self.locked.is_some() {
            return None;
        }
        self.locked = Some(user.into());
        self.locks += 1;
        let listing = self.messages(user).iter().map(|m| MessageInfo {
            size: normalize_body(&m.body).len() as u64,
            uid: Uid::new(m.uid.clone()).expect("test uids are valid"),
        });
        Some(Maildrop::new(listing).expect("test maildrops are valid"))
    }

    pub(super) fn unlock(&mut self) {
        assert!(self.locked.take().is_some(), "unlock without a lock");
        self.unlocks += 1;
    }

    pub(super) fn body(&self, uid: &str) -> Vec<u8> {
        let user = self.locked.as_deref().expect("body read under a lock");
        self.messages(user)
            .iter()
            .find(|m| m.uid == uid)
            .map(|m| m.body.clone())
            .expect("message exists")
    }

    pub(super) fn remove(&mut self, deleted: &[MessageRef]) {
        let user = self.locked.clone().expect("commit under a lock");
        let drop = self.drops.entry(user).or_default();
        drop.retain(|m| !deleted.iter().any(|d| d.uid.as_str() == m.uid));
        self.commits
            .push(deleted.iter().map(|d| d.uid.as_str().to_owned()).collect());
    }
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
