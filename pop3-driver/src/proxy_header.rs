//! The PROXY protocol header (HAProxy's specification, versions 1 and 2):
//! a load balancer's note of the client's real address, sent before any
//! other byte of the connection. Sans-IO: [`parse`] looks at bytes,
//! [`ProxyHeader::encode`] writes them, and [`parse`] also says how many
//! more bytes may be read without reading past the header (so nothing of
//! the POP3 session, or of an implicit TLS handshake, is read early).
//!
//! Which sources may send a header, and what a connection's addresses
//! become, is the [`Service`](crate::Service)'s business: see
//! [`Service::proxy_from`](crate::Service::proxy_from).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

/// The longest version 1 header, CRLF included (the specification's 107).
pub const MAX_V1: usize = 107;

/// The longest version 2 header accepted: the 16 fixed octets and up to
/// this much address block and TLVs in all (the format allows 64 KiB; no
/// proxy sends that much about one connection).
pub const MAX_V2: usize = 4096;

/// The twelve octets that start a version 2 header.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

const V1_PREFIX: &[u8] = b"PROXY ";
/// The shortest header of either version (`PROXY UNKNOWN\r\n`).
const SHORTEST: usize = 15;
/// Length of an `AF_UNIX` address in a version 2 header.
const UNIX_ADDRESS: usize = 108;
/// `PP2_TYPE_SSL`: how the client reached the proxy over TLS.
pub const PP2_TYPE_SSL: u8 = 0x20;
/// `PP2_CLIENT_SSL`, in the first octet of a `PP2_TYPE_SSL` value: the
/// client's connection used TLS.
pub const PP2_CLIENT_SSL: u8 = 0x01;

/// A parsed header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyHeader {
    /// Which version of the format it came in.
    pub version: Version,
    /// `LOCAL` (the proxy's own connection, e.g. a health check) or `PROXY`.
    pub command: Command,
    /// The client's transport (version 1: `Stream` for TCP, else `Unspecified`).
    pub transport: Transport,
    /// The client's and the proxy's addresses.
    pub addresses: Addresses,
    /// Version 2's type-length-value fields, in order.
    pub tlvs: Vec<Tlv>,
}

/// The format's version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// The text line: `PROXY TCP4 ...\r\n`.
    V1,
    /// The binary block after [`V2_SIGNATURE`].
    V2,
}

/// What the proxy says the connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// The proxy's own connection (a health check): use the real addresses.
    Local,
    /// Relayed for the client the addresses name.
    Proxy,
}

/// The client's transport protocol, as the proxy saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Not said (`UNKNOWN`, `UNSPEC`).
    Unspecified,
    /// A stream (TCP, or a stream Unix socket).
    Stream,
    /// Datagrams.
    Datagram,
}

/// The addresses a header carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addresses {
    /// None (`UNKNOWN`, `AF_UNSPEC`): use the real ones.
    Unspecified,
    /// IPv4 or IPv6: the client (source) and what it connected to (destination).
    Ip {
        /// The client.
        source: SocketAddr,
        /// The address the client connected to.
        destination: SocketAddr,
    },
    /// `AF_UNIX` paths, 108 octets each, as sent.
    Unix {
        /// The client's socket path.
        source: Box<[u8; UNIX_ADDRESS]>,
        /// The path the client connected to.
        destination: Box<[u8; UNIX_ADDRESS]>,
    },
}

/// One version 2 type-length-value field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tlv {
    /// The `PP2_TYPE_*` octet.
    pub kind: u8,
    /// The value (at most 65535 octets).
    pub value: Vec<u8>,
}

/// Why bytes are not a PROXY header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Invalid {
    /// They start like neither version.
    #[error("not a PROXY protocol header")]
    NotProxy,
    /// Longer than [`MAX_V1`] or [`MAX_V2`].
    #[error("PROXY header too long")]
    TooLong,
    /// A version 1 line that does not follow the grammar.
    #[error("malformed PROXY v1 header")]
    V1,
    /// A version 2 version or command nibble other than 2 and LOCAL/PROXY.
    #[error("unsupported PROXY v2 version or command")]
    V2Command,
    /// A version 2 address family or transport not in the specification.
    #[error("unsupported PROXY v2 address family or transport")]
    V2Family,
    /// A version 2 block shorter than its addresses, or TLVs that do not
    /// fill it exactly.
    #[error("malformed PROXY v2 address block or TLVs")]
    V2Block,
}

