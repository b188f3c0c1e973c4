//! Maildir as a POP3 store: one Maildir per user under a root directory.
//!
//! What the store promises (the README's Maildir section says the same):
//!
//! - **Listing.** Messages are the regular files in `new/` and `cur/`
//!   (names starting with `.` are not messages; links are never followed),
//!   in delivery order: the seconds and microseconds that start a Maildir
//!   name, else the modification time, then the name. Names are bytes: a
//!   name that is not UTF-8 is served like any other. Two names of one file
//!   (a move by link and unlink, interrupted) are one message.
//! - **Unique ids** never change and are never given to another message;
//!   see [`uids`] (`pop3d-uidlist`) for how, and for the ids imported from
//!   Dovecot or Courier.
//! - **Sizes** are in CRLF octets: the `,W=` field of a name when it has
//!   one, otherwise counted and cached per file (full path, device, inode,
//!   length and modification time).
//! - **Identity.** Each message is the file with the device, inode and
//!   length seen at login. A file renamed by another program meanwhile (a
//!   flag added, moved to `cur/`) is found again by its inode; a file that
//!   is gone, or changed length, is refused with `-ERR [SYS/PERM]`, and no
//!   other file is ever served in its place.
//! - **RETR** moves a message from `new/` to `cur/` as
//!   `<base>,W=<size>:2,<flags>S` (flags it already had are kept), by a
//!   rename that never replaces a file; if `cur/` has that name already
//!   the message stays in `new/`.
//! - **Deletion at QUIT** removes exactly the marked files (identified as
//!   above), or nothing of a message whose file is gone. The intent is
//!   first written to `pop3d-deleting` and synced; a crash before the
//!   journal is removed is finished at the next login (the client was told
//!   nothing, or `+OK`). A removal that fails during QUIT is reported
//!   (`-ERR [SYS/TEMP] n of m deleted messages could not be removed`), the
//!   journal is removed, and those messages stay in the maildrop for good:
//!   the reply and the disk agree, nothing is finished silently later. A
//!   filesystem cannot unlink several files atomically, so this is "all,
//!   or a reported part".
//! - **Policies** ([`policy`]): deletion removes, moves into a Maildir++
//!   folder or flags `T` (then `T`-flagged messages are not listed), as
//!   the journal's header says; `--expire` deletes messages retrieved
//!   days ago at login, through the same journal; `--login-delay` is
//!   checked after the password, before and under the lock.
//! - **Untrusted Maildirs.** A user who can write into their Maildir
//!   cannot make pop3d act outside it: every operation is relative to
//!   directory handles opened without following links, the journal and
//!   state files are created exclusively and never opened through a link,
//!   and a journal that does not parse or names anything but a plain file
//!   of `new/` or `cur/` is set aside and logged, never acted on.
//! - **`tmp/`**: files neither written nor read for 36 hours are removed
//!   at login (the Maildir convention).
//! - A per-user lock file (`pop3d.lock`, an OS file lock) keeps out other
//!   sessions of this and any other pop3d process; the OS drops it if the
//!   process dies, so a stale lock never blocks a user.
//! - **Password checks** that hash run on a fixed set of hashing threads,
//!   each reusing one Argon2 buffer, behind a bounded queue (see
//!   [`crate::hashing`]); a `{PLAIN}` or APOP secret that matches is
//!   accepted at once, without waiting for a hashing thread. Every failed
//!   check costs the same whatever the user's scheme, or if there is no
//!   such user: one Argon2id with the decoy's parameters is computed (the
//!   user's own hash when it has those parameters, the decoy otherwise),
//!   unless the queue is full, and then the attempt is shed before it
//!   costs anything. Either way the protocol core holds every failed
//!   login for its failure delay (2 s) counted from when the check was
//!   asked for, so the reply time does not depend on the path taken.

mod body;
mod fsx;
mod journal;
mod names;
mod policy;
mod uids;

#[cfg(test)]
mod model;
#[cfg(test)]
mod tests;

pub(crate) use policy::{DeletePolicy, Policy};
pub(crate) use uids::UidlSource;

use std::collections::HashMap;
use std::fs::{File, TryLockError};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::SystemTime;

use bytes::Bytes;
use pop3_proto::{Maildrop, MessageInfo, MessageRef, Refusal, ScramCredentials, SizeCounter, Uid};
use pop3_tokio::{AsyncBodySource, AsyncHandler, Credential, HandlerError, HandlerResult};

