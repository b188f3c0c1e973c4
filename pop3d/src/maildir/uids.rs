//! Unique ids that stay with their message forever: `pop3d-uidlist`.
//!
//! A message's UIDL is decided the first time pop3d lists it and recorded,
//! with the file's inode and unique part, in `pop3d-uidlist` in the
//! Maildir. Why a state file and not ids derived from each file alone:
//! two files can share a unique part (a restored backup, a copy), and the
//! one that had the plain id before the other appeared must keep it, and
//! the other must keep its own after the first is deleted; no function of
//! one file can know which came first, and a listing-order rule gives the
//! plain id to whichever file sorts first today. So:
//!
//! - a recorded file (found by inode, with the same unique part and
//!   length; renames keep the inode) keeps its recorded id;
//! - a recorded id whose inode is gone is given to the one unrecorded file
//!   with the same unique part and length, when there is exactly one: that
//!   is the same message, copied or restored (a Maildir moved to another
//!   disk changes every inode); otherwise the id is retired;
//! - retired ids (those of messages pop3d removed at QUIT, at once) are
//!   kept in the file and never given again;
//! - a new file gets, in delivery order, the id another server promised
//!   for it (see [`UidlSource`]) or else its unique part as is (a digest
//!   of it when it is not a valid UIDL); if that id is taken (held, retired
//!   or promised to another message), a fresh `pop3d-<salt>-<n>` id, from a
//!   counter that only grows.
//!
//! ```text
//! pop3d-uidlist 1 salt=<8 hex> next=<n> source=<maildir|dovecot|courier>
//! + <uid> <inode> <length> <escaped unique part>
//! - <retired uid>
//! ```

use std::collections::{HashMap, HashSet};
use std::io;
use std::time::{SystemTime, UNIX_EPOCH};

use pop3_proto::Uid;

use super::fsx::Dirs;
use super::names::{base_uid, escape, split_info, unescape, unique_part};

pub(crate) const STATE: &str = "pop3d-uidlist";
pub(crate) const DOVECOT: &str = "dovecot-uidlist";
pub(crate) const COURIER: &str = "courierpop3dsizelist";
const STATE_MAX: u64 = 256 << 20;

/// Where the UIDLs of messages pop3d has not listed before come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum UidlSource {
    /// Dovecot's or Courier's if the Maildir carries that server's POP3
    /// state (`dovecot-uidlist`, else `courierpop3dsizelist`) and pop3d has
    /// never served it; otherwise the Maildir names. Decided once per
    /// Maildir and recorded.
    #[default]
    Auto,
    /// Dovecot's `dovecot-uidlist`: an explicit `P<uidl>` field, else
    /// `pop3_uidl_format`'s default `%08Xu%08Xv` (IMAP UID and UIDVALIDITY
    /// as 8 upper-case hex digits each).
    Dovecot,
    /// Courier's `courierpop3dsizelist`: `UID<uid>-<uidvalidity>`.
    Courier,
    /// The Maildir unique names only.
    Maildir,
}

impl UidlSource {
    fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Dovecot => "dovecot",
            Self::Courier => "courier",
            Self::Maildir => "maildir",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "dovecot" => Self::Dovecot,
            "courier" => Self::Courier,
            "maildir" => Self::Maildir,
            _ => return None,
        })
    }
}

/// A message that needs an id: its name, unique part and inode.
#[derive(Debug, Clone)]
pub(crate) struct Want<'a> {
    pub(crate) name: &'a [u8],
    pub(crate) ino: u64,
    pub(crate) len: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Held {
    uid: Uid,
    ino: u64,
    len: u64,
    unique: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct State {
    salt: String,
    next: u64,
    source: UidlSource,
    held: Vec<Held>,
    retired: Vec<Uid>,
}

impl State {
    fn render(&self) -> String {
        let mut text = format!(
            "pop3d-uidlist 1 salt={} next={} source={}\n",
            self.salt,
            self.next,
            self.source.name()
        );
        for h in &self.held {
            text.push_str(&format!(
                "+ {} {} {} {}\n",
                h.uid,
                h.ino,
                h.len,
                escape(&h.unique)
            ));
        }
        for r in &self.retired {
            text.push_str(&format!("- {r}\n"));
        }
        text
    }

    fn parse(data: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(data).ok()?;
        let mut lines = text.split_terminator('\n');
        let mut header = lines.next()?.split(' ');
        if header.next()? != "pop3d-uidlist" || header.next()? != "1" {
            return None;
        }
        let salt = header.next()?.strip_prefix("salt=")?.to_owned();
        let next = header.next()?.strip_prefix("next=")?.parse().ok()?;
        let source = UidlSource::parse(header.next()?.strip_prefix("source=")?)?;
        if header.next().is_some()
            || salt.len() != 8
            || !salt.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return None;
        }
        let mut state = Self {
            salt,
            next,
            source,
            held: Vec::new(),
            retired: Vec::new(),
        };
        for line in lines {
            let fields: Vec<&str> = line.split(' ').collect();
            match fields[..] {
                ["+", uid, ino, len, unique] => state.held.push(Held {
                    uid: Uid::new(uid).ok()?,
                    ino: ino.parse().ok()?,
                    len: len.parse().ok()?,
                    unique: unescape(unique)?,
                }),
                ["-", uid] => state.retired.push(Uid::new(uid).ok()?),
                _ => return None,
            }
        }
        Some(state)
    }

    fn fresh(source: UidlSource) -> Self {
        use argon2::password_hash::rand_core::{OsRng, RngCore as _};
        Self {
            salt: format!("{:08x}", OsRng.next_u32()),
            next: 1,
            source,
            held: Vec::new(),
            retired: Vec::new(),
        }
    }
}

