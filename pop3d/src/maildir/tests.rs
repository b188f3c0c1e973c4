//! The store's defects as found over live sockets, each pinned by a test
//! over real files in a temporary Maildir, driven through the handler API.

use std::fs;
use std::os::unix::ffi::OsStrExt as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use pop3_proto::{Maildrop, MessageRef};
use pop3_tokio::{AsyncBodySource as _, AsyncHandler as _, HandlerError, HandlerResult};

use super::{fsx, journal, uids, MaildirHandler, Maildirs, UidlSource};
use crate::users::{Stored, Users};

/// A maildir root with users `u` and `v`, and a runtime to drive the
/// handler with.
pub(super) struct Fixture {
    pub(super) root: tempfile::TempDir,
    pub(super) store: Arc<Maildirs>,
    pub(super) rt: tokio::runtime::Runtime,
}

impl Fixture {
    pub(super) fn new() -> Self {
        Self::with_source(UidlSource::Auto)
    }

    pub(super) fn with_source(source: UidlSource) -> Self {
        Self::with(source, super::Policy::default())
    }

    /// A fixture whose store applies `policy`.
    pub(super) fn with_policy(policy: super::Policy) -> Self {
        Self::with(UidlSource::Auto, policy)
    }

    fn with(source: UidlSource, policy: super::Policy) -> Self {
        let root = tempfile::tempdir().unwrap();
        for user in ["u", "v"] {
            for sub in ["new", "cur", "tmp"] {
                fs::create_dir_all(root.path().join(user).join(sub)).unwrap();
            }
        }
        let users = Users::single("u", Stored::Plain("pw".to_owned().into()));
        let store = Maildirs::new(root.path().to_owned(), users, source, None, policy);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        Self { root, store, rt }
    }

    pub(super) fn dir(&self) -> PathBuf {
        self.root.path().join("u")
    }

