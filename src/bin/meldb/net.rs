//! `meldb relay`, `meldb serve` and `meldb sync`: the network commands.
//!
//! Each builds a small tokio runtime, logs with tracing to stderr
//! (`MELDB_LOG` filters, default `info` for the servers and `warn` for
//! `sync`), and for the servers prints `listening on ADDR` on stdout once
//! bound, one line per `--listen`, so scripts and tests can use port 0
//! (a bare `HOST:PORT` prints as `HOST:PORT`, a URL as a URL), then, for
//! `meldb relay --admin`, `admin listening on ADDR`. `--log-format json`
//! writes the logs as JSON lines.
//!
//! On SIGHUP (unix) the servers re-read their tokens file and TLS
//! certificate and key ([`Reload`]); a file that does not load is logged
//! and the old tokens or certificate stay in use.

use crate::cli::{LogFormat, NetSyncArgs, RelayArgs, ServeArgs, ServerTlsArgs};
use crate::commands::{load_schema_at, open};
use crate::error::{file_error, in_file, CliError, Result};
use meldb::sync::{
    sync_once_url, AdminConfig, AdminServer, ClientTls, Connector, ContinuousSync, Creation,
    DirectoryProvider, ListenOptions, Namespace, PeerUrl, Relay, RelayConfig, RelayMetrics,
    Reloader, ReplicaProvider, ServerTls, SessionConfig, SharedStore, SyncState, Tokens,
    UrlListener, WriteRate,
};
use meldb::{Durability, StoreOptions};
use std::collections::BTreeSet;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

fn init_logs(default: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MELDB_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second initialization (never in the binary) is harmless.
    let _ = match format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).try_init(),
        LogFormat::Json => logs.json().flatten_event(true).try_init(),
    };
}

/// `meldb relay`.
pub fn relay(args: &RelayArgs, out: &mut dyn Write) -> Result<()> {
    init_logs("info", args.log_format);
    let schema = load_schema_at(args.schema_path())?;
    let options = StoreOptions::new().durability(Durability::Full);
    let tokens = Tokens::load(&args.tokens)?;
    let single_db = args.db.is_some();
    if single_db {
        named_namespaces(&tokens)?;
    }
    if tokens.is_empty() {
        tracing::warn!(file = %args.tokens.display(), "no tokens: every client will be refused");
    }
    let nonzero = |d: Duration| Some(d).filter(|d| !d.is_zero());
    let config = RelayConfig::default()
        .tokens(tokens)
        .max_connections(args.max_connections)
        .max_connections_per_token(args.max_connections_per_token)
        .max_unauthenticated(
            args.max_unauthenticated,
            args.max_unauthenticated_per_address,
        )
        .handshake_timeout(args.handshake_timeout)
        .idle(args.idle_timeout)
        .quiet_timeout(nonzero(args.quiet_timeout))
        .write_timeout(args.write_timeout)
        .write_rate((args.write_rate > 0).then_some(WriteRate {
            per_second: args.write_rate,
            burst: args.write_burst.max(1),
        }))
        .namespace_quota(Some(args.namespace_quota).filter(|&q| q > 0))
        .session(SessionConfig::default().max_lag(
            args.max_lag_batches,
            usize::try_from(args.max_lag_bytes).unwrap_or(usize::MAX),
        ))
        .max_message(args.max_message);
    let config = match args.admin {
        Some(_) => config.metrics(Arc::new(RelayMetrics::new())),
        None => config,
    };
    let admin = args.admin.as_deref();
    let (listen_options, tls) = listen_options(&args.tls)?;
    let listen_options = listen_options.handshake_timeout(config.handshake_timeout);
    let reload = Reload {
        tokens: Some(args.tokens.clone()),
        single_db,
        tls,
    };
    if args.check {
        return check_relay(args, &config, &listen_options, out);
    }
    match (&args.db, &args.data_dir) {
        (Some(db), _) => {
            let store = options.open(db, &schema).map_err(in_file(db))?;
            listen(
                SharedStore::new(store),
                &args.listen,
                listen_options,
                config,
                admin,
                reload,
                out,
            )
        }
        (None, Some(dir)) => {
            let provider = DirectoryProvider::open(dir, &schema, options)?;
            let mut listed = BTreeSet::new();
            for name in &args.namespaces {
                let namespace = Namespace::new(name);
                if provider.path_of(&namespace).is_none() {
                    return Err(CliError::BadNamespace { name: name.clone() });
                }
                listed.insert(namespace);
            }
            let provider = provider.creation(Creation::Listed(listed));
            listen(
                provider,
                &args.listen,
                listen_options,
                config,
                admin,
                reload,
                out,
            )
        }
        // clap requires one of the two.
        (None, None) => Err(CliError::NoDatabase {
            path: std::path::PathBuf::from("(give --db FILE or --data-dir DIR)"),
        }),
    }
}