/// What [`parse`] made of the bytes so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A whole header, and how many of the bytes it took.
    Header(ProxyHeader, usize),
    /// A header may follow: read at most `wanted` more octets (never more,
    /// or bytes after the header would be read), then parse again.
    Incomplete {
        /// How many more octets may be read (at least 1).
        wanted: usize,
    },
    /// Not a header, whatever follows.
    Invalid(Invalid),
}

/// Parses the header at the start of `input` (which may go on past it).
pub fn parse(input: &[u8]) -> Parsed {
    let v1 = is_prefix_either(input, V1_PREFIX);
    let v2 = is_prefix_either(input, &V2_SIGNATURE);
    match (v1, v2) {
        (false, false) => Parsed::Invalid(Invalid::NotProxy),
        // Only the empty input starts both: the shortest header first.
        (true, true) => Parsed::Incomplete { wanted: SHORTEST },
        (true, false) => parse_v1(input),
        (false, true) => parse_v2(input),
    }
}

/// True if `input` starts with `prefix`, or is a start of it.
fn is_prefix_either(input: &[u8], prefix: &[u8]) -> bool {
    let n = input.len().min(prefix.len());
    input[..n] == prefix[..n]
}

/// Whether `input`, the first bytes a client sent, is (or may still turn
/// out to be) a PROXY header: `None` while too short to tell.
pub fn looks_like_header(input: &[u8]) -> Option<bool> {
    match parse(input) {
        Parsed::Invalid(Invalid::NotProxy) => Some(false),
        Parsed::Incomplete { .. } if input.len() < V2_SIGNATURE.len() => None,
        _ => Some(true),
    }
}

fn parse_v1(input: &[u8]) -> Parsed {
    let window = &input[..input.len().min(MAX_V1)];
    let Some(lf) = window.iter().position(|&b| b == b'\n') else {
        if input.len() >= MAX_V1 {
            return Parsed::Invalid(Invalid::TooLong);
        }
        // The line ends at the earliest with CR LF; never read past it.
        let wanted = match input.last() {
            _ if input.len() < SHORTEST => SHORTEST - input.len(),
            Some(b'\r') => 1,
            _ => 2,
        };
        return Parsed::Incomplete {
            wanted: wanted.min(MAX_V1 - input.len()),
        };
    };
    if lf == 0 || input[lf - 1] != b'\r' {
        return Parsed::Invalid(Invalid::V1);
    }
    match v1_line(&input[V1_PREFIX.len()..lf - 1]) {
        Some(header) => Parsed::Header(header, lf + 1),
        None => Parsed::Invalid(Invalid::V1),
    }
}

/// `TCP4 src dst sport dport`, `TCP6 ...` or `UNKNOWN[ anything]`.
fn v1_line(line: &[u8]) -> Option<ProxyHeader> {
    let header = |transport, addresses| ProxyHeader {
        version: Version::V1,
        command: Command::Proxy,
        transport,
        addresses,
        tlvs: Vec::new(),
    };
    // The specification: anything after UNKNOWN is to be ignored.
    if line == b"UNKNOWN" || line.starts_with(b"UNKNOWN ") {
        return Some(header(Transport::Unspecified, Addresses::Unspecified));
    }
    let text = std::str::from_utf8(line).ok()?;
    let mut words = text.split(' ');
    let family = words.next()?;
    let (src, dst, sport, dport) = (words.next()?, words.next()?, words.next()?, words.next()?);
    if words.next().is_some() {
        return None;
    }
    let (src, dst): (IpAddr, IpAddr) = match family {
        "TCP4" => (
            Ipv4Addr::from_str(src).ok()?.into(),
            Ipv4Addr::from_str(dst).ok()?.into(),
        ),
        "TCP6" => (
            Ipv6Addr::from_str(src).ok()?.into(),
            Ipv6Addr::from_str(dst).ok()?.into(),
        ),
        _ => return None,
    };
    Some(header(
        Transport::Stream,
        Addresses::Ip {
            source: SocketAddr::new(src, port(sport)?),
            destination: SocketAddr::new(dst, port(dport)?),
        },
    ))
}

/// A decimal port, digits only (no sign, no leading zero but for `0`).
fn port(text: &str) -> Option<u16> {
    let digits = text.bytes().all(|b| b.is_ascii_digit());
    if !digits || text.is_empty() || (text.len() > 1 && text.starts_with('0')) {
        return None;
    }
    text.parse().ok()
}

