//! Password hashing on a fixed set of threads, in memory that is allocated
//! once and reused, behind a bounded queue that sheds what it cannot take.
//!
//! An Argon2id check with the default parameters needs 19 MiB. Run on
//! whatever thread is free (tokio's blocking pool), every check allocated
//! and freed that much, and the allocator kept it: ten logins took the
//! server from 6 MB to 196 MB, a flood of unknown-user attempts to 1.4 GB,
//! and it was not returned. Here each of the [`Hashers`] threads owns one
//! [`Scratch`] buffer, sized at start for the decoy's parameters (the
//! default ones) and grown only for a users-file hash that needs more
//! (then kept, so the bound is threads x the largest Argon2id memory cost
//! in use). Nothing else allocates Argon2 memory.
//!
//! Jobs wait in two bounded lanes:
//!
//! - [`Lane::User`]: checking a real user's own hash (Argon2id,
//!   SHA512-CRYPT, BLF-CRYPT, or SCRAM keys given a password). Taken
//!   first, so a real login waits for at most the checks in progress.
//! - [`Lane::Decoy`]: the equal-cost work of a check that already failed
//!   or cannot succeed (an unknown user, a wrong `{PLAIN}` or APOP secret):
//!   one Argon2id of the decoy's parameters, so that a failure costs the
//!   same whoever the user is.
//!
//! A job that finds its lane full is shed before it costs a hash: it is
//! answered as a failed check, which the caller turns into the usual
//! failed-login reply, held by the protocol core's failure delay from when
//! the check was asked for, so a shed attempt looks like any other failure.
//! A decoy that waited longer than the lane's wait budget is shed too (its
//! answer is a failure either way), so that the time to a failure never
//! depends on how long decoys queue behind real users' checks.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use argon2::password_hash::{Output, PasswordHash};
use argon2::{Algorithm, Argon2, Block, Params, Version};

/// Which queue a job waits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lane {
    /// A real user's own hash: served first.
    User,
    /// Equal-cost work for a failed check: served when no user job waits,
    /// and shed once it has waited longer than the budget.
    Decoy,
}

/// How a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The job ran; its answer.
    Ran(bool),
    /// The job was dropped before it cost a hash (its lane was full, or a
    /// decoy waited too long, or the pool is gone).
    Shed,
}

/// A hashing thread's memory: one Argon2 block buffer, reused by every
/// check the thread runs.
#[derive(Debug)]
pub(crate) struct Scratch {
    blocks: Vec<Block>,
    /// The size to allocate at the first check, in blocks (the decoy's).
    first: usize,
    /// Times the buffer was (re)allocated, for the tests.
    allocations: Arc<AtomicU64>,
}

impl Scratch {
    /// A buffer of `first` Argon2 blocks (1 KiB each), allocated at the
    /// first check (a thread that never hashes costs no memory).
    fn new(first: usize, allocations: Arc<AtomicU64>) -> Self {
        Self {
            blocks: Vec::new(),
            first,
            allocations,
        }
    }

    /// A buffer for one-off checks (tests).
    #[cfg(test)]
    pub(crate) fn standalone() -> Self {
        Self::new(0, Arc::default())
    }

