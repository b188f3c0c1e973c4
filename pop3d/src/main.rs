//! `pop3d`: a POP3 server over Maildir.
//!
//! With no arguments it serves a built-in demo (a fresh Maildir in a
//! temporary directory, user `demo`, password `demo`) on 127.0.0.1:1110,
//! and with implicit TLS on 127.0.0.1:1995 (a self-signed certificate
//! made at start). For real use give `--maildir-root` and `--users`, or
//! `--store postgres://…` (see [`postgres`]), and `--tls-cert`/`--tls-key`
//! for TLS; see `pop3d --help`.

#![forbid(unsafe_code)]

mod activation;
mod demo;
mod hashing;
mod inetd;
mod maildir;
mod manage;
mod metrics;
mod oauth;
mod observe;
mod passwords;
mod postgres;
mod startup;
mod store;
mod tls;
mod users;

use std::io::BufRead as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use pop3_proto::{Expire, Mechanism};
use pop3_tokio::{Config, ConnectionInfo, FailedLoginLimits, Refusal, Service};
use tracing::{error, info, warn};

use crate::maildir::{Maildirs, Policy};
use crate::startup::StartupError;
use crate::store::{Store, StoreHandler};
use crate::tls::Tls;
use crate::users::Users;

/// A POP3 server over Maildir (RFC 1939, with CAPA, RESP-CODES, PIPELINING,
/// TOP, UIDL, APOP, SASL PLAIN and LOGIN, STLS and implicit TLS).
///
/// Run with no arguments for a demo: a temporary Maildir with a few messages,
/// user `demo`, password `demo`, on 127.0.0.1:1110 (STLS) and 127.0.0.1:1995
/// (implicit TLS), with a self-signed certificate made at start.
///
/// TLS: --tls-cert and --tls-key (PEM) offer STLS on the --listen addresses and
/// serve implicit TLS (RFC 8314) on the --listen-tls ones; SIGHUP reloads the
/// certificate files (a bad new certificate keeps the old one). Passwords are
/// refused on a plain connection from another machine once STLS is offered.
///
/// For real use, give --maildir-root (one Maildir per user, ROOT/USER/{new,cur,tmp})
/// and --users, a Dovecot passwd-file: one `user:{SCHEME}data` line per user, with
/// SCHEME one of ARGON2ID, SHA512-CRYPT, BLF-CRYPT or PLAIN. `pop3d passwd USER`
/// prints such a line. Deletions happen only at QUIT, all or none; a per-user lock
/// keeps out concurrent sessions, including other pop3d processes.
///
/// Or give --store, a PostgreSQL database that several pop3d instances can
/// serve: `pop3d db migrate` sets it up, `pop3d user` manages its users,
/// `pop3d deliver` delivers into it and `pop3d import` copies Maildirs into it.
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

    /// Log format on standard error: `text` (one line per event) or
    /// `json` (one JSON object per line). Command line only.
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t)]
    log_format: LogFormat,

    /// Serve one session on standard input and output (inetd, xinetd,
    /// systemd `Accept=yes`), then exit. Logs go to standard error unless
    /// it is the connection too.
    #[arg(long)]
    inetd: bool,

    #[command(flatten)]
    settings: Settings,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The server settings, from the command line or the settings file.
