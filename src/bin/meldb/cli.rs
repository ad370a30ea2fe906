//! Command-line arguments (clap derive). Every command that opens a database
//! takes `--db FILE --schema SCHEMA.toml`; the schema may also come from the
//! `MELDB_SCHEMA` environment variable (see [`DbArgs::schema_path`]).

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

/// The environment variable read when `--schema` is not given.
pub const SCHEMA_ENV: &str = "MELDB_SCHEMA";

#[derive(Debug, Parser)]
#[command(
    name = "meldb",
    version,
    about = "An embedded SQLite database whose columns declare how concurrent edits merge",
    long_about = "meldb keeps one replica of an app's data in an SQLite file. Each column of the \
schema says how concurrent edits merge (lww, g_counter, pn_counter, or_set), so replicas that \
write while offline converge when they exchange changes.\n\n\
Writes run as one transaction each and print nothing on success (use --verbose). Runtime errors \
print `error: ...` on stderr and exit with 1; bad arguments exit with 2.\n\n\
Start with `meldb demo` to watch three shop tills sell the same stock offline and converge.",
    after_help = "The schema file can also be given with the MELDB_SCHEMA environment variable."
)]
pub struct Cli {
    /// Print what each write did (the row as it is afterwards).
    #[arg(short, long, global = true)]
    pub verbose: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a database for a schema (or open an existing one and say so).
    #[command(
        long_about = "Create a database for a schema, or open an existing one with the same (or \
an upgraded) schema. Prints `created` or `opened`, the schema and the site id."
    )]
    Init(InitArgs),

    /// Insert a row: every key column is required; it fails if the key exists.
    #[command(
        long_about = "Insert a row. Give every primary-key column and any other columns \
as COLUMN=VALUE. Values are parsed by the column's declared type: integer, real, text as is, \
blob as x'00ff'; the literal NULL is SQL NULL. Counter values are initial increments; an or_set \
value is a JSON array of strings, e.g. tags='[\"a\",\"b\"]'. Fails if a live row has the key."
    )]
    Insert(RowArgs),

    /// Insert a row, or update the given columns if the key exists.
    #[command(
        long_about = "Insert a row, or update the given columns of the existing row with \
that key. Counter columns are refused, on a new row as on an existing one: create the row \
with `insert` (counter values there are initial increments), then use `increment`."
    )]
    Upsert(RowArgs),

    /// Set columns of an existing row (lww values; an or_set becomes the given array).
    Update(UpdateArgs),

    /// Add AMOUNT to a counter column (negative amounts for pn_counter columns).
    #[command(allow_negative_numbers = true)]
    Increment(IncrementArgs),

    /// Add an element to an or_set column.
    SetAdd(SetArgs),

    /// Remove an element from an or_set column (a concurrent add elsewhere wins).
    SetRemove(SetArgs),

    /// Delete a row (a concurrent update elsewhere is dropped with it).
    Delete(KeyArgs),

    /// Run one read-only SQL statement and print the rows as a table.
    #[command(
        long_about = "Run one read-only SQL statement and print the result as an aligned \
table with a header, or with --json as one JSON object per line. Every schema table is a view \
of its live rows; counters read as integers, or_sets as sorted JSON arrays. Statements that could \
write are refused: write through insert, update, increment and the other commands."
    )]
    Query(QueryArgs),

    /// Write the changes another replica lacks to a file (a changeset frame).
    #[command(
        long_about = "Write the changes a replica lacks to FILE as one encoded changeset \
frame. With --since VV.json (the JSON printed by `meldb vv` on the receiving replica) only what \
it lacks is written; without it, everything. Prints the number of rows and bytes."
    )]
    Export(ExportArgs),

    /// Apply a changeset frame written by `export` and print what it did.
    #[command(
        long_about = "Apply a changeset frame written by `meldb export` in one \
transaction and print the report: rows that fast-forwarded, were concurrent (merged), were \
already seen, were held because the writer's clock is too far ahead, or were released from an \
earlier hold. A corrupt or foreign file is an error and changes nothing."
    )]
    Import(ImportArgs),

    /// Show the site id, digest, clock, version vector, row counts and what waits.
    #[command(
        long_about = "Show the database, schema, site id, state digest, hybrid logical clock \
(physical_ms.logical), rows held back for a clock too far ahead, mutations pending for the \
authority, refused mutations not yet acknowledged, deferred conflicts, live rows per table and \
the version vector. --json prints one object; its clock is {\"hlc\": \"DECIMAL\", \
\"physical_ms\": N, \"logical\": N}, the packed clock as a string because it is above 2^53."
    )]
    Info(InfoArgs),

    /// List mutations waiting for the authority and those it refused.
    #[command(
        long_about = "List this replica's mutations that wait for the authority (state \
`pending`, with their arguments as queued) and those the authority refused and the app has \
not acknowledged yet (state `refused`, with its reason; a refused mutation's arguments are not \
kept), oldest first. --json prints one object per mutation: id, state, name, args (JSON, null \
when refused), reason (null when pending)."
    )]
    Pending(PendingArgs),

    /// Print the version vector as JSON (what `export --since` reads).
    Vv(DbArgs),

    /// Print the state digest in hex: equal digests mean equal replicas.
    Digest(DbArgs),

    /// Give the replica a new site id, keeping its data (after a restore from backup).
    #[command(
        long_about = "Give the replica a new site id, keeping its data. Needed when the \
database file was restored from a backup or copied to another device: `import` then fails \
with \"a peer has seen write N of this replica\", because new writes would reuse numbers \
peers already have. After rotating, export everything (no --since) to each peer once."
    )]
    RotateSiteId(DbArgs),

    /// Run a relay: a server replica many clients sync through (until ctrl-c).
    #[command(
        long_about = "Run a relay: an always-on replica that clients sync with over TCP, TLS or \
WebSocket (--listen HOST:PORT, tls://HOST:PORT with --tls-cert and --tls-key, ws:// or \
wss://HOST:PORT/PATH; repeat --listen for several). It creates the database if needed, prints \
`listening on ADDR` for each (use port 0 for any free port), \
persists every batch a client sends before acknowledging it, and forwards new changes to every \
connected client. Clients authenticate with a token from the --tokens file (TOML, one \
[[token]] with name, token and access = \"read-write\" or \"read-only\" per client). Sockets \
that have not said hello with a valid token count against --max-unauthenticated (and per \
address), never against --max-connections, and are dropped at --handshake-timeout (counted \
from accept, TLS included); one token holds at most --max-connections-per-token; each token's \
writes are held to --write-rate and the database to --namespace-quota (a refused batch is not \
written, and the client is told why). Flags can come from a TOML file (--config FILE). On \
SIGHUP it re-reads the tokens file and the TLS certificate and key: sessions of removed or \
narrowed tokens are closed, and a file that does not load keeps the old ones. Logs go to stderr (filter with MELDB_LOG, e.g. MELDB_LOG=debug). Ctrl-c or SIGTERM shuts it down \
gracefully."
    )]
    Relay(RelayArgs),

    /// Let a replica accept direct peer connections (until ctrl-c).
    #[command(
        long_about = "Serve an existing replica to peers over TCP, TLS or WebSocket (--listen as \
for the relay), the same protocol as the relay: a peer runs `meldb sync --peer URL` against it. \
Prints `listening on ADDR`. Without \
--tokens every peer may read and write: use it on a trusted network only."
    )]
    Serve(ServeArgs),

    /// Sync a replica with a peer or a relay (TCP, TLS or WebSocket), both ways, once.
    #[command(
        long_about = "Connect to a relay (`meldb relay`) or a peer (`meldb serve`), send what \
it lacks and receive what this replica lacks, in batches each applied in one transaction, then \
print what moved: `sent N rows, received M rows (K changed this replica)`. An interrupted sync \
loses nothing; the next one moves only what is still missing. --peer is HOST:PORT for TCP or a \
URL: tls://HOST:PORT, ws://HOST:PORT/PATH, wss://HOST:PORT/PATH; TLS trusts the system's roots, \
or only --ca FILE. Give the token with --token-file or --token-env rather than --token, which \
other users can read in `ps`."
    )]
    Sync(NetSyncArgs),
    /// Show the conflict log: counts per table and outcome, or the entries.
    #[command(
        long_about = "Show the conflict log that every concurrent change leaves. Without \
options: how many conflicts each table had, per outcome (auto_merged, accepted, merged, \
kept_local, rejected, deferred). --list N prints the latest N entries with the resolver and \
reason; --deferred prints the conflicts waiting for a person (a resolver deferred them), each \
with its id, the resolver and its reason, who wrote the incoming change, both versions, the \
merge and the row shown while it waits, as JSON. --resolve ID --keep local|incoming|merged \
settles one: the columns the versions disagree on take that version's values, written as a \
new change that syncs to every replica, and the conflict closes. --table and --outcome filter. The log is the table \
meldb_conflicts: `meldb query` reads it too."
    )]
    Conflicts(ConflictsArgs),

    /// Run a scripted demo: shop tills sell the same stock offline, then converge.
    #[command(
        long_about = "Run a scripted demo with the built-in inventory schema: N shop \
tills (replicas) get the same items, sell and restock them while offline (the last units \
included), then exchange encoded changesets. It prints each till's view, the converged table, \
the digests (and exits non-zero if they differ), and what last-writer-wins would have lost. \
Needs no arguments; stores are in memory unless --dir is given."
    )]
    Demo(DemoArgs),

    /// Manage a relay's tokens file.
    #[command(subcommand)]
    Token(TokenCommand),

    /// Copy a live database (or one namespace of a relay) to a new file, while it keeps serving.
    #[command(
        long_about = "Copy a meldb database to a new file with SQLite's online backup, while other processes (a running `meldb relay`) keep reading and writing it: --db FILE, or a relay's namespace with --data-dir DIR --namespace NAME (the file DIR/NAME.db). The copy is one snapshot of everything committed when it began. It is written to a hidden temporary file beside --to, checked (SQLite's integrity check, meldb's format), synced to disk and only then given its name, so a crash never leaves a half backup under that name; an existing --to is never overwritten. Needs no schema. Prints what was copied. The backup keeps the source's site id: restore it in place of the original (stop the relay, copy the file back); to use it beside the original, run `meldb rotate-site-id` on it first."
    )]
    Backup(BackupArgs),

    /// Load-test a relay: N clients writing on shared keys, latency, CPU, memory, convergence.
    #[command(
        long_about = "Load-test a relay over real TCP sockets. --clients in-memory replicas stay \
connected (continuous sync) and write on --keys shared rows of a fixed table (lww sets, \
pn_counter increments, or_set adds) at fixed times drawn from --seed, --rate writes/s in total \
(or --rate-per-client) for --duration; --idle more connections only authenticate and wait. \
Without --url the relay runs in this process on 127.0.0.1 (a file database in the temporary \
directory, removed after); with --url it is yours, started with the bench's schema \
(--print-schema) and a read-write --token (--relay-pid PID adds its CPU time and peak RSS). \
Prints write-to-arrival latency at every other client (p50, p90, p99, max), writes/s achieved, \
relay CPU time and peak RSS, relay bytes per write, and what had not arrived --deadline after \
the last write; then checks convergence (equal digests, counter sums and set contents as issued) \
and exits 1 if it failed. Speed is reported, never judged."
    )]
    BenchRelay(BenchRelayArgs),
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The database file to back up.
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "data_dir",
        conflicts_with = "data_dir"
    )]
    pub db: Option<PathBuf>,

    /// A relay's data directory (`meldb relay --data-dir`); back up its --namespace.
    #[arg(long, value_name = "DIR", requires = "namespace")]
    pub data_dir: Option<PathBuf>,

    /// With --data-dir: the namespace to back up (its database is DIR/NAME.db).
    #[arg(long, value_name = "NAME", requires = "data_dir")]
    pub namespace: Option<String>,

    /// The backup file to write; it must not exist.
    #[arg(long, value_name = "FILE")]
    pub to: PathBuf,

    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ConflictsArgs {
    #[command(flatten)]
    pub db: DbArgs,

    /// Print the latest N entries instead of counts.
    #[arg(long, value_name = "N", conflicts_with = "deferred")]
    pub list: Option<usize>,

    /// Print the conflicts waiting for a person, with both versions.
    #[arg(long)]
    pub deferred: bool,

    /// Settle the deferred conflict with this id (see `--deferred`) to the version --keep names.
    #[arg(
        long,
        value_name = "ID",
        requires = "keep",
        conflicts_with_all = ["list", "deferred", "table", "outcome"]
    )]
    pub resolve: Option<i64>,

    /// With --resolve: the version the row becomes.
    #[arg(long, value_name = "VERSION", requires = "resolve")]
    pub keep: Option<KeepVersion>,

    /// Only this table.
    #[arg(long, value_name = "TABLE")]
    pub table: Option<String>,

    /// Only this outcome (auto_merged, accepted, merged, kept_local, rejected, deferred).
    #[arg(long, value_name = "OUTCOME")]
    pub outcome: Option<String>,

    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
}

