//! The subcommands that manage a database store: `pop3d db migrate`,
//! `pop3d user add|remove|list|import`, `pop3d deliver`.
//!
//! Exit statuses follow sysexits: 0 done, 67 (`EX_NOUSER`) no such user,
//! 75 (`EX_TEMPFAIL`) the database failed (try again), 65 (`EX_DATAERR`)
//! bad input, 1 anything else.

use std::io::BufRead as _;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::postgres::{self, accounts, delivery, schema};
use crate::users::{self, Stored, Users};

/// sysexits' `EX_DATAERR`.
const EX_DATAERR: u8 = 65;
/// sysexits' `EX_NOUSER`.
const EX_NOUSER: u8 = 67;
/// sysexits' `EX_TEMPFAIL`.
const EX_TEMPFAIL: u8 = 75;

/// `pop3d db ...`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum DbCommand {
    /// Create the schema, or apply the migrations it lacks (safe to run
    /// again, and from several machines at once).
    Migrate {
        /// The database (as pop3d --store).
        #[arg(long, value_name = "URL")]
        store: String,
    },
}

/// `pop3d user ...`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum UserCommand {
    /// Add USER (or replace their password) with the password read on
    /// standard input, hashed as `pop3d passwd` does.
    Add {
        /// The database (as pop3d --store).
        #[arg(long, value_name = "URL")]
        store: String,
        /// How to store the password.
        #[arg(long, value_enum, default_value_t)]
        scheme: users::Scheme,
        /// The user name.
        user: String,
    },
    /// Remove USER with all their messages.
    Remove {
        /// The database (as pop3d --store).
        #[arg(long, value_name = "URL")]
        store: String,
        /// The user name.
        user: String,
    },
    /// List the users: name, password scheme, messages, octets.
    List {
        /// The database (as pop3d --store).
        #[arg(long, value_name = "URL")]
        store: String,
    },
    /// Add every user of a users file (Dovecot passwd-file format, as
    /// --users reads), replacing the passwords of users already there.
    Import {
        /// The database (as pop3d --store).
        #[arg(long, value_name = "URL")]
        store: String,
        /// The users file.
        file: PathBuf,
    },
}

/// A failure of a subcommand: what to say and the exit status.
struct Failure(u8, String);

impl From<postgres::DbError> for Failure {
    fn from(e: postgres::DbError) -> Self {
        Self(EX_TEMPFAIL, e.to_string())
    }
}

impl From<deadpool_postgres::PoolError> for Failure {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        postgres::DbError::from(e).into()
    }
}

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Self {
        Self(EX_TEMPFAIL, format!("database: {e}"))
    }
}

/// Runs `work` against a pool on `url` on a runtime of its own, and turns
/// its outcome into an exit status (a failure said on standard error).
fn run<F>(name: &str, url: &str, work: impl FnOnce(deadpool_postgres::Pool) -> F) -> ExitCode
where
    F: std::future::Future<Output = Result<(), Failure>>,
{
    let outcome = (|| {
        let pool = postgres::pool(url, 2).map_err(|e| Failure(1, e))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Failure(1, format!("cannot start the runtime: {e}")))?;
        runtime.block_on(work(pool))
    })();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(status, text)) => {
            eprintln!("pop3d {name}: {text}");
            ExitCode::from(status)
        }
    }
}

/// `pop3d db migrate`.
pub(crate) fn db(command: DbCommand) -> ExitCode {
    let DbCommand::Migrate { store } = command;
    run("db migrate", &store, |pool| async move {
        let mut client = pool.get().await?;
        let applied = schema::migrate(&mut client).await?;
        if applied.is_empty() {
            println!("schema up to date (version {})", schema::LATEST);
        } else {
            for version in applied {
                println!("applied migration {version}");
            }
        }
        Ok(())
    })
}

/// Reads one line (a password) from standard input.
fn read_password() -> Result<String, Failure> {
    let mut password = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut password)
        .map_err(|e| Failure(1, format!("cannot read the password: {e}")))?;
    let password = password.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        return Err(Failure(EX_DATAERR, "empty password".into()));
    }
    Ok(password.to_owned())
}

