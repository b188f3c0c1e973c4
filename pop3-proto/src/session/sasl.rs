//! The AUTH command (RFC 5034) and the plaintext policy: which login
//! methods this connection may use now, the `+ ` challenges, the client's
//! responses, cancelling with `*`.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use std::time::Instant;

use super::{Login, Pending, Session, State};
use crate::config::PlaintextAuth;
use crate::error::UsageError;
use crate::event::Request;
use crate::lang::Text;
use crate::note::LoginMethod;
use crate::reply::{self, Refusal, ResponseCode};
use crate::sasl::{Exchange, Mechanism, Step};
use crate::scram::{self, ScramCredentials};
use crate::secret::Secret;

impl Session {
    /// Whether passwords and tokens may cross this connection now.
    pub(super) fn plaintext_allowed(&self) -> bool {
        match self.config.plaintext {
            PlaintextAuth::Allow => true,
            PlaintextAuth::RequireTls => self.tls,
            PlaintextAuth::UnlessTlsOffered => self.tls || self.local || !self.config.stls,
        }
    }

    /// `-ERR [AUTH]`: this method needs TLS here.
    pub(super) fn tls_required(&mut self, method: &str) {
        let text = if self.config.stls {
            Text::NeedsTlsUseStls
        } else {
            Text::NeedsTls
        };
        let text = self.config.languages[self.language].render(text, [("method", &method)]);
        self.queue.with_buf(|out| {
            reply::err(out, Some(ResponseCode::Auth), format_args!("{text}"));
        });
    }

    fn usable(&self, mechanism: Mechanism) -> bool {
        self.config.sasl.contains(&mechanism)
            && (!mechanism.is_plaintext() || self.plaintext_allowed())
    }

