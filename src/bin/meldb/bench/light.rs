//! `meldb bench-relay --light`: clients that cost the load generator
//! little, so the relay is what is measured.
//!
//! A light client is two connections. Its *pusher* writes through a real
//! in-memory replica (the same CRDT writes on the same shared keys as a
//! full client) and sends each commit to the relay as a live batch of the
//! rows the relay lacks; it never asks for anything (no `Want`), so the
//! relay sends it nothing. Its *listener* asks for everything once, then
//! decodes each batch the relay sends, adds the batch's covers to a
//! version vector and acknowledges it, without applying anything.
//!
//! Invariant: a listener's version vector holds exactly the dots of the
//! batches it has received and acknowledged, so a write counts as arrived
//! at a listener when the relay has sent it there, as it does at a full
//! client (whose version vector moves when it commits the batch). What the
//! relay serves is checked at the end by a fresh full replica that syncs
//! once from it.

use super::Heard;
use meldb::codec::Compression;
use meldb::sync::message::{Ack, Batch, Hello, Sent, Want};
use meldb::sync::{Connection, Connector, Message, PeerUrl, SharedStore, SyncError};
use meldb::{Changeset, SiteId, VersionVector};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::watch;

/// What a light client's connection reports when it ends.
pub(super) type Ended = Result<(), String>;

/// The bench's hello, live: from a light client's connections
/// (`accepts_changes`) and from an idle one (not).
pub(super) fn hello(site: SiteId, token: Option<String>, accepts_changes: bool) -> Message {
    Message::Hello(Hello {
        site,
        schema: "bench_relay".to_string(),
        schema_version: 1,
        token,
        accepts_changes,
        live: true,
        authority: false,
        namespace: None,
        compression: Compression::ACCEPTED.to_vec(),
    })
}

/// Adds every cover of `changes` to `vv`.
fn add_covers(vv: &mut VersionVector, changes: &Changeset) {
    for table in &changes.tables {
        for row in &table.rows {
            for c in &row.covers {
                vv.insert(c.site, c.first, c.last);
            }
        }
    }
}

/// The answer to a `Want` from the relay: no batches. A pusher sends its
/// rows unasked, a listener has none.
fn nothing_for(want: &Want, next_seq: u64) -> Message {
    Message::Sent(Sent {
        want: want.id,
        first: next_seq,
        last: next_seq - 1,
        mutations: None,
    })
}

async fn send(conn: &mut Connection, message: &Message, who: &str) -> Ended {
    conn.send(message)
        .await
        .map_err(|e| format!("{who}: sending {}: {e}", message.name()))
}

/// A light client's sending half: on every change of `store`, sends the
/// rows the relay lacks (what `sent` does not hold) as one batch. `sent`
/// starts as what the relay is known to have of this replica's rows (the
/// seed rows, for every client but the one that pushes them). Counts
/// itself in `up` once the relay's hello arrives. Ends at `stop`, or with
/// an error when the relay refuses or closes.
pub(super) async fn pusher(
    url: PeerUrl,
    store: SharedStore,
    token: Option<String>,
    mut sent: VersionVector,
    up: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
) -> Ended {
    let site = store.lock().site_id();
    let who = format!("pusher {site}");
    let mut conn = Connector::new()
        .connect(&url)
        .await
        .map_err(|e| format!("{who}: connecting: {e}"))?;
    let mut changed = store.subscribe();
    send(&mut conn, &hello(site, token, true), &who).await?;
    let mut greeted = false;
    let mut next_seq = 1u64;
    loop {
        let push = tokio::select! {
            got = conn.recv() => match got {
                Some(Ok(Message::Hello(_))) if !greeted => {
                    greeted = true;
                    up.fetch_add(1, Ordering::Relaxed);
                    true
                }
                Some(Ok(Message::Want(want))) => {
                    send(&mut conn, &nothing_for(&want, next_seq), &who).await?;
                    false
                }
                Some(Ok(Message::Notice(n))) => {
                    return Err(format!("{who}: the relay closed the session: {}", n.message));
                }
                Some(Ok(_)) => false,
                Some(Err(e)) => return Err(format!("{who}: {e}")),
                None if *stop.borrow() => return Ok(()),
                None => return Err(format!("{who}: the relay closed the connection")),
            },
            res = changed.changed() => {
                if res.is_err() {
                    return Ok(());
                }
                greeted
            }
            _ = stop.changed() => return Ok(()),
        };
        if !push {
            continue;
        }
        let store2 = store.clone();
        let have = sent.clone();
        let changes = tokio::task::spawn_blocking(move || store2.lock().changes_since(&have))
            .await
            .map_err(|e| format!("{who}: reading its changes: {e}"))?
            .map_err(|e| format!("{who}: reading its changes: {e}"))?;
        if changes.is_empty() {
            continue;
        }
        add_covers(&mut sent, &changes);
        let batch = Message::Changes(Batch {
            seq: next_seq,
            changes,
        });
        next_seq += 1;
        send(&mut conn, &batch, &who).await?;
    }
}