use crate::oauth::TokenValidator;
use crate::passwords::Passwords;
use crate::users::{Stored, Users};
use body::FileBody;
use fsx::{Dirs, Identity, Place, Sub};
use journal::{Disposal, Doomed};
use names::show;

const LOCK_FILE: &str = "pop3d.lock";

/// Size-cache entries kept before the cache starts over.
const SIZE_CACHE_MAX: usize = 100_000;

/// Where a cached size is valid: this very file (full path, device and
/// inode), unchanged (length, modification time).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SizeKey {
    path: Vec<u8>,
    dev: u64,
    ino: u64,
    len: u64,
    modified: (i64, u64),
}

/// All users' maildirs, shared by every connection.
#[derive(Debug)]
pub(crate) struct Maildirs {
    root: PathBuf,
    /// Replaced whole when the users file is reloaded (SIGHUP); a check
    /// uses the table it started with.
    users: RwLock<Arc<Users>>,
    uidl_source: UidlSource,
    sizes: Mutex<HashMap<SizeKey, u64>>,
    /// Files whose size was counted (not from a name, not cached).
    sizes_counted: AtomicU64,
    /// The password checks (hashing threads, decoy), as every store has.
    pub(super) passwords: Arc<Passwords>,
    /// Checks OAuth bearer tokens (SASL XOAUTH2, OAUTHBEARER), if configured.
    oauth: Option<TokenValidator>,
    /// Makes the SCRAM decoy keys of unknown users, so one unknown user
    /// always gets the same salt: kept in the Maildir root, so every pop3d
    /// process on it (behind one balancer, after a restart, under inetd)
    /// gives the same one.
    scram_secret: [u8; 32],
    policy: Policy,
}

impl Maildirs {
    /// The store under the default policy (for tests).
    #[cfg(test)]
    fn build(
        root: PathBuf,
        users: Users,
        uidl_source: UidlSource,
        oauth: Option<TokenValidator>,
    ) -> Arc<Self> {
        Self::new(root, users, uidl_source, oauth, Policy::default())
    }

    pub(crate) fn new(
        root: PathBuf,
        users: Users,
        uidl_source: UidlSource,
        oauth: Option<TokenValidator>,
        policy: Policy,
    ) -> Arc<Self> {
        let scram_secret = decoy_secret(&root);
        Arc::new(Self {
            root,
            users: RwLock::new(Arc::new(users)),
            uidl_source,
            sizes: Mutex::default(),
            sizes_counted: AtomicU64::new(0),
            passwords: Arc::new(Passwords::new()),
            oauth,
            scram_secret,
            policy,
        })
    }

