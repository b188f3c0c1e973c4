//! TLS for the suite: a test PKI made with rcgen (a root, an intermediate,
//! a server certificate for `localhost` and 127.0.0.1), and a blocking
//! rustls client over a real socket.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use pop3_driver::tls::TlsConfig;
use pop3_proto::testing::escape_bytes;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, ProtocolVersion, RootCertStore, StreamOwned};

/// A root CA, an intermediate CA and a server certificate issued by it.
pub struct TestPki {
    /// The root, PEM: what a client trusts (`curl --cacert`).
    pub ca_pem: String,
    /// The server's full chain, PEM: its certificate, then the intermediate.
    pub chain_pem: String,
    /// The server's private key, PEM (PKCS#8).
    pub key_pem: String,
    ca_der: CertificateDer<'static>,
    leaf_der: CertificateDer<'static>,
}

impl TestPki {
    /// A fresh PKI whose server certificate names `localhost`, 127.0.0.1 and ::1.
    pub fn new() -> Self {
        let root_key = KeyPair::generate().unwrap();
        let mut root = CertificateParams::new(Vec::<String>::new()).unwrap();
        root.distinguished_name
            .push(DnType::CommonName, "pop3 test root");
        root.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        root.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let root_cert = root.self_signed(&root_key).unwrap();
        let root_issuer = Issuer::new(root, root_key);

        let mid_key = KeyPair::generate().unwrap();
        let mut mid = CertificateParams::new(Vec::<String>::new()).unwrap();
        mid.distinguished_name
            .push(DnType::CommonName, "pop3 test intermediate");
        mid.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        mid.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let mid_cert = mid.signed_by(&mid_key, &root_issuer).unwrap();
        let mid_issuer = Issuer::new(mid, mid_key);

        let leaf_key = KeyPair::generate().unwrap();
        let mut leaf = CertificateParams::new(vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
        ])
        .unwrap();
        leaf.distinguished_name
            .push(DnType::CommonName, "localhost");
        let leaf_cert = leaf.signed_by(&leaf_key, &mid_issuer).unwrap();

        Self {
            ca_pem: root_cert.pem(),
            chain_pem: format!("{}{}", leaf_cert.pem(), mid_cert.pem()),
            key_pem: leaf_key.serialize_pem(),
            ca_der: root_cert.der().clone(),
            leaf_der: leaf_cert.der().clone(),
        }
    }

    /// The server side: this chain and key as a [`TlsConfig`].
    pub fn server_tls(&self) -> TlsConfig {
        TlsConfig::from_pem(self.chain_pem.as_bytes(), self.key_pem.as_bytes())
            .expect("the test PKI makes a usable server configuration")
    }

    /// The server certificate (DER), to tell which one a server presented.
    pub fn leaf_der(&self) -> &[u8] {
        &self.leaf_der
    }

    /// A client that trusts the root, offering `alpn` (none if empty) and
    /// TLS 1.3 and 1.2.
    pub fn client(&self, alpn: &[&[u8]]) -> Arc<ClientConfig> {
        self.client_with(alpn, &[&rustls::version::TLS13, &rustls::version::TLS12])
    }

    /// A client that trusts the root, offering `alpn` and only `versions`.
    pub fn client_with(
        &self,
        alpn: &[&[u8]],
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca_der.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}

/// The first octets of a real ClientHello for `localhost`: what a client
/// stalled mid-handshake has sent.
pub fn partial_client_hello(config: Arc<ClientConfig>) -> Vec<u8> {
    let mut conn = ClientConnection::new(config, server_name()).unwrap();
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).unwrap();
    hello.truncate(hello.len() / 2);
    hello
}

fn server_name() -> ServerName<'static> {
    ServerName::try_from("localhost").unwrap()
}

/// A POP3 client over TLS: implicit ([`TlsClient::connect`]) or after STLS
/// ([`Client::start_tls`](crate::Client::start_tls)).
pub struct TlsClient {
    stream: BufReader<StreamOwned<ClientConnection, TcpStream>>,
}

impl TlsClient {
    /// Connects to an implicit TLS listener and runs the handshake.
    pub fn connect(addr: SocketAddr, config: Arc<ClientConfig>) -> Self {
        let socket = TcpStream::connect(addr).expect("connect to the test server");
        Self::handshake(socket, config).expect("TLS handshake")
    }

    /// Connects to an implicit TLS listener and returns the greeting line.
    pub fn greeted(addr: SocketAddr, config: Arc<ClientConfig>) -> (Self, String) {
        let mut c = Self::connect(addr, config);
        let g = c.line();
        (c, g)
    }

    /// Runs the client handshake over `socket` (20 s read timeout).
    pub fn handshake(mut socket: TcpStream, config: Arc<ClientConfig>) -> io::Result<Self> {
        socket.set_read_timeout(Some(Duration::from_secs(20)))?;
        let mut conn = ClientConnection::new(config, server_name()).map_err(io::Error::other)?;
        while conn.is_handshaking() {
            conn.complete_io(&mut socket)?;
        }
        Ok(Self {
            stream: BufReader::new(StreamOwned::new(conn, socket)),
        })
    }

    /// The ALPN protocol the server chose.
    pub fn alpn(&self) -> Option<&[u8]> {
        self.stream.get_ref().conn.alpn_protocol()
    }

    /// The TLS version in use.
    pub fn version(&self) -> Option<ProtocolVersion> {
        self.stream.get_ref().conn.protocol_version()
    }

    /// The server's certificate (DER).
    pub fn server_certificate(&self) -> Vec<u8> {
        self.stream.get_ref().conn.peer_certificates().unwrap()[0].to_vec()
    }

    /// Sends raw bytes.
    pub fn send(&mut self, bytes: &[u8]) {
        let s = self.stream.get_mut();
        s.write_all(bytes).expect("write to server");
        s.flush().expect("flush to server");
    }

    /// Sends a command line and returns the first reply line.
    pub fn command(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        self.line()
    }

    /// Reads one line, without CRLF. Panics at EOF.
    pub fn line(&mut self) -> String {
        let mut raw = Vec::new();
        self.stream
            .read_until(b'\n', &mut raw)
            .expect("read from server");
        assert!(!raw.is_empty(), "server closed the connection");
        let text = String::from_utf8_lossy(&raw).into_owned();
        text.strip_suffix("\r\n")
            .unwrap_or_else(|| panic!("line without CRLF: {}", escape_bytes(&raw)))
            .to_owned()
    }

    /// Reads a multi-line body up to and including the terminator, raw.
    pub fn multiline(&mut self) -> Vec<u8> {
        let mut all = Vec::new();
        loop {
            let start = all.len();
            self.stream
                .read_until(b'\n', &mut all)
                .expect("read from server");
            assert!(all.len() > start, "EOF inside a multi-line response");
            if &all[start..] == b".\r\n" {
                return all;
            }
        }
    }

    /// Logs in with USER/PASS; panics on failure.
    pub fn login(&mut self, user: &str, password: &str) {
        assert!(self.command(&format!("USER {user}")).starts_with("+OK"));
        let r = self.command(&format!("PASS {password}"));
        assert!(r.starts_with("+OK"), "login: {r}");
    }

    /// True if the server closed the connection (after any unread bytes,
    /// which are returned).
    pub fn closed(&mut self) -> (bool, Vec<u8>) {
        let mut rest = Vec::new();
        match self.stream.read_to_end(&mut rest) {
            Ok(_) => (true, rest),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset
                ) =>
            {
                (true, rest)
            }
            Err(_) => (false, rest),
        }
    }
}
