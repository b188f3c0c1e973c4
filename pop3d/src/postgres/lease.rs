//! The maildrop lock across pop3d instances: a lease.
//!
//! A row of `pop3d_leases` per locked user names its owner (this
//! instance's id and the session's number) and when it expires. It is
//! taken by one atomic statement: an insert that, on a row already there,
//! takes it over only if it has expired, so of two sessions racing for one
//! user exactly one gets it. While the session lives a background task
//! renews it every third of the lease time, on a pooled connection taken
//! for that statement only (an idle session holds no connection); unlock
//! deletes it. An instance that dies stops renewing, and its leases free
//! themselves once they expire: at most the lease time later.
//!
//! Times are the database's clock (`clock_timestamp()`), so instances need
//! not agree on the time.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;

use super::DbError;

/// A maildrop lease held by this session.
#[derive(Debug)]
pub(crate) struct Lease {
    pool: Pool,
    user: String,
    owner: String,
    /// The session's client, for the log lines.
    peer: String,
    /// Set when a renewal found the lease taken over or gone, or could not
    /// renew it within the lease time: the session must not go on.
    lost: Arc<AtomicBool>,
    renewal: tokio::task::JoinHandle<()>,
}

impl Lease {
    /// Takes `user`'s lease for `owner` (a session of client `peer`) for
    /// `time`, unless another owner holds it unexpired (`Ok(None)`).
    pub(crate) async fn take(
        pool: &Pool,
        user: &str,
        owner: String,
        peer: &str,
        time: Duration,
    ) -> Result<Option<Self>, DbError> {
        let client = pool.get().await?;
        let taken = client
            .query_opt(
                "INSERT INTO pop3d_leases (user_name, owner, expires_at)
                 VALUES ($1, $2, clock_timestamp() + make_interval(secs => $3))
                 ON CONFLICT (user_name) DO UPDATE
                     SET owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at
                     WHERE pop3d_leases.expires_at < clock_timestamp()
                 RETURNING owner",
                &[&user, &owner, &time.as_secs_f64()],
            )
            .await?;
        drop(client);
        if taken.is_none() {
            return Ok(None);
        }
        let lost = Arc::new(AtomicBool::new(false));
        let renewal = tokio::spawn(renew(
            pool.clone(),
            Renewal {
                user: user.to_owned(),
                owner: owner.clone(),
                peer: peer.to_owned(),
            },
            time,
            lost.clone(),
        ));
        Ok(Some(Self {
            pool: pool.clone(),
            user: user.to_owned(),
            owner,
            peer: peer.to_owned(),
            lost,
            renewal,
        }))
    }

    /// The user whose maildrop this locks.
    pub(crate) fn user(&self) -> &str {
        &self.user
    }

    /// This lease's owner, as stored.
    pub(crate) fn owner(&self) -> &str {
        &self.owner
    }

    /// True once the lease is known lost (taken over, removed, or not
    /// renewed within the lease time).
    pub(crate) fn lost(&self) -> bool {
        self.lost.load(Ordering::Acquire)
    }

    /// Releases the lease (if the database cannot be reached it expires
    /// by itself).
    pub(crate) async fn release(self) {
        self.renewal.abort();
        let released = async {
            let client = self.pool.get().await?;
            client
                .execute(
                    "DELETE FROM pop3d_leases WHERE user_name = $1 AND owner = $2",
                    &[&self.user, &self.owner],
                )
                .await?;
            Ok::<_, DbError>(())
        };
        if let Err(e) = released.await {
            tracing::warn!(peer = self.peer, user = self.user, error = %e, "cannot release the maildrop lease; it expires by itself");
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.renewal.abort();
    }
}

/// Whose lease a renewal task renews.
struct Renewal {
    user: String,
    owner: String,
    peer: String,
}

/// Renews the lease every third of `time` until aborted; marks it lost
/// when it is no longer ours or could not be renewed for `time`.
async fn renew(pool: Pool, lease: Renewal, time: Duration, lost: Arc<AtomicBool>) {
    let Renewal { user, owner, peer } = lease;
    let every = time / 3;
    let mut renewed = Instant::now();
    loop {
        tokio::time::sleep(every).await;
        let attempt = async {
            let client = pool.get().await?;
            let n = client
                .execute(
                    "UPDATE pop3d_leases
                     SET expires_at = clock_timestamp() + make_interval(secs => $3)
                     WHERE user_name = $1 AND owner = $2 AND expires_at > clock_timestamp()",
                    &[&user, &owner, &time.as_secs_f64()],
                )
                .await?;
            Ok::<_, DbError>(n)
        };
        match attempt.await {
            Ok(1) => renewed = Instant::now(),
            Ok(_) => {
                tracing::warn!(
                    peer,
                    user,
                    owner,
                    "maildrop lease lost (expired or taken over)"
                );
                lost.store(true, Ordering::Release);
                return;
            }
            Err(e) if renewed.elapsed() >= time => {
                tracing::warn!(peer, user, owner, error = %e, "maildrop lease not renewed within its time: lost");
                lost.store(true, Ordering::Release);
                return;
            }
            Err(e) => {
                tracing::warn!(peer, user, owner, error = %e, "cannot renew the maildrop lease yet")
            }
        }
    }
}
