//! The PROXY protocol header parser (pop3-driver's `proxy_header`): never
//! panics; a reader fed in pieces (the first input octet sets their size)
//! never reads past the header nor beyond the bound of its version (107
//! octets for v1, `MAX_V2` for v2), and comes to what `parse` says of the
//! whole input; a parsed header re-encodes to bytes that parse to the
//! same value.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pop3_driver::proxy_header::{parse, HeaderReader, Parsed, Version, MAX_V1, MAX_V2};

fuzz_target!(|data: &[u8]| {
    let Some((&piece, input)) = data.split_first() else {
        return;
    };
    let piece = usize::from(piece % 64) + 1;
    let whole = parse(input);
    if let Parsed::Incomplete { wanted } = whole {
        assert!(wanted >= 1 && input.len() + wanted <= MAX_V2);
    }
    let mut reader = HeaderReader::default();
    let mut taken = 0;
    let result = loop {
        let n = reader.wanted().min(piece).min(input.len() - taken);
        if n == 0 {
            break None;
        }
        let r = reader.push(&input[taken..taken + n]);
        taken += n;
        if r.is_some() {
            break r;
        }
    };
    assert!(taken <= MAX_V2);
    match (&whole, result) {
        (Parsed::Header(header, n), Some(Ok(read))) => {
            assert_eq!(header, &read);
            assert_eq!(*n, taken, "the reader read past the header");
            if header.version == Version::V1 {
                assert!(taken <= MAX_V1);
            }
            let again = header.encode();
            assert_eq!(parse(&again), Parsed::Header(read, again.len()));
        }
        (Parsed::Invalid(why), Some(Err(read))) => assert_eq!(*why, read),
        (Parsed::Incomplete { .. }, None) => assert_eq!(taken, input.len()),
        (whole, read) => panic!("parse says {whole:?}, the reader {read:?}"),
    }
});
