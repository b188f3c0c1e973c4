//! Maildir file names, as bytes (a name need not be UTF-8).
//!
//! `<unique>[,S=<size>][,W=<crlf size>]...[:2,<flags>]`: the unique part
//! runs up to the first `,` or `:` and never changes while the message
//! lives; size fields and flags come after it.

use md5::{Digest, Md5};
use pop3_proto::Uid;

/// The stable part of a Maildir name: up to the first `,` (size fields) or `:` (flags).
pub(crate) fn unique_part(name: &[u8]) -> &[u8] {
    let end = name
        .iter()
        .position(|&b| b == b',' || b == b':')
        .unwrap_or(name.len());
    &name[..end]
}

/// The name up to its `:` (the info, flags), and the info after it.
pub(crate) fn split_info(name: &[u8]) -> (&[u8], Option<&[u8]>) {
    match name.iter().position(|&b| b == b':') {
        Some(i) => (&name[..i], Some(&name[i + 1..])),
        None => (name, None),
    }
}

/// The `,W=` (CRLF size) field of a Maildir name.
pub(crate) fn size_field(name: &[u8]) -> Option<u64> {
    let (base, _) = split_info(name);
    base.split(|&b| b == b',').skip(1).find_map(|f| {
        std::str::from_utf8(f.strip_prefix(b"W=")?)
            .ok()?
            .parse()
            .ok()
    })
}

/// The name a message retrieved from `new/` gets in `cur/`: its size field
/// (`,W=`) added to the base name, before the info, and the seen flag `S`
/// added to the flags it may already carry (`base,W=n:2,FS`), in ASCII
/// order. An info that is not `2,...` (experimental semantics) is kept as is.
pub(crate) fn cur_name(name: &[u8], size: u64) -> Vec<u8> {
    let (base, info) = split_info(name);
    let mut sized = base.to_vec();
    if size_field(name).is_none() {
        sized.extend_from_slice(format!(",W={size}").as_bytes());
    }
    if let Some(info) = info {
        sized.push(b':');
        sized.extend_from_slice(info);
    }
    with_flag(&sized, b'S').unwrap_or(sized)
}

/// The name with `flag` added to its flags (`base:2,<flags>` in ASCII
/// order, an extension after a `,` kept); a name without info gets
/// `:2,<flag>`. `None` for an info that is not `2,...` (experimental
/// semantics: no flags to add to).
pub(crate) fn with_flag(name: &[u8], flag: u8) -> Option<Vec<u8>> {
    let (base, info) = split_info(name);
    let mut out = base.to_vec();
    out.extend_from_slice(b":2,");
    let (mut flags, ext) = match info {
        None => (Vec::new(), &b""[..]),
        Some(info) => {
            let rest = info.strip_prefix(b"2,")?;
            let end = rest.iter().position(|&b| b == b',').unwrap_or(rest.len());
            (rest[..end].to_vec(), &rest[end..])
        }
    };
    flags.push(flag);
    flags.sort_unstable();
    flags.dedup();
    out.extend_from_slice(&flags);
    out.extend_from_slice(ext);
    Some(out)
}

/// Whether the name carries `flag` (in a `:2,` info).
pub(crate) fn has_flag(name: &[u8], flag: u8) -> bool {
    match split_info(name).1.and_then(|info| info.strip_prefix(b"2,")) {
        Some(rest) => rest.iter().take_while(|&&b| b != b',').any(|&b| b == flag),
        None => false,
    }
}

/// The UIDL value derived from a unique part alone: the unique part
/// itself when it is a valid UIDL (1-70 printable characters), otherwise
/// `md5-` and the digest of its bytes (36 characters). Either way nothing
/// but the unique part goes in, so no rename changes it.
pub(crate) fn base_uid(unique: &[u8]) -> Uid {
    std::str::from_utf8(unique)
        .ok()
        .and_then(|u| Uid::new(u).ok())
        .unwrap_or_else(|| digest_uid("md5-", unique))
}

/// `prefix` and the hex MD5 of `data`, as a UIDL.
pub(crate) fn digest_uid(prefix: &str, data: &[u8]) -> Uid {
    let hex: String = Md5::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Uid::new(format!("{prefix}{hex}")).expect("a short prefix and hex are a valid uid")
}

