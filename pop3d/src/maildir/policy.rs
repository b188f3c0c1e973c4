//! The operator's policies for a Maildir: what deletion does
//! (`--delete-policy`), expiry of retrieved messages (`--expire`), and the
//! minimum interval between logins (`--login-delay`), with the two state
//! files the last two keep in each Maildir.
//!
//! - `pop3d-last-login`: when the user last logged in (Unix seconds and
//!   nanoseconds), replaced atomically under the lock at each login, so
//!   every pop3d process serving this Maildir root sees it.
//! - `pop3d-retrieved`: when each message (by its UIDL, which never
//!   changes and is never reused) was first retrieved, i.e. its whole body
//!   read out by a RETR. Not the `S` flag alone: IMAP clients and webmail
//!   set it too (reading a message there must not start its POP3 expiry),
//!   and a flag carries no time. Written at the end of the session (under
//!   the lock); entries of messages no longer there are dropped at login.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pop3_proto::Uid;

use super::fsx::Dirs;

pub(crate) const LAST_LOGIN: &str = "pop3d-last-login";
pub(crate) const RETRIEVED: &str = "pop3d-retrieved";
const RETRIEVED_HEADER: &str = "pop3d-retrieved 1";
const RETRIEVED_MAX: u64 = 64 << 20;

/// What DELE and QUIT (and expiry) do to a message's file.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub(crate) enum DeletePolicy {
    /// Remove the file.
    #[default]
    Remove,
    /// Move it into this Maildir++ folder of the user's Maildir (`.Trash`).
    Move(String),
    /// Add the `T` (trashed) flag to its name in `cur/`; POP3 no longer
    /// lists messages flagged so.
    Flag,
}

/// A Maildir++ folder name: a `.` and then a plain name (no `/`, not `..`).
fn valid_folder(name: &str) -> bool {
    name.len() > 1
        && name.len() <= 255
        && name.starts_with('.')
        && name != ".."
        && !name.contains(['/', '\0'])
        && name.bytes().all(|b| b.is_ascii_graphic())
}

impl FromStr for DeletePolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "remove" => Ok(Self::Remove),
            "flag" => Ok(Self::Flag),
            _ => match s.strip_prefix("move:") {
                Some(folder) if valid_folder(folder) => Ok(Self::Move(folder.to_owned())),
                Some(folder) => Err(format!(
                    "{folder:?} is not a Maildir++ folder name (a `.` then printable ASCII without `/`, e.g. .Trash)"
                )),
                None => Err(format!(
                    "unknown delete policy {s:?}: remove, move:FOLDER or flag"
                )),
            },
        }
    }
}

impl TryFrom<String> for DeletePolicy {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl fmt::Display for DeletePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Remove => f.write_str("remove"),
            Self::Move(folder) => write!(f, "move:{folder}"),
            Self::Flag => f.write_str("flag"),
        }
    }
}

/// The policies a store applies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Policy {
    pub(crate) delete: DeletePolicy,
    /// Messages retrieved more than this many days ago are deleted (by
    /// `delete`) at login.
    pub(crate) expire_days: Option<u32>,
    /// The least time between two logins of one user.
    pub(crate) login_delay: Option<Duration>,
}

fn unix(t: SystemTime) -> Duration {
    t.duration_since(UNIX_EPOCH).unwrap_or_default()
}

/// How much of the login delay is left at `now`, if any. A last login in
/// the future (the clock was set back) does not hold anyone back.
pub(crate) fn login_wait(dirs: &Dirs, delay: Duration, now: SystemTime) -> Option<Duration> {
    let data = dirs.read_file(LAST_LOGIN, 64).ok()??;
    let text = std::str::from_utf8(&data).ok()?;
    let (secs, nanos) = text.trim_end().split_once('.')?;
    let last = Duration::new(secs.parse().ok()?, nanos.parse().ok()?);
    let since = unix(now).checked_sub(last)?;
    delay.checked_sub(since).filter(|left| !left.is_zero())
}

/// Records a login at `now` (atomically replaced, synced).
pub(crate) fn record_login(dirs: &Dirs, now: SystemTime) -> io::Result<()> {
    let t = unix(now);
    let text = format!("{}.{:09}\n", t.as_secs(), t.subsec_nanos());
    dirs.write_file(LAST_LOGIN, text.as_bytes())
}

