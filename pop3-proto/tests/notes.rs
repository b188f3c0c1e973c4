//! The notes a session keeps for logs and metrics: each command run, and
//! how each login attempt ended, with its method and user.

use std::time::Duration;

use pop3_proto::testing::{Harness, MemoryStore};
use pop3_proto::{Config, LoginAttempt, LoginMethod, LoginOutcome, Mechanism, Note};

fn harness() -> Harness {
    let config = Config::builder()
        .apop(true)
        .sasl(&[Mechanism::Plain, Mechanism::Login, Mechanism::ScramSha256])
        .auth_failure_delay(Duration::ZERO)
        .max_auth_failures(10)
        .build()
        .unwrap();
    Harness::new(config, MemoryStore::rfc1939())
}

fn login(method: LoginMethod, user: Option<&str>, outcome: LoginOutcome) -> Note {
    Note::Login(LoginAttempt {
        method,
        user: user.map(str::to_owned),
        outcome,
    })
}

fn notes(h: &mut Harness) -> Vec<Note> {
    h.session.take_notes().collect()
}

#[test]
fn commands_and_login_attempts_are_noted() {
    let mut h = harness();
    assert!(notes(&mut h).is_empty(), "the greeting is no command");
    h.command("CAPA");
    h.command("FOO");
    h.command("USER mrose");
    h.command("PASS wrong");
    assert_eq!(
        notes(&mut h),
        [
            Note::Command(Some("CAPA")),
            Note::Command(None),
            Note::Command(Some("USER")),
            Note::Command(Some("PASS")),
            login(LoginMethod::UserPass, Some("mrose"), LoginOutcome::Failed),
        ]
    );
    // PLAIN naming a user: the user is in the note; garbage: no user.
    h.command("AUTH PLAIN AGV2ZQBldmls"); // \0eve\0evil
    h.command("AUTH PLAIN AAAA");
    h.command("AUTH LOGIN");
    h.command("*");
    assert_eq!(
        notes(&mut h),
        [
            Note::Command(Some("AUTH")),
            login(
                LoginMethod::Sasl(Mechanism::Plain),
                Some("eve"),
                LoginOutcome::Failed
            ),
            Note::Command(Some("AUTH")),
            login(
                LoginMethod::Sasl(Mechanism::Plain),
                None,
                LoginOutcome::Failed
            ),
            Note::Command(Some("AUTH")),
        ],
        "a cancelled exchange is no failed login, and its '*' is no command"
    );
    h.command("USER mrose");
    h.command("PASS tanstaaf");
    h.command("RETR 1");
    h.command("TOP 2 0");
    h.command("QUIT");
    assert_eq!(
        notes(&mut h),
        [
            Note::Command(Some("USER")),
            Note::Command(Some("PASS")),
            login(LoginMethod::UserPass, Some("mrose"), LoginOutcome::Accepted),
            Note::Command(Some("RETR")),
            Note::Command(Some("TOP")),
            Note::Command(Some("QUIT")),
        ]
    );
}

#[test]
fn apop_and_refusals_other_than_credentials() {
    let mut h = harness();
    h.command("APOP mrose 00000000000000000000000000000000");
    let got = notes(&mut h);
    assert_eq!(
        got[1],
        login(LoginMethod::Apop, Some("mrose"), LoginOutcome::Failed)
    );
    // A refusal with another code than [AUTH] is no failed login.
    h.auto_answer = false;
    h.command("USER mrose");
    h.command("PASS tanstaaf");
    let request = h.events.pop().unwrap();
    let _ = request;
    h.session
        .refuse(h.now, pop3_proto::Refusal::sys_temp("try later"))
        .unwrap();
    h.run();
    let got = notes(&mut h);
    assert_eq!(
        got.last(),
        Some(&login(
            LoginMethod::UserPass,
            Some("mrose"),
            LoginOutcome::Refused
        ))
    );
}
