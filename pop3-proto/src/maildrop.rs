//! The maildrop as the handler describes it at login, and the session's deletion marks.

use std::collections::HashSet;
use std::fmt;

use crate::config::Expire;

/// A unique-id listing value (RFC 1939 §7, `UIDL`): 1 to 70 characters in 0x21..=0x7E.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Uid(String);

impl Uid {
    /// Checks and wraps a unique id.
    pub fn new(uid: impl Into<String>) -> Result<Self, MaildropError> {
        let uid = uid.into();
        // RFC 1939 §7: "1 to 70 characters in the range 0x21 to 0x7E".
        if uid.is_empty() || uid.len() > 70 || !uid.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return Err(MaildropError::InvalidUid(uid));
        }
        Ok(Self(uid))
    }

    /// The unique id as sent by `UIDL`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Uid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One message of a maildrop: its size and unique id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageInfo {
    /// Size in octets as transmitted, with CRLF line ends and before
    /// dot-stuffing (RFC 1939 §11). `LIST`, `STAT` and `RETR` report it.
    pub size: u64,
    /// The message's unique id, stable across sessions.
    pub uid: Uid,
}

/// A maildrop description that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MaildropError {
    /// A unique id breaks RFC 1939 §7's syntax.
    #[error("invalid unique id {0:?}: must be 1-70 characters in 0x21-0x7E")]
    InvalidUid(String),
    /// Two messages have the same unique id.
    #[error("unique id {0:?} appears twice in the maildrop")]
    DuplicateUid(String),
    /// More messages than message numbers can address.
    #[error("a maildrop holds at most 4294967295 messages")]
    TooManyMessages,
}

/// A locked maildrop's contents, in message-number order, plus per-user
/// capability values. The handler gives it to the session after locking.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Maildrop {
    messages: Vec<MessageInfo>,
    expire: Option<Expire>,
    login_delay: Option<u32>,
    needs_utf8: bool,
}

impl Maildrop {
    /// Checks a listing: unique ids must be unique. Message 1 is the first item.
    pub fn new(messages: impl IntoIterator<Item = MessageInfo>) -> Result<Self, MaildropError> {
        let messages: Vec<MessageInfo> = messages.into_iter().collect();
        if u32::try_from(messages.len()).is_err() {
            return Err(MaildropError::TooManyMessages);
        }
        let mut seen = HashSet::with_capacity(messages.len());
        for m in &messages {
            if !seen.insert(m.uid.as_str()) {
                return Err(MaildropError::DuplicateUid(m.uid.0.clone()));
            }
        }
        Ok(Self {
            messages,
            expire: None,
            login_delay: None,
            needs_utf8: false,
        })
    }

    /// This user's `EXPIRE` value, announced by `CAPA` after login
    /// (used only when the server's config allows per-user values).
    pub fn with_expire(mut self, expire: Expire) -> Self {
        self.expire = Some(expire);
        self
    }

    /// This user's `LOGIN-DELAY` in seconds, announced by `CAPA` after login
    /// (used only when the server's config allows per-user values).
    pub fn with_login_delay(mut self, seconds: u32) -> Self {
        self.login_delay = Some(seconds);
        self
    }

    /// Marks a maildrop holding messages with UTF-8 headers that the store
    /// cannot downgrade (RFC 6856 §2): a client that has not sent `UTF8`
    /// is refused with `-ERR [UTF8]` instead of getting them.
    pub fn with_utf8_only(mut self) -> Self {
        self.needs_utf8 = true;
        self
    }

    /// The messages, message 1 first.
    pub fn messages(&self) -> &[MessageInfo] {
        &self.messages
    }

    pub(crate) fn expire(&self) -> Option<Expire> {
        self.expire
    }

    pub(crate) fn login_delay(&self) -> Option<u32> {
        self.login_delay
    }

    pub(crate) fn needs_utf8(&self) -> bool {
        self.needs_utf8
    }
}

/// A message as the handler is asked about it: number, unique id and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRef {
    /// The 1-based message number in this session.
    pub number: u32,
    /// The message's unique id.
    pub uid: Uid,
    /// The size from the maildrop listing.
    pub size: u64,
}

/// Why a message number cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lookup {
    NoSuchMessage,
    Deleted,
}

