//! What the protocol core needs of the replica it syncs: the [`Replica`]
//! trait. `Session` reads and writes through it alone, so the protocol
//! does not depend on how a replica keeps its state; [`Store`] (one SQLite
//! database) is today's implementation, and a relay over another database
//! is another.
//!
//! Every method is one atomic step of the replica's own: an apply commits
//! or changes nothing, which is what lets the session acknowledge a batch
//! only after it committed.

use crate::changeset::{ChangeCursor, ChangePage, Changeset};
use crate::clock::SiteId;
use crate::crdt::RowClock;
use crate::error::Result;
use crate::mutator::{PendingMutation, PullReport, PullResponse, Push, PushResult};
use crate::resolve::{Rejection, Writer};
use crate::store::{ApplyReport, SiteBinding, Store};
use crate::value::Value;
use crate::version::VersionVector;

/// A replica a session can sync.
pub trait Replica {
    /// This replica's site id.
    fn site_id(&self) -> SiteId;
    /// Its schema's name and version (sessions between schemas of
    /// different names are refused).
    fn schema_name_and_version(&self) -> (String, u32);
    /// Whether it is the authority (runs pushed mutations).
    fn is_authority(&self) -> bool;
    /// The dots it has.
    fn version_vector(&self) -> VersionVector;
    /// A page of what it has that `vv` lacks: at most `limit` rows (at
    /// least one) after `from` (from the start if `None`), in its own order
    /// (table, then row), and the cursor to continue after them. A page
    /// lists every value column of its tables, and a page that is not the
    /// last has at least one row; the session joins the pages and drops
    /// unused columns itself (see [`crate::changeset::ChangePage`]). Each
    /// page is read from the replica's state at the time: a write between
    /// pages is in a later page or, behind the cursor, in no cover sent,
    /// so the peer's next `Want` asks for it.
    fn changes_since(
        &self,
        vv: &VersionVector,
        from: Option<&ChangeCursor>,
        limit: usize,
    ) -> Result<ChangePage>;
    /// Merges a peer's changes, attributed to `writer`, atomically.
    fn apply_from(&mut self, changes: &Changeset, writer: &Writer) -> Result<ApplyReport>;
    /// The authority's rejections of `peer`'s changes that `vv` has not
    /// seen the corrections of.
    fn rejections_for(&self, peer: SiteId, vv: &VersionVector) -> Result<Vec<Rejection>>;
    /// Records rejections of this replica's changes; returns how many were
    /// new.
    fn receive_rejections(&mut self, notices: &[Rejection]) -> Result<usize>;
    /// Whether it queues mutations for an authority.
    fn queues_mutations(&self) -> bool;
    /// Its queued mutations, oldest first.
    fn pending_mutations(&self) -> Result<Vec<PendingMutation>>;
    /// What it asks an authority for: its version vector and the oldest
    /// pending mutation (`u64::MAX` when none).
    fn pull_request(&self) -> Result<(VersionVector, u64)>;
    /// At the authority: runs a client's pushed mutations. Their state is
    /// kept under (`token`, `push.client`), `token` being the name of the
    /// token the client connected with (`""` without tokens): no token
    /// reads or changes another's. `writer` is what the token vouches for:
    /// mutators see it, and resolvers judge their effects as its changes.
    fn process_push(&mut self, token: &str, writer: &Writer, push: &Push) -> Result<PushResult>;
    /// At the authority: what a client lacks, with the word on its
    /// mutations from `first_pending` on (the state of (`token`,
    /// `client`) only).
    fn pull_for(
        &self,
        token: &str,
        client: SiteId,
        have: &VersionVector,
        first_pending: u64,
    ) -> Result<PullResponse>;
    /// The clock of its row of `table` with `key`, live or deleted (`None`:
    /// no such row): which writes of that row it has.
    fn row_clock(&self, table: &str, key: &[Value]) -> Result<Option<RowClock>>;
    /// The token `site` is bound to (see [`Replica::bind_site`]).
    fn site_owner(&self, site: SiteId) -> Result<Option<String>>;
    /// Binds `site` to the token named `token`, durably, unless another
    /// token has it or `token` holds `limit` sites already
    /// ([`crate::store::SiteBinding`]). A replica that serves peers with
    /// tokens keeps these; one binding per site.
    fn bind_site(&mut self, token: &str, site: SiteId, limit: usize) -> Result<SiteBinding>;
    /// On a client: undo, apply, drop what was processed, replay, in one
    /// step.
    fn apply_pull(&mut self, response: &PullResponse) -> Result<PullReport>;
    /// The bytes its state takes in storage, if it knows: what a relay's
    /// storage quota is checked against. `None` (the default) exempts it.
    fn stored_bytes(&self) -> Result<Option<u64>> {
        Ok(None)
    }
    /// How many rows carry a write of this replica's own that a peer with
    /// `vv` lacks: what a continuous sync's status reports as pending. The
    /// default reads those rows ([`Replica::changes_since`], page by page)
    /// and counts the ones with a cover of this site; the store's reads
    /// only its own dots ([`Store::local_changes_missing_from`]).
    fn local_changes_missing_from(&self, vv: &VersionVector) -> Result<u64> {
        let site = self.site_id();
        let mut count = 0;
        let mut from: Option<ChangeCursor> = None;
        loop {
            let page = self.changes_since(vv, from.as_ref(), 1000)?;
            count += page
                .changes
                .tables
                .iter()
                .flat_map(|t| &t.rows)
                .filter(|row| row.covers.iter().any(|c| c.site == site))
                .count() as u64;
            match page.next {
                // A cursor that does not move on would loop forever.
                Some(next) if from.as_ref().is_none_or(|f| next > *f) => from = Some(next),
                _ => return Ok(count),
            }
        }
    }
}

