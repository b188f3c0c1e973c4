//! The password check every store shares: the users' stored hashes
//! ([`crate::users::Stored`], the users file's schemes) checked on the
//! hashing threads, with the decoy path that makes every failure cost the
//! same, whoever the user is and whether they exist.
//!
//! A store looks the user's stored password up (in the users file, in the
//! database) and hands it here, `None` for an unknown user. A `{PLAIN}` or
//! APOP secret that matches is accepted at once, without waiting for a
//! hashing thread. Every failed check costs one Argon2id with the decoy's
//! parameters (the user's own hash when it has those parameters, the decoy
//! otherwise), unless the hashing queue is full: then the attempt is shed
//! before it costs anything. Either way the protocol core holds every
//! failed login for its failure delay (2 s) counted from when the check
//! was asked for, so the reply time does not depend on the path taken.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pop3_tokio::Credential;

use crate::hashing::{Hashers, Lane, Outcome, Scratch};
use crate::users::Stored;

/// The longest a password check should wait for a hashing thread: half the
/// protocol core's default failure delay (2 s), so that a failed login
/// whose check queued is still answered at that delay, like any other.
/// Each lane of the queue holds as many jobs as the threads hash in this
/// time (at least one per thread); a decoy that waited longer is shed.
const QUEUE_WAIT: Duration = Duration::from_secs(1);

/// Seconds between two log lines about shed checks.
const SHED_LOG_EVERY: u64 = 10;

/// The hashing threads and the decoy, shared by every connection of a store.
#[derive(Debug)]
pub(crate) struct Passwords {
    /// Password hashes are slow and big (Argon2id: ~19 MiB): a few
    /// threads run them, in memory they reuse.
    pub(crate) hashers: Hashers,
    /// An Argon2id hash no password matches, computed after any failed
    /// check that did not already cost one Argon2id of its parameters.
    decoy: Stored,
    pub(crate) decoys_run: AtomicU64,
    /// When a shed check was last logged (seconds since `started`).
    shed_logged: AtomicU64,
    started: Instant,
}

impl Passwords {
    /// Starts the hashing threads (one per core, at least two) with
    /// queues sized by how long the decoy takes here.
    pub(crate) fn new() -> Self {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
        let started = Instant::now();
        let decoy = crate::users::passwd_line(
            "decoy",
            "no password matches this",
            crate::users::Scheme::Argon2id,
        )
        .ok()
        .and_then(|line| Stored::parse(line.split_once(':')?.1).ok())
        .expect("an Argon2id decoy hash");
        let cost = started.elapsed();
        let blocks = decoy.argon2_blocks().expect("the decoy is Argon2id");
        // As many jobs per lane as the threads get through in QUEUE_WAIT
        // (at least 4 a thread: a slow start must not make the lanes tiny;
        // decoys that wait longer than QUEUE_WAIT are shed anyway).
        let per_thread = (QUEUE_WAIT.as_nanos() / cost.as_nanos().max(1)).max(4);
        let capacity = threads * usize::try_from(per_thread).unwrap_or(usize::MAX / threads);
        let hashers =
            Hashers::new(threads, blocks, capacity, QUEUE_WAIT).expect("start the hashing threads");
        Self {
            hashers,
            decoy,
            decoys_run: AtomicU64::new(0),
            shed_logged: AtomicU64::new(0),
            started,
        }
    }

    /// True if `credential` (a password or an APOP digest; any other kind
    /// fails) matches `stored`, the user's stored password (`None`: no such
    /// user). A `{PLAIN}` or APOP secret is compared here; a hashed one is
    /// checked on a hashing thread ([`Lane::User`]). Every failing path
    /// costs one Argon2id with the decoy's parameters: the user's own hash
    /// if it has them, the decoy's otherwise (run after the user's own
    /// check, whatever it cost, or as a [`Lane::Decoy`] job when nothing
    /// was hashed), unless the job is shed (its lane full): then the check
    /// fails at once, costing nothing.
    pub(crate) async fn check(
        self: &Arc<Self>,
        stored: Option<Stored>,
        credential: &Credential,
    ) -> bool {
        // Whether a hash must be checked; a credential of a kind this
        // cannot check (Credential gains variants) only costs the decoy.
        let hashed = match (&stored, credential) {
            (Some(s), Credential::Password(p)) => match s.verify_cheap(p.expose()) {
                Some(true) => return true,
                Some(false) => false,
                None => true,
            },
            (Some(s), Credential::Apop(a)) if s.verify_apop(a) => return true,
            _ => false,
        };
        let this = self.clone();
        let credential = credential.clone();
        let outcome = match stored {
            Some(stored) if hashed => {
                self.hashers
                    .run(Lane::User, move |scratch| {
                        this.check_hashed(&stored, &credential, scratch)
                    })
                    .await
            }
            _ => {
                self.hashers
                    .run(Lane::Decoy, move |scratch| {
                        this.run_decoy(&credential, scratch);
                        false
                    })
                    .await
            }
        };
        match outcome {
            Outcome::Ran(ok) => ok,
            Outcome::Shed => {
                self.note_shed();
                false
            }
        }
    }

    /// On a hashing thread: a user's own hash, then the decoy if that
    /// failed without costing one Argon2id of the decoy's parameters.
    fn check_hashed(
        &self,
        stored: &Stored,
        credential: &Credential,
        scratch: &mut Scratch,
    ) -> bool {
        let Credential::Password(p) = credential else {
            self.run_decoy(credential, scratch);
            return false;
        };
        let ok = stored.verify(p.expose(), scratch);
        if !ok && !stored.same_argon2_cost(&self.decoy) {
            self.run_decoy(credential, scratch);
        }
        ok
    }

    /// On a hashing thread: one Argon2id of the decoy's parameters.
    fn run_decoy(&self, credential: &Credential, scratch: &mut Scratch) {
        let password: &[u8] = match credential {
            Credential::Password(p) => p.expose(),
            _ => b"apop",
        };
        let _ = self.decoy.verify(password, scratch);
        self.decoys_run.fetch_add(1, Ordering::Relaxed);
    }

    /// A check was shed: logged at most once every ten seconds.
    fn note_shed(&self) {
        // Stored as seconds since start, plus one: 0 is "never".
        let now = self.started.elapsed().as_secs() + 1;
        let last = self.shed_logged.load(Ordering::Relaxed);
        if (last == 0 || now >= last + SHED_LOG_EVERY)
            && self
                .shed_logged
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                shed = self.hashers.shed(),
                hashed = self.hashers.ran(),
                threads = self.hashers.threads(),
                queue = self.hashers.capacity(),
                "password checks shed (answered as failed logins): the hashing queue is full"
            );
        }
    }
}
