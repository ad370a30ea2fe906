//! The sync protocol core over a deterministic, hostile simulated network.
//!
//! 3–5 replicas make random writes and open sessions with each other (some
//! live, some one-shot) over links that drop, duplicate and reorder
//! messages and get cut at random; sessions time out and ask again. Every
//! message goes through the real codec. Then the faults stop, every pair
//! syncs over a perfect link, and:
//!
//! - all digests and version vectors are equal;
//! - every batch a sender saw acknowledged was in the receiver's version
//!   vector at the moment of the acknowledgement's arrival (acknowledged
//!   means committed);
//! - nothing committed is lost: each key's stock is the sum of every
//!   increment committed anywhere, its tags every tag added anywhere.
//!
//! `MELDB_SIM_SEEDS=N` runs N seeds (default 24); `MELDB_SIM_STEPS=N`
//! makes each run longer (default 400 steps); `MELDB_SEED=S` replays one.

mod common;

use common::{inventory, replica, Rng, TestResult, T0};
use meldb::{
    codec::{decode_message, encode_message, MAX_MESSAGE_PAYLOAD},
    sync::{Grant, Message, Session, SessionConfig, SyncError},
    ManualTime, Store, Value, VersionVector,
};
use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// One connection: sessions at both ends and the messages on the wire
/// each way (`wire[0]`: from `a` to `b`).
struct Link {
    a: usize,
    b: usize,
    sa: Session,
    sb: Session,
    wire: [Vec<Vec<u8>>; 2],
}

/// What every replica must end up with.
#[derive(Default)]
struct Expected {
    stock: BTreeMap<String, i64>,
    tags: BTreeMap<String, BTreeSet<String>>,
}

struct Net {
    rng: Rng,
    time: ManualTime,
    stores: Vec<Store>,
    links: Vec<Link>,
    expected: Expected,
    faults: BTreeMap<&'static str, u64>,
}

const KEYS: u64 = 6;

impl Net {
    fn new(seed: u64) -> meldb::Result<Net> {
        let mut rng = Rng::new(seed);
        let time = ManualTime::new(T0);
        let n = 3 + rng.below(3) as u8;
        let schema = inventory();
        let stores = (1..=n)
            .map(|i| replica(&schema, i, &time))
            .collect::<meldb::Result<_>>()?;
        Ok(Net {
            rng,
            time,
            stores,
            links: Vec::new(),
            expected: Expected::default(),
            faults: BTreeMap::new(),
        })
    }

    fn count(&mut self, what: &'static str) {
        *self.faults.entry(what).or_default() += 1;
    }

    fn write(&mut self, r: usize) -> TestResult {
        let sku = format!("k{}", self.rng.below(KEYS));
        let store = &mut self.stores[r];
        let op = self.rng.below(4);
        let amount = self.rng.below(9) as i64 - 4;
        let tag = format!("t{}", self.rng.below(5));
        let name = format!("n{}", self.rng.below(100));
        let result = store.write(|tx| match op {
            0 => tx.insert(
                "item",
                &[("sku", sku.as_str().into()), ("stock", amount.into())],
            ),
            1 => tx.increment("item", sku.as_str(), "stock", amount),
            2 => tx.add_to_set("item", sku.as_str(), "tags", &tag),
            _ => tx.set("item", sku.as_str(), "name", name.as_str()),
        });
        if result.is_ok() {
            match op {
                0 | 1 => *self.expected.stock.entry(sku).or_default() += amount,
                2 => {
                    self.expected.tags.entry(sku).or_default().insert(tag);
                }
                _ => {}
            }
        }
        for link in &mut self.links {
            if link.a == r {
                link.sa.local_changed(&self.stores[r])?;
            } else if link.b == r {
                link.sb.local_changed(&self.stores[r])?;
            }
        }
        Ok(())
    }

    fn connect(&mut self, a: usize, b: usize, live: bool) {
        let config = SessionConfig::default()
            .live(live)
            .batch_rows(1 + self.rng.below(3) as usize)
            .window(1 + self.rng.below(3) as usize);
        let sa = Session::initiator(&self.stores[a], config.clone());
        let sb = Session::responder(
            &self.stores[b],
            config,
            Arc::new(|_| Some(Grant::read_write())),
        );
        self.links.push(Link {
            a,
            b,
            sa,
            sb,
            wire: [Vec::new(), Vec::new()],
        });
    }

