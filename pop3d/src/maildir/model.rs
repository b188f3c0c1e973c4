//! A model-based test of the store: random interleavings of POP3 sessions
//! (LIST/UIDL at login, RETR, TOP, DELE, RSET, QUIT, dropped connections)
//! with outside programs on the same Maildir (delivery through `tmp/`,
//! `new/` -> `cur/` moves, IMAP-style flag renames, deletions, files that
//! share a unique part, long and non-UTF-8 names, a file planted at the
//! name RETR moves to), checked against a small reference model after
//! every step:
//!
//! - a message leaves the disk only if it was marked and QUIT succeeded
//!   (or an outside program removed it), and no message is duplicated;
//! - a message's UIDL never changes and is never given to another message;
//! - RETR and TOP serve exactly that message's bytes, and the listed size
//!   is exactly its CRLF size;
//! - nothing outside the Maildir is touched (a file outside, reachable
//!   through links planted inside, keeps its bytes);
//! - under `--delete-policy move:.Trash`, exactly the messages deleted at
//!   QUIT are in `.Trash`, whole, each once; under `flag`, exactly those
//!   and the ones an IMAP server flagged `T` carry the flag, and are
//!   never listed again.
//!
//! Every message's body names its serial number, so the disk can be read
//! back without trusting any name; lengths differ per message (the store
//! takes a file of the same unique part and length as a vanished one for
//! that message restored, see `uids`).

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::os::unix::ffi::{OsStrExt as _, OsStringExt as _};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use pop3_proto::{Maildrop, MessageRef, SizeCounter, Uid};
use pop3_tokio::{AsyncBodySource as _, AsyncHandler as _, HandlerError};
use proptest::prelude::*;

use super::{names, DeletePolicy, MaildirHandler, Maildirs, Policy, UidlSource};
use crate::users::{Stored, Users};

/// How an outside program names a delivery.
#[derive(Debug, Clone)]
enum Naming {
    Plain,
    /// A host name long enough that the unique part is no valid UIDL.
    Long,
    NonUtf8,
    Space,
    /// The unique part of an earlier message (a copy, a restore).
    ShareWith(usize),
}

#[derive(Debug, Clone)]
enum Op {
    Deliver {
        naming: Naming,
        to_cur: bool,
        flags: bool,
        lf: bool,
    },
    /// An MDA or IMAP server moves a `new/` message to `cur/`.
    MoveToCur(usize),
    /// An IMAP server adds a flag.
    Flag(usize, char),
    /// Another program deletes a message.
    Delete(usize),
    /// Another program delivers a message at exactly the name RETR would
    /// move this `new/` message to.
    PlantAtTarget(usize),
    Login,
    Retr(usize),
    Top(usize, u64),
    Dele(usize),
    Rset,
    Quit,
    Drop,
}

fn op() -> impl Strategy<Value = Op> {
    let naming = prop_oneof![
        4 => Just(Naming::Plain),
        1 => Just(Naming::Long),
        1 => Just(Naming::NonUtf8),
        1 => Just(Naming::Space),
        3 => (0..8usize).prop_map(Naming::ShareWith),
    ];
    prop_oneof![
        5 => (naming, any::<bool>(), any::<bool>(), any::<bool>())
            .prop_map(|(naming, to_cur, flags, lf)| Op::Deliver { naming, to_cur, flags, lf }),
        2 => (0..8usize).prop_map(Op::MoveToCur),
        2 => ((0..8usize), prop::sample::select(vec!['R', 'F', 'T', 'a'])).prop_map(|(i, c)| Op::Flag(i, c)),
        2 => (0..8usize).prop_map(Op::Delete),
        1 => (0..8usize).prop_map(Op::PlantAtTarget),
        3 => Just(Op::Login),
        4 => (0..8usize).prop_map(Op::Retr),
        2 => ((0..8usize), 0..3u64).prop_map(|(i, k)| Op::Top(i, k)),
        4 => (0..8usize).prop_map(Op::Dele),
        1 => Just(Op::Rset),
        3 => Just(Op::Quit),
        1 => Just(Op::Drop),
    ]
}