    /// `AUTH` without an argument: the mechanisms usable now, one a line
    /// (what Outlook probes with before CAPA).
    pub(super) fn list_mechanisms(&mut self) {
        let usable: Vec<Mechanism> = self
            .config
            .sasl
            .iter()
            .copied()
            .filter(|&m| self.usable(m))
            .collect();
        self.queue.with_buf(|out| {
            let text = self.config.languages[self.language].render(Text::SaslMechanisms, []);
            reply::ok(out, format_args!("{text}"));
            for m in usable {
                out.extend_from_slice(m.name().as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b".\r\n");
        });
    }

    /// `AUTH mechanism [initial-response]`. False if it counts as a bad
    /// command (an unknown mechanism, an initial response not in base64).
    pub(super) fn auth(
        &mut self,
        mechanism: Option<Mechanism>,
        initial: Option<Secret<Vec<u8>>>,
    ) -> bool {
        self.login = Login::Anonymous;
        let Some(mechanism) = mechanism.filter(|&m| self.config.sasl.contains(&m)) else {
            self.bad_command(Text::UnsupportedMechanism, []);
            return false;
        };
        if !self.usable(mechanism) {
            self.tls_required(mechanism.name());
            return true;
        }
        let mut exchange = mechanism.start();
        self.attempt = Some((LoginMethod::Sasl(mechanism), None));
        let Some(initial) = initial else {
            self.challenge(exchange.first_challenge());
            self.state = State::Sasl(mechanism, exchange);
            return true;
        };
        // RFC 5034 §4: "=" is an empty initial response.
        let decoded = match initial.expose().as_slice() {
            b"=" => Ok(Vec::new()),
            encoded => STANDARD.decode(encoded),
        };
        match decoded {
            Ok(response) => {
                let step = exchange.respond(response);
                self.sasl_step(mechanism, exchange, step);
                true
            }
            Err(_) => {
                self.bad_command(Text::InitialResponseNotBase64, []);
                false
            }
        }
    }

    /// A line from the client while a challenge is out.
    pub(super) fn sasl_response(&mut self, line: Secret<Vec<u8>>) {
        let state = std::mem::replace(&mut self.state, State::Command);
        match state {
            // Whatever the client answers, the refused login stands.
            State::SaslRefused(refusal) => self.failed_login(refusal),
            State::Sasl(..) if line.expose() == b"*" => {
                // RFC 5034 §4: the client cancelled.
                self.attempt = None;
                self.err(Text::AuthenticationCancelled, []);
            }
            State::Sasl(mechanism, mut exchange) => match STANDARD.decode(line.expose()) {
                Ok(response) => {
                    let step = exchange.respond(response);
                    self.sasl_step(mechanism, exchange, step);
                }
                Err(_) => self.bad_command(Text::ResponseNotBase64, []),
            },
            other => self.state = other,
        }
    }

    fn sasl_step(&mut self, mechanism: Mechanism, exchange: Exchange, step: Step) {
        match step {
            Step::Challenge(challenge) => {
                self.challenge(&challenge);
                self.state = State::Sasl(mechanism, exchange);
            }
            Step::Authenticate { user, credential } => {
                self.login = Login::Named(user.clone());
                self.named(&user);
                self.request(
                    Pending::Authenticate(Some(mechanism)),
                    Request::Authenticate { user, credential },
                );
            }
            // A malformed exchange is a failed login: counted and held
            // back, so it cannot be repeated for free.
            Step::Malformed(text) => {
                let refusal = Refusal::auth(self.text_string(text));
                self.failed_login(refusal);
            }
            Step::ScramLookup(first) => {
                let user = first.user.clone();
                self.login = Login::Named(user.clone());
                self.named(&user);
                self.scram = Some(first);
                self.request(
                    Pending::ScramCredentials,
                    Request::ScramCredentials { user },
                );
            }
            Step::Verified(user) => self.logged_in(user),
            Step::WrongProof => {
                let text = self.text_string(Text::InvalidCredentials);
                self.failed_login(Refusal::auth(text));
            }
        }
    }

    /// The SASL exchange under way named `user`.
    fn named(&mut self, user: &str) {
        if let Some((_, named)) = &mut self.attempt {
            *named = Some(user.to_owned());
        }
    }

    /// Answers [`Request::ScramCredentials`] with the user's stored keys
    /// (or decoy keys for an unknown user) and the server's part of the
    /// nonce: fresh for every exchange, unpredictable (at least 16 random
    /// octets, e.g. base64-encoded), printable ASCII without `,`.
    ///
    /// # Errors
    /// [`UsageError::NoPendingRequest`] if no such request is waiting,
    /// [`UsageError::InvalidNonce`] for a nonce that cannot be sent.
    pub fn scram_credentials(
        &mut self,
        now: Instant,
        credentials: ScramCredentials,
        server_nonce: &str,
    ) -> Result<(), UsageError> {
        self.enter(now)?;
        if !matches!(self.state, State::Pending(Pending::ScramCredentials)) {
            return self.wrong_answer("ScramCredentials");
        }
        if !scram::is_nonce(server_nonce) {
            return Err(UsageError::InvalidNonce);
        }
        let first = self
            .scram
            .take()
            .expect("held while its keys are looked up");
        self.login = Login::Anonymous;
        let (server_first, state) = first.server_first(credentials, server_nonce);
        self.progress();
        self.challenge(server_first.as_bytes());
        self.state = State::Sasl(
            Mechanism::ScramSha256,
            Exchange::ScramFinal(Box::new(state)),
        );
        self.after_answer();
        Ok(())
    }

    /// `+ base64(challenge)` (RFC 5034 §4; `+ ` alone for an empty one).
    pub(super) fn challenge(&mut self, challenge: &[u8]) {
        self.queue.with_buf(|out| {
            out.extend_from_slice(b"+ ");
            let start = out.len();
            out.resize(start + challenge.len().div_ceil(3) * 4, 0);
            let n = STANDARD
                .encode_slice(challenge, &mut out[start..])
                .expect("room for the encoding");
            out.truncate(start + n);
            out.extend_from_slice(b"\r\n");
        });
    }
}
