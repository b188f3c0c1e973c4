//! Response texts and languages (RFC 6856 §4, the `LANG` command): every
//! human-readable text the core sends, in one table per language.
//!
//! Protocol data (message numbers, sizes, unique-ids, capability names) is
//! never translated; the text after `+OK` / `-ERR` and a response code is.
//! A [`Language`] starts from English and replaces texts one by one; a text
//! it does not replace stays English. Templates name their values in
//! braces (`{user}`, `{count}`, …): a translation may reorder or leave out
//! those values, never add others.

use std::fmt;

use crate::error::ConfigError;

macro_rules! texts {
    ($($name:ident = $english:literal,)+) => {
        /// One response text. Its English template is shown; placeholders
        /// in braces are filled in when it is sent.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum Text {
            $(#[doc = $english] $name,)+
        }

        impl Text {
            /// Every text, in table order.
            pub const ALL: &'static [Text] = &[$(Text::$name,)+];

            /// The English template.
            pub fn english(self) -> &'static str {
                match self {
                    $(Text::$name => $english,)+
                }
            }
        }
    };
}

texts! {
    Ready = "POP3 server ready",
    ReadyApop = "POP3 server ready {timestamp}",
    SigningOff = "{host} POP3 server signing off",
    SigningOffEmpty = "{host} POP3 server signing off (maildrop empty)",
    SigningOffLeft = "{host} POP3 server signing off ({left} messages left)",
    ShuttingDown = "server shutting down",
    CapabilityList = "capability list follows",
    SendPass = "send PASS",
    SendUserFirst = "send USER first",
    UserPassNotOffered = "USER/PASS not offered",
    ApopNotOffered = "APOP not offered",
    StlsNotOffered = "STLS not offered",
    TlsAlreadyActive = "TLS already active",
    BeginTls = "Begin TLS negotiation",
    NotValidBeforeLogin = "command not valid before login",
    NotValidAfterLogin = "command not valid after login",
    MaildropReady = "{user}'s maildrop has {count} messages ({size} octets)",
    InvalidCredentials = "invalid user name or password",
    LoginTooSoon = "logged in too recently, try again in {seconds} seconds",
    TooManyFailuresFromAddress = "too many failed logins from your address, try again later",
    TooManyFailuresForUser = "too many failed logins for this user, try again later",
    NeedsTls = "{method} is not allowed without TLS",
    NeedsTlsUseStls = "{method} is not allowed without TLS; use STLS first",
    SaslMechanisms = "SASL mechanisms follow",
    UnsupportedMechanism = "unsupported authentication mechanism",
    InitialResponseNotBase64 = "invalid base64 in the initial response",
    ResponseNotBase64 = "invalid base64, authentication aborted",
    AuthenticationCancelled = "authentication cancelled",
    SaslLineTooLong = "line too long, authentication aborted",
    PlainForm = "PLAIN needs authzid NUL authcid NUL password",
    PlainNeedsPassword = "PLAIN needs a password",
    InvalidAuthorizationIdentity = "invalid authorization identity",
    XOAuth2Form = "XOAUTH2 needs user= and auth=Bearer",
    OAuthBearerNeedsGs2 = "OAUTHBEARER needs a GS2 header",
    OAuthBearerGs2Unsupported = "OAUTHBEARER: unsupported GS2 header",
    OAuthBearerNeedsUser = "OAUTHBEARER needs the user in a=",
    OAuthBearerNeedsToken = "OAUTHBEARER needs auth=Bearer",
    ScramInvalidMessage = "invalid SCRAM message",
    ScramChannelBindingUnsupported = "channel binding is not supported",
    ScramExtensionsUnsupported = "SCRAM extensions are not supported",
    ScramInvalidNonce = "invalid SCRAM nonce",
    ScramAuthorizationIdentityUnsupported = "authorization identity is not supported",
    ScramChannelBindingMismatch = "channel binding does not match",
    ScramNonceMismatch = "SCRAM nonce does not match",
    ScramInvalidProof = "invalid SCRAM proof",
    ScramExpectsEmpty = "SCRAM expects an empty response",
    Utf8Enabled = "UTF-8 mode enabled",
    Utf8NotOffered = "UTF8 not offered",
    Utf8NameNeedsUtf8 = "UTF-8 user names and passwords need the UTF8 command first",
    Utf8InvalidString = "user name or password not allowed (SASLprep)",
    Utf8MaildropNeedsUtf8 = "this maildrop needs UTF-8 mode: use the UTF8 command first",
    LangNotOffered = "LANG not offered",
    LanguageListing = "language listing follows",
    LanguageChanged = "{tag} language changed",
    InvalidLanguage = "invalid language",
    ScanListing = "{count} messages ({size} octets)",
    UidListing = "unique-id listing follows",
    MessageOctets = "{size} octets",
    TopFollows = "top of message follows",
    MessageDeleted = "message {n} deleted",
    MaildropReset = "maildrop has {count} messages ({size} octets)",
    NoSuchMessage = "no such message",
    AlreadyDeleted = "message {n} already deleted",
    NotAllRemoved = "some deleted messages not removed",
    InternalError = "internal server error, closing connection",
    LineTooLong = "line too long",
    TooManyBadCommands = "too many bad commands, closing connection",
    EmptyCommand = "empty command",
    UnknownCommand = "unknown command",
    MissingArgument = "missing argument: {what}",
    TooManyArguments = "too many arguments",
    InvalidMessageNumber = "invalid message number",
    InvalidLineCount = "invalid line count",
    InvalidUserName = "invalid user name",
    InvalidDigest = "invalid APOP digest",
}