/// Which version of a deferred conflict `conflicts --resolve` keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KeepVersion {
    /// The row as it was on this replica before the conflicting change.
    Local,
    /// The incoming change's row.
    Incoming,
    /// What the merge made of both.
    Merged,
}

/// Where the database is and which schema opens it.
#[derive(Debug, Args)]
pub struct DbArgs {
    /// The database file.
    #[arg(long, value_name = "FILE")]
    pub db: PathBuf,

    /// The schema file (TOML) the database uses [default: $MELDB_SCHEMA].
    #[arg(long, value_name = "SCHEMA.toml")]
    pub schema: Option<PathBuf>,
}

impl DbArgs {
    /// `--schema`, else `$MELDB_SCHEMA` (when set and not empty).
    pub fn schema_path(&self) -> Option<PathBuf> {
        schema_path(self.schema.as_ref())
    }
}

impl RelayArgs {
    /// `--schema`, else `$MELDB_SCHEMA`, as for every command.
    pub fn schema_path(&self) -> Option<PathBuf> {
        schema_path(self.schema.as_ref())
    }
}

/// A command's `--schema`, else `$MELDB_SCHEMA` (when set and not empty).
fn schema_path(given: Option<&PathBuf>) -> Option<PathBuf> {
    given.cloned().or_else(|| {
        std::env::var_os(SCHEMA_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    })
}

#[derive(Debug, Args)]
pub struct RelayArgs {
    /// Read flags from this TOML file first: its keys are this command's
    /// long flags (`max_connections = 100`, `listen = ["tls://0.0.0.0:7443"]`),
    /// relative paths are the file's directory's, and a flag on the
    /// command line replaces the file's (see docs/relay.example.toml).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Check the flags (and config file), schema, tokens, TLS certificate and key, namespaces
    /// and listen addresses, then exit without opening a database or listening (for
    /// systemd's ExecStartPre).
    #[arg(long)]
    pub check: bool,

    /// The database file: one namespace, the default.
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "data_dir",
        conflicts_with = "data_dir"
    )]
    pub db: Option<PathBuf>,

    /// A directory holding one database per namespace (`NAME.db`), for
    /// tokens that name their namespace; only existing namespaces, the
    /// default and those given with --namespace are served.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// With --data-dir: a namespace the relay may create on first use
    /// (repeat for several).
    #[arg(long = "namespace", value_name = "NAME", requires = "data_dir")]
    pub namespaces: Vec<String>,

    /// The schema file (TOML) the databases use [default: $MELDB_SCHEMA].
    #[arg(long, value_name = "SCHEMA.toml")]
    pub schema: Option<PathBuf>,

    /// Where to listen: HOST:PORT (TCP), or a URL tcp://, tls://, ws://HOST:PORT/PATH or
    /// wss://HOST:PORT/PATH; repeat for several (port 0: any free port).
    #[arg(long, value_name = "URL", required = true)]
    pub listen: Vec<String>,

    #[command(flatten)]
    pub tls: ServerTlsArgs,

    /// The clients' tokens (TOML; see `meldb relay --help`).
    #[arg(long, value_name = "FILE")]
    pub tokens: PathBuf,

    /// Authorized client connections at once (at most).
    #[arg(long, value_name = "N", default_value_t = 4096)]
    pub max_connections: usize,

    /// Authorized connections of one token at once (at most), so one
    /// token cannot take every client slot.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub max_connections_per_token: usize,

    /// Connections that have not completed their hello yet, at once (at
    /// most); they never take the slots of authorized clients.
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub max_unauthenticated: usize,

    /// Of those, from one IP address (at most).
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub max_unauthenticated_per_address: usize,

    /// How long a connection has to say hello with a valid token.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub handshake_timeout: Duration,

    /// Silence after which a request is repeated, and after twice which an
    /// unfinished session is dropped.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// A live client that is up to date and silent this long is
    /// disconnected (it reconnects); 0: never.
    #[arg(long, value_name = "DURATION", default_value = "30m", value_parser = parse_duration)]
    pub quiet_timeout: Duration,

    /// A client that reads nothing of what it is sent for this long is
    /// dropped.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub write_timeout: Duration,

    /// Rows (or mutations) per second each token may write, sustained; 0:
    /// no limit.
    #[arg(long, value_name = "ROWS", default_value_t = 1_000)]
    pub write_rate: u32,

    /// Rows each token may write at once above the rate.
    #[arg(long, value_name = "ROWS", default_value_t = 50_000)]
    pub write_burst: u32,

    /// The size the database may grow to (e.g. 8GiB, 500MB, 1048576); a
    /// batch that would take it past is refused; 0: no quota.
    #[arg(long, value_name = "BYTES", default_value = "8GiB", value_parser = parse_bytes)]
    pub namespace_quota: u64,

    /// Changes waiting for a slow client, in batches (at most); past it
    /// the client is told it fell behind and disconnected (it resyncs).
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub max_lag_batches: usize,

    /// The same bound in bytes.
    #[arg(long, value_name = "BYTES", default_value = "64MiB", value_parser = parse_bytes)]
    pub max_lag_bytes: u64,

    /// The largest message accepted from a client, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 16 << 20)]
    pub max_message: usize,

    /// Serve Prometheus metrics at /metrics and a health check at /healthz
    /// over HTTP on HOST:PORT (keep it on a private address; port 0: any
    /// free port, printed as `admin listening on ADDR`). Off by default.
    #[arg(long, value_name = "HOST:PORT")]
    pub admin: Option<String>,

    /// How logs are written to stderr: text, or JSON lines (one object per
    /// event, its fields at the top level).
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// How the servers write their logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// A duration: a number with `ms`, `s`, `m` or `h` (`s` if none).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (e.g. 10s, 500ms, 30m, 1h)"))?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?} (ms, s, m or h)"
            ))
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