type Shared = OnceLock<(tempfile::TempDir, Arc<Maildirs>)>;

/// One store per delete policy for all cases (the decoy hash is slow in
/// debug builds); each case has its own user directory.
fn shared(policy: &DeletePolicy) -> &'static (tempfile::TempDir, Arc<Maildirs>) {
    static REMOVE: Shared = OnceLock::new();
    static MOVE: Shared = OnceLock::new();
    static FLAG: Shared = OnceLock::new();
    let cell = match policy {
        DeletePolicy::Remove => &REMOVE,
        DeletePolicy::Move(_) => &MOVE,
        DeletePolicy::Flag => &FLAG,
    };
    cell.get_or_init(|| {
        let root = tempfile::tempdir().unwrap();
        let users = Users::single("unused", Stored::Plain("x".to_owned().into()));
        let policy = Policy {
            delete: policy.clone(),
            ..Policy::default()
        };
        let store = Maildirs::new(
            root.path().to_owned(),
            users,
            UidlSource::Auto,
            None,
            policy,
        );
        (root, store)
    })
}

/// The folder deleted messages are moved to, in the move policy's cases.
const TRASH: &str = ".Trash";

struct Session {
    handler: MaildirHandler,
    drop: Maildrop,
    /// Message number - 1 -> serial.
    serials: Vec<usize>,
    marked: BTreeSet<usize>,
}

struct World {
    rt: tokio::runtime::Runtime,
    store: Arc<Maildirs>,
    dir: PathBuf,
    outside: PathBuf,
    /// Serial -> body, for every message ever delivered.
    bodies: Vec<Vec<u8>>,
    /// Serial -> unique part.
    uniques: Vec<Vec<u8>>,
    /// Serials that should be on disk.
    alive: BTreeSet<usize>,
    uid_of: HashMap<usize, Uid>,
    serial_of: HashMap<Uid, usize>,
    session: Option<Session>,
    /// Deleted at QUIT, so in `TRASH`: `None` unless the policy moves.
    trashed: Option<BTreeSet<usize>>,
    /// Flagged `T` (deleted at QUIT, or by an IMAP server), so on disk but
    /// never listed: `None` unless the policy flags.
    hidden: Option<BTreeSet<usize>>,
}

fn serial_in(body: &[u8]) -> Option<usize> {
    let rest = body.strip_prefix(b"Subject: m")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}

fn crlf_size(body: &[u8]) -> u64 {
    let mut c = SizeCounter::new();
    c.push(body);
    c.finish()
}

impl World {
    fn new(policy: &DeletePolicy) -> Self {
        static CASE: AtomicUsize = AtomicUsize::new(0);
        let (root, store) = shared(policy);
        let case = CASE.fetch_add(1, Ordering::Relaxed);
        let dir = root.path().join(format!("case{case}"));
        for sub in ["new", "cur", "tmp"] {
            fs::create_dir_all(dir.join(sub)).unwrap();
        }
        // A file outside the Maildir, reachable through links inside it.
        let outside = root.path().join(format!("outside{case}"));
        fs::write(&outside, "outside the maildir").unwrap();
        for link in [
            "cur/1700000000.M0P0.link:2,S",
            "new/1700000000.M0P0.link",
            "pop3d-deleting.tmp",
            "pop3d-uidlist.tmp",
        ] {
            std::os::unix::fs::symlink(&outside, dir.join(link)).unwrap();
        }
        Self {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            store: store.clone(),
            dir,
            outside,
            bodies: Vec::new(),
            uniques: Vec::new(),
            alive: BTreeSet::new(),
            uid_of: HashMap::new(),
            serial_of: HashMap::new(),
            session: None,
            trashed: matches!(policy, DeletePolicy::Move(_)).then(BTreeSet::new),
            hidden: (*policy == DeletePolicy::Flag).then(BTreeSet::new),
        }
    }

    fn user(&self) -> String {
        self.dir.file_name().unwrap().to_string_lossy().into_owned()
    }

