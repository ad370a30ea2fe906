//! Limits that hold under attack: which connections may take a slot, and
//! how fast and how much a token may write.
//!
//! Slots. A relay connection holds one slot at a time:
//!
//! - a *pending* slot (`Pending`) from accept until its `Hello` is
//!   authorized, counted against the cap on unauthenticated connections
//!   and, when the peer has an IP address, against that address's own cap;
//! - then a *client* slot (`ClientSlot`), counted against the cap on
//!   connections and against its token's own cap (so one token cannot
//!   take every client slot). `Pending::authenticate` takes the client
//!   slot and gives the pending one back in the same step.
//!
//! So an unauthenticated socket never holds a client slot: however many
//! sockets an attacker without a token opens, or however slowly they
//! speak, the clients' slots stay free, and at most the pending caps are
//! taken (and each pending slot for at most the handshake deadline).
//! Slots are guards: however a connection's task ends, dropping them gives
//! them back.
//!
//! Writes. A batch or push that would write is checked before anything of
//! it is applied (`WriteGate::check`): first the namespace's storage
//! quota (the replica's size plus an estimate of the batch), then the
//! token's write rate (a token bucket of rows). A refusal writes
//! nothing and, for the rate, takes nothing from the bucket.

use super::batch::approx_changeset_bytes;
use super::error::SyncError;
use super::listener::Peer;
use super::message::{Message, NoticeCode};
use super::metrics::{ConnectionGauge, RelayMetrics};
use super::namespace::Namespace;
use super::replica::Replica;
use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use thiserror::Error;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A limit a connection ran into; the notice it is sent says which.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum LimitExceeded {
    /// Every client slot is taken.
    #[error("the relay serves at most {limit} connections; try again later")]
    Connections {
        /// The cap on authenticated connections.
        limit: usize,
    },
    /// Too many connections have not said hello yet.
    #[error("the relay has {limit} connections waiting to authenticate; try again later")]
    Unauthenticated {
        /// The cap on unauthenticated connections.
        limit: usize,
    },
    /// Too many connections from one address have not said hello yet.
    #[error("{limit} connections from {address} are waiting to authenticate; try again later")]
    PerAddress {
        /// The source address (for IPv6, its /64 network).
        address: IpAddr,
        /// The cap per address.
        limit: usize,
    },
    /// The token already holds its share of the client slots.
    #[error(
        "token {token:?} already has {limit} connections open, the relay's limit per token; \
         close one or try again later"
    )]
    PerToken {
        /// The token's name (never its secret).
        token: String,
        /// The cap per token.
        limit: usize,
    },
    /// No authorized `Hello` within the handshake deadline.
    #[error("no hello within {after:?} of connecting")]
    Handshake {
        /// The deadline.
        after: Duration,
    },
    /// The peer read nothing of what was sent to it for too long.
    #[error("the peer read nothing for {after:?}")]
    WriteStalled {
        /// The write timeout.
        after: Duration,
    },
    /// A live peer acknowledges so slowly that what waits to be sent to it
    /// outgrew its bound.
    #[error(
        "this client fell behind: {batches} batches (about {bytes} bytes) were waiting to be \
         sent to it, over the relay's limit of {max_batches} batches or {max_bytes} bytes; \
         nothing is lost: reconnect to resync"
    )]
    Lagging {
        /// Batches that would be queued.
        batches: usize,
        /// Their estimated bytes.
        bytes: usize,
        /// The bound on batches.
        max_batches: usize,
        /// The bound on bytes.
        max_bytes: usize,
    },
    /// The token wrote faster than its rate allows.
    #[error(
        "token {client:?} may write {per_second} rows per second (bursts of {burst}): these \
         {rows} rows were refused and nothing of them was written; retry in {retry_after:?}"
    )]
    WriteRate {
        /// The token's name (or the peer's address without tokens).
        client: String,
        /// Rows (or mutations) refused.
        rows: u64,
        /// The sustained rate.
        per_second: u32,
        /// The burst.
        burst: u32,
        /// When the same write would be admitted.
        retry_after: Duration,
    },
    /// The namespace's database would outgrow its quota.
    #[error(
        "namespace {namespace} is at its storage quota ({used} bytes used, about {incoming} \
         more in this write, quota {quota} bytes): nothing of it was written"
    )]
    Quota {
        /// The namespace.
        namespace: Namespace,
        /// Its database's size now.
        used: u64,
        /// The estimated size of the refused write.
        incoming: u64,
        /// The quota.
        quota: u64,
    },
}

