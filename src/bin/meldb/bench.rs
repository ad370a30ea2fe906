//! `meldb bench-relay`: a load benchmark of a relay over real sockets.
//!
//! N clients (in-memory replicas, each a `ContinuousSync` over TCP) write
//! on a shared key space of one fixed table ([`SCHEMA`]: an lww text, a
//! `pn_counter`, an `or_set`) at fixed times drawn from a seeded RNG, so
//! two runs with the same arguments issue the same writes at the same
//! offsets. The relay runs in this process on 127.0.0.1 (its own tokio
//! runtime, threads named `meldb-relay`, so its CPU time is read apart
//! from the clients'), or is any relay given by `--url` (started with
//! this schema: `--print-schema`). Idle connections are a lighter client:
//! a hello with a token and a `Want`, then silence. With `--light`, each
//! writing client receives through a listener that only decodes and
//! acknowledges ([`light`]), so the load generator no longer applies
//! every write at every client and the figures are the relay's.
//!
//! Measured: write-to-arrival latency at every other client (a write's
//! dots, read from the writer's version vector, arrived when an
//! observer's version vector covers them, checked on the replica's or the
//! listener's change signal and every 50 ms), writes/s achieved, relay CPU time, peak RSS,
//! relay bytes per write (`RelayMetrics`, in-process only).
//!
//! Invariant: the run is bounded in time. Writing stops at `--duration`;
//! arrivals are awaited until `--deadline` after that, then whatever has
//! not arrived is counted and reported, never waited for. Convergence
//! (equal digests across the replicas, or for light clients a fresh
//! replica synced from the relay, and the in-process relay, every
//! counter's sum equal to the increments issued, every set equal to the
//! adds issued) is checked at the end and is the only failure: speed is
//! reported, never judged.

use crate::cli::BenchRelayArgs;
use crate::error::{CliError, Result};
use crate::probe;

mod light;
use meldb::sync::message::Want;
use meldb::sync::{
    Backoff, Connector, ContinuousSync, Grant, Message, PeerUrl, Relay, RelayConfig, RelayMetrics,
    SessionConfig, SharedStore, SyncHandle, SyncState, Tokens,
};
use meldb::{Durability, Schema, SiteId, Store, StoreOptions, Value, VersionVector};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The bench's one table. A relay given by `--url` must serve it.
pub const SCHEMA: &str = r#"name = "bench_relay"
version = 1

[[table]]
name = "item"
primary_key = ["id"]

[[table.column]]
name = "id"
type = "text"

[[table.column]]
name = "v"
type = "text"

[[table.column]]
name = "n"
type = "integer"
kind = "pn_counter"

[[table.column]]
name = "tags"
type = "text"
kind = "or_set"
"#;

/// Thread-name prefix of the in-process relay's runtime.
const RELAY_THREADS: &str = "meldb-relay";

/// How often an observer looks at its version vector without a signal.
const POLL: Duration = Duration::from_millis(50);

/// splitmix64: the schedule's only source of randomness.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// What one write does to its row (besides setting `v`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// `v` only.
    Set,
    /// `v`, and `n` += amount.
    Increment(i64),
    /// `v`, and a tag unique to this write added to `tags`.
    Add,
}

/// One scheduled write.
#[derive(Debug, Clone, Copy)]
struct Planned {
    /// From the start of the writing window.
    at: Duration,
    key: usize,
    op: Op,
}

/// Every client's writes, in time order: client `i` writes every
/// `clients / rate` seconds from a seeded offset, key and op seeded too.
fn schedule(
    clients: usize,
    per_client: f64,
    duration: Duration,
    keys: usize,
    seed: u64,
) -> Vec<Vec<Planned>> {
    let mut rng = Rng(seed);
    let period = 1.0 / per_client;
    (0..clients)
        .map(|_| {
            let mut at = rng.unit() * period;
            let mut plan = Vec::new();
            while at < duration.as_secs_f64() {
                let key = (rng.next() % keys as u64) as usize;
                let op = match rng.next() % 3 {
                    0 => Op::Set,
                    1 => Op::Increment((rng.next() % 9) as i64 - 3),
                    _ => Op::Add,
                };
                plan.push(Planned {
                    at: Duration::from_secs_f64(at),
                    key,
                    op,
                });
                at += period;
            }
            plan
        })
        .collect()
}

/// A write done: whose, which dots, when.
#[derive(Debug, Clone, Copy)]
struct Done {
    client: usize,
    site: SiteId,
    first: u64,
    last: u64,
    at: Instant,
}

/// What every client shares: the log of writes done, in completion order.
#[derive(Default)]
struct Log {
    writes: Mutex<Vec<Done>>,
    /// How many `writes` holds: read without the lock.
    len: std::sync::atomic::AtomicUsize,
}

impl Log {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Done>> {
        self.writes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn push(&self, done: Done) {
        let mut writes = self.lock();
        writes.push(done);
        self.len.store(writes.len(), Ordering::Release);
    }

    fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }
}

/// The writes an observer waits for, by writing site, each site's in the
/// order of their dots (the order its writer logged them).
#[derive(Default)]
struct Pending {
    by_site: BTreeMap<SiteId, std::collections::VecDeque<Done>>,
}

impl Pending {
    fn add(&mut self, d: Done) {
        self.by_site.entry(d.site).or_default().push_back(d);
    }

    fn len(&self) -> usize {
        self.by_site
            .values()
            .map(std::collections::VecDeque::len)
            .sum()
    }

