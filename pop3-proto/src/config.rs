//! Server-wide settings, checked once when they are built.

use std::fmt;
use std::time::Duration;

use crate::error::ConfigError;
use crate::lang::Language;
use crate::sasl::Mechanism;

/// RFC 1939 §3: the autologout timer MUST be at least 10 minutes.
pub const MIN_IDLE_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// The longest idle timeout accepted (a day): longer is a configuration mistake.
pub const MAX_IDLE_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

/// The longest failed-login delay accepted.
pub const MAX_AUTH_FAILURE_DELAY: Duration = Duration::from_secs(60);

/// RFC 2449 §4: a command line is at most 255 octets including CRLF.
pub const RFC_MAX_COMMAND_LINE: usize = 255;

/// The longest host name (a DNS name's limit): the APOP greeting and the
/// sign-off line that carry it stay well within RFC 2449's 512 octets.
pub const MAX_HOSTNAME: usize = 253;

/// The longest SASL line by default (an `AUTH` command with its initial
/// response, or a response to a challenge): OAuth tokens run to kilobytes.
pub const DEFAULT_MAX_SASL_LINE: usize = 16 * 1024;

/// When a secret may cross a connection without TLS: USER/PASS and the
/// SASL mechanisms that send a password or a token as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PlaintextAuth {
    /// Always, TLS or not.
    Allow,
    /// Unless TLS could be had: allowed on TLS, on a local (loopback)
    /// connection, and where the server offers no STLS; refused on a plain
    /// connection that could have used STLS.
    #[default]
    UnlessTlsOffered,
    /// Only over TLS (local connections included).
    RequireTls,
}

/// How long messages may stay on the server (RFC 2449 §6.7, the `EXPIRE` capability).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Expire {
    /// `EXPIRE NEVER`: the server never deletes messages by itself.
    #[default]
    Never,
    /// `EXPIRE n`: messages may be deleted `n` days after retrieval
    /// (`0`: right after the session that retrieved them).
    Days(u32),
}

impl fmt::Display for Expire {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Never => f.write_str("NEVER"),
            Self::Days(n) => write!(f, "{n}"),
        }
    }
}

/// Settings shared by every session of a server. Build one with [`Config::builder`].
///
/// Capabilities announced by `CAPA` are derived from these values, never written by hand.
#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) hostname: String,
    pub(crate) implementation: Option<String>,
    pub(crate) apop: bool,
    pub(crate) user_pass: bool,
    pub(crate) stls: bool,
    pub(crate) sasl: Vec<Mechanism>,
    pub(crate) plaintext: PlaintextAuth,
    pub(crate) apop_needs_tls: bool,
    pub(crate) max_sasl_line: usize,
    pub(crate) utf8: bool,
    pub(crate) lang: bool,
    /// The response languages; the first is the default (`i-default`).
    pub(crate) languages: Vec<Language>,
    pub(crate) expire: Expire,
    pub(crate) expire_per_user: bool,
    pub(crate) login_delay: Option<u32>,
    pub(crate) login_delay_per_user: bool,
    pub(crate) idle_timeout: Duration,
    pub(crate) auth_failure_delay: Duration,
    pub(crate) max_auth_failures: u32,
    pub(crate) max_bad_commands: u32,
    pub(crate) max_line: usize,
    pub(crate) input_buffer: usize,
    pub(crate) output_high_water: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            hostname: "localhost".into(),
            implementation: Some(concat!("pop3-proto-", env!("CARGO_PKG_VERSION")).into()),
            apop: false,
            user_pass: true,
            stls: false,
            sasl: vec![Mechanism::Plain, Mechanism::Login],
            plaintext: PlaintextAuth::UnlessTlsOffered,
            apop_needs_tls: false,
            max_sasl_line: DEFAULT_MAX_SASL_LINE,
            utf8: false,
            lang: false,
            languages: vec![Language::english()],
            expire: Expire::Never,
            expire_per_user: false,
            login_delay: None,
            login_delay_per_user: false,
            idle_timeout: MIN_IDLE_TIMEOUT,
            auth_failure_delay: Duration::from_secs(2),
            max_auth_failures: 3,
            max_bad_commands: 10,
            max_line: RFC_MAX_COMMAND_LINE,
            input_buffer: 8 * 1024,
            output_high_water: 64 * 1024,
        }
    }
}