/// A size in bytes: a number with an optional `k`/`K`, `M`, `G` or `T`
/// (powers of 1024, with or without `B`/`iB`).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size (e.g. 8GiB, 64MiB, 1048576)"))?;
    let unit = unit.trim();
    let unit = unit
        .strip_suffix("iB")
        .or_else(|| unit.strip_suffix('B'))
        .unwrap_or(unit);
    let shift = match unit {
        "" => 0,
        "k" | "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        other => return Err(format!("unknown unit {other:?} in {text:?} (K, M, G or T)")),
    };
    value
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub db: DbArgs,

    /// Where to listen, as for `meldb relay` (HOST:PORT or tcp://, tls://, ws://, wss:// URLs).
    #[arg(long, value_name = "URL", required = true)]
    pub listen: Vec<String>,

    #[command(flatten)]
    pub tls: ServerTlsArgs,

    /// Require tokens from this file (as for `meldb relay`).
    #[arg(long, value_name = "FILE")]
    pub tokens: Option<PathBuf>,

    /// How logs are written to stderr: text, or JSON lines.
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Args)]
pub struct NetSyncArgs {
    #[command(flatten)]
    pub db: DbArgs,

    /// The relay or peer: HOST:PORT (TCP), or tcp://, tls://HOST:PORT, ws://, wss://HOST:PORT/PATH.
    #[arg(long, value_name = "URL")]
    pub peer: String,

