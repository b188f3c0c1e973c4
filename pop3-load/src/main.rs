//! `pop3-load`: a load generator for any POP3 server on host:port.
//!
//! Loopback only unless `--allow-remote`; every run is bounded in time or
//! count. Write the corpus once (`pop3-load maildir`), point the server
//! under test at it, then run the figures:
//!
//! ```sh
//! pop3-load maildir --root /tmp/load/mail --users-file /tmp/load/users --users 64 --messages 100 --size 1048576
//! pop3d --maildir-root /tmp/load/mail --users /tmp/load/users --listen 127.0.0.1:1110 &
//! pop3-load sessions --addr 127.0.0.1:1110 --clients 64 --users 64 --seconds 10
//! pop3-load retr --addr 127.0.0.1:1110 --clients 8 --messages 100 --size 1048576
//! pop3-load idle --addr 127.0.0.1:1110 --connections 1000 --pid "$(pidof pop3d)"
//! pop3-load pipeline --addr 127.0.0.1:1110 --commands 1000000
//! pop3-load raw --clients 8 --bytes 838860800
//! ```

#![forbid(unsafe_code)]

mod client;
mod corpus;
mod idle;
mod latency;
mod memory;
mod pipeline;
mod raw;
mod retr;
mod sessions;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// A POP3 load generator: sessions/s with latency percentiles, RETR
/// throughput with every byte verified, memory per idle connection,
/// pipelined commands/s, and the raw loopback TCP ceiling.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    load: Load,
    /// Allow a server address that is not loopback.
    #[arg(long, global = true)]
    allow_remote: bool,
}

#[derive(Debug, Subcommand)]
enum Load {
    /// Write the corpus: Maildirs for users load0, load1, ... (password pw0,
    /// pw1, ...) with the same deterministic messages, and the users file.
    Maildir {
        #[arg(long)]
        root: PathBuf,
        #[arg(long)]
        users_file: PathBuf,
        #[arg(long, default_value_t = 64)]
        users: usize,
        #[arg(long, default_value_t = 100)]
        messages: usize,
        /// Bytes per message (about; LF line ends as stored).
        #[arg(long, default_value_t = 1 << 20)]
        size: usize,
    },
    /// Sessions per second: connect, USER, PASS, STAT, QUIT in a loop.
    Sessions {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long, default_value_t = 64)]
        clients: usize,
        /// Users to spread the clients over (at least --clients, so no
        /// two sessions want one maildrop).
        #[arg(long, default_value_t = 64)]
        users: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 10_000_000)]
        max_sessions: u64,
    },
    /// RETR of every message by each client, each checked byte for byte.
    Retr {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long, default_value_t = 8)]
        clients: usize,
        /// Messages per user, as written by `maildir`.
        #[arg(long, default_value_t = 100)]
        messages: usize,
        /// Bytes per message, as written by `maildir`.
        #[arg(long, default_value_t = 1 << 20)]
        size: usize,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// Hold authenticated idle connections and sample the server's memory
    /// (RSS and PSS over its process tree).
    Idle {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long, default_value_t = 1000)]
        connections: usize,
        /// The server's process id.
        #[arg(long)]
        pid: u32,
        #[arg(long, default_value_t = 100)]
        concurrency: usize,
        /// Seconds to hold them after the first sample.
        #[arg(long, default_value_t = 5)]
        hold: u64,
    },
    /// Pipelined NOOPs on one connection.
    Pipeline {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long, default_value_t = 1_000_000)]
        commands: usize,
    },
    /// The loopback ceiling: plain TCP from a sender in this process.
    Raw {
        #[arg(long, default_value_t = 8)]
        clients: usize,
        /// Bytes each client reads.
        #[arg(long, default_value_t = 100 << 20)]
        bytes: u64,
    },
}

impl Load {
    fn addr(&self) -> Option<SocketAddr> {
        match self {
            Self::Sessions { addr, .. }
            | Self::Retr { addr, .. }
            | Self::Idle { addr, .. }
            | Self::Pipeline { addr, .. } => Some(*addr),
            Self::Maildir { .. } | Self::Raw { .. } => None,
        }
    }
}

async fn run(load: Load) -> std::io::Result<()> {
    match load {
        Load::Maildir {
            root,
            users_file,
            users,
            messages,
            size,
        } => {
            corpus::write_maildirs(&root, &users_file, users, messages, size)?;
            println!(
                "maildir: {users} users with {messages} messages of {size} bytes under {}",
                root.display()
            );
            Ok(())
        }
        Load::Sessions {
            addr,
            clients,
            users,
            seconds,
            max_sessions,
        } => {
            sessions::run(sessions::Sessions {
                addr,
                clients,
                users: users.max(1),
                duration: Duration::from_secs(seconds),
                max_sessions,
            })
            .await
        }
        Load::Retr {
            addr,
            clients,
            messages,
            size,
            rounds,
        } => {
            retr::run(retr::Retr {
                addr,
                clients,
                messages,
                size,
                rounds: rounds.max(1),
            })
            .await
        }
        Load::Idle {
            addr,
            connections,
            pid,
            concurrency,
            hold,
        } => {
            idle::run(idle::Idle {
                addr,
                connections,
                pid,
                concurrency: concurrency.max(1),
                hold: Duration::from_secs(hold),
            })
            .await
        }
        Load::Pipeline { addr, commands } => pipeline::run(addr, commands).await,
        Load::Raw { clients, bytes } => raw::run(clients, bytes).await,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(addr) = cli.load.addr() {
        if !addr.ip().is_loopback() && !cli.allow_remote {
            eprintln!("pop3-load: {addr} is not loopback; pass --allow-remote to load it");
            return ExitCode::from(2);
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pop3-load: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.load)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pop3-load: {e}");
            ExitCode::FAILURE
        }
    }
}