/// The ids another server promised, by file name up to its `:` (and by
/// unique part, where only one entry has it).
#[derive(Debug, Default)]
pub(crate) struct Imported {
    by_base: HashMap<Vec<u8>, Uid>,
    by_unique: HashMap<Vec<u8>, Option<Uid>>,
    all: HashSet<Uid>,
}

impl Imported {
    fn add(&mut self, filename: &[u8], uid: Uid) {
        let base = split_info(filename).0.to_vec();
        self.by_unique
            .entry(unique_part(&base).to_vec())
            .and_modify(|u| *u = None)
            .or_insert_with(|| Some(uid.clone()));
        self.by_base.insert(base, uid.clone());
        self.all.insert(uid);
    }

    fn get(&self, name: &[u8]) -> Option<&Uid> {
        let base = split_info(name).0;
        self.by_base
            .get(base)
            .or_else(|| self.by_unique.get(unique_part(base))?.as_ref())
    }
}

/// Reads Dovecot's `dovecot-uidlist` (versions 1 and 3). Version 3:
/// header `3 V<uidvalidity> N<next uid> ...`, entries
/// `<uid> [<key><value> ...] :<file name>` where key `P` is an explicit
/// POP3 UIDL; without one the UIDL is `%08Xu%08Xv`. Version 1: header
/// `1 <uidvalidity> <next uid>`, entries `<uid> <file name>`.
pub(crate) fn parse_dovecot(data: &[u8]) -> Option<Imported> {
    let mut lines = data.split(|&b| b == b'\n').filter(|l| !l.is_empty());
    let header = std::str::from_utf8(lines.next()?).ok()?;
    let mut fields = header.split(' ');
    let version = fields.next()?;
    let uidvalidity: u32 = match version {
        "3" => fields.find_map(|f| f.strip_prefix('V'))?.parse().ok()?,
        "1" => fields.next()?.parse().ok()?,
        _ => return None,
    };
    let mut out = Imported::default();
    for line in lines {
        let (uid, extensions, filename): (u32, &[u8], &[u8]) = if version == "3" {
            let colon = line.windows(2).position(|w| w == b" :")?;
            let head = &line[..colon];
            let (uid, ext) = match head.iter().position(|&b| b == b' ') {
                Some(i) => (&head[..i], &head[i + 1..]),
                None => (head, &b""[..]),
            };
            (
                std::str::from_utf8(uid).ok()?.parse().ok()?,
                ext,
                &line[colon + 2..],
            )
        } else {
            let sp = line.iter().position(|&b| b == b' ')?;
            (
                std::str::from_utf8(&line[..sp]).ok()?.parse().ok()?,
                &b""[..],
                &line[sp + 1..],
            )
        };
        let explicit = extensions
            .split(|&b| b == b' ')
            .find_map(|f| f.strip_prefix(b"P"))
            .and_then(|p| Uid::new(std::str::from_utf8(p).ok()?).ok());
        let uidl = explicit
            .unwrap_or_else(|| Uid::new(format!("{uid:08X}{uidvalidity:08X}")).expect("hex"));
        out.add(filename, uidl);
    }
    Some(out)
}

