//! Delivery: `pop3d deliver --store URL USER < message`, and the import
//! of a Maildir's messages with the unique ids they had.
//!
//! A message is written in one transaction: its unique id (recorded in
//! `pop3d_uidls` for good), its row, and its body's chunks as they are
//! read, while its size in CRLF octets (RFC 1939 §11) is counted; the size
//! is stored last. Nothing of it is visible before the commit, and a
//! failure at any point leaves nothing behind. Memory is one chunk,
//! whatever the message's size.

use pop3_proto::SizeCounter;
use tokio::io::{AsyncRead, AsyncReadExt as _};
use tokio_postgres::Client;

use super::blob::{Blobs, CHUNK};
use super::DbError;

/// Why a delivery failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DeliveryError {
    /// No such user (permanent: sysexits' `EX_NOUSER`).
    #[error("no such user")]
    NoUser,
    /// The unique id to keep is already one of that user's (permanent).
    #[error("unique id {0:?} is already used by this user")]
    UidlTaken(String),
    /// The message could not be read.
    #[error("reading the message: {0}")]
    Read(#[from] std::io::Error),
    /// The message is too big to be served (more than 2^31 chunks).
    #[error("the message is too big")]
    TooBig,
    /// The database failed (temporary: sysexits' `EX_TEMPFAIL`).
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<tokio_postgres::Error> for DeliveryError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Db(e.into())
    }
}

/// A message stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Delivered {
    /// Its unique id.
    pub(crate) uidl: String,
    /// Its size in CRLF octets.
    pub(crate) size: u64,
}

/// Stores the message read from `body` for `user`, with the unique id
/// `uidl` (from an imported maildrop) or a new one.
pub(crate) async fn deliver(
    client: &mut Client,
    blobs: &impl Blobs,
    user: &str,
    uidl: Option<&str>,
    mut body: impl AsyncRead + Unpin,
) -> Result<Delivered, DeliveryError> {
    let tx = client.transaction().await?;
    let exists = tx
        .query_opt(
            "SELECT 1 FROM pop3d_users WHERE name = $1 FOR KEY SHARE",
            &[&user],
        )
        .await?
        .is_some();
    if !exists {
        return Err(DeliveryError::NoUser);
    }
    let uidl = match uidl {
        Some(uidl) => {
            let n = tx
                .execute(
                    "INSERT INTO pop3d_uidls (user_name, uidl) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    &[&user, &uidl],
                )
                .await?;
            if n == 0 {
                return Err(DeliveryError::UidlTaken(uidl.to_owned()));
            }
            uidl.to_owned()
        }
        None => loop {
            // A number never drawn before; an imported id may have the
            // same text (unlikely), then the next number is drawn.
            let row = tx
                .query_opt(
                    "INSERT INTO pop3d_uidls (user_name, uidl)
                     VALUES ($1, lpad(to_hex(nextval('pop3d_uidl_seq')), 8, '0'))
                     ON CONFLICT DO NOTHING RETURNING uidl",
                    &[&user],
                )
                .await?;
            if let Some(row) = row {
                break row.get::<_, String>(0);
            }
        },
    };
    let id: i64 = tx
        .query_one(
            "INSERT INTO pop3d_messages (user_name, uidl, size, octets, chunks)
             VALUES ($1, $2, 0, 0, 0) RETURNING id",
            &[&user, &uidl],
        )
        .await?
        .get(0);
    let mut size = SizeCounter::new();
    let mut octets: i64 = 0;
    let mut seq: i32 = 0;
    let mut buf = vec![0u8; CHUNK];
    loop {
        // A whole chunk, unless the message ends first.
        let mut filled = 0;
        while filled < CHUNK {
            match body.read(&mut buf[filled..]).await? {
                0 => break,
                n => filled += n,
            }
        }
        if filled == 0 {
            break;
        }
        let data = &buf[..filled];
        size.push(data);
        blobs.put(&tx, id, seq, data).await?;
        octets += filled as i64;
        seq = seq.checked_add(1).ok_or(DeliveryError::TooBig)?;
        if filled < CHUNK {
            break;
        }
    }
    let size = size.finish();
    tx.execute(
        "UPDATE pop3d_messages SET size = $2, octets = $3, chunks = $4 WHERE id = $1",
        &[
            &id,
            &i64::try_from(size).map_err(|_| DeliveryError::TooBig)?,
            &octets,
            &seq,
        ],
    )
    .await?;
    tx.commit().await?;
    Ok(Delivered { uidl, size })
}
