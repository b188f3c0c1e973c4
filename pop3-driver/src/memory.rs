//! The in-memory store of [`pop3_proto::memory`] as a handler: its
//! [`MemoryHandler`] implements [`Handler`] and [`AsyncHandler`], its
//! [`MemoryBody`] both body-source traits. For examples, tests, and as a
//! test POP3 server for client developers.
//!
//! An injected [`Fault::Panic`] panics inside the handler call (the drive
//! loop turns it into an internal error); a [`Fault::Hang`] keeps an async
//! call pending, counted in [`MemoryStore::hanging`], until it is dropped.
//! A blocking call cannot be abandoned, so there a hang panics instead.
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

use std::io;

use bytes::Bytes;
pub use pop3_proto::memory::{
    message_of_size, Fault, FaultPoint, MemoryBody, MemoryHandler, MemoryStore, StoreError,
    StoredMessage,
};
use pop3_proto::{Credential, Maildrop, MessageRef, ScramCredentials};

use crate::handler::{
    AsyncBodySource, AsyncHandler, BodySource, Handler, HandlerError, HandlerResult,
};

/// A store outcome of a blocking call.
fn blocking<T>(outcome: Result<T, StoreError>) -> HandlerResult<T> {
    outcome.map_err(|e| match e {
        StoreError::Refused(r) => r.into(),
        StoreError::Internal(text) => HandlerError::internal(text),
        StoreError::Hang => panic!("injected Fault::Hang in a blocking call"),
    })
}

/// A store outcome of an async call: a hang stays pending until dropped.
async fn nonblocking<T>(store: &MemoryStore, outcome: Result<T, StoreError>) -> HandlerResult<T> {
    match outcome {
        Err(StoreError::Hang) => {
            let _counted = store.hanging_guard();
            std::future::pending().await
        }
        other => blocking(other),
    }
}

fn body_error(e: HandlerError) -> io::Error {
    io::Error::other(e.to_string())
}

impl Handler for MemoryHandler {
    type Body = MemoryBody;

    fn authenticate(&mut self, user: &str, credential: &Credential) -> HandlerResult<()> {
        blocking(self.try_authenticate(user, credential))
    }

    fn scram_credentials(&mut self, user: &str) -> HandlerResult<ScramCredentials> {
        blocking(self.try_scram_credentials(user))
    }

    fn lock(&mut self, user: &str) -> HandlerResult<Maildrop> {
        blocking(self.try_lock(user))
    }

    fn open(&mut self, message: &MessageRef, _top: Option<u64>) -> HandlerResult<MemoryBody> {
        blocking(self.try_open(message))
    }

    fn commit(&mut self, deleted: &[MessageRef]) -> HandlerResult<()> {
        blocking(self.try_commit(deleted))
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
        let outcome = self.try_authenticate(user, credential);
        nonblocking(self.store(), outcome).await
    }

    async fn scram_credentials(&mut self, user: &str) -> HandlerResult<ScramCredentials> {
        let outcome = self.try_scram_credentials(user);
        nonblocking(self.store(), outcome).await
    }

    async fn lock(&mut self, user: &str) -> HandlerResult<Maildrop> {
        let outcome = self.try_lock(user);
        nonblocking(self.store(), outcome).await
    }

    async fn open(&mut self, message: &MessageRef, _top: Option<u64>) -> HandlerResult<MemoryBody> {
        let outcome = self.try_open(message);
        nonblocking(self.store(), outcome).await
    }

    async fn commit(&mut self, deleted: &[MessageRef]) -> HandlerResult<()> {
        let outcome = self.try_commit(deleted);
        nonblocking(self.store(), outcome).await
    }

    async fn unlock(&mut self) {
        self.release();
    }

    fn session_error(&mut self, _error: &HandlerError) {
        self.count_session_error();
    }
}

impl BodySource for MemoryBody {
    fn next_chunk(&mut self) -> io::Result<Option<Bytes>> {
        blocking(self.try_next_chunk()).map_err(body_error)
    }
}

impl AsyncBodySource for MemoryBody {
    async fn next_chunk(&mut self) -> io::Result<Option<Bytes>> {
        let outcome = self.try_next_chunk();
        let store = self.store().clone();
        nonblocking(&store, outcome).await.map_err(body_error)
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

    fn password() -> Credential {
        Credential::Password(pop3_proto::Secret::new(b"p".to_vec()))
    }

    #[test]
    fn hang_is_pending_and_counted_until_dropped() {
        use std::future::Future;
        use std::task::{Context, Poll, Waker};
        let store = store();
        store.inject(FaultPoint::Authenticate, Fault::Hang);
        let mut h = store.handler();
        let credential = password();
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

    #[test]
    fn blocking_calls_map_faults_and_cannot_hang() {
        let store = store();
        store.inject(
            FaultPoint::Authenticate,
            Fault::Refuse(pop3_proto::Refusal::sys_temp("busy")),
        );
        store.inject(FaultPoint::Authenticate, Fault::Internal);
        store.inject(FaultPoint::Authenticate, Fault::Hang);
        let mut h = store.handler();
        let credential = password();
        assert!(matches!(
            Handler::authenticate(&mut h, "u", &credential),
            Err(HandlerError::Reportable(_))
        ));
        assert!(matches!(
            Handler::authenticate(&mut h, "u", &credential),
            Err(HandlerError::Internal(_))
        ));
        let hung = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Handler::authenticate(&mut h, "u", &credential)
        }));
        assert!(hung.is_err(), "a blocking hang panics");
        assert!(Handler::authenticate(&mut h, "u", &credential).is_ok());
    }
}