impl LimitExceeded {
    /// The notice the peer gets, if it can be sent one.
    pub(crate) fn notice_code(&self) -> Option<NoticeCode> {
        Some(match self {
            LimitExceeded::Connections { .. }
            | LimitExceeded::Unauthenticated { .. }
            | LimitExceeded::PerAddress { .. }
            | LimitExceeded::PerToken { .. }
            | LimitExceeded::Lagging { .. }
            | LimitExceeded::WriteRate { .. } => NoticeCode::Busy,
            LimitExceeded::Handshake { .. } => NoticeCode::Protocol,
            LimitExceeded::Quota { .. } => NoticeCode::Apply,
            // It reads nothing: there is no one to tell.
            LimitExceeded::WriteStalled { .. } => return None,
        })
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The maps hold plain counters: a panic elsewhere leaves them usable.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The slot accounting of one relay.
#[derive(Debug)]
pub(crate) struct Admission {
    pending: Arc<Semaphore>,
    clients: Arc<Semaphore>,
    by_address: Counts<IpAddr>,
    by_token: Counts<String>,
    max_connections: usize,
    max_unauthenticated: usize,
    max_per_address: usize,
    max_per_token: usize,
    /// Where the slots in use are counted (pending, authorized).
    metrics: Option<Arc<RelayMetrics>>,
}

impl Admission {
    /// Caps on client slots, pending slots and pending slots per address
    /// (each at least 1).
    pub(crate) fn new(
        max_connections: usize,
        max_unauthenticated: usize,
        max_per_address: usize,
    ) -> Admission {
        let max_connections = max_connections.clamp(1, Semaphore::MAX_PERMITS);
        let max_unauthenticated = max_unauthenticated.clamp(1, Semaphore::MAX_PERMITS);
        Admission {
            pending: Arc::new(Semaphore::new(max_unauthenticated)),
            clients: Arc::new(Semaphore::new(max_connections)),
            by_address: Arc::default(),
            by_token: Arc::default(),
            max_connections,
            max_unauthenticated,
            max_per_address: max_per_address.max(1),
            max_per_token: usize::MAX,
            metrics: None,
        }
    }

    /// Caps the client slots one token may hold (at least 1; without
    /// this, a token may hold all of them).
    pub(crate) fn per_token(mut self, max: usize) -> Admission {
        self.max_per_token = max.max(1);
        self
    }

    /// Counts the slots in use in `metrics`' connection gauge.
    pub(crate) fn observed(mut self, metrics: Option<Arc<RelayMetrics>>) -> Admission {
        self.metrics = metrics;
        self
    }

    /// A pending slot for a connection just accepted from `peer`. Peers
    /// without an IP address (in-memory transports) count only against
    /// the cap on unauthenticated connections.
    pub(crate) fn admit(&self, peer: &Peer) -> Result<Pending, LimitExceeded> {
        let address = match peer.addr.parse::<SocketAddr>() {
            Ok(addr) => Some(self.take_address(source_of(addr.ip()))?),
            Err(_) => None,
        };
        let permit = Arc::clone(&self.pending).try_acquire_owned().map_err(|_| {
            LimitExceeded::Unauthenticated {
                limit: self.max_unauthenticated,
            }
        })?;
        Ok(Pending {
            _permit: permit,
            _address: address,
            clients: Arc::clone(&self.clients),
            max_connections: self.max_connections,
            by_token: Arc::clone(&self.by_token),
            max_per_token: self.max_per_token,
            gauge: self.metrics.as_ref().map(RelayMetrics::hold_pending),
        })
    }

    /// `ip` is a source as [`source_of`] gives it.
    fn take_address(&self, ip: IpAddr) -> Result<CountSlot<IpAddr>, LimitExceeded> {
        CountSlot::take(&self.by_address, ip, self.max_per_address).ok_or(
            LimitExceeded::PerAddress {
                address: ip,
                limit: self.max_per_address,
            },
        )
    }

    /// Pending slots in use.
    #[cfg(test)]
    fn pending_in_use(&self) -> usize {
        self.max_unauthenticated - self.pending.available_permits()
    }

    /// Client slots in use.
    #[cfg(test)]
    fn clients_in_use(&self) -> usize {
        self.max_connections - self.clients.available_permits()
    }
}

/// Slots held, by source address or by token name (no entry: none).
type Counts<K> = Arc<Mutex<HashMap<K, usize>>>;

/// One address's share of the pending slots, or one token's of the
/// client slots.
#[derive(Debug)]
struct CountSlot<K: Eq + Hash + Clone> {
    map: Counts<K>,
    key: K,
}

impl<K: Eq + Hash + Clone> CountSlot<K> {
    /// One more slot for `key`, unless it holds `max` already.
    fn take(map: &Counts<K>, key: K, max: usize) -> Option<CountSlot<K>> {
        let mut counts = lock(map);
        let count = counts.entry(key.clone()).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(CountSlot {
            map: Arc::clone(map),
            key,
        })
    }
}

impl<K: Eq + Hash + Clone> Drop for CountSlot<K> {
    fn drop(&mut self) {
        let mut map = lock(&self.map);
        if let Some(count) = map.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                map.remove(&self.key);
            }
        }
    }
}