    pub(super) fn write(&self, rel: impl AsRef<std::path::Path>, body: &[u8]) {
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

    pub(super) fn session_of(&self, user: &str) -> (MaildirHandler, Maildrop) {
        let mut h = self.store.handler();
        let drop = self.rt.block_on(h.lock(user)).unwrap();
        (h, drop)
    }

    /// A locked session of `u`.
    pub(super) fn session(&self) -> (MaildirHandler, Maildrop) {
        self.session_of("u")
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

    /// DELE of these numbers, then QUIT: the commit's result; unlocked.
    pub(super) fn quit(
        &self,
        mut h: MaildirHandler,
        drop: &Maildrop,
        dele: &[u32],
    ) -> HandlerResult<()> {
        let refs: Vec<MessageRef> = dele.iter().map(|&n| reference(drop, n)).collect();
        let result = self.rt.block_on(h.commit(&refs));
        self.rt.block_on(h.unlock());
        result
    }
}

impl Fixture {
    /// Journal entries for these files (`sub/name`) as they are now.
    fn doomed(&self, rels: &[&str]) -> Vec<journal::Doomed> {
        rels.iter()
            .map(|rel| {
                use std::os::unix::fs::MetadataExt as _;
                let st = fs::metadata(self.dir().join(rel)).unwrap();
                let (sub, name) = rel.split_once('/').unwrap();
                journal::Doomed {
                    sub: if sub == "new" {
                        fsx::Sub::New
                    } else {
                        fsx::Sub::Cur
                    },
                    name: name.as_bytes().to_vec(),
                    id: fsx::Identity {
                        dev: st.dev(),
                        ino: st.ino(),
                        len: st.len(),
                    },
                }
            })
            .collect()
    }

    /// Names in a folder's `new/` and `cur/`, as `sub/name`, sorted.
    fn folder_files(&self, folder: &str) -> Vec<String> {
        let mut names = Vec::new();
        for sub in ["new", "cur"] {
            for e in fs::read_dir(self.dir().join(folder).join(sub)).unwrap() {
                names.push(format!(
                    "{sub}/{}",
                    e.unwrap().file_name().to_string_lossy()
                ));
            }
        }
        names.sort();
        names
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

fn refusal_text(e: &HandlerError) -> String {
    match e {
        HandlerError::Reportable(r) => r.to_string(),
        HandlerError::LoginDelay(wait) => format!("login delay: {wait:?}"),
        HandlerError::Internal(e) => format!("internal: {e}"),
    }
}

#[test]
fn a_long_unique_part_keeps_its_uidl_after_retr() {
    let fx = Fixture::new();
    let long = "1700000001.M123456P12345Q1R0123456789abcdef.mx01.mail-cluster-frontend.example.com";
    assert!(long.len() > 70);
    fx.write(format!("new/{long}"), b"Subject: a\r\n\r\nlong\r\n");
    fx.write(
        "new/1700000002.M1P1.with space",
        b"Subject: b\r\n\r\nspace\r\n",
    );
    fx.write("new/1700000003.M1P1.ctl\x07", b"Subject: c\r\n\r\nbell\r\n");
    let before = fx.uids();
    assert_eq!(before.len(), 3);
    let (mut h, drop) = fx.session();
    for n in 1..=3 {
        fx.read(&mut h, &drop, n, None).unwrap();
    }
    fx.rt.block_on(h.unlock());
    assert!(
        fx.files().iter().all(|f| f.starts_with("cur/")),
        "{:?}",
        fx.files()
    );
    assert_eq!(fx.uids(), before, "RETR's rename must not change a UIDL");
    // An IMAP server adding flags does not change them either.
    for f in fx.files() {
        fs::rename(fx.dir().join(&f), fx.dir().join(format!("{f}RT"))).unwrap();
    }
    assert_eq!(fx.uids(), before);
}

#[test]
fn files_sharing_a_unique_part_keep_their_own_ids_forever() {
    let fx = Fixture::new();
    // The original, already listed alone: it has the plain id.
    fx.write(
        "cur/1700000000.M1P1.h,S=21:2,S",
        b"Subject: a\r\n\r\nfirst\r\n",
    );
    assert_eq!(fx.uids(), ["1700000000.M1P1.h"]);
    // A copy arrives whose name sorts first: it must not take that id.
    fx.write("new/1700000000.M1P1.h", b"Subject: b\r\n\r\nsecond!\r\n");
    let (mut h, drop) = fx.session();
    let by_body = |h: &mut MaildirHandler| -> Vec<(Vec<u8>, String)> {
        (1..=2)
            .map(|n| {
                let body = fx.read(h, &drop, n, Some(0)).unwrap();
                (body, drop.messages()[n as usize - 1].uid.to_string())
            })
            .collect()
    };
    let ids = by_body(&mut h);
    fx.rt.block_on(h.unlock());
    let first = ids.iter().find(|(b, _)| b.ends_with(b"first\r\n")).unwrap();
    let second = ids
        .iter()
        .find(|(b, _)| b.ends_with(b"second!\r\n"))
        .unwrap();
    assert_eq!(first.1, "1700000000.M1P1.h");
    assert_ne!(second.1, first.1);
    // The original is deleted (by another program): the copy keeps its id,
    // across sessions, and never takes the original's.
    fs::remove_file(fx.dir().join("cur/1700000000.M1P1.h,S=21:2,S")).unwrap();
    for _ in 0..2 {
        assert_eq!(fx.uids(), std::slice::from_ref(&second.1));
    }
    // Nor is the original's id given to a later file of that unique part.
    fx.write(
        "new/1700000000.M1P1.h,S=99",
        b"Subject: c\r\n\r\nthird, longer\r\n",
    );
    let ids = fx.uids();
    assert_eq!(ids.len(), 2);
    assert!(!ids.contains(&first.1), "{ids:?}");
}

#[test]
fn retr_never_renames_over_an_existing_file() {
    let fx = Fixture::new();
    let a = b"Subject: a\r\n\r\nAAAA\r\n";
    fx.write("new/1700000000.M1P1.h", a);
    // cur/ already has exactly the name RETR would move the message to.
    let target = format!("cur/1700000000.M1P1.h,W={}:2,S", a.len());
    let b = b"Subject: b\r\n\r\nBBBB\r\n";
    fx.write(&target, b);
    let (mut h, drop) = fx.session();
    assert_eq!(drop.messages().len(), 2);
    let mut bodies: Vec<Vec<u8>> = (1..=2)
        .map(|n| fx.read(&mut h, &drop, n, None).unwrap())
        .collect();
    // And again, after the (refused) move.
    bodies.extend((1..=2).map(|n| fx.read(&mut h, &drop, n, None).unwrap()));
    fx.rt.block_on(h.unlock());
    bodies.sort();
    assert_eq!(bodies, [a.to_vec(), a.to_vec(), b.to_vec(), b.to_vec()]);
    assert_eq!(fs::read(fx.dir().join(&target)).unwrap(), b);
    assert_eq!(fs::read(fx.dir().join("new/1700000000.M1P1.h")).unwrap(), a);
}

#[test]
fn quit_removes_exactly_the_marked_file_or_nothing() {
    let fx = Fixture::new();
    fx.write("cur/1700000000.M1P1.h:2,S", b"Subject: marked\r\n\r\nx\r\n");
    fx.write(
        "cur/1700000000.M1P1.h,S=3:2,RS",
        b"Subject: not marked\r\n\r\ny\r\n",
    );
    fx.write(
        "cur/1700000001.M1P1.h:2,S",
        b"Subject: replaced\r\n\r\nz\r\n",
    );
    let (mut h, drop) = fx.session();
    let marked = (1..=2)
        .find(|&n| {
            fx.read(&mut h, &drop, n, Some(0))
                .unwrap()
                .starts_with(b"Subject: marked")
        })
        .unwrap();
    // Another program removes the marked file, and replaces message 3 by
    // another file of the same name.
    fs::remove_file(fx.dir().join("cur/1700000000.M1P1.h:2,S")).unwrap();
    fs::remove_file(fx.dir().join("cur/1700000001.M1P1.h:2,S")).unwrap();
    fx.write(
        "cur/1700000001.M1P1.h:2,S",
        b"Subject: newcomer\r\n\r\nw\r\n",
    );
    fx.quit(h, &drop, &[marked, 3]).unwrap();
    assert_eq!(
        fx.files(),
        [
            "cur/1700000000.M1P1.h,S=3:2,RS",
            "cur/1700000001.M1P1.h:2,S"
        ],
        "unmarked files stay"
    );
}

#[test]
fn quit_follows_a_marked_file_renamed_by_another_program() {
    let fx = Fixture::new();
    fx.write("new/1700000000.M1P1.h", b"Subject: a\r\n\r\nx\r\n");
    fx.write("cur/1700000001.M1P1.h:2,S", b"Subject: b\r\n\r\ny\r\n");
    let (h, drop) = fx.session();
    fs::rename(
        fx.dir().join("new/1700000000.M1P1.h"),
        fx.dir().join("cur/1700000000.M1P1.h:2,ST"),
    )
    .unwrap();
    fx.quit(h, &drop, &[1]).unwrap();
    assert_eq!(fx.files(), ["cur/1700000001.M1P1.h:2,S"]);
}

#[test]
fn a_journal_pointing_outside_is_set_aside_and_never_acted_on() {
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim");
    fs::write(&victim, "precious").unwrap();
    let st = fs::metadata(&victim).unwrap();
    use std::os::unix::fs::MetadataExt as _;
    let ids = format!("{} {} {}", st.dev(), st.ino(), st.len());
    let victim_str = victim.display().to_string();
    for journal in [
        format!("pop3d-deleting 1\ncur/..%2F..%2F..{victim_str} {ids}\n"),
        format!(
            "pop3d-deleting 1\ncur/{} {ids}\n",
            victim_str.replace('/', "%2F")
        ),
        format!("pop3d-deleting 1\n../{victim_str} {ids}\n"),
        format!("pop3d-deleting 1\n{victim_str} {ids}\n"),
        format!("{victim_str}\t1.a.h\n"),
        "pop3d-deleting 1\ncur/1.a.h 1 2\n".to_owned(),
    ] {
        let fx = Fixture::new();
        fx.write("cur/1.a.h:2,S", b"Subject: stays\r\n\r\n");
        fs::write(fx.dir().join(journal::JOURNAL), &journal).unwrap();
        let (mut h, drop) = fx.session();
        fx.rt.block_on(h.unlock());
        assert_eq!(drop.messages().len(), 1, "{journal}");
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
        assert!(!fx.dir().join(journal::JOURNAL).exists(), "set aside");
        let aside: Vec<_> = fs::read_dir(fx.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("pop3d-deleting.rejected-"))
            .collect();
        assert_eq!(aside.len(), 1, "{journal}");
    }
}

#[test]
fn planted_links_are_never_followed() {
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim");
    fs::write(&victim, "precious").unwrap();
    let fx = Fixture::new();
    fx.write("cur/1.a.h:2,S", b"Subject: bye\r\n\r\n");
    fx.write("cur/2.a.h:2,S", b"Subject: stays\r\n\r\n");
    // The journal's temporary name, the journal and the uid state file as
    // links to the victim; a message name linking to it too.
    std::os::unix::fs::symlink(&victim, fx.dir().join("pop3d-deleting.tmp")).unwrap();
    std::os::unix::fs::symlink(&victim, fx.dir().join("pop3d-uidlist.tmp")).unwrap();
    std::os::unix::fs::symlink(&victim, fx.dir().join("cur/3.a.h:2,S")).unwrap();
    let (h, drop) = fx.session();
    assert_eq!(drop.messages().len(), 2, "a link is not a message");
    fx.quit(h, &drop, &[1]).unwrap();
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
    std::os::unix::fs::symlink(&victim, fx.dir().join(journal::JOURNAL)).unwrap();
    assert_eq!(fx.uids().len(), 1);
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
    assert!(victim.exists());
    // A folder that is a link: the login is refused, nothing outside read.
    let fx = Fixture::new();
    fs::remove_dir(fx.dir().join("cur")).unwrap();
    std::os::unix::fs::symlink(outside.path(), fx.dir().join("cur")).unwrap();
    let mut h = fx.store.handler();
    assert!(fx.rt.block_on(h.lock("u")).is_err());
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
}

#[test]
fn a_journal_left_by_a_crash_is_finished_exactly() {
    let fx = Fixture::new();
    fx.write("new/1.a.h", b"a");
    fx.write("cur/2.b.h,S=1:2,S", b"b");
    fx.write("cur/3.c.h:2,", b"c");
    let (h, _listing) = fx.session();
    // The journal as a QUIT writes it, then a crash before any removal.
    let doomed = fx.doomed(&["new/1.a.h", "cur/2.b.h,S=1:2,S"]);
    fs::write(
        fx.dir().join(journal::JOURNAL),
        journal::render(&super::DeletePolicy::Remove, &doomed),
    )
    .unwrap();
    std::mem::drop(h); // the process dies: no commit, no unlock call
                       // Meanwhile another program flagged the second file.
    fs::rename(
        fx.dir().join("cur/2.b.h,S=1:2,S"),
        fx.dir().join("cur/2.b.h,S=1:2,RS"),
    )
    .unwrap();
    assert_eq!(fx.uids(), ["3.c.h"]);
    assert!(!fx.dir().join(journal::JOURNAL).exists());
    assert_eq!(fx.files(), ["cur/3.c.h:2,"]);
}

#[test]
fn every_failed_password_check_computes_one_argon2id_of_the_decoys_cost() {
    use pop3_proto::{Credential, Secret};
    let sha = sha_crypt::sha512_simple("pw", &sha_crypt::Sha512Params::new(5000).unwrap()).unwrap();
    let blf = bcrypt::hash("pw", 4).unwrap();
    let argon = crate::users::passwd_line("a", "pw", crate::users::Scheme::Argon2id).unwrap();
    let cheap_argon = {
        use argon2::password_hash::{rand_core::OsRng, PasswordHasher as _, SaltString};
        let params = argon2::Params::new(1024, 1, 1, None).unwrap();
        argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
            .hash_password(b"pw", &SaltString::generate(&mut OsRng))
            .unwrap()
            .to_string()
    };
    let text = format!(
        "plain:{{PLAIN}}pw\nsha:{{SHA512-CRYPT}}{sha}\nblf:{{BLF-CRYPT}}{blf}\n{argon}\ncheap:{{ARGON2ID}}{cheap_argon}\n"
    );
    let users = Users::parse(&text).unwrap().users;
    let root = tempfile::tempdir().unwrap();
    let store = Maildirs::build(root.path().to_owned(), users, UidlSource::Auto, None);
    let decoys = || {
        store
            .passwords
            .decoys_run
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let pass = |p: &str| Credential::Password(Secret::new(p.as_bytes().to_vec()));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let check =
        |user: &str, password: &str| rt.block_on(store.check(user, &pass(password))).unwrap();
    // A check that costs one Argon2id of the decoy's parameters itself.
    assert!(!check("a", "wrong"));
    assert_eq!(decoys(), 0, "the user's own Argon2id is the decoy's cost");
    // Every other failing path runs the decoy once.
    for (n, user) in ["plain", "sha", "blf", "cheap", "nobody"]
        .iter()
        .enumerate()
    {
        assert!(!check(user, "wrong"), "{user}");
        assert_eq!(decoys(), n as u64 + 1, "{user}");
    }
    // (APOP failures take the same path: the credential cannot be built
    // outside the protocol core, so the session tests cover it.)
    // Successes run none; a {PLAIN} one does not even take a hashing thread.
    let (before, hashed) = (decoys(), store.passwords.hashers.ran());
    assert!(check("plain", "pw"));
    assert_eq!(
        store.passwords.hashers.ran(),
        hashed,
        "no hashing job for {{PLAIN}}"
    );
    for user in ["sha", "blf", "a", "cheap"] {
        assert!(check(user, "pw"), "{user}");
    }
    assert_eq!(decoys(), before);
    assert_eq!(store.passwords.hashers.shed(), 0);
    assert!(
        store.passwords.hashers.allocations() <= store.passwords.hashers.threads() as u64,
        "one Argon2 buffer per hashing thread at most, reused by every check"
    );
}

/// Unknown users flood the hashing queue: the attempts it cannot take are
/// shed (failed at once, no hash), and a real user is never shed nor
/// queued behind them: a `{PLAIN}` login needs no hashing thread, and a
/// hashed one goes ahead of every queued decoy.
#[test]
fn a_flood_of_unknown_users_is_shed_and_real_users_go_first() {
    use pop3_proto::{Credential, Secret};
    let argon = crate::users::passwd_line("a", "pw", crate::users::Scheme::Argon2id).unwrap();
    let users = Users::parse(&format!(
        "plain:{{PLAIN}}pw
{argon}
"
    ))
    .unwrap()
    .users;
    let root = tempfile::tempdir().unwrap();
    let store = Maildirs::build(root.path().to_owned(), users, UidlSource::Auto, None);
    let pass = |p: &str| Credential::Password(Secret::new(p.as_bytes().to_vec()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let capacity = store.passwords.hashers.capacity();
    let threads = store.passwords.hashers.threads();
    // More attempts than the threads and the decoy lane can hold at once.
    let flood = 2 * (capacity + threads) + 10;
    let attempts: Vec<_> = (0..flood)
        .map(|i| {
            let (store, cred) = (store.clone(), pass("guess"));
            rt.spawn(async move { store.check(&format!("nobody{i}"), &cred).await })
        })
        .collect();
    // Wait until the decoy lane is full: from then on the flood is shed.
    while store.passwords.hashers.shed() == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let ran_before = store.passwords.hashers.ran();
    let (real, hashed) = rt.block_on(async {
        let plain = store.check("plain", &pass("pw")).await.unwrap();
        let hashed = store.check("a", &pass("pw")).await.unwrap();
        (plain, hashed)
    });
    assert!(real, "a {{PLAIN}} login during the flood");
    assert!(hashed, "an Argon2id login during the flood");
    // The Argon2id login went ahead of the queued decoys: it did not wait
    // for the decoy lane to drain (behind it, about `capacity` would have
    // run). Not "at most one per thread": under load a thread may take
    // another decoy before the login is even queued.
    assert!(
        store.passwords.hashers.ran() < ran_before + capacity as u64,
        "ran {} before, {} after",
        ran_before,
        store.passwords.hashers.ran()
    );
    for attempt in attempts {
        assert!(!rt.block_on(attempt).unwrap().unwrap());
    }
    let shed = store.passwords.hashers.shed();
    assert!(shed > 0);
    assert_eq!(
        store
            .passwords
            .decoys_run
            .load(std::sync::atomic::Ordering::Relaxed)
            + shed,
        flood as u64,
        "every unknown-user attempt cost one decoy hash, or was shed"
    );
    assert!(store.passwords.hashers.allocations() <= threads as u64);
}

#[test]
fn the_size_cache_tells_two_users_files_apart() {
    let fx = Fixture::new();
    let name = "cur/1700000000.M1P1.h:2,S";
    // Same name, length and modification time; different CRLF sizes.
    let (lf, crlf) = (
        b"Subject: x\n\nabcd\n\n".to_vec(),
        b"Subject: x\r\n\r\nab\r\n".to_vec(),
    );
    assert_eq!(lf.len(), crlf.len());
    fs::write(fx.dir().join(name), &lf).unwrap();
    fs::write(fx.root.path().join("v").join(name), &crlf).unwrap();
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    for user in ["u", "v"] {
        fs::File::options()
            .write(true)
            .open(fx.root.path().join(user).join(name))
            .unwrap()
            .set_modified(t)
            .unwrap();
    }
    for (user, body) in [("u", &lf), ("v", &crlf), ("u", &lf)] {
        let (mut h, drop) = fx.session_of(user);
        fx.rt.block_on(h.unlock());
        assert_eq!(
            drop.messages()[0].size,
            pop3_proto::testing::normalize_body(body).len() as u64,
            "{user}"
        );
    }
}

#[test]
fn a_new_message_with_flags_keeps_them_and_gets_its_size_before_them() {
    let fx = Fixture::new();
    let body = b"Subject: f\r\n\r\nflagged\r\n";
    fx.write("new/1700000000.M1P1.h:2,F", body);
    fx.write("new/1700000001.M1P1.h,S=24:2,", body);
    let (mut h, drop) = fx.session();
    fx.read(&mut h, &drop, 1, None).unwrap();
    fx.read(&mut h, &drop, 2, None).unwrap();
    fx.rt.block_on(h.unlock());
    assert_eq!(
        fx.files(),
        [
            format!("cur/1700000000.M1P1.h,W={}:2,FS", body.len()),
            format!("cur/1700000001.M1P1.h,S=24,W={}:2,S", body.len()),
        ]
    );
}

#[test]
fn names_that_are_not_utf8_are_served() {
    let fx = Fixture::new();
    let name = std::ffi::OsStr::from_bytes(b"1700000000.M1P1.h\xff\xfe");
    let body = b"Subject: bytes\r\n\r\nok\r\n";
    fx.write(PathBuf::from("new").join(name), body);
    let (mut h, drop) = fx.session();
    assert_eq!(drop.messages().len(), 1);
    let uid = drop.messages()[0].uid.clone();
    assert_eq!(fx.read(&mut h, &drop, 1, None).unwrap(), body);
    fx.rt.block_on(h.unlock());
    assert_eq!(fx.uids(), [uid.to_string()]);
    let (h, drop) = fx.session();
    fx.quit(h, &drop, &[1]).unwrap();
    assert!(fx.files().is_empty());
}

#[test]
fn a_failed_removal_is_reported_and_never_finished_silently() {
    let fx = Fixture::new();
    fx.write("cur/1700000000.M1P1.h:2,S", b"Subject: a\r\n\r\n");
    fx.write(
        "cur/1700000001.M1P1.cannot-remove:2,S",
        b"Subject: b\r\n\r\n",
    );
    fx.write("cur/1700000002.M1P1.h:2,S", b"Subject: c\r\n\r\n");
    fsx::failing::fail_unlink_of(b"cannot-remove");
    let (h, drop) = fx.session();
    let before = fx.uids_of(&drop);
    let err = fx.quit(h, &drop, &[1, 2]).unwrap_err();
    assert_eq!(
        refusal_text(&err),
        "[SYS/TEMP] 1 of 2 deleted messages could not be removed; they stay in the maildrop"
    );
    assert!(
        !fx.dir().join(journal::JOURNAL).exists(),
        "nothing left to finish later"
    );
    // What the reply said is what the next sessions see.
    for _ in 0..2 {
        assert_eq!(fx.uids(), [before[1].clone(), before[2].clone()]);
    }
}

impl Fixture {
    fn uids_of(&self, drop: &Maildrop) -> Vec<String> {
        drop.messages().iter().map(|m| m.uid.to_string()).collect()
    }
}

#[test]
fn tmp_files_older_than_36_hours_are_removed() {
    let fx = Fixture::new();
    // Served before, nothing new: a later login is cheap, but still cleans.
    fx.write("cur/1700000000.M1P1.test:2,S", b"Subject: kept\n\nhi\n");
    fx.uids();
    let old = SystemTime::now() - Duration::from_secs(37 * 3600);
    let recent = SystemTime::now() - Duration::from_secs(35 * 3600);
    for (name, t) in [("old", old), ("recent", recent)] {
        let path = fx.dir().join("tmp").join(name);
        fs::write(&path, "partial delivery").unwrap();
        let f = fs::File::options().write(true).open(&path).unwrap();
        f.set_times(fs::FileTimes::new().set_accessed(t).set_modified(t))
            .unwrap();
    }
    fs::create_dir(fx.dir().join("tmp/olddir")).unwrap();
    std::os::unix::fs::symlink("/nonexistent", fx.dir().join("tmp/oldlink")).unwrap();
    fx.uids();
    let mut left: Vec<String> = fs::read_dir(fx.dir().join("tmp"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["olddir", "oldlink", "recent"]);
}

fn dovecot_site(source: UidlSource) -> Fixture {
    let fx = Fixture::with_source(source);
    // As Dovecot writes it: version 3 header, then `<uid> <fields> :<base name>`.
    fs::write(
        fx.dir().join(uids::DOVECOT),
        "3 V1275660208 N25022 G3085f01b7f11094c501100008c4a11c1\n\
         25019 :1275660001.M1P1.mx,S=20,W=21\n\
         25020 W21 POldServerUidl-7 :1275660002.M2P1.mx,S=20,W=21\n\
         25021 S20 W21 :1275660003.M3P1.mx,S=20,W=21\n",
    )
    .unwrap();
    let body = b"Subject: d\n\nbody.\n\n";
    fx.write("cur/1275660001.M1P1.mx,S=20,W=21:2,S", body);
    fx.write("cur/1275660002.M2P1.mx,S=20,W=21:2,RS", body);
    fx.write("new/1275660003.M3P1.mx,S=20,W=21", body);
    fx
}

#[test]
fn dovecot_uidls_survive_the_migration() {
    let fx = dovecot_site(UidlSource::Auto);
    // New mail, one of it named exactly like an id Dovecot promised.
    fx.write("new/1275669999.M9P9.new", b"Subject: new\r\n\r\n");
    fx.write("new/000061BD4C0907B0", b"Subject: crafted\r\n\r\n");
    let ids = fx.uids();
    assert_eq!(
        &ids[..3],
        ["000061BB4C0907B0", "OldServerUidl-7", "000061BD4C0907B0"]
    );
    assert_eq!(ids[3], "1275669999.M9P9.new");
    assert!(
        ids[4].starts_with("pop3d-"),
        "never an imported id: {ids:?}"
    );
    // RETR and flag changes change nothing; nor does Dovecot's file going away.
    let (mut h, drop) = fx.session();
    fx.read(&mut h, &drop, 3, None).unwrap();
    fx.rt.block_on(h.unlock());
    fs::remove_file(fx.dir().join(uids::DOVECOT)).unwrap();
    assert_eq!(fx.uids(), ids);
}

#[test]
fn dovecot_version_1_and_the_maildir_setting() {
    let fx = Fixture::with_source(UidlSource::Dovecot);
    fs::write(
        fx.dir().join(uids::DOVECOT),
        "1 1275660208 3\n1 1275660001.M1P1.mx:2,S\n2 1275660002.M2P1.mx\n",
    )
    .unwrap();
    fx.write("cur/1275660001.M1P1.mx:2,S", b"a\n");
    fx.write("cur/1275660002.M2P1.mx:2,S", b"b\n");
    assert_eq!(fx.uids(), ["000000014C0907B0", "000000024C0907B0"]);
    let fx = dovecot_site(UidlSource::Maildir);
    assert_eq!(
        fx.uids(),
        [
            "1275660001.M1P1.mx",
            "1275660002.M2P1.mx",
            "1275660003.M3P1.mx"
        ]
    );
}

#[test]
fn auto_keeps_maildir_ids_where_pop3d_served_before() {
    // An old pop3d served this Maildir (its lock file is there): its clients
    // hold Maildir-name ids, which must not switch to Dovecot's.
    let fx = dovecot_site(UidlSource::Auto);
    fs::write(fx.dir().join("pop3d.lock"), "").unwrap();
    assert_eq!(
        fx.uids(),
        [
            "1275660001.M1P1.mx",
            "1275660002.M2P1.mx",
            "1275660003.M3P1.mx"
        ]
    );
}

#[test]
fn courier_uidls_survive_the_migration() {
    for (version, suffix) in [("2", ""), ("3", ":0")] {
        let fx = Fixture::new();
        // As Courier's pop3d writes it: `/<version> <next uid> <uidvalidity>`,
        // then `<file name> <size> <uid>:<uidvalidity>[:<utf8>]`.
        fs::write(
            fx.dir().join(uids::COURIER),
            format!(
                "/{version} 4 1275660208\n\
                 1275660001.M1P1.mx:2,S 21 1:1275660208{suffix}\n\
                 1275660002.M2P1.mx 21 2:1275660208{suffix}\n\
                 1275660003.M3P1 odd name:2,S 21 0:0{suffix}\n"
            ),
        )
        .unwrap();
        fx.write("cur/1275660001.M1P1.mx:2,S", b"Subject: a\n\n");
        fx.write("cur/1275660002.M2P1.mx:2,S", b"Subject: b\n\n");
        fx.write("cur/1275660003.M3P1 odd name:2,S", b"Subject: c\n\n");
        fx.write("new/1275660004.M4P1.mx", b"Subject: new\n\n");
        assert_eq!(
            fx.uids(),
            [
                "UID1-1275660208",
                "UID2-1275660208",
                "1275660003.M3P1+20odd+20name",
                "1275660004.M4P1.mx"
            ],
            "version {version}"
        );
    }
}

fn policy(delete: &str) -> super::Policy {
    super::Policy {
        delete: delete.parse().unwrap(),
        ..super::Policy::default()
    }
}

#[test]
fn the_move_policy_moves_deleted_messages_into_a_new_folder() {
    let fx = Fixture::with_policy(policy("move:.Trash"));
    fx.write("new/1.a.h", b"one\r\n");
    fx.write("cur/2.b.h:2,S", b"two\r\n");
    fx.write("cur/3.c.h:2,", b"three\r\n");
    let (h, drop) = fx.session();
    fx.quit(h, &drop, &[1, 2]).unwrap();
    assert_eq!(fx.files(), ["cur/3.c.h:2,"]);
    assert_eq!(fx.folder_files(".Trash"), ["cur/2.b.h:2,S", "new/1.a.h"]);
    assert!(fx.dir().join(".Trash/tmp").is_dir());
    assert_eq!(
        fs::read(fx.dir().join(".Trash/new/1.a.h")).unwrap(),
        b"one\r\n"
    );
    assert!(!fx.dir().join(journal::JOURNAL).exists());
    assert_eq!(fx.uids(), ["3.c.h"]);
}

#[test]
fn the_move_policy_refuses_a_folder_that_is_a_link() {
    let fx = Fixture::with_policy(policy("move:.Trash"));
    let elsewhere = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(elsewhere.path(), fx.dir().join(".Trash")).unwrap();
    fx.write("new/1.a.h", b"one\r\n");
    let (h, drop) = fx.session();
    let err = fx.quit(h, &drop, &[1]).unwrap_err();
    assert!(
        refusal_text(&err).starts_with("[SYS/TEMP] no deleted message"),
        "{err}"
    );
    assert_eq!(fx.files(), ["new/1.a.h"]);
    assert_eq!(fs::read_dir(elsewhere.path()).unwrap().count(), 0);
}

#[test]
fn the_flag_policy_marks_deleted_messages_and_hides_them() {
    let fx = Fixture::with_policy(policy("flag"));
    fx.write("new/1.a.h", b"one\r\n");
    fx.write("cur/2.b.h:2,S", b"two\r\n");
    fx.write("cur/3.c.h:2,", b"three\r\n");
    // Flagged by an IMAP client (\Deleted, not expunged): not listed either.
    fx.write("cur/4.d.h:2,ST", b"four\r\n");
    let (h, drop) = fx.session();
    assert_eq!(drop.messages().len(), 3);
    fx.quit(h, &drop, &[1, 2]).unwrap();
    assert_eq!(
        fx.files(),
        [
            "cur/1.a.h:2,T",
            "cur/2.b.h:2,ST",
            "cur/3.c.h:2,",
            "cur/4.d.h:2,ST"
        ]
    );
    assert_eq!(fx.uids(), ["3.c.h"]);
}

#[test]
fn a_move_interrupted_by_a_crash_is_finished_at_the_next_login() {
    let fx = Fixture::with_policy(policy("move:.Trash"));
    for n in 1..=3 {
        fx.write(format!("cur/{n}.x.h:2,S"), b"body\r\n");
    }
    let (h, _drop) = fx.session();
    let doomed = fx.doomed(&["cur/1.x.h:2,S", "cur/2.x.h:2,S"]);
    fs::write(
        fx.dir().join(journal::JOURNAL),
        journal::render(&policy("move:.Trash").delete, &doomed),
    )
    .unwrap();
    // The crash came after the first move.
    fs::create_dir_all(fx.dir().join(".Trash/cur")).unwrap();
    fs::rename(
        fx.dir().join("cur/1.x.h:2,S"),
        fx.dir().join(".Trash/cur/1.x.h:2,S"),
    )
    .unwrap();
    std::mem::drop(h);
    // A server started with another policy finishes the journaled one.
    let users = Users::single("u", Stored::Plain("pw".to_owned().into()));
    let other = Maildirs::build(fx.root.path().to_owned(), users, UidlSource::Auto, None);
    let mut h = other.handler();
    let listing = fx.rt.block_on(h.lock("u")).unwrap();
    assert_eq!(listing.messages().len(), 1);
    fx.rt.block_on(h.unlock());
    assert_eq!(fx.files(), ["cur/3.x.h:2,S"]);
    assert_eq!(
        fx.folder_files(".Trash"),
        ["cur/1.x.h:2,S", "cur/2.x.h:2,S"]
    );
    assert!(!fx.dir().join(journal::JOURNAL).exists());
}

#[test]
fn a_journal_naming_a_folder_outside_the_maildir_is_set_aside() {
    let fx = Fixture::new();
    fx.write("cur/1.x.h:2,S", b"body\r\n");
    let doomed = fx.doomed(&["cur/1.x.h:2,S"]);
    let text = journal::render(&super::DeletePolicy::Remove, &doomed).replacen(
        "pop3d-deleting 1",
        "pop3d-deleting 1 move ../../elsewhere",
        1,
    );
    fs::write(fx.dir().join(journal::JOURNAL), text).unwrap();
    assert_eq!(fx.uids().len(), 1);
    assert_eq!(fx.files(), ["cur/1.x.h:2,S"]);
    assert!(!fx.dir().join(journal::JOURNAL).exists());
}

#[test]
fn messages_retrieved_days_ago_expire_at_login_by_the_delete_policy() {
    let fx = Fixture::with_policy(super::Policy {
        expire_days: Some(3),
        ..policy("move:.Trash")
    });
    fx.write("new/1.a.h", b"one\r\n");
    fx.write("new/2.b.h", b"two\r\n");
    fx.write("new/3.c.h", b"three\r\n");
    // A session that ends without QUIT retrieved nothing: what was read
    // out may never have reached the client.
    let (mut h, drop) = fx.session();
    fx.read(&mut h, &drop, 1, None).unwrap();
    fx.rt.block_on(h.unlock());
    assert!(!fx.dir().join(super::policy::RETRIEVED).exists());
    let (mut h, drop) = fx.session();
    fx.read(&mut h, &drop, 1, None).unwrap();
    fx.read(&mut h, &drop, 2, None).unwrap();
    fx.read(&mut h, &drop, 3, Some(0)).unwrap(); // TOP is not a retrieval
    fx.rt.block_on(h.commit(&[])).unwrap(); // QUIT
    fx.rt.block_on(h.unlock());
    let text = fs::read_to_string(fx.dir().join(super::policy::RETRIEVED)).unwrap();
    assert!(
        text.starts_with("pop3d-retrieved 1\n1.a.h ") && text.contains("\n2.b.h "),
        "{text}"
    );
    assert!(!text.contains("3.c.h"));
    // Not yet: the next login lists all three.
    assert_eq!(fx.uids().len(), 3);
    // Three days later (the times as written, moved back): 1 and 2 expire.
    let now = super::policy::unix_secs(SystemTime::now());
    let old = now - 3 * 86_400;
    let recent = now - 3 * 86_400 + 60;
    fs::write(
        fx.dir().join(super::policy::RETRIEVED),
        format!("pop3d-retrieved 1\n1.a.h {old}\n2.b.h {recent}\ngone.uid {old}\n"),
    )
    .unwrap();
    assert_eq!(fx.uids(), ["2.b.h", "3.c.h"]);
    assert_eq!(fx.folder_files(".Trash"), ["cur/1.a.h,W=5:2,S"]);
    assert_eq!(
        fs::read_to_string(fx.dir().join(super::policy::RETRIEVED)).unwrap(),
        format!("pop3d-retrieved 1\n2.b.h {recent}\n"),
        "expired and vanished messages are forgotten"
    );
}

#[test]
fn a_login_within_the_delay_is_refused_before_and_under_the_lock() {
    let fx = Fixture::with_policy(super::Policy {
        login_delay: Some(Duration::from_secs(60)),
        ..super::Policy::default()
    });
    let (h, drop) = fx.session();
    // A second login while the first session runs: LOGIN-DELAY, not IN-USE.
    let mut second = fx.store.handler();
    match fx.rt.block_on(second.lock("u")) {
        Err(HandlerError::LoginDelay(wait)) => {
            assert!(wait <= Duration::from_secs(60) && wait > Duration::from_secs(50))
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
    fx.quit(h, &drop, &[]).unwrap();
    assert!(matches!(
        fx.rt.block_on(second.lock("u")),
        Err(HandlerError::LoginDelay(_))
    ));
    // Another user is not held back.
    let mut v = fx.store.handler();
    assert!(fx.rt.block_on(v.lock("v")).is_ok());
    // A minute later (the record, moved back) the user gets in.
    let t = SystemTime::now() - Duration::from_secs(61);
    let dirs = fsx::Dirs::open(&fx.dir()).unwrap();
    super::policy::record_login(&dirs, t).unwrap();
    assert!(fx.rt.block_on(second.lock("u")).is_ok());
}

/// The SCRAM decoy keys of an unknown user are the same from every store
/// on one Maildir root (another process, a restart, inetd), so comparing
/// salts across them tells nothing; the secret is kept mode 0600.
#[test]
fn scram_decoys_are_the_same_across_processes_on_one_root() {
    use std::os::unix::fs::PermissionsExt as _;
    let root = tempfile::tempdir().unwrap();
    let store = || {
        Maildirs::build(
            root.path().to_owned(),
            Users::default(),
            UidlSource::Auto,
            None,
        )
    };
    let (a, b) = (store(), store());
    assert_eq!(a.scram_keys("nobody"), b.scram_keys("nobody"));
    assert_ne!(a.scram_keys("nobody"), a.scram_keys("mallory"));
    let secret = root.path().join(super::DECOY_SECRET);
    let mode = fs::metadata(&secret).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // Another root, another secret.
    let other = tempfile::tempdir().unwrap();
    let c = Maildirs::build(
        other.path().to_owned(),
        Users::default(),
        UidlSource::Auto,
        None,
    );
    assert_ne!(a.scram_keys("nobody"), c.scram_keys("nobody"));
}
