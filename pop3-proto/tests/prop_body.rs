//! Property tests for body encoding (RETR dot-stuffing and the TOP cut-off):
//! the output must not depend on how the body is cut into chunks, and must
//! satisfy the shared invariants in `pop3_proto::testing`.

use pop3_proto::testing::{check_stuffed, check_top, encode_body, escape_bytes};
use proptest::prelude::*;
use proptest::sample::Index;

/// A byte, biased towards the ones that matter for stuffing and line ends.
fn body_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        4 => Just(b'.'),
        4 => Just(b'\r'),
        4 => Just(b'\n'),
        3 => Just(b'a'),
        1 => any::<u8>(),
    ]
}

/// A line ending as found in stored mail: CRLF, bare LF, lone CR or none.
fn line_end() -> impl Strategy<Value = &'static [u8]> {
    prop_oneof![
        4 => Just(&b"\r\n"[..]),
        3 => Just(&b"\n"[..]),
        1 => Just(&b"\r"[..]),
        1 => Just(&b"\r\r\n"[..]),
    ]
}

/// A message shaped like mail: header lines, often a blank line, body lines
/// (many starting with dots, some empty), and maybe no final line end.
fn structured_body() -> impl Strategy<Value = Vec<u8>> {
    let header = "[A-Z][a-z]{0,3}: [a-z .]{0,6}";
    let body_line = prop_oneof![
        2 => Just(String::new()),
        2 => Just(".".to_owned()),
        2 => "\\.[a-z.]{0,4}",
        3 => "[a-z .]{1,8}",
    ];
    (
        prop::collection::vec((header, line_end()), 0..4),
        prop::option::weighted(0.8, line_end()),
        prop::collection::vec((body_line, line_end()), 0..8),
        prop::option::of("[a-z.]{1,4}"),
    )
        .prop_map(|(headers, blank, lines, tail)| {
            let mut out = Vec::new();
            for (h, end) in headers {
                out.extend_from_slice(h.as_bytes());
                out.extend_from_slice(end);
            }
            if let Some(end) = blank {
                out.extend_from_slice(end);
            }
            for (l, end) in lines {
                out.extend_from_slice(l.as_bytes());
                out.extend_from_slice(end);
            }
            if let Some(t) = tail {
                out.extend_from_slice(t.as_bytes());
            }
            out
        })
}

/// An arbitrary body: either raw biased bytes or mail-shaped text.
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(body_byte(), 0..160),
        structured_body(),
    ]
}

/// Cut points into a body of any length; repeated points give empty chunks.
fn cuts() -> impl Strategy<Value = Vec<Index>> {
    prop::collection::vec(any::<Index>(), 0..12)
}

/// Splits `body` at the given cut points (sorted, duplicates kept).
/// A longer body for the block scan: runs of plain text between dense
/// `.`, CR and LF, so line ends fall at every offset of a block.
fn long_body() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        3 => prop::collection::vec(body_byte(), 1..6),
        1 => (1usize..80).prop_map(|n| vec![b'x'; n]),
    ];
    prop::collection::vec(piece, 0..40).prop_map(|pieces| pieces.concat())
}

/// The encoder written down as RFC 1939 says it, a line at a time over the
/// whole body: a line ends at LF (a CR just before it is part of the line
/// end) or at the end of the body (a CR there too); each line goes out
/// with CRLF, a `.` in front if it starts with one; TOP k sends the lines up
/// to the first empty one, then k more; `.` CRLF ends it.
fn reference_encoding(body: &[u8], top: Option<u64>) -> Vec<u8> {
    let mut lines: Vec<&[u8]> = body.split(|&b| b == b'\n').collect();
    if lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    let mut wanted = top.map(|k| (false, k));
    let mut out = Vec::new();
    for line in lines {
        let text = line.strip_suffix(b"\r").unwrap_or(line);
        if wanted.is_some_and(|(in_body, k)| in_body && k == 0) {
            break;
        }
        if text.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(text);
        out.extend_from_slice(b"\r\n");
        wanted = match wanted {
            Some((false, k)) => Some((text.is_empty(), k)),
            Some((true, k)) => Some((true, k - 1)),
            None => None,
        };
    }
    out.extend_from_slice(b".\r\n");
    out
}

