//! RETR throughput: each client logs in as its own user and retrieves every
//! message, each checked byte for byte against what the corpus says the
//! server must send.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::client::{unexpected, Client};
use crate::corpus;

/// What to run.
pub(crate) struct Retr {
    pub(crate) addr: SocketAddr,
    /// Concurrent clients; client `i` logs in as user `i`.
    pub(crate) clients: usize,
    pub(crate) messages: usize,
    /// The size the corpus was written with.
    pub(crate) size: usize,
    pub(crate) rounds: usize,
}

/// Message `n`'s wire form, and its size in CRLF octets (the payload).
struct Expected {
    wire: Vec<u8>,
    payload: u64,
}

async fn client(addr: SocketAddr, i: usize, expected: Arc<Vec<Expected>>) -> io::Result<u64> {
    let mut c = Client::login(addr, &corpus::user(i), &corpus::password(i)).await?;
    let mut body = Vec::new();
    let mut payload = 0;
    for (n, want) in expected.iter().enumerate() {
        c.send(format!("RETR {}\r\n", n + 1).as_bytes()).await?;
        c.ok("RETR").await?;
        c.multiline_into(&mut body).await?;
        if body != want.wire {
            let at = body
                .iter()
                .zip(&want.wire)
                .position(|(a, b)| a != b)
                .unwrap_or(body.len().min(want.wire.len()));
            return Err(unexpected(
                &format!(
                    "RETR {} differs from the corpus at byte {at} of {}",
                    n + 1,
                    want.wire.len()
                ),
                &body[at.saturating_sub(20)..(at + 40).min(body.len())],
            ));
        }
        payload += want.payload;
    }
    c.quit().await?;
    Ok(payload)
}

pub(crate) async fn run(load: Retr) -> io::Result<()> {
    let expected: Arc<Vec<Expected>> = Arc::new(
        (1..=load.messages)
            .map(|n| {
                let stored = corpus::stored(n, load.size);
                let payload =
                    stored.len() as u64 + memchr::memchr_iter(b'\n', &stored).count() as u64;
                Expected {
                    wire: corpus::wire(&stored),
                    payload,
                }
            })
            .collect(),
    );
    let mut rates = Vec::new();
    for round in 1..=load.rounds {
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..load.clients {
            tasks.spawn(client(load.addr, i, expected.clone()));
        }
        let mut bytes = 0;
        while let Some(done) = tasks.join_next().await {
            bytes += done.map_err(io::Error::other)??;
        }
        let elapsed = started.elapsed().as_secs_f64();
        let rate = bytes as f64 / elapsed / 1e6;
        println!(
            "retr round {round}: {} messages, {:.1} MB of payload in {elapsed:.2} s = {rate:.0} MB/s, every byte verified",
            load.clients * load.messages,
            bytes as f64 / 1e6
        );
        rates.push(rate);
    }
    rates.sort_by(f64::total_cmp);
    println!(
        "retr: median {:.0} MB/s over {} rounds with {} clients",
        rates[rates.len() / 2],
        rates.len(),
        load.clients
    );
    Ok(())
}