/// The slot of a connection that has not been authorized yet.
#[derive(Debug)]
pub(crate) struct Pending {
    _permit: OwnedSemaphorePermit,
    _address: Option<CountSlot<IpAddr>>,
    clients: Arc<Semaphore>,
    max_connections: usize,
    by_token: Counts<String>,
    max_per_token: usize,
    gauge: Option<ConnectionGauge>,
}

impl Pending {
    /// Trades this pending slot for a client slot, after a successful
    /// hello with the token named `token` (`None`: a relay without
    /// tokens, where only the cap on connections applies). The pending
    /// slot is given back either way.
    pub(crate) fn authenticate(self, token: Option<&str>) -> Result<ClientSlot, LimitExceeded> {
        let token = match token {
            Some(name) => Some(
                CountSlot::take(&self.by_token, name.to_owned(), self.max_per_token).ok_or_else(
                    || LimitExceeded::PerToken {
                        token: name.to_owned(),
                        limit: self.max_per_token,
                    },
                )?,
            ),
            None => None,
        };
        let permit = Arc::clone(&self.clients).try_acquire_owned().map_err(|_| {
            LimitExceeded::Connections {
                limit: self.max_connections,
            }
        })?;
        let mut gauge = self.gauge;
        if let Some(gauge) = &mut gauge {
            gauge.authorize();
        }
        Ok(ClientSlot {
            _permit: permit,
            _token: token,
            _gauge: gauge,
        })
    }
}

/// The slot of an authorized connection.
#[derive(Debug)]
pub(crate) struct ClientSlot {
    _permit: OwnedSemaphorePermit,
    _token: Option<CountSlot<String>>,
    _gauge: Option<ConnectionGauge>,
}

/// A sustained write rate and the burst above it, in rows (a mutation
/// counts as a row).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteRate {
    /// Rows per second, sustained (at least 1).
    pub per_second: u32,
    /// Rows at once from a full bucket (at least 1).
    pub burst: u32,
}

/// A token bucket: `burst` tokens, refilled at `per_second`.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub(crate) fn new(rate: WriteRate, now: Instant) -> TokenBucket {
        let burst = f64::from(rate.burst.max(1));
        TokenBucket {
            rate: f64::from(rate.per_second.max(1)),
            burst,
            tokens: burst,
            at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.at = now.max(self.at);
    }

    /// Takes `n` tokens if the bucket holds them, or if it is full: a write
    /// larger than the burst passes only from a full bucket and leaves it
    /// in debt, so the average rate holds. Otherwise takes nothing and
    /// says how long until the same write would pass.
    pub(crate) fn take(&mut self, n: u64, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        let n = n as f64;
        let needed = n.min(self.burst);
        if self.tokens >= needed {
            self.tokens -= n;
            return Ok(());
        }
        let wait = (needed - self.tokens) / self.rate;
        // Rounded up to a millisecond, for a readable notice.
        Err(Duration::from_millis((wait * 1000.0).ceil() as u64))
    }

    fn is_full(&self, now: Instant) -> bool {
        let mut probe = self.clone();
        probe.refill(now);
        probe.tokens >= probe.burst
    }
}

