//! PROXY protocol on a service's connections: who may send a header, what
//! the connection's addresses become, and reading it before the session
//! (sans-IO; the blocking and async loops only perform the reads).
//!
//! From a trusted source ([`Service::proxy_from`](crate::Service::proxy_from))
//! a header is required, HAProxy's way: a connection that sends none, or a
//! malformed one, or does not finish it within [`HEADER_TIMEOUT`], is
//! closed without a reply. From any other source a connection whose first
//! bytes are a header is closed (the drive procedure looks at them); the
//! rest are served as usual.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::proxy_header::{Addresses, Cidr, Command, HeaderReader, ProxyHeader};
use crate::{ConnectionInfo, ReadOutcome};

/// How long a trusted source has to send its whole header.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// The sources a service takes PROXY headers from.
#[derive(Debug, Clone, Default)]
pub(crate) struct Trust {
    nets: Vec<Cidr>,
}

impl Trust {
    pub(crate) fn new(nets: Vec<Cidr>) -> Self {
        Self { nets }
    }

    fn trusts(&self, ip: Option<IpAddr>) -> bool {
        ip.is_some_and(|ip| self.nets.iter().any(|net| net.contains(ip)))
    }

    /// A header to read first, if `info`'s peer is trusted.
    pub(crate) fn read(&self, info: &ConnectionInfo, now: Instant) -> Option<HeaderRead> {
        self.trusts(info.peer.map(|p| p.ip())).then(|| HeaderRead {
            info: *info,
            reader: HeaderReader::default(),
            deadline: now + HEADER_TIMEOUT,
        })
    }

    /// True if the session must look at the first bytes for a header from
    /// a source not trusted to send one.
    pub(crate) fn sniff(&self, info: &ConnectionInfo) -> bool {
        info.proxied_by.is_none() && !self.trusts(info.peer.map(|p| p.ip()))
    }
}

/// Reading the header of one connection from a trusted source.
#[derive(Debug)]
pub(crate) struct HeaderRead {
    info: ConnectionInfo,
    reader: HeaderReader,
    deadline: Instant,
}

impl HeaderRead {
    /// How many octets the next read may take: never past the header.
    pub(crate) fn wanted(&self) -> usize {
        self.reader.wanted()
    }

    /// When to give up.
    pub(crate) fn deadline(&self) -> Instant {
        self.deadline
    }

    /// A read ended at `now` with `outcome` (`buf` holds what was read):
    /// the connection as the header describes it, or why it is refused;
    /// `None` while more is needed.
    pub(crate) fn read(
        &mut self,
        now: Instant,
        outcome: std::io::Result<ReadOutcome>,
        buf: &[u8],
    ) -> Option<Result<ConnectionInfo, String>> {
        match outcome {
            Ok(ReadOutcome::Data(n)) => self.reader.push(&buf[..n]).map(|parsed| {
                parsed
                    .map(|header| apply(&self.info, &header))
                    .map_err(|why| why.to_string())
            }),
            // A spurious early wake-up of a blocking read: go on.
            Ok(ReadOutcome::TimedOut) if now < self.deadline => None,
            Ok(ReadOutcome::TimedOut) => Some(Err("no PROXY header in time".into())),
            Ok(ReadOutcome::Eof) => Some(Err("closed before its PROXY header".into())),
            Err(e) => Some(Err(format!("reading the PROXY header: {e}"))),
        }
    }
}

/// The connection `info` as `header` describes it.
///
/// `LOCAL` (the proxy's own connection, a health check) keeps the real
/// addresses. `PROXY` over IP takes the header's client and destination,
/// and TLS if the client reached the proxy over TLS (`PP2_CLIENT_SSL`).
/// `PROXY` without IP addresses (`UNKNOWN`, `AF_UNSPEC`, `AF_UNIX`)
/// leaves the client unknown (no address): a proxy on this machine must
/// not make its clients look local.
fn apply(info: &ConnectionInfo, header: &ProxyHeader) -> ConnectionInfo {
    if header.command == Command::Local {
        return *info;
    }
    let (peer, local) = match &header.addresses {
        Addresses::Ip {
            source,
            destination,
        } => (Some(*source), Some(*destination)),
        Addresses::Unspecified | Addresses::Unix { .. } => (None, None),
    };
    ConnectionInfo {
        peer,
        local,
        tls: info.tls || header.client_tls(),
        proxied_by: info.peer,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy_header::{parse, Parsed};

    fn header(bytes: &[u8]) -> ProxyHeader {
        match parse(bytes) {
            Parsed::Header(h, _) => h,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn addresses_from_the_header() {
        let real = ConnectionInfo::new(
            Some("10.0.0.9:40000".parse().unwrap()),
            Some("10.0.0.1:110".parse().unwrap()),
        );
        let tcp4 = apply(
            &real,
            &header(b"PROXY TCP4 203.0.113.5 192.0.2.1 5000 110\r\n"),
        );
        assert_eq!(tcp4.peer, Some("203.0.113.5:5000".parse().unwrap()));
        assert_eq!(tcp4.local, Some("192.0.2.1:110".parse().unwrap()));
        assert_eq!(tcp4.proxied_by, real.peer);
        assert!(!tcp4.tls);
        let unknown = apply(&real, &header(b"PROXY UNKNOWN\r\n"));
        assert_eq!((unknown.peer, unknown.proxied_by), (None, real.peer));
        let mut local = crate::proxy_header::V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(apply(&real, &header(&local)), real);
    }

    #[test]
    fn a_loopback_proxy_does_not_make_clients_local() {
        let real = ConnectionInfo::new(Some("127.0.0.1:40000".parse().unwrap()), None);
        assert!(real.channel().local);
        let remote = apply(
            &real,
            &header(b"PROXY TCP4 203.0.113.5 127.0.0.1 5000 110\r\n"),
        );
        assert!(!remote.channel().local);
        assert!(!apply(&real, &header(b"PROXY UNKNOWN\r\n")).channel().local);
    }

    #[test]
    fn trust_and_sniffing() {
        let trust = Trust::new(vec!["10.0.0.0/8".parse().unwrap()]);
        let now = Instant::now();
        let proxy = ConnectionInfo::new(Some("10.1.1.1:1".parse().unwrap()), None);
        let other = ConnectionInfo::new(Some("192.0.2.1:1".parse().unwrap()), None);
        assert!(trust.read(&proxy, now).is_some());
        assert!(trust.read(&other, now).is_none());
        assert!(trust.sniff(&other));
        assert!(!trust.sniff(&proxy));
        let mut read = trust.read(&proxy, now).unwrap();
        assert_eq!(read.read(now, Ok(ReadOutcome::TimedOut), &[]), None);
        assert!(read
            .read(read.deadline(), Ok(ReadOutcome::TimedOut), &[])
            .unwrap()
            .is_err());
    }
}
