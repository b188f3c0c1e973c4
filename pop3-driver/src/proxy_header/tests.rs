use proptest::prelude::*;

use super::*;

fn v4(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Feeds `bytes` to a reader in pieces of at most `piece` octets (and
/// never more than it wants), as a loop would read them; the result and
/// how many octets it took.
fn read_in_pieces(bytes: &[u8], piece: usize) -> (Option<Result<ProxyHeader, Invalid>>, usize) {
    let mut reader = HeaderReader::default();
    let mut taken = 0;
    loop {
        let n = reader.wanted().min(piece).min(bytes.len() - taken);
        if n == 0 {
            return (None, taken);
        }
        let result = reader.push(&bytes[taken..taken + n]);
        taken += n;
        if result.is_some() {
            return (result, taken);
        }
    }
}

fn v2(command: u8, family: u8, block: &[u8]) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    out.push(0x20 | command);
    out.push(family);
    out.extend_from_slice(&u16::try_from(block.len()).unwrap().to_be_bytes());
    out.extend_from_slice(block);
    out
}

#[test]
fn v1_tcp4_tcp6_and_unknown() {
    let line = b"PROXY TCP4 203.0.113.5 10.0.0.1 56324 110\r\nUSER alice\r\n";
    let Parsed::Header(h, n) = parse(line) else {
        panic!()
    };
    assert_eq!(n, 43);
    assert_eq!(h.version, Version::V1);
    assert_eq!(h.command, Command::Proxy);
    assert_eq!(
        h.addresses,
        Addresses::Ip {
            source: v4("203.0.113.5:56324"),
            destination: v4("10.0.0.1:110")
        }
    );
    assert!(!h.client_tls());
    let line = b"PROXY TCP6 2001:db8::5 2001:db8::1 65535 995\r\n";
    let Parsed::Header(h, _) = parse(line) else {
        panic!()
    };
    assert_eq!(
        h.addresses,
        Addresses::Ip {
            source: "[2001:db8::5]:65535".parse().unwrap(),
            destination: "[2001:db8::1]:995".parse().unwrap()
        }
    );
    assert_eq!(h.encode(), line);
    for unknown in [
        &b"PROXY UNKNOWN\r\n"[..],
        b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n",
    ] {
        let Parsed::Header(h, n) = parse(unknown) else {
            panic!()
        };
        assert_eq!(n, unknown.len());
        assert_eq!(h.addresses, Addresses::Unspecified);
        assert_eq!(h.encode(), b"PROXY UNKNOWN\r\n");
    }
}

#[test]
fn v1_malformed() {
    for bad in [
        &b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"[..],
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
        b"PROXY TCP4 ::1 ::1 1 2\r\n",
        b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY \r\n",
    ] {
        assert_eq!(
            parse(bad),
            Parsed::Invalid(Invalid::V1),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    assert_eq!(parse(b"USER alice\r\n"), Parsed::Invalid(Invalid::NotProxy));
    assert_eq!(parse(b"proxy TCP4"), Parsed::Invalid(Invalid::NotProxy));
    let mut long = b"PROXY UNKNOWN ".to_vec();
    long.resize(MAX_V1 - 2, b'x');
    long.extend_from_slice(b"\r\n");
    assert!(
        matches!(parse(&long), Parsed::Header(..)),
        "107 octets is allowed"
    );
    long.insert(20, b'x');
    assert_eq!(parse(&long), Parsed::Invalid(Invalid::TooLong));
    assert_eq!(
        read_in_pieces(&long, 1000).1,
        MAX_V1,
        "gives up after 107 octets"
    );
}

#[test]
fn v2_inet_local_unix_and_tlvs() {
    let mut block = vec![203, 0, 113, 5, 10, 0, 0, 1];
    block.extend_from_slice(&56324u16.to_be_bytes());
    block.extend_from_slice(&995u16.to_be_bytes());
    // PP2_TYPE_SSL: client over TLS, verified, a version sub-TLV.
    block.extend_from_slice(&[0x20, 0, 15, 0x01, 0, 0, 0, 0, 0x21, 0, 7]);
    block.extend_from_slice(b"TLSv1.3");
    block.extend_from_slice(&[0x04, 0, 0]); // NOOP, empty
    let bytes = v2(1, 0x11, &block);
    let Parsed::Header(h, n) = parse(&bytes) else {
        panic!()
    };
    assert_eq!(n, bytes.len());
    assert_eq!(
        (h.version, h.command, h.transport),
        (Version::V2, Command::Proxy, Transport::Stream)
    );
    assert_eq!(
        h.addresses,
        Addresses::Ip {
            source: v4("203.0.113.5:56324"),
            destination: v4("10.0.0.1:995")
        }
    );
    assert_eq!(h.tlvs.len(), 2);
    assert!(h.client_tls());
    assert_eq!(h.encode(), bytes);

    // The SSL field without the client bit: not TLS.
    let mut plain = block[..12].to_vec();
    plain.extend_from_slice(&[0x20, 0, 5, 0x00, 0, 0, 0, 0]);
    let Parsed::Header(h, _) = parse(&v2(1, 0x11, &plain)) else {
        panic!()
    };
    assert!(!h.client_tls());

    let local = v2(0, 0x00, &[]);
    let Parsed::Header(h, 16) = parse(&local) else {
        panic!()
    };
    assert_eq!(
        (h.command, h.addresses.clone()),
        (Command::Local, Addresses::Unspecified)
    );
    assert_eq!(h.encode(), local);

    let mut inet6 = [0u8; 36].to_vec();
    inet6[15] = 1;
    inet6[31] = 2;
    let Parsed::Header(h, _) = parse(&v2(1, 0x21, &inet6)) else {
        panic!()
    };
    assert_eq!(
        h.addresses,
        Addresses::Ip {
            source: "[::1]:0".parse().unwrap(),
            destination: "[::2]:0".parse().unwrap()
        }
    );

    let mut unix = vec![0u8; 216];
    unix[..9].copy_from_slice(b"/run/a.sk");
    let bytes = v2(1, 0x31, &unix);
    let Parsed::Header(h, _) = parse(&bytes) else {
        panic!()
    };
    let Addresses::Unix { source, .. } = &h.addresses else {
        panic!()
    };
    assert_eq!(&source[..9], b"/run/a.sk");
    assert_eq!(h.encode(), bytes);
}

#[test]
fn v2_malformed() {
    let inet = [0u8; 12];
    assert_eq!(
        parse(&v2(2, 0x11, &inet)),
        Parsed::Invalid(Invalid::V2Command)
    );
    let mut v1_nibble = v2(1, 0x11, &inet);
    v1_nibble[12] = 0x11;
    assert_eq!(parse(&v1_nibble), Parsed::Invalid(Invalid::V2Command));
    assert_eq!(
        parse(&v2(1, 0x41, &inet)),
        Parsed::Invalid(Invalid::V2Family)
    );
    assert_eq!(
        parse(&v2(1, 0x13, &inet)),
        Parsed::Invalid(Invalid::V2Family)
    );
    assert_eq!(
        parse(&v2(1, 0x11, &inet[..11])),
        Parsed::Invalid(Invalid::V2Block)
    );
    let mut bad_tlv = inet.to_vec();
    bad_tlv.extend_from_slice(&[0x04, 0, 5, 1]);
    assert_eq!(
        parse(&v2(1, 0x11, &bad_tlv)),
        Parsed::Invalid(Invalid::V2Block)
    );
    bad_tlv.truncate(14);
    assert_eq!(
        parse(&v2(1, 0x11, &bad_tlv)),
        Parsed::Invalid(Invalid::V2Block)
    );
    let mut huge = V2_SIGNATURE.to_vec();
    huge.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
    assert_eq!(parse(&huge), Parsed::Invalid(Invalid::TooLong));
    assert_eq!(
        read_in_pieces(&huge, 1000),
        (Some(Err(Invalid::TooLong)), 16)
    );
}

#[test]
fn the_reader_never_reads_past_the_header() {
    let header = b"PROXY TCP4 203.0.113.5 10.0.0.1 56324 110\r\n";
    let mut stream = header.to_vec();
    stream.extend_from_slice(b"CAPA\r\n");
    for piece in 1..=stream.len() {
        let (result, taken) = read_in_pieces(&stream, piece);
        assert!(matches!(result, Some(Ok(_))), "piece {piece}");
        assert_eq!(taken, header.len(), "piece {piece}");
    }
    let mut stream = v2(0, 0, &[]);
    stream.extend_from_slice(b"\x16\x03\x01"); // a TLS ClientHello follows
    assert_eq!(read_in_pieces(&stream, 4096).1, 16);
}

#[test]
fn every_prefix_of_a_header_is_incomplete() {
    let mut inet = vec![203, 0, 113, 5, 10, 0, 0, 1, 0, 1, 0, 2];
    inet.extend_from_slice(&[0x20, 0, 5, 0x01, 0, 0, 0, 0]);
    for header in [
        b"PROXY TCP4 203.0.113.5 10.0.0.1 56324 110\r\n".to_vec(),
        b"PROXY TCP6 ::1 ::2 1 2\r\n".to_vec(),
        b"PROXY UNKNOWN\r\n".to_vec(),
        v2(0, 0, &[]),
        v2(1, 0x11, &inet),
        v2(1, 0x31, &[7; 216]),
    ] {
        for cut in 0..header.len() {
            match parse(&header[..cut]) {
                Parsed::Incomplete { wanted } => {
                    assert!(cut + wanted <= header.len(), "{cut}: wants {wanted}")
                }
                other => panic!("{cut} of {header:?}: {other:?}"),
            }
        }
        assert!(matches!(parse(&header), Parsed::Header(_, n) if n == header.len()));
    }
}

#[test]
fn untrusted_clients_are_told_apart_early() {
    assert_eq!(looks_like_header(b"USER a\r\n"), Some(false));
    assert_eq!(looks_like_header(b"CAPA\r\n"), Some(false));
    assert_eq!(looks_like_header(b"P"), None);
    assert_eq!(looks_like_header(b"PASS x\r\n"), Some(false));
    assert_eq!(looks_like_header(b"PROXY TCP4 1"), Some(true));
    assert_eq!(looks_like_header(b"PROXY garbage"), Some(true));
    assert_eq!(looks_like_header(b"\r\n\r\n"), None);
    assert_eq!(looks_like_header(b"\r\nCAPA"), Some(false));
    assert_eq!(looks_like_header(&V2_SIGNATURE), Some(true));
}

#[test]
fn networks() {
    let net: Cidr = "10.0.0.0/8".parse().unwrap();
    assert!(net.contains("10.255.0.1".parse().unwrap()));
    assert!(net.contains("::ffff:10.1.2.3".parse().unwrap()));
    assert!(!net.contains("11.0.0.1".parse().unwrap()));
    assert!(!net.contains("::1".parse().unwrap()));
    let one: Cidr = "127.0.0.1".parse().unwrap();
    assert!(one.contains("127.0.0.1".parse().unwrap()));
    assert!(!one.contains("127.0.0.2".parse().unwrap()));
    let all: Cidr = "::/0".parse().unwrap();
    assert!(all.contains("2001:db8::1".parse().unwrap()));
    let v6: Cidr = "2001:db8::/32".parse().unwrap();
    assert!(v6.contains("2001:db8:ffff::1".parse().unwrap()));
    assert!(!v6.contains("2001:db9::1".parse().unwrap()));
    assert!("0.0.0.0/0"
        .parse::<Cidr>()
        .unwrap()
        .contains("8.8.8.8".parse().unwrap()));
    for bad in [
        "10.0.0.0/33",
        "10.0.0.0/",
        "10/8",
        "::/129",
        "10.0.0.0/+8",
        "host",
    ] {
        assert!(bad.parse::<Cidr>().is_err(), "{bad}");
    }
}

fn any_ip_pair() -> impl Strategy<Value = Addresses> {
    prop_oneof![
        (
            any::<[u8; 4]>(),
            any::<[u8; 4]>(),
            any::<u16>(),
            any::<u16>()
        )
            .prop_map(|(s, d, sp, dp)| {
                Addresses::Ip {
                    source: SocketAddr::new(s.into(), sp),
                    destination: SocketAddr::new(d.into(), dp),
                }
            }),
        (
            any::<[u8; 16]>(),
            any::<[u8; 16]>(),
            any::<u16>(),
            any::<u16>()
        )
            .prop_map(|(s, d, sp, dp)| {
                Addresses::Ip {
                    source: SocketAddr::new(s.into(), sp),
                    destination: SocketAddr::new(d.into(), dp),
                }
            }),
    ]
}

fn any_header() -> impl Strategy<Value = ProxyHeader> {
    let v1 = prop_oneof![
        any_ip_pair().prop_map(|a| (Transport::Stream, a)),
        Just((Transport::Unspecified, Addresses::Unspecified)),
    ]
    .prop_map(|(transport, addresses)| ProxyHeader {
        version: Version::V1,
        command: Command::Proxy,
        transport,
        addresses,
        tlvs: Vec::new(),
    });
    let addresses = prop_oneof![
        Just(Addresses::Unspecified),
        any_ip_pair(),
        (any::<[u8; 108]>(), any::<[u8; 108]>()).prop_map(|(s, d)| Addresses::Unix {
            source: Box::new(s),
            destination: Box::new(d)
        }),
    ];
    let tlv = (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..40))
        .prop_map(|(kind, value)| Tlv { kind, value });
    let v2 = (
        prop_oneof![Just(Command::Local), Just(Command::Proxy)],
        prop_oneof![
            Just(Transport::Unspecified),
            Just(Transport::Stream),
            Just(Transport::Datagram)
        ],
        addresses,
        proptest::collection::vec(tlv, 0..6),
    )
        .prop_map(|(command, transport, addresses, tlvs)| ProxyHeader {
            version: Version::V2,
            command,
            transport,
            addresses,
            tlvs,
        });
    prop_oneof![v1, v2]
}

proptest! {
    /// Every header encodes to bytes that parse back to it, in however
    /// many reads they arrive, taking exactly its own octets.
    #[test]
    fn encode_parse_round_trip(header in any_header(), piece in 1usize..64, tail in proptest::collection::vec(any::<u8>(), 0..8)) {
        let bytes = header.encode();
        let mut stream = bytes.clone();
        stream.extend_from_slice(&tail);
        prop_assert_eq!(parse(&stream), Parsed::Header(header.clone(), bytes.len()));
        let (result, taken) = read_in_pieces(&stream, piece);
        prop_assert_eq!(result, Some(Ok(header)));
        prop_assert_eq!(taken, bytes.len());
    }

    /// On any bytes: no panic, a reader reads at most the bound of its
    /// version, and a header it finds is what `parse` finds, re-encoding
    /// to a header that parses to the same value.
    #[test]
    fn arbitrary_bytes(prefix in prop_oneof![Just(b"PROXY ".to_vec()), Just(V2_SIGNATURE.to_vec()), Just(Vec::new())],
                       rest in proptest::collection::vec(any::<u8>(), 0..300), piece in 1usize..50) {
        let mut bytes = prefix;
        bytes.extend_from_slice(&rest);
        let (result, taken) = read_in_pieces(&bytes, piece);
        prop_assert!(taken <= MAX_V2);
        if bytes.starts_with(b"PROXY ") {
            prop_assert!(taken <= MAX_V1);
        }
        if let Some(Ok(header)) = result {
            prop_assert_eq!(parse(&bytes), Parsed::Header(header.clone(), taken));
            let again = header.encode();
            prop_assert_eq!(parse(&again), Parsed::Header(header, again.len()));
        }
    }
}