    /// Moves what the sessions of link `l` want to say onto its wire.
    fn flush(&mut self, l: usize) {
        let link = &mut self.links[l];
        while let Some(m) = link.sa.poll_message() {
            link.wire[0].push(encode_message(&m));
        }
        while let Some(m) = link.sb.poll_message() {
            link.wire[1].push(encode_message(&m));
        }
    }

    /// Delivers message `i` of direction `dir` on link `l`; checks that an
    /// acknowledgement only ever arrives for what the receiver committed.
    fn deliver(&mut self, l: usize, dir: usize, i: usize, keep: bool) -> TestResult {
        let link = &mut self.links[l];
        let bytes = if keep {
            link.wire[dir][i].clone()
        } else {
            link.wire[dir].remove(i)
        };
        let message = decode_message(&bytes, MAX_MESSAGE_PAYLOAD)?;
        let (to, session, sender_store) = if dir == 0 {
            (link.b, &mut link.sb, link.a)
        } else {
            (link.a, &mut link.sa, link.b)
        };
        let is_ack = matches!(message, Message::Ack(_));
        let ended = match session.receive(&mut self.stores[to], message) {
            Ok(()) => false,
            // Duplicates and reordering can break the protocol's order (a
            // second Hello, a message before Hello); the session ends, like
            // a cut connection.
            Err(SyncError::Unexpected { .. }) | Err(SyncError::Refused { .. }) => true,
            Err(e) => return Err(format!("replica {to}: {e}").into()),
        };
        if is_ack {
            let acked = session.acknowledged().clone();
            let peer_vv = self.stores[sender_store].version_vector();
            if !acked.le(&peer_vv) {
                return Err(format!(
                    "replica {sender_store} acknowledged {acked:?} but has {peer_vv:?}"
                )
                .into());
            }
        }
        if ended {
            self.count("session ended by a fault");
        }
        self.flush(l);
        Ok(())
    }