/// The longest template a language may set, in octets.
pub const MAX_TEXT: usize = 200;

/// A language for response texts: a tag (RFC 5646), its description in
/// the `LANG` listing, and its templates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Language {
    tag: String,
    description: String,
    texts: Vec<Option<Box<str>>>,
}

impl Language {
    /// English, the default: every text as [`Text::english`] shows it.
    pub fn english() -> Self {
        Self {
            tag: "en".into(),
            description: "English".into(),
            texts: vec![None; Text::ALL.len()],
        }
    }

    /// A new language, English until its texts are set.
    ///
    /// # Errors
    /// A tag that is not letters, digits and `-` (1 to 35 octets), or a
    /// description with control characters.
    pub fn new(tag: &str, description: &str) -> Result<Self, ConfigError> {
        let tag_ok = !tag.is_empty()
            && tag.len() <= 35
            && tag.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !tag.eq_ignore_ascii_case("i-default");
        if !tag_ok {
            return Err(ConfigError::InvalidLanguage(tag.to_owned()));
        }
        if description.chars().any(char::is_control) || description.len() > MAX_TEXT {
            return Err(ConfigError::InvalidLanguage(description.to_owned()));
        }
        Ok(Self {
            tag: tag.to_owned(),
            description: description.to_owned(),
            ..Self::english()
        })
    }

    /// Sets one text's template.
    ///
    /// # Errors
    /// A template with control characters, longer than [`MAX_TEXT`], or
    /// with a placeholder the English template does not have.
    pub fn text(mut self, text: Text, template: &str) -> Result<Self, ConfigError> {
        let english = text.english();
        let known = |name: &str| placeholders(english).any(|p| p == name);
        if template.chars().any(char::is_control)
            || template.len() > MAX_TEXT
            || !placeholders(template).all(known)
        {
            return Err(ConfigError::InvalidText(text, template.to_owned()));
        }
        self.texts[text as usize] = Some(template.into());
        Ok(self)
    }

    /// The language tag.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// The description in the `LANG` listing.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// The template for `text` in this language.
    pub fn template(&self, text: Text) -> &str {
        self.texts[text as usize]
            .as_deref()
            .unwrap_or_else(|| text.english())
    }

    /// `text` with its values put in.
    pub(crate) fn render<'a, const N: usize>(
        &'a self,
        text: Text,
        values: [Value<'a>; N],
    ) -> Rendered<'a, N> {
        Rendered {
            template: self.template(text),
            values,
        }
    }
}

/// A named value for a template.
pub(crate) type Value<'a> = (&'static str, &'a dyn fmt::Display);

/// A template with its values, written out when displayed.
pub(crate) struct Rendered<'a, const N: usize> {
    template: &'a str,
    values: [Value<'a>; N],
}

impl<const N: usize> fmt::Display for Rendered<'_, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.template;
        while let Some(open) = rest.find('{') {
            let Some(len) = rest[open..].find('}') else {
                break;
            };
            let name = &rest[open + 1..open + len];
            match self.values.iter().find(|(n, _)| *n == name) {
                Some((_, value)) => {
                    f.write_str(&rest[..open])?;
                    value.fmt(f)?;
                }
                None => f.write_str(&rest[..=open + len])?,
            }
            rest = &rest[open + len + 1..];
        }
        f.write_str(rest)
    }
}

/// The placeholder names in a template.
fn placeholders(template: &str) -> impl Iterator<Item = &str> {
    template.split('{').skip(1).filter_map(|s| {
        let name = &s[..s.find('}')?];
        (!name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase())).then_some(name)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_values_by_name_in_any_order() {
        let de = Language::new("de", "Deutsch")
            .unwrap()
            .text(
                Text::MaildropReady,
                "{count} Nachrichten ({size} Oktette) für {user}",
            )
            .unwrap();
        let values: [Value<'_>; 3] = [("user", &"tim"), ("count", &2), ("size", &320)];
        assert_eq!(
            de.render(Text::MaildropReady, values).to_string(),
            "2 Nachrichten (320 Oktette) für tim"
        );
        assert_eq!(
            Language::english()
                .render(Text::MaildropReady, values)
                .to_string(),
            "tim's maildrop has 2 messages (320 octets)"
        );
        // Not set: English.
        assert_eq!(de.template(Text::SendPass), "send PASS");
    }

    #[test]
    fn bad_languages_and_templates_are_refused() {
        assert!(Language::new("", "x").is_err());
        assert!(Language::new("e n", "x").is_err());
        assert!(Language::new("i-default", "x").is_err());
        assert!(Language::new("en", "a\r\nb").is_err());
        let fr = Language::new("fr", "Français").unwrap();
        assert!(fr.clone().text(Text::SendPass, "envoyez PASS\r\n").is_err());
        assert!(fr.clone().text(Text::SendPass, "{user} PASS").is_err());
        assert!(fr.text(Text::MessageDeleted, "message {n} effacé").is_ok());
    }

    #[test]
    fn every_english_template_is_short_and_clean() {
        for &t in Text::ALL {
            let e = t.english();
            assert!(
                e.len() <= MAX_TEXT && e.is_ascii() && !e.contains('\r'),
                "{t:?}"
            );
        }
    }
}