/// The write-rate buckets of a relay's clients, by token name.
#[derive(Debug)]
pub(crate) struct WriteRates {
    rate: Option<WriteRate>,
    buckets: Mutex<HashMap<String, TokenBucket>>,
}

/// Buckets kept before full ones (which equal no bucket) are dropped.
const BUCKETS_KEPT: usize = 4096;

impl WriteRates {
    /// Buckets of `rate`; `None` admits every write.
    pub(crate) fn new(rate: Option<WriteRate>) -> WriteRates {
        WriteRates {
            rate,
            buckets: Mutex::default(),
        }
    }

    /// Takes `rows` from `client`'s bucket.
    pub(crate) fn take(&self, client: &str, rows: u64, now: Instant) -> Result<(), LimitExceeded> {
        let Some(rate) = self.rate else {
            return Ok(());
        };
        let mut buckets = lock(&self.buckets);
        if buckets.len() >= BUCKETS_KEPT && !buckets.contains_key(client) {
            buckets.retain(|_, bucket| !bucket.is_full(now));
        }
        let bucket = buckets
            .entry(client.to_string())
            .or_insert_with(|| TokenBucket::new(rate, now));
        bucket
            .take(rows, now)
            .map_err(|retry_after| LimitExceeded::WriteRate {
                client: client.to_string(),
                rows,
                per_second: rate.per_second,
                burst: rate.burst,
                retry_after,
            })
    }
}

/// What a session's writes are checked against.
#[derive(Debug, Clone)]
pub(crate) struct WriteGate {
    pub(crate) rates: Arc<WriteRates>,
    /// Whose bucket: the token's name.
    pub(crate) client: String,
    pub(crate) namespace: Namespace,
    /// The namespace's storage quota in bytes.
    pub(crate) quota: Option<u64>,
}

/// The bytes a mutation is reckoned at beyond its name and arguments.
const MUTATION_OVERHEAD: usize = 32;

impl WriteGate {
    /// Admits or refuses a message that writes, before it is applied:
    /// the quota first, then the rate. Other messages pass.
    pub(crate) fn check<R: Replica + ?Sized>(
        &self,
        message: &Message,
        replica: &R,
    ) -> Result<(), SyncError> {
        let (rows, bytes) = match message {
            Message::Changes(batch) => {
                (batch.changes.len(), approx_changeset_bytes(&batch.changes))
            }
            Message::Push(push) => (
                push.mutations.len(),
                push.mutations
                    .iter()
                    .map(|m| MUTATION_OVERHEAD + m.name.len() + m.args.len())
                    .sum(),
            ),
            _ => return Ok(()),
        };
        let incoming = bytes as u64;
        if let Some(quota) = self.quota {
            if let Some(used) = replica.stored_bytes()? {
                if used.saturating_add(incoming) > quota {
                    return Err(LimitExceeded::Quota {
                        namespace: self.namespace.clone(),
                        used,
                        incoming,
                        quota,
                    }
                    .into());
                }
            }
        }
        // An empty batch or push still costs the relay a locked apply: it
        // takes one from the bucket, so a flood of them is held to the rate.
        self.rates
            .take(&self.client, rows.max(1) as u64, Instant::now())
            .map_err(SyncError::from)
    }
}

