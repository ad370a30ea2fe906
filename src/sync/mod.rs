//! Sync over a network: one protocol for peer-to-peer and the relay.
//!
//! Layers, each in its own (private) module; their types are re-exported
//! here:
//!
//! - [`message`]: what the two sides say (the bytes are
//!   [`crate::codec::encode_message`]'s business);
//! - `session`: the protocol core ([`Session`]), a state machine with no
//!   I/O that brings two replicas up to date in both directions in bounded
//!   batches, each applied atomically and acknowledged after it committed;
//! - `batch`: cutting changesets into batches;
//! - `transport`: messages over any byte stream ([`Connection`], tokio);
//! - `url`, `connect`, `listen`, `net`: peers by URL ([`PeerUrl`]:
//!   `tcp://`, `tls://`, `ws://`, `wss://`), connecting to them
//!   ([`Connector`], [`sync_once_url`], [`sync_continuously_url`]) and
//!   listening on them ([`UrlListener`], whose TLS and WebSocket
//!   handshakes run in each connection's task), with their errors
//!   ([`TransportError`]);
//! - `tls` (feature `tls`): rustls configs (`ServerTls`, `ClientTls`);
//!   `websocket` (feature `websocket`): a WebSocket as a byte stream;
//! - `shared`: a store shared by the app and its sync tasks
//!   ([`SharedStore`]), and what sync needs of any shared replica
//!   ([`SharedReplica`]);
//! - `provider`: where a relay session's replica comes from, by
//!   namespace ([`ReplicaProvider`]); `directory`: one database per
//!   namespace under a data directory ([`DirectoryProvider`]);
//! - `driver`: one loop that runs a session over a connection, and the
//!   calls [`sync_once`], [`sync_once_tcp`], [`sync_continuously`] and
//!   [`accept_once`];
//! - `continuous`, `status`, `backoff`: a continuous sync an app can watch
//!   ([`ContinuousSync`], [`SyncHandle`]): its [`SyncStatus`] (connecting,
//!   connected, syncing, idle, offline with the [`SyncFailure`] and the
//!   next retry, stopped; what is still to deliver), and reconnect delays
//!   with jitter;
//! - `limits`: the relay's connection slots, write rates and quotas
//!   ([`WriteRate`], [`LimitExceeded`]);
//! - `relay`: the server many clients sync through ([`Relay`]; [`Tokens`]
//!   says who may connect, `identity` which sites each may write as,
//!   [`Identity`]); `meldb serve` is the same server for one direct peer;
//! - `metrics`: what a relay counts ([`RelayMetrics`]), in the Prometheus
//!   text format; `admin`: a small HTTP server for `/metrics` and
//!   `/healthz` on an address of its own ([`AdminServer`]).
//!   `reload`: changing a running relay's tokens, and closing the sessions
//!   they revoke ([`Reloader`]).
//!
//! ```no_run
//! # async fn example(store: meldb::Store) -> Result<(), meldb::sync::SyncError> {
//! use meldb::sync::{sync_once_tcp, SessionConfig, SharedStore};
//! let store = SharedStore::new(store);
//! let config = SessionConfig::default().token(Some("s3cret-till-1".into()));
//! let report = sync_once_tcp(&store, "127.0.0.1:7420", config).await?;
//! println!("sent {} rows, received {}", report.stats.rows_sent, report.stats.rows_received);
//! # Ok(()) }
//! ```
//!
//! An interrupted sync loses nothing: every applied batch is committed,
//! and the next session's version-vector exchange sends only what is still
//! missing.

mod admin;
mod backoff;
mod batch;
mod connect;
mod continuous;
mod directory;
mod driver;
mod error;
mod identity;
mod limits;
mod listen;
mod listener;
mod live;
pub mod message;
mod metrics;
mod namespace;
mod net;
mod provider;
mod relay;
mod reload;
mod replica;
mod session;
mod shared;
mod status;
#[cfg(feature = "tls")]
mod tls;
mod tokens;
mod transport;
mod url;
mod vv_diff;
#[cfg(feature = "websocket")]
mod websocket;
pub(crate) mod wire;

pub use admin::{AdminConfig, AdminServer};
pub use connect::{sync_continuously_url, sync_once_url, Connector};
pub use continuous::{ContinuousSync, SyncHandle};
pub use directory::{Creation, DirectoryProvider, Setup};
pub use driver::{accept_once, sync_continuously, sync_once, sync_once_tcp, Backoff, SyncReport};
pub use error::SyncError;
pub use identity::{Identity, IdentityRefusal, DEFAULT_MAX_SITES};
pub use limits::{LimitExceeded, WriteRate};
pub use listen::{ListenOptions, UrlListener};
pub use listener::{Listener, Peer};
pub use message::{Message, NoticeCode};
pub use metrics::{RelayMetrics, MAX_TABLE_LABELS};
pub use net::{NetStream, TransportError};
pub use provider::{Namespace, ReplicaProvider};
pub use relay::{Relay, RelayConfig, REFUSALS_IN_FLIGHT};
pub use reload::Reloader;
pub use replica::Replica;
/// The rustls this crate's TLS is built on, for [`ServerTls::from_config`]
/// and [`ClientTls::from_config`].
#[cfg(feature = "tls")]
pub use rustls;
pub use session::{Access, Authorize, Grant, PeerInfo, Session, SessionConfig, SyncStats};
pub use shared::{SharedReplica, SharedStore, DEFAULT_READERS};
pub use status::{SyncFailure, SyncState, SyncStatus};
#[cfg(feature = "tls")]
pub use tls::{ClientTls, ServerTls};
pub use tokens::Tokens;
pub use transport::{ByteCounts, Connection, MAX_HELLO_PAYLOAD};
pub use url::{PeerUrl, Scheme, UrlError};

#[cfg(test)]
mod tests;