    /// The users table now.
    fn users(&self) -> Arc<Users> {
        self.users
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces the users table (the users file was reloaded): logins from
    /// now on are checked against `users`; sessions already logged in go on.
    pub(crate) fn replace_users(&self, users: Users) {
        *self.users.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(users);
    }

    /// A handler for one connection.
    pub(crate) fn handler(self: &Arc<Self>) -> MaildirHandler {
        MaildirHandler {
            store: self.clone(),
            locked: None,
        }
    }

    /// Checks a credential: a bearer token against the OAuth issuer's
    /// keys, anything else against the users file by [`Passwords::check`]
    /// (with its decoy path for unknown users and failures).
    async fn check(self: &Arc<Self>, user: &str, credential: &Credential) -> HandlerResult<bool> {
        if let Credential::Bearer(token) = credential {
            // A token names its user; whether that user exists is not
            // learned from a refusal, so no decoy is needed.
            let (store, user, token) = (self.clone(), user.to_owned(), token.clone());
            return blocking(move || store.token_opens(&user, token.expose())).await;
        }
        let stored = self.users().get(user).cloned();
        Ok(self.passwords.check(stored, credential).await)
    }

    /// True if `token` is a valid access token issued for `user`, and
    /// `user` has a Maildir here (token users need no users-file entry).
    fn token_opens(&self, user: &str, token: &str) -> bool {
        let Some(validator) = &self.oauth else {
            return false;
        };
        match validator.user_of(token) {
            Ok(named) if named == user => {
                crate::users::valid_user(user) && self.root.join(user).is_dir()
            }
            Ok(named) => {
                tracing::info!(user, token_user = %named, "OAuth token issued for another user");
                false
            }
            Err(why) => {
                tracing::info!(user, %why, "OAuth token refused");
                false
            }
        }
    }

    /// The user's SCRAM-SHA-256 keys, or decoy keys (stable per user) for a
    /// user who has none, so that the exchange does not tell who exists.
    fn scram_keys(&self, user: &str) -> ScramCredentials {
        self.users()
            .get(user)
            .and_then(Stored::scram)
            .cloned()
            .unwrap_or_else(|| {
                ScramCredentials::decoy(&self.scram_secret, user, pop3_proto::MIN_SCRAM_ITERATIONS)
            })
    }

    /// A size counted before, if this exact file's is known.
    fn known_size(&self, key: &SizeKey) -> Option<u64> {
        self.sizes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .copied()
    }

    fn size_of(
        &self,
        key: SizeKey,
        file: impl FnOnce() -> io::Result<Option<File>>,
    ) -> io::Result<Option<u64>> {
        if let Some(size) = self.known_size(&key) {
            return Ok(Some(size));
        }
        let Some(mut file) = file()? else {
            return Ok(None);
        };
        let mut counter = SizeCounter::new();
        let mut buf = vec![0; 64 * 1024];
        loop {
            match file.read(&mut buf)? {
                0 => break,
                n => counter.push(&buf[..n]),
            }
        }
        let size = counter.finish();
        self.sizes_counted.fetch_add(1, Ordering::Relaxed);
        let mut sizes = self.sizes.lock().unwrap_or_else(|p| p.into_inner());
        if sizes.len() >= SIZE_CACHE_MAX {
            sizes.clear();
        }
        sizes.insert(key, size);
        Ok(Some(size))
    }
}

/// One message of a locked maildrop: where it was last seen, and which
/// file it is.
#[derive(Debug, Clone)]
struct Entry {
    sub: Sub,
    name: Vec<u8>,
    id: Identity,
    size: u64,
    /// Other names of the same file (an interrupted link-and-unlink move).
    links: Vec<(Sub, Vec<u8>)>,
}

/// A locked maildrop: the lock file (held while this lives) and its messages.
#[derive(Debug)]
struct Locked {
    place: Place,
    maildir: String,
    _lock: File,
    entries: Vec<Entry>,
    /// The entries' unique ids, in the same order.
    uids: Vec<Uid>,
    /// Entries whose body a RETR read to the end (kept only with `--expire`).
    retrieved: Option<Arc<Mutex<Vec<usize>>>>,
    /// The session reached QUIT: only then do its retrievals count (a body
    /// read out for sending may never have reached a client that vanished).
    quit: bool,
}

/// A message body being sent. For a RETR under an expiry policy, reading
/// it to the end records the message as retrieved.
#[derive(Debug)]
pub(crate) struct MessageBody {
    file: FileBody,
    retrieved: Option<(Arc<Mutex<Vec<usize>>>, usize)>,
}

impl AsyncBodySource for MessageBody {
    async fn next_chunk(&mut self) -> io::Result<Option<Bytes>> {
        let chunk = self.file.next_chunk().await?;
        if chunk.is_none() {
            if let Some((retrieved, index)) = self.retrieved.take() {
                retrieved
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(index);
            }
        }
        Ok(chunk)
    }
}

/// One connection's handler over [`Maildirs`].
#[derive(Debug)]
pub(crate) struct MaildirHandler {
    store: Arc<Maildirs>,
    locked: Option<Locked>,
}

fn internal(e: impl std::fmt::Display) -> HandlerError {
    HandlerError::internal(e.to_string())
}

/// Runs blocking filesystem or hashing work off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> HandlerResult<T> {
    tokio::task::spawn_blocking(f).await.map_err(internal)
}

impl AsyncHandler for MaildirHandler {
    type Body = MessageBody;

    async fn authenticate(&mut self, user: &str, credential: &Credential) -> HandlerResult<()> {
        // A refusal is held by the protocol core for its failure delay,
        // counted from when the check was asked for: shed or not, hashed
        // or not, the reply comes at the same time.
        if self.store.check(user, credential).await? {
            Ok(())
        } else {
            Err(Refusal::auth("invalid user name or password").into())
        }
    }

    async fn scram_credentials(&mut self, user: &str) -> HandlerResult<ScramCredentials> {
        Ok(self.store.scram_keys(user))
    }

    async fn lock(&mut self, user: &str) -> HandlerResult<Maildrop> {
        // A small settled Maildir is locked and listed here, in a few cheap
        // syscalls: a blocking-pool round trip would cost more than the
        // work. Anything that could wait on the disk goes to the pool.
        let inline = match lock_maildir(&self.store, user, SystemTime::now(), Pass::Inline) {
            Ok(Some(done)) => Some(done),
            Ok(None) => None,
            Err(e) => return Err(e),
        };
        let (locked, drop) = match inline {
            Some(done) => done,
            None => {
                let store = self.store.clone();
                let user = user.to_owned();
                blocking(move || lock_maildir(&store, &user, SystemTime::now(), Pass::Full))
                    .await??
                    .ok_or_else(|| internal("a full pass always finishes"))?
            }
        };
        self.locked = Some(locked);
        Ok(drop)
    }