/// `meldb relay --check`: what would stop the relay from starting, short
/// of opening a database or binding a port (the schema, tokens and TLS
/// files were read by the caller).
fn check_relay(
    args: &RelayArgs,
    config: &RelayConfig,
    options: &ListenOptions,
    out: &mut dyn Write,
) -> Result<()> {
    if let Some(dir) = &args.data_dir {
        for name in &args.namespaces {
            if DirectoryProvider::file_in(dir, &Namespace::new(name)).is_none() {
                return Err(CliError::BadNamespace { name: name.clone() });
            }
        }
    }
    let urls = args
        .listen
        .iter()
        .map(|a| a.parse::<PeerUrl>())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(meldb::sync::SyncError::from)?;
    UrlListener::check(&urls, options)?;
    let tokens = config.tokens.as_ref().map_or(0, |t| t.len());
    writeln!(
        out,
        "config ok: {tokens} tokens; would listen on {}",
        args.listen.join(", ")
    )?;
    Ok(())
}

/// `meldb serve`.
pub fn serve(args: &ServeArgs, out: &mut dyn Write) -> Result<()> {
    init_logs("info", args.log_format);
    let store = open(&args.db)?;
    // One direct peer, often the user's own: no write rate, no quota.
    let mut config = RelayConfig::default()
        .write_rate(None)
        .namespace_quota(None);
    if let Some(path) = &args.tokens {
        config = config.tokens(Tokens::load(path)?);
    }
    let (options, tls) = listen_options(&args.tls)?;
    let reload = Reload {
        tokens: args.tokens.clone(),
        single_db: true,
        tls,
    };
    listen(
        SharedStore::new(store),
        &args.listen,
        options,
        config,
        None,
        reload,
        out,
    )
}

/// With one database for every client, tokens may not name namespaces.
fn named_namespaces(tokens: &Tokens) -> Result<()> {
    let named: Vec<String> = tokens
        .namespaces()
        .iter()
        .filter(|n| **n != Namespace::default())
        .map(|n| format!("{:?}", n.as_str()))
        .collect();
    if named.is_empty() {
        return Ok(());
    }
    Err(CliError::NamespacesNeedDataDir {
        names: named.join(", "),
    })
}

/// The certificate and key, read (and checked) before anything listens,
/// and where they came from, for reloads.
fn listen_options(tls: &ServerTlsArgs) -> Result<(ListenOptions, Option<TlsFiles>)> {
    let options = ListenOptions::new();
    Ok(match (&tls.tls_cert, &tls.tls_key) {
        (Some(cert), Some(key)) => {
            let served =
                ServerTls::from_pem_files(cert, key).map_err(meldb::sync::SyncError::from)?;
            let files = TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                served: served.clone(),
            };
            (options.tls(served), Some(files))
        }
        _ => (options, None),
    })
}

/// A TLS listener's files and the identity they are served as.
struct TlsFiles {
    cert: PathBuf,
    key: PathBuf,
    served: ServerTls,
}

/// What a SIGHUP re-reads.
struct Reload {
    /// The tokens file, if the server has one.
    tokens: Option<PathBuf>,
    /// One database for every token (`--db`, `meldb serve`): tokens that
    /// name namespaces are refused.
    single_db: bool,
    tls: Option<TlsFiles>,
}