/// The locked maildrop plus this session's deletion marks.
#[derive(Debug)]
pub(crate) struct Marked {
    drop: Maildrop,
    deleted: Vec<bool>,
    live_count: u32,
    live_size: u64,
}

impl Marked {
    pub(crate) fn new(drop: Maildrop) -> Self {
        let live_count = drop.messages.len() as u32;
        let live_size = drop
            .messages
            .iter()
            .map(|m| m.size)
            .fold(0, u64::saturating_add);
        Self {
            deleted: vec![false; drop.messages.len()],
            drop,
            live_count,
            live_size,
        }
    }

    pub(crate) fn maildrop(&self) -> &Maildrop {
        &self.drop
    }

    /// Messages not marked deleted, and their total size (for STAT).
    pub(crate) fn live(&self) -> (u32, u64) {
        (self.live_count, self.live_size)
    }

    /// Number of messages in the maildrop, deleted or not.
    pub(crate) fn len(&self) -> u32 {
        self.deleted.len() as u32
    }

    /// The live message with this 1-based number.
    pub(crate) fn get(&self, number: u32) -> Result<&MessageInfo, Lookup> {
        let i = number.checked_sub(1).ok_or(Lookup::NoSuchMessage)? as usize;
        match self.deleted.get(i) {
            None => Err(Lookup::NoSuchMessage),
            Some(true) => Err(Lookup::Deleted),
            Some(false) => Ok(&self.drop.messages[i]),
        }
    }

    /// The message at 0-based `index` if it is live.
    pub(crate) fn live_at(&self, index: u32) -> Option<&MessageInfo> {
        let i = index as usize;
        (!self.deleted[i]).then(|| &self.drop.messages[i])
    }

    pub(crate) fn reference(&self, number: u32) -> Result<MessageRef, Lookup> {
        self.get(number).map(|m| MessageRef {
            number,
            uid: m.uid.clone(),
            size: m.size,
        })
    }

    pub(crate) fn delete(&mut self, number: u32) -> Result<(), Lookup> {
        let size = self.get(number)?.size;
        self.deleted[number as usize - 1] = true;
        self.live_count -= 1;
        self.live_size = self.live_size.saturating_sub(size);
        Ok(())
    }

    pub(crate) fn reset(&mut self) {
        *self = Self::new(std::mem::take(&mut self.drop));
    }

    /// The marked messages, in ascending message number, each once.
    pub(crate) fn marked(&self) -> Vec<MessageRef> {
        self.deleted
            .iter()
            .enumerate()
            .filter(|(_, d)| **d)
            .map(|(i, _)| {
                let m = &self.drop.messages[i];
                MessageRef {
                    number: i as u32 + 1,
                    uid: m.uid.clone(),
                    size: m.size,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(size: u64, uid: &str) -> MessageInfo {
        MessageInfo {
            size,
            uid: Uid::new(uid).unwrap(),
        }
    }

    #[test]
    fn uid_syntax() {
        assert!(Uid::new("a").is_ok());
        assert!(Uid::new("~".repeat(70)).is_ok());
        assert!(Uid::new("x".repeat(71)).is_err());
        assert!(Uid::new("").is_err());
        assert!(Uid::new("a b").is_err());
        assert!(Uid::new("é").is_err());
    }

    #[test]
    fn duplicate_uids_are_refused() {
        assert_eq!(
            Maildrop::new([info(1, "a"), info(2, "a")]).unwrap_err(),
            MaildropError::DuplicateUid("a".into())
        );
    }

    #[test]
    fn marks_and_counts() {
        let mut m =
            Marked::new(Maildrop::new([info(10, "a"), info(20, "b"), info(30, "c")]).unwrap());
        assert_eq!(m.live(), (3, 60));
        assert_eq!(m.delete(2), Ok(()));
        assert_eq!(m.delete(2), Err(Lookup::Deleted));
        assert_eq!(m.delete(4), Err(Lookup::NoSuchMessage));
        assert_eq!(m.get(0), Err(Lookup::NoSuchMessage));
        assert_eq!(m.live(), (2, 40));
        m.delete(1).unwrap();
        assert_eq!(
            m.marked().iter().map(|r| r.number).collect::<Vec<_>>(),
            [1, 2]
        );
        m.reset();
        assert_eq!(m.live(), (3, 60));
        assert!(m.marked().is_empty());
    }
}