impl Replica for Store {
    fn site_id(&self) -> SiteId {
        Store::site_id(self)
    }

    fn schema_name_and_version(&self) -> (String, u32) {
        (self.schema().name.clone(), self.schema().version)
    }

    fn is_authority(&self) -> bool {
        Store::is_authority(self)
    }

    fn version_vector(&self) -> VersionVector {
        Store::version_vector(self)
    }

    fn changes_since(
        &self,
        vv: &VersionVector,
        from: Option<&ChangeCursor>,
        limit: usize,
    ) -> Result<ChangePage> {
        Store::changes_page(self, vv, from, limit)
    }

    fn apply_from(&mut self, changes: &Changeset, writer: &Writer) -> Result<ApplyReport> {
        Store::apply_from(self, changes, writer)
    }

    fn rejections_for(&self, peer: SiteId, vv: &VersionVector) -> Result<Vec<Rejection>> {
        Store::rejections_for(self, peer, vv)
    }

    fn receive_rejections(&mut self, notices: &[Rejection]) -> Result<usize> {
        Store::receive_rejections(self, notices)
    }

    fn queues_mutations(&self) -> bool {
        Store::queues_mutations(self)
    }

    fn pending_mutations(&self) -> Result<Vec<PendingMutation>> {
        Store::pending_mutations(self)
    }

    fn pull_request(&self) -> Result<(VersionVector, u64)> {
        Store::pull_request(self)
    }

    fn process_push(&mut self, token: &str, writer: &Writer, push: &Push) -> Result<PushResult> {
        Store::process_push_from(self, token, writer, push)
    }

    fn pull_for(
        &self,
        token: &str,
        client: SiteId,
        have: &VersionVector,
        first_pending: u64,
    ) -> Result<PullResponse> {
        Store::pull_for_as(self, token, client, have, first_pending)
    }

    fn row_clock(&self, table: &str, key: &[Value]) -> Result<Option<RowClock>> {
        Store::row_clock(self, table, key)
    }

    fn site_owner(&self, site: SiteId) -> Result<Option<String>> {
        Store::site_owner(self, site)
    }

    fn bind_site(&mut self, token: &str, site: SiteId, limit: usize) -> Result<SiteBinding> {
        Store::bind_site(self, token, site, limit)
    }

    fn apply_pull(&mut self, response: &PullResponse) -> Result<PullReport> {
        Store::apply_pull(self, response)
    }

    fn local_changes_missing_from(&self, vv: &VersionVector) -> Result<u64> {
        Store::local_changes_missing_from(self, vv)
    }

    /// The database's pages times their size (WAL frames included, the
    /// free pages too: what the file takes once checkpointed).
    fn stored_bytes(&self) -> Result<Option<u64>> {
        let bytes: i64 = self.conn().query_row(
            "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
            [],
            |r| r.get(0),
        )?;
        Ok(Some(u64::try_from(bytes).unwrap_or(0)))
    }
}
