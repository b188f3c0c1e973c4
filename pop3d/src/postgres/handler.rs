//! One connection's handler over [`PgStore`].

use std::sync::atomic::Ordering;
use std::sync::Arc;

use pop3_proto::{Maildrop, MessageInfo, MessageRef, Refusal, ScramCredentials, Uid};
use pop3_tokio::{AsyncHandler, Credential, HandlerError, HandlerResult};

use super::blob::{Blobs as _, ChunkBody};
use super::lease::Lease;
use super::{DbError, PgStore};
use crate::users::Stored;

/// The reply text when the database cannot be reached or fails.
const UNAVAILABLE: &str = "the mail store is unavailable, try again later";

/// A locked maildrop: the lease and the messages listed when it was taken.
#[derive(Debug)]
struct Locked {
    lease: Lease,
    /// Message ids and chunk counts, in listing order.
    messages: Vec<(i64, i32)>,
}

/// One connection's handler over [`PgStore`].
#[derive(Debug)]
pub(crate) struct PgHandler {
    store: Arc<PgStore>,
    /// The client's address, for the log lines (`-` without one).
    peer: String,
    locked: Option<Locked>,
}

impl PgHandler {
    pub(super) fn new(store: Arc<PgStore>, peer: Option<std::net::SocketAddr>) -> Self {
        Self {
            store,
            peer: peer.map_or_else(|| "-".to_owned(), |p| p.to_string()),
            locked: None,
        }
    }

    /// The user's stored password (`None`: no such user, or a field that
    /// no longer parses, which is logged).
    async fn stored(&self, user: &str) -> Result<Option<Stored>, DbError> {
        let client = self.store.pool.get().await?;
        let statement = client
            .prepare_cached("SELECT password FROM pop3d_users WHERE name = $1")
            .await?;
        let row = client.query_opt(&statement, &[&user]).await?;
        Ok(row.and_then(|row| {
            let field: String = row.get(0);
            Stored::parse(&field)
                .inspect_err(|e| tracing::warn!(peer = self.peer, user, error = %e, "stored password does not parse; that user cannot log in"))
                .ok()
        }))
    }

    /// The locked maildrop, unless the lease was lost.
    fn locked(&self) -> HandlerResult<&Locked> {
        let locked = self
            .locked
            .as_ref()
            .ok_or_else(|| HandlerError::internal("no maildrop is locked"))?;
        if locked.lease.lost() {
            return Err(HandlerError::internal(
                "the maildrop lease was lost; ending the session",
            ));
        }
        Ok(locked)
    }
}

fn unavailable(peer: &str, e: &DbError) -> HandlerError {
    tracing::warn!(peer, error = %e, "database call failed");
    Refusal::sys_temp(UNAVAILABLE).into()
}

/// Lists `user`'s messages (their ids, chunk counts, sizes and ids).
async fn listing(
    store: &PgStore,
    peer: &str,
    user: &str,
) -> Result<(Vec<(i64, i32)>, Vec<MessageInfo>), HandlerError> {
    let client = store
        .pool
        .get()
        .await
        .map_err(|e| unavailable(peer, &e.into()))?;
    let rows = client
        .query(
            "SELECT id, chunks, size, uidl FROM pop3d_messages WHERE user_name = $1 ORDER BY id",
            &[&user],
        )
        .await
        .map_err(|e| unavailable(peer, &e.into()))?;
    let mut ids = Vec::with_capacity(rows.len());
    let mut infos = Vec::with_capacity(rows.len());
    for row in rows {
        let (id, chunks, size, uidl): (i64, i32, i64, String) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        let uid = Uid::new(uidl).map_err(HandlerError::internal)?;
        ids.push((id, chunks));
        infos.push(MessageInfo {
            size: u64::try_from(size).map_err(HandlerError::internal)?,
            uid,
        });
    }
    Ok((ids, infos))
}

impl AsyncHandler for PgHandler {
    type Body = ChunkBody;

    async fn authenticate(&mut self, user: &str, credential: &Credential) -> HandlerResult<()> {
        // A bearer token has no stored password here: it fails as any
        // wrong credential does (after the decoy).
        let stored = match credential {
            Credential::Bearer(_) => None,
            _ => self
                .stored(user)
                .await
                .map_err(|e| unavailable(&self.peer, &e))?,
        };
        // A refusal is held by the protocol core for its failure delay,
        // counted from when the check was asked for.
        if self.store.passwords.check(stored, credential).await {
            Ok(())
        } else {
            Err(Refusal::auth("invalid user name or password").into())
        }
    }

