//! Message bodies: the boundary between a message's metadata (its row in
//! `pop3d_messages`) and its octets.
//!
//! [`Blobs`] is all the rest of the store knows of where bodies live:
//! write a body's chunks at delivery, read them back in order. Here they
//! are [`ChunkRows`]: rows of `pop3d_chunks`, [`CHUNK`] octets each (the
//! last one shorter), keyed by message id and sequence number, removed
//! with their message by `ON DELETE CASCADE` in the same transaction.
//!
//! Why chunk rows rather than one `bytea` per message or large objects:
//!
//! - A `bytea` value is read whole: a 200 MB message would be 200 MB in
//!   the server's memory (and more in the client library). Substrings of
//!   one `bytea` (`substring(data FROM n FOR len)`) stream, but each one
//!   detoasts the value from its start unless it is stored uncompressed,
//!   and a value is capped at 1 GB.
//! - Large objects (`lo_*`) stream well, but live outside the row: they
//!   are not deleted with their message (a trigger or `vacuumlo` has to),
//!   need their own privileges, are not dumped by `pg_dump --table`, and
//!   their calls must run inside one transaction, which would hold a pool
//!   connection for as long as a client takes to read the message.
//! - Chunk rows are plain SQL: each read is one short indexed query on a
//!   pooled connection taken for that query only, so a slow reader holds
//!   no connection; memory per reader is one chunk; deletion is the
//!   message row's; and an object store could hold the same chunks (or
//!   one object read by ranges) behind this trait while the metadata
//!   stays in PostgreSQL.

use std::future::Future;
use std::io;

use bytes::Bytes;
use deadpool_postgres::Pool;
use pop3_tokio::AsyncBodySource;
use tokio_postgres::Transaction;

/// Octets per stored chunk (the last chunk of a body may be shorter).
pub(crate) const CHUNK: usize = 256 * 1024;

/// Where message bodies are kept.
///
/// An implementation over an object store would write the chunks (or
/// one object) before the delivery transaction commits and ignore `tx`,
/// and would delete a body only after the transaction that removed its
/// message committed (a sweep of bodies no message row names), so that
/// a crash at any point loses no body that is still listed.
pub(crate) trait Blobs: Send + Sync + 'static {
    /// A body being read.
    type Body: AsyncBodySource + 'static;

    /// Stores chunk `seq` (0, 1, ...) of message `id`'s body, in the
    /// delivery's transaction `tx`.
    fn put(
        &self,
        tx: &Transaction<'_>,
        id: i64,
        seq: i32,
        data: &[u8],
    ) -> impl Future<Output = Result<(), tokio_postgres::Error>> + Send;

    /// Opens message `id`'s body, `chunks` chunks long.
    fn open(&self, id: i64, chunks: i32) -> Self::Body;
}

/// Bodies as rows of `pop3d_chunks`.
#[derive(Debug, Clone)]
pub(crate) struct ChunkRows {
    pool: Pool,
}

impl ChunkRows {
    /// Bodies read through `pool`.
    pub(crate) fn new(pool: Pool) -> Self {
        Self { pool }
    }
}

impl Blobs for ChunkRows {
    type Body = ChunkBody;

    async fn put(
        &self,
        tx: &Transaction<'_>,
        id: i64,
        seq: i32,
        data: &[u8],
    ) -> Result<(), tokio_postgres::Error> {
        tx.execute(
            "INSERT INTO pop3d_chunks (message_id, seq, data) VALUES ($1, $2, $3)",
            &[&id, &seq, &data],
        )
        .await
        .map(drop)
    }

    fn open(&self, id: i64, chunks: i32) -> ChunkBody {
        ChunkBody {
            pool: self.pool.clone(),
            id,
            next: 0,
            chunks,
        }
    }
}

/// A body read chunk by chunk, each chunk by one query on a connection
/// taken from the pool for that query only.
#[derive(Debug)]
pub(crate) struct ChunkBody {
    pool: Pool,
    id: i64,
    next: i32,
    chunks: i32,
}

impl AsyncBodySource for ChunkBody {
    async fn next_chunk(&mut self) -> io::Result<Option<Bytes>> {
        if self.next >= self.chunks {
            return Ok(None);
        }
        let client = self.pool.get().await.map_err(io::Error::other)?;
        let statement = client
            .prepare_cached("SELECT data FROM pop3d_chunks WHERE message_id = $1 AND seq = $2")
            .await
            .map_err(io::Error::other)?;
        let row = client
            .query_opt(&statement, &[&self.id, &self.next])
            .await
            .map_err(io::Error::other)?
            .ok_or_else(|| {
                io::Error::other(format!(
                    "message {} has no chunk {} of {}",
                    self.id, self.next, self.chunks
                ))
            })?;
        drop(client);
        let data: Vec<u8> = row.get(0);
        self.next += 1;
        Ok(Some(Bytes::from(data)))
    }
}
