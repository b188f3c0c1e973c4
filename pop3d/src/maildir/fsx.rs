//! The filesystem operations of the store, relative to directory handles
//! opened once per session (`openat` and friends, through rustix): a
//! Maildir whose `new/`, `cur/` or `tmp/` is swapped for a symbolic link
//! mid-session still cannot make pop3d act outside it, no message file is
//! opened through a link, and no rename ever replaces a file.

use std::fs::File;
use std::io::{self, Read as _};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustix::fs::{self as rfs, AtFlags, Dir, FileType, Mode, OFlags, RenameFlags, Stat};
use rustix::io::Errno;

/// The two message folders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Sub {
    New,
    Cur,
}

impl Sub {
    pub(crate) const BOTH: [Self; 2] = [Self::New, Self::Cur];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Cur => "cur",
        }
    }
}

/// A file's identity: device, inode, and length in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Identity {
    pub(crate) dev: u64,
    pub(crate) ino: u64,
    pub(crate) len: u64,
}

impl Identity {
    pub(crate) fn of(st: &Stat) -> Self {
        Self {
            dev: st.st_dev,
            ino: st.st_ino,
            len: st.st_size as u64,
        }
    }

    /// Same device and inode (the same file, whatever its name now).
    pub(crate) fn same_file(&self, other: &Self) -> bool {
        self.dev == other.dev && self.ino == other.ino
    }
}

/// A Maildir a session has locked, opened again for each operation on it:
/// an idle session holds no directory open (its socket and its lock file
/// are all it keeps open), so descriptors do not cap sessions at a sixth
/// of the limit. The directory must still be the one locked: a Maildir
/// moved away and replaced since is refused, and its folders are opened
/// as at login, never through a link.
#[derive(Debug, Clone)]
pub(crate) struct Place {
    path: std::path::PathBuf,
    root: Identity,
}

impl Place {
    /// The locked Maildir and its folders, opened again.
    pub(crate) fn open(&self) -> io::Result<Dirs> {
        let shown = self.path.display().to_string();
        let root = rfs::openat(
            rfs::CWD,
            &self.path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        if !Identity::of(&rfs::fstat(&root)?).same_file(&self.root) {
            return Err(io::Error::other(format!(
                "{shown} was replaced by another directory during the session"
            )));
        }
        Dirs::with_root(root, &shown)
    }
}

/// One user's Maildir, opened: the directory and its three folders.
#[derive(Debug)]
pub(crate) struct Dirs {
    pub(crate) root: OwnedFd,
    new: OwnedFd,
    cur: OwnedFd,
    tmp: OwnedFd,
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::CLOEXEC)
    .union(OFlags::NOFOLLOW);

/// Flags to open a file for reading: never through a link, never blocking
/// on a FIFO someone planted.
const READ_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::CLOEXEC)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::NONBLOCK);

