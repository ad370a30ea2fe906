//! Who may write as which site: the identity a token gives a peer, and the
//! checks a serving session makes with it (sans-IO, over a [`Replica`]).
//!
//! A site id is a replica's own name for its writes (every dot is
//! `(site, seq)`). A peer that could write as another replica's site could
//! forge that replica's history: the victim's own next sync then fails for
//! good ("a peer has seen write N of this replica"), and on an authority
//! it could make the victim drop mutations that never ran. So on a replica
//! that serves peers with tokens:
//!
//! - **A token binds the sites it writes as.** A read-write token's hello
//!   names the peer's site; the site must be listed for the token in the
//!   tokens file (`sites`), or already bound to it, or free and then bound
//!   to it, durably, before the hello is answered, while the token holds
//!   fewer than `max_sites` bound sites. A site listed for one token, or
//!   bound to one, is refused to every other. A new site after
//!   `Store::rotate_site_id` binds the same way.
//! - **A token sends only writes of its bound sites.** A batch is refused,
//!   before anything of it is applied, if a row carries a *new* write of
//!   a site not bound to the token: a row-clock entry `(site, n)` beyond
//!   what the serving replica's own clock of that same row has of `site`,
//!   or a cover of that site's dots the replica lacks. So a client may
//!   send back rows it received (and its own edits of them: their other
//!   sites' entries are what the replica already has of the row), but
//!   neither a dot the replica lacks nor a known dot of another site
//!   reused on a different row. Forwarding other replicas' new writes (a
//!   replica that relays for others, another relay) needs the token's
//!   `forward` grant, which trusts the token with every site's writes
//!   (its own hello's site still binds as any other).
//! - **A push is the session's site's.** A push naming another site is
//!   refused; the authority keeps mutation state under (token, site), so
//!   no token reads or changes another's (`Replica::process_push`).
//!
//! Checked are the dots, which decide causality and history. The other
//! fields of a row state (the timestamp and writer that break
//! last-writer-wins ties) are the sender's claim, bounded by the drift
//! limit, as any writer's are.
//!
//! Each refusal is an [`IdentityRefusal`], sent to the peer as an
//! `Unauthorized` notice (a code every protocol version has, so older
//! clients read it and stop retrying quickly).

use super::error::SyncError;
use super::replica::Replica;
use crate::changeset::Changeset;
use crate::clock::SiteId;
use crate::store::SiteBinding;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

/// How many sites a token binds on first use unless its entry says
/// otherwise: a few devices, each rotating its site id now and then.
pub const DEFAULT_MAX_SITES: usize = 16;

/// What a token may write as: its name (bindings and mutation state are
/// kept under it), the sites listed for it, how many more it may bind on
/// first use, and whether it may forward other replicas' writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    token: String,
    sites: Vec<SiteId>,
    max_sites: usize,
    forward: bool,
    /// Every site a tokens file lists, with its token: none of them may be
    /// bound by another token, connected or not.
    pub(super) listed: Arc<BTreeMap<SiteId, String>>,
}

impl Identity {
    /// The identity of the token named `token`: no listed site, up to
    /// [`DEFAULT_MAX_SITES`] bound on first use, no forwarding.
    pub fn new(token: impl Into<String>) -> Identity {
        Identity {
            token: token.into(),
            sites: Vec::new(),
            max_sites: DEFAULT_MAX_SITES,
            forward: false,
            listed: Arc::default(),
        }
    }

    /// The sites it writes as without binding them.
    #[must_use]
    pub fn sites(mut self, sites: Vec<SiteId>) -> Identity {
        self.sites = sites;
        self
    }

    /// How many sites it may bind on first use (0: only listed ones).
    #[must_use]
    pub fn max_sites(mut self, n: usize) -> Identity {
        self.max_sites = n;
        self
    }

    /// Whether it may send new writes of sites not bound to it.
    #[must_use]
    pub fn forward(mut self, forward: bool) -> Identity {
        self.forward = forward;
        self
    }

    /// The sites listed for every token (a tokens file sets this).
    pub(crate) fn with_listed(mut self, listed: Arc<BTreeMap<SiteId, String>>) -> Identity {
        self.listed = listed;
        self
    }

    /// The token's name.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The sites listed for it.
    pub fn listed_sites(&self) -> &[SiteId] {
        &self.sites
    }

    /// Whether it may forward other replicas' writes.
    pub fn forwards(&self) -> bool {
        self.forward
    }

    /// The token a tokens file lists `site` for, if any.
    fn listed_owner(&self, site: SiteId) -> Option<&str> {
        if self.sites.contains(&site) {
            return Some(&self.token);
        }
        self.listed.get(&site).map(String::as_str)
    }

    /// Whether `site` is this token's: listed for it, or bound to it.
    fn owns(&self, replica: &(impl Replica + ?Sized), site: SiteId) -> Result<bool, SyncError> {
        if let Some(owner) = self.listed_owner(site) {
            return Ok(owner == self.token);
        }
        Ok(replica.site_owner(site)?.as_deref() == Some(self.token.as_str()))
    }