impl Reload {
    /// Re-reads every file; what does not load is logged and left as it
    /// was, so a bad edit neither stops the server nor opens it up.
    fn reload(&self, reloader: &Reloader) {
        if let Some(path) = &self.tokens {
            let loaded = Tokens::load(path)
                .map_err(CliError::from)
                .and_then(|tokens| {
                    if self.single_db {
                        named_namespaces(&tokens)?;
                    }
                    Ok(tokens)
                });
            match loaded {
                Ok(tokens) => {
                    let count = tokens.len();
                    reloader.set_tokens(tokens);
                    tracing::info!(file = %path.display(), tokens = count, "tokens reloaded");
                }
                Err(e) => tracing::error!(
                    file = %path.display(),
                    error = %e,
                    "tokens not reloaded: keeping the old ones"
                ),
            }
        }
        if let Some(tls) = &self.tls {
            match ServerTls::from_pem_files(&tls.cert, &tls.key) {
                Ok(fresh) => {
                    tls.served.replace(&fresh);
                    tracing::info!(cert = %tls.cert.display(), "TLS certificate reloaded");
                }
                Err(e) => tracing::error!(
                    cert = %tls.cert.display(),
                    key = %tls.key.display(),
                    error = %e,
                    "TLS certificate not reloaded: keeping the old one"
                ),
            }
        }
    }
}

/// Reloads on every SIGHUP until the process ends. The handler is set
/// before the server says it listens, so a SIGHUP never kills it.
#[cfg(unix)]
fn reload_on_hangup(reload: Reload, reloader: Reloader) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the tokens and TLS certificate");
            reload.reload(&reloader);
        }
    });
    Ok(())
}

#[cfg(not(unix))]
fn reload_on_hangup(_reload: Reload, _reloader: Reloader) -> Result<()> {
    Ok(())
}

/// Serves `store` on `addrs`, and `config`'s metrics on `admin` if given.
fn listen<P: ReplicaProvider>(
    store: P,
    addrs: &[String],
    options: ListenOptions,
    config: RelayConfig,
    admin: Option<&str>,
    reload: Reload,
    out: &mut dyn Write,
) -> Result<()> {
    let urls = addrs
        .iter()
        .map(|a| a.parse::<PeerUrl>())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(meldb::sync::SyncError::from)?;
    runtime()?.block_on(async {
        let listener = UrlListener::bind(&urls, &options).await?;
        let local = listener.local_urls();
        let metrics = config.metrics.clone();
        let relay = Relay::new(store, listener, config);
        reload_on_hangup(reload, relay.reloader())?;
        for (given, url) in addrs.iter().zip(local) {
            if given.contains("://") {
                writeln!(out, "listening on {url}")?;
            } else {
                writeln!(out, "listening on {}", url.authority())?;
            }
        }
        // The admin server answers (/healthz: 503) until the relay drained.
        let (admin_stop, admin_shutdown) = watch::channel(false);
        if let (Some(addr), Some(metrics)) = (admin, &metrics) {
            let server = AdminServer::bind(addr, Arc::clone(metrics), AdminConfig::default())
                .await
                .map_err(|e| CliError::Admin {
                    addr: addr.to_string(),
                    error: Box::new(e),
                })?;
            writeln!(out, "admin listening on {}", server.local_addr()?)?;
            tokio::spawn(server.run(admin_shutdown));
        }
        out.flush()?;
        let (stop, shutdown) = watch::channel(false);
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("signal received, shutting down");
            let _ = stop.send(true);
        });
        let served = relay.run(shutdown).await;
        let _ = admin_stop.send(true);
        served?;
        Ok(())
    })
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// `meldb sync`.
pub fn sync(args: &NetSyncArgs, out: &mut dyn Write) -> Result<()> {
    // A continuous sync reports its errors in its status lines.
    init_logs(
        if args.continuous { "error" } else { "warn" },
        LogFormat::Text,
    );
    let store = SharedStore::new(open(&args.db)?);
    let url: PeerUrl = args.peer.parse().map_err(meldb::sync::SyncError::from)?;
    let mut connector = Connector::new();
    if let Some(ca) = &args.ca {
        connector =
            connector.tls(ClientTls::with_ca_file(ca).map_err(meldb::sync::SyncError::from)?);
    }
    let config = SessionConfig::default()
        .token(token(args)?)
        .namespace(args.namespace.clone());
    if args.continuous {
        return continuous(store, url, connector, config, out);
    }
    let report = runtime()?.block_on(sync_once_url(&store, &url, config, &connector))?;
    let stats = report.stats;
    writeln!(
        out,
        "sent {} rows, received {} rows ({} changed this replica)",
        stats.rows_sent, stats.rows_received, stats.rows_applied
    )?;
    if report.peer.is_some_and(|p| !p.accepts_changes) {
        writeln!(
            out,
            "note: the peer does not accept changes from this token (read-only): local changes were not sent"
        )?;
    }
    if stats.mutations_pushed > 0 || stats.mutations_acknowledged > 0 {
        writeln!(
            out,
            "mutations: {} pushed, {} settled by the authority ({} refused)",
            stats.mutations_pushed, stats.mutations_acknowledged, stats.mutations_rejected
        )?;
        if stats.mutations_rejected > 0 {
            for m in store.lock().mutation_failures()? {
                writeln!(out, "mutation refused: {} #{}: {}", m.name, m.id, m.error)?;
            }
        }
    }
    if stats.rejections_received > 0 {
        for r in store.lock().rejections()? {
            writeln!(out, "rejected: {} {}: {}", r.table, r.key, r.reason)?;
        }
    }
    Ok(())
}