/// Reads Courier's `courierpop3dsizelist` (versions 2 and 3): header
/// `/<version> <next uid> <uidvalidity>`, entries
/// `<file name> <size> <uid>:<uidvalidity>[:<utf8>]`. Courier's UIDL is
/// `UID<uid>-<uidvalidity>` (`UID<uid>` with no uidvalidity); a uid of 0
/// means the file name up to `:`, with `+XX` for other octets.
pub(crate) fn parse_courier(data: &[u8]) -> Option<Imported> {
    let mut lines = data.split(|&b| b == b'\n').filter(|l| !l.is_empty());
    let header = std::str::from_utf8(lines.next()?).ok()?;
    let mut fields = header.strip_prefix('/')?.split(' ');
    if !matches!(fields.next()?, "2" | "3") {
        return None;
    }
    let mut out = Imported::default();
    for line in lines {
        let last = line.iter().rposition(|&b| b == b' ')?;
        let size_at = line[..last].iter().rposition(|&b| b == b' ')?;
        let (filename, ids) = (
            &line[..size_at],
            std::str::from_utf8(&line[last + 1..]).ok()?,
        );
        std::str::from_utf8(&line[size_at + 1..last])
            .ok()?
            .parse::<u64>()
            .ok()?;
        let mut ids = ids.split(':');
        let uid: u64 = ids.next()?.parse().ok()?;
        let uidv: u64 = ids.next()?.parse().ok()?;
        let uidl = if uid == 0 {
            let mut s = String::new();
            for &b in split_info(filename).0 {
                if (0x21..=0x7e).contains(&b) && !matches!(b, b'\'' | b'"' | b'+') {
                    s.push(b as char);
                } else {
                    s.push_str(&format!("+{b:02X}"));
                }
            }
            s
        } else if uidv == 0 {
            format!("UID{uid}")
        } else {
            format!("UID{uid}-{uidv}")
        };
        if let Ok(uidl) = Uid::new(uidl) {
            out.add(filename, uidl);
        }
    }
    Some(out)
}

/// Reads another server's POP3 state file.
type Parser = fn(&[u8]) -> Option<Imported>;

fn import(dirs: &Dirs, source: UidlSource, maildir: &str) -> io::Result<Option<Imported>> {
    let (file, parse): (&str, Parser) = match source {
        UidlSource::Dovecot => (DOVECOT, parse_dovecot),
        UidlSource::Courier => (COURIER, parse_courier),
        UidlSource::Auto | UidlSource::Maildir => return Ok(None),
    };
    let Some(data) = dirs.read_file(file, STATE_MAX)? else {
        return Ok(None);
    };
    let imported = parse(&data);
    if imported.is_none() {
        tracing::warn!(
            maildir,
            file,
            "not in a format pop3d reads; its UIDLs are not used"
        );
    }
    Ok(imported)
}

fn set_aside(dirs: &Dirs, name: &str, maildir: &str, why: &str) -> io::Result<()> {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let aside = format!("{name}.rejected-{secs}");
    tracing::error!(maildir, file = name, aside, why, "set aside");
    dirs.rename_file(name, &aside)
}

/// Retires the ids of messages pop3d has just removed, at once: a file of
/// the same unique part and length appearing later is then a new message,
/// never taken for one of these restored.
pub(crate) fn retire(dirs: &Dirs, removed: &[Uid]) -> io::Result<()> {
    let Some(data) = dirs.read_file(STATE, STATE_MAX)? else {
        return Ok(());
    };
    let Some(mut state) = State::parse(&data) else {
        return Ok(()); // set aside at the next login
    };
    let before = state.held.len();
    state.held.retain(|h| !removed.contains(&h.uid));
    if state.held.len() == before {
        return Ok(());
    }
    state.retired.extend(removed.iter().cloned());
    state.retired.sort();
    state.retired.dedup();
    dirs.write_file(STATE, state.render().as_bytes())
}