#[derive(Debug, Default, Clone, clap::Args, serde::Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct Settings {
    /// Serve from this PostgreSQL database instead of a Maildir root: a
    /// connection URL (`postgres://user:password@host:port/db`) or a
    /// libpq key=value string. Set it up with `pop3d db migrate`, add
    /// users with `pop3d user add`, deliver with `pop3d deliver`. Several
    /// pop3d instances may serve one database.
    #[arg(long, value_name = "URL")]
    store: Option<String>,

    /// With --store: seconds a maildrop lock (a lease in the database) is
    /// held without being renewed. A session renews it every third of
    /// this; the lock of an instance that died frees itself this long
    /// after its last renewal. [default: 30]
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    lease_seconds: Option<u64>,

    /// With --store: most database connections this instance opens
    /// (sessions hold one only while a command needs it). [default: 16]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    db_pool_size: Option<u64>,

    /// With --store: offer SASL SCRAM-SHA-256 (users added with `pop3d
    /// user add --scheme scram-sha-256`, or imported with SCRAM keys). Off
    /// by default: a client that prefers SCRAM cannot log in a user who
    /// has no SCRAM keys. (With a Maildir it is offered when some user in
    /// the users file has SCRAM keys.)
    #[arg(long)]
    #[serde(default)]
    sasl_scram: bool,

    /// Directory holding one Maildir per user (needs --users).
    #[arg(long, value_name = "DIR")]
    maildir_root: Option<PathBuf>,

    /// Users file in Dovecot's passwd-file format (needs --maildir-root).
    #[arg(long, value_name = "FILE")]
    users: Option<PathBuf>,

    /// Address to listen on (plain POP3, with STLS when a certificate is
    /// configured); repeat for several. Port 0 picks a free port. [default,
    /// when neither this nor --listen-tls is given: 127.0.0.1:1110]
    #[arg(long, value_name = "ADDR")]
    #[serde(default)]
    listen: Vec<SocketAddr>,

    /// Address to listen on for implicit TLS (POP3S, RFC 8314; port 995 in
    /// production); repeat for several. Needs a certificate. [default, with a
    /// certificate and when neither this nor --listen is given: 127.0.0.1:1995]
    #[arg(long, value_name = "ADDR")]
    #[serde(default)]
    listen_tls: Vec<SocketAddr>,

    /// PEM file with the server's certificate chain (its certificate first,
    /// then the intermediates). Needs --tls-key. Reloaded on SIGHUP.
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<PathBuf>,

    /// PEM file with the certificate's private key (PKCS#8, RSA or EC,
    /// unencrypted). Needs --tls-cert. Reloaded on SIGHUP.
    #[arg(long, value_name = "FILE")]
    tls_key: Option<PathBuf>,

    /// Host name used in the APOP timestamp and the sign-off line. [default: localhost]
    #[arg(long)]
    hostname: Option<String>,

    /// Idle timeout in seconds (RFC 1939: at least 600). [default: 600]
    #[arg(long, value_name = "SECONDS")]
    idle_timeout: Option<u64>,

    /// Most sessions at once. When all are taken, a new connection closes
    /// the connection that has not logged in and has been idle longest (as
    /// the idle timer would); if every session is logged in or busy, it
    /// gets "-ERR [SYS/TEMP]". [default: 1000]
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,

    /// Most connections at once that have not logged in (the rest of
    /// --max-connections is kept for sessions that have); beyond it a new
    /// connection closes the one idle longest, or gets "-ERR [SYS/TEMP]".
    /// [default: half of --max-connections]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    max_unauthenticated: Option<u64>,

    /// Most connections at once from one IP address, logged in or not;
    /// more get "-ERR [SYS/TEMP]". Behind a proxy that does not pass the
    /// client's address, set it to --max-connections. [default: 50]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    max_connections_per_ip: Option<u64>,

    /// Take PROXY protocol headers (HAProxy's v1 and v2) from this network
    /// (CIDR, e.g. 10.0.0.0/8, or one address); repeat for several. The
    /// header's client address is then the peer everywhere (limits, logs,
    /// metrics). Connections from these sources must send a header (within
    /// 5 s); connections from anywhere else that send one are closed.
    #[arg(long, value_name = "CIDR")]
    #[serde(default)]
    proxy_from: Vec<String>,

    /// Serve Prometheus metrics on http://ADDR/metrics (e.g.
    /// 127.0.0.1:9110; port 0 picks a free port).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,

    /// Failed logins from one IP address within --failed-login-window
    /// after which its login attempts are refused unchecked, with "-ERR
    /// [SYS/TEMP]" after the usual failure delay; 0: no limit. [default: 10]
    #[arg(long, value_name = "N")]
    max_failed_logins_per_ip: Option<u32>,

    /// Failed logins as one user (from any address) within
    /// --failed-login-window after which that user's attempts are refused
    /// unchecked, with `-ERR [AUTH]`, from addresses that failed too; an
    /// address with no recent failure is always checked, so the user can
    /// still log in; 0: no limit. [default: 5]
    #[arg(long, value_name = "N")]
    max_failed_logins_per_user: Option<u32>,

    /// How far back failed logins count, in seconds. [default: 300]
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    failed_login_window: Option<u64>,

    /// Least time between two logins of one user, in seconds (RFC 2449
    /// LOGIN-DELAY, announced in CAPA): a login sooner, with the right
    /// password, gets "-ERR [LOGIN-DELAY]". Kept in each Maildir, so it
    /// holds across pop3d processes sharing --maildir-root. [default: none]
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u32).range(1..))]
    login_delay: Option<u32>,

    /// What a message deleted at QUIT (or expired) becomes: `remove` (the
    /// file is removed), `move:FOLDER` (moved into that Maildir++ folder of
    /// the user's Maildir, e.g. `move:.Trash`, created if missing), or
    /// `flag` (the Maildir `T` flag is added to its name, and POP3 no
    /// longer lists messages flagged so). [default: remove]
    #[arg(long, value_name = "POLICY")]
    delete_policy: Option<crate::maildir::DeletePolicy>,

    /// Delete (by --delete-policy) messages retrieved by RETR this many days
    /// ago or more, at the user's next login; announced as EXPIRE in CAPA
    /// (0: at the login after the session that retrieved them). [default:
    /// never]
    #[arg(long, value_name = "DAYS")]
    expire: Option<u32>,

    /// Offer APOP. The greeting then carries a timestamp, and clients such as
    /// curl switch to APOP, which works only for users with a {PLAIN} secret.
    #[arg(long)]
    #[serde(default)]
    apop: bool,

    /// Seconds a shutdown (SIGTERM, SIGINT) waits for sessions to finish. [default: 30]
    #[arg(long, value_name = "SECONDS")]
    shutdown_grace: Option<u64>,

    /// Where the UIDLs of messages pop3d has not listed before come from:
    /// `dovecot` (dovecot-uidlist: `P<uidl>` entries, else `%08Xu%08Xv`),
    /// `courier` (courierpop3dsizelist: `UID<uid>-<uidvalidity>`), `maildir`
    /// (the Maildir unique names), or `auto`: the other server's ids if its
    /// file is there and pop3d has never served that Maildir, else the
    /// names (decided once per Maildir). Ids already given never change.
    /// [default: auto]
    #[arg(long, value_name = "SOURCE")]
    uidl_source: Option<crate::maildir::UidlSource>,

    /// Public keys of the OAuth 2.0 issuer whose JWT access tokens log users
    /// in with SASL XOAUTH2 and OAUTHBEARER: a JWKS file or a PEM public key.
    /// Needs --oauth-issuer and --oauth-audience.
    #[arg(long, value_name = "FILE")]
    oauth_keys: Option<PathBuf>,

    /// The `iss` a token must carry.
    #[arg(long, value_name = "URL")]
    oauth_issuer: Option<String>,

    /// The `aud` a token must carry.
    #[arg(long, value_name = "AUDIENCE")]
    oauth_audience: Option<String>,

    /// The token claim that names the user. [default: email]
    #[arg(long, value_name = "CLAIM")]
    oauth_claim: Option<String>,
}