    async fn open(&mut self, message: &MessageRef, top: Option<u64>) -> HandlerResult<Self::Body> {
        let locked = self
            .locked
            .as_mut()
            .ok_or_else(|| internal("open without a lock"))?;
        let index = (message.number as usize)
            .checked_sub(1)
            .filter(|&i| i < locked.entries.len())
            .ok_or_else(|| internal("message number out of range"))?;
        let entry = locked.entries[index].clone();
        let (place, maildir) = (locked.place.clone(), locked.maildir.clone());
        let retrieve = top.is_none();
        let (file, entry) = blocking(move || {
            let dirs = place.open().map_err(internal)?;
            open_entry(&dirs, entry, retrieve, &maildir)
        })
        .await??;
        let len = entry.id.len;
        locked.entries[index] = entry;
        Ok(MessageBody {
            file: FileBody::new(file, len),
            retrieved: locked
                .retrieved
                .as_ref()
                .filter(|_| retrieve)
                .map(|r| (r.clone(), index)),
        })
    }

    async fn commit(&mut self, deleted: &[MessageRef]) -> HandlerResult<()> {
        let locked = self
            .locked
            .as_mut()
            .ok_or_else(|| internal("commit without a lock"))?;
        locked.quit = true;
        let mut doomed = Vec::new();
        let mut uids = Vec::new();
        let mut messages = 0;
        for m in deleted {
            let Some(e) = (m.number as usize)
                .checked_sub(1)
                .and_then(|i| locked.entries.get(i))
            else {
                return Err(internal("message number out of range"));
            };
            messages += 1;
            uids.push((m.uid.clone(), e.id));
            doomed.extend(doomed_of(e));
        }
        if doomed.is_empty() {
            return Ok(());
        }
        let (place, maildir) = (locked.place.clone(), locked.maildir.clone());
        let policy = self.store.policy.delete.clone();
        blocking(move || {
            let dirs = place.open().map_err(|e| {
                tracing::error!(maildir, error = %e, "cannot open the maildir to delete");
                internal(e)
            })?;
            delete(&dirs, doomed, &uids, messages, &maildir, &policy)
        })
        .await?
    }

    async fn unlock(&mut self) {
        // Dropping the lock file releases the OS lock: the retrieval
        // times are saved first, under it.
        let Some(locked) = self.locked.take() else {
            return;
        };
        if locked.retrieved.is_some() && locked.quit {
            let _ = blocking(move || save_retrievals(&locked, SystemTime::now())).await;
        }
    }
}

/// Records the messages this session retrieved (the first retrieval of
/// each counts), for expiry.
fn save_retrievals(locked: &Locked, now: SystemTime) {
    let Some(retrieved) = &locked.retrieved else {
        return;
    };
    let indices = std::mem::take(&mut *retrieved.lock().unwrap_or_else(|p| p.into_inner()));
    if indices.is_empty() {
        return;
    }
    let dirs = match locked.place.open() {
        Ok(dirs) => dirs,
        Err(e) => {
            tracing::warn!(maildir = locked.maildir, error = %e, "cannot record retrievals");
            return;
        }
    };
    let mut times = policy::load_retrieved(&dirs, &locked.maildir);
    let secs = policy::unix_secs(now);
    let before = times.len();
    for i in indices {
        if let Some(uid) = locked.uids.get(i) {
            times.entry(uid.clone()).or_insert(secs);
        }
    }
    if times.len() != before {
        if let Err(e) = policy::save_retrieved(&dirs, &times) {
            let maildir = &locked.maildir;
            tracing::warn!(maildir, error = %e, "cannot record retrieval times; those messages do not expire yet");
        }
    }
}

/// Where the SCRAM decoy secret is kept, in the Maildir root (a name no
/// user can have: user names never start with `.`).
const DECOY_SECRET: &str = ".pop3d-decoy-secret";

