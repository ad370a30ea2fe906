//! Site bindings: which token a site id belongs to, on a replica that
//! serves other replicas (a relay, `meldb serve --tokens`).
//!
//! A relay accepts a peer's writes only as the sites bound to the peer's
//! token (the sync layer decides what that means for a batch; see
//! `meldb::sync::identity`). A binding is recorded here the first time a
//! token says hello as a site no token has, while the token has fewer than
//! its limit, and is never moved by this module: the invariants are
//!
//! - one site, at most one token (`site` is the primary key), so a second
//!   token can never take a site over, whatever it claims;
//! - a token holds at most `limit` recorded sites, checked and recorded
//!   in one write transaction, so two connections of one token binding at
//!   once cannot exceed it;
//! - a binding is durable before the hello that made it is answered
//!   (the transaction commits first), so it survives a restart.
//!
//! Tokens are named by the name the relay's tokens file gives them, not by
//! their secret, so a token whose secret is changed keeps its sites.

use super::Store;
use crate::clock::SiteId;
use crate::crdt::RowClock;
use crate::error::Result;
use crate::value::Value;
use rusqlite::{params, OptionalExtension};

/// The bindings table (`IF NOT EXISTS`: added to older databases when they
/// are opened; format 2 has it).
pub const BINDING_DDL: &str = "
CREATE TABLE IF NOT EXISTS meldb_site_bindings (
    site BLOB PRIMARY KEY, token TEXT NOT NULL, bound_ms INTEGER NOT NULL) STRICT;
CREATE INDEX IF NOT EXISTS meldb_site_bindings_token ON meldb_site_bindings (token);
";

/// What [`Store::bind_site`] found or did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SiteBinding {
    /// The site was already bound to this token.
    Bound,
    /// The site was free and is now bound to this token (committed).
    Recorded,
    /// The site is bound to another token (named here for the relay's
    /// log; never tell the peer).
    Taken {
        /// The token it belongs to.
        token: String,
    },
    /// The site is free, but the token already holds `limit` sites.
    Full {
        /// The token's limit.
        limit: usize,
    },
}

impl SiteBinding {
    /// Whether the token may write as the site.
    pub fn is_bound(&self) -> bool {
        matches!(self, SiteBinding::Bound | SiteBinding::Recorded)
    }
}

impl Store {
    /// The clock of the row of `table` with `key` (live or deleted): what
    /// this replica has seen of it. `None` if it has no such row (or no
    /// such table). A relay compares a peer's row with it to tell a write
    /// it already has from a new one.
    pub fn row_clock(&self, table: &str, key: &[Value]) -> Result<Option<RowClock>> {
        let Some(layout) = self.table(table) else {
            return Ok(None);
        };
        Ok(super::rows::load_by_key(&self.conn, layout, &self.sites, key)?.map(|r| r.state.clock))
    }

    /// The token `site` is bound to, if any.
    pub fn site_owner(&self, site: SiteId) -> Result<Option<String>> {
        Ok(self
            .conn
            .prepare_cached("SELECT token FROM meldb_site_bindings WHERE site = ?1")?
            .query_row([site.as_bytes().as_slice()], |r| r.get(0))
            .optional()?)
    }

    /// The sites bound to `token`, in site order.
    pub fn sites_bound_to(&self, token: &str) -> Result<Vec<SiteId>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT site FROM meldb_site_bindings WHERE token = ?1 ORDER BY site",
        )?;
        let rows = stmt.query_map([token], |r| r.get::<_, Vec<u8>>(0))?;
        let mut out = Vec::new();
        for bytes in rows {
            let bytes = bytes?;
            let site = <[u8; 16]>::try_from(bytes.as_slice())
                .map(SiteId::from_bytes)
                .map_err(|_| {
                    super::rows::corrupt("meldb_site_bindings", "a site is not 16 bytes")
                })?;
            out.push(site);
        }
        Ok(out)
    }

    /// Binds `site` to `token` unless another token has it or `token`
    /// already holds `limit` sites; durable once this returns
    /// [`SiteBinding::Recorded`].
    pub fn bind_site(&mut self, token: &str, site: SiteId, limit: usize) -> Result<SiteBinding> {
        if let Some(owner) = self.site_owner(site)? {
            return Ok(if owner == token {
                SiteBinding::Bound
            } else {
                SiteBinding::Taken { token: owner }
            });
        }
        let tx = self.transaction()?;
        let conn = &tx.store.conn;
        // Read again under the write lock: another connection may have
        // bound it (or another site of this token) meanwhile.
        let owner: Option<String> = conn
            .prepare_cached("SELECT token FROM meldb_site_bindings WHERE site = ?1")?
            .query_row([site.as_bytes().as_slice()], |r| r.get(0))
            .optional()?;
        let outcome = match owner {
            Some(owner) if owner == token => SiteBinding::Bound,
            Some(owner) => SiteBinding::Taken { token: owner },
            None => {
                let held: i64 = conn
                    .prepare_cached("SELECT count(*) FROM meldb_site_bindings WHERE token = ?1")?
                    .query_row([token], |r| r.get(0))?;
                if usize::try_from(held).unwrap_or(usize::MAX) >= limit {
                    SiteBinding::Full { limit }
                } else {
                    let now = i64::try_from(tx.store.clock.now_ms()).unwrap_or(i64::MAX);
                    conn.prepare_cached(
                        "INSERT INTO meldb_site_bindings (site, token, bound_ms) VALUES (?1, ?2, ?3)",
                    )?
                    .execute(params![site.as_bytes().as_slice(), token, now])?;
                    SiteBinding::Recorded
                }
            }
        };
        if outcome == SiteBinding::Recorded {
            tx.commit()?;
        }
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Schema;

    fn schema() -> Schema {
        Schema::from_toml_str(
            "name = \"t\"\nversion = 1\n[[table]]\nname = \"item\"\nprimary_key = [\"sku\"]\n\
             [[table.column]]\nname = \"sku\"\ntype = \"text\"\n",
            "t.toml",
        )
        .expect("schema")
    }

    fn site(n: u8) -> SiteId {
        SiteId::from_bytes([n; 16])
    }

    #[test]
    fn a_site_binds_to_one_token_up_to_its_limit_and_stays_bound() -> Result<()> {
        let dir = tempfile::tempdir()
            .map_err(|e| super::super::rows::corrupt("tempdir", e.to_string()))?;
        let path = dir.path().join("relay.db");
        let mut store = Store::open(&path, &schema())?;
        assert_eq!(store.bind_site("a", site(1), 2)?, SiteBinding::Recorded);
        assert_eq!(store.bind_site("a", site(1), 2)?, SiteBinding::Bound);
        assert_eq!(
            store.bind_site("b", site(1), 2)?,
            SiteBinding::Taken { token: "a".into() }
        );
        assert_eq!(store.bind_site("a", site(2), 2)?, SiteBinding::Recorded);
        assert_eq!(
            store.bind_site("a", site(3), 2)?,
            SiteBinding::Full { limit: 2 }
        );
        assert!(!SiteBinding::Full { limit: 2 }.is_bound());
        drop(store);
        let mut store = Store::open(&path, &schema())?;
        assert_eq!(store.sites_bound_to("a")?, vec![site(1), site(2)]);
        assert_eq!(store.site_owner(site(2))?.as_deref(), Some("a"));
        assert_eq!(store.site_owner(site(3))?, None);
        assert_eq!(
            store.bind_site("a", site(3), 2)?,
            SiteBinding::Full { limit: 2 }
        );
        assert_eq!(store.bind_site("b", site(3), 1)?, SiteBinding::Recorded);
        Ok(())
    }
}