    /// Serial -> (folder, name) of every message file on disk.
    fn disk(&self) -> Result<HashMap<usize, (String, Vec<u8>)>, TestCaseError> {
        self.files_in(&self.dir)
    }

    /// The same for the messages in a Maildir (the user's, or a folder of it).
    fn files_in(
        &self,
        dir: &std::path::Path,
    ) -> Result<HashMap<usize, (String, Vec<u8>)>, TestCaseError> {
        let mut found = HashMap::new();
        for sub in ["new", "cur"] {
            let Ok(entries) = fs::read_dir(dir.join(sub)) else {
                continue; // a folder not made yet
            };
            for e in entries {
                let e = e.unwrap();
                if e.file_type().unwrap().is_symlink() {
                    continue;
                }
                let body = fs::read(e.path()).unwrap();
                let serial = serial_in(&body);
                prop_assert!(serial.is_some(), "a file pop3d made up: {:?}", e.path());
                let serial = serial.unwrap();
                prop_assert_eq!(&body, &self.bodies[serial], "message {} changed", serial);
                let old = found.insert(serial, (sub.to_owned(), e.file_name().into_vec()));
                prop_assert!(old.is_none(), "message {} is on disk twice", serial);
            }
        }
        Ok(found)
    }

    fn check(&self) -> Result<(), TestCaseError> {
        let disk = self.disk()?;
        let flagged = |(_, name): &(String, Vec<u8>)| names::has_flag(name, b'T');
        let on_disk: BTreeSet<usize> = disk
            .iter()
            .filter(|(_, at)| self.hidden.is_none() || !flagged(at))
            .map(|(&serial, _)| serial)
            .collect();
        prop_assert_eq!(&on_disk, &self.alive, "messages on disk");
        if let Some(hidden) = &self.hidden {
            let trashed: BTreeSet<usize> = disk
                .iter()
                .filter(|(_, at)| flagged(at))
                .map(|(&serial, _)| serial)
                .collect();
            prop_assert_eq!(&trashed, hidden, "messages flagged T");
        }
        prop_assert_eq!(fs::read(&self.outside).unwrap(), b"outside the maildir");
        if let Some(trashed) = &self.trashed {
            let in_trash: BTreeSet<usize> = self
                .files_in(&self.dir.join(TRASH))?
                .keys()
                .copied()
                .collect();
            prop_assert_eq!(&in_trash, trashed, "messages in {}", TRASH);
        }
        Ok(())
    }

    /// The `i`-th alive message on disk, with where it is.
    fn pick(&self, i: usize) -> Result<Option<(usize, String, Vec<u8>)>, TestCaseError> {
        let disk = self.disk()?;
        let alive: Vec<usize> = self.alive.iter().copied().collect();
        if alive.is_empty() {
            return Ok(None);
        }
        let serial = alive[i % alive.len()];
        let (sub, name) = disk[&serial].clone();
        Ok(Some((serial, sub, name)))
    }

    fn exists(&self, sub: &str, name: &[u8]) -> bool {
        fs::symlink_metadata(self.path(sub, name)).is_ok()
    }

    fn path(&self, sub: &str, name: &[u8]) -> PathBuf {
        self.dir.join(sub).join(std::ffi::OsStr::from_bytes(name))
    }

    /// A body for the next serial: unique, of a length no other has.
    fn next_body(&mut self, lf: bool) -> (usize, Vec<u8>) {
        let serial = self.bodies.len();
        let eol = if lf { "\n" } else { "\r\n" };
        let mut body = format!("Subject: m{serial}{eol}{eol}").into_bytes();
        body.extend(std::iter::repeat_n(b'x', serial * 8 + 1));
        body.extend_from_slice(eol.as_bytes());
        if serial.is_multiple_of(3) {
            body.extend_from_slice(b".dot line");
        }
        (serial, body)
    }

    /// Writes a message through `tmp/`, then renames it into place, as a
    /// delivery agent does; `false` if that name is taken.
    fn deliver_at(&mut self, sub: &str, name: &[u8], unique: Vec<u8>, lf: bool) -> bool {
        let (serial, body) = self.next_body(lf);
        self.deliver_body_at(sub, name, unique, serial, body)
    }