/// The secret of the SCRAM decoys, from `root`'s [`DECOY_SECRET`] file,
/// made (random, mode 0600, written whole before it is linked into place)
/// by the first process that needs it. If the root cannot hold it, a
/// random one for this process, with a warning: unknown users then get
/// other salts from other processes.
fn decoy_secret(root: &std::path::Path) -> [u8; 32] {
    let path = root.join(DECOY_SECRET);
    let read = |path: &std::path::Path| -> Option<[u8; 32]> {
        let text = std::fs::read(path).ok()?;
        text.get(..32)?.try_into().ok()
    };
    if let Some(secret) = read(&path) {
        return secret;
    }
    let mut secret = [0u8; 32];
    argon2::password_hash::rand_core::RngCore::fill_bytes(
        &mut argon2::password_hash::rand_core::OsRng,
        &mut secret,
    );
    let made = (|| -> io::Result<()> {
        let tmp = tempfile::Builder::new()
            .prefix(".pop3d-decoy-secret.")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .tempfile_in(root)?;
        std::io::Write::write_all(&mut tmp.as_file(), &secret)?;
        tmp.as_file().sync_all()?;
        // Linked, not renamed: of two processes racing, the first wins and
        // the other reads its secret.
        std::fs::hard_link(tmp.path(), &path)
    })();
    match made {
        Ok(()) => secret,
        Err(e) => read(&path).unwrap_or_else(|| {
            tracing::warn!(path = %path.display(), error = %e, "cannot keep the SCRAM decoy secret; this process uses its own");
            secret
        }),
    }
}

/// How much of a login [`lock_maildir`] may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// All of it (on the blocking pool).
    Full,
    /// Only what cannot wait on the disk, on a session's own thread: a
    /// small Maildir with nothing to write (no login delay or expiry
    /// policy, no interrupted deletion, nothing in `tmp/`, every unique id
    /// recorded, every size known); `None` otherwise, with nothing changed.
    Inline,
}

/// The largest `new/` or `cur/` (as the directory's own size) an inline
/// pass lists: some hundreds of names on common filesystems.
const INLINE_FOLDER_SIZE: u64 = 32 * 1024;

/// Takes the user's lock (refusing a login within the login delay, which
/// it then records), finishes a deletion a crash interrupted, cleans
/// `tmp/`, deletes expired messages, and lists the maildrop. `None` only
/// from a [`Pass::Inline`] that found work to leave to a full pass.
fn lock_maildir(
    store: &Maildirs,
    user: &str,
    now: SystemTime,
    pass: Pass,
) -> HandlerResult<Option<(Locked, Maildrop)>> {
    let inline = pass == Pass::Inline;
    if inline && (store.policy.login_delay.is_some() || store.policy.expire_days.is_some()) {
        return Ok(None);
    }
    let path = store.root.join(user);
    let maildir = path.display().to_string();
    let dirs = Dirs::open(&path).map_err(|e| {
        tracing::error!(maildir, error = %e, "cannot open the maildir");
        internal(e)
    })?;
    if inline && !dirs.smaller_than(INLINE_FOLDER_SIZE).map_err(internal)? {
        return Ok(None);
    }
    let delay = store.policy.login_delay;
    // Checked before the lock too: a session of this user still running
    // (here or in another process) is a login too recent, not IN-USE.
    if let Some(wait) = delay.and_then(|d| policy::login_wait(&dirs, d, now)) {
        return Err(HandlerError::LoginDelay(wait));
    }
    let served_before = dirs.has(LOCK_FILE).map_err(internal)?;
    if inline && !served_before {
        // A first login chooses where unique ids come from, by whether
        // the lock file exists: taking it here would decide for the pass
        // that does the work.
        return Ok(None);
    }
    let lock = dirs.open_lock(LOCK_FILE).map_err(internal)?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            return Err(Refusal::in_use("maildrop is locked by another session").into())
        }
        Err(TryLockError::Error(e)) => return Err(internal(e)),
    }
    // Under the lock: of two logins that both passed the check above, the
    // second sees the first's record (the lock is released as the
    // function returns), which is written once the maildrop is listed.
    if let Some(wait) = delay.and_then(|d| policy::login_wait(&dirs, d, now)) {
        return Err(HandlerError::LoginDelay(wait));
    }
    if inline {
        // An interrupted deletion to finish, or tmp/ to clean: a full pass.
        if dirs.has(journal::JOURNAL).map_err(internal)?
            || !dirs.tmp_is_empty().map_err(internal)?
        {
            return Ok(None);
        }
    } else {
        journal::recover(&dirs, &maildir).map_err(internal)?;
        match dirs.clean_tmp(now) {
            Ok(0) => {}
            Ok(removed) => {
                tracing::info!(maildir, removed, "removed tmp/ files older than 36 hours")
            }
            Err(e) => tracing::warn!(maildir, error = %e, "cannot clean tmp/"),
        }
    }
    let Some((mut entries, mut ids)) = list(store, &dirs, &path, served_before, &maildir, pass)?
    else {
        return Ok(None);
    };
    let retrieved = match store.policy.expire_days {
        None => None,
        Some(days) => {
            if expire(store, &dirs, &entries, &ids, days, now, &maildir)? {
                (entries, ids) = list(store, &dirs, &path, served_before, &maildir, pass)?
                    .ok_or_else(|| internal("a full pass always lists"))?;
            }
            Some(Arc::default())
        }
    };
    let listing = entries.iter().zip(&ids).map(|(e, uid)| MessageInfo {
        size: e.size,
        uid: uid.clone(),
    });
    let drop = Maildrop::new(listing).map_err(internal)?;
    if delay.is_some() {
        policy::record_login(&dirs, now).map_err(|e| {
            tracing::error!(maildir, error = %e, "cannot record the login time");
            internal(e)
        })?;
    }
    Ok(Some((
        Locked {
            place: dirs.place(&path).map_err(internal)?,
            maildir,
            _lock: lock,
            entries,
            uids: ids,
            retrieved,
            quit: false,
        },
        drop,
    )))
}

