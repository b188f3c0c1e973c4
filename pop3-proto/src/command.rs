//! Command grammar (RFC 1939 §3, RFC 2449 §3): keywords, arguments and message numbers.

use crate::apop::parse_hex_digest;
use crate::lang::Text;
use crate::sasl::Mechanism;
use crate::secret::Secret;

/// A parsed client command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Command {
    User(String),
    Pass(Secret<Vec<u8>>),
    Apop {
        user: String,
        digest: [u8; 16],
    },
    Quit,
    Stat,
    List(Option<u32>),
    Retr(u32),
    Dele(u32),
    Noop,
    Rset,
    Top(u32, u64),
    Uidl(Option<u32>),
    Capa,
    Stls,
    /// RFC 6856 `UTF8`.
    Utf8,
    /// RFC 6856 `LANG`: `None` lists, `Some(range)` selects (`*` included).
    Lang(Option<String>),
    /// `AUTH` alone: list the mechanisms.
    AuthList,
    /// `AUTH name [initial-response]`; `None` for a name not known here.
    Auth {
        mechanism: Option<Mechanism>,
        initial: Option<Secret<Vec<u8>>>,
    },
}

impl Command {
    /// The keyword, upper case (`AUTH` with or without a mechanism).
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Self::User(_) => "USER",
            Self::Pass(_) => "PASS",
            Self::Apop { .. } => "APOP",
            Self::Quit => "QUIT",
            Self::Stat => "STAT",
            Self::List(_) => "LIST",
            Self::Retr(_) => "RETR",
            Self::Dele(_) => "DELE",
            Self::Noop => "NOOP",
            Self::Rset => "RSET",
            Self::Top(..) => "TOP",
            Self::Uidl(_) => "UIDL",
            Self::Capa => "CAPA",
            Self::Stls => "STLS",
            Self::Utf8 => "UTF8",
            Self::Lang(_) => "LANG",
            Self::AuthList | Self::Auth { .. } => "AUTH",
        }
    }
}

/// Why a line is not a valid command. Each becomes an `-ERR` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ParseError {
    Empty,
    Unknown,
    MissingArgument(&'static str),
    TooManyArguments,
    InvalidMessageNumber,
    InvalidLineCount,
    InvalidUser,
    InvalidDigest,
    InvalidLanguage,
}

impl ParseError {
    /// The response text, and the argument that is missing (if any).
    pub(crate) fn text(self) -> (Text, &'static str) {
        let text = match self {
            Self::Empty => Text::EmptyCommand,
            Self::Unknown => Text::UnknownCommand,
            Self::MissingArgument(what) => return (Text::MissingArgument, what),
            Self::TooManyArguments => Text::TooManyArguments,
            Self::InvalidMessageNumber => Text::InvalidMessageNumber,
            Self::InvalidLineCount => Text::InvalidLineCount,
            Self::InvalidUser => Text::InvalidUserName,
            Self::InvalidDigest => Text::InvalidDigest,
            Self::InvalidLanguage => Text::InvalidLanguage,
        };
        (text, "")
    }
}

