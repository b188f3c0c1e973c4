//! Maildir as a POP3 store: one Maildir per user under a root directory.
//!
//! - Messages come from `new/` and `cur/` in delivery order (the seconds and
//!   microseconds that start a Maildir name, then the name).
//! - Unique ids are the Maildir base name up to its first `,` or `:`, which
//!   never changes when flags or size fields are added; a name that is not a
//!   valid UIDL value (or one shared by two files) is replaced by a stable
//!   digest of the file's base name.
//! - A file renamed by another program during the session (a flag added,
//!   moved to `cur/`) is found again by its unique part.
//! - Sizes are in CRLF octets: the `,W=` field when the name has one,
//!   otherwise counted once and cached while the file stays the same.
//! - A message retrieved with RETR moves from `new/` to `cur/`, flagged seen.
//! - A per-user lock file (`pop3d.lock`, an OS file lock) keeps out other
//!   sessions of this and any other pop3d process; the OS drops it if the
//!   process dies, so a stale lock never blocks a user.
//! - Deletion at QUIT is all or nothing: the files (path and unique part) are
//!   first written to `pop3d-deleting` (atomically, synced), then removed,
//!   then the journal. A crash in between is finished at the next login,
//!   before the maildrop is listed.
//! - Password checks run on blocking threads, a few at a time; an unknown
//!   user costs the same hash as a known one, so timing does not tell them
//!   apart.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use md5::{Digest, Md5};
use pop3_proto::{Maildrop, MessageInfo, MessageRef, Refusal, SizeCounter, Uid};
use pop3_tokio::{AsyncHandler, Credential, HandlerError, HandlerResult};

use crate::users::{Stored, Users};

const LOCK_FILE: &str = "pop3d.lock";
const DELETE_LOG: &str = "pop3d-deleting";

/// Size-cache entries kept before the cache starts over.
const SIZE_CACHE_MAX: usize = 100_000;

/// Where a cached size is valid: the same file, unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SizeKey {
    unique: String,
    len: u64,
    modified: Option<SystemTime>,
}

/// All users' maildirs, shared by every connection.
#[derive(Debug)]
pub(crate) struct Maildirs {
    root: PathBuf,
    users: Users,
    sizes: Mutex<HashMap<SizeKey, u64>>,
    /// Password hashes are slow and big (Argon2id: ~19 MiB): a few at a time.
    hashing: tokio::sync::Semaphore,
    /// Checked for unknown users, so they cost what known ones do.
    decoy: Stored,
}

impl Maildirs {
    pub(crate) fn new(root: PathBuf, users: Users) -> Arc<Self> {
        let parallel = std::thread::available_parallelism().map_or(2, |n| n.get());
        let decoy = crate::users::passwd_line("decoy", "no password matches this")
            .ok()
            .and_then(|line| Stored::parse(line.split_once(':')?.1).ok())
            .unwrap_or_else(|| Stored::Plain(String::new().into()));
        Arc::new(Self {
            root,
            users,
            sizes: Mutex::default(),
            hashing: tokio::sync::Semaphore::new(parallel * 2),
            decoy,
        })
    }

    /// A handler for one connection.
    pub(crate) fn handler(self: &Arc<Self>) -> MaildirHandler {
        MaildirHandler {
            store: self.clone(),
            locked: None,
        }
    }

    fn cached_size(&self, key: &SizeKey) -> Option<u64> {
        self.sizes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .copied()
    }

    fn cache_size(&self, key: SizeKey, size: u64) {
        let mut sizes = self.sizes.lock().unwrap_or_else(|p| p.into_inner());
        if sizes.len() >= SIZE_CACHE_MAX {
            sizes.clear();
        }
        sizes.insert(key, size);
    }
}

/// One message of a locked maildrop.
#[derive(Debug, Clone)]
struct Entry {
    path: PathBuf,
    unique: String,
    in_new: bool,
    size: u64,
}

/// A locked maildrop: the lock file (held while this lives) and its messages.
#[derive(Debug)]
struct Locked {
    dir: PathBuf,
    _lock: File,
    entries: Vec<Entry>,
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
    type Body = pop3_tokio::TokioBody<tokio::fs::File>;

