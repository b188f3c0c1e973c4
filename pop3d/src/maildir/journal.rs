//! The delete journal, `pop3d-deleting`: the files a QUIT is removing,
//! written before the first one is removed, so that a crash midway is
//! finished at the next login.
//!
//! ```text
//! pop3d-deleting 1[ move <folder>| flag]
//! cur/<escaped name> <dev> <ino> <length>
//! ```
//!
//! The header says what deleting means ([`DeletePolicy`]): removing the
//! files (the plain header, as before there were policies), moving them
//! into a Maildir++ folder, or flagging them `T`. A crash is finished with
//! the action the journal names, the one the client was promised.
//!
//! The journal is never trusted further than it has to be: an entry is a
//! plain name inside this Maildir's `new/` or `cur/` (no `/`, no `..`),
//! and a file is removed only if it is that very file (device, inode and
//! length; found at the name or, renamed by another program, elsewhere in
//! `new/` or `cur/`). A journal that does not parse is set aside, logged,
//! and never acted on.

use std::io;
use std::time::{SystemTime, UNIX_EPOCH};

use super::fsx::{Dirs, Identity, Sub};
use super::names::{escape, has_flag, is_plain_name, show, unescape, unique_part, with_flag};
use super::policy::DeletePolicy;

pub(crate) const JOURNAL: &str = "pop3d-deleting";
const HEADER: &str = "pop3d-deleting 1";
/// A journal is a few lines per message; anything bigger is not ours.
const JOURNAL_MAX: u64 = 64 << 20;

/// One file to remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Doomed {
    pub(crate) sub: Sub,
    pub(crate) name: Vec<u8>,
    pub(crate) id: Identity,
}

pub(crate) fn render(policy: &DeletePolicy, doomed: &[Doomed]) -> String {
    let mut text = match policy {
        DeletePolicy::Remove => format!("{HEADER}\n"),
        DeletePolicy::Move(folder) => format!("{HEADER} move {folder}\n"),
        DeletePolicy::Flag => format!("{HEADER} flag\n"),
    };
    for d in doomed {
        text.push_str(&format!(
            "{}/{} {} {} {}\n",
            d.sub.as_str(),
            escape(&d.name),
            d.id.dev,
            d.id.ino,
            d.id.len
        ));
    }
    text
}

/// Parses a journal; `None` if any part of it is not exactly what
/// [`render`] writes.
pub(crate) fn parse(data: &[u8]) -> Option<(DeletePolicy, Vec<Doomed>)> {
    let text = std::str::from_utf8(data).ok()?;
    let mut lines = text.split_terminator('\n');
    let policy = match lines.next()?.strip_prefix(HEADER)? {
        "" => DeletePolicy::Remove,
        " flag" => DeletePolicy::Flag,
        other => match format!("move:{}", other.strip_prefix(" move ")?)
            .parse()
            .ok()?
        {
            DeletePolicy::Move(folder) => DeletePolicy::Move(folder),
            _ => return None,
        },
    };
    let doomed = lines
        .map(|line| {
            let mut fields = line.split(' ');
            let path = fields.next()?;
            let (sub, name) = path.split_once('/')?;
            let sub = match sub {
                "new" => Sub::New,
                "cur" => Sub::Cur,
                _ => return None,
            };
            let name = unescape(name)?;
            if !is_plain_name(&name) {
                return None;
            }
            let mut num = || -> Option<u64> { fields.next()?.parse().ok() };
            let id = Identity {
                dev: num()?,
                ino: num()?,
                len: num()?,
            };
            if fields.next().is_some() {
                return None;
            }
            Some(Doomed { sub, name, id })
        })
        .collect::<Option<_>>()?;
    Some((policy, doomed))
}

/// What became of one doomed file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Removed, moved or flagged now.
    Done,
    /// Not there any more (another program removed it, or the action was
    /// done before a crash): nothing to do.
    Gone,
}

/// A [`DeletePolicy`] ready to act: the folder opened for a move.
pub(crate) enum Disposal {
    Remove,
    Move(Dirs),
    Flag,
}

impl Disposal {
    /// Opens what `policy` needs (creating a move's folder if missing).
    pub(crate) fn open(dirs: &Dirs, policy: &DeletePolicy) -> io::Result<Self> {
        Ok(match policy {
            DeletePolicy::Remove => Self::Remove,
            DeletePolicy::Move(folder) => Self::Move(dirs.folder(folder)?),
            DeletePolicy::Flag => Self::Flag,
        })
    }