    /// Trust only the CA certificate(s) in this PEM file for tls:// and wss:// (default: the
    /// system's trusted roots).
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,

    /// The access token the relay gave this client. Other users of the machine can read it
    /// in `ps`: prefer --token-file or --token-env.
    #[arg(long, value_name = "TOKEN", group = "token_source")]
    pub token: Option<String>,

    /// Read the access token from this file (surrounding whitespace is ignored).
    #[arg(long, value_name = "FILE", group = "token_source")]
    pub token_file: Option<PathBuf>,

    /// Read the access token from this environment variable.
    #[arg(long, value_name = "VAR", group = "token_source")]
    pub token_env: Option<String>,

    /// Stay connected and keep syncing both ways as changes happen, reconnecting with
    /// backoff, until ctrl-c or SIGTERM; each change of status (connecting, connected,
    /// syncing, idle, offline with the error and the next retry, stopped, and what is
    /// pending) is printed on stderr, one line each.
    #[arg(long)]
    pub continuous: bool,

    /// The namespace to sync, on a relay whose token allows several (default: the first
    /// the token names).
    #[arg(long, value_name = "NAME")]
    pub namespace: Option<String>,
}

/// A TLS listener's certificate and key.
#[derive(Debug, Args)]
pub struct ServerTlsArgs {
    /// The certificate chain (PEM, leaf first) tls:// and wss:// listeners present.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    #[command(flatten)]
    pub db: DbArgs,