    /// Takes out the writes `vv` covers, calling `arrived` on each: of
    /// every site, or only of `sites` (those whose dots or writes are new
    /// since the last look). Only a site's writes up to the last dot `vv`
    /// has of it are looked at: the others cannot be covered.
    fn take_covered(
        &mut self,
        vv: &VersionVector,
        sites: Option<&BTreeSet<SiteId>>,
        mut arrived: impl FnMut(&Done),
    ) {
        let sites: Vec<SiteId> = match sites {
            Some(sites) => sites
                .iter()
                .filter(|s| self.by_site.contains_key(s))
                .copied()
                .collect(),
            None => self.by_site.keys().copied().collect(),
        };
        for site in sites {
            let (Some(queue), Some(ranges)) = (self.by_site.get_mut(&site), vv.site(&site)) else {
                continue;
            };
            let max = ranges.max();
            let mut i = 0;
            while i < queue.len() && queue[i].first <= max {
                if covered(vv, &queue[i]) {
                    if let Some(d) = queue.remove(i) {
                        arrived(&d);
                    }
                } else {
                    i += 1;
                }
            }
            if queue.is_empty() {
                self.by_site.remove(&site);
            }
        }
    }
}

/// One observer's result.
#[derive(Default)]
struct Seen {
    /// Write-to-arrival latencies, µs.
    latencies: Vec<u64>,
    /// Writes of others not arrived when it stopped.
    missing: u64,
}

/// What a light client's listener has heard: the covers of every batch
/// it received, and a signal on each.
struct Heard {
    client: usize,
    state: Mutex<HeardState>,
    changed: watch::Sender<u64>,
}

/// A listener's version vector, and the sites it gained dots of since its
/// observer last looked.
#[derive(Default)]
struct HeardState {
    vv: VersionVector,
    touched: BTreeSet<SiteId>,
}

impl Heard {
    fn new(client: usize) -> Heard {
        Heard {
            client,
            state: Mutex::new(HeardState::default()),
            changed: watch::Sender::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HeardState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Where a client's arrivals are watched: its replica (a full client) or
/// its listener (a light one).
#[derive(Clone)]
enum Watched {
    Replica(SharedStore),
    Listener(Arc<Heard>),
}

impl Watched {
    fn subscribe(&self) -> watch::Receiver<u64> {
        match self {
            Watched::Replica(store) => store.subscribe(),
            Watched::Listener(heard) => heard.changed.subscribe(),
        }
    }

    fn with_vv<T>(&self, f: impl FnOnce(&VersionVector) -> T) -> T {
        match self {
            Watched::Replica(store) => f(&store.lock().version_vector()),
            Watched::Listener(heard) => f(&heard.lock().vv),
        }
    }

    /// `f` on the version vector and the sites it gained dots of since the
    /// last call (`None`: not known, any site may have).
    fn with_news<T>(&self, f: impl FnOnce(&VersionVector, Option<BTreeSet<SiteId>>) -> T) -> T {
        match self {
            Watched::Replica(store) => f(&store.lock().version_vector(), None),
            Watched::Listener(heard) => {
                let mut state = heard.lock();
                let touched = std::mem::take(&mut state.touched);
                f(&state.vv, Some(touched))
            }
        }
    }
}

fn key_name(prefix: &str, key: usize) -> String {
    format!("{prefix}-{key:05}")
}

fn tag_name(client: usize, seq: usize) -> String {
    format!("c{client}-w{seq}")
}

fn own_last(store: &SharedStore, site: &SiteId) -> u64 {
    store
        .lock()
        .version_vector()
        .site(site)
        .map_or(0, |r| r.max())
}

fn covered(vv: &VersionVector, d: &Done) -> bool {
    vv.site(&d.site)
        .is_some_and(|r| r.contains_all(d.first, d.last))
}

/// A client's writer: its planned writes at their times, each one
/// transaction; logs the dots each took. Returns what it did.
async fn writer(
    client: usize,
    store: SharedStore,
    plan: Vec<Planned>,
    prefix: Arc<str>,
    start: tokio::time::Instant,
    log: Arc<Log>,
    late: Arc<std::sync::atomic::AtomicBool>,
) -> Result<Vec<Planned>> {
    let site = store.lock().site_id();
    let mut done = Vec::with_capacity(plan.len());
    for (seq, p) in plan.into_iter().enumerate() {
        tokio::time::sleep_until(start + p.at).await;
        if late.load(Ordering::Relaxed) {
            // Past the deadline: what is done stays done, the rest is
            // not written (and not expected anywhere).
            break;
        }
        let store2 = store.clone();
        let key = key_name(&prefix, p.key);
        let at = Instant::now();
        let (first, last) = tokio::task::spawn_blocking(move || -> Result<(u64, u64)> {
            let first = own_last(&store2, &site) + 1;
            store2.write(|tx| {
                tx.set("item", key.as_str(), "v", format!("c{client}-w{seq}"))?;
                match p.op {
                    Op::Set => {}
                    Op::Increment(n) => tx.increment("item", key.as_str(), "n", n)?,
                    Op::Add => {
                        tx.add_to_set("item", key.as_str(), "tags", &tag_name(client, seq))?
                    }
                }
                Ok(())
            })?;
            Ok((first, own_last(&store2, &site)))
        })
        .await
        .map_err(|e| CliError::Bench(format!("client {client}'s writer: {e}")))??;
        log.push(Done {
            client,
            site,
            first,
            last,
            at,
        });
        done.push(p);
    }
    Ok(done)
}

/// A client's observer: on each change signal (or every [`POLL`]), which
/// logged writes of others its replica now covers, until `stop`.
async fn observer(
    client: usize,
    watched: Watched,
    log: Arc<Log>,
    mut stop: watch::Receiver<bool>,
) -> Seen {
    let mut changed = watched.subscribe();
    let mut next = 0;
    let mut pending = Pending::default();
    let mut seen = Seen::default();
    loop {
        let stopping = *stop.borrow();
        let mut fresh = BTreeSet::new();
        if log.len() > next {
            let log = log.lock();
            for d in log[next..].iter().filter(|d| d.client != client) {
                fresh.insert(d.site);
                pending.add(*d);
            }
            next = log.len();
        }
        let now = Instant::now();
        watched.with_news(|vv, touched| {
            let sites = touched.map(|mut sites| {
                sites.append(&mut fresh);
                sites
            });
            pending.take_covered(vv, sites.as_ref(), |d| {
                seen.latencies
                    .push(now.duration_since(d.at).as_micros() as u64)
            })
        });
        if stopping {
            seen.missing = pending.len() as u64;
            return seen;
        }
        tokio::select! {
            _ = changed.changed() => {}
            _ = tokio::time::sleep(POLL) => {}
            _ = stop.changed() => {}
        }
    }
}

/// An idle connection: hello with a token, one `Want` (it lacks
/// nothing it will ask for again), then it reads and drops whatever
/// comes until `stop`. Counts itself in `authenticated` once the relay's
/// hello arrives. Every idle connection of a run says it is `site`: they
/// never write, so they take one of the token's sites, not one each.
async fn idle_client(
    url: PeerUrl,
    site: SiteId,
    token: Option<String>,
    authenticated: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
) {
    let Ok(mut conn) = Connector::new().connect(&url).await else {
        return;
    };
    if conn.send(&light::hello(site, token, false)).await.is_err() {
        return;
    }
    let mut counted = false;
    loop {
        tokio::select! {
            got = conn.recv() => match got {
                Some(Ok(Message::Hello(_))) if !counted => {
                    counted = true;
                    authenticated.fetch_add(1, Ordering::Relaxed);
                    let want = Want { id: 1, have: VersionVector::new(), first_pending: None };
                    if conn.send(&Message::Want(want)).await.is_err() {
                        break;
                    }
                }
                Some(Ok(_)) => {}
                _ => break,
            },
            _ = stop.changed() => break,
        }
    }
    if counted && !*stop.borrow() {
        authenticated.fetch_sub(1, Ordering::Relaxed);
    }
}

/// `p`-th percentile (0..=100) of sorted µs, as ms.
fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)] as f64 / 1000.0
}

