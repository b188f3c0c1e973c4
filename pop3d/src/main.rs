//! `pop3d`: a POP3 server over Maildir.
//!
//! With no arguments it serves a built-in demo (a fresh Maildir in a
//! temporary directory, user `demo`, password `demo`) on 127.0.0.1:1110.
//! For real use give `--maildir-root` and `--users`; see `pop3d --help`.

#![forbid(unsafe_code)]

mod demo;
mod maildir;
mod users;

use std::io::BufRead as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use pop3_tokio::{Config, Service};
use std::io::Write as _;

use tracing::{error, info, warn};

use crate::maildir::Maildirs;
use crate::users::Users;

/// A POP3 server over Maildir (RFC 1939, with CAPA, RESP-CODES, PIPELINING,
/// TOP, UIDL and APOP).
///
/// Run with no arguments for a demo: a temporary Maildir with a few messages,
/// user `demo`, password `demo`, on 127.0.0.1:1110.
///
/// For real use, give --maildir-root (one Maildir per user, ROOT/USER/{new,cur,tmp})
/// and --users, a Dovecot passwd-file: one `user:{SCHEME}data` line per user, with
/// SCHEME one of ARGON2ID, SHA512-CRYPT, BLF-CRYPT or PLAIN. `pop3d passwd USER`
/// prints such a line. Deletions happen only at QUIT, all or none; a per-user lock
/// keeps out concurrent sessions, including other pop3d processes.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    /// Settings file (TOML) with the same names as these options, e.g.
    /// `maildir-root = "/var/mail"`, `listen = ["0.0.0.0:110"]`. Options
    /// given on the command line win.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    #[command(flatten)]
    settings: Settings,
}

/// The server settings, from the command line or the settings file.
#[derive(Debug, Default, clap::Args, serde::Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct Settings {
    /// Directory holding one Maildir per user (needs --users).
    #[arg(long, value_name = "DIR")]
    maildir_root: Option<PathBuf>,

    /// Users file in Dovecot's passwd-file format (needs --maildir-root).
    #[arg(long, value_name = "FILE")]
    users: Option<PathBuf>,

    /// Address to listen on; repeat for several. Port 0 picks a free port.
    /// [default: 127.0.0.1:1110]
    #[arg(long, value_name = "ADDR")]
    #[serde(default)]
    listen: Vec<SocketAddr>,

    /// Host name used in the APOP timestamp and the sign-off line. [default: localhost]
    #[arg(long)]
    hostname: Option<String>,

    /// Idle timeout in seconds (RFC 1939: at least 600). [default: 600]
    #[arg(long, value_name = "SECONDS")]
    idle_timeout: Option<u64>,

    /// Most sessions at once; more get "-ERR [SYS/TEMP]". [default: 1000]
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,

    /// Offer APOP. The greeting then carries a timestamp, and clients such as
    /// curl switch to APOP, which works only for users with a {PLAIN} secret.
    #[arg(long)]
    #[serde(default)]
    apop: bool,

    /// Seconds a shutdown (SIGTERM, SIGINT) waits for sessions to finish. [default: 30]
    #[arg(long, value_name = "SECONDS")]
    shutdown_grace: Option<u64>,

    /// Where the UIDLs of messages pop3d has not listed before come from:
    /// `dovecot` (dovecot-uidlist: P<uidl> entries, else %08Xu%08Xv),
    /// `courier` (courierpop3dsizelist: UID<uid>-<uidvalidity>), `maildir`
    /// (the Maildir unique names), or `auto`: the other server's ids if its
    /// file is there and pop3d has never served that Maildir, else the
    /// names (decided once per Maildir). Ids already given never change.
    /// [default: auto]
    #[arg(long, value_name = "SOURCE")]
    uidl_source: Option<crate::maildir::UidlSource>,
}

impl Settings {
    /// These settings, with gaps filled from `file`.
    fn over(self, file: Self) -> Self {
        Self {
            maildir_root: self.maildir_root.or(file.maildir_root),
            users: self.users.or(file.users),
            listen: if self.listen.is_empty() {
                file.listen
            } else {
                self.listen
            },
            hostname: self.hostname.or(file.hostname),
            idle_timeout: self.idle_timeout.or(file.idle_timeout),
            max_connections: self.max_connections.or(file.max_connections),
            apop: self.apop || file.apop,
            shutdown_grace: self.shutdown_grace.or(file.shutdown_grace),
            uidl_source: self.uidl_source.or(file.uidl_source),
        }
    }