    fn deliver_body_at(
        &mut self,
        sub: &str,
        name: &[u8],
        unique: Vec<u8>,
        serial: usize,
        body: Vec<u8>,
    ) -> bool {
        if self.exists(sub, name) {
            return false;
        }
        let tmp = self.dir.join("tmp").join(format!("delivery{serial}"));
        fs::write(&tmp, &body).unwrap();
        fs::rename(&tmp, self.path(sub, name)).unwrap();
        self.bodies.push(body);
        self.uniques.push(unique);
        self.alive.insert(serial);
        true
    }

    fn listed(&mut self) -> Result<(), TestCaseError> {
        let session = self.session.as_mut().unwrap();
        for (n, m) in session.drop.messages().iter().enumerate() {
            let serial = session.serials[n];
            prop_assert_eq!(
                m.size,
                crlf_size(&self.bodies[serial]),
                "size of {}",
                serial
            );
            match self.uid_of.get(&serial) {
                Some(uid) => prop_assert_eq!(uid, &m.uid, "uid of message {} changed", serial),
                None => {
                    let other = self.serial_of.get(&m.uid);
                    prop_assert!(
                        other.is_none(),
                        "uid {} of message {:?} given to {}",
                        m.uid,
                        other,
                        serial
                    );
                    self.uid_of.insert(serial, m.uid.clone());
                    self.serial_of.insert(m.uid.clone(), serial);
                }
            }
        }
        Ok(())
    }

    fn read(&mut self, number: usize, top: Option<u64>) -> Result<Vec<u8>, HandlerError> {
        let session = self.session.as_mut().unwrap();
        let m = &session.drop.messages()[number];
        let r = MessageRef {
            number: number as u32 + 1,
            uid: m.uid.clone(),
            size: m.size,
        };
        let h = &mut session.handler;
        self.rt.block_on(async {
            let mut body = h.open(&r, top).await?;
            let mut all = Vec::new();
            while let Some(chunk) = body.next_chunk().await? {
                all.extend_from_slice(&chunk);
            }
            Ok(all)
        })
    }

