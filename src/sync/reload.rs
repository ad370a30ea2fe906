//! Changing a running relay's tokens ([`Reloader`]), and which live
//! sessions a change revokes.
//!
//! Invariant: a session keeps running only while the relay's current
//! tokens still grant its secret everything the session was given when
//! it said hello: the same client name (site bindings and mutation state
//! are kept under it), the namespace it syncs, the same writer (user and
//! roles) and listed sites, forwarding if it was given forwarding, and read-write
//! access if it was given read-write; and its hello's site listed for no
//! other token. A token removed, its secret changed, or its grant
//! narrowed ends the session with an
//! `Unauthorized` notice ("token revoked: ..."), and nothing it sends
//! after the change is applied: the driver checks before it handles any
//! message (see [`super::driver`]). A grant widened (read-only to
//! read-write, forwarding granted, a higher `max_sites`) keeps the
//! session as it was; the client gets the wider grant when it reconnects.
//!
//! New tokens are swapped in whole: a tokens file that fails to parse is
//! never handed over (the caller keeps the old [`Tokens`], see
//! [`Tokens::load`]), so a bad edit can neither take a relay down nor open
//! it up; and there is no way to go back to "no tokens" (everyone may
//! write) on a running relay.
//!
//! Site bindings are kept per token *name*, in the database. A token
//! re-added under the same name with a new secret is the same client with
//! a rotated secret: it keeps its bound sites (the device keeps writing as
//! its site ids), while every session of the old secret is closed. To give
//! a device a fresh identity (a stolen device replaced, say), add the new
//! secret under a new name: the old name's sites stay bound to the old
//! name, so no one can write as them again.

use super::error::SyncError;
use super::provider::Namespace;
use super::session::{Access, Grant};
use super::tokens::Tokens;
use crate::clock::SiteId;
use std::sync::Arc;
use tokio::sync::watch;

/// The tokens a relay checks, shared by its accept loop and sessions:
/// `None` lets everyone read and write.
pub(crate) type TokensCell = Arc<watch::Sender<Option<Arc<Tokens>>>>;

/// Changes a running relay's tokens (from [`Relay::reloader`](super::Relay::reloader)).
///
/// ```no_run
/// # async fn example(store: meldb::sync::SharedStore) -> Result<(), meldb::sync::SyncError> {
/// use meldb::sync::{Relay, RelayConfig, Tokens};
/// let config = RelayConfig::default().tokens(Tokens::load("tokens.toml")?);
/// let relay = Relay::bind(store, "0.0.0.0:7420", config).await?;
/// let reloader = relay.reloader();
/// // Later, when the file changed (a bad file keeps the old tokens):
/// match Tokens::load("tokens.toml") {
///     Ok(tokens) => reloader.set_tokens(tokens),
///     Err(e) => eprintln!("keeping the old tokens: {e}"),
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Reloader {
    pub(crate) tokens: TokensCell,
}

impl Reloader {
    /// Replaces the relay's tokens: new connections are checked against
    /// `tokens`, and every live session these no longer authorize is
    /// closed with an `Unauthorized` notice (in its own task, before it
    /// handles anything more from its client).
    pub fn set_tokens(&self, tokens: Tokens) {
        self.tokens.send_replace(Some(Arc::new(tokens)));
    }

    /// The tokens the relay checks now (`None`: it was started without
    /// tokens and none were set since).
    pub fn tokens(&self) -> Option<Arc<Tokens>> {
        self.tokens.borrow().clone()
    }
}

/// What a live session was authorized with: enough to tell whether newer
/// tokens still authorize it, without keeping the secret.
#[derive(Debug, Clone)]
pub(crate) struct Held {
    /// The blake3 hash of the secret it presented (`None`: none).
    secret: Option<blake3::Hash>,
    /// The client's name, `None` on a relay without tokens.
    name: Option<String>,
    /// The grant it was given (without the other tokens' listed sites).
    grant: Grant,
    /// The site its hello named.
    site: SiteId,
    /// The namespace it syncs.
    namespace: Namespace,
    /// The tokens it was checked against.
    against: Option<Arc<Tokens>>,
}

impl Held {
    pub(crate) fn new(
        secret: Option<&str>,
        tokens: Option<Arc<Tokens>>,
        grant: Grant,
        site: SiteId,
        namespace: Namespace,
    ) -> Held {
        // The grant as the tokens hold it (the authorizer's copy also
        // carries every token's listed sites, which are checked apart).
        let (name, grant) = match tokens.as_deref().and_then(|t| t.check(secret)) {
            Some((name, held)) => (Some(name.to_string()), held.clone()),
            None => (None, grant),
        };
        Held {
            secret: secret.map(|s| blake3::hash(s.as_bytes())),
            name,
            grant,
            site,
            namespace,
            against: tokens,
        }
    }

    /// Why `current` no longer authorizes this session, if it does not;
    /// `None` also when the tokens did not change since the last check.
    pub(crate) fn revoked_by(&mut self, current: &Option<Arc<Tokens>>) -> Option<SyncError> {
        if same(&self.against, current) {
            return None;
        }
        let reason = revocation(self, current.as_deref());
        if reason.is_none() {
            // Still authorized: check again only when they change again.
            self.against.clone_from(current);
        }
        reason.map(|reason| SyncError::Revoked {
            client: self.name.clone().unwrap_or_else(|| "-".into()),
            reason,
        })
    }
}

fn same(a: &Option<Arc<Tokens>>, b: &Option<Arc<Tokens>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    }
}