/// A named counter from the relay's Prometheus text.
fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// The in-process relay, on its own runtime.
struct LocalRelay {
    runtime: tokio::runtime::Runtime,
    store: SharedStore,
    metrics: Arc<RelayMetrics>,
    stop: watch::Sender<bool>,
    url: PeerUrl,
    path: PathBuf,
}

fn secret(client: usize) -> String {
    format!("bench-relay-secret-{client}")
}

const IDLE_SECRET: &str = "bench-relay-idle-secret";

/// Read-only: light clients' listeners, and the fresh replica that checks
/// what the relay serves.
const LISTEN_SECRET: &str = "bench-relay-listen-secret";

fn start_relay(schema: &Schema, clients: usize, idle: usize) -> Result<LocalRelay> {
    let path = std::env::temp_dir().join(format!("meldb-bench-relay-{}.db", std::process::id()));
    remove_db(&path);
    let store = StoreOptions::new()
        .durability(Durability::Full)
        .open(&path, schema)
        .map_err(|e| CliError::Bench(format!("{}: {e}", path.display())))?;
    let store = SharedStore::new(store);
    let mut tokens = Tokens::new();
    for client in 0..clients {
        tokens.add(
            format!("bench-{client}"),
            &secret(client),
            Grant::read_write(),
        );
    }
    tokens.add("bench-idle", IDLE_SECRET, Grant::read_write());
    tokens.add("bench-listen", LISTEN_SECRET, Grant::read_only());
    let metrics = Arc::new(RelayMetrics::new());
    let config = RelayConfig::default()
        .tokens(tokens)
        // Light clients are two connections each.
        .max_connections(2 * clients + idle + 64)
        .max_connections_per_token(idle.max(clients) + 16)
        .max_unauthenticated(idle + 2 * clients + 64, idle + 2 * clients + 64)
        .handshake_timeout(Duration::from_secs(120))
        .idle(Duration::from_secs(3600))
        .quiet_timeout(None)
        .write_rate(None)
        .namespace_quota(None)
        .metrics(Arc::clone(&metrics));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(RELAY_THREADS)
        // Blocking threads that end take their CPU time with them.
        .thread_keep_alive(Duration::from_secs(24 * 3600))
        .enable_all()
        .build()?;
    let relay = runtime.block_on(Relay::bind(store.clone(), "127.0.0.1:0", config))?;
    let addr = relay.local_addr()?;
    let url: PeerUrl = format!("tcp://{addr}")
        .parse()
        .map_err(meldb::sync::SyncError::from)?;
    let (stop, shutdown) = watch::channel(false);
    runtime.spawn(async move {
        if let Err(e) = relay.run(shutdown).await {
            eprintln!("bench-relay: the relay stopped: {e}");
        }
    });
    Ok(LocalRelay {
        runtime,
        store,
        metrics,
        stop,
        url,
        path,
    })
}