/// Parses one command line (without its line end).
pub(crate) fn parse(line: &[u8]) -> Result<Command, ParseError> {
    let (keyword, rest) = match memchr::memchr(b' ', line) {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, &line[line.len()..]),
    };
    if keyword.is_empty() {
        return Err(if line.iter().all(|&b| b == b' ') {
            ParseError::Empty
        } else {
            ParseError::Unknown
        });
    }
    let is = |k: &str| keyword.eq_ignore_ascii_case(k.as_bytes());
    let mut args = Args::new(rest);
    let command = if is("USER") {
        // The name is the rest of the line: some sites have spaces in names.
        Command::User(user_name(trim_end(rest))?)
    } else if is("PASS") {
        // RFC 1939 §7: the password is the rest of the line, spaces included.
        if rest.is_empty() {
            return Err(ParseError::MissingArgument("password"));
        }
        Command::Pass(Secret::new(rest.to_vec()))
    } else if is("APOP") {
        // APOP name digest: the digest is the last word, the name all before it.
        let rest = trim_end(rest);
        if rest.is_empty() {
            return Err(ParseError::MissingArgument("user name"));
        }
        let split = memchr::memrchr(b' ', rest).ok_or(ParseError::MissingArgument("digest"))?;
        let user = user_name(trim_end(&rest[..split]))?;
        let digest = parse_hex_digest(&rest[split + 1..]).ok_or(ParseError::InvalidDigest)?;
        Command::Apop { user, digest }
    } else if is("QUIT") {
        args.finish(Command::Quit)?
    } else if is("STAT") {
        args.finish(Command::Stat)?
    } else if is("LIST") {
        let n = args.optional_number()?;
        args.finish(Command::List(n))?
    } else if is("RETR") {
        let n = args.number()?;
        args.finish(Command::Retr(n))?
    } else if is("DELE") {
        let n = args.number()?;
        args.finish(Command::Dele(n))?
    } else if is("NOOP") {
        args.finish(Command::Noop)?
    } else if is("RSET") {
        args.finish(Command::Rset)?
    } else if is("TOP") {
        let n = args.number()?;
        let lines = args.line_count()?;
        args.finish(Command::Top(n, lines))?
    } else if is("UIDL") {
        let n = args.optional_number()?;
        args.finish(Command::Uidl(n))?
    } else if is("CAPA") {
        args.finish(Command::Capa)?
    } else if is("STLS") {
        args.finish(Command::Stls)?
    } else if is("UTF8") {
        args.finish(Command::Utf8)?
    } else if is("LANG") {
        let range = match args.next_word() {
            None => None,
            Some(word) => Some(
                std::str::from_utf8(word)
                    .ok()
                    .filter(|w| w.is_ascii())
                    .ok_or(ParseError::InvalidLanguage)?
                    .to_owned(),
            ),
        };
        args.finish(Command::Lang(range))?
    } else if is("AUTH") {
        // RFC 5034 §4: AUTH mechanism [initial-response].
        match args.next_word() {
            None => Command::AuthList,
            Some(name) => {
                let initial = args.next_word().map(|w| Secret::new(w.to_vec()));
                args.finish(Command::Auth {
                    mechanism: Mechanism::from_name(name),
                    initial,
                })?
            }
        }
    } else {
        return Err(ParseError::Unknown);
    };
    Ok(command)
}

#[cfg(feature = "testing")]
impl Command {
    /// The command as a line (without its line end) that parses back to it.
    pub(crate) fn to_line(&self) -> Vec<u8> {
        let text = |s: &str| s.as_bytes().to_vec();
        let with = |keyword: &str, arg: &[u8]| {
            let mut line = format!("{keyword} ").into_bytes();
            line.extend_from_slice(arg);
            line
        };
        match self {
            Self::User(name) => with("USER", name.as_bytes()),
            Self::Pass(password) => with("PASS", password.expose()),
            Self::Apop { user, digest } => {
                let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
                text(&format!("APOP {user} {hex}"))
            }
            Self::Quit => text("QUIT"),
            Self::Stat => text("STAT"),
            Self::List(None) => text("LIST"),
            Self::List(Some(n)) => text(&format!("LIST {n}")),
            Self::Retr(n) => text(&format!("RETR {n}")),
            Self::Dele(n) => text(&format!("DELE {n}")),
            Self::Noop => text("NOOP"),
            Self::Rset => text("RSET"),
            Self::Top(n, k) => text(&format!("TOP {n} {k}")),
            Self::Uidl(None) => text("UIDL"),
            Self::Uidl(Some(n)) => text(&format!("UIDL {n}")),
            Self::Capa => text("CAPA"),
            Self::Stls => text("STLS"),
            Self::Utf8 => text("UTF8"),
            Self::Lang(None) => text("LANG"),
            Self::Lang(Some(range)) => with("LANG", range.as_bytes()),
            Self::AuthList => text("AUTH"),
            Self::Auth { mechanism, initial } => {
                // A name no mechanism has stands for any unknown one.
                let name = mechanism.map_or("X-UNKNOWN-MECHANISM", Mechanism::name);
                let mut line = with("AUTH", name.as_bytes());
                if let Some(initial) = initial {
                    line.push(b' ');
                    line.extend_from_slice(initial.expose());
                }
                line
            }
        }
    }
}