    async fn authenticate(&mut self, user: &str, credential: &Credential) -> HandlerResult<()> {
        let _turn = self.store.hashing.acquire().await.map_err(internal)?;
        let store = self.store.clone();
        let (user, credential) = (user.to_owned(), credential.clone());
        let ok = blocking(move || match (store.users.get(&user), &credential) {
            (Some(stored), Credential::Password(p)) => stored.verify(p.expose()),
            (Some(stored), Credential::Apop(a)) => stored.verify_apop(a),
            (None, Credential::Password(p)) => {
                let _ = store.decoy.verify(p.expose());
                false
            }
            (None, Credential::Apop(_)) => false,
        })
        .await?;
        if ok {
            Ok(())
        } else {
            Err(Refusal::auth("invalid user name or password").into())
        }
    }

    async fn lock(&mut self, user: &str) -> HandlerResult<Maildrop> {
        let store = self.store.clone();
        let dir = store.root.join(user);
        let (locked, drop) = blocking(move || lock_maildir(&store, dir)).await??;
        self.locked = Some(locked);
        Ok(drop)
    }

    async fn open(&mut self, message: &MessageRef, top: Option<u64>) -> HandlerResult<Self::Body> {
        let locked = self
            .locked
            .as_mut()
            .ok_or_else(|| internal("open without a lock"))?;
        let entry = locked
            .entries
            .get_mut(message.number as usize - 1)
            .ok_or_else(|| internal("message number out of range"))?;
        let file = match tokio::fs::File::open(&entry.path).await {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // Renamed by another program (a flag, new/ -> cur/)? Find it again.
                let (dir, unique) = (locked.dir.clone(), entry.unique.clone());
                let found = blocking(move || find_by_unique(&dir, &unique)).await?;
                let Some((path, in_new)) = found.map_err(internal)? else {
                    return Err(Refusal::sys_perm("message was removed by another program").into());
                };
                entry.path = path;
                entry.in_new = in_new;
                tokio::fs::File::open(&entry.path).await.map_err(internal)?
            }
            Err(e) => return Err(internal(e)),
        };
        if top.is_none() && entry.in_new {
            // Retrieved: new/ -> cur/, seen, with its size in the name.
            let name = entry
                .path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            let sized = if name.contains(",W=") {
                name.to_owned()
            } else {
                format!("{name},W={}", entry.size)
            };
            let target = locked.dir.join("cur").join(format!("{sized}:2,S"));
            if tokio::fs::rename(&entry.path, &target).await.is_ok() {
                entry.path = target;
                entry.in_new = false;
            }
        }
        Ok(pop3_tokio::tokio_body(file))
    }

    async fn commit(&mut self, deleted: &[MessageRef]) -> HandlerResult<()> {
        let locked = self
            .locked
            .as_ref()
            .ok_or_else(|| internal("commit without a lock"))?;
        if deleted.is_empty() {
            return Ok(());
        }
        let dir = locked.dir.clone();
        let doomed: Vec<Entry> = deleted
            .iter()
            .filter_map(|m| locked.entries.get(m.number as usize - 1))
            .cloned()
            .collect();
        blocking(move || delete_all_or_nothing(&dir, &doomed))
            .await?
            .map_err(internal)
    }

    async fn unlock(&mut self) {
        // Dropping the lock file releases the OS lock.
        self.locked = None;
    }
}

/// Takes the user's lock, finishes an interrupted deletion, and lists the maildrop.
fn lock_maildir(store: &Maildirs, dir: PathBuf) -> HandlerResult<(Locked, Maildrop)> {
    for sub in ["new", "cur", "tmp"] {
        fs::create_dir_all(dir.join(sub)).map_err(internal)?;
    }
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(LOCK_FILE))
        .map_err(internal)?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            return Err(Refusal::in_use("maildrop is locked by another session").into())
        }
        Err(TryLockError::Error(e)) => return Err(internal(e)),
    }
    finish_interrupted_delete(&dir).map_err(internal)?;
    let entries = scan(store, &dir).map_err(internal)?;
    let mut seen = HashSet::new();
    let listing: Vec<MessageInfo> = entries
        .iter()
        .map(|e| {
            let uid = uid_for(&e.unique, &base_name(&e.path), &mut seen);
            MessageInfo { size: e.size, uid }
        })
        .collect();
    let drop = Maildrop::new(listing).map_err(internal)?;
    Ok((
        Locked {
            dir,
            _lock: lock,
            entries,
        },
        drop,
    ))
}