fn remove_db(path: &std::path::Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
}

/// Waits until every client's status is idle (caught up) or `limit`.
async fn all_idle(
    statuses: &mut [watch::Receiver<meldb::sync::SyncStatus>],
    limit: Instant,
) -> usize {
    let mut ready = 0;
    for status in statuses.iter_mut() {
        loop {
            if matches!(status.borrow().state, SyncState::Idle) {
                ready += 1;
                break;
            }
            let left = limit.saturating_duration_since(Instant::now());
            if left.is_zero() || tokio::time::timeout(left, status.changed()).await.is_err() {
                break;
            }
        }
    }
    ready
}

/// Whether every replica's version vector covers `target`, by `limit`.
async fn all_cover(watched: &[Watched], target: &VersionVector, limit: Instant) -> bool {
    loop {
        if watched.iter().all(|w| w.with_vv(|vv| target.le(vv))) {
            return true;
        }
        if Instant::now() >= limit {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The counters and sets every replica must hold: from the writes done.
struct Expected {
    sums: BTreeMap<String, i64>,
    sets: BTreeMap<String, BTreeSet<String>>,
}

fn expected(prefix: &str, keys: usize, done: &[Vec<Planned>]) -> Expected {
    let mut sums: BTreeMap<String, i64> = (0..keys).map(|k| (key_name(prefix, k), 0)).collect();
    let mut sets: BTreeMap<String, BTreeSet<String>> = (0..keys)
        .map(|k| (key_name(prefix, k), BTreeSet::new()))
        .collect();
    for (client, writes) in done.iter().enumerate() {
        for (seq, p) in writes.iter().enumerate() {
            let key = key_name(prefix, p.key);
            match p.op {
                Op::Set => {}
                Op::Increment(n) => *sums.entry(key).or_default() += n,
                Op::Add => {
                    sets.entry(key).or_default().insert(tag_name(client, seq));
                }
            }
        }
    }
    Expected { sums, sets }
}

/// What a replica disagrees with `want` on, if anything.
fn check_values(store: &Store, prefix: &str, want: &Expected) -> Result<Option<String>> {
    let mut stmt = store
        .conn()
        .prepare("SELECT id, n, tags FROM item WHERE id LIKE ?1 ORDER BY id")?;
    let rows = stmt.query_map([format!("{prefix}-%")], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, Option<i64>>(1)?.unwrap_or(0),
            r.get::<_, Option<String>>(2)?
                .unwrap_or_else(|| "[]".to_string()),
        ))
    })?;
    let mut seen = 0;
    for row in rows {
        let (id, n, tags) = row?;
        seen += 1;
        if want.sums.get(&id) != Some(&n) {
            return Ok(Some(format!(
                "{id}: n = {n}, issued {:?}",
                want.sums.get(&id)
            )));
        }
        let tags: BTreeSet<String> = serde_json::from_str(&tags)
            .map_err(|e| CliError::Bench(format!("{id}: tags {tags:?}: {e}")))?;
        if want.sets.get(&id) != Some(&tags) {
            return Ok(Some(format!(
                "{id}: {} tags, issued {}",
                tags.len(),
                want.sets.get(&id).map_or(0, |s| s.len())
            )));
        }
    }
    if seen != want.sums.len() {
        return Ok(Some(format!("{seen} rows, expected {}", want.sums.len())));
    }
    Ok(None)
}

/// `meldb bench-relay`.
pub fn run(args: &BenchRelayArgs, out: &mut dyn Write) -> Result<()> {
    if args.print_schema {
        write!(out, "{SCHEMA}")?;
        return Ok(());
    }
    if args.clients == 0 && args.idle == 0 {
        return Err(CliError::Bench(
            "nothing to run: --clients and --idle are both 0".into(),
        ));
    }
    if args.keys == 0 {
        return Err(CliError::Bench("--keys must be at least 1".into()));
    }
    let per_client = match args.rate_per_client {
        Some(r) => r,
        None => args.rate / args.clients.max(1) as f64,
    };
    if args.clients > 0 && !(per_client.is_finite() && per_client > 0.0) {
        return Err(CliError::Bench(format!(
            "a write rate of {per_client} per client"
        )));
    }
    let conns_per_client = if args.light { 2 } else { 1 };
    let sockets = (conns_per_client * args.clients + args.idle) as u64
        * if args.url.is_some() { 1 } else { 2 };
    if let Some(limit) = probe::open_files_limit() {
        if sockets + 256 > limit {
            return Err(CliError::Bench(format!(
                "{sockets} sockets need more than this process's open-file limit of {limit}: raise it (ulimit -n), or run the relay as its own process and give --url"
            )));
        }
    }
    let schema = Schema::from_toml_str(SCHEMA, "bench-relay schema")?;
    let local = match &args.url {
        Some(_) => None,
        None => Some(start_relay(&schema, args.clients, args.idle)?),
    };
    let url: PeerUrl = match (&args.url, &local) {
        (Some(u), _) => u.parse().map_err(meldb::sync::SyncError::from)?,
        (None, Some(l)) => l.url.clone(),
        (None, None) => unreachable!("a local relay is started without --url"),
    };
    let token_of = |client: usize| match (&args.url, &args.token) {
        (Some(_), t) => t.clone(),
        (None, _) => Some(secret(client)),
    };
    let idle_token = match &args.url {
        Some(_) => args.token.clone(),
        None => Some(IDLE_SECRET.to_string()),
    };
    let listen_token = match &args.url {
        Some(_) => args.token.clone(),
        None => Some(LISTEN_SECRET.to_string()),
    };
    let clients_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("bench-client")
        .enable_all()
        .build()?;
    let result = clients_rt.block_on(drive(
        args,
        &schema,
        &url,
        per_client,
        token_of,
        idle_token,
        listen_token,
        local.as_ref(),
        out,
    ));
    if let Some(local) = local {
        let _ = local.stop.send(true);
        local.runtime.shutdown_timeout(Duration::from_secs(5));
        drop(local.store);
        remove_db(&local.path);
    }
    clients_rt.shutdown_timeout(Duration::from_secs(5));
    result
}

