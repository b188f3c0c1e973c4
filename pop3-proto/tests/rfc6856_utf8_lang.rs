//! RFC 6856: UTF-8 mode (`UTF8`, UTF-8 user names and passwords under
//! SASLprep, the `[UTF8]` response code) and response languages (`LANG`).

use pop3_proto::testing::{run_transcript, Harness, MemoryStore};
use pop3_proto::{Config, Event, Language, Text};

fn run(h: &mut Harness, script: &str) {
    if let Err(e) = run_transcript(h, script) {
        panic!("{e}");
    }
}

fn german() -> Language {
    Language::new("de", "Deutsch")
        .unwrap()
        .text(Text::Ready, "POP3-Server bereit")
        .unwrap()
        .text(Text::LanguageChanged, "{tag} Sprache gewechselt")
        .unwrap()
        .text(Text::MessageDeleted, "Nachricht {n} gelöscht")
        .unwrap()
        .text(Text::NoSuchMessage, "keine solche Nachricht")
        .unwrap()
}

fn config() -> Config {
    Config::builder()
        .utf8(true)
        .lang(true)
        .language(german())
        .language(Language::new("pt-BR", "Português do Brasil").unwrap())
        .implementation(None)
        .build()
        .unwrap()
}

fn store() -> MemoryStore {
    let store = MemoryStore::rfc1939();
    store.add_user("jöhn", "pässwörd");
    store
}

#[test]
fn capabilities_and_utf8_logins() {
    let mut h = Harness::new(config(), store());
    h.take_sent();
    run(
        &mut h,
        "C: CAPA
         S: +OK capability list follows
         S: TOP
         S: UIDL
         S: USER
         S: SASL PLAIN LOGIN
         S: UTF8 USER
         S: LANG
         S: PIPELINING
         S: RESP-CODES
         S: AUTH-RESP-CODE
         S: EXPIRE NEVER
         S: .
         C: USER jöhn
         S: -ERR UTF-8 user names and passwords need the UTF8 command first
         C: UTF8
         S: +OK UTF-8 mode enabled",
    );
    // SASLprep (NFKC): a full-width j and a decomposed ä are the same user
    // and password as the stored ones.
    h.command("USER \u{ff4a}öhn");
    h.command("PASS pa\u{308}sswörd");
    assert_eq!(
        h.take_sent(),
        "+OK send PASS\r\n+OK jöhn's maildrop has 0 messages (0 octets)\r\n"
    );
    h.command("UTF8");
    assert_eq!(h.take_sent(), "-ERR command not valid after login\r\n");
}

#[test]
fn saslprep_refuses_prohibited_characters() {
    let mut h = Harness::new(config(), store());
    h.take_sent();
    h.command("UTF8");
    // U+0007 is refused by the parser already; U+2028 (line separator) by SASLprep.
    h.command("USER j\u{2028}ohn");
    assert_eq!(
        h.take_sent(),
        "+OK UTF-8 mode enabled\r\n-ERR user name or password not allowed (SASLprep)\r\n"
    );
}

#[test]
fn utf8_not_offered() {
    let mut h = Harness::new(Config::default(), store());
    h.take_sent();
    h.command("UTF8");
    h.command("LANG");
    assert_eq!(
        h.take_sent(),
        "-ERR UTF8 not offered\r\n-ERR LANG not offered\r\n"
    );
}

#[test]
fn a_utf8_only_maildrop_needs_utf8_mode() {
    let store = store();
    store.set_utf8_only("mrose");
    let mut h = Harness::new(config(), store.clone());
    h.take_sent();
    h.command("USER mrose");
    h.command("PASS tanstaaf");
    assert_eq!(
        h.take_sent(),
        "+OK send PASS\r\n-ERR [UTF8] this maildrop needs UTF-8 mode: use the UTF8 command first\r\n"
    );
    // The lock was given back at once.
    assert!(h.events.contains(&Event::Unlock));
    assert!(!h.store.is_locked("mrose"));
    assert_eq!(h.store.locks(), h.store.unlocks());
    run(
        &mut h,
        "C: UTF8
         S: +OK UTF-8 mode enabled
         C: USER mrose
         S: +OK send PASS
         C: PASS tanstaaf
         S: +OK mrose's maildrop has 2 messages (320 octets)",
    );
}

#[test]
fn lang_lists_and_selects() {
    let mut h = Harness::new(config(), store());
    h.take_sent();
    run(
        &mut h,
        "C: LANG
         S: +OK language listing follows
         S: en English
         S: de Deutsch
         S: pt-BR Português do Brasil
         S: .
         C: LANG DE
         S: +OK de Sprache gewechselt
         C: LANG fr
         S: -ERR invalid language
         C: LANG pt
         S: +OK pt-BR language changed
         C: LANG *
         S: +OK en language changed
         C: LANG i-default
         S: +OK en language changed
         C: LANG de
         S: +OK de Sprache gewechselt
         C: USER mrose
         S: +OK send PASS
         C: PASS tanstaaf
         S: +OK mrose's maildrop has 2 messages (320 octets)
         C: DELE 1
         S: +OK Nachricht 1 gelöscht
         C: DELE 9
         S: -ERR keine solche Nachricht
         C: LANG en
         S: +OK en language changed
         C: DELE 9
         S: -ERR no such message",
    );
}

#[test]
fn the_default_language_greets() {
    let config = Config::builder()
        .language(german())
        .default_language("de")
        .unwrap()
        .build()
        .unwrap();
    let mut h = Harness::new(config, store());
    assert_eq!(h.take_sent(), "+OK POP3-Server bereit\r\n");
}