    /// True if `password` matches the Argon2 PHC string `phc` (any Argon2
    /// variant and version it names, as `Argon2::verify_password` would),
    /// computed in this buffer: grown if the hash needs more memory than it
    /// has, never shrunk.
    pub(crate) fn verify_argon2(&mut self, phc: &str, password: &[u8]) -> bool {
        let Ok(hash) = PasswordHash::new(phc) else {
            return false;
        };
        let (Some(salt), Some(expected)) = (hash.salt, hash.hash) else {
            return false;
        };
        let Ok(algorithm) = Algorithm::try_from(hash.algorithm) else {
            return false;
        };
        let version = match hash.version.map(Version::try_from) {
            None => Version::default(),
            Some(Ok(v)) => v,
            Some(Err(_)) => return false,
        };
        let Ok(params) = Params::try_from(&hash) else {
            return false;
        };
        let mut salt_buf = [0u8; 64];
        let Ok(salt) = salt.decode_b64(&mut salt_buf) else {
            return false;
        };
        let needed = params.block_count();
        if self.blocks.len() < needed {
            // The first check, or a hash costlier than any before (than
            // the decoy's): this thread keeps the buffer for the next ones.
            self.blocks = Vec::new();
            self.allocations.fetch_add(1, Ordering::Relaxed);
            self.blocks = vec![Block::default(); needed.max(self.first)];
        }
        let mut out = [0u8; 64];
        let Some(out) = out.get_mut(..expected.len()) else {
            return false;
        };
        Argon2::new(algorithm, version, params)
            .hash_password_into_with_memory(password, salt, &mut *out, &mut self.blocks[..])
            .is_ok()
            // Output compares in constant time.
            && Output::new(out).is_ok_and(|computed| computed == expected)
    }
}

type Work = Box<dyn FnOnce(&mut Scratch) -> bool + Send>;

struct Job {
    queued: Instant,
    work: Work,
    reply: tokio::sync::oneshot::Sender<Outcome>,
}

#[derive(Default)]
struct Queues {
    user: VecDeque<Job>,
    decoy: VecDeque<Job>,
    closed: bool,
}

struct Shared {
    queues: Mutex<Queues>,
    work: Condvar,
    /// Most jobs waiting in each lane.
    capacity: usize,
    /// Longest a decoy may wait before it is shed.
    decoy_wait: Duration,
    ran: AtomicU64,
    shed: AtomicU64,
    allocations: Arc<AtomicU64>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queues> {
        self.queues.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next job to run (user lane first), or `None` once closed.
    /// Decoys that waited too long, and jobs nobody waits for any more,
    /// are answered here without running.
    fn next(&self) -> Option<Job> {
        let mut q = self.lock();
        loop {
            if q.closed {
                return None;
            }
            while let Some(job) = q.user.pop_front() {
                if !job.reply.is_closed() {
                    return Some(job);
                }
            }
            while let Some(job) = q.decoy.pop_front() {
                if job.reply.is_closed() {
                    continue;
                }
                if job.queued.elapsed() > self.decoy_wait {
                    self.shed.fetch_add(1, Ordering::Relaxed);
                    let _ = job.reply.send(Outcome::Shed);
                    continue;
                }
                return Some(job);
            }
            q = self.work.wait(q).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// The hashing threads and their queue. Dropping it stops the threads
/// once they finish the job in hand; jobs still queued are shed.
pub(crate) struct Hashers {
    shared: Arc<Shared>,
    threads: usize,
}

impl std::fmt::Debug for Hashers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hashers")
            .field("threads", &self.threads)
            .field("capacity", &self.shared.capacity)
            .field("ran", &self.ran())
            .field("shed", &self.shed())
            .finish()
    }
}

impl Hashers {
    /// `threads` hashing threads, each with a buffer of `blocks` Argon2
    /// blocks (allocated at its first check, then reused); at most
    /// `capacity` jobs wait in each lane, and a decoy is shed once it
    /// waited `decoy_wait`.
    pub(crate) fn new(
        threads: usize,
        blocks: usize,
        capacity: usize,
        decoy_wait: Duration,
    ) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            queues: Mutex::default(),
            work: Condvar::new(),
            capacity,
            decoy_wait,
            ran: AtomicU64::new(0),
            shed: AtomicU64::new(0),
            allocations: Arc::default(),
        });
        let pool = Self { shared, threads };
        for i in 0..threads {
            let shared = pool.shared.clone();
            std::thread::Builder::new()
                .name(format!("pop3d-hash-{i}"))
                .spawn(move || {
                    let mut scratch = Scratch::new(blocks, shared.allocations.clone());
                    while let Some(job) = shared.next() {
                        let ok = (job.work)(&mut scratch);
                        shared.ran.fetch_add(1, Ordering::Relaxed);
                        let _ = job.reply.send(Outcome::Ran(ok));
                    }
                })?;
        }
        Ok(pool)
    }

    /// Runs `work` on a hashing thread, with that thread's buffer, unless
    /// its lane is full (then [`Outcome::Shed`] at once).
    pub(crate) async fn run(
        &self,
        lane: Lane,
        work: impl FnOnce(&mut Scratch) -> bool + Send + 'static,
    ) -> Outcome {
        let (reply, answer) = tokio::sync::oneshot::channel();
        {
            let mut guard = self.shared.lock();
            let q = &mut *guard;
            let queue = match lane {
                Lane::User => &mut q.user,
                Lane::Decoy => &mut q.decoy,
            };
            if q.closed || queue.len() >= self.shared.capacity {
                self.shared.shed.fetch_add(1, Ordering::Relaxed);
                return Outcome::Shed;
            }
            queue.push_back(Job {
                queued: Instant::now(),
                work: Box::new(work),
                reply,
            });
        }
        self.shared.work.notify_one();
        // A thread that panicked drops the sender: shed, not an error.
        answer.await.unwrap_or(Outcome::Shed)
    }

    /// Jobs run so far.
    pub(crate) fn ran(&self) -> u64 {
        self.shared.ran.load(Ordering::Relaxed)
    }

    /// Jobs shed so far.
    pub(crate) fn shed(&self) -> u64 {
        self.shared.shed.load(Ordering::Relaxed)
    }

    /// Argon2 buffers allocated so far (one per thread, plus one per growth).
    #[cfg(test)]
    pub(crate) fn allocations(&self) -> u64 {
        self.shared.allocations.load(Ordering::Relaxed)
    }

    /// How many threads hash.
    pub(crate) fn threads(&self) -> usize {
        self.threads
    }

    /// Most jobs that wait in one lane.
    pub(crate) fn capacity(&self) -> usize {
        self.shared.capacity
    }
}

