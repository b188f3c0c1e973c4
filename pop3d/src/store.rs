//! The store pop3d serves: the Maildir (the default) or PostgreSQL
//! (`--store`), behind one handler type.

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use pop3_proto::{Maildrop, MessageRef, ScramCredentials};
use pop3_tokio::{AsyncBodySource, AsyncHandler, Credential, HandlerError, HandlerResult};

use crate::maildir::{MaildirHandler, Maildirs, MessageBody};
use crate::postgres::{ChunkBody, PgHandler, PgStore};

/// The store, shared by every connection.
#[derive(Debug, Clone)]
pub(crate) enum Store {
    /// One Maildir per user under a root directory.
    Maildir(Arc<Maildirs>),
    /// A PostgreSQL database shared by several instances.
    Postgres(Arc<PgStore>),
}

impl Store {
    /// A handler for one connection from `peer` (the client a trusted
    /// PROXY header named, if any), which the database store's log lines
    /// name.
    pub(crate) fn handler(&self, peer: Option<std::net::SocketAddr>) -> StoreHandler {
        match self {
            Self::Maildir(store) => StoreHandler::Maildir(store.handler()),
            Self::Postgres(store) => StoreHandler::Postgres(store.handler(peer)),
        }
    }
}

/// One connection's handler over the [`Store`].
#[derive(Debug)]
pub(crate) enum StoreHandler {
    /// Over the Maildir.
    Maildir(MaildirHandler),
    /// Over PostgreSQL.
    Postgres(PgHandler),
}

/// A message body from either store.
#[derive(Debug)]
pub(crate) enum StoreBody {
    /// A Maildir file.
    Maildir(MessageBody),
    /// Chunk rows.
    Postgres(ChunkBody),
}

impl AsyncBodySource for StoreBody {
    async fn next_chunk(&mut self) -> io::Result<Option<Bytes>> {
        match self {
            Self::Maildir(body) => body.next_chunk().await,
            Self::Postgres(body) => body.next_chunk().await,
        }
    }
}

impl AsyncHandler for StoreHandler {
    type Body = StoreBody;

    async fn authenticate(&mut self, user: &str, credential: &Credential) -> HandlerResult<()> {
        match self {
            Self::Maildir(h) => h.authenticate(user, credential).await,
            Self::Postgres(h) => h.authenticate(user, credential).await,
        }
    }

    async fn scram_credentials(&mut self, user: &str) -> HandlerResult<ScramCredentials> {
        match self {
            Self::Maildir(h) => h.scram_credentials(user).await,
            Self::Postgres(h) => h.scram_credentials(user).await,
        }
    }

    async fn lock(&mut self, user: &str) -> HandlerResult<Maildrop> {
        match self {
            Self::Maildir(h) => h.lock(user).await,
            Self::Postgres(h) => h.lock(user).await,
        }
    }

    async fn open(&mut self, message: &MessageRef, top: Option<u64>) -> HandlerResult<StoreBody> {
        match self {
            Self::Maildir(h) => h.open(message, top).await.map(StoreBody::Maildir),
            Self::Postgres(h) => h.open(message, top).await.map(StoreBody::Postgres),
        }
    }

    async fn commit(&mut self, deleted: &[MessageRef]) -> HandlerResult<()> {
        match self {
            Self::Maildir(h) => h.commit(deleted).await,
            Self::Postgres(h) => h.commit(deleted).await,
        }
    }

    async fn unlock(&mut self) {
        match self {
            Self::Maildir(h) => h.unlock().await,
            Self::Postgres(h) => h.unlock().await,
        }
    }

    fn session_error(&mut self, error: &HandlerError) {
        match self {
            Self::Maildir(h) => h.session_error(error),
            Self::Postgres(h) => h.session_error(error),
        }
    }
}
