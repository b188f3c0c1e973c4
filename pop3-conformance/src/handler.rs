//! A handler for the suite: the in-memory store, plus injectable faults
//! (refusals, internal errors, panics) and a count of locks and unlocks.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use pop3_driver::memory::{MemoryHandler, MemoryStore};
use pop3_driver::{
    AsyncBodySource, AsyncHandler, BodySource, Handler, HandlerError, HandlerResult,
};
use pop3_proto::{Credential, Maildrop, MessageRef, Refusal};

/// Which handler call a fault hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// `authenticate`.
    Authenticate,
    /// `lock`.
    Lock,
    /// `open`.
    Open,
    /// The second body chunk.
    MidBody,
    /// `commit`.
    Commit,
}

/// What a fault does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// A reportable refusal.
    Refuse(Refusal),
    /// An internal error.
    Internal,
    /// A panic.
    Panic,
    /// A call that never returns (async handlers only).
    Hang,
}

/// Shared by every connection of one test server.
#[derive(Debug, Default)]
pub struct Plan {
    faults: Mutex<Vec<(Step, Fault)>>,
    /// Successful locks.
    pub locks: AtomicUsize,
    /// Unlocks.
    pub unlocks: AtomicUsize,
    /// Calls of `session_error`.
    pub session_errors: AtomicUsize,
    /// Body bytes handed to the session so far.
    pub body_bytes_pulled: AtomicUsize,
    /// Chunk size for bodies.
    pub chunk: AtomicUsize,
    /// Handler calls now stuck in a `Fault::Hang`.
    pub hanging: AtomicUsize,
    refuse_connection: Mutex<Option<Refusal>>,
    /// How sessions ended, as the service's end hook saw them.
    pub ended: Mutex<Vec<pop3_driver::SessionEnd>>,
}

impl Plan {
    /// Makes the next call at `step` fail with `fault`.
    pub fn inject(&self, step: Step, fault: Fault) {
        self.faults.lock().unwrap().push((step, fault));
    }

    /// Makes the connection hook refuse the next connection.
    pub fn refuse_next_connection(&self, refusal: Refusal) {
        *self.refuse_connection.lock().unwrap() = Some(refusal);
    }

    pub(crate) fn take_connection_refusal(&self) -> Option<Refusal> {
        self.refuse_connection.lock().unwrap().take()
    }

    fn take(&self, step: Step) -> Option<Fault> {
        let mut faults = self.faults.lock().unwrap();
        let i = faults.iter().position(|(s, _)| *s == step)?;
        Some(faults.remove(i).1)
    }

    fn apply(&self, step: Step) -> HandlerResult<()> {
        match self.take(step) {
            None => Ok(()),
            Some(Fault::Refuse(r)) => Err(r.into()),
            Some(Fault::Internal) => Err(HandlerError::internal(format!("injected at {step:?}"))),
            Some(Fault::Panic) => panic!("injected panic at {step:?}"),
            Some(Fault::Hang) => panic!("Fault::Hang is for async handlers"),
        }
    }

    async fn apply_async(&self, step: Step) -> HandlerResult<()> {
        let hang = self
            .faults
            .lock()
            .unwrap()
            .iter()
            .any(|(s, f)| *s == step && *f == Fault::Hang);
        if hang {
            self.hanging.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<()>().await;
        }
        self.apply(step)
    }
}

/// The suite's handler (blocking and async).
#[derive(Debug)]
pub struct TestHandler {
    inner: MemoryHandler,
    plan: Arc<Plan>,
}

impl TestHandler {
    /// A handler over `store` following `plan`.
    pub fn new(store: &MemoryStore, plan: Arc<Plan>) -> Self {
        Self {
            inner: store.handler(),
            plan,
        }
    }

    fn lock_sync(&mut self, user: &str) -> HandlerResult<Maildrop> {
        self.plan.apply(Step::Lock)?;
        let drop = Handler::lock(&mut self.inner, user)?;
        self.plan.locks.fetch_add(1, Ordering::SeqCst);
        Ok(drop)
    }

