//! The CAPA response (RFC 2449 §5), derived from the configuration and the
//! session's state: never a fixed list.

use std::fmt::Write as _;

use bytes::BytesMut;

use crate::config::Config;
use crate::maildrop::Maildrop;

/// What the capability list depends on besides the configuration.
pub(crate) struct CapaContext<'a> {
    /// The user's maildrop once logged in (TRANSACTION), with per-user values.
    pub(crate) maildrop: Option<&'a Maildrop>,
    pub(crate) tls: bool,
    /// Whether passwords and tokens may be sent on this connection now.
    pub(crate) plaintext: bool,
}

/// Appends the capability lines (without the `+OK` line or the final `.`).
///
/// RFC 2449 §5: capabilities of the AUTHORIZATION state are listed in
/// TRANSACTION too, so only EXPIRE and LOGIN-DELAY change after login.
pub(crate) fn write_capabilities(out: &mut BytesMut, config: &Config, ctx: &CapaContext<'_>) {
    // Writing into a BytesMut cannot fail.
    let mut w = |line: std::fmt::Arguments<'_>| {
        let _ = out.write_fmt(line);
        out.extend_from_slice(b"\r\n");
    };
    w(format_args!("TOP"));
    w(format_args!("UIDL"));
    if config.user_pass && ctx.plaintext {
        w(format_args!("USER"));
    }
    // RFC 5034 §3: exactly the mechanisms usable on this connection now.
    let mut usable = config
        .sasl
        .iter()
        .filter(|m| ctx.plaintext || !m.is_plaintext())
        .peekable();
    if usable.peek().is_some() {
        let mut line = String::from("SASL");
        for m in usable {
            line.push(' ');
            line.push_str(m.name());
        }
        w(format_args!("{line}"));
    }
    if config.utf8 {
        // RFC 6856 §2: UTF-8 user names and passwords are accepted.
        w(format_args!("UTF8 USER"));
    }
    if config.lang {
        w(format_args!("LANG"));
    }
    if config.stls && !ctx.tls {
        w(format_args!("STLS"));
    }
    w(format_args!("PIPELINING"));
    w(format_args!("RESP-CODES"));
    w(format_args!("AUTH-RESP-CODE"));

    // RFC 2449 §6.7: "USER" marks a value that may differ per user; it is
    // used only before login. After login the user's own value is shown.
    match ctx.maildrop {
        None if config.expire_per_user => w(format_args!("EXPIRE {} USER", config.expire)),
        None => w(format_args!("EXPIRE {}", config.expire)),
        Some(drop) => {
            let expire = drop
                .expire()
                .filter(|_| config.expire_per_user)
                .unwrap_or(config.expire);
            w(format_args!("EXPIRE {expire}"));
        }
    }
    // RFC 2449 §6.8, likewise for LOGIN-DELAY.
    let login_delay = match ctx.maildrop {
        Some(drop) if config.login_delay_per_user => drop.login_delay().or(config.login_delay),
        _ => config.login_delay,
    };
    if let Some(secs) = login_delay {
        if ctx.maildrop.is_none() && config.login_delay_per_user {
            w(format_args!("LOGIN-DELAY {secs} USER"));
        } else {
            w(format_args!("LOGIN-DELAY {secs}"));
        }
    }
    if let Some(imp) = &config.implementation {
        w(format_args!("IMPLEMENTATION {imp}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Expire;

    fn capa(config: &Config, maildrop: Option<&Maildrop>, tls: bool) -> String {
        let mut out = BytesMut::new();
        write_capabilities(
            &mut out,
            config,
            &CapaContext {
                maildrop,
                tls,
                plaintext: true,
            },
        );
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn defaults() {
        let c = Config::builder()
            .implementation(Some("x".into()))
            .build()
            .unwrap();
        assert_eq!(
            capa(&c, None, false),
            "TOP\r\nUIDL\r\nUSER\r\nSASL PLAIN LOGIN\r\nPIPELINING\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nEXPIRE NEVER\r\nIMPLEMENTATION x\r\n"
        );
    }

    #[test]
    fn derived_from_config_and_state() {
        let c = Config::builder()
            .implementation(None)
            .user_pass(false)
            .apop(true)
            .stls(true)
            .expire(Expire::Days(31), true)
            .login_delay(Some(900), true)
            .build()
            .unwrap();
        let before = capa(&c, None, false);
        assert!(before.contains("STLS\r\n"));
        assert!(!before.lines().any(|l| l == "USER"));
        assert!(before.contains("EXPIRE 31 USER\r\n"));
        assert!(before.contains("LOGIN-DELAY 900 USER\r\n"));
        assert!(!before.contains("IMPLEMENTATION"));
        assert!(!capa(&c, None, true).contains("STLS"));

        let drop = Maildrop::new([])
            .unwrap()
            .with_expire(Expire::Never)
            .with_login_delay(3600);
        let after = capa(&c, Some(&drop), false);
        assert!(after.contains("EXPIRE NEVER\r\n"));
        assert!(after.contains("LOGIN-DELAY 3600\r\n"));
        assert!(!after.contains(" USER"));

        let plain = Maildrop::new([]).unwrap();
        let after = capa(&c, Some(&plain), false);
        assert!(after.contains("EXPIRE 31\r\n"));
        assert!(after.contains("LOGIN-DELAY 900\r\n"));
    }

    #[test]
    fn per_user_values_ignored_unless_configured() {
        let c = Config::builder().build().unwrap();
        let drop = Maildrop::new([])
            .unwrap()
            .with_expire(Expire::Days(1))
            .with_login_delay(5);
        let after = capa(&c, Some(&drop), false);
        assert!(after.contains("EXPIRE NEVER\r\n"));
        assert!(!after.contains("LOGIN-DELAY"));
    }
}