/// Delivery time as (seconds, microseconds) from a Maildir name
/// (`1700000000.M123456P42.host`: `M` carries the microseconds).
pub(crate) fn delivery_time(unique: &[u8]) -> Option<(u64, u32)> {
    let mut parts = unique.split(|&b| b == b'.');
    let secs = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    let micros = parts
        .next()
        .and_then(|p| p.strip_prefix(b"M"))
        .and_then(|p| {
            let digits = p.iter().take_while(|b| b.is_ascii_digit()).count();
            std::str::from_utf8(&p[..digits]).ok()?.parse().ok()
        })
        .unwrap_or(0);
    Some((secs, micros))
}

/// Writes bytes as one space-free token: printable ASCII as is, `%` and
/// everything else as `%XX`.
pub(crate) fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if (0x21..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The inverse of [`escape`]; `None` for anything `escape` never writes.
pub(crate) fn unescape(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                if !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
                    return None;
                }
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b @ 0x21..=0x7e => {
                out.push(b);
                i += 1;
            }
            _ => return None,
        }
    }
    Some(out)
}

/// A plain file name: non-empty, no `/` or NUL, not `.` or `..`.
pub(crate) fn is_plain_name(name: &[u8]) -> bool {
    !name.is_empty() && name != b"." && name != b".." && !name.contains(&b'/') && !name.contains(&0)
}

/// A name for logs.
pub(crate) fn show(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_parts() {
        assert_eq!(
            unique_part(b"1700000000.M1P2.host,S=10,W=12:2,S"),
            b"1700000000.M1P2.host"
        );
        assert_eq!(unique_part(b"plain"), b"plain");
        assert_eq!(size_field(b"1.a.b,S=10,W=12:2,S"), Some(12));
        assert_eq!(size_field(b"1.a.b,S=10:2,W=99"), None);
        assert_eq!(
            delivery_time(b"1700000000.M5P1.host"),
            Some((1_700_000_000, 5))
        );
        assert_eq!(delivery_time(b"x.y"), None);
        for bytes in [&b"a b%c\xff\n"[..], b"", b"plain"] {
            assert_eq!(unescape(&escape(bytes)).unwrap(), bytes);
        }
        assert_eq!(unescape("%2"), None);
        assert_eq!(unescape("a b"), None);
        assert!(!is_plain_name(b"../x") && !is_plain_name(b"..") && is_plain_name(b"a:2,S"));
    }

    #[test]
    fn cur_names_keep_flags_and_put_the_size_before_them() {
        assert_eq!(cur_name(b"1.a.h", 17), b"1.a.h,W=17:2,S");
        assert_eq!(cur_name(b"1.a.h,S=15", 17), b"1.a.h,S=15,W=17:2,S");
        assert_eq!(cur_name(b"1.a.h,S=15,W=17", 99), b"1.a.h,S=15,W=17:2,S");
        assert_eq!(cur_name(b"1.a.h:2,", 17), b"1.a.h,W=17:2,S");
        assert_eq!(cur_name(b"1.a.h,S=15:2,RF", 17), b"1.a.h,S=15,W=17:2,FRS");
        assert_eq!(cur_name(b"1.a.h:2,S", 17), b"1.a.h,W=17:2,S");
        assert_eq!(cur_name(b"1.a.h:1,x", 17), b"1.a.h,W=17:1,x");
    }

    #[test]
    fn the_trash_flag_is_added_in_order_and_found() {
        assert_eq!(with_flag(b"1.a.h", b'T').unwrap(), b"1.a.h:2,T");
        assert_eq!(
            with_flag(b"1.a.h,W=3:2,SR", b'T').unwrap(),
            b"1.a.h,W=3:2,RST"
        );
        assert_eq!(with_flag(b"1.a.h:2,T,x", b'T').unwrap(), b"1.a.h:2,T,x");
        assert_eq!(with_flag(b"1.a.h:1,x", b'T'), None);
        assert!(has_flag(b"1.a.h:2,ST", b'T'));
        assert!(!has_flag(b"1.a.h:2,S,T", b'T'));
        assert!(!has_flag(b"1.T.h", b'T'));
    }

    #[test]
    fn uids_depend_on_the_unique_part_only() {
        assert_eq!(base_uid(b"1.a.b").as_str(), "1.a.b");
        let long = "x".repeat(71);
        assert!(base_uid(long.as_bytes()).as_str().starts_with("md5-"));
        assert_eq!(base_uid(long.as_bytes()), base_uid(long.as_bytes()));
        assert_ne!(base_uid(b"a b"), base_uid(b"a c"));
        assert!(base_uid(b"caf\xe9").as_str().starts_with("md5-"));
    }
}