impl Settings {
    /// These settings, with gaps filled from `file`.
    fn over(self, file: Self) -> Self {
        Self {
            store: self.store.or(file.store),
            lease_seconds: self.lease_seconds.or(file.lease_seconds),
            db_pool_size: self.db_pool_size.or(file.db_pool_size),
            sasl_scram: self.sasl_scram || file.sasl_scram,
            maildir_root: self.maildir_root.or(file.maildir_root),
            users: self.users.or(file.users),
            listen: if self.listen.is_empty() {
                file.listen
            } else {
                self.listen
            },
            listen_tls: if self.listen_tls.is_empty() {
                file.listen_tls
            } else {
                self.listen_tls
            },
            tls_cert: self.tls_cert.or(file.tls_cert),
            tls_key: self.tls_key.or(file.tls_key),
            hostname: self.hostname.or(file.hostname),
            idle_timeout: self.idle_timeout.or(file.idle_timeout),
            max_connections: self.max_connections.or(file.max_connections),
            max_unauthenticated: self.max_unauthenticated.or(file.max_unauthenticated),
            max_connections_per_ip: self.max_connections_per_ip.or(file.max_connections_per_ip),
            max_failed_logins_per_ip: self
                .max_failed_logins_per_ip
                .or(file.max_failed_logins_per_ip),
            max_failed_logins_per_user: self
                .max_failed_logins_per_user
                .or(file.max_failed_logins_per_user),
            failed_login_window: self.failed_login_window.or(file.failed_login_window),
            login_delay: self.login_delay.or(file.login_delay),
            delete_policy: self.delete_policy.or(file.delete_policy),
            expire: self.expire.or(file.expire),
            apop: self.apop || file.apop,
            proxy_from: if self.proxy_from.is_empty() {
                file.proxy_from
            } else {
                self.proxy_from
            },
            metrics: self.metrics.or(file.metrics),
            shutdown_grace: self.shutdown_grace.or(file.shutdown_grace),
            uidl_source: self.uidl_source.or(file.uidl_source),
            oauth_keys: self.oauth_keys.or(file.oauth_keys),
            oauth_issuer: self.oauth_issuer.or(file.oauth_issuer),
            oauth_audience: self.oauth_audience.or(file.oauth_audience),
            oauth_claim: self.oauth_claim.or(file.oauth_claim),
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
    /// USER, hashed with Argon2id (like `doveadm pw -s ARGON2ID`) or stored
    /// as SCRAM-SHA-256 keys.
    Passwd {
        /// The user name.
        user: String,
        /// How to store it: `argon2id`, or `scram-sha-256` (then SASL
        /// SCRAM-SHA-256 works too; USER/PASS and PLAIN work either way).
        #[arg(long, value_enum, default_value_t)]
        scheme: users::Scheme,
    },
    /// Set up or upgrade a database store's schema.
    Db {
        #[command(subcommand)]
        command: manage::DbCommand,
    },
    /// Manage the users of a database store.
    User {
        #[command(subcommand)]
        command: manage::UserCommand,
    },
    /// Deliver the message on standard input to USER's maildrop in a
    /// database store (as Postfix's mailbox_command or a pipe transport).
    /// Exits 0 when delivered, 67 (EX_NOUSER) for an unknown user, 75
    /// (EX_TEMPFAIL) when the database fails (the sender retries).
    Deliver {
        /// The database (as pop3d --store).
        #[arg(long, value_name = "URL")]
        store: String,
        /// The recipient.
        user: String,
    },
    /// Copy every Maildir under --maildir-root into a database store, for
    /// the users the database has, keeping the unique ids (UIDLs) pop3d
    /// served them with, so clients that leave mail on the server do not
    /// fetch it again. Run again, it adds only the messages not yet
    /// imported. Exits 0, 75 if the database failed, 65 if some message
    /// could not be read.
    Import {
        /// The database (as pop3d --store).
        #[arg(long, value_name = "URL")]
        store: String,
        /// The Maildir root (as pop3d --maildir-root).
        #[arg(long, value_name = "DIR")]
        maildir_root: PathBuf,
        /// Where the ids of messages pop3d never listed come from (as
        /// pop3d --uidl-source). [default: auto]
        #[arg(long, value_name = "SOURCE")]
        uidl_source: Option<crate::maildir::UidlSource>,
    },
    /// Check a settings file and options without serving: the users file, the certificate,
    /// the OAuth keys and the Maildir root are loaded and checked. Exits 0
    /// and says what it found, or names the problem and exits with the
    /// status pop3d would fail to start with.
    CheckConfig {
        /// The settings file (TOML); without it, --config's.
        file: Option<PathBuf>,
        /// Options as the server takes them; they win over the file's.
        #[command(flatten)]
        settings: Box<Settings>,
    },
}

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    if let Some(Command::Passwd { user, scheme }) = &cli.command {
        return passwd(user, *scheme);
    }
    if !(cli.inetd && inetd::stderr_is_the_connection()) {
        let logs = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "info".into()),
            )
            .with_writer(std::io::stderr);
        match cli.log_format {
            LogFormat::Text => logs
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .init(),
            LogFormat::Json => logs.json().init(),
        }
    }
    // The database store's subcommands: logs (warnings of the Maildir
    // code an import runs, of the pool) on standard error too.
    match cli.command.take() {
        Some(Command::Db { command }) => return manage::db(command),
        Some(Command::User { command }) => return manage::user(command),
        Some(Command::Deliver { store, user }) => return manage::deliver(&store, &user),
        Some(Command::Import {
            store,
            maildir_root,
            uidl_source,
        }) => return manage::import(&store, &maildir_root, uidl_source.unwrap_or_default()),
        other => cli.command = other,
    }
    let cli_inetd = cli.inetd;
    let outcome = match cli.command.take() {
        Some(Command::CheckConfig { file, settings }) => check_config(
            settings.over(cli.settings),
            file.as_deref().or(cli.config.as_deref()),
        ),
        _ => run(cli),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Not through the log filter: a failure to start is always told.
            if !(cli_inetd && inetd::stderr_is_the_connection()) {
                eprintln!("pop3d: {e}");
            }
            ExitCode::from(e.status() as u8)
        }
    }
}

