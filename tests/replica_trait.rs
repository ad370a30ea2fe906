//! The protocol core syncs any [`Replica`], not only a `Store`: two
//! replicas that wrap a store and log what the session asked of them sync
//! to equal states, and the log shows every batch went through the trait.

mod common;

use common::{inventory, site, TestResult};
use meldb::{
    sync::{Grant, Replica, Session, SessionConfig},
    ApplyReport, ChangeCursor, ChangePage, Changeset, PendingMutation, PullReport, PullResponse,
    Push, PushResult, Rejection, SiteBinding, SiteId, Store, StoreOptions, VersionVector, Writer,
};
use std::sync::Arc;

/// A store that records which replica operations the session used.
struct Logged {
    store: Store,
    log: Vec<&'static str>,
}

impl Replica for Logged {
    fn site_id(&self) -> SiteId {
        self.store.site_id()
    }
    fn schema_name_and_version(&self) -> (String, u32) {
        (
            self.store.schema().name.clone(),
            self.store.schema().version,
        )
    }
    fn is_authority(&self) -> bool {
        self.store.is_authority()
    }
    fn version_vector(&self) -> VersionVector {
        self.store.version_vector()
    }
    fn changes_since(
        &self,
        vv: &VersionVector,
        from: Option<&ChangeCursor>,
        limit: usize,
    ) -> meldb::Result<ChangePage> {
        self.store.changes_page(vv, from, limit)
    }
    fn apply_from(&mut self, changes: &Changeset, writer: &Writer) -> meldb::Result<ApplyReport> {
        self.log.push("apply_from");
        self.store.apply_from(changes, writer)
    }
    fn rejections_for(&self, peer: SiteId, vv: &VersionVector) -> meldb::Result<Vec<Rejection>> {
        self.store.rejections_for(peer, vv)
    }
    fn receive_rejections(&mut self, notices: &[Rejection]) -> meldb::Result<usize> {
        self.log.push("receive_rejections");
        self.store.receive_rejections(notices)
    }
    fn queues_mutations(&self) -> bool {
        self.store.queues_mutations()
    }
    fn pending_mutations(&self) -> meldb::Result<Vec<PendingMutation>> {
        self.store.pending_mutations()
    }
    fn pull_request(&self) -> meldb::Result<(VersionVector, u64)> {
        self.store.pull_request()
    }
    fn process_push(
        &mut self,
        token: &str,
        writer: &Writer,
        push: &Push,
    ) -> meldb::Result<PushResult> {
        self.log.push("process_push");
        self.store.process_push_from(token, writer, push)
    }
    fn pull_for(
        &self,
        token: &str,
        client: SiteId,
        have: &VersionVector,
        first_pending: u64,
    ) -> meldb::Result<PullResponse> {
        self.store.pull_for_as(token, client, have, first_pending)
    }
    fn row_clock(
        &self,
        table: &str,
        key: &[meldb::Value],
    ) -> meldb::Result<Option<meldb::crdt::RowClock>> {
        self.store.row_clock(table, key)
    }
    fn site_owner(&self, site: SiteId) -> meldb::Result<Option<String>> {
        self.store.site_owner(site)
    }
    fn bind_site(&mut self, token: &str, site: SiteId, limit: usize) -> meldb::Result<SiteBinding> {
        self.log.push("bind_site");
        self.store.bind_site(token, site, limit)
    }
    fn apply_pull(&mut self, response: &PullResponse) -> meldb::Result<PullReport> {
        self.log.push("apply_pull");
        self.store.apply_pull(response)
    }
}

fn logged(n: u8, skus: &[&str]) -> meldb::Result<Logged> {
    let mut store = StoreOptions::new()
        .site_id(site(n))
        .open_in_memory(&inventory())?;
    store.write(|tx| {
        for sku in skus {
            tx.insert("item", &[("sku", (*sku).into())])?;
        }
        Ok(())
    })?;
    Ok(Logged {
        store,
        log: Vec::new(),
    })
}

#[test]
fn a_session_syncs_any_replica() -> TestResult {
    let (mut ra, mut rb) = (logged(1, &["a1", "a2", "a3"])?, logged(2, &["b1"])?);
    let config = SessionConfig::default()
        .batch_rows(1)
        .token(Some("t".into()));
    let mut a = Session::initiator(&ra, config.clone());
    let mut b = Session::responder(&rb, config, Arc::new(|_| Some(Grant::read_write())));
    let mut quiet = false;
    for _ in 0..1000 {
        let mut moved = false;
        while let Some(m) = a.poll_message() {
            b.receive(&mut rb, m)?;
            moved = true;
        }
        while let Some(m) = b.poll_message() {
            a.receive(&mut ra, m)?;
            moved = true;
        }
        if !moved {
            quiet = true;
            break;
        }
    }
    assert!(quiet, "the sessions never went quiet");
    assert!(a.is_caught_up() && b.is_caught_up());
    assert_eq!(ra.store.digest()?, rb.store.digest()?);
    // One row per batch: b applied a's three rows in three batches, a
    // applied b's one; every batch through the trait.
    assert_eq!(rb.log.iter().filter(|&&op| op == "apply_from").count(), 3);
    assert_eq!(ra.log.iter().filter(|&&op| op == "apply_from").count(), 1);
    Ok(())
}
