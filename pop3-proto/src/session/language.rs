//! RFC 6856: UTF-8 mode (the `UTF8` command, UTF-8 user names and
//! passwords normalised with SASLprep, `[UTF8]` maildrops) and the
//! response language (`LANG`).

use super::Session;
use crate::lang::Text;
use crate::reply;
use crate::secret::Secret;

/// Why a user name or password cannot be used.
pub(super) enum Unusable {
    /// Not ASCII, and UTF-8 mode is off.
    NeedsUtf8,
    /// Not valid UTF-8, or refused by SASLprep.
    Invalid,
}

impl Session {
    /// `UTF8` (AUTHORIZATION only).
    pub(super) fn enter_utf8(&mut self) {
        if self.config.utf8 {
            self.utf8 = true;
            self.ok(Text::Utf8Enabled, []);
        } else {
            self.err(Text::Utf8NotOffered, []);
        }
    }

    /// A user name as the store gets it: ASCII as sent; otherwise only in
    /// UTF-8 mode, SASLprep-normalised (RFC 6856 §2).
    pub(super) fn user_name(&self, name: String) -> Result<String, Unusable> {
        if name.is_ascii() {
            return Ok(name);
        }
        if !self.utf8 {
            return Err(Unusable::NeedsUtf8);
        }
        match stringprep::saslprep(&name) {
            Ok(prepared) if !prepared.is_empty() => Ok(prepared.into_owned()),
            _ => Err(Unusable::Invalid),
        }
    }

    /// A password, likewise.
    pub(super) fn password(&self, password: Secret<Vec<u8>>) -> Result<Secret<Vec<u8>>, Unusable> {
        if password.expose().is_ascii() {
            return Ok(password);
        }
        if !self.utf8 {
            return Err(Unusable::NeedsUtf8);
        }
        let text = std::str::from_utf8(password.expose()).map_err(|_| Unusable::Invalid)?;
        match stringprep::saslprep(text) {
            Ok(prepared) if !prepared.is_empty() => {
                Ok(Secret::new(prepared.into_owned().into_bytes()))
            }
            _ => Err(Unusable::Invalid),
        }
    }

    /// Tells the client why a name or password was not used.
    pub(super) fn unusable(&mut self, why: Unusable) {
        match why {
            Unusable::NeedsUtf8 => self.err(Text::Utf8NameNeedsUtf8, []),
            Unusable::Invalid => self.err(Text::Utf8InvalidString, []),
        }
    }

    /// `LANG [range]` (both states).
    pub(super) fn lang(&mut self, range: Option<String>) {
        if !self.config.lang {
            self.err(Text::LangNotOffered, []);
            return;
        }
        let Some(range) = range else {
            let config = &self.config;
            let text = config.languages[self.language].render(Text::LanguageListing, []);
            self.queue.with_buf(|out| {
                reply::ok(out, format_args!("{text}"));
                for l in &config.languages {
                    out.extend_from_slice(
                        format!("{} {}\r\n", l.tag(), l.description()).as_bytes(),
                    );
                }
                out.extend_from_slice(b".\r\n");
            });
            return;
        };
        let languages = &self.config.languages;
        // `*` and `i-default` name the default; a range also matches the
        // tags it is a prefix of (RFC 4647 basic filtering).
        let chosen = if range == "*" || range.eq_ignore_ascii_case("i-default") {
            Some(0)
        } else {
            languages
                .iter()
                .position(|l| l.tag().eq_ignore_ascii_case(&range))
                .or_else(|| {
                    languages.iter().position(|l| {
                        let tag = l.tag().as_bytes();
                        tag.len() > range.len()
                            && tag[range.len()] == b'-'
                            && tag[..range.len()].eq_ignore_ascii_case(range.as_bytes())
                    })
                })
        };
        match chosen {
            Some(i) => {
                self.language = i;
                let tag = self.config.languages[i].tag().to_owned();
                self.ok(Text::LanguageChanged, [("tag", &tag)]);
            }
            None => self.err(Text::InvalidLanguage, []),
        }
    }
}