impl Config {
    /// Starts from the defaults: host `localhost`, USER/PASS and SASL `PLAIN`
    /// and `LOGIN` on (refused without TLS where STLS is offered, except on
    /// loopback: [`PlaintextAuth::UnlessTlsOffered`]), APOP and STLS off,
    /// `EXPIRE NEVER`, 10 minute idle timeout, 2 s delay after a failed login,
    /// 3 failed logins or 10 bad commands in a row close the session,
    /// 255-octet command lines, 8 KiB input buffer, 64 KiB output high-water mark.
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder {
            config: Self::default(),
            allow_short_idle_timeout: false,
        }
    }

    /// The host name used in the APOP timestamp and the sign-off line.
    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    /// The idle (autologout) timeout.
    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    /// Whether APOP is offered (the greeting then carries a timestamp).
    pub fn apop(&self) -> bool {
        self.apop
    }

    /// Whether STLS is offered; the driver must then be able to start TLS.
    pub fn stls(&self) -> bool {
        self.stls
    }

    /// The SASL mechanisms offered (where the plaintext policy allows).
    pub fn sasl(&self) -> &[Mechanism] {
        &self.sasl
    }

    /// When passwords and tokens may cross a connection without TLS.
    pub fn plaintext_auth(&self) -> PlaintextAuth {
        self.plaintext
    }

    /// The response languages; the first is the default.
    pub fn languages(&self) -> &[Language] {
        &self.languages
    }

    /// The output high-water mark: body chunks are asked for only below it.
    pub fn output_high_water(&self) -> usize {
        self.output_high_water
    }

    /// The most bytes the session buffers from the peer before it stops wanting input.
    pub fn input_buffer(&self) -> usize {
        self.input_buffer
    }
}

/// Builds a [`Config`]; [`ConfigBuilder::build`] checks it.
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until build() is called"]
pub struct ConfigBuilder {
    config: Config,
    allow_short_idle_timeout: bool,
}

impl ConfigBuilder {
    /// Host name for the APOP timestamp and sign-off line (popart's
    /// `Hostname`): printable ASCII without `<`, `>` or `@`, at most
    /// [`MAX_HOSTNAME`] octets.
    pub fn hostname(mut self, hostname: impl Into<String>) -> Self {
        self.config.hostname = hostname.into();
        self
    }

    /// Text of the `IMPLEMENTATION` capability; `None` leaves it out (popart's `Implementation`).
    pub fn implementation(mut self, implementation: Option<String>) -> Self {
        self.config.implementation = implementation;
        self
    }

    /// Offers APOP: the greeting carries an RFC 1939 §7 timestamp (popart's `APOP`).
    pub fn apop(mut self, on: bool) -> Self {
        self.config.apop = on;
        self
    }

    /// Offers USER/PASS (on by default).
    pub fn user_pass(mut self, on: bool) -> Self {
        self.config.user_pass = on;
        self
    }

    /// Offers STLS (RFC 2595); the driver must be able to start TLS.
    pub fn stls(mut self, on: bool) -> Self {
        self.config.stls = on;
        self
    }

    /// The server's `EXPIRE` policy (popart's `Expire`); `per_user` says a
    /// handler may give each user its own value at login.
    pub fn expire(mut self, expire: Expire, per_user: bool) -> Self {
        self.config.expire = expire;
        self.config.expire_per_user = per_user;
        self
    }

    /// The `LOGIN-DELAY` announced, in seconds (RFC 2449 §6.8); `per_user` says
    /// a handler may give each user its own value at login.
    pub fn login_delay(mut self, seconds: Option<u32>, per_user: bool) -> Self {
        self.config.login_delay = seconds;
        self.config.login_delay_per_user = per_user;
        self
    }