/// The writing clients of a run, connected and caught up.
struct Clients {
    /// Each client's replica, which its writer writes through.
    stores: Vec<SharedStore>,
    /// Where each client's arrivals are watched.
    watched: Vec<Watched>,
    /// Full clients' syncs.
    handles: Vec<SyncHandle>,
    /// Light clients' connections, stopped by `stop_light`.
    light: Vec<tokio::task::JoinHandle<light::Ended>>,
    stop_light: watch::Sender<bool>,
    /// Clients connected and caught up when the setup ended.
    ready: usize,
    /// Whether every client had the key rows then.
    keyed: bool,
}

impl Clients {
    /// Stops every client's connections; a light connection's error is
    /// returned, the first one.
    async fn stop(self) -> Option<String> {
        let _ = self.stop_light.send(true);
        for h in self.handles {
            let _ = h.stop().await;
        }
        let mut error = None;
        for t in self.light {
            match t.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    error.get_or_insert(e);
                }
                Err(e) => {
                    error.get_or_insert(e.to_string());
                }
            }
        }
        error
    }
}

/// Full clients: each an in-memory replica with a `ContinuousSync`;
/// client 0 inserts the key rows, which reach the others through the relay.
async fn full_clients(
    args: &BenchRelayArgs,
    schema: &Schema,
    url: &PeerUrl,
    prefix: &str,
    token_of: &impl Fn(usize) -> Option<String>,
    setup_limit: Instant,
) -> Result<Clients> {
    let mut stores = Vec::with_capacity(args.clients);
    let mut handles: Vec<SyncHandle> = Vec::with_capacity(args.clients);
    let mut statuses = Vec::with_capacity(args.clients);
    for client in 0..args.clients {
        let store = SharedStore::new(Store::open_in_memory(schema)?);
        if client == 0 {
            seed_keys(&store, prefix, args.keys)?;
        }
        let sync = ContinuousSync::new(store.clone(), url.clone())
            .config(SessionConfig::default().token(token_of(client)))
            .backoff(Backoff {
                initial: Duration::from_millis(100),
                max: Duration::from_secs(2),
            })
            .seed(args.seed.wrapping_add(client as u64));
        statuses.push(sync.status());
        handles.push(sync.spawn());
        stores.push(store);
        if client % 64 == 63 {
            tokio::task::yield_now().await;
        }
    }
    let ready = all_idle(&mut statuses, setup_limit).await;
    let seeded = match stores.first() {
        Some(first) => first.lock().version_vector(),
        None => VersionVector::new(),
    };
    let watched: Vec<Watched> = stores.iter().cloned().map(Watched::Replica).collect();
    let keyed = all_cover(&watched, &seeded, setup_limit).await;
    Ok(Clients {
        stores,
        watched,
        handles,
        light: Vec::new(),
        stop_light: watch::Sender::new(false),
        ready,
        keyed,
    })
}

/// Light clients ([`light`]): each an in-memory replica that writes and a
/// pusher that sends its commits, and a listener that receives. Client 0
/// inserts the key rows and its pusher sends them; the others start from
/// a copy of them, so they push only their own writes.
async fn light_clients(
    args: &BenchRelayArgs,
    schema: &Schema,
    url: &PeerUrl,
    prefix: &str,
    token_of: &impl Fn(usize) -> Option<String>,
    listen_token: &Option<String>,
    setup_limit: Instant,
) -> Result<Clients> {
    let (stop_light, stop) = watch::channel(false);
    let up = Arc::new(AtomicU64::new(0));
    let mut stores = Vec::with_capacity(args.clients);
    let mut watched = Vec::with_capacity(args.clients);
    let mut light = Vec::with_capacity(args.clients * 2);
    let mut seeds = None;
    let mut listener_site = [0x1e; 16];
    listener_site[..8].copy_from_slice(&args.seed.to_be_bytes());
    let listener_site = SiteId::from_bytes(listener_site);
    for client in 0..args.clients {
        let store = SharedStore::new(Store::open_in_memory(schema)?);
        let sent = match &seeds {
            None => {
                seed_keys(&store, prefix, args.keys)?;
                let changes = store.lock().changes_since(&VersionVector::new())?;
                seeds = Some((changes, store.lock().version_vector()));
                VersionVector::new()
            }
            Some((changes, vv)) => {
                store.apply(changes)?;
                vv.clone()
            }
        };
        let heard = Arc::new(Heard::new(client));
        light.push(tokio::spawn(light::listener(
            url.clone(),
            listener_site,
            listen_token.clone(),
            Arc::clone(&heard),
            Arc::clone(&up),
            stop.clone(),
        )));
        light.push(tokio::spawn(light::pusher(
            url.clone(),
            store.clone(),
            token_of(client),
            sent,
            Arc::clone(&up),
            stop.clone(),
        )));
        stores.push(store);
        watched.push(Watched::Listener(heard));
        if client % 64 == 63 {
            tokio::task::yield_now().await;
        }
    }
    while (up.load(Ordering::Relaxed) as usize) < 2 * args.clients && Instant::now() < setup_limit {
        tokio::time::sleep(POLL).await;
    }
    let seeded = seeds.map_or_else(VersionVector::new, |(_, vv)| vv);
    let keyed = all_cover(&watched, &seeded, setup_limit).await;
    let ready = watched
        .iter()
        .filter(|w| w.with_vv(|vv| seeded.le(vv)))
        .count()
        .min(up.load(Ordering::Relaxed) as usize / 2);
    Ok(Clients {
        stores,
        watched,
        handles: Vec::new(),
        light,
        stop_light,
        ready,
        keyed,
    })
}

