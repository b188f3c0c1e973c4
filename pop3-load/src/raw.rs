//! The loopback ceiling: the same clients reading the same number of bytes
//! from a plain TCP sender in this process, with no POP3 at all.

use std::io::{self, Write};
use std::net::TcpListener;
use std::time::Instant;

use tokio::io::AsyncReadExt;

pub(crate) async fn run(clients: usize, bytes_per_client: u64) -> io::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let sender = std::thread::spawn(move || -> io::Result<()> {
        let block = vec![b'x'; 1 << 20];
        let mut threads = Vec::new();
        for _ in 0..clients {
            let (mut s, _) = listener.accept()?;
            let block = block.clone();
            threads.push(std::thread::spawn(move || -> io::Result<()> {
                let mut left = bytes_per_client;
                while left > 0 {
                    let n = left.min(block.len() as u64) as usize;
                    s.write_all(&block[..n])?;
                    left -= n as u64;
                }
                Ok(())
            }));
        }
        for t in threads {
            t.join()
                .map_err(|_| io::Error::other("sender panicked"))??;
        }
        Ok(())
    });
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        tasks.spawn(async move {
            let mut s = tokio::net::TcpStream::connect(addr).await?;
            let mut buf = vec![0; 256 * 1024];
            let mut total = 0u64;
            loop {
                let n = s.read(&mut buf).await?;
                if n == 0 {
                    return Ok::<u64, io::Error>(total);
                }
                total += n as u64;
            }
        });
    }
    let mut total = 0;
    while let Some(done) = tasks.join_next().await {
        total += done.map_err(io::Error::other)??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    sender
        .join()
        .map_err(|_| io::Error::other("sender panicked"))??;
    println!(
        "raw tcp: {:.1} MB in {elapsed:.2} s = {:.0} MB/s with {clients} clients",
        total as f64 / 1e6,
        total as f64 / elapsed / 1e6
    );
    Ok(())
}