/// The ids of these messages (in delivery order), recorded. `served_before`:
/// pop3d has locked this Maildir before (so its clients already hold
/// Maildir-name ids, and `auto` must not switch to another server's).
/// `dry`: nothing is written, and `None` if something would be (no state
/// yet, an unreadable one, or any id to assign, move or retire).
pub(crate) fn assign(
    dirs: &Dirs,
    wants: &[Want<'_>],
    setting: UidlSource,
    served_before: bool,
    maildir: &str,
    dry: bool,
) -> io::Result<Option<Vec<Uid>>> {
    let loaded = match dirs.read_file(STATE, STATE_MAX) {
        Ok(Some(data)) => match State::parse(&data) {
            Some(state) => Some(state),
            None if dry => return Ok(None),
            None => {
                set_aside(dirs, STATE, maildir, "unique-id state does not parse")?;
                None
            }
        },
        Ok(None) if dry => return Ok(None),
        Ok(None) => None,
        Err(_) if dry => return Ok(None),
        Err(e) => {
            set_aside(dirs, STATE, maildir, &e.to_string())?;
            None
        }
    };
    let mut changed = loaded.is_none();
    let mut state = loaded.unwrap_or_else(|| {
        let source = match setting {
            UidlSource::Auto if served_before => UidlSource::Maildir,
            UidlSource::Auto => {
                if dirs.has(DOVECOT).unwrap_or(false) {
                    UidlSource::Dovecot
                } else if dirs.has(COURIER).unwrap_or(false) {
                    UidlSource::Courier
                } else {
                    UidlSource::Maildir
                }
            }
            explicit => explicit,
        };
        tracing::info!(
            maildir,
            source = source.name(),
            "unique ids for new messages"
        );
        State::fresh(source)
    });
    if setting != UidlSource::Auto && state.source != setting {
        state.source = setting;
        changed = true;
    }

    let uniques: Vec<&[u8]> = wants.iter().map(|w| unique_part(w.name)).collect();
    let mut ids: Vec<Option<Uid>> = vec![None; wants.len()];
    let mut used = vec![false; state.held.len()];
    // 1. Recorded files, by inode (a rename keeps it).
    let by_ino: HashMap<u64, usize> = state
        .held
        .iter()
        .enumerate()
        .map(|(k, h)| (h.ino, k))
        .collect();
    for (i, w) in wants.iter().enumerate() {
        if let Some(&k) = by_ino.get(&w.ino) {
            let h = &state.held[k];
            if !used[k] && h.unique == uniques[i] && h.len == wants[i].len {
                ids[i] = Some(state.held[k].uid.clone());
                used[k] = true;
            }
        }
    }
    // 2. An id whose inode is gone goes to the one new file of its unique part.
    let mut orphans: HashMap<(&[u8], u64), Vec<usize>> = HashMap::new();
    for (k, h) in state.held.iter().enumerate() {
        if !used[k] {
            orphans.entry((&h.unique, h.len)).or_default().push(k);
        }
    }
    let mut unassigned: HashMap<(&[u8], u64), Vec<usize>> = HashMap::new();
    for (i, id) in ids.iter().enumerate() {
        if id.is_none() {
            unassigned
                .entry((uniques[i], wants[i].len))
                .or_default()
                .push(i);
        }
    }
    for (unique, ks) in &orphans {
        if let ([k], Some([i])) = (&ks[..], unassigned.get(unique).map(Vec::as_slice)) {
            ids[*i] = Some(state.held[*k].uid.clone());
            used[*k] = true;
            changed = true;
        }
    }
    // 3. The rest of the recorded ids are retired, for good.
    for (k, h) in state.held.iter().enumerate() {
        if !used[k] {
            state.retired.push(h.uid.clone());
            changed = true;
        }
    }
    // 4. New files.
    let mut taken: HashSet<Uid> = ids.iter().flatten().cloned().collect();
    taken.extend(state.retired.iter().cloned());
    if dry && (changed || ids.iter().any(Option::is_none)) {
        return Ok(None);
    }
    let imported = if ids.iter().any(Option::is_none) {
        import(dirs, state.source, maildir)?
    } else {
        None
    };
    for i in 0..wants.len() {
        if ids[i].is_some() {
            continue;
        }
        changed = true;
        let promised = imported.as_ref().and_then(|m| m.get(wants[i].name));
        let candidate = match promised {
            Some(uid) => uid.clone(),
            None => base_uid(uniques[i]),
        };
        let clashes = |uid: &Uid| {
            taken.contains(uid)
                || (promised.is_none_or(|p| p != uid)
                    && imported.as_ref().is_some_and(|m| m.all.contains(uid)))
        };
        let uid = if clashes(&candidate) {
            loop {
                let fresh = Uid::new(format!("pop3d-{}-{}", state.salt, state.next))
                    .expect("a short ascii id");
                state.next += 1;
                if !clashes(&fresh) {
                    break fresh;
                }
            }
        } else {
            candidate
        };
        taken.insert(uid.clone());
        ids[i] = Some(uid);
    }
    let ids: Vec<Uid> = ids
        .into_iter()
        .map(|id| id.expect("every message has an id"))
        .collect();
    state.held = wants
        .iter()
        .zip(&ids)
        .map(|(w, uid)| Held {
            uid: uid.clone(),
            ino: w.ino,
            len: w.len,
            unique: unique_part(w.name).to_vec(),
        })
        .collect();
    if changed {
        dirs.write_file(STATE, state.render().as_bytes())?;
    }
    Ok(Some(ids))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips() {
        let mut s = State::fresh(UidlSource::Dovecot);
        s.held.push(Held {
            uid: Uid::new("a").unwrap(),
            ino: 7,
            len: 9,
            unique: b"1.x y\xff".to_vec(),
        });
        s.retired.push(Uid::new("b").unwrap());
        assert_eq!(State::parse(s.render().as_bytes()), Some(s));
        assert_eq!(
            State::parse(b"pop3d-uidlist 1 salt=zz next=1 source=maildir\n"),
            None
        );
        assert_eq!(State::parse(b"junk"), None);
    }
}