/// When each message was first retrieved (Unix seconds), by UIDL.
pub(crate) type Retrieved = BTreeMap<Uid, u64>;

/// The retrieval times; empty if none were kept, or (logged) if the file
/// is not one pop3d wrote: then expiry starts over, deleting nothing early.
pub(crate) fn load_retrieved(dirs: &Dirs, maildir: &str) -> Retrieved {
    let data = match dirs.read_file(RETRIEVED, RETRIEVED_MAX) {
        Ok(Some(data)) => data,
        Ok(None) => return Retrieved::new(),
        Err(e) => {
            tracing::warn!(maildir, error = %e, "cannot read the retrieval times; none kept");
            return Retrieved::new();
        }
    };
    parse_retrieved(&data).unwrap_or_else(|| {
        tracing::warn!(maildir, "retrieval times do not parse; starting over");
        Retrieved::new()
    })
}

fn parse_retrieved(data: &[u8]) -> Option<Retrieved> {
    let text = std::str::from_utf8(data).ok()?;
    let mut lines = text.split_terminator('\n');
    if lines.next()? != RETRIEVED_HEADER {
        return None;
    }
    lines
        .map(|line| {
            let (uid, secs) = line.split_once(' ')?;
            Some((Uid::new(uid).ok()?, secs.parse().ok()?))
        })
        .collect()
}

/// Replaces the retrieval times (atomically, synced).
pub(crate) fn save_retrieved(dirs: &Dirs, retrieved: &Retrieved) -> io::Result<()> {
    let mut text = format!("{RETRIEVED_HEADER}\n");
    for (uid, secs) in retrieved {
        text.push_str(&format!("{uid} {secs}\n"));
    }
    dirs.write_file(RETRIEVED, text.as_bytes())
}

/// Whether a message retrieved at `secs` has expired at `now` under `days`.
pub(crate) fn expired(secs: u64, days: u32, now: SystemTime) -> bool {
    unix(now).as_secs() >= secs.saturating_add(u64::from(days) * 86_400)
}

/// Now, in Unix seconds, for a retrieval time.
pub(crate) fn unix_secs(now: SystemTime) -> u64 {
    unix(now).as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delete_policies_parse_and_display() {
        for text in ["remove", "flag", "move:.Trash", "move:.Deleted Items"] {
            let parsed: Result<DeletePolicy, _> = text.parse();
            if text.contains(' ') {
                assert!(parsed.is_err(), "{text}");
            } else {
                assert_eq!(parsed.unwrap().to_string(), text);
            }
        }
        for bad in [
            "move:Trash",
            "move:.",
            "move:..",
            "move:./x",
            "move:",
            "delete",
        ] {
            assert!(bad.parse::<DeletePolicy>().is_err(), "{bad}");
        }
    }

    #[test]
    fn expiry_counts_whole_days_from_retrieval() {
        let t = UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert!(!expired(1_000_000, 1, t + Duration::from_secs(86_399)));
        assert!(expired(1_000_000, 1, t + Duration::from_secs(86_400)));
        assert!(expired(1_000_000, 0, t));
        assert!(!expired(u64::MAX, 3, t));
    }

    #[test]
    fn retrieval_times_round_trip_and_refuse_foreign_files() {
        let mut r = Retrieved::new();
        r.insert(Uid::new("a.b").unwrap(), 17);
        let dir = tempfile::tempdir().unwrap();
        let dirs = Dirs::open(dir.path()).unwrap();
        save_retrieved(&dirs, &r).unwrap();
        assert_eq!(load_retrieved(&dirs, "t"), r);
        std::fs::write(dir.path().join(RETRIEVED), "something else\n").unwrap();
        assert!(load_retrieved(&dirs, "t").is_empty());
    }

    #[test]
    fn the_login_delay_runs_from_the_last_login_and_ignores_the_future() {
        let dir = tempfile::tempdir().unwrap();
        let dirs = Dirs::open(dir.path()).unwrap();
        let t = UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        let delay = Duration::from_secs(60);
        assert_eq!(login_wait(&dirs, delay, t), None, "never logged in");
        record_login(&dirs, t).unwrap();
        assert_eq!(
            login_wait(&dirs, delay, t + Duration::from_secs(10)),
            Some(Duration::from_secs(50))
        );
        assert_eq!(login_wait(&dirs, delay, t + delay), None);
        assert_eq!(login_wait(&dirs, delay, t - Duration::from_secs(5)), None);
    }
}