    fn load(path: &std::path::Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Read a password on standard input and print the users-file line for
    /// USER, hashed with Argon2id (like `doveadm pw -s ARGON2ID`).
    Passwd {
        /// The user name.
        user: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Passwd { user }) = &cli.command {
        return passwd(user);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn passwd(user: &str) -> ExitCode {
    let mut password = String::new();
    if let Err(e) = std::io::stdin().lock().read_line(&mut password) {
        eprintln!("pop3d passwd: cannot read the password: {e}");
        return ExitCode::FAILURE;
    }
    let password = password.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        eprintln!("pop3d passwd: empty password");
        return ExitCode::FAILURE;
    }
    match users::passwd_line(user, password) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pop3d passwd: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), String> {
    let mut cli = match &cli.config {
        Some(path) => cli.settings.over(Settings::load(path)?),
        None => cli.settings,
    };
    if cli.listen.is_empty() {
        cli.listen.push(SocketAddr::from(([127, 0, 0, 1], 1110)));
    }
    // The demo's Maildir lives as long as the server.
    let mut demo_dir = None;
    let (root, users) = match (&cli.maildir_root, &cli.users) {
        (Some(root), Some(path)) => {
            let loaded = Users::load(path)?;
            for (line, why) in &loaded.skipped {
                warn!("{}:{line}: {why}; that user cannot log in", path.display());
            }
            (root.clone(), loaded.users)
        }
        (Some(_), None) | (None, Some(_)) => {
            return Err("--maildir-root and --users go together (neither: the demo)".into())
        }
        (None, None) => {
            let dir = tempfile::Builder::new()
                .prefix("pop3d-demo-")
                .tempdir()
                .map_err(|e| format!("cannot create the demo maildir: {e}"))?;
            let users = demo::create(dir.path()).map_err(|e| format!("demo maildir: {e}"))?;
            let root = dir.path().to_owned();
            demo_dir = Some(dir);
            (root, users)
        }
    };
    let config = Config::builder()
        .hostname(cli.hostname.as_deref().unwrap_or("localhost"))
        .apop(cli.apop)
        .idle_timeout(Duration::from_secs(cli.idle_timeout.unwrap_or(600)))
        .build()
        .map_err(|e| e.to_string())?;
    let user_count = users.len();
    let store = Maildirs::new(root.clone(), users, cli.uidl_source.unwrap_or_default());
    let service = Service::new(config, move |_conn| Ok(store.handler()))
        .max_connections(cli.max_connections.unwrap_or(1000))
        .shutdown_grace(Duration::from_secs(cli.shutdown_grace.unwrap_or(30)))
        .on_session_end(|conn, end| {
            let peer = conn.peer.map(|p| p.to_string()).unwrap_or_default();
            info!(
                peer,
                user = end.user.as_deref().unwrap_or("-"),
                commands = end.stats.commands,
                bad_commands = end.stats.bad_commands,
                bodies = end.stats.bodies_sent,
                bytes_sent = end.stats.bytes_sent,
                reason = %end.reason,
                "session ended"
            );
        });

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async {
        // Signals are handled before anyone learns the server is up.
        let shutdown = service.shutdown_handle();
                // Registered now, not when the task first runs, so that a signal
        // right after the ready line is already ours.
        let mut signals = Signals::register().map_err(|e| format!("cannot handle signals: {e}"))?;
        tokio::spawn(async move {
            // First signal: graceful; second: abort IO; third: abandon handler calls.
            signals.next().await;
            info!("shutting down");
            shutdown.begin();
            signals.next().await;
            warn!("second signal: aborting sessions");
            shutdown.abort();
            signals.next().await;
            shutdown.cancel();
        });
        let mut servers = tokio::task::JoinSet::new();
        for addr in &cli.listen {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
            let bound = listener.local_addr().map_err(|e| e.to_string())?;
            // Scripts and tests read this line to learn the port. A closed
            // stdout is not worth failing for.
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "pop3d listening on {bound}");
            if demo_dir.is_some() {
                let _ = writeln!(
                    out,
                    "demo maildir {} (user {}, password {}); try:\n  curl -u {}:{} pop3://{bound}/1",
                    root.display(),
                    demo::USER,
                    demo::PASSWORD,
                    demo::USER,
                    demo::PASSWORD
                );
            }
            let _ = out.flush();
            drop(out);
            let service = service.clone();
            servers.spawn(async move {
                if let Err(e) = pop3_tokio::serve(&service, listener).await {
                    tracing::error!(error = %e, "cannot serve");
                }
            });
        }
        info!(maildirs = %root.display(), users = user_count, listeners = cli.listen.len(), "pop3d started");
        while servers.join_next().await.is_some() {}
        info!("stopped");
        Ok::<(), String>(())
    })?;
    drop(demo_dir);
    Ok(())
}

/// SIGTERM and SIGINT, registered as soon as this exists.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn register() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// The next SIGTERM or SIGINT.
    async fn next(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}
