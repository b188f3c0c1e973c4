//! A small asynchronous POP3 client: just what the load needs, with every
//! reply checked.

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// One connection to the server under load.
pub(crate) struct Client {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    line: Vec<u8>,
}

/// A reply that was not the one expected.
pub(crate) fn unexpected(what: &str, got: &[u8]) -> io::Error {
    let shown: String = String::from_utf8_lossy(&got[..got.len().min(120)]).into_owned();
    io::Error::other(format!("{what}: unexpected reply {shown:?}"))
}

impl Client {
    /// Connects and reads the greeting.
    pub(crate) async fn connect(addr: SocketAddr) -> io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (read, writer) = stream.into_split();
        let mut client = Self {
            reader: BufReader::with_capacity(64 * 1024, read),
            writer,
            line: Vec::with_capacity(512),
        };
        client.ok("greeting").await?;
        Ok(client)
    }

    /// Connects and logs in with USER and PASS.
    pub(crate) async fn login(addr: SocketAddr, user: &str, password: &str) -> io::Result<Self> {
        let mut client = Self::connect(addr).await?;
        client
            .send(format!("USER {user}\r\nPASS {password}\r\n").as_bytes())
            .await?;
        client.ok("USER").await?;
        client.ok("PASS").await?;
        Ok(client)
    }

    /// Writes raw bytes.
    pub(crate) async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.writer.write_all(bytes).await
    }

    /// Reads one line and checks that it is `+OK`; returns it.
    pub(crate) async fn ok(&mut self, what: &str) -> io::Result<&[u8]> {
        self.line.clear();
        let n = self.reader.read_until(b'\n', &mut self.line).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{what}: connection closed"),
            ));
        }
        if !self.line.starts_with(b"+OK") {
            return Err(unexpected(what, &self.line));
        }
        Ok(&self.line)
    }

    /// Reads a multi-line body after its `+OK` line, as sent (still
    /// dot-stuffed), up to and including the terminating `.` line.
    pub(crate) async fn multiline_into(&mut self, body: &mut Vec<u8>) -> io::Result<()> {
        body.clear();
        loop {
            let start = body.len();
            let n = self.reader.read_until(b'\n', body).await?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed inside a multi-line reply",
                ));
            }
            if &body[start..] == b".\r\n" {
                return Ok(());
            }
        }
    }

    /// Reads until the server closes the connection.
    pub(crate) async fn closed(&mut self) -> io::Result<()> {
        let mut rest = Vec::new();
        self.reader.read_to_end(&mut rest).await.map(drop)
    }

    /// QUIT, its `+OK`, and the close.
    pub(crate) async fn quit(mut self) -> io::Result<()> {
        self.send(b"QUIT\r\n").await?;
        self.ok("QUIT").await?;
        self.closed().await
    }
}
