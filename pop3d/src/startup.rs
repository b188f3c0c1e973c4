//! Why pop3d could not start, told by its exit status (the `sysexits.h`
//! codes, which service managers and scripts know) and one clear message.

use std::fmt;
use std::io;
use std::path::Path;

/// A failure before the server could serve.
#[derive(Debug)]
pub(crate) struct StartupError {
    status: Status,
    message: String,
}

/// The exit statuses pop3d uses (from `sysexits.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// 66 (`EX_NOINPUT`): a file or directory named cannot be read.
    NoInput = 66,
    /// 69 (`EX_UNAVAILABLE`): an address to listen on is in use or not
    /// this machine's.
    Unavailable = 69,
    /// 71 (`EX_OSERR`): the system refused something else (threads,
    /// signals, descriptors).
    OsError = 71,
    /// 77 (`EX_NOPERM`): not allowed, e.g. a port below 1024 without the
    /// privilege.
    NoPermission = 77,
    /// 78 (`EX_CONFIG`): a setting is wrong or a file does not parse.
    Config = 78,
}

impl StartupError {
    /// A wrong setting or a file that does not parse.
    pub(crate) fn config(message: impl Into<String>) -> Self {
        Self {
            status: Status::Config,
            message: message.into(),
        }
    }

    /// The system refused what starting needs.
    pub(crate) fn os(message: impl Into<String>) -> Self {
        Self {
            status: Status::OsError,
            message: message.into(),
        }
    }

    /// A listener that cannot be opened: in use, not a local address, or
    /// not permitted.
    pub(crate) fn listen(addr: impl fmt::Display, e: &io::Error) -> Self {
        let status = match e.kind() {
            io::ErrorKind::AddrInUse | io::ErrorKind::AddrNotAvailable => Status::Unavailable,
            io::ErrorKind::PermissionDenied => Status::NoPermission,
            _ => Status::OsError,
        };
        Self {
            status,
            message: format!("cannot listen on {addr}: {e}"),
        }
    }

    /// The status to exit with.
    pub(crate) fn status(&self) -> Status {
        self.status
    }
}

/// Most messages are about settings; a `String` error is one of those.
impl From<String> for StartupError {
    fn from(message: String) -> Self {
        Self::config(message)
    }
}

impl fmt::Display for StartupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Checks that the file `what` names can be opened for reading, so that a
/// missing or unreadable file is told apart from one that does not parse.
pub(crate) fn readable(path: &Path, what: &str) -> Result<(), StartupError> {
    std::fs::File::open(path)
        .map(drop)
        .map_err(|e| StartupError {
            status: Status::NoInput,
            message: format!("cannot read the {what} {}: {e}", path.display()),
        })
}

/// Checks the Maildir root: an existing, readable directory.
pub(crate) fn maildir_root(path: &Path) -> Result<(), StartupError> {
    let no_input = |message: String| StartupError {
        status: Status::NoInput,
        message,
    };
    let meta = std::fs::metadata(path)
        .map_err(|e| no_input(format!("the Maildir root {}: {e}", path.display())))?;
    if !meta.is_dir() {
        return Err(StartupError::config(format!(
            "the Maildir root {} is not a directory",
            path.display()
        )));
    }
    std::fs::read_dir(path).map(drop).map_err(|e| {
        no_input(format!(
            "cannot read the Maildir root {}: {e}",
            path.display()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_tell_the_kind_of_failure() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        assert_eq!(
            readable(&missing, "users file").unwrap_err().status(),
            Status::NoInput
        );
        assert_eq!(
            maildir_root(&missing).unwrap_err().status(),
            Status::NoInput
        );
        let file = dir.path().join("file");
        std::fs::write(&file, "x").unwrap();
        assert!(readable(&file, "users file").is_ok());
        let not_dir = maildir_root(&file).unwrap_err();
        assert_eq!(not_dir.status(), Status::Config);
        assert!(not_dir.to_string().contains("is not a directory"));
        assert!(maildir_root(dir.path()).is_ok());
        let in_use = io::Error::from(io::ErrorKind::AddrInUse);
        assert_eq!(
            StartupError::listen("127.0.0.1:110", &in_use).status(),
            Status::Unavailable
        );
        let denied = io::Error::from(io::ErrorKind::PermissionDenied);
        assert_eq!(
            StartupError::listen("0.0.0.0:110", &denied).status(),
            Status::NoPermission
        );
    }
}
