//! systemd socket activation: listening sockets passed in by the service
//! manager (`LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES`), so pop3d can be
//! started on the first connection and restarted without refusing any.
//!
//! A socket named `pop3s` (`FileDescriptorName=pop3s` in the `.socket`
//! unit) serves implicit TLS; every other one serves plain POP3 (with STLS
//! when a certificate is configured).

use std::net::TcpListener;

use crate::startup::StartupError;

/// The name that marks a passed socket as implicit TLS.
pub(crate) const IMPLICIT_TLS_NAME: &str = "pop3s";

/// One passed listening socket.
#[derive(Debug)]
pub(crate) struct Passed {
    pub(crate) listener: TcpListener,
    /// Implicit TLS (named [`IMPLICIT_TLS_NAME`]).
    pub(crate) implicit_tls: bool,
}

/// The listening sockets the service manager passed to this process; none
/// when it was not socket-activated.
pub(crate) fn passed() -> Result<Vec<Passed>, StartupError> {
    let names = std::env::var("LISTEN_FDNAMES").unwrap_or_default();
    let mut fds = listenfd::ListenFd::from_env();
    let names: Vec<&str> = names.split(':').collect();
    (0..fds.len())
        .map(|i| {
            let listener = fds
                .take_tcp_listener(i)
                .map_err(|e| {
                    StartupError::config(format!(
                        "passed socket {i} is not a listening TCP socket: {e}"
                    ))
                })?
                .ok_or_else(|| StartupError::config(format!("passed socket {i} was taken")))?;
            listener
                .set_nonblocking(true)
                .map_err(|e| StartupError::os(format!("passed socket {i}: {e}")))?;
            Ok(Passed {
                listener,
                implicit_tls: names.get(i) == Some(&IMPLICIT_TLS_NAME),
            })
        })
        .collect()
}
