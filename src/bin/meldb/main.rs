//! The `meldb` command line: create a replica, write and query it, move
//! changes between replicas as files or over the network (`relay`, `serve`,
//! `sync`), and run the demo (`meldb demo`).
//!
//! Exit status: 0 on success, 1 on a runtime error (`error: ...` on
//! stderr), 2 on bad arguments (clap's usage message).

#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used)]

mod backup;
mod bench;
mod cli;
mod commands;
mod config;
mod conflicts;
mod demo;
mod error;
mod net;
mod output;
mod pending;
mod probe;
mod sync;
mod token;
mod values;

use clap::error::ErrorKind;
use clap::CommandFactory;
use cli::{Cli, Command, DbArgs};
use error::Result;
use std::io::{BufWriter, Write};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = config::parse();
    require_schema(&cli.command);
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let result = run(cli, &mut out).and_then(|()| Ok(out.flush()?));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is_broken_pipe() => ExitCode::SUCCESS,
        Err(e) => {
            // Whatever was printed before the error still goes out first.
            let _ = out.flush();
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli, out: &mut dyn Write) -> Result<()> {
    let verbose = cli.verbose;
    match &cli.command {
        Command::Init(a) => commands::init(a, out),
        Command::Insert(a) => commands::insert(a, false, verbose, out),
        Command::Upsert(a) => commands::insert(a, true, verbose, out),
        Command::Update(a) => commands::update(a, verbose, out),
        Command::Increment(a) => commands::increment(a, verbose, out),
        Command::SetAdd(a) => commands::set_op(a, true, verbose, out),
        Command::SetRemove(a) => commands::set_op(a, false, verbose, out),
        Command::Delete(a) => commands::delete(a, verbose, out),
        Command::Query(a) => commands::query(a, out),
        Command::Export(a) => sync::export(a, out),
        Command::Import(a) => sync::import(a, out),
        Command::Info(a) => sync::info(a, out),
        Command::Pending(a) => pending::pending(a, out),
        Command::Vv(a) => sync::vv(a, out),
        Command::Digest(a) => sync::digest(a, out),
        Command::RotateSiteId(a) => sync::rotate_site_id(a, out),
        Command::Relay(a) => net::relay(a, out),
        Command::Serve(a) => net::serve(a, out),
        Command::Sync(a) => net::sync(a, out),
        Command::Conflicts(a) => conflicts::conflicts(a, out),
        Command::Demo(a) => demo::run(a, out),
        Command::Token(cli::TokenCommand::Add(a)) => token::add(a, out),
        Command::Token(cli::TokenCommand::Remove(a)) => token::remove(a, out),
        Command::Backup(a) => backup::backup(a, out),
        Command::BenchRelay(a) => bench::run(a, out),
    }
}

/// The schema file a command that opens a database names (or the
/// environment does), if it opens one.
fn schema_of(command: &Command) -> Option<(&'static str, Option<std::path::PathBuf>)> {
    if let Command::Relay(a) = command {
        return Some(("relay", a.schema_path()));
    }
    let (name, db) = db_args(command)?;
    Some((name, db.schema_path()))
}

/// The database arguments of a command, if it opens one (the relay's are
/// its own: one file or a directory).
fn db_args(command: &Command) -> Option<(&'static str, &DbArgs)> {
    Some(match command {
        Command::Init(a) => ("init", &a.db),
        Command::Insert(a) => ("insert", &a.db),
        Command::Upsert(a) => ("upsert", &a.db),
        Command::Update(a) => ("update", &a.row.db),
        Command::Increment(a) => ("increment", &a.row.db),
        Command::SetAdd(a) => ("set-add", &a.row.db),
        Command::SetRemove(a) => ("set-remove", &a.row.db),
        Command::Delete(a) => ("delete", &a.db),
        Command::Query(a) => ("query", &a.db),
        Command::Export(a) => ("export", &a.db),
        Command::Import(a) => ("import", &a.db),
        Command::Info(a) => ("info", &a.db),
        Command::Pending(a) => ("pending", &a.db),
        Command::Vv(a) => ("vv", a),
        Command::Digest(a) => ("digest", a),
        Command::RotateSiteId(a) => ("rotate-site-id", a),
        Command::Relay(_) => return None,
        Command::Serve(a) => ("serve", &a.db),
        Command::Sync(a) => ("sync", &a.db),
        Command::Conflicts(a) => ("conflicts", &a.db),
        Command::Demo(_) | Command::Token(_) | Command::Backup(_) | Command::BenchRelay(_) => {
            return None
        }
    })
}

/// A missing schema is a usage error (exit 2), like any missing argument;
/// it can only be checked after parsing because `MELDB_SCHEMA` may supply it.
fn require_schema(command: &Command) {
    let Some((name, schema)) = schema_of(command) else {
        return;
    };
    if schema.is_some() {
        return;
    }
    let mut cmd = Cli::command();
    cmd.build();
    let message = "the following required argument was not provided:\n  \
                   --schema <SCHEMA.toml>  (or set MELDB_SCHEMA)";
    match cmd.find_subcommand_mut(name) {
        Some(sub) => sub
            .error(ErrorKind::MissingRequiredArgument, message)
            .exit(),
        None => cmd
            .error(ErrorKind::MissingRequiredArgument, message)
            .exit(),
    }
}