    /// Makes the changes durable: the folders touched are synced.
    pub(crate) fn sync(&self, dirs: &Dirs) -> io::Result<()> {
        for sub in Sub::BOTH {
            dirs.sync(Some(sub))?;
            if let Self::Move(folder) = self {
                folder.sync(Some(sub))?;
            }
        }
        Ok(())
    }
}

/// Where exactly this file is now: at its name, or wherever another
/// program renamed it in `new/` or `cur/` (same device, inode, length and
/// unique part).
fn locate(dirs: &Dirs, d: &Doomed) -> io::Result<Option<(Sub, Vec<u8>)>> {
    Ok(dirs
        .find(&d.id, (d.sub, &d.name))?
        .filter(|(_, name)| unique_part(name) == unique_part(&d.name)))
}

/// Does the policy's action to exactly this file, or nothing if it is gone.
pub(crate) fn dispose(dirs: &Dirs, d: &Doomed, how: &Disposal) -> io::Result<Outcome> {
    match how {
        Disposal::Remove => remove(dirs, d),
        Disposal::Move(folder) => {
            let Some((sub, name)) = locate(dirs, d)? else {
                return Ok(Outcome::Gone);
            };
            if dirs.move_noreplace(sub, &name, folder, sub, &name)? {
                Ok(Outcome::Done)
            } else {
                Err(io::Error::other(
                    "the folder has a message of this name already",
                ))
            }
        }
        Disposal::Flag => {
            let Some((sub, name)) = locate(dirs, d)? else {
                return Ok(Outcome::Gone);
            };
            if has_flag(&name, b'T') {
                return Ok(Outcome::Gone);
            }
            let target = with_flag(&name, b'T')
                .ok_or_else(|| io::Error::other("the name's info is not `2,`: no flags to add"))?;
            if dirs.rename_noreplace(sub, &name, Sub::Cur, &target)? {
                Ok(Outcome::Done)
            } else {
                Err(io::Error::other("cur/ has the flagged name already"))
            }
        }
    }
}

/// Removes exactly this file: at its name, or wherever another program
/// renamed it in `new/` or `cur/` (same device, inode, length and unique
/// part), or nothing.
fn remove(dirs: &Dirs, d: &Doomed) -> io::Result<Outcome> {
    if dirs.unlink_if(d.sub, &d.name, &d.id)? {
        return Ok(Outcome::Done);
    }
    if let Some((sub, name)) = dirs.find(&d.id, (d.sub, &d.name))? {
        if unique_part(&name) == unique_part(&d.name) && dirs.unlink_if(sub, &name, &d.id)? {
            return Ok(Outcome::Done);
        }
    }
    Ok(Outcome::Gone)
}

/// Makes the intent durable: the journal is written (exclusively created,
/// never through a link) and synced before anything is removed.
pub(crate) fn write(dirs: &Dirs, policy: &DeletePolicy, doomed: &[Doomed]) -> io::Result<()> {
    dirs.write_file(JOURNAL, render(policy, doomed).as_bytes())
}

/// Removes the journal once its work is done (or reported as not done).
pub(crate) fn clear(dirs: &Dirs) -> io::Result<()> {
    dirs.remove_file(JOURNAL)?;
    dirs.sync(None)
}

/// At login, under the lock: a journal left behind is from a process that
/// died during QUIT (a live one holds the lock while it deletes, and
/// removes its journal before it answers). Its deletion was promised to
/// the client, so it is finished now. A journal that does not parse, or is
/// not a plain file, is set aside as `pop3d-deleting.rejected-<time>` and
/// logged, never acted on.
pub(crate) fn recover(dirs: &Dirs, maildir: &str) -> io::Result<()> {
    let doomed = match dirs.read_file(JOURNAL, JOURNAL_MAX) {
        Ok(None) => return Ok(()),
        Ok(Some(data)) => parse(&data),
        Err(e) => {
            tracing::warn!(maildir, error = %e, "delete journal unreadable");
            None
        }
    };
    let Some((policy, doomed)) = doomed else {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let aside = format!("{JOURNAL}.rejected-{secs}");
        tracing::error!(
            maildir,
            aside,
            "delete journal is not one pop3d wrote; set aside, nothing deleted"
        );
        dirs.rename_file(JOURNAL, &aside)?;
        return dirs.sync(None);
    };
    let how = Disposal::open(dirs, &policy)?;
    let mut done = 0;
    for d in &doomed {
        if dispose(dirs, d, &how)? == Outcome::Done {
            done += 1;
        }
        tracing::debug!(maildir, name = %show(&d.name), "journaled deletion finished");
    }
    how.sync(dirs)?;
    tracing::info!(
        maildir,
        done,
        journaled = doomed.len(),
        policy = %policy,
        "finished a deletion interrupted by a crash"
    );
    clear(dirs)
}