/// `pop3d user ...`.
pub(crate) fn user(command: UserCommand) -> ExitCode {
    match command {
        UserCommand::Add {
            store,
            scheme,
            user,
        } => {
            let stored = read_password().and_then(|password| {
                let line = users::passwd_line(&user, &password, scheme)
                    .map_err(|e| Failure(EX_DATAERR, e))?;
                let field = line.split_once(':').map_or("", |(_, f)| f);
                Stored::parse(field).map_err(|e| Failure(1, e.to_string()))
            });
            let stored = match stored {
                Ok(stored) => stored,
                Err(Failure(status, text)) => {
                    eprintln!("pop3d user add: {text}");
                    return ExitCode::from(status);
                }
            };
            run("user add", &store, |pool| async move {
                let client = pool.get().await?;
                match accounts::add(&**client, &user, &stored).await? {
                    accounts::Added::Created => println!("added user {user}"),
                    accounts::Added::Updated => println!("replaced the password of {user}"),
                }
                Ok(())
            })
        }
        UserCommand::Remove { store, user } => run("user remove", &store, |pool| async move {
            let client = pool.get().await?;
            if accounts::remove(&client, &user).await? {
                println!("removed user {user}");
                Ok(())
            } else {
                Err(Failure(EX_NOUSER, format!("no user {user}")))
            }
        }),
        UserCommand::List { store } => run("user list", &store, |pool| async move {
            let client = pool.get().await?;
            for u in accounts::list(&client).await? {
                println!("{}\t{}\t{}\t{}", u.name, u.scheme, u.messages, u.octets);
            }
            Ok(())
        }),
        UserCommand::Import { store, file } => {
            let loaded = match Users::load(&file) {
                Ok(loaded) => loaded,
                Err(e) => {
                    eprintln!("pop3d user import: {e}");
                    return ExitCode::from(EX_DATAERR);
                }
            };
            for (line, why) in &loaded.skipped {
                eprintln!(
                    "pop3d user import: {}:{line}: {why}; not imported",
                    file.display()
                );
            }
            run("user import", &store, |pool| async move {
                let mut client = pool.get().await?;
                let (created, updated) = accounts::import(&mut client, &loaded.users).await?;
                println!("imported {created} new users, replaced {updated} passwords");
                Ok(())
            })
        }
    }
}

/// `pop3d deliver --store URL USER < message`.
pub(crate) fn deliver(store: &str, user: &str) -> ExitCode {
    run("deliver", store, |pool| async move {
        let blobs = postgres::blobs(&pool);
        let mut client = pool.get().await?;
        match delivery::deliver(&mut client, &blobs, user, None, tokio::io::stdin()).await {
            Ok(_) => Ok(()),
            Err(delivery::DeliveryError::NoUser) => {
                Err(Failure(EX_NOUSER, format!("no such user {user}")))
            }
            Err(e @ delivery::DeliveryError::Read(_)) => Err(Failure(EX_TEMPFAIL, e.to_string())),
            Err(e @ (delivery::DeliveryError::UidlTaken(_) | delivery::DeliveryError::TooBig)) => {
                Err(Failure(EX_DATAERR, e.to_string()))
            }
            Err(delivery::DeliveryError::Db(e)) => Err(e.into()),
        }
    })
}

/// `pop3d import --store URL --maildir-root DIR`: every Maildir under
/// `root` whose user is in the database, with the unique ids pop3d served
/// it with (`uidl_source` for messages it never listed, as
/// `--uidl-source`). A message whose id the user already has is skipped:
/// importing again adds only what is new, and a message deleted since an
/// earlier import is not brought back.
pub(crate) fn import(
    store: &str,
    root: &std::path::Path,
    uidl_source: crate::maildir::UidlSource,
) -> ExitCode {
    use crate::maildir::{Export, Maildirs};
    run("import", store, |pool| async move {
        let mut client = pool.get().await?;
        let known: std::collections::HashSet<String> = accounts::list(&client)
            .await?
            .into_iter()
            .map(|u| u.name)
            .collect();
        let maildirs = Maildirs::new(
            root.to_owned(),
            Users::default(),
            uidl_source,
            None,
            crate::maildir::Policy::default(),
        );
        let mut dirs: Vec<String> = std::fs::read_dir(root)
            .map_err(|e| Failure(EX_DATAERR, format!("{}: {e}", root.display())))?
            .flatten()
            .filter(|e| e.path().join("cur").is_dir())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|name| users::valid_user(name))
            .collect();
        dirs.sort();
        let blobs = postgres::blobs(&pool);
        let mut failed = false;
        for user in dirs {
            if !known.contains(&user) {
                eprintln!("pop3d import: {user}: not a user in the database (pop3d user add or import first); skipped");
                continue;
            }
            let export = Export::lock(&maildirs, &user)
                .map_err(|e| Failure(EX_TEMPFAIL, format!("{user}: {e}")))?;
            let (mut imported, mut skipped) = (0, 0);
            for (i, uid) in export.uids().iter().enumerate() {
                let file = match export.open(i) {
                    Ok(file) => tokio::fs::File::from_std(file),
                    Err(e) => {
                        eprintln!("pop3d import: {user}: message {uid}: {e}; skipped");
                        failed = true;
                        continue;
                    }
                };
                match delivery::deliver(&mut client, &blobs, &user, Some(uid.as_str()), file).await
                {
                    Ok(_) => imported += 1,
                    Err(delivery::DeliveryError::UidlTaken(_)) => skipped += 1,
                    Err(delivery::DeliveryError::Db(e)) => return Err(e.into()),
                    Err(e) => {
                        eprintln!("pop3d import: {user}: message {uid}: {e}; skipped");
                        failed = true;
                    }
                }
            }
            println!("{user}: {imported} messages imported, {skipped} already there");
        }
        if failed {
            Err(Failure(
                EX_DATAERR,
                "some messages were not imported (see above)".into(),
            ))
        } else {
            Ok(())
        }
    })
}