/// Why `current` does not authorize what `held` was given (see the
/// module's invariant).
fn revocation(held: &Held, current: Option<&Tokens>) -> Option<&'static str> {
    // No tokens: everyone may read and write.
    let current = current?;
    let Some((name, grant)) = held.secret.and_then(|h| current.check_hash(&h)) else {
        return Some("its token was removed");
    };
    if held.name.as_deref() != Some(name) {
        return Some("its secret now belongs to another client name");
    }
    let old = &held.grant;
    if grant.namespace_for(Some(held.namespace.as_str())).is_none() {
        return Some("its token no longer covers the namespace it syncs");
    }
    if old.access == Access::ReadWrite && grant.access != Access::ReadWrite {
        return Some("its token is read-only now");
    }
    if grant.writer != old.writer {
        return Some("its token's user or roles changed");
    }
    match (&grant.identity, &old.identity) {
        (None, None) => {}
        // How many more sites it may bind matters at the next hello only.
        (Some(new), Some(was)) if new.token() == was.token() => {
            if new.listed_sites() != was.listed_sites() {
                return Some("its token's listed sites changed");
            }
            if was.forwards() && !new.forwards() {
                return Some("its token may no longer forward other sites' writes");
            }
        }
        _ => return Some("its token's identity changed"),
    }
    if let Some(owner) = current.listed_owner(held.site) {
        if Some(owner) != held.name.as_deref() {
            return Some("its site is listed for another token now");
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site() -> SiteId {
        SiteId::from_bytes([7; 16])
    }

    fn tokens(text: &str) -> Option<Arc<Tokens>> {
        match Tokens::from_toml_str(text, "t.toml") {
            Ok(t) => Some(Arc::new(t)),
            Err(e) => panic!("{e}"),
        }
    }

    fn entry(name: &str, secret: &str, more: &str) -> String {
        format!("[[token]]\nname = \"{name}\"\ntoken = \"{secret}\"\n{more}\n")
    }

    fn held(secret: &str, tokens: &Option<Arc<Tokens>>) -> Held {
        let grant = tokens
            .as_deref()
            .and_then(|t| t.check(Some(secret)))
            .map(|(_, g)| g.clone())
            .unwrap_or_else(Grant::read_write);
        Held::new(
            Some(secret),
            tokens.clone(),
            grant,
            site(),
            Namespace::default(),
        )
    }

    #[test]
    fn a_session_ends_when_its_grant_no_longer_covers_it() {
        let rw = "access = \"read-write\"";
        let start = tokens(&(entry("a", "secret-aaa", rw) + &entry("b", "secret-bbb", rw)));
        for (changed, expect) in [
            (entry("b", "secret-bbb", rw), Some("removed")),
            (entry("a", "secret-new", rw), Some("removed")),
            (entry("a2", "secret-aaa", rw), Some("another client")),
            (
                entry("a", "secret-aaa", "access = \"read-only\""),
                Some("read-only"),
            ),
            (
                entry("a", "secret-aaa", &format!("{rw}\nnamespace = \"other\"")),
                Some("namespace"),
            ),
            // Still covering the namespace it syncs, among others: kept.
            (
                entry(
                    "a",
                    "secret-aaa",
                    &format!("{rw}\nnamespaces = [\"default\", \"other\"]"),
                ),
                None,
            ),
            (
                entry("a", "secret-aaa", &format!("{rw}\nroles = [\"boss\"]")),
                Some("roles"),
            ),
            (
                entry(
                    "a",
                    "secret-aaa",
                    &format!("{rw}\nsites = [\"07070707-0707-0707-0707-070707070707\"]"),
                ),
                Some("listed sites changed"),
            ),
            // More sites to bind, or forwarding granted: it keeps what it had.
            (
                entry("a", "secret-aaa", &format!("{rw}\nmax_sites = 2")),
                None,
            ),
            (
                entry("a", "secret-aaa", &format!("{rw}\nforward = true")),
                None,
            ),
            (
                entry("a", "secret-aaa", rw)
                    + &entry(
                        "b",
                        "secret-bbb",
                        &format!("{rw}\nsites = [\"07070707-0707-0707-0707-070707070707\"]"),
                    ),
                Some("listed for another"),
            ),
            // Unchanged for a: it keeps its session.
            (entry("a", "secret-aaa", rw), None),
        ] {
            let mut session = held("secret-aaa", &start);
            let verdict = session.revoked_by(&tokens(&changed)).map(|e| e.to_string());
            match (expect, &verdict) {
                (None, None) => {}
                (Some(needle), Some(message)) if message.contains(needle) => {
                    assert!(message.contains("token revoked"), "{message}");
                }
                _ => panic!("{changed}: expected {expect:?}, got {verdict:?}"),
            }
        }
    }

    #[test]
    fn a_widened_grant_or_the_same_tokens_keep_the_session() {
        let start = tokens(&entry("a", "secret-aaa", "access = \"read-only\""));
        let mut session = held("secret-aaa", &start);
        assert!(session.revoked_by(&start).is_none());
        let wider = tokens(&entry("a", "secret-aaa", "access = \"read-write\""));
        assert!(session.revoked_by(&wider).is_none());
        // Once judged, the same tokens are not judged again.
        assert!(session.revoked_by(&wider).is_none());
        let gone = tokens("");
        assert!(session.revoked_by(&gone).is_some());
    }

    #[test]
    fn a_relay_without_tokens_revokes_its_sessions_once_it_has_some() {
        let mut session = Held::new(
            None,
            None,
            Grant::read_write(),
            site(),
            Namespace::default(),
        );
        assert!(session.revoked_by(&None).is_none());
        let now = tokens(&entry("a", "secret-aaa", "access = \"read-write\""));
        assert!(session.revoked_by(&now).is_some());
    }
}