/// The maildrop's messages and their unique ids.
fn list(
    store: &Maildirs,
    dirs: &Dirs,
    path: &std::path::Path,
    served_before: bool,
    maildir: &str,
    pass: Pass,
) -> HandlerResult<Option<(Vec<Entry>, Vec<Uid>)>> {
    let entries = match scan(store, dirs, path, pass) {
        Ok(Some(entries)) => entries,
        Ok(None) => return Ok(None),
        Err(e) => return Err(internal(e)),
    };
    let wants: Vec<uids::Want<'_>> = entries
        .iter()
        .map(|e| uids::Want {
            name: &e.name,
            ino: e.id.ino,
            len: e.id.len,
        })
        .collect();
    let dry = pass == Pass::Inline;
    let ids = uids::assign(dirs, &wants, store.uidl_source, served_before, maildir, dry).map_err(
        |e| {
            tracing::error!(maildir, error = %e, "cannot record unique ids");
            internal(e)
        },
    )?;
    Ok(ids.map(|ids| (entries, ids)))
}

/// Deletes (by the delete policy, journaled like a QUIT) the messages
/// retrieved `days` or more days ago, and forgets the retrieval times of
/// messages no longer there. True if any message was deleted.
fn expire(
    store: &Maildirs,
    dirs: &Dirs,
    entries: &[Entry],
    ids: &[Uid],
    days: u32,
    now: SystemTime,
    maildir: &str,
) -> HandlerResult<bool> {
    let mut times = policy::load_retrieved(dirs, maildir);
    let before = times.len();
    let live: std::collections::HashSet<&Uid> = ids.iter().collect();
    times.retain(|uid, _| live.contains(uid));
    let mut doomed = Vec::new();
    let mut expired = Vec::new();
    for (e, uid) in entries.iter().zip(ids) {
        if times
            .get(uid)
            .is_some_and(|&secs| policy::expired(secs, days, now))
        {
            expired.push((uid.clone(), e.id));
            doomed.extend(doomed_of(e));
        }
    }
    if !expired.is_empty() {
        let count = expired.len();
        tracing::info!(maildir, count, days, policy = %store.policy.delete, "expiring retrieved messages");
        if let Err(e) = delete(dirs, doomed, &expired, count, maildir, &store.policy.delete) {
            // As at QUIT: what could not be deleted stays, for good.
            tracing::warn!(maildir, error = %e, "expiry did not delete every message");
        }
        for (uid, _) in &expired {
            times.remove(uid);
        }
    }
    if times.len() != before {
        if let Err(e) = policy::save_retrieved(dirs, &times) {
            tracing::warn!(maildir, error = %e, "cannot save the retrieval times");
        }
    }
    Ok(!expired.is_empty())
}

/// The files of one message: its name and any other names of the same file.
fn doomed_of(e: &Entry) -> impl Iterator<Item = Doomed> + '_ {
    std::iter::once((e.sub, &e.name))
        .chain(e.links.iter().map(|(sub, name)| (*sub, name)))
        .map(|(sub, name)| Doomed {
            sub,
            name: name.clone(),
            id: e.id,
        })
}