fn parse_v2(input: &[u8]) -> Parsed {
    if input.len() < 16 {
        return Parsed::Incomplete {
            wanted: 16 - input.len(),
        };
    }
    let (version, command) = (input[12] >> 4, input[12] & 0x0f);
    let command = match (version, command) {
        (2, 0) => Command::Local,
        (2, 1) => Command::Proxy,
        _ => return Parsed::Invalid(Invalid::V2Command),
    };
    let (family, transport) = (input[13] >> 4, input[13] & 0x0f);
    let transport = match transport {
        0 => Transport::Unspecified,
        1 => Transport::Stream,
        2 => Transport::Datagram,
        _ => return Parsed::Invalid(Invalid::V2Family),
    };
    let address_len = match family {
        0 => 0,
        1 => 12,
        2 => 36,
        3 => 2 * UNIX_ADDRESS,
        _ => return Parsed::Invalid(Invalid::V2Family),
    };
    let total = 16 + usize::from(u16::from_be_bytes([input[14], input[15]]));
    if total > MAX_V2 {
        return Parsed::Invalid(Invalid::TooLong);
    }
    if input.len() < total {
        return Parsed::Incomplete {
            wanted: total - input.len(),
        };
    }
    let block = &input[16..total];
    if block.len() < address_len {
        return Parsed::Invalid(Invalid::V2Block);
    }
    let (addresses, mut rest) = block.split_at(address_len);
    let addresses = match family {
        1 => {
            let ip = |at: usize| IpAddr::from(<[u8; 4]>::try_from(&addresses[at..at + 4]).unwrap());
            Addresses::Ip {
                source: SocketAddr::new(ip(0), be16(&addresses[8..])),
                destination: SocketAddr::new(ip(4), be16(&addresses[10..])),
            }
        }
        2 => {
            let ip =
                |at: usize| IpAddr::from(<[u8; 16]>::try_from(&addresses[at..at + 16]).unwrap());
            Addresses::Ip {
                source: SocketAddr::new(ip(0), be16(&addresses[32..])),
                destination: SocketAddr::new(ip(16), be16(&addresses[34..])),
            }
        }
        3 => {
            let path = |at: usize| {
                Box::new(<[u8; UNIX_ADDRESS]>::try_from(&addresses[at..at + UNIX_ADDRESS]).unwrap())
            };
            Addresses::Unix {
                source: path(0),
                destination: path(UNIX_ADDRESS),
            }
        }
        _ => Addresses::Unspecified,
    };
    let mut tlvs = Vec::new();
    while !rest.is_empty() {
        if rest.len() < 3 {
            return Parsed::Invalid(Invalid::V2Block);
        }
        let len = usize::from(be16(&rest[1..]));
        let Some(value) = rest.get(3..3 + len) else {
            return Parsed::Invalid(Invalid::V2Block);
        };
        tlvs.push(Tlv {
            kind: rest[0],
            value: value.to_vec(),
        });
        rest = &rest[3 + len..];
    }
    Parsed::Header(
        ProxyHeader {
            version: Version::V2,
            command,
            transport,
            addresses,
            tlvs,
        },
        total,
    )
}

fn be16(bytes: &[u8]) -> u16 {
    u16::from_be_bytes([bytes[0], bytes[1]])
}

impl ProxyHeader {
    /// True if a version 2 `PP2_TYPE_SSL` field says the client reached
    /// the proxy over TLS (its `PP2_CLIENT_SSL` bit).
    pub fn client_tls(&self) -> bool {
        self.tlvs.iter().any(|t| {
            t.kind == PP2_TYPE_SSL && t.value.first().is_some_and(|c| c & PP2_CLIENT_SSL != 0)
        })
    }

    /// The header in its version's wire format. A version 1 header can
    /// carry only `PROXY` over IP (same family both sides) or `UNKNOWN`;
    /// anything else is written as `UNKNOWN`.
    pub fn encode(&self) -> Vec<u8> {
        match self.version {
            Version::V1 => match &self.addresses {
                Addresses::Ip {
                    source,
                    destination,
                } if self.command == Command::Proxy
                    && source.is_ipv4() == destination.is_ipv4() =>
                {
                    let family = if source.is_ipv4() { "TCP4" } else { "TCP6" };
                    format!(
                        "PROXY {family} {} {} {} {}\r\n",
                        source.ip(),
                        destination.ip(),
                        source.port(),
                        destination.port()
                    )
                    .into_bytes()
                }
                _ => b"PROXY UNKNOWN\r\n".to_vec(),
            },
            Version::V2 => self.encode_v2(),
        }
    }