    /// The site id (a UUID) for a new database; random by default.
    #[arg(long, value_name = "UUID")]
    pub site_id: Option<uuid::Uuid>,
}

#[derive(Debug, Args)]
pub struct RowArgs {
    #[command(flatten)]
    pub db: DbArgs,

    /// The table.
    pub table: String,

    /// Column values, e.g. sku=BEAN-1kg price=18.5 stock=10.
    #[arg(value_name = "COLUMN=VALUE", required = true)]
    pub values: Vec<String>,
}

/// A row's primary key: one `--key` per key column, in key order.
#[derive(Debug, Args)]
pub struct KeyArgs {
    #[command(flatten)]
    pub db: DbArgs,

    /// The table.
    pub table: String,

    /// The primary key; repeat it for each column of a composite key, in key order.
    #[arg(
        short,
        long = "key",
        value_name = "KEY",
        required = true,
        allow_hyphen_values = true
    )]
    pub keys: Vec<String>,
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    #[command(flatten)]
    pub row: KeyArgs,

    /// Column values to set, e.g. price=19.9 shelf=NULL.
    #[arg(value_name = "COLUMN=VALUE", required = true)]
    pub values: Vec<String>,
}

#[derive(Debug, Args)]
pub struct IncrementArgs {
    #[command(flatten)]
    pub row: KeyArgs,

