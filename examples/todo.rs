//! A to-do list on meldb: typed rows (`insert_row`, `query_as`), a live query that prints the list
//! whenever it changes, and sync in the background with a relay, its
//! status shown as it goes.
//!
//! ```text
//! meldb relay --db relay.db --schema schema/todo.toml --listen 127.0.0.1:7420 &
//! cargo run --example todo -- --db alice.db --relay tcp://127.0.0.1:7420 --add "buy milk"
//! cargo run --example todo -- --db bob.db --relay tcp://127.0.0.1:7420 --add "walk the dog" --done "buy milk"
//! ```
//!
//! Options: `--db FILE` (the replica; created if missing), `--relay URL`
//! (`tcp://`, `tls://`, `ws://` or `wss://`; none: offline), `--token T`,
//! `--add TITLE` and `--done TITLE` (repeatable: a new to-do, or every
//! to-do with that title marked done), `--like TITLE`, `--tag TITLE=TAG`,
//! `--until N` (stop once the list has N to-dos and sync is idle) and
//! `--seconds S` (stop after S seconds in any case; default 10).
//!
//! It prints one line per event, so a script (or the test that runs it
//! in CI, tests/example_todo.rs) can follow it:
//!
//! ```text
//! list: 1 to-do
//!   [ ] buy milk
//! sync: idle, up to date (pending: 0 changes, 0 mutations)
//! ```

use meldb::sync::{ContinuousSync, PeerUrl, SessionConfig, SharedStore, SyncState};
use meldb::{Schema, StoreOptions};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// The schema is the repository's own `schema/todo.toml`.
const SCHEMA: &str = include_str!("../schema/todo.toml");

/// One to-do as the app sees it: `done` is an integer column read as a
/// `bool`, `likes` a grow-only counter, `tags` an add-wins set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Todo {
    id: String,
    title: String,
    done: bool,
    likes: i64,
    tags: Vec<String>,
}

/// What the command line asked for.
#[derive(Debug, Default)]
struct Args {
    db: Option<String>,
    relay: Option<PeerUrl>,
    token: Option<String>,
    add: Vec<String>,
    done: Vec<String>,
    like: Vec<String>,
    tag: Vec<(String, String)>,
    until: Option<usize>,
    seconds: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        seconds: 10,
        ..Args::default()
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--db" => args.db = Some(value()?),
            "--relay" => {
                let url = value()?;
                args.relay = Some(url.parse().map_err(|e| format!("--relay: {e}"))?);
            }
            "--token" => args.token = Some(value()?),
            "--add" => args.add.push(value()?),
            "--done" => args.done.push(value()?),
            "--like" => args.like.push(value()?),
            "--tag" => {
                let spec = value()?;
                let (title, tag) = spec
                    .split_once('=')
                    .ok_or_else(|| format!("--tag {spec:?}: expected TITLE=TAG"))?;
                args.tag.push((title.to_owned(), tag.to_owned()));
            }
            "--until" => {
                let n = value()?;
                args.until = Some(
                    n.parse()
                        .map_err(|_| format!("--until {n:?}: not a count"))?,
                );
            }
            "--seconds" => {
                let s = value()?;
                args.seconds = s
                    .parse()
                    .map_err(|_| format!("--seconds {s:?}: not a count"))?;
            }
            other => return Err(format!("unknown option {other:?} (see examples/todo.rs)")),
        }
    }
    Ok(args)
}

