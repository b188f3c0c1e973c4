//! What a mail store implements: the handler traits, their error type and
//! the body sources they hand back.

use std::future::Future;
use std::io::{self, Read};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use pop3_proto::{Credential, Maildrop, MessageRef, Refusal, ScramCredentials};

/// Why a handler call did not succeed.
///
/// `Reportable` is popart's `ReportableError`: the client gets
/// `-ERR [CODE] text` and the session goes on. `Internal` ends the session
/// (nothing is deleted, the maildrop is unlocked) and is passed to
/// [`Handler::session_error`]. `LoginDelay` is the answer "the credentials
/// are good, but not yet" (RFC 2449 §8.1.2), worded by the session.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// Tell the client; the session goes on.
    #[error("{0}")]
    Reportable(Refusal),
    /// The user logged in less than the login delay ago; this much of it
    /// is left. Only from [`Handler::authenticate`] once the credentials
    /// were verified, or from [`Handler::lock`] (holding no lock): the
    /// client gets `-ERR [LOGIN-DELAY]` and AUTHORIZATION goes on (see
    /// `Session::refuse_login_delay`). From any other call it is an
    /// internal error.
    #[error("logged in too recently ({0:?} of the login delay left)")]
    LoginDelay(Duration),
    /// Not the client's business; the session ends.
    #[error("internal handler error: {0}")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl HandlerError {
    /// An internal error from any error value.
    pub fn internal(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Internal(error.into())
    }
}

impl From<Refusal> for HandlerError {
    fn from(refusal: Refusal) -> Self {
        Self::Reportable(refusal)
    }
}

impl From<io::Error> for HandlerError {
    fn from(error: io::Error) -> Self {
        Self::Internal(Box::new(error))
    }
}

/// The result of a handler call.
pub type HandlerResult<T> = Result<T, HandlerError>;

/// The default answer of a store without SCRAM keys.
fn no_scram() -> HandlerError {
    Refusal::auth("SCRAM-SHA-256 is not available").into()
}

/// A blocking mail store, one value per connection (used by `pop3-std`).
///
/// Every method runs on the connection's own thread. The session calls them
/// in protocol order: `authenticate`, then `lock`, then any number of `open`,
/// then at most one `commit`, then exactly one `unlock` if `lock` succeeded.
pub trait Handler: Send + 'static {
    /// A message body being read.
    type Body: BodySource;

    /// Checks credentials. Refuse with [`Refusal::auth`] (the default code
    /// for a credential refusal), [`HandlerError::LoginDelay`] for good
    /// credentials that come too soon, or [`Refusal::sys_temp`] and the like.
    fn authenticate(&mut self, user: &str, credential: &Credential) -> HandlerResult<()>;

    /// The user's SCRAM-SHA-256 keys, for SASL `SCRAM-SHA-256` (offer it
    /// only if this is implemented). For a user who does not exist, return
    /// [`ScramCredentials::decoy`] keys so the exchange does not tell; the
    /// session checks the client's proof. The default refuses.
    fn scram_credentials(&mut self, user: &str) -> HandlerResult<ScramCredentials> {
        let _ = user;
        Err(no_scram())
    }

    /// Locks the user's maildrop and describes it. Refuse with
    /// [`Refusal::in_use`] when another session holds it, or with
    /// [`HandlerError::LoginDelay`] (releasing the lock) when the user
    /// logged in too recently: a store shared by several servers can check
    /// and record the last login under its lock.
    fn lock(&mut self, user: &str) -> HandlerResult<Maildrop>;

    /// Opens a message for RETR (`top_lines == None`) or `TOP n k`
    /// (`Some(k)`). Stream the whole message either way: the session does
    /// the TOP cut-off and stops reading when it is reached.
    fn open(&mut self, message: &MessageRef, top_lines: Option<u64>) -> HandlerResult<Self::Body>;

    /// Removes these messages, all or none (RFC 1939 §6). Called once, at
    /// QUIT in TRANSACTION, possibly with an empty list.
    fn commit(&mut self, deleted: &[MessageRef]) -> HandlerResult<()>;

    /// Releases the lock taken by `lock`. Called exactly once per successful `lock`.
    fn unlock(&mut self);

    /// An internal error ended the session (popart's `HandleSessionError`).
    fn session_error(&mut self, error: &HandlerError) {
        let _ = error;
    }
}

