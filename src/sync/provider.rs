//! Where a session's replica comes from: a [`ReplicaProvider`] hands the
//! relay, for each [`Namespace`], the [`SharedReplica`] that sessions in
//! that namespace sync.
//!
//! A connection's namespace is what its token grants ([`Grant::namespace`]).
//! Until the client's `Hello` has been authorized, and for a client whose
//! token is refused, a connection is served by the default namespace's
//! replica (the `Hello` has no namespace field: the token decides, never the
//! client). So every provider serves [`Namespace::default`]; a
//! [`SharedStore`] is the provider of one replica for every namespace,
//! which is today's relay.
//!
//! The invariant: one session syncs one replica from its `Hello` on. The
//! relay asks the provider once per authorized connection, and every batch
//! that connection sends is applied to, and every change it is sent read
//! from, the replica the provider returned then.
//!
//! [`Grant::namespace`]: super::session::Grant::namespace

use super::error::SyncError;
pub use super::namespace::Namespace;
use super::shared::{SharedReplica, SharedStore};

/// Where a relay's sessions get their replicas.
pub trait ReplicaProvider: Send + Sync + 'static {
    /// The shared handle it hands out.
    type Replica: SharedReplica;

    /// The replica that sessions in `namespace` sync. Called on tokio's
    /// blocking pool, once per connection (it may open a database). An
    /// error ends that connection with a notice saying why: a namespace
    /// this relay does not serve is [`SyncError::UnknownNamespace`].
    fn replica(&self, namespace: &Namespace) -> Result<Self::Replica, SyncError>;
}

/// One store for every namespace: the relay of a single replica.
impl ReplicaProvider for SharedStore {
    type Replica = SharedStore;

    fn replica(&self, _namespace: &Namespace) -> Result<SharedStore, SyncError> {
        Ok(self.clone())
    }
}