    /// Checks that a peer saying hello as `site` may write as it, binding
    /// the site (durably) if it is free and the token is under its limit.
    pub(crate) fn bind_hello(
        &self,
        replica: &mut (impl Replica + ?Sized),
        site: SiteId,
    ) -> Result<(), SyncError> {
        if let Some(owner) = self.listed_owner(site) {
            if owner == self.token {
                return Ok(());
            }
            return Err(self.taken(site, owner));
        }
        // A site that already has writes here but no owner (its token has
        // not said hello since an upgrade from a format without bindings,
        // or its writes came through a forwarding token or an open relay)
        // cannot be claimed by the first token that names it: site ids are
        // in every row clock, so that would let any token take over a
        // device's history. The operator lists it for its token.
        if replica.site_owner(site)?.is_none()
            && replica
                .version_vector()
                .site(&site)
                .is_some_and(|r| r.max() > 0)
        {
            return Err(IdentityRefusal::Unclaimed {
                token: self.token.clone(),
                site,
            }
            .into());
        }
        let binding = replica.bind_site(&self.token, site, self.max_sites)?;
        if binding.is_bound() {
            return Ok(());
        }
        Err(match binding {
            SiteBinding::Taken { token } => self.taken(site, &token),
            SiteBinding::Full { limit } => IdentityRefusal::Full {
                token: self.token.clone(),
                site,
                limit,
            }
            .into(),
            // Refused, for a reason this build does not know.
            _ => SyncError::Unexpected {
                got: "Hello",
                during: "binding its site (an outcome this build does not know)",
            },
        })
    }

    fn taken(&self, site: SiteId, owner: &str) -> SyncError {
        IdentityRefusal::Taken {
            token: self.token.clone(),
            site,
            owner: owner.to_owned(),
        }
        .into()
    }

    /// Refuses `changes` if a row carries a write `replica` does not have
    /// of a site that is not this token's: a row-clock entry beyond the
    /// replica's own clock of that row (a dot it lacks, or one it has only
    /// for another row: a forged reuse), or a cover of dots it lacks. `own`
    /// caches the sites found to be the token's during the session.
    pub(crate) fn check_batch(
        &self,
        replica: &(impl Replica + ?Sized),
        own: &mut BTreeSet<SiteId>,
        changes: &Changeset,
    ) -> Result<(), SyncError> {
        if self.forward {
            return Ok(());
        }
        let have = replica.version_vector();
        let mut is_own = |site: SiteId| -> Result<bool, SyncError> {
            if own.contains(&site) {
                return Ok(true);
            }
            let owned = self.owns(replica, site)?;
            if owned {
                own.insert(site);
            }
            Ok(owned)
        };
        for table in &changes.tables {
            for row in &table.rows {
                for c in &row.covers {
                    let had = have
                        .site(&c.site)
                        .is_some_and(|r| r.contains_all(c.first, c.last));
                    if !had && !is_own(c.site)? {
                        return Err(self.foreign(c.site));
                    }
                }
                let mut local = None;
                for &(site, seq) in row.state.clock.entries() {
                    if seq == 0 || is_own(site)? {
                        continue;
                    }
                    let clock = match &local {
                        Some(clock) => clock,
                        None => local.insert(
                            replica
                                .row_clock(&table.table, &row.key)?
                                .unwrap_or_default(),
                        ),
                    };
                    if clock.get(&site) < seq {
                        return Err(self.foreign(site));
                    }
                }
            }
        }
        Ok(())
    }

    fn foreign(&self, site: SiteId) -> SyncError {
        IdentityRefusal::ForeignWrite {
            token: self.token.clone(),
            site,
        }
        .into()
    }
}

/// Why a peer may not write as a site. Shown to the peer (never the other
/// token's name, which only the relay's log gets, through `Debug`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdentityRefusal {
    /// The hello's site is another token's.
    Taken {
        /// The peer's token.
        token: String,
        /// The site it claimed.
        site: SiteId,
        /// The token the site belongs to.
        owner: String,
    },
    /// The hello's site is free, but the token holds its limit of sites.
    Full {
        /// The peer's token.
        token: String,
        /// The site it claimed.
        site: SiteId,
        /// The token's limit.
        limit: usize,
    },
    /// The hello's site has writes on this relay but is bound to no
    /// token: only the tokens file can give it to one (`sites`).
    Unclaimed {
        /// The peer's token.
        token: String,
        /// The site it claimed.
        site: SiteId,
    },
    /// A batch carried a new write of a site that is not the token's.
    ForeignWrite {
        /// The peer's token.
        token: String,
        /// The site of the write.
        site: SiteId,
    },
    /// A push named another site than the session's.
    OtherSite {
        /// The peer's token.
        token: String,
        /// The site the push named.
        claimed: SiteId,
        /// The site the session's hello named.
        session: SiteId,
    },
}

impl fmt::Display for IdentityRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdentityRefusal::Taken { token, site, .. } => write!(
                f,
                "token {token:?} may not write as site {site}: it belongs to another token \
                 (a copied database needs Store::rotate_site_id)"
            ),
            IdentityRefusal::Full { token, site, limit } => write!(
                f,
                "token {token:?} may not write as site {site}: it already writes as {limit} \
                 sites, its limit (list the site under `sites` in the tokens file, or raise \
                 `max_sites`)"
            ),
            IdentityRefusal::Unclaimed { token, site } => write!(
                f,
                "token {token:?} may not write as site {site}: that site already has writes \
                 on this relay but is bound to no token, so the first to name it cannot take \
                 it (the relay's operator lists it under `sites` of its token in the tokens \
                 file)"
            ),
            IdentityRefusal::ForeignWrite { token, site } => write!(
                f,
                "token {token:?} sent a new write of site {site}, which is not bound to it: \
                 nothing was applied (forwarding other replicas' writes needs `forward = true` \
                 on the token)"
            ),
            IdentityRefusal::OtherSite {
                token,
                claimed,
                session,
            } => write!(
                f,
                "token {token:?} pushed mutations for site {claimed} in a session opened as \
                 site {session}: nothing was run"
            ),
        }
    }
}