    /// The counter column.
    pub column: String,

    /// How much to add; negative subtracts (pn_counter only).
    #[arg(allow_negative_numbers = true)]
    pub amount: i64,
}

#[derive(Debug, Args)]
pub struct SetArgs {
    #[command(flatten)]
    pub row: KeyArgs,

    /// The or_set column.
    pub column: String,

    /// The element (any string).
    #[arg(allow_hyphen_values = true)]
    pub element: String,
}

#[derive(Debug, Args)]
pub struct QueryArgs {
    #[command(flatten)]
    pub db: DbArgs,

    /// One read-only SQL statement, e.g. "SELECT * FROM item ORDER BY sku".
    pub sql: String,

    /// Print one JSON object per row instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub db: DbArgs,

    /// The file to write the changeset frame to.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,

    /// Export only what a replica with this version vector lacks (JSON from `meldb vv`).
    #[arg(long, value_name = "VV.json")]
    pub since: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    #[command(flatten)]
    pub db: DbArgs,

    /// A changeset frame written by `meldb export`.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

#[derive(Debug, Args)]
pub struct PendingArgs {
    #[command(flatten)]
    pub db: DbArgs,

    /// Print one JSON object per mutation.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct InfoArgs {
    #[command(flatten)]
    pub db: DbArgs,

    /// Print machine-readable JSON.
    #[arg(long)]
    pub json: bool,

    /// Print only the version vector as JSON (same as `meldb vv`).
    #[arg(long)]
    pub vv_only: bool,
}

#[derive(Debug, Args)]
pub struct BenchRelayArgs {
    /// Writing clients, each its own connection and replica.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub clients: usize,

    /// Writes per second, all clients together.
    #[arg(long, value_name = "WRITES", default_value_t = 200.0)]
    pub rate: f64,

    /// Writes per second of each client (instead of --rate).
    #[arg(long, value_name = "WRITES")]
    pub rate_per_client: Option<f64>,

    /// How long the clients write.
    #[arg(long, value_name = "DURATION", default_value = "20s", value_parser = parse_duration)]
    pub duration: Duration,