fn passwd(user: &str, scheme: users::Scheme) -> ExitCode {
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
    match users::passwd_line(user, password, scheme) {
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

/// Threads for the Maildir's file work (locking, listing, reading,
/// deleting; password hashing has threads of its own). tokio's default of
/// 512 lets a burst of logins start a thread for nearly every one, and
/// their stacks and allocator arenas stay: about 12 KiB per connection
/// of the burst, held for good. File work on one disk gains nothing from
/// more threads than this.
const BLOCKING_THREADS: usize = 16;

/// `--max-connections` when not given.
const DEFAULT_MAX_CONNECTIONS: usize = 1000;

/// `--max-connections-per-ip` when not given (as Postfix's anvil allows
/// one client by default).
const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 50;

fn saturating_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// The plain listener when no listener is named.
const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 1110);

/// The implicit TLS listener when no listener is named and TLS is set up.
const DEFAULT_LISTEN_TLS: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 1995);

/// Fills in the default listeners: only when none is named at all (so a
/// command line that names its listeners gets exactly those).
fn default_listeners(settings: &mut Settings, tls: bool) {
    if settings.listen.is_empty() && settings.listen_tls.is_empty() {
        settings.listen.push(DEFAULT_LISTEN);
        if tls {
            settings.listen_tls.push(DEFAULT_LISTEN_TLS);
        }
    }
}

/// The server's TLS: the certificate files, the demo's generated
/// certificate, or none.
fn tls_settings(settings: &Settings, demo: bool) -> Result<Option<Tls>, String> {
    match (&settings.tls_cert, &settings.tls_key) {
        (Some(cert), Some(key)) => Tls::from_files(cert.clone(), key.clone()).map(Some),
        (Some(_), None) | (None, Some(_)) => Err("--tls-cert and --tls-key go together".into()),
        (None, None) if demo => Tls::generated().map(Some),
        (None, None) if !settings.listen_tls.is_empty() => {
            Err("--listen-tls needs a certificate: give --tls-cert and --tls-key".into())
        }
        (None, None) => Ok(None),
    }
}

/// The token validator the OAuth settings describe, if any.
fn oauth_settings(cli: &Settings) -> Result<Option<oauth::TokenValidator>, String> {
    let Some(keys) = &cli.oauth_keys else {
        if cli.oauth_issuer.is_some() || cli.oauth_audience.is_some() {
            return Err("--oauth-issuer and --oauth-audience need --oauth-keys".into());
        }
        return Ok(None);
    };
    let (Some(issuer), Some(audience)) = (&cli.oauth_issuer, &cli.oauth_audience) else {
        return Err("--oauth-keys needs --oauth-issuer and --oauth-audience".into());
    };
    let claim = cli.oauth_claim.as_deref().unwrap_or("email");
    oauth::TokenValidator::load(keys, issuer, audience, claim).map(Some)
}

/// The SASL mechanisms pop3d offers: SCRAM-SHA-256 when some user has
/// SCRAM keys, or `--sasl-scram` asks for it (a client that prefers it
/// would fail for the others),
/// PLAIN and LOGIN, and the OAuth ones when tokens can be checked.
fn mechanisms(users: &Users, scram: bool, oauth: bool) -> Vec<Mechanism> {
    let mut list = Vec::new();
    if scram || users.any_scram() {
        list.push(Mechanism::ScramSha256);
    }
    list.extend([Mechanism::Plain, Mechanism::Login]);
    if oauth {
        list.extend([Mechanism::OAuthBearer, Mechanism::XOAuth2]);
    }
    list
}

