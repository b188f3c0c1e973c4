//! inetd mode (`--inetd`): one session on standard input and output, as
//! inetd, xinetd, `systemd-socket-activate --inetd` or a systemd unit with
//! `Accept=yes` start it, or a pipe for testing.
//!
//! When standard input is a TCP socket the session runs over that socket
//! itself and knows the client's address (the plaintext policy, the
//! per-address limits and the logs need it); otherwise (a pipe) it reads
//! standard input and writes standard output, with no address.

use std::io;
use std::net::TcpStream;
use std::os::fd::AsFd;

use pop3_tokio::{AsyncHandler, ConnectionInfo, NewHandler, Service};

use crate::startup::StartupError;

/// Serves the one session on standard input and output.
pub(crate) async fn serve_one<F, H>(service: &Service<F>) -> Result<(), StartupError>
where
    F: NewHandler<H>,
    H: AsyncHandler,
{
    let stdin = io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| StartupError::os(format!("standard input: {e}")))?;
    let socket = TcpStream::from(stdin);
    match socket.peer_addr() {
        Ok(peer) => {
            let info = ConnectionInfo::new(Some(peer), socket.local_addr().ok());
            socket
                .set_nonblocking(true)
                .map_err(|e| StartupError::os(format!("standard input: {e}")))?;
            let stream = tokio::net::TcpStream::from_std(socket)
                .map_err(|e| StartupError::os(format!("standard input: {e}")))?;
            pop3_tokio::serve_connection(service, stream, info).await;
        }
        Err(_) => {
            // Not a socket: the session over the two pipes.
            drop(socket);
            let stream = tokio::io::join(tokio::io::stdin(), tokio::io::stdout());
            pop3_tokio::serve_connection(service, stream, ConnectionInfo::new(None, None)).await;
        }
    }
    Ok(())
}

/// True when standard error is the same open file as standard input (classic
/// inetd passes the connection as all three): then nothing may be logged
/// there, or it would reach the client.
pub(crate) fn stderr_is_the_connection() -> bool {
    let stat = |fd: std::os::fd::BorrowedFd<'_>| rustix::fs::fstat(fd).ok();
    match (stat(io::stdin().as_fd()), stat(io::stderr().as_fd())) {
        (Some(a), Some(b)) => a.st_dev == b.st_dev && a.st_ino == b.st_ino,
        _ => false,
    }
}