    fn step(&mut self) -> TestResult {
        self.time
            .advance(Duration::from_millis(1 + self.rng.below(20)));
        let n = self.stores.len() as u64;
        match self.rng.below(100) {
            0..=29 => {
                let r = self.rng.below(n) as usize;
                self.write(r)?;
            }
            30..=34 if self.links.len() < 6 => {
                let a = self.rng.below(n) as usize;
                let b = (a + 1 + self.rng.below(n - 1) as usize) % n as usize;
                let live = self.rng.chance(0.5);
                self.connect(a, b, live);
                self.flush(self.links.len() - 1);
            }
            35..=37 if !self.links.is_empty() => {
                let l = self.rng.below(self.links.len() as u64) as usize;
                self.links.swap_remove(l);
                self.count("connection cut");
            }
            38..=40 if !self.links.is_empty() => {
                let l = self.rng.below(self.links.len() as u64) as usize;
                let link = &mut self.links[l];
                link.sa.retry(&self.stores[link.a])?;
                link.sb.retry(&self.stores[link.b])?;
                self.count("timeout retry");
                self.flush(l);
            }
            _ if !self.links.is_empty() => {
                let l = self.rng.below(self.links.len() as u64) as usize;
                let dir = self.rng.below(2) as usize;
                let waiting = self.links[l].wire[dir].len() as u64;
                if waiting == 0 {
                    return Ok(());
                }
                // Mostly in order; sometimes any message overtakes.
                let i = if self.rng.chance(0.2) {
                    self.count("reordered");
                    self.rng.below(waiting) as usize
                } else {
                    0
                };
                if self.rng.chance(0.05) {
                    self.links[l].wire[dir].remove(i);
                    self.count("dropped");
                } else {
                    let keep = self.rng.chance(0.05);
                    if keep {
                        self.count("duplicated");
                    }
                    self.deliver(l, dir, i, keep)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The faults stop: fresh one-shot sessions over a perfect link, every
    /// pair, until a sweep changes nothing.
    fn heal(&mut self) -> TestResult {
        self.links.clear();
        let n = self.stores.len();
        for _sweep in 0..3 {
            let before: Vec<VersionVector> =
                self.stores.iter().map(Store::version_vector).collect();
            for a in 0..n {
                for b in 0..n {
                    if a == b {
                        continue;
                    }
                    self.connect(a, b, false);
                    let l = self.links.len() - 1;
                    self.flush(l);
                    while !self.links[l].wire.iter().all(Vec::is_empty) {
                        let dir = usize::from(self.links[l].wire[0].is_empty());
                        self.deliver(l, dir, 0, false)?;
                    }
                    let link = &self.links[l];
                    if !(link.sa.is_caught_up() && link.sb.is_caught_up()) {
                        return Err(format!("perfect session {a}→{b} did not complete").into());
                    }
                    self.links.clear();
                }
            }
            let after: Vec<VersionVector> = self.stores.iter().map(Store::version_vector).collect();
            if before == after {
                return Ok(());
            }
        }
        Ok(())
    }

    fn check(&self) -> TestResult {
        let digest = self.stores[0].digest()?;
        let vv = self.stores[0].version_vector();
        for (r, store) in self.stores.iter().enumerate() {
            if store.digest()? != digest {
                return Err(format!("replica {r}'s digest differs from replica 0's").into());
            }
            if store.version_vector() != vv {
                return Err(format!("replica {r}'s version vector differs").into());
            }
            let mut rows = store
                .conn()
                .prepare("SELECT sku, stock, tags FROM item ORDER BY sku")?;
            let rows = rows.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })?;
            let mut seen = BTreeSet::new();
            for row in rows {
                let (sku, stock, tags) = row?;
                let want_stock = self.expected.stock.get(&sku).copied().unwrap_or(0);
                if stock != want_stock {
                    return Err(format!(
                        "replica {r}: {sku} stock {stock}, committed {want_stock}"
                    )
                    .into());
                }
                let tags: BTreeSet<String> = serde_json::from_str(&tags)?;
                let want_tags = self.expected.tags.get(&sku).cloned().unwrap_or_default();
                if tags != want_tags {
                    return Err(
                        format!("replica {r}: {sku} tags {tags:?}, added {want_tags:?}").into(),
                    );
                }
                seen.insert(sku);
            }
            for sku in self.expected.stock.keys().chain(self.expected.tags.keys()) {
                if !seen.contains(sku) {
                    return Err(format!("replica {r} lost row {sku}").into());
                }
            }
        }
        Ok(())
    }
}

fn run(seed: u64, steps: u64) -> Result<BTreeMap<&'static str, u64>, Box<dyn std::error::Error>> {
    let mut net = Net::new(seed)?;
    for _ in 0..steps {
        net.step()?;
    }
    net.heal()?;
    net.check()?;
    Ok(net.faults)
}

#[test]
fn replicas_converge_over_a_lossy_reordering_network() -> TestResult {
    let steps = env("MELDB_SIM_STEPS", 400);
    let seeds: Vec<u64> = match std::env::var("MELDB_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        Some(seed) => vec![seed],
        None => (0..env("MELDB_SIM_SEEDS", 24)).collect(),
    };
    let mut total: BTreeMap<&str, u64> = BTreeMap::new();
    for seed in seeds {
        let faults = run(seed, steps)
            .map_err(|e| format!("seed {seed}: {e} (replay with MELDB_SEED={seed})"))?;
        for (k, v) in faults {
            *total.entry(k).or_default() += v;
        }
    }
    // The faults the test is about must actually have happened.
    for what in [
        "dropped",
        "duplicated",
        "reordered",
        "connection cut",
        "timeout retry",
    ] {
        assert!(
            total.get(what).copied().unwrap_or(0) > 0,
            "no {what} happened: {total:?}"
        );
    }
    println!("faults injected: {total:?}");
    Ok(())
}

#[test]
fn values_stay_readable() -> TestResult {
    // The expected-state check reads tags as JSON; make sure an empty set
    // reads as [] so "no tags" compares equal to an empty expectation.
    let time = ManualTime::new(T0);
    let mut store = replica(&inventory(), 1, &time)?;
    store.write(|tx| tx.insert("item", &[("sku", "a".into())]))?;
    let tags = common::query_one(&store, "SELECT tags FROM item")?;
    assert_eq!(tags, Value::Text("[]".into()));
    Ok(())
}