fn main() {
    if let Err(e) = run() {
        eprintln!("todo: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    let schema = Schema::from_toml_str(SCHEMA, "schema/todo.toml")?;
    let options = StoreOptions::new();
    let store = match &args.db {
        Some(path) => options.open(path, &schema)?,
        None => options.open_in_memory(&schema)?,
    };
    let site = store.site_id();
    let store = SharedStore::new(store);

    println!("replica: site {site}");

    add(&store, &args.add)?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(live(store, args))
}

/// Adds each `--add` to-do, one transaction each: they are durable
/// before any sync starts, and go out with it.
fn add(store: &SharedStore, titles: &[String]) -> meldb::Result<()> {
    for title in titles {
        // A random id per to-do, so that replicas never pick the same one.
        let todo = Todo {
            id: meldb::SiteId::random().to_string(),
            title: title.clone(),
            done: false,
            likes: 0,
            tags: Vec::new(),
        };
        store.write(|tx| tx.insert_row("todo", &todo))?;
    }
    Ok(())
}

/// An edit of the to-dos with a given title: it waits until such a
/// to-do is on the list (it may arrive from the relay), then applies to
/// every one of them.
#[derive(Debug, Clone)]
enum Edit {
    Done(String),
    Like(String),
    Tag(String, String),
}

impl Edit {
    fn title(&self) -> &str {
        match self {
            Edit::Done(t) | Edit::Like(t) | Edit::Tag(t, _) => t,
        }
    }

    /// Applies the edit if its to-do is on `list`; false if not yet.
    fn apply(&self, store: &SharedStore, list: &[Todo]) -> meldb::Result<bool> {
        let targets: Vec<&Todo> = list.iter().filter(|t| t.title == self.title()).collect();
        for todo in &targets {
            let id = todo.id.as_str();
            store.write(|tx| match self {
                Edit::Done(_) => tx.set("todo", id, "done", true),
                Edit::Like(_) => tx.increment("todo", id, "likes", 1),
                Edit::Tag(_, tag) => tx.add_to_set("todo", id, "tags", tag.as_str()),
            })?;
        }
        Ok(!targets.is_empty())
    }
}

/// The whole list, in the order it is shown: the live query's SQL.
const LIST: &str = "SELECT id, title, done, likes, tags FROM todo ORDER BY title, id";

fn show(todos: &[Todo]) {
    let s = if todos.len() == 1 { "" } else { "s" };
    println!("list: {} to-do{s}", todos.len());
    for t in todos {
        let mark = if t.done { "x" } else { " " };
        let mut line = format!("  [{mark}] {}", t.title);
        if t.likes > 0 {
            line.push_str(&format!(" ({} likes)", t.likes));
        }
        if !t.tags.is_empty() {
            line.push_str(&format!(" #{}", t.tags.join(" #")));
        }
        println!("{line}");
    }
}

/// Shows the list whenever it changes and the sync's status whenever it
/// moves, until `--until` is met or `--seconds` pass; then stops the sync
/// cleanly (what is unsent stays in the replica for next time).
async fn live(store: SharedStore, args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.seconds);
    // The live query: its callback runs after each commit that changed
    // the list (local writes, batches from the relay), outside the
    // store's lock; it hands the update to this loop.
    let (tx, mut updates) = tokio::sync::mpsc::unbounded_channel();
    let _watch = store.watch_as::<Todo>(LIST, &[], move |update| {
        let _ = tx.send(update);
    })?;
    let mut shown = Vec::new();
    let mut waiting: Vec<Edit> = (args.done.iter().cloned().map(Edit::Done))
        .chain(args.like.iter().cloned().map(Edit::Like))
        .chain(args.tag.iter().cloned().map(|(t, g)| Edit::Tag(t, g)))
        .collect();

    let sync = args.relay.clone().map(|url| {
        ContinuousSync::new(store.clone(), url)
            .config(SessionConfig::default().token(args.token.clone()))
            .spawn()
    });
    let mut status = sync.as_ref().map(|s| s.status());
    let mut last_state = String::new();
    let started = Instant::now();
    // Whether the sync's status has moved since the last local write: an
    // idle status from before it says nothing about that write.
    let mut heard_since_write = true;

    loop {
        // Edits whose to-do is on the list now; each write changes the
        // store, and the next pass shows the list it made.
        let mut still = Vec::new();
        for edit in waiting {
            if edit.apply(&store, &shown)? {
                // Not settled until the sync has moved since this write.
                heard_since_write = false;
            } else {
                still.push(edit);
            }
        }
        waiting = still;
        let idle = match &mut status {
            Some(status) => {
                let now = status.borrow_and_update().clone();
                let line = now.to_string();
                if line != last_state {
                    println!("sync: {line}");
                    if let Some(failure) = now.state.error() {
                        println!("sync: last error: {}", failure.error());
                    }
                    last_state = line;
                }
                heard_since_write
                    && matches!(now.state, SyncState::Idle)
                    && now.pending_changes == Some(0)
            }
            None => true,
        };
        if args.until.is_some_and(|n| shown.len() >= n) && idle && waiting.is_empty() {
            println!(
                "done: {} to-do(s) after {:.1} s",
                shown.len(),
                started.elapsed().as_secs_f64()
            );
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {
                for edit in &waiting {
                    println!("not done: no to-do titled {:?}", edit.title());
                }
                println!("done: time is up with {} to-do(s)", shown.len());
                break;
            }
            // The store changed (a local write or a batch from the relay):
            // show the list if the query's result moved.
            Some(update) = updates.recv() => {
                let diff = &update.diff;
                if !(diff.added.is_empty() && diff.removed.is_empty() && diff.changed.is_empty()) {
                    println!(
                        "changed: {} added, {} removed, {} edited",
                        diff.added.len(),
                        diff.removed.len(),
                        diff.changed.len()
                    );
                }
                shown = update.rows;
                show(&shown);
            }
            Ok(()) = async {
                match &mut status {
                    Some(status) => status.changed().await,
                    None => std::future::pending().await,
                }
            } => heard_since_write = true,
        }
    }
    if let Some(sync) = sync {
        let mut status = sync.status();
        sync.stop().await?;
        // Counted once more at the stop: what the relay has not
        // acknowledged stays in the replica for the next run.
        println!("sync: {}", status.borrow_and_update().clone());
    }
    Ok(())
}