/// An asynchronous mail store, one value per connection (used by
/// `pop3-tokio` and `pop3-async-std`). The same contract as [`Handler`].
///
/// Implement the methods with `async move { .. }` blocks; the futures must
/// be `Send` so any runtime can spawn them.
pub trait AsyncHandler: Send + 'static {
    /// A message body being read.
    type Body: AsyncBodySource;

    /// See [`Handler::authenticate`].
    fn authenticate(
        &mut self,
        user: &str,
        credential: &Credential,
    ) -> impl Future<Output = HandlerResult<()>> + Send;

    /// See [`Handler::scram_credentials`].
    fn scram_credentials(
        &mut self,
        user: &str,
    ) -> impl Future<Output = HandlerResult<ScramCredentials>> + Send {
        let _ = user;
        async { Err(no_scram()) }
    }

    /// See [`Handler::lock`].
    fn lock(&mut self, user: &str) -> impl Future<Output = HandlerResult<Maildrop>> + Send;

    /// See [`Handler::open`].
    fn open(
        &mut self,
        message: &MessageRef,
        top_lines: Option<u64>,
    ) -> impl Future<Output = HandlerResult<Self::Body>> + Send;

    /// See [`Handler::commit`].
    fn commit(&mut self, deleted: &[MessageRef]) -> impl Future<Output = HandlerResult<()>> + Send;

    /// See [`Handler::unlock`].
    fn unlock(&mut self) -> impl Future<Output = ()> + Send;

    /// See [`Handler::session_error`].
    fn session_error(&mut self, error: &HandlerError) {
        let _ = error;
    }
}

/// A message body pulled chunk by chunk (blocking).
pub trait BodySource: Send {
    /// The next chunk, or `None` at the end of the message.
    fn next_chunk(&mut self) -> io::Result<Option<Bytes>>;
}

/// A message body pulled chunk by chunk (asynchronous).
pub trait AsyncBodySource: Send {
    /// The next chunk, or `None` at the end of the message.
    fn next_chunk(&mut self) -> impl Future<Output = io::Result<Option<Bytes>>> + Send;
}

/// Chunk size used by the ready-made body sources.
pub const DEFAULT_CHUNK: usize = 32 * 1024;

/// A body held in memory, handed out in one piece.
impl BodySource for Option<Bytes> {
    fn next_chunk(&mut self) -> io::Result<Self> {
        Ok(self.take())
    }
}

impl AsyncBodySource for Option<Bytes> {
    async fn next_chunk(&mut self) -> io::Result<Self> {
        Ok(self.take())
    }
}

/// A body read in chunks from a reader: any [`std::io::Read`] (a file, a
/// cursor) for blocking handlers, any futures-io `AsyncRead` for async ones
/// (tokio readers through `pop3_tokio::ReaderBody::tokio`).
#[derive(Debug)]
pub struct ReaderBody<R> {
    reader: R,
    chunk: usize,
}

impl<R> ReaderBody<R> {
    /// Reads `reader` in chunks of [`DEFAULT_CHUNK`] octets.
    pub fn new(reader: R) -> Self {
        Self::with_chunk_size(reader, DEFAULT_CHUNK)
    }

    /// Reads `reader` in chunks of `chunk` octets (at least 1).
    pub fn with_chunk_size(reader: R, chunk: usize) -> Self {
        Self {
            reader,
            chunk: chunk.max(1),
        }
    }

    /// A chunk buffer; after a read of `n` octets, `finish` makes the chunk.
    fn buffer(&self) -> BytesMut {
        BytesMut::zeroed(self.chunk)
    }
}

fn finish(mut buf: BytesMut, n: usize) -> Option<Bytes> {
    buf.truncate(n);
    (n > 0).then(|| buf.freeze())
}

impl<R: Read + Send> BodySource for ReaderBody<R> {
    fn next_chunk(&mut self) -> io::Result<Option<Bytes>> {
        let mut buf = self.buffer();
        loop {
            match self.reader.read(&mut buf) {
                Ok(n) => return Ok(finish(buf, n)),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

impl<R: futures_lite::AsyncRead + Unpin + Send> AsyncBodySource for ReaderBody<R> {
    async fn next_chunk(&mut self) -> io::Result<Option<Bytes>> {
        use futures_lite::AsyncReadExt as _;
        let mut buf = self.buffer();
        let n = self.reader.read(&mut buf).await?;
        Ok(finish(buf, n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_body_chunks() {
        let mut b = ReaderBody::with_chunk_size(&b"hello world"[..], 4);
        let mut all = Vec::new();
        while let Some(c) = BodySource::next_chunk(&mut b).unwrap() {
            assert!(c.len() <= 4);
            all.extend_from_slice(&c);
        }
        assert_eq!(all, b"hello world");
    }

    #[test]
    fn handler_error_from_refusal_and_io() {
        let e: HandlerError = Refusal::in_use("busy").into();
        assert_eq!(e.to_string(), "[IN-USE] busy");
        let e: HandlerError = io::Error::other("disk").into();
        assert!(matches!(e, HandlerError::Internal(_)));
    }
}