    fn apply(&mut self, op: Op) -> Result<(), TestCaseError> {
        match op {
            Op::Deliver {
                naming,
                to_cur,
                flags,
                lf,
            } => {
                let serial = self.bodies.len();
                let secs = 1_700_000_000 + serial as u64;
                let unique: Vec<u8> = match naming {
                    Naming::Plain => format!("{secs}.M{serial}P7.host").into_bytes(),
                    Naming::Long => format!("{secs}.M{serial}P7Q1R0123456789abcdef.mx01.mail-cluster-frontend.example.com").into_bytes(),
                    Naming::NonUtf8 => {
                        let mut u = format!("{secs}.M{serial}P7.h").into_bytes();
                        u.extend_from_slice(b"\xff\xfe");
                        u
                    }
                    Naming::Space => format!("{secs}.M{serial}P7.with space").into_bytes(),
                    Naming::ShareWith(i) => match self.uniques.get(i) {
                        Some(u) => u.clone(),
                        None => format!("{secs}.M{serial}P7.host").into_bytes(),
                    },
                };
                let (sub, name) = if to_cur || flags {
                    let mut n = unique.clone();
                    n.extend_from_slice(format!(",S={serial}").as_bytes());
                    n.extend_from_slice(if flags { b":2,S" } else { b":2," });
                    (if to_cur { "cur" } else { "new" }, n)
                } else {
                    let mut n = unique.clone();
                    if matches!(naming, Naming::ShareWith(_)) {
                        n.extend_from_slice(format!(",S={serial}").as_bytes());
                    }
                    ("new", n)
                };
                self.deliver_at(sub, &name, unique, lf);
            }
            Op::MoveToCur(i) => {
                if let Some((_, sub, name)) = self.pick(i)? {
                    let (base, _) = names::split_info(&name);
                    let mut target = base.to_vec();
                    target.extend_from_slice(b":2,");
                    if sub == "new" && !self.exists("cur", &target) {
                        fs::rename(self.path("new", &name), self.path("cur", &target)).unwrap();
                    }
                }
            }
            Op::Flag(i, flag) => {
                if let Some((serial, sub, name)) = self.pick(i)? {
                    if sub == "cur" && !name.contains(&(flag as u8)) {
                        let mut target = name.clone();
                        if !target.windows(3).any(|w| w == b":2,") {
                            target.extend_from_slice(b":2,");
                        }
                        target.push(flag as u8);
                        if !self.exists("cur", &target) {
                            fs::rename(self.path("cur", &name), self.path("cur", &target)).unwrap();
                            if let (Some(hidden), 'T') = (&mut self.hidden, flag) {
                                // IMAP's \Deleted: no longer a POP3 message.
                                self.alive.remove(&serial);
                                hidden.insert(serial);
                            }
                        }
                    }
                }
            }
            Op::Delete(i) => {
                if let Some((serial, sub, name)) = self.pick(i)? {
                    fs::remove_file(self.path(&sub, &name)).unwrap();
                    self.alive.remove(&serial);
                }
            }
            Op::PlantAtTarget(i) => {
                if let Some((serial, sub, name)) = self.pick(i)? {
                    if sub == "new" {
                        // Honest about its size: the name's `,W=` is this
                        // body's CRLF size too; its raw length differs from
                        // every message of that unique part, so it is
                        // another message, not a copy of one.
                        let victim = &self.bodies[serial];
                        let size = crlf_size(victim);
                        let target = names::cur_name(&name, size);
                        let unique = names::unique_part(&target).to_vec();
                        let planted = self.bodies.len();
                        let header = format!("Subject: m{planted}");
                        // Raw lengths already taken by messages of this unique part.
                        let taken: Vec<usize> = (0..self.bodies.len())
                            .filter(|&s| self.uniques[s] == unique)
                            .map(|s| self.bodies[s].len())
                            .collect();
                        // CRLF size fixed at `size`; each extra bare-LF line
                        // shortens the raw length by one.
                        let body = (0..16).find_map(|extra: usize| {
                            let lf = extra > 0;
                            let eol = if lf { "\n" } else { "\r\n" };
                            let filler =
                                (size as usize).checked_sub(header.len() + 6 + 3 * extra)?;
                            let mut body = format!("{header}{eol}{eol}").into_bytes();
                            body.extend(std::iter::repeat_n(b'y', filler));
                            body.extend_from_slice(eol.as_bytes());
                            for _ in 0..extra {
                                body.extend_from_slice(b"y\n");
                            }
                            (crlf_size(&body) == size && !taken.contains(&body.len()))
                                .then_some(body)
                        });
                        if let Some(body) = body {
                            self.deliver_body_at("cur", &target, unique, planted, body);
                        }
                    }
                }
            }
            Op::Login => {
                if self.session.is_some() {
                    return Ok(());
                }
                let mut handler = self.store.handler();
                let user = self.user();
                let drop = self.rt.block_on(handler.lock(&user));
                prop_assert!(drop.is_ok(), "lock: {:?}", drop.err());
                let drop = drop.unwrap();
                self.session = Some(Session {
                    handler,
                    drop,
                    serials: Vec::new(),
                    marked: BTreeSet::new(),
                });
                // Which message is which: every listed file read whole
                // (TOP streams the whole file; the core does the cut-off).
                let count = self.session.as_ref().unwrap().drop.messages().len();
                let mut serials = Vec::with_capacity(count);
                for n in 0..count {
                    let body = self.read(n, Some(u64::MAX));
                    prop_assert!(
                        body.is_ok(),
                        "open {} right after login: {:?}",
                        n + 1,
                        body.err()
                    );
                    let body = body.unwrap();
                    let serial = serial_in(&body);
                    prop_assert!(serial.is_some(), "message {} is not one delivered", n + 1);
                    serials.push(serial.unwrap());
                }
                let listed: BTreeSet<usize> = serials.iter().copied().collect();
                prop_assert_eq!(listed.len(), serials.len(), "a message listed twice");
                prop_assert_eq!(&listed, &self.alive, "the listing");
                self.session.as_mut().unwrap().serials = serials;
                self.listed()?;
            }
            Op::Retr(i) | Op::Top(i, _) => {
                let Some(session) = &self.session else {
                    return Ok(());
                };
                if session.serials.is_empty() {
                    return Ok(());
                }
                let n = i % session.serials.len();
                if session.marked.contains(&n) {
                    return Ok(()); // the core refuses a deleted message
                }
                let serial = session.serials[n];
                let top = match op {
                    Op::Top(_, k) => Some(k),
                    _ => None,
                };
                let got = self.read(n, top);
                // A message an IMAP server flagged T meanwhile is still there.
                let hidden = self.hidden.as_ref().is_some_and(|h| h.contains(&serial));
                if self.alive.contains(&serial) || hidden {
                    prop_assert!(got.is_ok(), "RETR of message {}: {:?}", serial, got.err());
                    prop_assert_eq!(
                        got.unwrap(),
                        self.bodies[serial].clone(),
                        "bytes of {}",
                        serial
                    );
                } else {
                    prop_assert!(
                        matches!(got, Err(HandlerError::Reportable(_))),
                        "a message removed by another program is refused, not replaced"
                    );
                }
            }
            Op::Dele(i) => {
                if let Some(session) = &mut self.session {
                    if !session.serials.is_empty() {
                        let n = i % session.serials.len();
                        session.marked.insert(n);
                    }
                }
            }
            Op::Rset => {
                if let Some(session) = &mut self.session {
                    session.marked.clear();
                }
            }
            Op::Quit => {
                let Some(mut session) = self.session.take() else {
                    return Ok(());
                };
                let refs: Vec<MessageRef> = session
                    .marked
                    .iter()
                    .map(|&n| {
                        let m = &session.drop.messages()[n];
                        MessageRef {
                            number: n as u32 + 1,
                            uid: m.uid.clone(),
                            size: m.size,
                        }
                    })
                    .collect();
                let result = self.rt.block_on(session.handler.commit(&refs));
                self.rt.block_on(session.handler.unlock());
                prop_assert!(result.is_ok(), "commit: {:?}", result.err());
                for n in &session.marked {
                    let serial = session.serials[*n];
                    // One removed meanwhile by another program is not moved.
                    if self.alive.remove(&serial) {
                        if let Some(trashed) = &mut self.trashed {
                            trashed.insert(serial);
                        }
                        if let Some(hidden) = &mut self.hidden {
                            hidden.insert(serial);
                        }
                    }
                }
            }
            Op::Drop => {
                if let Some(mut session) = self.session.take() {
                    self.rt.block_on(session.handler.unlock());
                }
            }
        }
        Ok(())
    }
}

fn run(policy: &DeletePolicy, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut world = World::new(policy);
    for op in ops {
        world.apply(op)?;
        world.check()?;
    }
    // Close any session, then one more login checks every id again.
    world.apply(Op::Drop)?;
    world.apply(Op::Login)?;
    world.apply(Op::Quit)?;
    world.check()?;
    for link in ["cur/1700000000.M0P0.link:2,S", "new/1700000000.M0P0.link"] {
        prop_assert!(
            fs::symlink_metadata(world.dir.join(link)).is_ok(),
            "{} left alone",
            link
        );
    }
    let _ = fs::remove_dir_all(&world.dir);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_store_keeps_every_promise(ops in prop::collection::vec(op(), 1..48)) {
        run(&DeletePolicy::Remove, ops)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_move_policy_keeps_every_promise_and_loses_nothing(
        ops in prop::collection::vec(op(), 1..48),
    ) {
        run(&DeletePolicy::Move(TRASH.to_owned()), ops)?;
    }

    #[test]
    fn the_flag_policy_keeps_every_promise_and_hides_what_it_flags(
        ops in prop::collection::vec(op(), 1..48),
    ) {
        run(&DeletePolicy::Flag, ops)?;
    }
}