/// The UIDL value of a message: its unique name if valid and not taken,
/// otherwise a digest of its unique part (which no rename changes: flags
/// and size fields come after it), distinguished by the base name and a
/// counter if even that repeats.
fn uid_for(unique: &str, base: &str, seen: &mut HashSet<String>) -> Uid {
    let digest = |text: &str| -> Uid {
        let hex: String = Md5::digest(text.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Uid::new(format!("md5-{hex}")).expect("hex is a valid uid")
    };
    let mut uid = Uid::new(unique).unwrap_or_else(|_| digest(unique));
    if seen.contains(uid.as_str()) {
        uid = digest(base);
    }
    let mut n = 0;
    while seen.contains(uid.as_str()) {
        n += 1;
        uid = digest(&format!("{base}#{n}"));
    }
    seen.insert(uid.as_str().to_owned());
    uid
}

/// A file's Maildir base name: its name without the `:2,` flags.
fn base_name(path: &Path) -> String {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    name.split(':').next().unwrap_or(name).to_owned()
}

/// The file in `new/` or `cur/` with this unique part, if exactly one.
fn find_by_unique(dir: &Path, unique: &str) -> io::Result<Option<(PathBuf, bool)>> {
    let mut found = None;
    for (sub, in_new) in [("new", true), ("cur", false)] {
        for item in fs::read_dir(dir.join(sub))? {
            let item = item?;
            if item.file_name().to_str().map(unique_part) == Some(unique) {
                if found.is_some() {
                    return Ok(None);
                }
                found = Some((item.path(), in_new));
            }
        }
    }
    Ok(found)
}

/// `new/` and `cur/`, in delivery order, with sizes.
fn scan(store: &Maildirs, dir: &Path) -> io::Result<Vec<Entry>> {
    let mut found = Vec::new();
    for (sub, in_new) in [("new", true), ("cur", false)] {
        for item in fs::read_dir(dir.join(sub))? {
            let item = item?;
            let name = item.file_name();
            let Some(name) = name.to_str() else { continue };
            // Not a message (or a name that would break the journal's lines).
            if name.starts_with('.') || name.contains(['\n', '\t']) || !item.file_type()?.is_file()
            {
                continue;
            }
            let meta = item.metadata()?;
            let unique = unique_part(name).to_owned();
            let delivered = delivery_time(&unique, &meta);
            found.push((
                delivered,
                name.to_owned(),
                item.path(),
                unique,
                in_new,
                meta,
            ));
        }
    }
    found.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    found
        .into_iter()
        .map(|(_, name, path, unique, in_new, meta)| {
            let size = match size_field(&name) {
                Some(w) => w,
                None => {
                    let key = SizeKey {
                        unique: unique.clone(),
                        len: meta.len(),
                        modified: meta.modified().ok(),
                    };
                    match store.cached_size(&key) {
                        Some(size) => size,
                        None => {
                            let size = count_size(&path)?;
                            store.cache_size(key, size);
                            size
                        }
                    }
                }
            };
            Ok(Entry {
                path,
                unique,
                in_new,
                size,
            })
        })
        .collect()
}

/// The stable part of a Maildir name: up to the first `,` (size fields) or `:` (flags).
fn unique_part(name: &str) -> &str {
    name.split([',', ':']).next().unwrap_or(name)
}

/// Delivery time as (seconds, microseconds): from a Maildir name
/// (`1700000000.M123456P42.host`: `M` carries the microseconds), else the
/// file's modification time.
fn delivery_time(unique: &str, meta: &fs::Metadata) -> (u64, u32) {
    let mut parts = unique.split('.');
    if let Some(secs) = parts.next().and_then(|t| t.parse().ok()) {
        let micros = parts
            .next()
            .and_then(|p| p.strip_prefix('M'))
            .and_then(|p| {
                let digits = p.bytes().take_while(u8::is_ascii_digit).count();
                p[..digits].parse().ok()
            })
            .unwrap_or(0);
        return (secs, micros);
    }
    meta.modified()
        .ok()
        .and_then(|m| m.duration_since(UNIX_EPOCH).ok())
        .map_or((0, 0), |d| (d.as_secs(), d.subsec_micros()))
}

/// The `,W=` (CRLF size) field of a Maildir name.
fn size_field(name: &str) -> Option<u64> {
    let base = name.split(':').next()?;
    base.split(',')
        .find_map(|f| f.strip_prefix("W=")?.parse().ok())
}

/// Counts the CRLF size of a message file.
fn count_size(path: &Path) -> io::Result<u64> {
    let mut file = File::open(path)?;
    let mut counter = SizeCounter::new();
    let mut buf = vec![0; 64 * 1024];
    loop {
        match file.read(&mut buf)? {
            0 => return Ok(counter.finish()),
            n => counter.push(&buf[..n]),
        }
    }
}

/// Deletes these messages, all or none: the intent is made durable first,
/// so a crash midway is finished at the next login.
fn delete_all_or_nothing(dir: &Path, doomed: &[Entry]) -> io::Result<()> {
    let log = dir.join(DELETE_LOG);
    let tmp = dir.join(format!("{DELETE_LOG}.tmp"));
    {
        let mut f = File::create(&tmp)?;
        for e in doomed {
            let relative = e.path.strip_prefix(dir).unwrap_or(&e.path);
            writeln!(f, "{}\t{}", relative.display(), e.unique)?;
        }
        f.sync_all()?;
    }
    fs::rename(&tmp, &log)?;
    sync_dir(dir)?;
    finish_interrupted_delete(dir)
}

/// Carries out a journaled deletion, if there is one. Each journal line is
/// `path<TAB>unique`: the file at `path`, or, if another program renamed it
/// meanwhile, the one file whose unique part is `unique`.
fn finish_interrupted_delete(dir: &Path) -> io::Result<()> {
    let log = dir.join(DELETE_LOG);
    let text = match fs::read_to_string(&log) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for line in text.lines() {
        let Some((path, unique)) = line.split_once('\t') else {
            continue;
        };
        let at = dir.join(path);
        let target = if at.exists() {
            Some(at)
        } else {
            find_by_unique(dir, unique)?.map(|(p, _)| p)
        };
        if let Some(target) = target {
            match fs::remove_file(target) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    sync_dir(&dir.join("new"))?;
    sync_dir(&dir.join("cur"))?;
    fs::remove_file(&log)?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A maildir root with user `u` (password `pw`), and a runtime to drive
    /// the handler with.
    pub(super) struct Fixture {
        pub(super) root: tempfile::TempDir,
        pub(super) store: Arc<Maildirs>,
        pub(super) rt: tokio::runtime::Runtime,
    }

    impl Fixture {
        pub(super) fn new() -> Self {
            let root = tempfile::tempdir().unwrap();
            for sub in ["new", "cur", "tmp"] {
                fs::create_dir_all(root.path().join("u").join(sub)).unwrap();
            }
            let users = Users::single("u", Stored::Plain("pw".to_owned().into()));
            let store = Maildirs::new(root.path().to_owned(), users);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            Self { root, store, rt }
        }

        pub(super) fn dir(&self) -> PathBuf {
            self.root.path().join("u")
        }

        pub(super) fn write(&self, rel: &str, body: &[u8]) {
            fs::write(self.dir().join(rel), body).unwrap();
        }

        /// Names in `new/` and `cur/`, as `sub/name`, sorted.
        pub(super) fn files(&self) -> Vec<String> {
            let mut names = Vec::new();
            for sub in ["new", "cur"] {
                for e in fs::read_dir(self.dir().join(sub)).unwrap() {
                    names.push(format!(
                        "{sub}/{}",
                        e.unwrap().file_name().to_string_lossy()
                    ));
                }
            }
            names.sort();
            names
        }

        /// A locked session.
        pub(super) fn session(&self) -> (MaildirHandler, Maildrop) {
            let mut h = self.store.handler();
            let drop = self.rt.block_on(h.lock("u")).unwrap();
            (h, drop)
        }

        pub(super) fn uids(&self) -> Vec<String> {
            let (mut h, drop) = self.session();
            self.rt.block_on(h.unlock());
            drop.messages().iter().map(|m| m.uid.to_string()).collect()
        }

        /// The raw bytes `open` serves for message `n` (RETR if `top` is None).
        pub(super) fn read(
            &self,
            h: &mut MaildirHandler,
            drop: &Maildrop,
            n: u32,
            top: Option<u64>,
        ) -> HandlerResult<Vec<u8>> {
            use pop3_tokio::AsyncBodySource as _;
            let m = reference(drop, n);
            self.rt.block_on(async {
                let mut body = h.open(&m, top).await?;
                let mut all = Vec::new();
                while let Some(chunk) = body.next_chunk().await? {
                    all.extend_from_slice(&chunk);
                }
                Ok(all)
            })
        }
    }

    pub(super) fn reference(drop: &Maildrop, n: u32) -> MessageRef {
        let m = &drop.messages()[n as usize - 1];
        MessageRef {
            number: n,
            uid: m.uid.clone(),
            size: m.size,
        }
    }

    #[test]
    fn a_long_unique_part_keeps_its_uidl_after_retr() {
        let fx = Fixture::new();
        let long =
            "1700000001.M123456P12345Q1R0123456789abcdef.mx01.mail-cluster-frontend.example.com";
        assert!(long.len() > 70);
        fx.write(&format!("new/{long}"), b"Subject: a\r\n\r\nlong\r\n");
        fx.write(
            "new/1700000002.M1P1.with space",
            b"Subject: b\r\n\r\nspace\r\n",
        );
        let before = fx.uids();
        assert_eq!(before.len(), 2);
        let (mut h, drop) = fx.session();
        fx.read(&mut h, &drop, 1, None).unwrap();
        fx.read(&mut h, &drop, 2, None).unwrap();
        fx.rt.block_on(h.unlock());
        assert!(
            fx.files().iter().all(|f| f.starts_with("cur/")),
            "{:?}",
            fx.files()
        );
        assert_eq!(fx.uids(), before, "RETR's rename must not change a UIDL");
    }

    #[test]
    fn name_parts() {
        assert_eq!(
            unique_part("1700000000.M1P2.host,S=10,W=12:2,S"),
            "1700000000.M1P2.host"
        );
        assert_eq!(unique_part("plain"), "plain");
        assert_eq!(size_field("1.a.b,S=10,W=12:2,S"), Some(12));
        assert_eq!(size_field("1.a.b,S=10:2,W=99"), None);
        let mut seen = HashSet::new();
        assert_eq!(uid_for("1.a.b", "1.a.b", &mut seen).as_str(), "1.a.b");
        let dup = uid_for("1.a.b", "1.a.b,S=3", &mut seen);
        assert!(dup.as_str().starts_with("md5-"));
        let dup2 = uid_for("1.a.b", "1.a.b,S=3", &mut seen);
        assert_ne!(dup, dup2, "a third copy still gets its own uid");
        let long = "x".repeat(100);
        assert_eq!(
            uid_for(&long, &long, &mut seen),
            uid_for(&long, &long, &mut HashSet::new())
        );
    }

    #[test]
    fn interrupted_delete_is_finished() {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["new", "cur", "tmp"] {
            fs::create_dir(dir.path().join(sub)).unwrap();
        }
        fs::write(dir.path().join("new/1.a.h"), "a").unwrap();
        fs::write(dir.path().join("cur/2.b.h,S=1:2,S"), "b").unwrap();
        fs::write(dir.path().join("cur/3.c.h:2,"), "c").unwrap();
        // A crash after the journal was written, before any file was removed;
        // meanwhile another program added a flag to the second file.
        fs::rename(
            dir.path().join("cur/2.b.h,S=1:2,S"),
            dir.path().join("cur/2.b.h,S=1:2,RS"),
        )
        .unwrap();
        fs::write(
            dir.path().join(DELETE_LOG),
            "new/1.a.h\t1.a.h\ncur/2.b.h,S=1:2,S\t2.b.h\n",
        )
        .unwrap();
        finish_interrupted_delete(dir.path()).unwrap();
        assert!(!dir.path().join(DELETE_LOG).exists());
        assert!(!dir.path().join("new/1.a.h").exists());
        assert!(!dir.path().join("cur/2.b.h,S=1:2,RS").exists());
        assert!(dir.path().join("cur/3.c.h:2,").exists());
    }
}