/// The source a connection is counted against: its IPv4 address (also
/// when it arrives IPv4-mapped on an IPv6 socket), or its IPv6 /64
/// network, since one host is routinely given a whole /64 and could
/// otherwise open connections from as many addresses as it likes.
fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(
                u128::from(v6) & !((1u128 << 64) - 1),
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Attacker: one host with a /64, connecting from many of its
    /// addresses. Must not happen: each address gets its own quota.
    #[test]
    fn an_ipv6_64_is_one_source_and_a_mapped_ipv4_is_its_ipv4() -> Result<(), LimitExceeded> {
        let slots = Admission::new(10, 10, 2);
        let _a = slots.admit(&peer("[2001:db8:1:2::1]:1000"))?;
        let _b = slots.admit(&peer("[2001:db8:1:2:ffff::9]:1000"))?;
        assert!(matches!(
            slots.admit(&peer("[2001:db8:1:2:aaaa:bbbb:cccc:dddd]:1")),
            Err(LimitExceeded::PerAddress { limit: 2, .. })
        ));
        // Another /64 is another source.
        let _c = slots.admit(&peer("[2001:db8:1:3::1]:1000"))?;
        let _d = slots.admit(&peer("[::ffff:10.0.0.1]:1000"))?;
        let _e = slots.admit(&peer("10.0.0.1:1001"))?;
        assert!(matches!(
            slots.admit(&peer("10.0.0.1:1002")),
            Err(LimitExceeded::PerAddress { limit: 2, .. })
        ));
        Ok(())
    }

    fn peer(addr: &str) -> Peer {
        Peer::at(addr)
    }

    #[test]
    fn unauthenticated_sockets_never_take_client_slots() -> Result<(), LimitExceeded> {
        let slots = Admission::new(2, 3, 10);
        let idle: Vec<_> = (0..3)
            .map(|i| slots.admit(&peer(&format!("10.0.0.{i}:1000"))))
            .collect::<Result<_, _>>()?;
        assert_eq!(slots.pending_in_use(), 3);
        assert_eq!(
            slots.clients_in_use(),
            0,
            "pending sockets hold no client slot"
        );
        assert_eq!(
            slots.admit(&peer("10.0.0.9:1")).err(),
            Some(LimitExceeded::Unauthenticated { limit: 3 })
        );
        // One authenticates: its pending slot is back, a client slot taken.
        let mut idle = idle.into_iter();
        let first = idle.next().ok_or(LimitExceeded::Connections { limit: 0 })?;
        let client = first.authenticate(None)?;
        assert_eq!((slots.pending_in_use(), slots.clients_in_use()), (2, 1));
        let again = slots.admit(&peer("10.0.0.9:1"))?;
        let second = again.authenticate(None)?;
        assert_eq!((slots.pending_in_use(), slots.clients_in_use()), (2, 2));
        // The clients are full: the next hello is refused, its pending slot
        // given back all the same.
        let third = slots.admit(&peer("10.0.0.8:1"))?;
        assert_eq!(
            third.authenticate(None).err(),
            Some(LimitExceeded::Connections { limit: 2 })
        );
        assert_eq!(slots.pending_in_use(), 2);
        drop((client, second));
        drop(idle);
        assert_eq!((slots.pending_in_use(), slots.clients_in_use()), (0, 0));
        Ok(())
    }

    #[test]
    fn each_address_has_its_own_cap_on_pending_slots() -> Result<(), LimitExceeded> {
        let slots = Admission::new(10, 10, 2);
        let a = slots.admit(&peer("192.0.2.1:1"))?;
        let b = slots.admit(&peer("192.0.2.1:2"))?;
        let refused = slots.admit(&peer("192.0.2.1:3")).err();
        assert_eq!(
            refused,
            Some(LimitExceeded::PerAddress {
                address: [192, 0, 2, 1].into(),
                limit: 2
            })
        );
        assert_eq!(slots.pending_in_use(), 2, "a refused address takes no slot");
        // Another address is not affected, nor are peers without one.
        let other = slots.admit(&peer("[2001:db8::1]:7"))?;
        let memory: Vec<_> = (0..5)
            .map(|_| slots.admit(&peer("memory")))
            .collect::<Result<_, _>>()?;
        // Authenticating frees the address's share too.
        let client = a.authenticate(None)?;
        let c = slots.admit(&peer("192.0.2.1:4"))?;
        drop((b, c, other, memory, client));
        assert_eq!(slots.pending_in_use(), 0);
        assert!(
            lock(&slots.by_address).is_empty(),
            "counts are dropped at 0"
        );
        Ok(())
    }

    /// Attacker: a holder of one valid token, opening sessions until the
    /// relay is full. Must not happen: that token takes more than its cap
    /// of client slots, another token is locked out, or a slot stays
    /// taken after its session ended.
    #[test]
    fn one_token_holds_at_most_its_cap_of_client_slots() -> Result<(), LimitExceeded> {
        let slots = Admission::new(10, 10, 10).per_token(2);
        let a1 = slots
            .admit(&peer("10.0.0.1:1"))?
            .authenticate(Some("till-1"))?;
        let a2 = slots
            .admit(&peer("10.0.0.2:1"))?
            .authenticate(Some("till-1"))?;
        let refused = slots
            .admit(&peer("10.0.0.3:1"))?
            .authenticate(Some("till-1"));
        assert_eq!(
            refused.err(),
            Some(LimitExceeded::PerToken {
                token: "till-1".into(),
                limit: 2
            })
        );
        assert_eq!(
            (slots.pending_in_use(), slots.clients_in_use()),
            (0, 2),
            "a refused hello holds nothing"
        );
        // Another token is not affected, nor a relay without tokens.
        let b = slots
            .admit(&peer("10.0.0.3:1"))?
            .authenticate(Some("till-2"))?;
        let open: Vec<_> = (0..3)
            .map(|i| {
                slots
                    .admit(&peer(&format!("10.0.1.{i}:1")))?
                    .authenticate(None)
            })
            .collect::<Result<_, _>>()?;
        // A session that ends gives its token's share back.
        drop(a1);
        let a3 = slots
            .admit(&peer("10.0.0.4:1"))?
            .authenticate(Some("till-1"))?;
        // The cap on connections still applies to a token under its own.
        assert_eq!(slots.clients_in_use(), 6);
        drop((a2, a3, b, open));
        assert_eq!(slots.clients_in_use(), 0);
        assert!(lock(&slots.by_token).is_empty(), "counts are dropped at 0");
        Ok(())
    }

    fn rate(per_second: u32, burst: u32) -> WriteRate {
        WriteRate { per_second, burst }
    }

    #[test]
    fn a_bucket_admits_its_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(rate(10, 20), t0);
        assert!(bucket.take(15, t0).is_ok());
        let wait = bucket.take(10, t0).expect_err("5 left");
        assert_eq!(wait, Duration::from_millis(500), "5 more at 10/s");
        assert!(
            bucket.take(10, t0 + Duration::from_millis(499)).is_err(),
            "a refusal takes nothing, and the bucket is not full yet"
        );
        assert!(bucket.take(10, t0 + Duration::from_millis(600)).is_ok());
        // Refills never beyond the burst.
        let later = t0 + Duration::from_secs(3600);
        assert!(bucket.take(20, later).is_ok());
        assert!(bucket.take(1, later).is_err());
    }

    #[test]
    fn a_write_over_the_burst_passes_from_a_full_bucket_and_pays_it_back() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(rate(10, 20), t0);
        assert!(bucket.take(50, t0).is_ok(), "a full bucket admits any size");
        // 30 in debt: 20 tokens (a full bucket) are 5 s away.
        assert_eq!(bucket.take(50, t0), Err(Duration::from_secs(5)));
        assert!(bucket.take(1, t0 + Duration::from_millis(3000)).is_err());
        assert!(bucket.take(1, t0 + Duration::from_millis(3100)).is_ok());
    }

    #[test]
    fn rates_are_per_client_and_full_buckets_are_forgotten() {
        let rates = WriteRates::new(Some(rate(1, 5)));
        let now = Instant::now();
        assert!(rates.take("a", 5, now).is_ok());
        let refused = rates.take("a", 1, now).expect_err("a is empty");
        assert!(refused
            .to_string()
            .contains("token \"a\" may write 1 rows per second"));
        assert!(rates.take("b", 5, now).is_ok(), "b has its own bucket");
        for i in 0..BUCKETS_KEPT {
            assert!(rates.take(&format!("c{i}"), 0, now).is_ok());
        }
        assert!(rates.take("new", 1, now).is_ok());
        let kept = lock(&rates.buckets);
        assert!(kept.contains_key("a") && kept.contains_key("b"));
        assert!(kept.len() < 10, "full buckets were dropped: {}", kept.len());
        drop(kept);
        assert!(WriteRates::new(None).take("x", u64::MAX, now).is_ok());
    }
}
