//! Sessions per second: each client in a loop connects, logs in, STATs and
//! QUITs, and the time from connect to the close is one sample.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::client::Client;
use crate::corpus;
use crate::latency::Latencies;

/// What to run.
pub(crate) struct Sessions {
    pub(crate) addr: SocketAddr,
    /// Concurrent clients; client `i` logs in as user `i % users`.
    pub(crate) clients: usize,
    pub(crate) users: usize,
    pub(crate) duration: Duration,
    /// Stop after this many sessions in all, even before `duration`.
    pub(crate) max_sessions: u64,
}

async fn one(addr: SocketAddr, user: &str, password: &str) -> io::Result<()> {
    let mut c = Client::login(addr, user, password).await?;
    c.send(b"STAT\r\n").await?;
    c.ok("STAT").await?;
    c.quit().await
}

pub(crate) async fn run(load: Sessions) -> io::Result<()> {
    let started = Instant::now();
    let deadline = started + load.duration;
    let begun = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..load.clients {
        let (user, password) = (
            corpus::user(i % load.users),
            corpus::password(i % load.users),
        );
        let begun = begun.clone();
        let (addr, max) = (load.addr, load.max_sessions);
        tasks.spawn(async move {
            let mut samples = Vec::new();
            let mut errors = Vec::new();
            while Instant::now() < deadline && begun.fetch_add(1, Ordering::Relaxed) < max {
                let t = Instant::now();
                match one(addr, &user, &password).await {
                    Ok(()) => samples.push(t.elapsed()),
                    Err(e) => errors.push(e.to_string()),
                }
            }
            (samples, errors)
        });
    }
    let mut samples = Vec::new();
    let mut errors = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let (s, e) = done.map_err(io::Error::other)?;
        samples.extend(s);
        errors.extend(e);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let n = samples.len();
    let latencies = Latencies::new(samples);
    println!(
        "sessions: {n} in {elapsed:.2} s = {:.0}/s with {} clients; latency p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms; {} errors{}",
        n as f64 / elapsed,
        load.clients,
        latencies.ms(50.0),
        latencies.ms(99.0),
        latencies.ms(99.9),
        errors.len(),
        errors.first().map(|e| format!(" (first: {e})")).unwrap_or_default()
    );
    if n == 0 {
        return Err(io::Error::other("no session completed"));
    }
    Ok(())
}