impl Drop for Hashers {
    fn drop(&mut self) {
        let (user, decoy) = {
            let mut q = self.shared.lock();
            q.closed = true;
            (std::mem::take(&mut q.user), std::mem::take(&mut q.decoy))
        };
        for job in user.into_iter().chain(decoy) {
            let _ = job.reply.send(Outcome::Shed);
        }
        self.shared.work.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::{rand_core::OsRng, PasswordHasher as _, SaltString};
    use argon2::PasswordVerifier as _;

    fn phc(params: Params, algorithm: Algorithm, password: &[u8]) -> String {
        Argon2::new(algorithm, Version::V0x13, params)
            .hash_password(password, &SaltString::generate(&mut OsRng))
            .unwrap()
            .to_string()
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    }

    #[test]
    fn reused_buffers_verify_as_argon2_does() {
        let mut scratch = Scratch::standalone();
        let small = Params::new(64, 1, 1, None).unwrap();
        let wide = Params::new(256, 2, 2, Some(48)).unwrap();
        for (params, algorithm) in [
            (small.clone(), Algorithm::Argon2id),
            (wide, Algorithm::Argon2id),
            (small.clone(), Algorithm::Argon2i),
            (small, Algorithm::Argon2d),
        ] {
            let hash = phc(params, algorithm, b"pw");
            let parsed = PasswordHash::new(&hash).unwrap();
            // Twice each: the second time the buffer holds the first's blocks.
            for _ in 0..2 {
                assert!(scratch.verify_argon2(&hash, b"pw"), "{hash}");
                assert!(!scratch.verify_argon2(&hash, b"pW"), "{hash}");
                assert!(Argon2::default().verify_password(b"pw", &parsed).is_ok());
            }
        }
        // The buffer grew to the largest hash (256 blocks) and stayed.
        assert_eq!(scratch.blocks.len(), 256);
        assert!(!scratch.verify_argon2("$argon2id$garbage", b"pw"));
        assert!(!scratch.verify_argon2("", b"pw"));
    }

    #[test]
    fn each_thread_allocates_its_buffer_once() {
        let params = Params::new(128, 1, 1, None).unwrap();
        let hash = phc(params.clone(), Algorithm::Argon2id, b"pw");
        let pool = Hashers::new(2, params.block_count(), 64, Duration::from_secs(60)).unwrap();
        let rt = rt();
        for i in 0..40 {
            let hash = hash.clone();
            let pw: &[u8] = if i % 2 == 0 { b"pw" } else { b"no" };
            let outcome = rt.block_on(pool.run(Lane::User, move |s| s.verify_argon2(&hash, pw)));
            assert_eq!(outcome, Outcome::Ran(i % 2 == 0));
        }
        assert_eq!(pool.ran(), 40);
        let once_each = pool.allocations();
        assert!(
            (1..=2).contains(&once_each),
            "at most one buffer per thread, reused: {once_each}"
        );
        // A costlier hash grows the buffer of the thread that checks it.
        let big = phc(
            Params::new(512, 1, 1, None).unwrap(),
            Algorithm::Argon2id,
            b"pw",
        );
        let outcome = rt.block_on(pool.run(Lane::User, move |s| s.verify_argon2(&big, b"pw")));
        assert_eq!(outcome, Outcome::Ran(true));
        assert_eq!(pool.allocations(), once_each + 1);
    }

    /// A pool whose one thread is held until the returned sender is used.
    fn blocked_pool(
        capacity: usize,
        decoy_wait: Duration,
    ) -> (Hashers, std::sync::mpsc::Sender<()>) {
        let pool = Hashers::new(1, 8, capacity, decoy_wait).unwrap();
        let (release, held) = std::sync::mpsc::channel::<()>();
        let (started, running) = std::sync::mpsc::channel();
        // Park the thread inside a job (the job's answer is never awaited).
        let (reply, _answer) = tokio::sync::oneshot::channel();
        pool.shared.lock().user.push_back(Job {
            queued: Instant::now(),
            work: Box::new(move |_| {
                started.send(()).unwrap();
                held.recv().ok();
                true
            }),
            reply,
        });
        pool.shared.work.notify_one();
        running.recv().unwrap();
        (pool, release)
    }

    #[test]
    fn full_lanes_shed_and_users_go_first() {
        let (pool, release) = blocked_pool(2, Duration::from_secs(60));
        let pool = Arc::new(pool);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let submit = |lane: Lane, name: &'static str| {
            let (pool, order) = (pool.clone(), order.clone());
            rt.spawn(async move {
                pool.run(lane, move |_| {
                    order.lock().unwrap().push(name);
                    true
                })
                .await
            })
        };
        let d1 = submit(Lane::Decoy, "d1");
        let d2 = submit(Lane::Decoy, "d2");
        // Both queued before the next ones are tried.
        while pool.shared.lock().decoy.len() < 2 {
            std::thread::yield_now();
        }
        let d3 = submit(Lane::Decoy, "d3");
        assert_eq!(rt.block_on(d3).unwrap(), Outcome::Shed, "decoy lane full");
        let u1 = submit(Lane::User, "u1");
        while pool.shared.lock().user.is_empty() {
            std::thread::yield_now();
        }
        release.send(()).unwrap();
        for job in [u1, d1, d2] {
            assert_eq!(rt.block_on(job).unwrap(), Outcome::Ran(true));
        }
        assert_eq!(*order.lock().unwrap(), ["u1", "d1", "d2"]);
        assert_eq!(pool.shed(), 1);
    }

    #[test]
    fn decoys_that_waited_too_long_are_shed_without_a_hash() {
        let (pool, release) = blocked_pool(8, Duration::from_millis(1));
        let rt = rt();
        let (reply, answer) = tokio::sync::oneshot::channel();
        pool.shared.lock().decoy.push_back(Job {
            queued: Instant::now() - Duration::from_secs(1),
            work: Box::new(|_| panic!("a stale decoy must not run")),
            reply,
        });
        release.send(()).unwrap();
        assert_eq!(rt.block_on(answer).unwrap(), Outcome::Shed);
        assert_eq!(pool.shed(), 1);
        assert_eq!(pool.ran(), 1, "only the job that held the thread");
    }
}