    /// How long after the last write arrivals are awaited (and the setup
    /// may take); what has not arrived then is reported.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub deadline: Duration,

    /// Rows the clients share (fewer: more conflicts).
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub keys: usize,

    /// Seed of the schedule: which client writes what, when.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// Idle connections: authenticated, then silent.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub idle: usize,

    /// Light clients: each writes through its own replica and pushes its
    /// commits, and receives on a second connection that decodes and
    /// acknowledges batches without applying them, so the load generator
    /// costs little and the relay is what is measured.
    #[arg(long)]
    pub light: bool,

    /// A relay to test (tcp://HOST:PORT, ...) instead of one in this process.
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,

    /// The read-write token every client of --url presents.
    #[arg(long, value_name = "TOKEN", requires = "url")]
    pub token: Option<String>,

    /// The --url relay's process id, for its CPU time and peak RSS (/proc).
    #[arg(long, value_name = "PID", requires = "url")]
    pub relay_pid: Option<u32>,

    /// Print the bench's schema (for `meldb relay --schema`) and exit.
    #[arg(long)]
    pub print_schema: bool,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Keep the tills' databases as files in this directory (in memory by default).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,

    /// How many tills (replicas) take part.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(2..=9))]
    pub replicas: u8,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_a_unit() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5 days").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn sizes_take_binary_units() {
        assert_eq!(parse_bytes("1048576"), Ok(1 << 20));
        assert_eq!(parse_bytes("64MiB"), Ok(64 << 20));
        assert_eq!(parse_bytes("8G"), Ok(8 << 30));
        assert_eq!(parse_bytes("8GB"), Ok(8 << 30));
        assert_eq!(parse_bytes("16k"), Ok(16 << 10));
        assert_eq!(parse_bytes("0"), Ok(0));
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("5PB").is_err());
        assert!(parse_bytes("99999999999T").is_err());
    }
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Add a client with a new random secret: the file keeps only its hash,
    /// and the secret is printed once, on stdout.
    #[command(
        long_about = "Add a client to a tokens file (created if missing, readable by its owner \
only) with a new random secret of 244 bits. The file keeps only the secret's hash \
(token_hash = \"blake3:...\"), so reading the file gives no secret away; the secret is printed \
once, on stdout: hand it to the client (meldb sync --token-file). The whole file is checked \
before it is written: a name that is already there, or a namespace that is not a plain name, \
is refused and the file is left as it was. Send the relay SIGHUP (kill -HUP) to pick the token up."
    )]
    Add(TokenAddArgs),

    /// Remove a client: its secret no longer connects (a running relay
    /// stops accepting it on SIGHUP and closes its sessions).
    #[command(
        long_about = "Remove a client's entry from a tokens file. The rest of the file is kept as \
it was, comments included; the new file is checked as a whole and replaces the old one at once, \
or not at all. A name that is not in the file is an error. A running relay picks the change up \
on SIGHUP (kill -HUP, or systemctl reload) and closes the client's sessions. The sites bound to \
the name stay bound to it in each namespace's database, so a new token under the same name \
writes as the same devices."
    )]
    Remove(TokenRemoveArgs),
}

#[derive(Debug, Args)]
pub struct TokenRemoveArgs {
    /// The tokens file.
    #[arg(long, value_name = "FILE")]
    pub tokens: PathBuf,

    /// The client's name.
    #[arg(long, value_name = "NAME")]
    pub name: String,
}

#[derive(Debug, Args)]
pub struct TokenAddArgs {
    /// The tokens file.
    #[arg(long, value_name = "FILE")]
    pub tokens: PathBuf,

    /// The client's name (for the logs; its sites bind to it).
    #[arg(long, value_name = "NAME")]
    pub name: String,

    /// What it may do.
    #[arg(long, value_name = "ACCESS", default_value = "read-write", value_parser = ["read-write", "read-only"])]
    pub access: String,

    /// The namespace it syncs (default: the default namespace); repeat for a
    /// token that may sync several (the client names one; the first by default).
    #[arg(long = "namespace", value_name = "NAME")]
    pub namespaces: Vec<String>,

    /// The user resolvers see its writes as (default: its name).
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,

    /// A role of that user (repeat for several).
    #[arg(long = "role", value_name = "ROLE")]
    pub roles: Vec<String>,
}
