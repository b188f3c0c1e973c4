//! Users in the database: `pop3d user add|remove|list|import --store URL`.
//!
//! A user's password is kept as the users file's password field
//! (`{SCHEME}data`), so every scheme the users file takes works here, and
//! a users file is imported as it is.

use tokio_postgres::{Client, GenericClient};

use super::DbError;
use crate::users::{Stored, Users};

/// Whether `add` made a new user or replaced a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Added {
    /// A new user.
    Created,
    /// The user existed; the password is replaced.
    Updated,
}

/// Adds `user` with `stored`, or replaces their password.
pub(crate) async fn add(
    client: &impl GenericClient,
    user: &str,
    stored: &Stored,
) -> Result<Added, DbError> {
    let row = client
        .query_one(
            "INSERT INTO pop3d_users (name, password) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE SET password = EXCLUDED.password
             RETURNING (xmax = 0)",
            &[&user, &stored.field()],
        )
        .await?;
    Ok(if row.get::<_, bool>(0) {
        Added::Created
    } else {
        Added::Updated
    })
}

/// Removes `user` with their messages, ids and lease; false if there was
/// no such user.
pub(crate) async fn remove(client: &Client, user: &str) -> Result<bool, DbError> {
    let n = client
        .execute("DELETE FROM pop3d_users WHERE name = $1", &[&user])
        .await?;
    Ok(n > 0)
}

/// One user as `list` shows them.
#[derive(Debug)]
pub(crate) struct Listed {
    /// The user name.
    pub(crate) name: String,
    /// The password scheme (`ARGON2ID`, ...).
    pub(crate) scheme: String,
    /// How many messages they have.
    pub(crate) messages: i64,
    /// Their messages' total size (CRLF octets).
    pub(crate) octets: i64,
}

/// Every user, by name.
pub(crate) async fn list(client: &Client) -> Result<Vec<Listed>, DbError> {
    let rows = client
        .query(
            "SELECT u.name, substring(u.password FROM '^\\{([^}]*)\\}'),
                    count(m.id), coalesce(sum(m.size), 0)::bigint
             FROM pop3d_users u LEFT JOIN pop3d_messages m ON m.user_name = u.name
             GROUP BY u.name, u.password ORDER BY u.name",
            &[],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| Listed {
            name: row.get(0),
            scheme: row.get::<_, Option<String>>(1).unwrap_or_default(),
            messages: row.get(2),
            octets: row.get(3),
        })
        .collect())
}

/// Adds every user of a users file (replacing the passwords of users who
/// exist), in one transaction; returns how many were created and updated.
pub(crate) async fn import(client: &mut Client, users: &Users) -> Result<(usize, usize), DbError> {
    let tx = client.transaction().await?;
    let (mut created, mut updated) = (0, 0);
    let mut all: Vec<_> = users.iter().collect();
    all.sort_by_key(|(name, _)| *name);
    for (user, stored) in all {
        match add(&tx, user, stored).await? {
            Added::Created => created += 1,
            Added::Updated => updated += 1,
        }
    }
    tx.commit().await?;
    Ok((created, updated))
}