/// A light client's receiving half: says hello as `site`, asks for
/// everything once, then records the covers of every batch in `heard`
/// and acknowledges it. Counts itself in `up` once the relay's hello
/// arrives. Ends at `stop`, or with an error when the relay refuses or
/// closes.
pub(super) async fn listener(
    url: PeerUrl,
    site: SiteId,
    token: Option<String>,
    heard: Arc<Heard>,
    up: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
) -> Ended {
    let who = format!("listener {}", heard.client);
    let mut conn = Connector::new()
        .connect(&url)
        .await
        .map_err(|e: SyncError| format!("{who}: connecting: {e}"))?;
    send(&mut conn, &hello(site, token, true), &who).await?;
    let mut greeted = false;
    loop {
        tokio::select! {
            got = conn.recv() => match got {
                Some(Ok(Message::Hello(_))) if !greeted => {
                    greeted = true;
                    up.fetch_add(1, Ordering::Relaxed);
                    let want = Want { id: 1, have: VersionVector::new(), first_pending: None };
                    send(&mut conn, &Message::Want(want), &who).await?;
                }
                Some(Ok(Message::Changes(batch))) => {
                    heard.add(&batch.changes);
                    let ack = Message::Ack(Ack {
                        seq: batch.seq,
                        applied: batch.changes.len() as u64,
                    });
                    send(&mut conn, &ack, &who).await?;
                }
                Some(Ok(Message::Want(want))) => {
                    send(&mut conn, &nothing_for(&want, 1), &who).await?;
                }
                Some(Ok(Message::Notice(n))) => {
                    return Err(format!("{who}: the relay closed the session: {}", n.message));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(format!("{who}: {e}")),
                None if *stop.borrow() => return Ok(()),
                None => return Err(format!("{who}: the relay closed the connection")),
            },
            _ = stop.changed() => return Ok(()),
        }
    }
}

impl Heard {
    fn add(&self, changes: &Changeset) {
        {
            let state = &mut *self.lock();
            for c in changes
                .tables
                .iter()
                .flat_map(|t| &t.rows)
                .flat_map(|r| &r.covers)
            {
                state.vv.insert(c.site, c.first, c.last);
                state.touched.insert(c.site);
            }
        }
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meldb::{Schema, Store};

    #[test]
    fn covers_of_a_commit_are_what_a_listener_records() -> Result<(), Box<dyn std::error::Error>> {
        let schema = Schema::from_toml_str(super::super::SCHEMA, "bench")?;
        let store = Store::open_in_memory(&schema)?;
        let mut store = store;
        store.write(|tx| tx.insert("item", &[("id", "k".into()), ("v", "x".into())]))?;
        store.write(|tx| tx.increment("item", "k", "n", 2))?;
        let changes = store.changes_since(&VersionVector::new())?;
        let heard = Heard::new(0);
        heard.add(&changes);
        assert_eq!(heard.lock().vv, store.version_vector());
        assert_eq!(
            heard.lock().touched.iter().collect::<Vec<_>>(),
            vec![&store.site_id()]
        );
        // What was sent is not read again.
        let mut sent = VersionVector::new();
        add_covers(&mut sent, &changes);
        assert!(store.changes_since(&sent)?.is_empty());
        Ok(())
    }

    #[test]
    fn an_empty_answer_names_no_batch() {
        let want = Want {
            id: 7,
            have: VersionVector::new(),
            first_pending: None,
        };
        match nothing_for(&want, 5) {
            Message::Sent(s) => {
                assert_eq!((s.want, s.first, s.last), (7, 5, 4));
                assert!((s.first..=s.last).next().is_none());
            }
            other => panic!("not a Sent: {other:?}"),
        }
    }
}