/// `new/` and `cur/`, in delivery order, with sizes.
/// `None` from an inline pass that would have to count a size.
fn scan(
    store: &Maildirs,
    dirs: &Dirs,
    path: &std::path::Path,
    pass: Pass,
) -> io::Result<Option<Vec<Entry>>> {
    let mut found = Vec::new();
    let hide_trashed = store.policy.delete == DeletePolicy::Flag;
    for sub in Sub::BOTH {
        for (name, st) in dirs.list(sub)? {
            if hide_trashed && names::has_flag(&name, b'T') {
                continue; // deleted under the flag policy
            }
            let unique = names::unique_part(&name);
            let delivered = names::delivery_time(unique)
                .unwrap_or((st.st_mtime as u64, (st.st_mtime_nsec / 1000) as u32));
            found.push((delivered, name, sub, st));
        }
    }
    found.sort_by(|a, b| (a.0, &a.1, a.2).cmp(&(b.0, &b.1, b.2)));
    let mut entries: Vec<Entry> = Vec::with_capacity(found.len());
    let mut by_file: HashMap<(u64, u64), usize> = HashMap::new();
    for (_, name, sub, st) in found {
        let id = Identity::of(&st);
        if let Some(&i) = by_file.get(&(id.dev, id.ino)) {
            // One file under two names: one message, at its cur/ name.
            let e = &mut entries[i];
            tracing::info!(name = %show(&name), other = %show(&e.name), "two names of one file; one message");
            if sub == Sub::Cur && e.sub == Sub::New {
                let old = (
                    std::mem::replace(&mut e.sub, sub),
                    std::mem::replace(&mut e.name, name),
                );
                e.links.push(old);
            } else {
                e.links.push((sub, name));
            }
            continue;
        }
        let size = match names::size_field(&name) {
            Some(w) => w,
            None => {
                let mut full = path.as_os_str().as_bytes().to_vec();
                full.extend_from_slice(format!("/{}/", sub.as_str()).as_bytes());
                full.extend_from_slice(&name);
                #[allow(clippy::unnecessary_cast)] // the field types differ by target
                let key = SizeKey {
                    path: full,
                    dev: id.dev,
                    ino: id.ino,
                    len: id.len,
                    modified: (st.st_mtime as i64, st.st_mtime_nsec as u64),
                };
                if pass == Pass::Inline {
                    match store.known_size(&key) {
                        Some(size) => size,
                        None => return Ok(None),
                    }
                } else {
                    match store.size_of(key, || dirs.open_message(sub, &name, &id))? {
                        Some(size) => size,
                        None => continue, // gone meanwhile
                    }
                }
            }
        };
        by_file.insert((id.dev, id.ino), entries.len());
        entries.push(Entry {
            sub,
            name,
            id,
            size,
            links: Vec::new(),
        });
    }
    Ok(Some(entries))
}

/// Opens exactly the listed file (found again if another program renamed
/// it), and for RETR moves it from `new/` to `cur/`, seen.
fn open_entry(
    dirs: &Dirs,
    mut e: Entry,
    retrieve: bool,
    maildir: &str,
) -> HandlerResult<(File, Entry)> {
    let gone =
        || -> HandlerError { Refusal::sys_perm("message was removed by another program").into() };
    let file = match dirs.open_message(e.sub, &e.name, &e.id).map_err(internal)? {
        Some(f) => f,
        None => {
            let Some((sub, name)) = dirs.find(&e.id, (e.sub, &e.name)).map_err(internal)? else {
                return Err(gone());
            };
            e.sub = sub;
            e.name = name;
            dirs.open_message(e.sub, &e.name, &e.id)
                .map_err(internal)?
                .ok_or_else(gone)?
        }
    };
    if file.metadata().map_err(internal)?.len() != e.id.len {
        return Err(Refusal::sys_perm("message was changed by another program").into());
    }
    if retrieve && e.sub == Sub::New {
        let target = names::cur_name(&e.name, e.size);
        match dirs.rename_noreplace(Sub::New, &e.name, Sub::Cur, &target) {
            Ok(true) => {
                e.sub = Sub::Cur;
                e.name = target;
            }
            Ok(false) => tracing::info!(
                maildir,
                name = %show(&target),
                "cur/ already has this name; the message stays in new/"
            ),
            Err(err) => {
                tracing::warn!(maildir, name = %show(&e.name), error = %err, "cannot move to cur/")
            }
        }
    }
    Ok((file, e))
}