    async fn scram_credentials(&mut self, user: &str) -> HandlerResult<ScramCredentials> {
        // A user without SCRAM keys, or no such user: decoy keys, stable
        // per user across instances, so the exchange does not tell.
        let stored = self
            .stored(user)
            .await
            .map_err(|e| unavailable(&self.peer, &e))?;
        if let Some(keys) = stored.as_ref().and_then(Stored::scram) {
            return Ok(keys.clone());
        }
        let secret = self
            .store
            .scram_secret()
            .await
            .map_err(|e| unavailable(&self.peer, &e))?;
        Ok(ScramCredentials::decoy(
            &secret,
            user,
            pop3_proto::MIN_SCRAM_ITERATIONS,
        ))
    }

    async fn lock(&mut self, user: &str) -> HandlerResult<Maildrop> {
        let session = self.store.sessions.fetch_add(1, Ordering::Relaxed);
        let owner = format!("{}/{session}", self.store.instance);
        let lease = Lease::take(
            &self.store.pool,
            user,
            owner,
            &self.peer,
            self.store.lease_time,
        )
        .await
        .map_err(|e| unavailable(&self.peer, &e))?
        .ok_or_else(|| Refusal::in_use("maildrop is locked by another session"))?;
        let (messages, infos) = match listing(&self.store, &self.peer, user).await {
            Ok(listed) => listed,
            Err(e) => {
                lease.release().await;
                return Err(e);
            }
        };
        let drop = match Maildrop::new(infos) {
            Ok(drop) => drop,
            Err(e) => {
                lease.release().await;
                return Err(HandlerError::internal(e));
            }
        };
        self.locked = Some(Locked { lease, messages });
        Ok(drop)
    }

    async fn open(&mut self, message: &MessageRef, _top: Option<u64>) -> HandlerResult<ChunkBody> {
        let locked = self.locked()?;
        let &(id, chunks) = (message.number as usize)
            .checked_sub(1)
            .and_then(|i| locked.messages.get(i))
            .ok_or_else(|| HandlerError::internal("message number out of range"))?;
        // The session does the TOP cut-off and stops reading when it is
        // reached; chunks are read only as they are wanted.
        Ok(self.store.blobs.open(id, chunks))
    }

    async fn commit(&mut self, deleted: &[MessageRef]) -> HandlerResult<()> {
        let locked = self.locked()?;
        let mut ids = Vec::with_capacity(deleted.len());
        for m in deleted {
            let &(id, _) = (m.number as usize)
                .checked_sub(1)
                .and_then(|i| locked.messages.get(i))
                .ok_or_else(|| HandlerError::internal("message number out of range"))?;
            ids.push(id);
        }
        if ids.is_empty() {
            return Ok(());
        }
        let (user, owner) = (locked.lease.user(), locked.lease.owner());
        let removed = async {
            let mut client = self.store.pool.get().await?;
            let tx = client.transaction().await?;
            // Under the lease row's lock: no renewal or takeover races this.
            let ours = tx
                .query_opt(
                    "SELECT 1 FROM pop3d_leases
                     WHERE user_name = $1 AND owner = $2 AND expires_at > clock_timestamp()
                     FOR UPDATE",
                    &[&user, &owner],
                )
                .await?
                .is_some();
            if !ours {
                return Ok(None);
            }
            let n = tx
                .execute(
                    "DELETE FROM pop3d_messages WHERE user_name = $1 AND id = ANY($2)",
                    &[&user, &ids],
                )
                .await?;
            tx.commit().await?;
            Ok::<_, DbError>(Some(n))
        };
        match removed.await {
            Ok(Some(n)) => {
                tracing::debug!(user, removed = n, "deleted messages removed");
                Ok(())
            }
            Ok(None) => {
                tracing::warn!(
                    peer = self.peer,
                    user,
                    owner,
                    "maildrop lease lost before UPDATE; nothing deleted"
                );
                Err(Refusal::sys_temp(
                    "no deleted message was removed (the maildrop lock was lost)",
                )
                .into())
            }
            Err(e) => {
                // Any failure before COMMIT rolls the transaction back. (A
                // connection lost after COMMIT was sent and before its
                // answer leaves the outcome unknown here: the database has
                // removed all of the messages or none, and the next
                // session's listing tells which.)
                tracing::warn!(peer = self.peer, user, error = %e, "UPDATE failed; nothing deleted");
                Err(Refusal::sys_temp(
                    "no deleted message was removed (the mail store is unavailable)",
                )
                .into())
            }
        }
    }

    async fn unlock(&mut self) {
        if let Some(locked) = self.locked.take() {
            locked.lease.release().await;
        }
    }
}