fn trim_end(s: &[u8]) -> &[u8] {
    let end = s.iter().rposition(|&b| b != b' ').map_or(0, |i| i + 1);
    &s[..end]
}

fn user_name(raw: &[u8]) -> Result<String, ParseError> {
    if raw.is_empty() {
        return Err(ParseError::MissingArgument("user name"));
    }
    let name = std::str::from_utf8(raw).map_err(|_| ParseError::InvalidUser)?;
    if name.chars().any(char::is_control) {
        return Err(ParseError::InvalidUser);
    }
    Ok(name.to_owned())
}

/// Space-separated arguments. Runs of spaces are tolerated.
struct Args<'a> {
    rest: &'a [u8],
}

impl<'a> Args<'a> {
    fn new(rest: &'a [u8]) -> Self {
        Self { rest }
    }

    fn next_word(&mut self) -> Option<&'a [u8]> {
        let start = self.rest.iter().position(|&b| b != b' ')?;
        let rest = &self.rest[start..];
        let end = memchr::memchr(b' ', rest).unwrap_or(rest.len());
        self.rest = &rest[end..];
        Some(&rest[..end])
    }

    fn number(&mut self) -> Result<u32, ParseError> {
        let word = self
            .next_word()
            .ok_or(ParseError::MissingArgument("message number"))?;
        message_number(word)
    }

    fn optional_number(&mut self) -> Result<Option<u32>, ParseError> {
        self.next_word().map(message_number).transpose()
    }

    fn line_count(&mut self) -> Result<u64, ParseError> {
        let word = self
            .next_word()
            .ok_or(ParseError::MissingArgument("line count"))?;
        decimal(word).ok_or(ParseError::InvalidLineCount)
    }

    fn finish(mut self, command: Command) -> Result<Command, ParseError> {
        match self.next_word() {
            Some(_) => Err(ParseError::TooManyArguments),
            None => Ok(command),
        }
    }
}

/// RFC 1939 §3: message numbers are 1-based decimal; no sign, no zero.
fn message_number(word: &[u8]) -> Result<u32, ParseError> {
    decimal(word)
        .and_then(|n| u32::try_from(n).ok())
        .filter(|&n| n != 0)
        .ok_or(ParseError::InvalidMessageNumber)
}