/// Everything checked and loaded, nothing bound yet: what `check-config`
/// validates and what serving starts from.
struct Prepared {
    settings: Settings,
    config: Config,
    store: Store,
    tls: Option<Arc<Tls>>,
    /// What is served, for the logs: the Maildir root, or the database.
    root: PathBuf,
    /// The users file, re-read on SIGHUP (none for the demo).
    users_file: Option<PathBuf>,
    user_count: usize,
    /// The demo's Maildir, which lives as long as the server.
    demo_dir: Option<tempfile::TempDir>,
    /// The sources PROXY headers are taken from.
    proxy_from: Vec<pop3_tokio::proxy_header::Cidr>,
    /// The metrics, when `--metrics` asks for them.
    metrics: Option<Arc<metrics::Metrics>>,
}

/// Reads the settings (the command line over `file`) and loads and checks
/// everything they name.
fn prepare(settings: Settings, file: Option<&Path>) -> Result<Prepared, StartupError> {
    let cli = match file {
        Some(path) => {
            startup::readable(path, "settings file")?;
            settings.over(Settings::load(path)?)
        }
        None => settings,
    };
    let demo = cli.store.is_none() && cli.maildir_root.is_none() && cli.users.is_none();
    for (path, what) in [
        (&cli.tls_cert, "certificate file"),
        (&cli.tls_key, "key file"),
        (&cli.oauth_keys, "OAuth keys file"),
    ] {
        if let Some(path) = path {
            startup::readable(path, what)?;
        }
    }
    let tls = tls_settings(&cli, demo)?;
    let oauth = oauth_settings(&cli)?;
    let mut demo_dir = None;
    let mut database = None;
    let (root, users, users_file) = if let Some(url) = &cli.store {
        if cli.maildir_root.is_some() || cli.users.is_some() {
            return Err(StartupError::config(
                "--store serves from the database: not with --maildir-root or --users",
            ));
        }
        for (set, name) in [
            (cli.login_delay.is_some(), "login-delay"),
            (cli.expire.is_some(), "expire"),
            (cli.delete_policy.is_some(), "delete-policy"),
            (cli.uidl_source.is_some(), "uidl-source"),
            (cli.oauth_keys.is_some(), "oauth-keys"),
        ] {
            if set {
                return Err(StartupError::config(format!(
                    "{name} is not supported with --store yet"
                )));
            }
        }
        let size = cli.db_pool_size.map_or(16, saturating_usize);
        let pool = postgres::pool(url, size)?;
        let lease = Duration::from_secs(cli.lease_seconds.unwrap_or(30));
        database = Some(postgres::PgStore::new(pool, lease));
        (
            PathBuf::from(postgres::describe(url)),
            Users::default(),
            None,
        )
    } else {
        if cli.sasl_scram {
            return Err(StartupError::config(
                "--sasl-scram is for --store; with a Maildir, SCRAM-SHA-256 is offered when the users file has SCRAM users",
            ));
        }
        match (&cli.maildir_root, &cli.users) {
            (Some(root), Some(path)) => {
                startup::maildir_root(root)?;
                startup::readable(path, "users file")?;
                (root.clone(), load_users(path)?, Some(path.clone()))
            }
            (Some(_), None) | (None, Some(_)) => {
                return Err(StartupError::config(
                    "--maildir-root and --users go together (neither: the demo)",
                ))
            }
            (None, None) => {
                let dir = tempfile::Builder::new()
                    .prefix("pop3d-demo-")
                    .tempdir()
                    .map_err(|e| {
                        StartupError::os(format!("cannot create the demo maildir: {e}"))
                    })?;
                let users = demo::create(dir.path())
                    .map_err(|e| StartupError::os(format!("demo maildir: {e}")))?;
                let root = dir.path().to_owned();
                demo_dir = Some(dir);
                (root, users, None)
            }
        }
    };
    let config = Config::builder()
        .hostname(cli.hostname.as_deref().unwrap_or("localhost"))
        // STLS on the plain listeners whenever there is a certificate; the
        // plaintext policy then refuses passwords on plain connections
        // from other machines.
        .stls(tls.is_some())
        .apop(cli.apop)
        .sasl(&mechanisms(&users, cli.sasl_scram, oauth.is_some()))
        .utf8(true)
        .lang(true)
        .idle_timeout(Duration::from_secs(cli.idle_timeout.unwrap_or(600)))
        .login_delay(cli.login_delay, false)
        .expire(cli.expire.map_or(Expire::Never, Expire::Days), false)
        .build()
        .map_err(|e| e.to_string())?;
    // The command line refuses 0; a settings file is checked here.
    if cli.max_unauthenticated == Some(0) || cli.max_connections_per_ip == Some(0) {
        return Err(StartupError::config(
            "max-unauthenticated and max-connections-per-ip must be at least 1",
        ));
    }
    let proxy_from = cli
        .proxy_from
        .iter()
        .map(|net| net.parse())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| StartupError::config(format!("--proxy-from: {e}")))?;
    let pool = database.as_ref().map(|db| db.pool().clone());
    let metrics = cli.metrics.map(|_| Arc::new(metrics::Metrics::new(pool)));
    let user_count = users.len();
    if cli.login_delay == Some(0) || cli.failed_login_window == Some(0) {
        return Err(StartupError::config(
            "login-delay and failed-login-window must be at least 1",
        ));
    }
    let policy = Policy {
        delete: cli.delete_policy.clone().unwrap_or_default(),
        expire_days: cli.expire,
        login_delay: cli.login_delay.map(|s| Duration::from_secs(s.into())),
    };
    let store = match database {
        Some(database) => Store::Postgres(database),
        None => Store::Maildir(Maildirs::new(
            root.clone(),
            users,
            cli.uidl_source.unwrap_or_default(),
            oauth,
            policy,
        )),
    };
    Ok(Prepared {
        settings: cli,
        config,
        store,
        tls: tls.map(Arc::new),
        root,
        users_file,
        user_count,
        demo_dir,
        proxy_from,
        metrics,
    })
}