/// A new in-memory replica, synced once from the relay at `url`.
async fn fresh_replica(
    schema: &Schema,
    url: &PeerUrl,
    token: Option<String>,
) -> Result<SharedStore> {
    let store = SharedStore::new(Store::open_in_memory(schema)?);
    let mut conn = Connector::new().connect(url).await?;
    meldb::sync::sync_once(&store, &mut conn, SessionConfig::default().token(token)).await?;
    Ok(store)
}

/// Inserts the `keys` rows every client writes on.
fn seed_keys(store: &SharedStore, prefix: &str, keys: usize) -> Result<()> {
    store.write(|tx| {
        for k in 0..keys {
            tx.insert(
                "item",
                &[
                    ("id", key_name(prefix, k).into()),
                    ("v", Value::Text(String::new())),
                ],
            )?;
        }
        Ok(())
    })?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn drive(
    args: &BenchRelayArgs,
    schema: &Schema,
    url: &PeerUrl,
    per_client: f64,
    token_of: impl Fn(usize) -> Option<String>,
    idle_token: Option<String>,
    listen_token: Option<String>,
    local: Option<&LocalRelay>,
    out: &mut dyn Write,
) -> Result<()> {
    let began = Instant::now();
    let setup_limit = began + args.deadline.max(Duration::from_secs(30));
    writeln!(
        out,
        "bench-relay: {} clients, {:.1} writes/s per client ({:.1} in total), {:?} of writes on {} keys, seed {}, {} idle, relay {}",
        args.clients,
        per_client,
        per_client * args.clients as f64,
        args.duration,
        args.keys,
        args.seed,
        args.idle,
        if local.is_some() { format!("in-process at {url}") } else { url.to_string() },
    )?;
    out.flush()?;

    // Idle connections first: they are what the relay holds while the
    // writers run.
    let (stop_idle, idle_stop) = watch::channel(false);
    let authenticated = Arc::new(AtomicU64::new(0));
    let mut idle_tasks = Vec::with_capacity(args.idle);
    let mut idle_site = [0x1d; 16];
    idle_site[..8].copy_from_slice(&args.seed.to_be_bytes());
    let idle_site = SiteId::from_bytes(idle_site);
    for _ in 0..args.idle {
        idle_tasks.push(tokio::spawn(idle_client(
            url.clone(),
            idle_site,
            idle_token.clone(),
            Arc::clone(&authenticated),
            idle_stop.clone(),
        )));
        if idle_tasks.len() % 256 == 0 {
            tokio::task::yield_now().await;
        }
    }
    while (authenticated.load(Ordering::Relaxed) as usize) < args.idle
        && Instant::now() < setup_limit
    {
        tokio::time::sleep(POLL).await;
    }
    let idle_up = authenticated.load(Ordering::Relaxed);
    if args.idle > 0 {
        writeln!(
            out,
            "idle: {idle_up} of {} connections authenticated in {:.1} s; relay RSS {} (peak {})",
            args.idle,
            began.elapsed().as_secs_f64(),
            probe::mib(probe::rss(args.relay_pid)),
            probe::mib(probe::peak_rss(args.relay_pid)),
        )?;
        out.flush()?;
    }

    // The writing clients: connected and caught up before the clock starts.
    let prefix: Arc<str> = format!(
        "s{}-{}",
        args.seed,
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis())
    )
    .into();
    let clients = if args.light {
        light_clients(
            args,
            schema,
            url,
            &prefix,
            &token_of,
            &listen_token,
            setup_limit,
        )
        .await?
    } else {
        full_clients(args, schema, url, &prefix, &token_of, setup_limit).await?
    };
    let stores = clients.stores.clone();
    writeln!(
        out,
        "setup: {} of {} {}clients connected and caught up{} in {:.1} s",
        clients.ready,
        args.clients,
        if args.light { "light " } else { "" },
        if clients.keyed {
            ""
        } else {
            " (some lack the key rows)"
        },
        began.elapsed().as_secs_f64(),
    )?;
    out.flush()?;

    // The writing window.
    let plans = schedule(
        args.clients,
        per_client,
        args.duration,
        args.keys,
        args.seed,
    );
    let planned: usize = plans.iter().map(Vec::len).sum();
    let log = Arc::new(Log::default());
    let (stop_obs, obs_stop) = watch::channel(false);
    let observers: Vec<_> = clients
        .watched
        .iter()
        .enumerate()
        .map(|(i, w)| tokio::spawn(observer(i, w.clone(), Arc::clone(&log), obs_stop.clone())))
        .collect();
    let cpu0 = (
        probe::threads_cpu(RELAY_THREADS),
        probe::process_cpu(None),
        probe::process_cpu(args.relay_pid),
    );
    let metrics0 = local.map(|l| l.metrics.render());
    let late = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let start = tokio::time::Instant::now() + Duration::from_millis(200);
    let t0 = Instant::now() + Duration::from_millis(200);
    let writers: Vec<_> = plans
        .into_iter()
        .enumerate()
        .map(|(i, plan)| {
            tokio::spawn(writer(
                i,
                stores[i].clone(),
                plan,
                Arc::clone(&prefix),
                start,
                Arc::clone(&log),
                Arc::clone(&late),
            ))
        })
        .collect();
    let write_limit = start + args.duration + args.deadline;
    let mut done = Vec::with_capacity(writers.len());
    let mut writer_error = None;
    let mut cut_short = false;
    for mut w in writers {
        let joined = match tokio::time::timeout_at(write_limit, &mut w).await {
            Ok(joined) => joined,
            Err(_) => {
                // Behind schedule at the deadline: stop after the write
                // under way, keep what was written.
                cut_short = true;
                late.store(true, Ordering::Relaxed);
                w.await
            }
        };
        match joined {
            Ok(Ok(d)) => done.push(d),
            Ok(Err(e)) => {
                writer_error.get_or_insert(e.to_string());
                done.push(Vec::new());
            }
            Err(e) => {
                writer_error.get_or_insert(e.to_string());
                done.push(Vec::new());
            }
        }
    }
    let wrote = log.lock().clone();
    let writes_end = wrote.iter().map(|d| d.at).max().unwrap_or(t0);
    let window = writes_end
        .saturating_duration_since(t0)
        .max(Duration::from_millis(1));
    // Arrivals: until everyone has everything logged, or the deadline.
    let mut target = VersionVector::new();
    for d in &wrote {
        target.insert(d.site, d.first, d.last);
    }
    let arrival_limit = Instant::now().max(t0 + args.duration) + args.deadline;
    let arrived_all = all_cover(&clients.watched, &target, arrival_limit).await;
    let drained = Instant::now();
    let _ = stop_obs.send(true);
    let cpu1 = (
        probe::threads_cpu(RELAY_THREADS),
        probe::process_cpu(None),
        probe::process_cpu(args.relay_pid),
    );
    let metrics1 = local.map(|l| l.metrics.render());
    let mut latencies = Vec::new();
    let mut missing = 0u64;
    for o in observers {
        if let Ok(seen) = o.await {
            latencies.extend(seen.latencies);
            missing += seen.missing;
        }
    }
    latencies.sort_unstable();
    let deliveries = wrote.len() as u64 * args.clients.saturating_sub(1) as u64;

    writeln!(
        out,
        "writes: {} of {planned} planned in {:.2} s = {:.1} writes/s{}{}",
        wrote.len(),
        window.as_secs_f64(),
        wrote.len() as f64 / window.as_secs_f64(),
        if cut_short {
            " (behind schedule: the rest were not written by the deadline)"
        } else {
            ""
        },
        writer_error
            .as_ref()
            .map_or(String::new(), |e| format!(" (stopped: {e})")),
    )?;
    writeln!(
        out,
        "latency (write to arrival at each other client, {} arrivals): p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        latencies.len(),
        percentile(&latencies, 50.0),
        percentile(&latencies, 90.0),
        percentile(&latencies, 99.0),
        percentile(&latencies, 100.0),
    )?;
    writeln!(
        out,
        "arrived: {} of {deliveries} deliveries; {missing} not arrived {:.1} s after the last write{}",
        latencies.len(),
        drained.saturating_duration_since(writes_end).as_secs_f64(),
        if arrived_all { "" } else { " (deadline reached)" },
    )?;
    let secs = |a: Option<Duration>, b: Option<Duration>| match (a, b) {
        (Some(a), Some(b)) => format!("{:.2} s", b.saturating_sub(a).as_secs_f64()),
        _ => "n/a".to_string(),
    };
    let relay_cpu = if local.is_some() {
        format!(
            "{} (threads {RELAY_THREADS}*, /proc/self/task)",
            secs(cpu0.0, cpu1.0)
        )
    } else if args.relay_pid.is_some() {
        format!("{} (/proc/PID/stat)", secs(cpu0.2, cpu1.2))
    } else {
        "n/a (give --relay-pid)".to_string()
    };
    writeln!(
        out,
        "cpu: relay {relay_cpu}; this process {} over {:.2} s of writing and draining",
        secs(cpu0.1, cpu1.1),
        drained.saturating_duration_since(t0).as_secs_f64(),
    )?;
    writeln!(
        out,
        "memory: {} peak RSS {} (VmHWM{})",
        if local.is_some() {
            "process (relay and clients)"
        } else {
            "relay"
        },
        probe::mib(probe::peak_rss(args.relay_pid)),
        if local.is_some() || args.relay_pid.is_some() {
            ""
        } else {
            " of this process: give --relay-pid"
        },
    )?;
    if let (Some(m0), Some(m1)) = (&metrics0, &metrics1) {
        let n = wrote.len().max(1) as f64;
        let inb = metric(m1, "meldb_relay_bytes_received_total")
            - metric(m0, "meldb_relay_bytes_received_total");
        let outb =
            metric(m1, "meldb_relay_bytes_sent_total") - metric(m0, "meldb_relay_bytes_sent_total");
        writeln!(
            out,
            "relay bytes: {inb} in, {outb} out = {:.0} in and {:.0} out per write (RelayMetrics, frames included)",
            inb as f64 / n,
            outb as f64 / n,
        )?;
    }
    out.flush()?;

    // Convergence: wait for the relay's state too, then compare.
    // Every logged write, and whatever else the relay holds: a replica
    // (the relay too) lacking any of it is behind.
    let mut full = target.clone();
    let mut watched = clients.watched.clone();
    if let Some(l) = local {
        full.merge(&l.store.lock().version_vector());
        watched.push(Watched::Replica(l.store.clone()));
    }
    let converged_vv = all_cover(&watched, &full, Instant::now() + args.deadline).await;
    let _ = stop_idle.send(true);
    let client_error = clients.stop().await;
    for t in idle_tasks {
        let _ = t.await;
    }
    // The replicas compared: every full client, or what a fresh replica
    // gets from the relay in one sync (light clients hold no state); and
    // the in-process relay.
    let mut all: Vec<SharedStore> = if args.light && args.clients > 0 {
        vec![fresh_replica(schema, url, listen_token.clone()).await?]
    } else {
        stores.clone()
    };
    if let Some(l) = local {
        all.push(l.store.clone());
    }
    // Replicas still behind at the deadline are slow, not wrong: they are
    // counted, and the digests compared are those of the caught-up ones.
    let mut digests = BTreeMap::<[u8; 32], usize>::new();
    let mut behind = 0;
    for s in &all {
        let store = s.lock();
        if full.le(&store.version_vector()) {
            *digests.entry(store.digest()?).or_default() += 1;
        } else {
            behind += 1;
        }
    }
    let want = expected(&prefix, args.keys, &done);
    let mut problem = None;
    // The relay (last) if it caught up, or the last client that did.
    for store in all.iter().rev().filter(|_| args.clients > 0) {
        let store = store.lock();
        if full.le(&store.version_vector()) {
            problem = check_values(&store, &prefix, &want)?;
            break;
        }
    }
    let sum: i64 = want.sums.values().sum();
    let tags: usize = want.sets.values().map(BTreeSet::len).sum();
    let ok = digests.len() <= 1
        && (behind < all.len() || all.is_empty())
        && problem.is_none()
        && writer_error.is_none()
        && client_error.is_none()
        && (args.clients > 0 || idle_up as usize == args.idle);
    writeln!(
        out,
        "convergence: {} ({} replicas{}{}, {behind} still behind at the deadline, {} distinct digests among the others; counters sum {sum} as issued: {}; sets hold {tags} tags as issued: {}{})",
        if ok { "ok" } else { "FAILED" },
        all.len(),
        if args.light { ", a fresh one synced from the relay" } else { "" },
        if local.is_some() { " with the relay" } else { "" },
        digests.len(),
        if problem.is_none() { "yes" } else { "no" },
        if problem.is_none() { "yes" } else { "no" },
        problem.as_ref().map_or(String::new(), |p| format!("; first difference: {p}")),
    )?;
    if let Some(e) = &client_error {
        writeln!(out, "convergence: a light client's connection failed: {e}")?;
    }
    if !converged_vv {
        writeln!(
            out,
            "convergence: some replicas still lacked changes at the deadline"
        )?;
    }
    out.flush()?;
    if ok {
        Ok(())
    } else {
        Err(CliError::Bench("the replicas did not converge".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(site: SiteId, first: u64, last: u64) -> Done {
        Done {
            client: 0,
            site,
            first,
            last,
            at: Instant::now(),
        }
    }

    #[test]
    fn pending_writes_arrive_when_covered_in_any_order() {
        let (a, b) = (SiteId::from_bytes([1; 16]), SiteId::from_bytes([2; 16]));
        let mut pending = Pending::default();
        for d in [done(a, 1, 2), done(a, 3, 3), done(a, 4, 5), done(b, 1, 1)] {
            pending.add(d);
        }
        let mut vv = VersionVector::new();
        // a's later write first: the one below it is still missing.
        vv.insert(a, 3, 3);
        let mut arrived = Vec::new();
        pending.take_covered(&vv, None, |d| arrived.push((d.first, d.last)));
        assert_eq!(arrived, vec![(3, 3)]);
        // Only the sites named are looked at.
        vv.insert(a, 1, 2);
        vv.insert(b, 1, 1);
        let only_b = BTreeSet::from([b]);
        arrived.clear();
        pending.take_covered(&vv, Some(&only_b), |d| arrived.push((d.first, d.last)));
        assert_eq!(arrived, vec![(1, 1)]);
        arrived.clear();
        pending.take_covered(&vv, None, |d| arrived.push((d.first, d.last)));
        assert_eq!(arrived, vec![(1, 2)]);
        // A write is covered only when all of its dots are.
        vv.insert(a, 4, 4);
        pending.take_covered(&vv, None, |_| panic!("4..=5 is not all there"));
        assert_eq!(pending.len(), 1);
    }
}
