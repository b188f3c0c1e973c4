//! Pipelined commands on one connection: NOOPs written in large batches
//! while their replies are read, so the server always has input waiting.

use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::client::unexpected;
use crate::corpus;

/// Commands written per batch.
const BATCH: usize = 10_000;

pub(crate) async fn run(addr: SocketAddr, commands: usize) -> io::Result<()> {
    let stream = TcpStream::connect(addr).await?;
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::with_capacity(256 * 1024, read);
    let mut line = Vec::new();
    reader.read_until(b'\n', &mut line).await?;
    if !line.starts_with(b"+OK") {
        return Err(unexpected("greeting", &line));
    }
    write
        .write_all(
            format!(
                "USER {}\r\nPASS {}\r\n",
                corpus::user(0),
                corpus::password(0)
            )
            .as_bytes(),
        )
        .await?;
    for what in ["USER", "PASS"] {
        line.clear();
        reader.read_until(b'\n', &mut line).await?;
        if !line.starts_with(b"+OK") {
            return Err(unexpected(what, &line));
        }
    }
    let started = Instant::now();
    let writer = tokio::spawn(async move {
        let batch = b"NOOP\r\n".repeat(BATCH);
        let mut left = commands;
        while left > 0 {
            let n = left.min(BATCH);
            write.write_all(&batch[..n * 6]).await?;
            left -= n;
        }
        write.write_all(b"QUIT\r\n").await?;
        Ok::<_, io::Error>(write)
    });
    for i in 0..commands {
        line.clear();
        reader.read_until(b'\n', &mut line).await?;
        if line != b"+OK\r\n" {
            return Err(unexpected(&format!("NOOP {i}"), &line));
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let _write = writer.await.map_err(io::Error::other)??;
    line.clear();
    reader.read_until(b'\n', &mut line).await?;
    println!(
        "pipeline: {commands} NOOPs in {elapsed:.3} s = {:.0} commands/s on one connection",
        commands as f64 / elapsed
    );
    Ok(())
}