/// The users file's table, with a warning for each user skipped.
fn load_users(path: &Path) -> Result<Users, String> {
    let loaded = Users::load(path)?;
    for (line, why) in &loaded.skipped {
        warn!("{}:{line}: {why}; that user cannot log in", path.display());
    }
    Ok(loaded.users)
}

/// `pop3d check-config`: loads and checks everything, binds nothing, and
/// says what it found.
fn check_config(settings: Settings, file: Option<&Path>) -> Result<(), StartupError> {
    let prepared = prepare(settings, file)?;
    let mut s = prepared.settings.clone();
    default_listeners(&mut s, prepared.tls.is_some());
    let list = |addrs: &[SocketAddr]| {
        addrs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!(
        "pop3d: configuration OK: {}, listen [{}], listen-tls [{}], TLS {}",
        match prepared.store {
            Store::Maildir(_) => format!(
                "{} users, maildirs in {}",
                prepared.user_count,
                prepared.root.display()
            ),
            // Not connected: check-config binds and connects nothing.
            Store::Postgres(_) => format!("store {}", prepared.root.display()),
        },
        list(&s.listen),
        list(&s.listen_tls),
        if prepared.tls.is_some() { "on" } else { "off" }
    );
    Ok(())
}

/// The service over `prepared`'s store, with the limits and logging the
/// settings ask for.
fn service(
    prepared: &Prepared,
) -> Service<impl Fn(&ConnectionInfo) -> Result<StoreHandler, Refusal> + Send + Sync + 'static> {
    let cli = &prepared.settings;
    let store = prepared.store.clone();
    let max_connections = cli.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
    let failed_logins = FailedLoginLimits {
        per_ip: Some(cli.max_failed_logins_per_ip.unwrap_or(10)).filter(|&n| n > 0),
        per_user: Some(cli.max_failed_logins_per_user.unwrap_or(5)).filter(|&n| n > 0),
        window: Duration::from_secs(cli.failed_login_window.unwrap_or(300)),
        ..FailedLoginLimits::default()
    };
    let mut service = Service::new(prepared.config.clone(), move |conn: &ConnectionInfo| {
        Ok(store.handler(conn.peer))
    })
    .max_connections(max_connections)
    .max_unauthenticated(
        cli.max_unauthenticated
            .map_or(max_connections.div_ceil(2), saturating_usize),
    )
    .max_connections_per_ip(
        cli.max_connections_per_ip
            .map_or(DEFAULT_MAX_CONNECTIONS_PER_IP, saturating_usize),
    )
    .failed_login_limits(failed_logins)
    .shutdown_grace(Duration::from_secs(cli.shutdown_grace.unwrap_or(30)))
    .proxy_from(prepared.proxy_from.iter().copied())
    .observe(observe::Observe {
        metrics: prepared.metrics.clone(),
    })
    .on_session_end(|conn, end| {
        let peer = conn.peer.map(|p| p.to_string()).unwrap_or_default();
        if let Some(error) = &end.proxy_error {
            let from = conn.proxied_by.or(conn.peer);
            let from = from.map(|p| p.to_string()).unwrap_or_default();
            info!(peer = from, error = %error, "connection closed: PROXY header");
            return;
        }
        if let Some(error) = &end.tls_error {
            info!(peer, tls = conn.tls, error = %error, reason = %end.reason, evicted = end.evicted, "TLS handshake failed");
            return;
        }
        let user = end.user.as_deref().unwrap_or("-");
        if let Some(error) = &end.error {
            warn!(peer, user, error = %error, reason = %end.reason, "session failed");
        }
        info!(
            peer,
            user,
            evicted = end.evicted,
            commands = end.stats.commands,
            bad_commands = end.stats.bad_commands,
            bodies = end.stats.bodies_sent,
            bytes_sent = end.stats.bytes_sent,
            reason = %end.reason,
            "session ended"
        );
    })
    .on_accept_error(|error| warn!(error = %error, "accepting a connection failed"));
    if let Some(tls) = &prepared.tls {
        service = service.tls(tls.config.clone());
    }
    service
}

