//! The database schema, as versioned migrations that `pop3d db migrate`
//! applies in order.
//!
//! Each migration runs once, in its own transaction, and is recorded in
//! `pop3d_migrations`; running `migrate` again applies only what is
//! missing (idempotent), and two `migrate`s at once are serialised by an
//! advisory lock. A migration, once released, is never
//! edited: a change is a new migration appended to [`MIGRATIONS`].

use tokio_postgres::Client;

/// The advisory lock key that serialises migrations ("pop3" in ASCII).
const MIGRATION_LOCK: i64 = 0x706f_7033;

/// One schema version.
struct Migration {
    version: i32,
    name: &'static str,
    sql: &'static str,
}

/// Every migration, oldest first.
const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "users, unique ids, messages, body chunks, secrets, leases",
    sql: r"
CREATE TABLE pop3d_users (
    name text PRIMARY KEY,
    -- The users file's password field: {SCHEME}data.
    password text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
-- Every unique id a user's messages ever had: never deleted with a
-- message, so an id is never given to another message of that user.
CREATE TABLE pop3d_uidls (
    user_name text NOT NULL REFERENCES pop3d_users (name) ON DELETE CASCADE,
    uidl text NOT NULL CHECK (uidl ~ '^[!-~]{1,70}$'),
    PRIMARY KEY (user_name, uidl)
);
-- Numbers for the unique ids of delivered messages.
CREATE SEQUENCE pop3d_uidl_seq;
CREATE TABLE pop3d_messages (
    id bigserial PRIMARY KEY,
    user_name text NOT NULL,
    uidl text NOT NULL,
    -- RFC 1939 size: octets with CRLF line ends, counted at delivery.
    size bigint NOT NULL CHECK (size >= 0),
    -- Octets stored, as delivered.
    octets bigint NOT NULL CHECK (octets >= 0),
    chunks integer NOT NULL CHECK (chunks >= 0),
    delivered_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_name, uidl),
    FOREIGN KEY (user_name, uidl) REFERENCES pop3d_uidls (user_name, uidl) ON DELETE CASCADE
);
CREATE INDEX pop3d_messages_by_user ON pop3d_messages (user_name, id);
CREATE TABLE pop3d_chunks (
    message_id bigint NOT NULL REFERENCES pop3d_messages (id) ON DELETE CASCADE,
    seq integer NOT NULL CHECK (seq >= 0),
    data bytea NOT NULL,
    PRIMARY KEY (message_id, seq)
);
-- Mail is mostly compressed already (attachments); out of line, uncompressed.
ALTER TABLE pop3d_chunks ALTER COLUMN data SET STORAGE EXTERNAL;
-- Secrets shared by every instance: 'scram-decoy' makes the SCRAM keys
-- of users without any, so one unknown user always gets the same salt
-- from every instance (gen_random_uuid: PostgreSQL 13 or later).
CREATE TABLE pop3d_secrets (
    name text PRIMARY KEY,
    value bytea NOT NULL
);
INSERT INTO pop3d_secrets (name, value) VALUES ('scram-decoy',
    decode(replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''), 'hex'));
-- The maildrop locks: one row per locked user, held until expires_at
-- unless its owner renews it.
CREATE TABLE pop3d_leases (
    user_name text PRIMARY KEY REFERENCES pop3d_users (name) ON DELETE CASCADE,
    owner text NOT NULL,
    expires_at timestamptz NOT NULL
);
",
}];

/// The newest schema version this pop3d knows.
pub(crate) const LATEST: i32 = MIGRATIONS[MIGRATIONS.len() - 1].version;

/// Applies the migrations not applied yet; returns the versions applied now.
///
/// Under a session-level advisory lock, taken before anything else (even
/// the `CREATE TABLE IF NOT EXISTS` of the bookkeeping table, which two
/// sessions running at once could both attempt): a second `migrate` waits
/// for the first, then finds nothing to do.
pub(crate) async fn migrate(client: &mut Client) -> Result<Vec<i32>, tokio_postgres::Error> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let applied = apply(client).await;
    // Released on every path (the lock belongs to the connection, which a
    // pool may keep).
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    let applied = applied?;
    unlocked?;
    Ok(applied)
}

/// [`migrate`] under its lock.
async fn apply(client: &mut Client) -> Result<Vec<i32>, tokio_postgres::Error> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS pop3d_migrations (
                version integer PRIMARY KEY,
                name text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )",
        )
        .await?;
    let mut applied = Vec::new();
    for m in MIGRATIONS {
        let tx = client.transaction().await?;
        let done = tx
            .query_opt(
                "SELECT 1 FROM pop3d_migrations WHERE version = $1",
                &[&m.version],
            )
            .await?
            .is_some();
        if done {
            continue; // dropped: rolled back, nothing was changed
        }
        // The migration and its record commit together, or neither does.
        tx.batch_execute(m.sql).await?;
        tx.execute(
            "INSERT INTO pop3d_migrations (version, name) VALUES ($1, $2)",
            &[&m.version, &m.name],
        )
        .await?;
        tx.commit().await?;
        applied.push(m.version);
    }
    Ok(applied)
}

/// The schema version of the database (0: never migrated).
pub(crate) async fn version(client: &Client) -> Result<i32, tokio_postgres::Error> {
    let exists: bool = client
        .query_one("SELECT to_regclass('pop3d_migrations') IS NOT NULL", &[])
        .await?
        .get(0);
    if !exists {
        return Ok(0);
    }
    let row = client
        .query_one(
            "SELECT coalesce(max(version), 0) FROM pop3d_migrations",
            &[],
        )
        .await?;
    Ok(row.get(0))
}