impl Dirs {
    /// Opens (creating what is missing) the Maildir at `path`. The path
    /// itself may be a link (an operator's choice); `new/`, `cur/` and
    /// `tmp/` must be real directories.
    pub(crate) fn open(path: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(path).map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => {
                io::Error::other(format!("{} is not a directory", path.display()))
            }
            _ => e,
        })?;
        let root = rfs::openat(
            rfs::CWD,
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Self::with_root(root, &path.display().to_string())
    }

    /// Whether `new/` and `cur/` are both smaller than `size` octets as
    /// directories (a cheap bound on how many names listing them reads).
    pub(crate) fn smaller_than(&self, size: u64) -> io::Result<bool> {
        for fd in [&self.new, &self.cur] {
            if rfs::fstat(fd)?.st_size as u64 >= size {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Where this Maildir is, to open it again later as the same directory
    /// ([`Place::open`]).
    pub(crate) fn place(&self, path: &Path) -> io::Result<Place> {
        let st = rfs::fstat(&self.root)?;
        Ok(Place {
            path: path.to_owned(),
            root: Identity::of(&st),
        })
    }

    /// Opens (creating what is missing) the Maildir++ folder `name` (such
    /// as `.Trash`) inside this Maildir, with its `new/`, `cur/` and `tmp/`;
    /// never through a link, so a user cannot point it elsewhere.
    pub(crate) fn folder(&self, name: &str) -> io::Result<Self> {
        let shown = format!("folder {name}");
        let root = open_subdir(&self.root, name, &shown)?;
        Self::with_root(root, &shown)
    }

    fn with_root(root: OwnedFd, shown: &str) -> io::Result<Self> {
        Ok(Self {
            new: open_subdir(&root, "new", shown)?,
            cur: open_subdir(&root, "cur", shown)?,
            tmp: open_subdir(&root, "tmp", shown)?,
            root,
        })
    }

    pub(crate) fn sub(&self, sub: Sub) -> &OwnedFd {
        match sub {
            Sub::New => &self.new,
            Sub::Cur => &self.cur,
        }
    }

    /// The entries of a folder that are regular files (not links, not
    /// directories) and not hidden (`.` names are not messages), with their
    /// status.
    pub(crate) fn list(&self, sub: Sub) -> io::Result<Vec<(Vec<u8>, Stat)>> {
        let dir = self.sub(sub);
        let mut out = Vec::new();
        for item in Dir::read_from(dir)? {
            let item = item?;
            let name = item.file_name().to_bytes();
            if name.first() == Some(&b'.') {
                continue;
            }
            let st = match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                // Gone meanwhile (another program's rename or delete).
                Err(Errno::NOENT) => continue,
                Err(e) => return Err(e.into()),
            };
            if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
                tracing::debug!(name = %super::names::show(name), "not a regular file; not a message");
                continue;
            }
            out.push((name.to_vec(), st));
        }
        Ok(out)
    }

    /// The status of `sub/name`, without following a link; `None` if absent.
    pub(crate) fn stat(&self, sub: Sub, name: &[u8]) -> io::Result<Option<Stat>> {
        match rfs::statat(self.sub(sub), name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st)),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Where the file with this identity is now, in `new/` or `cur/`:
    /// first at `hint`, then anywhere (another program may have renamed
    /// it). Only the same device, inode and length count.
    pub(crate) fn find(
        &self,
        id: &Identity,
        hint: (Sub, &[u8]),
    ) -> io::Result<Option<(Sub, Vec<u8>)>> {
        if let Some(st) = self.stat(hint.0, hint.1)? {
            if Identity::of(&st) == *id && is_regular(&st) {
                return Ok(Some((hint.0, hint.1.to_vec())));
            }
        }
        for sub in Sub::BOTH {
            let dir = self.sub(sub);
            for item in Dir::read_from(dir)? {
                let item = item?;
                if item.ino() != id.ino {
                    continue;
                }
                let name = item.file_name().to_bytes();
                if let Some(st) = self.stat(sub, name)? {
                    if Identity::of(&st) == *id && is_regular(&st) {
                        return Ok(Some((sub, name.to_vec())));
                    }
                }
            }
        }
        Ok(None)
    }

    /// Opens `sub/name` for reading, never through a link, and checks it
    /// is the file with this identity (`None` if it is not there or is
    /// another file).
    pub(crate) fn open_message(
        &self,
        sub: Sub,
        name: &[u8],
        id: &Identity,
    ) -> io::Result<Option<File>> {
        let fd = match rfs::openat(self.sub(sub), name, READ_FLAGS, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT | Errno::LOOP) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let st = rfs::fstat(&fd)?;
        if !is_regular(&st) || !Identity::of(&st).same_file(id) {
            return Ok(None);
        }
        Ok(Some(File::from(fd)))
    }

    /// Moves `from/name` to `to/target` unless `to/target` exists: a
    /// no-replace rename, or where the filesystem lacks one, a hard link and
    /// an unlink (as the Maildir convention does). `Ok(false)` if the
    /// target exists; nothing was changed then.
    pub(crate) fn rename_noreplace(
        &self,
        from: Sub,
        name: &[u8],
        to: Sub,
        target: &[u8],
    ) -> io::Result<bool> {
        self.move_noreplace(from, name, self, to, target)
    }

    /// [`Self::rename_noreplace`] into another Maildir (a folder of this one).
    pub(crate) fn move_noreplace(
        &self,
        from: Sub,
        name: &[u8],
        other: &Self,
        to: Sub,
        target: &[u8],
    ) -> io::Result<bool> {
        let (fd, td) = (self.sub(from), other.sub(to));
        match rfs::renameat_with(fd, name, td, target, RenameFlags::NOREPLACE) {
            Ok(()) => Ok(true),
            Err(Errno::EXIST) => Ok(false),
            Err(Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) => {
                match rfs::linkat(fd, name, td, target, AtFlags::empty()) {
                    Ok(()) => {}
                    Err(Errno::EXIST) => return Ok(false),
                    Err(e) => return Err(e.into()),
                }
                rfs::unlinkat(fd, name, AtFlags::empty())?;
                Ok(true)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Removes `sub/name` if it is the file with this identity. `Ok(false)`
    /// if it is not there or is another file (left alone).
    pub(crate) fn unlink_if(&self, sub: Sub, name: &[u8], id: &Identity) -> io::Result<bool> {
        match self.stat(sub, name)? {
            Some(st) if Identity::of(&st) == *id && is_regular(&st) => {
                #[cfg(test)]
                if failing::unlink(name) {
                    return Err(io::Error::other("injected unlink failure"));
                }
                match rfs::unlinkat(self.sub(sub), name, AtFlags::empty()) {
                    Ok(()) => Ok(true),
                    Err(Errno::NOENT) => Ok(false),
                    Err(e) => Err(e.into()),
                }
            }
            _ => Ok(false),
        }
    }

    /// Removes files in `tmp/` that neither were written nor read for 36
    /// hours (the Maildir convention: a delivery that old was abandoned).
    /// Only regular files; links and directories are left alone. Returns
    /// how many were removed.
    /// Whether `tmp/` holds nothing (so there is nothing to clean).
    pub(crate) fn tmp_is_empty(&self) -> io::Result<bool> {
        for item in Dir::read_from(&self.tmp)? {
            let name = item?.file_name().to_bytes().to_vec();
            if name != b"." && name != b".." {
                return Ok(false);
            }
        }
        Ok(true)
    }

    pub(crate) fn clean_tmp(&self, now: SystemTime) -> io::Result<usize> {
        let limit = now
            .checked_sub(Duration::from_secs(36 * 3600))
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs() as i64);
        let mut removed = 0;
        for item in Dir::read_from(&self.tmp)? {
            let item = item?;
            let name = item.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let Ok(st) = rfs::statat(&self.tmp, name, AtFlags::SYMLINK_NOFOLLOW) else {
                continue;
            };
            #[allow(clippy::unnecessary_cast)] // the field types differ by target
            let touched = (st.st_mtime as i64).max(st.st_atime as i64);
            if is_regular(&st) && touched < limit {
                match rfs::unlinkat(&self.tmp, name, AtFlags::empty()) {
                    Ok(()) => removed += 1,
                    Err(Errno::NOENT) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(removed)
    }

    /// Makes a folder's changes (renames, removals) durable.
    pub(crate) fn sync(&self, sub: Option<Sub>) -> io::Result<()> {
        let fd = sub.map_or(&self.root, |s| self.sub(s));
        Ok(rfs::fsync(fd)?)
    }

    /// Whether the Maildir has a file (of any kind) of this name.
    pub(crate) fn has(&self, name: &str) -> io::Result<bool> {
        match rfs::statat(&self.root, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(_) => Ok(true),
            Err(Errno::NOENT) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Opens (creating it, never through a link) the lock file.
    pub(crate) fn open_lock(&self, name: &str) -> io::Result<File> {
        let fd = rfs::openat(
            &self.root,
            name,
            // Not blocking on a FIFO planted at that name.
            OFlags::WRONLY | OFlags::CREATE | OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NONBLOCK,
            Mode::from_raw_mode(0o600),
        )?;
        Ok(File::from(fd))
    }

    /// Reads a small state file of the Maildir, never through a link:
    /// `Ok(None)` if absent, an error if it is a link or not a regular file.
    pub(crate) fn read_file(&self, name: &str, limit: u64) -> io::Result<Option<Vec<u8>>> {
        let fd = match rfs::openat(&self.root, name, READ_FLAGS, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(None),
            Err(Errno::LOOP) => return Err(io::Error::other(format!("{name} is a symbolic link"))),
            Err(e) => return Err(e.into()),
        };
        let st = rfs::fstat(&fd)?;
        if !is_regular(&st) {
            return Err(io::Error::other(format!("{name} is not a regular file")));
        }
        if st.st_size as u64 > limit {
            return Err(io::Error::other(format!("{name} is over {limit} bytes")));
        }
        let mut data = Vec::new();
        File::from(fd).take(limit).read_to_end(&mut data)?;
        Ok(Some(data))
    }

    /// Replaces the state file `name` with `data`, atomically and durably:
    /// written to `name.tmp` (created exclusively, never through a link; a
    /// leftover of that name is removed first, without following it), synced,
    /// then renamed over `name` (a rename replaces a link, never its target).
    pub(crate) fn write_file(&self, name: &str, data: &[u8]) -> io::Result<()> {
        use std::io::Write as _;
        let tmp = format!("{name}.tmp");
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mode = Mode::from_raw_mode(0o600);
        let fd = match rfs::openat(&self.root, &tmp, flags, mode) {
            Ok(fd) => fd,
            Err(Errno::EXIST) => {
                rfs::unlinkat(&self.root, &tmp, AtFlags::empty())?;
                rfs::openat(&self.root, &tmp, flags, mode)?
            }
            Err(e) => return Err(e.into()),
        };
        let mut file = File::from(fd);
        file.write_all(data)?;
        file.sync_all()?;
        drop(file);
        rfs::renameat(&self.root, &tmp, &self.root, name)?;
        self.sync(None)
    }

    /// Removes the state file `name` (a link is removed, not followed).
    pub(crate) fn remove_file(&self, name: &str) -> io::Result<()> {
        match rfs::unlinkat(&self.root, name, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Renames the state file `from` to `to` within the Maildir.
    pub(crate) fn rename_file(&self, from: &str, to: &str) -> io::Result<()> {
        Ok(rfs::renameat(&self.root, from, &self.root, to)?)
    }
}

/// Creates (if missing) and opens the directory `parent/name`, never
/// through a link.
fn open_subdir(parent: &OwnedFd, name: &str, shown: &str) -> io::Result<OwnedFd> {
    match rfs::mkdirat(parent, name, Mode::from_raw_mode(0o700)) {
        Ok(()) | Err(Errno::EXIST) => {}
        Err(e) => return Err(e.into()),
    }
    rfs::openat(parent, name, DIR_FLAGS, Mode::empty()).map_err(|e| match e {
        Errno::LOOP | Errno::NOTDIR => io::Error::other(format!(
            "{shown}/{name} is not a directory (a symbolic link?); refusing to use it"
        )),
        e => e.into(),
    })
}

pub(crate) fn is_regular(st: &Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::RegularFile
}

/// Test-only fault injection: root may unlink anything, so tests name the
/// files whose removal must fail.
#[cfg(test)]
pub(crate) mod failing {
    use std::sync::Mutex;

    static UNLINK: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

    /// Removal of any file whose name contains `marker` fails from now on.
    pub(crate) fn fail_unlink_of(marker: &[u8]) {
        UNLINK.lock().unwrap().push(marker.to_vec());
    }

    pub(crate) fn unlink(name: &[u8]) -> bool {
        UNLINK
            .lock()
            .unwrap()
            .iter()
            .any(|m| name.windows(m.len()).any(|w| w == m.as_slice()))
    }
}
