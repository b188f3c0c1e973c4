//! Idle authenticated connections: many clients log in and then wait, and
//! the server's memory over its process tree is sampled before and while
//! they are held.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::client::Client;
use crate::{corpus, memory};

/// What to run.
pub(crate) struct Idle {
    pub(crate) addr: SocketAddr,
    pub(crate) connections: usize,
    /// The server's process (its descendants are counted too).
    pub(crate) pid: u32,
    /// Logins under way at once while connecting.
    pub(crate) concurrency: usize,
    pub(crate) hold: Duration,
}

/// Raises this process's descriptor soft limit to the hard limit.
pub(crate) fn raise_descriptor_limit() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    limit.current = limit.maximum;
    let _ = setrlimit(Resource::Nofile, limit);
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

pub(crate) async fn run(load: Idle) -> io::Result<()> {
    let limit = raise_descriptor_limit();
    if (load.connections as u64) + 64 > limit {
        return Err(io::Error::other(format!(
            "{} connections need more descriptors than the limit of {limit}",
            load.connections
        )));
    }
    let before = memory::sample(load.pid);
    let gate = Arc::new(Semaphore::new(load.concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..load.connections {
        let gate = gate.clone();
        let addr = load.addr;
        tasks.spawn(async move {
            let _permit = gate.acquire().await.map_err(io::Error::other)?;
            Client::login(addr, &corpus::user(i), &corpus::password(i)).await
        });
    }
    let mut held = Vec::with_capacity(load.connections);
    while let Some(done) = tasks.join_next().await {
        held.push(done.map_err(io::Error::other)??);
    }
    // Let the server settle (allocator, idle threads) before sampling.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during = memory::sample(load.pid);
    tokio::time::sleep(load.hold).await;
    let later = memory::sample(load.pid);
    let n = load.connections as f64;
    let per = |a: u64, b: u64| (b as f64 - a as f64) / n;
    println!(
        "idle: {} authenticated connections held; server tree PSS {} -> {} -> {} KiB ({} processes), {:.2} KiB PSS and {:.2} KiB RSS per connection (after {:?} more: {:.2} KiB PSS)",
        load.connections,
        before.pss_kib,
        during.pss_kib,
        later.pss_kib,
        during.processes,
        per(before.pss_kib, during.pss_kib),
        per(before.rss_kib, during.rss_kib),
        load.hold,
        per(before.pss_kib, later.pss_kib),
    );
    for c in held {
        c.quit().await?;
    }
    Ok(())
}