/// Deletes the marked files at QUIT (or expired ones at login) by the
/// delete policy: journaled first, then removed, moved or flagged one by
/// one (each only if it is still that file); the reply says exactly what
/// happened, and the journal is removed either way, so that a failure
/// reported now is not undone silently at the next login.
fn delete(
    dirs: &Dirs,
    doomed: Vec<Doomed>,
    marked_ids: &[(pop3_proto::Uid, Identity)],
    messages: usize,
    maildir: &str,
    policy: &DeletePolicy,
) -> HandlerResult<()> {
    // Where each file is now (another program may have renamed it).
    let mut resolved = Vec::with_capacity(doomed.len());
    for d in doomed {
        if let Some((sub, name)) = dirs.find(&d.id, (d.sub, &d.name)).map_err(internal)? {
            resolved.push(Doomed {
                sub,
                name,
                id: d.id,
            });
        }
    }
    if resolved.is_empty() {
        let gone: Vec<_> = marked_ids.iter().map(|(uid, _)| uid.clone()).collect();
        if let Err(e) = uids::retire(dirs, &gone) {
            tracing::warn!(maildir, error = %e, "cannot retire the removed messages' ids now; the next login does");
        }
        return Ok(());
    }
    let how = match Disposal::open(dirs, policy) {
        Ok(how) => how,
        Err(e) => {
            tracing::error!(maildir, error = %e, policy = %policy, "cannot open the folder for deleted messages; nothing deleted");
            return Err(Refusal::sys_temp(
                "no deleted message was removed (cannot open the folder for them)",
            )
            .into());
        }
    };
    if let Err(e) = journal::write(dirs, policy, &resolved) {
        tracing::error!(maildir, error = %e, "cannot write the delete journal; nothing deleted");
        let _ = dirs.remove_file(&format!("{}.tmp", journal::JOURNAL));
        return Err(Refusal::sys_temp(
            "no deleted message was removed (cannot journal the deletion)",
        )
        .into());
    }
    let mut failed = Vec::new();
    for d in &resolved {
        if let Err(e) = journal::dispose(dirs, d, &how) {
            tracing::error!(maildir, name = %show(&d.name), error = %e, policy = %policy, "cannot delete a message");
            failed.push(d.id);
        }
    }
    if let Err(e) = how.sync(dirs) {
        tracing::warn!(maildir, error = %e, "cannot sync a folder after deletion");
    }
    let removed: Vec<pop3_proto::Uid> = marked_ids
        .iter()
        .filter(|(_, id)| !failed.contains(id))
        .map(|(uid, _)| uid.clone())
        .collect();
    if let Err(e) = uids::retire(dirs, &removed) {
        tracing::warn!(maildir, error = %e, "cannot retire the removed messages' ids now; the next login does");
    }
    let cleared = journal::clear(dirs);
    if let Err(e) = &cleared {
        tracing::error!(maildir, error = %e, "cannot remove the delete journal");
    }
    if failed.is_empty() {
        return Ok(());
    }
    failed.sort_by_key(|id| (id.dev, id.ino));
    failed.dedup();
    let text = if cleared.is_ok() {
        format!(
            "{} of {messages} deleted messages could not be removed; they stay in the maildrop",
            failed.len()
        )
    } else {
        format!(
            "{} of {messages} deleted messages could not be removed yet; the next login retries",
            failed.len()
        )
    };
    Err(Refusal::sys_temp(text).into())
}

/// A user's maildrop locked for export (`pop3d import`): its messages with
/// the unique ids this store serves them with, each opened on demand. The
/// Maildir's lock is held while this lives, so no session changes it.
#[derive(Debug)]
pub(crate) struct Export {
    locked: Locked,
}

impl Export {
    /// Locks `user`'s Maildir and lists it as a login would (finishing an
    /// interrupted deletion, assigning unique ids as serving does).
    pub(crate) fn lock(store: &Maildirs, user: &str) -> HandlerResult<Self> {
        let (locked, _) = lock_maildir(store, user, SystemTime::now(), Pass::Full)?
            .ok_or_else(|| internal("a full pass always finishes"))?;
        Ok(Self { locked })
    }

    /// The messages' unique ids, in listing order.
    pub(crate) fn uids(&self) -> &[Uid] {
        &self.locked.uids
    }

    /// Opens message `index` (0-based, in listing order), exactly the file
    /// listed; it is not marked as seen.
    pub(crate) fn open(&self, index: usize) -> HandlerResult<File> {
        let entry = self
            .locked
            .entries
            .get(index)
            .cloned()
            .ok_or_else(|| internal("message index out of range"))?;
        let dirs = self.locked.place.open().map_err(internal)?;
        let (file, _) = open_entry(&dirs, entry, false, &self.locked.maildir)?;
        Ok(file)
    }
}