fn run(cli: Cli) -> Result<(), StartupError> {
    let prepared = prepare(cli.settings, cli.config.as_deref())?;
    let descriptors = raise_descriptor_limit();
    if let Some(n) = descriptors.filter(|&n| n < MIN_DESCRIPTORS) {
        // tokio's signal and IO drivers panic when they cannot get theirs.
        return Err(StartupError::os(format!(
            "only {n} open descriptors are allowed (ulimit -n); pop3d needs at least {MIN_DESCRIPTORS}"
        )));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(BLOCKING_THREADS)
        .build()
        .map_err(|e| StartupError::os(format!("cannot start the runtime: {e}")))?;
    if cli.inetd {
        let service = service(&prepared);
        return runtime.block_on(inetd::serve_one(&service));
    }
    runtime.block_on(serve(&prepared, descriptors))?;
    drop(prepared);
    Ok(())
}

/// The fewest open descriptors pop3d starts with: the runtime's own, the
/// listeners, and room for some sessions.
const MIN_DESCRIPTORS: u64 = 64;

/// Raises the soft limit on open descriptors to the hard limit (as
/// Dovecot's master and nginx do): each session holds its socket, and a
/// logged-in Maildir session its lock file and directories too, so the
/// usual soft limit of 1024 would cap sessions far below
/// `--max-connections`. Returns the limit now in force.
fn raise_descriptor_limit() -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            warn!(error = %e, "cannot raise the open-descriptor limit");
        }
    }
    getrlimit(Resource::Nofile).current
}

/// Serves on the listeners until a shutdown signal.
async fn serve(prepared: &Prepared, descriptors: Option<u64>) -> Result<(), StartupError> {
    let service = service(prepared);
    let cli = &prepared.settings;
    // Signals are handled before anyone learns the server is up.
    let shutdown = service.shutdown_handle();
    // Registered now, not when the task first runs, so that a signal
    // right after the ready line is already ours.
    let mut signals =
        Signals::register().map_err(|e| StartupError::os(format!("cannot handle signals: {e}")))?;
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
    // SIGHUP reloads the users file and the certificate; registered before
    // the ready line too.
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|e| StartupError::os(format!("cannot handle SIGHUP: {e}")))?;
    let tls = prepared.tls.clone();
    let reload_users = match &prepared.store {
        Store::Maildir(store) => prepared
            .users_file
            .clone()
            .map(|path| (path, store.clone())),
        Store::Postgres(_) => None,
    };
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            if let Some((path, store)) = &reload_users {
                match load_users(path) {
                    Ok(users) => {
                        info!(users = users.len(), file = %path.display(), "users file reloaded");
                        store.replace_users(users);
                    }
                    Err(e) => error!("users file not reloaded, keeping the old users: {e}"),
                }
            }
            match &tls {
                Some(tls) => tls.reload(),
                None => info!("SIGHUP: no TLS certificate configured, nothing to reload"),
            }
        }
    });
    let mut listeners = Vec::new();
    for passed in activation::passed()? {
        let listener = tokio::net::TcpListener::from_std(passed.listener)
            .map_err(|e| StartupError::os(format!("a passed socket: {e}")))?;
        let bound = listener
            .local_addr()
            .map_err(|e| StartupError::os(e.to_string()))?;
        listeners.push((listener, bound, passed.implicit_tls));
    }
    let activated = !listeners.is_empty();
    // Passed sockets take the place of the default listener; listeners
    // named on the command line or in the settings are added to them.
    let mut wanted = cli.clone();
    if !activated {
        default_listeners(&mut wanted, prepared.tls.is_some());
    }
    for (addr, implicit_tls) in wanted
        .listen
        .iter()
        .map(|a| (a, false))
        .chain(wanted.listen_tls.iter().map(|a| (a, true)))
    {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| StartupError::listen(addr, &e))?;
        let bound = listener
            .local_addr()
            .map_err(|e| StartupError::os(e.to_string()))?;
        listeners.push((listener, bound, implicit_tls));
    }
    if listeners.iter().any(|(_, _, implicit)| *implicit) && prepared.tls.is_none() {
        return Err(StartupError::config(
            "a passed pop3s socket needs a certificate: give --tls-cert and --tls-key",
        ));
    }
    let metrics = match (cli.metrics, &prepared.metrics) {
        (Some(addr), Some(metrics)) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| StartupError::listen(format!("{addr} (metrics)"), &e))?;
            let bound = listener
                .local_addr()
                .map_err(|e| StartupError::os(e.to_string()))?;
            Some((listener, bound, metrics.clone()))
        }
        _ => None,
    };
    announce(
        prepared,
        &listeners,
        metrics.as_ref().map(|(_, bound, _)| *bound),
    );
    if let Some((listener, _, metrics)) = metrics {
        tokio::spawn(metrics::serve(listener, metrics));
    }
    if let Store::Postgres(store) = &prepared.store {
        store.check_schema().await;
    }
    let mut servers = tokio::task::JoinSet::new();
    for (listener, _, implicit_tls) in listeners {
        let service = service.clone();
        servers.spawn(async move {
            let served = if implicit_tls {
                pop3_tokio::serve_tls(&service, listener).await
            } else {
                pop3_tokio::serve(&service, listener).await
            };
            if let Err(e) = served {
                tracing::error!(error = %e, "cannot serve");
            }
        });
    }
    info!(
        maildirs = %prepared.root.display(),
        users = prepared.user_count,
        listeners = servers.len(),
        activated,
        stls = prepared.tls.is_some(),
        descriptors = descriptors.map_or_else(|| "unlimited".to_owned(), |n| n.to_string()),
        "pop3d started"
    );
    while servers.join_next().await.is_some() {}
    info!("stopped");
    Ok(())
}