    /// The idle (autologout) timeout (popart's `Timeout`). At least 10 minutes
    /// (RFC 1939 §3) unless [`ConfigBuilder::allow_short_idle_timeout`] is set.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.config.idle_timeout = timeout;
        self
    }

    /// Accepts idle timeouts under 10 minutes. Not RFC 1939 conformant: for tests only.
    pub fn allow_short_idle_timeout(mut self) -> Self {
        self.allow_short_idle_timeout = true;
        self
    }

    /// How long the `-ERR` for a failed login is held back (tarpit).
    pub fn auth_failure_delay(mut self, delay: Duration) -> Self {
        self.config.auth_failure_delay = delay;
        self
    }

    /// Failed logins after which the session is closed.
    pub fn max_auth_failures(mut self, n: u32) -> Self {
        self.config.max_auth_failures = n;
        self
    }

    /// Consecutive bad commands after which the session is closed.
    pub fn max_bad_commands(mut self, n: u32) -> Self {
        self.config.max_bad_commands = n;
        self
    }

    /// Longest command line accepted, CRLF included (at least 255, RFC 2449 §4).
    pub fn max_line(mut self, octets: usize) -> Self {
        self.config.max_line = octets;
        self
    }

    /// Input buffered while a command is being answered (pipelining); at least `max_line`.
    pub fn input_buffer(mut self, octets: usize) -> Self {
        self.config.input_buffer = octets;
        self
    }

    /// Output buffered before the session stops producing more (body chunks, listings).
    pub fn output_high_water(mut self, octets: usize) -> Self {
        self.config.output_high_water = octets;
        self
    }

    /// The SASL mechanisms to offer with `AUTH`, in this order (default:
    /// `PLAIN`, `LOGIN`; empty: no `AUTH`). The handler gets their
    /// credentials: offer the OAuth mechanisms only if it checks
    /// [`Credential::Bearer`](crate::Credential::Bearer).
    pub fn sasl(mut self, mechanisms: &[Mechanism]) -> Self {
        self.config.sasl = Vec::new();
        for &m in mechanisms {
            if !self.config.sasl.contains(&m) {
                self.config.sasl.push(m);
            }
        }
        self
    }

    /// When USER/PASS and the plaintext SASL mechanisms may be used without
    /// TLS (default [`PlaintextAuth::UnlessTlsOffered`]). Where they may
    /// not, CAPA does not list them and an attempt gets `-ERR [AUTH]`.
    pub fn plaintext_auth(mut self, policy: PlaintextAuth) -> Self {
        self.config.plaintext = policy;
        self
    }

    /// Puts APOP under the plaintext policy too (default: off; APOP sends
    /// no password, but its MD5 digest can be attacked offline).
    pub fn apop_needs_tls(mut self, on: bool) -> Self {
        self.config.apop_needs_tls = on;
        self
    }

    /// The longest SASL line with its CRLF (default 16 KiB; at least the
    /// command line limit).
    pub fn max_sasl_line(mut self, octets: usize) -> Self {
        self.config.max_sasl_line = octets;
        self
    }

    /// Offers RFC 6856's `UTF8` command and the `UTF8 USER` capability
    /// (default: off): after `UTF8`, user names and passwords may be UTF-8
    /// (normalised with SASLprep) and maildrops that need UTF-8 can be opened.
    pub fn utf8(mut self, on: bool) -> Self {
        self.config.utf8 = on;
        self
    }

    /// Offers RFC 6856's `LANG` command (default: off) over the configured
    /// languages.
    pub fn lang(mut self, on: bool) -> Self {
        self.config.lang = on;
        self
    }

    /// Adds a response language (or replaces the one with its tag). The
    /// first language is the default; English is there from the start.
    pub fn language(mut self, language: Language) -> Self {
        let languages = &mut self.config.languages;
        match languages
            .iter_mut()
            .find(|l| l.tag().eq_ignore_ascii_case(language.tag()))
        {
            Some(same) => *same = language,
            None => languages.push(language),
        }
        self
    }

    /// Makes the language with this tag the default (`i-default`).
    ///
    /// # Errors
    /// If no language has this tag.
    pub fn default_language(mut self, tag: &str) -> Result<Self, ConfigError> {
        let languages = &mut self.config.languages;
        let i = languages
            .iter()
            .position(|l| l.tag().eq_ignore_ascii_case(tag))
            .ok_or_else(|| ConfigError::InvalidLanguage(tag.to_owned()))?;
        languages[..=i].rotate_right(1);
        Ok(self)
    }

    /// Checks the settings and returns the configuration.
    pub fn build(self) -> Result<Config, ConfigError> {
        let c = self.config;
        if c.idle_timeout < MIN_IDLE_TIMEOUT && !self.allow_short_idle_timeout {
            return Err(ConfigError::IdleTimeoutTooShort(c.idle_timeout));
        }
        if c.idle_timeout.is_zero() {
            return Err(ConfigError::IdleTimeoutZero);
        }
        if c.idle_timeout > MAX_IDLE_TIMEOUT {
            return Err(ConfigError::IdleTimeoutTooLong(c.idle_timeout));
        }
        if c.auth_failure_delay > MAX_AUTH_FAILURE_DELAY {
            return Err(ConfigError::AuthDelayTooLong(c.auth_failure_delay));
        }
        if c.hostname.is_empty()
            || c.hostname.len() > MAX_HOSTNAME
            || !c
                .hostname
                .bytes()
                .all(|b| b.is_ascii_graphic() && !b"<>@".contains(&b))
        {
            return Err(ConfigError::InvalidHostname(c.hostname));
        }
        if let Some(imp) = &c.implementation {
            if imp.is_empty() || imp.chars().any(char::is_control) || imp.len() > 200 {
                return Err(ConfigError::InvalidImplementation(imp.clone()));
            }
        }
        if c.max_line < RFC_MAX_COMMAND_LINE {
            return Err(ConfigError::LineLimitTooSmall(c.max_line));
        }
        if c.max_sasl_line < c.max_line {
            return Err(ConfigError::SaslLineTooSmall {
                max_sasl_line: c.max_sasl_line,
                max_line: c.max_line,
            });
        }
        if c.input_buffer < c.max_line {
            return Err(ConfigError::InputBufferTooSmall {
                input_buffer: c.input_buffer,
                max_line: c.max_line,
            });
        }
        if c.output_high_water == 0 {
            return Err(ConfigError::ZeroHighWater);
        }
        if c.max_auth_failures == 0 || c.max_bad_commands == 0 {
            return Err(ConfigError::ZeroLimit);
        }
        if !c.user_pass && !c.apop && c.sasl.is_empty() {
            return Err(ConfigError::NoLoginMethod);
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_rfc_conformant() {
        let c = Config::builder().build().unwrap();
        assert_eq!(c.idle_timeout(), MIN_IDLE_TIMEOUT);
        assert_eq!(c.max_line, 255);
        assert_eq!(
            c.implementation.as_deref(),
            Some(concat!("pop3-proto-", env!("CARGO_PKG_VERSION")))
        );
    }

    #[test]
    fn short_idle_timeout_needs_the_escape_hatch() {
        let short = Duration::from_secs(599);
        assert_eq!(
            Config::builder().idle_timeout(short).build().unwrap_err(),
            ConfigError::IdleTimeoutTooShort(short)
        );
        let c = Config::builder()
            .idle_timeout(short)
            .allow_short_idle_timeout()
            .build()
            .unwrap();
        assert_eq!(c.idle_timeout(), short);
        assert_eq!(
            Config::builder()
                .idle_timeout(Duration::from_secs(u64::MAX))
                .build()
                .unwrap_err(),
            ConfigError::IdleTimeoutTooLong(Duration::from_secs(u64::MAX))
        );
        assert!(Config::builder()
            .auth_failure_delay(Duration::from_secs(61))
            .build()
            .is_err());
        assert_eq!(
            Config::builder()
                .idle_timeout(Duration::ZERO)
                .allow_short_idle_timeout()
                .build()
                .unwrap_err(),
            ConfigError::IdleTimeoutZero
        );
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(matches!(
            Config::builder().hostname("a b").build(),
            Err(ConfigError::InvalidHostname(_))
        ));
        assert!(matches!(
            Config::builder()
                .hostname("x".repeat(MAX_HOSTNAME + 1))
                .build(),
            Err(ConfigError::InvalidHostname(_))
        ));
        assert!(Config::builder()
            .hostname("x".repeat(MAX_HOSTNAME))
            .build()
            .is_ok());
        assert!(matches!(
            Config::builder().hostname("x@y").build(),
            Err(ConfigError::InvalidHostname(_))
        ));
        assert!(matches!(
            Config::builder().max_line(100).build(),
            Err(ConfigError::LineLimitTooSmall(100))
        ));
        assert!(matches!(
            Config::builder().max_line(1000).input_buffer(500).build(),
            Err(ConfigError::InputBufferTooSmall { .. })
        ));
        assert!(matches!(
            Config::builder()
                .implementation(Some("a\r\nb".into()))
                .build(),
            Err(ConfigError::InvalidImplementation(_))
        ));
        assert!(matches!(
            Config::builder().user_pass(false).sasl(&[]).build(),
            Err(ConfigError::NoLoginMethod)
        ));
    }

    #[test]
    fn expire_displays_as_on_the_wire() {
        assert_eq!(Expire::Never.to_string(), "NEVER");
        assert_eq!(Expire::Days(31).to_string(), "31");
    }
}
