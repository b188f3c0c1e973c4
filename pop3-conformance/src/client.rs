//! A minimal blocking POP3 client over a real socket, for the suite.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use pop3_proto::testing::{escape_bytes, parse_script};

/// A client connection with a read timeout.
pub struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    /// Connects and does not read the greeting.
    pub fn connect(addr: SocketAddr) -> Self {
        Self::over(TcpStream::connect(addr).expect("connect to the test server"))
    }

    /// A client over a connected stream (e.g. one bound to a chosen source
    /// address); does not read the greeting.
    pub fn over(stream: TcpStream) -> Self {
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let writer = stream.try_clone().unwrap();
        Self {
            reader: BufReader::new(stream),
            writer,
        }
    }

    /// Connects and returns the greeting line (without CRLF).
    pub fn greeted(addr: SocketAddr) -> (Self, String) {
        let mut c = Self::connect(addr);
        let g = c.line();
        (c, g)
    }

    /// Connects and logs in with USER/PASS; panics on failure.
    pub fn login(addr: SocketAddr, user: &str, password: &str) -> Self {
        let (mut c, greeting) = Self::greeted(addr);
        assert!(greeting.starts_with("+OK"), "greeting: {greeting}");
        assert!(c.command(&format!("USER {user}")).starts_with("+OK"));
        let r = c.command(&format!("PASS {password}"));
        assert!(r.starts_with("+OK"), "login: {r}");
        c
    }

    /// Sends raw bytes.
    pub fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("write to server");
    }

    /// Closes the sending side (half-close); replies can still be read.
    pub fn shutdown_write(&mut self) {
        self.writer
            .shutdown(std::net::Shutdown::Write)
            .expect("half-close");
    }

    /// Sends a command line and returns the first reply line.
    pub fn command(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        self.line()
    }

    /// Reads one line, without CRLF. Panics at EOF.
    pub fn line(&mut self) -> String {
        let raw = self.raw_line();
        assert!(!raw.is_empty(), "server closed the connection");
        let text = String::from_utf8_lossy(&raw).into_owned();
        text.strip_suffix("\r\n")
            .unwrap_or_else(|| panic!("line without CRLF: {}", escape_bytes(&raw)))
            .to_owned()
    }

    /// Reads one line with its line end; empty at EOF.
    pub fn raw_line(&mut self) -> Vec<u8> {
        let mut buf = Vec::new();
        self.reader
            .read_until(b'\n', &mut buf)
            .expect("read from server");
        buf
    }

    /// Reads a multi-line body up to and including the terminator, raw.
    pub fn multiline(&mut self) -> Vec<u8> {
        let mut all = Vec::new();
        loop {
            let line = self.raw_line();
            assert!(!line.is_empty(), "EOF inside a multi-line response");
            all.extend_from_slice(&line);
            if line == b".\r\n" {
                return all;
            }
        }
    }

    /// Reads exactly `n` bytes.
    pub fn exact(&mut self, n: usize) -> Vec<u8> {
        let mut buf = vec![0; n];
        self.reader.read_exact(&mut buf).expect("read from server");
        buf
    }

    /// True if the server closed the connection (after any unread bytes,
    /// which are returned).
    pub fn closed(&mut self) -> (bool, Vec<u8>) {
        let mut rest = Vec::new();
        match self.reader.read_to_end(&mut rest) {
            Ok(_) => (true, rest),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => (true, rest),
            Err(_) => (false, rest),
        }
    }

    /// True if the server has closed the connection, waiting at most
    /// `limit` for the end of stream (after any unread bytes, returned);
    /// false if it is still open. Restores the usual read timeout.
    pub fn closed_within(&mut self, limit: Duration) -> (bool, Vec<u8>) {
        self.reader.get_ref().set_read_timeout(Some(limit)).unwrap();
        let mut rest = Vec::new();
        let closed = match self.reader.read_to_end(&mut rest) {
            Ok(_) => true,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => true,
            Err(_) => false,
        };
        self.reader
            .get_ref()
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        (closed, rest)
    }

    /// After the `+OK` to STLS: the TLS handshake over this connection.
    /// Panics if the server sent anything after that `+OK` in plaintext, or
    /// if the handshake fails.
    pub fn start_tls(self, config: Arc<rustls::ClientConfig>) -> crate::tls::TlsClient {
        assert!(
            self.reader.buffer().is_empty(),
            "plaintext after the STLS reply: {}",
            escape_bytes(self.reader.buffer())
        );
        crate::tls::TlsClient::handshake(self.reader.into_inner(), config)
            .expect("TLS handshake after STLS")
    }

    /// Runs a `C:`/`S:` script (see `pop3_proto::testing::parse_script`).
    pub fn transcript(&mut self, script: &str) {
        for step in parse_script(script) {
            let actual = self.exact(step.expect.len());
            assert!(
                actual == step.expect,
                "transcript mismatch before script line {}\nexpected: {}\n  actual: {}",
                step.line,
                escape_bytes(&step.expect),
                escape_bytes(&actual)
            );
            if let Some(line) = step.send {
                self.send(format!("{line}\r\n").as_bytes());
            }
        }
    }
}