/// Prints the addresses served (scripts and tests read these lines to
/// learn the ports: plain listeners first) and the demo's hints. A closed
/// stdout is not worth failing for.
fn announce(
    prepared: &Prepared,
    listeners: &[(tokio::net::TcpListener, SocketAddr, bool)],
    metrics: Option<SocketAddr>,
) {
    let mut out = std::io::stdout().lock();
    let mut ordered: Vec<_> = listeners.iter().map(|(_, a, tls)| (*a, *tls)).collect();
    ordered.sort_by_key(|(_, tls)| *tls);
    for (bound, implicit_tls) in &ordered {
        let _ = if *implicit_tls {
            writeln!(out, "pop3d listening for implicit TLS on {bound}")
        } else {
            writeln!(out, "pop3d listening on {bound}")
        };
    }
    if prepared.demo_dir.is_some() {
        let (user, pass) = (demo::USER, demo::PASSWORD);
        let _ = writeln!(
            out,
            "demo maildir {} (user {user}, password {pass}); try:",
            prepared.root.display()
        );
        for (bound, implicit_tls) in &ordered {
            let _ = if *implicit_tls {
                writeln!(out, "  curl -k pop3s://{bound}/ -u {user}:{pass}")
            } else {
                writeln!(
                    out,
                    "  curl -u {user}:{pass} pop3://{bound}/1\n  curl --ssl-reqd -k -u {user}:{pass} pop3://{bound}/1"
                )
            };
        }
        if prepared.tls.is_some() {
            let _ = writeln!(
                out,
                "  (-k: the demo certificate is self-signed, made at start)"
            );
        }
    }
    if let Some(bound) = metrics {
        let _ = writeln!(out, "pop3d metrics on http://{bound}/metrics");
    }
    let _ = out.flush();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_listeners_only_when_none_is_named() {
        let mut none = Settings::default();
        default_listeners(&mut none, true);
        assert_eq!(none.listen, [DEFAULT_LISTEN]);
        assert_eq!(none.listen_tls, [DEFAULT_LISTEN_TLS]);
        let mut plain_only = Settings::default();
        default_listeners(&mut plain_only, false);
        assert_eq!(plain_only.listen, [DEFAULT_LISTEN]);
        assert!(plain_only.listen_tls.is_empty());
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let mut named = Settings {
            listen_tls: vec![addr],
            ..Settings::default()
        };
        default_listeners(&mut named, true);
        assert!(named.listen.is_empty(), "a named listener is all there is");
        assert_eq!(named.listen_tls, [addr]);
    }

    #[test]
    fn proxy_and_metrics_from_the_settings_file() {
        let file: Settings = toml::from_str(
            "proxy-from = [\"10.0.0.0/8\", \"192.0.2.1\"]\nmetrics = \"127.0.0.1:9110\"\n",
        )
        .unwrap();
        let merged = Settings::default().over(file);
        assert_eq!(merged.proxy_from, ["10.0.0.0/8", "192.0.2.1"]);
        assert_eq!(merged.metrics, Some("127.0.0.1:9110".parse().unwrap()));
        let cli = Settings {
            proxy_from: vec!["::1".into()],
            ..Settings::default()
        };
        let file: Settings = toml::from_str("proxy-from = [\"10.0.0.0/8\"]\n").unwrap();
        assert_eq!(cli.over(file).proxy_from, ["::1"], "the command line wins");
    }

    #[test]
    fn policies_from_the_settings_file() {
        let file: Settings = toml::from_str(
            "delete-policy = \"move:.Trash\"\nexpire = 30\nlogin-delay = 300\nmax-failed-logins-per-user = 0\n",
        )
        .unwrap();
        let merged = Settings {
            expire: Some(7),
            ..Settings::default()
        }
        .over(file);
        assert_eq!(
            merged.delete_policy,
            Some(crate::maildir::DeletePolicy::Move(".Trash".into()))
        );
        assert_eq!(merged.expire, Some(7), "the command line wins");
        assert_eq!(merged.login_delay, Some(300));
        assert_eq!(merged.max_failed_logins_per_user, Some(0));
        let bad = toml::from_str::<Settings>("delete-policy = \"move:Trash\"\n");
        assert!(bad.unwrap_err().to_string().contains("Maildir++ folder"));
    }

    #[test]
    fn tls_settings_from_the_settings_file() {
        let file: Settings = toml::from_str(
            "tls-cert = \"/etc/pop3d/chain.pem\"\ntls-key = \"/etc/pop3d/key.pem\"\nlisten-tls = [\"0.0.0.0:995\"]\n",
        )
        .unwrap();
        let merged = Settings::default().over(file);
        assert_eq!(
            merged.tls_cert.as_deref(),
            Some(std::path::Path::new("/etc/pop3d/chain.pem"))
        );
        assert_eq!(
            merged.listen_tls,
            ["0.0.0.0:995".parse::<SocketAddr>().unwrap()]
        );
        assert!(tls_settings(&merged, false)
            .unwrap_err()
            .contains("cannot read /etc/pop3d/chain.pem"));
    }
}