/// `meldb sync --continuous`: syncs until a signal, one stderr line per
/// change of status, then what moved on stdout.
fn continuous(
    store: SharedStore,
    url: PeerUrl,
    connector: Connector,
    config: SessionConfig,
    out: &mut dyn Write,
) -> Result<()> {
    let reports = runtime()?.block_on(async {
        let sync = ContinuousSync::new(store, url.clone())
            .connector(connector)
            .config(config);
        let mut status = sync.status();
        let (stop, shutdown) = watch::channel(false);
        tokio::spawn(async move {
            wait_for_signal().await;
            let _ = stop.send(true);
        });
        let run = tokio::spawn(sync.run(shutdown));
        let mut last = String::new();
        loop {
            let (line, stopped) = {
                let now = status.borrow_and_update();
                (now.to_string(), matches!(now.state, SyncState::Stopped))
            };
            if line != last {
                eprintln!("sync {url}: {line}");
                last = line;
            }
            if stopped || status.changed().await.is_err() {
                break;
            }
        }
        run.await
            .map_err(|e| meldb::sync::SyncError::Io(std::io::Error::other(e)))
    })?;
    let sum = |f: fn(&meldb::sync::SyncStats) -> u64| -> u64 {
        reports.iter().map(|r| f(&r.stats)).sum()
    };
    writeln!(
        out,
        "sent {} rows, received {} rows ({} changed this replica) in {} that ended cleanly",
        sum(|s| s.rows_sent),
        sum(|s| s.rows_received),
        sum(|s| s.rows_applied),
        crate::output::count(reports.len(), "session")
    )?;
    Ok(())
}

/// The token from `--token`, `--token-file` or `--token-env` (at most one).
fn token(args: &NetSyncArgs) -> Result<Option<String>> {
    let (token, origin) = if let Some(path) = &args.token_file {
        let text = std::fs::read_to_string(path).map_err(file_error(path))?;
        (text, format!("token file {}", path.display()))
    } else if let Some(var) = &args.token_env {
        let value = std::env::var(var).map_err(|e| CliError::TokenEnv {
            var: var.clone(),
            problem: match e {
                std::env::VarError::NotPresent => "not set".into(),
                std::env::VarError::NotUnicode(_) => "not valid UTF-8".into(),
            },
        })?;
        (value, format!("environment variable {var}"))
    } else {
        return Ok(args.token.clone());
    };
    let token = token.trim();
    if token.is_empty() {
        return Err(CliError::EmptyToken { origin });
    }
    Ok(Some(token.to_string()))
}