/// Unsigned decimal digits only; `None` on anything else or on overflow.
fn decimal(word: &[u8]) -> Option<u64> {
    if word.is_empty() {
        return None;
    }
    word.iter().try_fold(0u64, |acc, &b| {
        let digit = (b as char).to_digit(10)?;
        acc.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_are_case_insensitive() {
        assert_eq!(parse(b"stat"), Ok(Command::Stat));
        assert_eq!(parse(b"LiSt 3"), Ok(Command::List(Some(3))));
        assert_eq!(parse(b"top 1 0"), Ok(Command::Top(1, 0)));
        assert_eq!(parse(b"uidl"), Ok(Command::Uidl(None)));
    }

    #[test]
    fn message_numbers() {
        assert_eq!(parse(b"RETR 0"), Err(ParseError::InvalidMessageNumber));
        assert_eq!(parse(b"RETR -1"), Err(ParseError::InvalidMessageNumber));
        assert_eq!(parse(b"RETR +1"), Err(ParseError::InvalidMessageNumber));
        assert_eq!(parse(b"RETR 1x"), Err(ParseError::InvalidMessageNumber));
        assert_eq!(
            parse(b"RETR 4294967296"),
            Err(ParseError::InvalidMessageNumber)
        );
        assert_eq!(
            parse(b"RETR 99999999999999999999999"),
            Err(ParseError::InvalidMessageNumber)
        );
        assert_eq!(parse(b"RETR 4294967295"), Ok(Command::Retr(u32::MAX)));
        assert_eq!(parse(b"RETR 007"), Ok(Command::Retr(7)));
        assert_eq!(
            parse(b"RETR"),
            Err(ParseError::MissingArgument("message number"))
        );
        assert_eq!(parse(b"RETR 1 2"), Err(ParseError::TooManyArguments));
        assert_eq!(parse(b"DELE 1  "), Ok(Command::Dele(1)));
        assert_eq!(parse(b"STAT x"), Err(ParseError::TooManyArguments));
        assert_eq!(
            parse(b"TOP 1"),
            Err(ParseError::MissingArgument("line count"))
        );
        assert_eq!(parse(b"TOP 1 -1"), Err(ParseError::InvalidLineCount));
    }

    #[test]
    fn pass_keeps_spaces() {
        assert_eq!(
            parse(b"PASS  two words "),
            Ok(Command::Pass(Secret::new(b" two words ".to_vec())))
        );
        assert_eq!(parse(b"PASS"), Err(ParseError::MissingArgument("password")));
    }

    #[test]
    fn user_and_apop() {
        assert_eq!(parse(b"USER mrose"), Ok(Command::User("mrose".into())));
        assert_eq!(
            parse(b"USER"),
            Err(ParseError::MissingArgument("user name"))
        );
        assert_eq!(parse(b"USER \xff"), Err(ParseError::InvalidUser));
        assert_eq!(
            parse(b"APOP mrose c4c9334bac560ecc979e58001b3e22fb"),
            Ok(Command::Apop {
                user: "mrose".into(),
                digest: parse_hex_digest(b"c4c9334bac560ecc979e58001b3e22fb").unwrap()
            })
        );
        assert_eq!(
            parse(b"APOP mrose"),
            Err(ParseError::MissingArgument("digest"))
        );
        assert_eq!(parse(b"APOP mrose xyz"), Err(ParseError::InvalidDigest));
        assert_eq!(
            parse(b"APOP"),
            Err(ParseError::MissingArgument("user name"))
        );
    }

    #[test]
    fn auth() {
        assert_eq!(parse(b"AUTH"), Ok(Command::AuthList));
        assert_eq!(
            parse(b"auth plain"),
            Ok(Command::Auth {
                mechanism: Some(Mechanism::Plain),
                initial: None
            })
        );
        assert_eq!(
            parse(b"AUTH PLAIN AHRpbQB0YW5zdGFhZg=="),
            Ok(Command::Auth {
                mechanism: Some(Mechanism::Plain),
                initial: Some(Secret::new(b"AHRpbQB0YW5zdGFhZg==".to_vec()))
            })
        );
        assert_eq!(
            parse(b"AUTH CRAM-MD5"),
            Ok(Command::Auth {
                mechanism: None,
                initial: None
            })
        );
        assert_eq!(parse(b"AUTH PLAIN a b"), Err(ParseError::TooManyArguments));
    }

    #[test]
    fn junk() {
        assert_eq!(parse(b""), Err(ParseError::Empty));
        assert_eq!(parse(b"   "), Err(ParseError::Empty));
        assert_eq!(parse(b" STAT"), Err(ParseError::Unknown));
        assert_eq!(parse(b"XYZZY"), Err(ParseError::Unknown));
        assert_eq!(parse(b"STA"), Err(ParseError::Unknown));
        assert_eq!(parse(b"STATS"), Err(ParseError::Unknown));
    }
}