    fn encode_v2(&self) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(
            0x20 | match self.command {
                Command::Local => 0,
                Command::Proxy => 1,
            },
        );
        let transport = match self.transport {
            Transport::Unspecified => 0,
            Transport::Stream => 1,
            Transport::Datagram => 2,
        };
        let mut block = Vec::new();
        let family = match &self.addresses {
            Addresses::Unspecified => 0,
            Addresses::Ip {
                source,
                destination,
            } => match (source.ip(), destination.ip()) {
                (IpAddr::V4(s), IpAddr::V4(d)) => {
                    block.extend_from_slice(&s.octets());
                    block.extend_from_slice(&d.octets());
                    block.extend_from_slice(&source.port().to_be_bytes());
                    block.extend_from_slice(&destination.port().to_be_bytes());
                    1
                }
                (s, d) => {
                    block.extend_from_slice(&v6(s).octets());
                    block.extend_from_slice(&v6(d).octets());
                    block.extend_from_slice(&source.port().to_be_bytes());
                    block.extend_from_slice(&destination.port().to_be_bytes());
                    2
                }
            },
            Addresses::Unix {
                source,
                destination,
            } => {
                block.extend_from_slice(&source[..]);
                block.extend_from_slice(&destination[..]);
                3
            }
        };
        out.push(family << 4 | transport);
        for tlv in &self.tlvs {
            let len = u16::try_from(tlv.value.len()).unwrap_or(u16::MAX);
            block.push(tlv.kind);
            block.extend_from_slice(&len.to_be_bytes());
            block.extend_from_slice(&tlv.value[..usize::from(len)]);
        }
        let len = u16::try_from(block.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&block[..usize::from(len)]);
        out
    }
}

fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// Reads one header off a connection, sans-IO: read at most
/// [`wanted`](Self::wanted) octets, [`push`](Self::push) them, repeat until
/// it gives a result. Never asks for a byte past the header, so what
/// follows (the POP3 session, a TLS handshake) stays unread.
#[derive(Debug, Default)]
pub struct HeaderReader {
    buf: Vec<u8>,
}

impl HeaderReader {
    /// How many octets the next read may take (0 once a result was given).
    pub fn wanted(&self) -> usize {
        match parse(&self.buf) {
            Parsed::Incomplete { wanted } => wanted,
            _ => 0,
        }
    }

    /// Takes what a read returned (at most [`wanted`](Self::wanted)
    /// octets): the header once whole, or why the bytes are none;
    /// `None` while more is needed.
    pub fn push(&mut self, bytes: &[u8]) -> Option<Result<ProxyHeader, Invalid>> {
        let room = self.wanted();
        self.buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
        match parse(&self.buf) {
            Parsed::Header(header, _) => Some(Ok(header)),
            Parsed::Incomplete { .. } => None,
            Parsed::Invalid(why) => Some(Err(why)),
        }
    }
}

/// An IP network (`10.0.0.0/8`, `2001:db8::/32`, or one address), for the
/// sources trusted to send PROXY headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

/// A network that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an IP network (ADDRESS/PREFIX or ADDRESS): {0:?}")]
pub struct CidrError(String);

impl Cidr {
    /// True if `ip` is in the network (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                mask(u32::from(net).into(), u32::from(ip).into(), self.prefix, 32)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => mask(net.into(), ip.into(), self.prefix, 128),
            _ => false,
        }
    }
}

/// True if `a` and `b` agree in their first `prefix` of `bits` bits.
fn mask(a: u128, b: u128, prefix: u8, bits: u32) -> bool {
    let shift = bits - u32::from(prefix);
    shift >= bits || (a >> shift) == (b >> shift)
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let error = || CidrError(text.to_owned());
        let (ip, prefix) = match text.split_once('/') {
            Some((ip, prefix)) => (ip, Some(prefix)),
            None => (text, None),
        };
        let network = IpAddr::from_str(ip).map_err(|_| error())?.to_canonical();
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p
                .parse::<u8>()
                .ok()
                .filter(|&p| p <= max)
                .ok_or_else(error)?,
            Some(_) => return Err(error()),
            None => max,
        };
        Ok(Self { network, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

#[cfg(test)]
mod tests;
