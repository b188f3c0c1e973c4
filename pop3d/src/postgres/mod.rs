//! PostgreSQL as a POP3 store: `pop3d --store postgres://…`, for several
//! stateless pop3d instances over one database.
//!
//! What the store promises:
//!
//! - **Users** are rows of `pop3d_users` with the users file's password
//!   field (`{SCHEME}data`, the same schemes), checked by the same
//!   [`Passwords`] as the Maildir store's, decoy path included: an unknown
//!   user costs what a wrong password does. Managed with `pop3d user
//!   add|remove|list|import --store URL`.
//! - **Messages** are rows of `pop3d_messages` with their RFC 1939 size
//!   (CRLF octets, counted once at delivery) and a unique id assigned at
//!   delivery ([`delivery`]) or kept from an imported Maildir, recorded in
//!   `pop3d_uidls` for good so it is never given to another message of
//!   that user. Bodies are chunks behind the [`blob::Blobs`] boundary,
//!   read a chunk at a time: a message of any size costs one chunk of
//!   memory.
//! - **The maildrop lock** is a [`lease::Lease`] with an owner and an
//!   expiry, renewed while the session lives: one session per user across
//!   every instance, and an instance that dies frees its users within the
//!   lease time (`--lease-seconds`, 30 by default).
//! - **The listing** is the user's messages when the lease was taken:
//!   messages delivered during the session appear in the next one.
//! - **UPDATE** is one transaction, which first checks that the lease is
//!   still this session's: the marked messages are removed all or none,
//!   and a crash or a lost connection before it commits removes none.
//! - **Connections** come from a small pool and are held only for the
//!   statement at hand, never by an idle session. When the database is
//!   down a login gets `-ERR [SYS/TEMP]`, a session that needs it ends
//!   with nothing deleted, and the pool reconnects when it is back.

pub(crate) mod accounts;
pub(crate) mod blob;
pub(crate) mod delivery;
mod handler;
mod lease;
pub(crate) mod schema;

pub(crate) use blob::ChunkBody;
pub(crate) use handler::PgHandler;

use std::str::FromStr as _;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use crate::passwords::Passwords;
use blob::ChunkRows;

/// A database call that failed: no connection from the pool, or an error
/// from the server or the connection.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DbError {
    /// No connection could be had (the database is down, the pool is
    /// exhausted for too long).
    #[error("no database connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// The statement failed, or the connection was lost.
    #[error("database: {0}")]
    Db(#[from] tokio_postgres::Error),
}

/// How long to wait for a connection, to connect, or for a pooled
/// connection's check, before the call fails as "database unavailable".
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a database connection may stop answering before it counts as
/// lost (TCP user timeout; keepalive probes start at half of it).
const DEAD_LINK: Duration = Duration::from_secs(30);

/// The connection pool for `url` (a libpq-style URL or key=value string),
/// at most `size` connections. Connecting is lazy: a pool is made even if
/// the database is down.
pub(crate) fn pool(url: &str, size: usize) -> Result<Pool, String> {
    let mut config = tokio_postgres::Config::from_str(url)
        .map_err(|e| format!("--store: not a PostgreSQL connection string: {e}"))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    // A database that vanishes without closing its connections (a host
    // down, a network cut): sent data unacknowledged this long fails the
    // call, and idle pooled connections are probed, so that a session
    // waits this long at most and never until its idle timeout.
    if config.get_tcp_user_timeout().is_none() {
        config.tcp_user_timeout(DEAD_LINK);
    }
    if config.get_keepalives_idle() == Duration::from_secs(2 * 60 * 60) {
        // tokio-postgres's default, two hours: not set in the URL.
        config.keepalives_idle(DEAD_LINK / 2);
        config.keepalives_interval(DEAD_LINK / 10);
    }
    if config.get_application_name().is_none() {
        config.application_name("pop3d");
    }
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            // A connection the server closed is seen as closed and replaced.
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size.max(1))
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(CONNECT_TIMEOUT))
        .create_timeout(Some(CONNECT_TIMEOUT))
        .recycle_timeout(Some(CONNECT_TIMEOUT))
        .build()
        .map_err(|e| format!("--store: {e}"))
}