fn chunk<'a>(body: &'a [u8], cuts: &[Index]) -> Vec<&'a [u8]> {
    let mut at: Vec<usize> = cuts.iter().map(|i| i.index(body.len() + 1)).collect();
    at.sort_unstable();
    let mut pieces = Vec::with_capacity(at.len() + 1);
    let mut start = 0;
    for cut in at {
        pieces.push(&body[start..cut]);
        start = cut;
    }
    pieces.push(&body[start..]);
    pieces
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// RETR encoding of a chunked body equals the encoding of the whole body.
    #[test]
    fn retr_encoding_is_chunk_invariant(body in body(), cuts in cuts()) {
        let pieces = chunk(&body, &cuts);
        let whole = encode_body(&[&body], None);
        let chunked = encode_body(&pieces, None);
        prop_assert_eq!(
            escape_bytes(&chunked),
            escape_bytes(&whole),
            "pieces: {:?}",
            pieces.iter().map(|p| escape_bytes(p)).collect::<Vec<_>>()
        );
    }

    /// RETR encoding, however chunked, is well framed and unstuffs to the normalized body.
    #[test]
    fn retr_encoding_is_stuffed_correctly(body in body(), cuts in cuts()) {
        let pieces = chunk(&body, &cuts);
        let out = encode_body(&pieces, None);
        if let Err(e) = check_stuffed(&body, &out) {
            return Err(TestCaseError::fail(format!(
                "{e}\nbody: {}\nout: {}",
                escape_bytes(&body),
                escape_bytes(&out)
            )));
        }
    }

    /// TOP n k output, however chunked, is a framed prefix of RETR holding exactly the headers and k body lines.
    #[test]
    fn top_encoding_is_correct(body in body(), cuts in cuts(), k in 0u64..6) {
        let pieces = chunk(&body, &cuts);
        let retr = encode_body(&[&body], None);
        let top = encode_body(&pieces, Some(k));
        if let Err(e) = check_top(&body, k, &top, &retr) {
            return Err(TestCaseError::fail(format!(
                "{e}\nbody: {}\npieces: {:?}\ntop: {}",
                escape_bytes(&body),
                pieces.iter().map(|p| escape_bytes(p)).collect::<Vec<_>>(),
                escape_bytes(&top)
            )));
        }
    }

    /// TOP n k encoding of a chunked body equals the encoding of the whole body.
    #[test]
    fn top_encoding_is_chunk_invariant(body in body(), cuts in cuts(), k in 0u64..6) {
        let pieces = chunk(&body, &cuts);
        let whole = encode_body(&[&body], Some(k));
        let chunked = encode_body(&pieces, Some(k));
        prop_assert_eq!(
            escape_bytes(&chunked),
            escape_bytes(&whole),
            "pieces: {:?}",
            pieces.iter().map(|p| escape_bytes(p)).collect::<Vec<_>>()
        );
    }

    /// Splitting a body into single bytes gives the same RETR and TOP output as not splitting it.
    #[test]
    fn byte_by_byte_chunks_change_nothing(body in body(), k in 0u64..6) {
        let pieces: Vec<&[u8]> = body.chunks(1).collect();
        prop_assert_eq!(
            escape_bytes(&encode_body(&pieces, None)),
            escape_bytes(&encode_body(&[&body], None))
        );
        prop_assert_eq!(
            escape_bytes(&encode_body(&pieces, Some(k))),
            escape_bytes(&encode_body(&[&body], Some(k)))
        );
    }

    /// RETR and TOP output, however chunked, is byte for byte the reference encoding.
    #[test]
    fn encoding_matches_the_reference(
        body in prop_oneof![body(), long_body()],
        cuts in cuts(),
        top in prop::option::of(0u64..6),
    ) {
        let pieces = chunk(&body, &cuts);
        prop_assert_eq!(
            escape_bytes(&encode_body(&pieces, top)),
            escape_bytes(&reference_encoding(&body, top)),
            "pieces: {:?}",
            pieces.iter().map(|p| escape_bytes(p)).collect::<Vec<_>>()
        );
    }
}