    fn open_sync(&mut self, message: &MessageRef) -> HandlerResult<ChunkedBody> {
        self.plan.apply(Step::Open)?;
        let whole = Handler::open(&mut self.inner, message, None)?.unwrap_or_default();
        let chunk = self.plan.chunk.load(Ordering::SeqCst).max(1);
        let chunks = (0..whole.len())
            .step_by(chunk)
            .map(|at| whole.slice(at..(at + chunk).min(whole.len())))
            .collect();
        Ok(ChunkedBody {
            chunks,
            plan: self.plan.clone(),
            sent: 0,
        })
    }

    fn unlock_sync(&mut self) {
        self.plan.unlocks.fetch_add(1, Ordering::SeqCst);
        Handler::unlock(&mut self.inner);
    }
}

impl Handler for TestHandler {
    type Body = ChunkedBody;

    fn authenticate(&mut self, user: &str, credential: &Credential) -> HandlerResult<()> {
        self.plan.apply(Step::Authenticate)?;
        Handler::authenticate(&mut self.inner, user, credential)
    }

    fn lock(&mut self, user: &str) -> HandlerResult<Maildrop> {
        self.lock_sync(user)
    }

    fn open(&mut self, message: &MessageRef, _top: Option<u64>) -> HandlerResult<ChunkedBody> {
        self.open_sync(message)
    }

    fn commit(&mut self, deleted: &[MessageRef]) -> HandlerResult<()> {
        self.plan.apply(Step::Commit)?;
        Handler::commit(&mut self.inner, deleted)
    }

    fn unlock(&mut self) {
        self.unlock_sync();
    }

    fn session_error(&mut self, _error: &HandlerError) {
        self.plan.session_errors.fetch_add(1, Ordering::SeqCst);
    }
}

impl AsyncHandler for TestHandler {
    type Body = ChunkedBody;

    async fn authenticate(&mut self, user: &str, credential: &Credential) -> HandlerResult<()> {
        self.plan.apply(Step::Authenticate)?;
        Handler::authenticate(&mut self.inner, user, credential)
    }

    async fn lock(&mut self, user: &str) -> HandlerResult<Maildrop> {
        self.lock_sync(user)
    }

    async fn open(
        &mut self,
        message: &MessageRef,
        _top: Option<u64>,
    ) -> HandlerResult<ChunkedBody> {
        self.plan.apply_async(Step::Open).await?;
        self.open_sync(message)
    }

    async fn commit(&mut self, deleted: &[MessageRef]) -> HandlerResult<()> {
        self.plan.apply(Step::Commit)?;
        Handler::commit(&mut self.inner, deleted)
    }

    async fn unlock(&mut self) {
        self.unlock_sync();
    }

    fn session_error(&mut self, _error: &HandlerError) {
        self.plan.session_errors.fetch_add(1, Ordering::SeqCst);
    }
}

/// A body handed out in fixed-size chunks, counting what was pulled.
#[derive(Debug)]
pub struct ChunkedBody {
    chunks: VecDeque<Bytes>,
    plan: Arc<Plan>,
    sent: usize,
}

impl ChunkedBody {
    fn next(&mut self) -> io::Result<Option<Bytes>> {
        if self.sent == 1 {
            match self.plan.take(Step::MidBody) {
                Some(Fault::Panic) => panic!("injected panic mid-body"),
                Some(_) => return Err(io::Error::other("injected mid-body failure")),
                None => {}
            }
        }
        self.sent += 1;
        let chunk = self.chunks.pop_front();
        if let Some(c) = &chunk {
            self.plan
                .body_bytes_pulled
                .fetch_add(c.len(), Ordering::SeqCst);
        }
        Ok(chunk)
    }
}

impl BodySource for ChunkedBody {
    fn next_chunk(&mut self) -> io::Result<Option<Bytes>> {
        self.next()
    }
}

impl AsyncBodySource for ChunkedBody {
    async fn next_chunk(&mut self) -> io::Result<Option<Bytes>> {
        self.next()
    }
}