/// The store shared by every connection of this instance.
#[derive(Debug)]
pub(crate) struct PgStore {
    pool: Pool,
    blobs: ChunkRows,
    passwords: Arc<Passwords>,
    /// This instance's part of a lease owner: the process id and a random
    /// number, so two instances (or a restart) never share one.
    instance: String,
    /// Sessions started, for the session part of lease owners.
    sessions: AtomicU64,
    lease_time: Duration,
    /// The database's SCRAM decoy secret, read once.
    scram_secret: tokio::sync::OnceCell<[u8; 32]>,
}

impl PgStore {
    /// The connection pool (for its metrics).
    pub(crate) fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The store over `pool`, with leases of `lease_time`.
    pub(crate) fn new(pool: Pool, lease_time: Duration) -> Arc<Self> {
        use argon2::password_hash::rand_core::{OsRng, RngCore as _};
        let instance = format!("{}-{:016x}", std::process::id(), OsRng.next_u64());
        Arc::new(Self {
            blobs: ChunkRows::new(pool.clone()),
            pool,
            passwords: Arc::new(Passwords::new()),
            instance,
            sessions: AtomicU64::new(0),
            lease_time,
            scram_secret: tokio::sync::OnceCell::new(),
        })
    }

    /// A handler for one connection.
    pub(crate) fn handler(self: &Arc<Self>, peer: Option<std::net::SocketAddr>) -> PgHandler {
        PgHandler::new(self.clone(), peer)
    }

    /// The secret of the SCRAM decoys (`pop3d_secrets`), the same for every
    /// instance on the database.
    async fn scram_secret(&self) -> Result<[u8; 32], DbError> {
        self.scram_secret
            .get_or_try_init(|| async {
                let client = self.pool.get().await?;
                let row = client
                    .query_one(
                        "SELECT value FROM pop3d_secrets WHERE name = 'scram-decoy'",
                        &[],
                    )
                    .await?;
                let value: Vec<u8> = row.get(0);
                let mut secret = [0u8; 32];
                let n = value.len().min(32);
                secret[..n].copy_from_slice(&value[..n]);
                Ok(secret)
            })
            .await
            .copied()
    }

    /// Logs whether the database is reachable and its schema current (a
    /// database down at start is not fatal: logins get `-ERR [SYS/TEMP]`
    /// until it is back).
    pub(crate) async fn check_schema(&self) {
        let version = async {
            let client = self.pool.get().await?;
            Ok::<_, DbError>(schema::version(&client).await?)
        };
        match version.await {
            Ok(v) if v == schema::LATEST => {
                tracing::info!(instance = self.instance, schema = v, "database store ready");
            }
            Ok(v) => tracing::warn!(
                instance = self.instance,
                schema = v,
                expected = schema::LATEST,
                "the database schema is not this pop3d's: run `pop3d db migrate`"
            ),
            Err(e) => tracing::warn!(
                instance = self.instance,
                error = %e,
                "database unavailable at start; logins get -ERR [SYS/TEMP] until it is back"
            ),
        }
    }
}

/// The database `url` names, for logs: its hosts and name, never its
/// password.
pub(crate) fn describe(url: &str) -> String {
    let Ok(config) = tokio_postgres::Config::from_str(url) else {
        return "a PostgreSQL database".to_owned();
    };
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    format!(
        "postgres database {} on {}",
        config.get_dbname().unwrap_or("(default)"),
        hosts.join(",")
    )
}

/// The bodies of the database `pool` serves.
pub(crate) fn blobs(pool: &Pool) -> ChunkRows {
    ChunkRows::new(pool.clone())
}
