//! What a relay counts, and those counts in the Prometheus text format.
//!
//! [`RelayMetrics`] is a set of atomic counters and gauges, shared by
//! every task of a relay as an `Arc` and cheap to bump (no lock but the
//! one around the per-table conflict counts, taken once per applied batch
//! that logged conflicts). [`RelayMetrics::render`] writes them in the
//! Prometheus text exposition format 0.0.4, which
//! [`AdminServer`](super::AdminServer) serves at `/metrics`.
//!
//! Invariant: every label value is one of a fixed set named in this file
//! (a state, a reason, a conflict outcome) or a table name of the schema
//! (capped at [`MAX_TABLE_LABELS`], beyond which tables count under
//! `other`), never a token, a site id or anything else a client chooses,
//! so the number of series is bounded whatever clients send.
//!
//! The series (all prefixed `meldb_relay_`):
//!
//! | name | type | labels |
//! | --- | --- | --- |
//! | `connections` | gauge | `state`: `pending` (accepted, not yet authorized), `authorized` |
//! | `connections_accepted_total` | counter | |
//! | `connections_refused_total` | counter | `reason`: `unauthenticated_cap`, `per_address_cap`, `client_cap`, `token_cap`, `dropped_over_cap` (closed with no handshake: the relay was already refusing as many as it sends notices to at once), `handshake_failed`, `handshake_timeout` |
//! | `refusals_in_flight`, `refusals_in_flight_peak` | gauge | (connections over a cap being sent their `Busy` notice now, and the most at once) |
//! | `auth_failures_total` | counter | `reason`: `no_token`, `bad_token`, `site_taken`, `site_unclaimed`, `too_many_sites`, `foreign_write`, `other_site`, `namespace_refused` |
//! | `batches_received_total`, `batches_sent_total` | counter | |
//! | `rows_received_total`, `rows_sent_total`, `rows_applied_total` | counter | |
//! | `bytes_received_total`, `bytes_sent_total` | counter | (frames, headers included) |
//! | `apply_duration_seconds` | histogram | (one per batch applied) |
//! | `conflicts_total` | counter | `table`, `outcome` (the conflict log's outcomes; `rejected` is a resolver's rejection) |
//! | `mutations_processed_total`, `mutations_refused_total` | counter | |
//! | `write_refusals_total` | counter | `reason`: `rate`, `quota`, `lag`, `read_only` |
//! | `namespaces_unavailable_total` | counter | (sessions told `Busy` because their namespace's replica could not be served: a database that would not open, a failed setup; the relay's log names the namespace and the cause) |
//! | `shutting_down` | gauge | (1 once shutdown began) |

use super::error::SyncError;
use super::identity::IdentityRefusal;
use super::limits::LimitExceeded;
use super::transport::ByteCounts;
use crate::resolve::Outcome;
use crate::ApplyReport;
use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Distinct table labels kept before further tables count as `other`.
pub const MAX_TABLE_LABELS: usize = 256;

/// The upper bounds of the apply-latency buckets, in seconds.
const APPLY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Declares a fixed set of label values: the enum, every value in order,
/// and each one's label text.
macro_rules! label_set {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(crate) enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            const ALL: &'static [$name] = &[$($name::$variant,)+];
            const COUNT: usize = Self::ALL.len();

            /// The label value.
            pub(crate) fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }
    };
}

label_set! {
    /// Why a connection was refused before (or at) its authorization.
    Refusal {
        /// Too many connections waiting to authenticate.
        UnauthenticatedCap => "unauthenticated_cap",
        /// Too many of those from one address.
        PerAddressCap => "per_address_cap",
        /// Every client slot taken.
        ClientCap => "client_cap",
        /// The token holds its cap of client slots.
        TokenCap => "token_cap",
        /// Over a cap while the relay was already telling as many others
        /// so: closed at once, with no handshake and no notice.
        DroppedOverCap => "dropped_over_cap",
        /// The TLS or WebSocket handshake failed.
        HandshakeFailed => "handshake_failed",
        /// No handshake, or no authorized hello, within the deadline.
        HandshakeTimeout => "handshake_timeout",
    }
}

label_set! {
    /// Why a client's credentials or claimed identity were refused.
    AuthFailure {
        /// A hello without a token.
        NoToken => "no_token",
        /// A token the relay does not know.
        BadToken => "bad_token",
        /// The hello's site is another token's.
        SiteTaken => "site_taken",
        /// The hello's site has writes but no owner.
        SiteUnclaimed => "site_unclaimed",
        /// The token holds its limit of sites.
        TooManySites => "too_many_sites",
        /// A batch carried another site's new writes.
        ForeignWrite => "foreign_write",
        /// A push named another site.
        OtherSite => "other_site",
        /// The token's namespace is not served.
        NamespaceRefused => "namespace_refused",
    }
}

label_set! {
    /// Why a write was refused with nothing of it written.
    WriteRefusal {
        /// The token's write rate.
        Rate => "rate",
        /// The namespace's storage quota.
        Quota => "quota",
        /// A live client fell too far behind.
        Lag => "lag",
        /// A read-only token sent changes or mutations.
        ReadOnly => "read_only",
    }
}

impl AuthFailure {
    /// The authentication failure `error` reports, if it is one.
    pub(crate) fn of(error: &SyncError) -> Option<AuthFailure> {
        Some(match error {
            SyncError::Unauthorized { presented: false } => AuthFailure::NoToken,
            SyncError::Unauthorized { presented: true } => AuthFailure::BadToken,
            SyncError::UnknownNamespace(_) | SyncError::NamespaceRefused { .. } => {
                AuthFailure::NamespaceRefused
            }
            SyncError::Identity(refusal) => match refusal {
                IdentityRefusal::Taken { .. } => AuthFailure::SiteTaken,
                IdentityRefusal::Unclaimed { .. } => AuthFailure::SiteUnclaimed,
                IdentityRefusal::Full { .. } => AuthFailure::TooManySites,
                IdentityRefusal::ForeignWrite { .. } => AuthFailure::ForeignWrite,
                IdentityRefusal::OtherSite { .. } => AuthFailure::OtherSite,
            },
            _ => return None,
        })
    }
}

/// Which counter a limit a connection ran into goes to.
enum Limited {
    Refused(Refusal),
    Write(WriteRefusal),
}

fn limited(limit: &LimitExceeded) -> Option<Limited> {
    Some(match limit {
        LimitExceeded::Unauthenticated { .. } => Limited::Refused(Refusal::UnauthenticatedCap),
        LimitExceeded::PerAddress { .. } => Limited::Refused(Refusal::PerAddressCap),
        LimitExceeded::Connections { .. } => Limited::Refused(Refusal::ClientCap),
        LimitExceeded::PerToken { .. } => Limited::Refused(Refusal::TokenCap),
        LimitExceeded::Handshake { .. } => Limited::Refused(Refusal::HandshakeTimeout),
        LimitExceeded::WriteRate { .. } => Limited::Write(WriteRefusal::Rate),
        LimitExceeded::Quota { .. } => Limited::Write(WriteRefusal::Quota),
        LimitExceeded::Lagging { .. } => Limited::Write(WriteRefusal::Lag),
        LimitExceeded::WriteStalled { .. } => return None,
    })
}

/// A relay's counters and gauges (see the module docs for the series).
///
/// Create one, hand it to the relay ([`RelayConfig::metrics`]) and to an
/// [`AdminServer`](super::AdminServer), or [`render`](Self::render) it
/// wherever the application serves its own metrics.
///
/// [`RelayConfig::metrics`]: super::RelayConfig::metrics
#[derive(Debug, Default)]
pub struct RelayMetrics {
    pending: AtomicU64,
    authorized: AtomicU64,
    accepted: AtomicU64,
    /// Refusals being delivered now (handshake and `Busy` notice), and
    /// the most there ever were at once.
    courtesy: AtomicU64,
    courtesy_peak: AtomicU64,
    refused: [AtomicU64; Refusal::COUNT],
    auth_failures: [AtomicU64; AuthFailure::COUNT],
    write_refusals: [AtomicU64; WriteRefusal::COUNT],
    batches_received: AtomicU64,
    batches_sent: AtomicU64,
    rows_received: AtomicU64,
    rows_sent: AtomicU64,
    rows_applied: AtomicU64,
    bytes: Arc<ByteCounts>,
    apply: Histogram,
    conflicts: Mutex<BTreeMap<String, [u64; Outcome::ALL.len()]>>,
    mutations_processed: AtomicU64,
    mutations_refused: AtomicU64,
    unavailable: AtomicU64,
    shutting_down: AtomicBool,
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

fn read(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

impl RelayMetrics {
    /// Every count at zero.
    pub fn new() -> RelayMetrics {
        RelayMetrics::default()
    }

    /// Whether the relay began shutting down (`/healthz` then answers 503).
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }

    /// Marks the relay as shutting down; the relay calls it when its
    /// shutdown watch turns true.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
    }

    pub(crate) fn accepted(&self) {
        bump(&self.accepted, 1);
    }

    pub(crate) fn refused(&self, why: Refusal) {
        bump(&self.refused[why as usize], 1);
    }

    /// Counts a limit a connection ran into (a cap, a deadline, a write
    /// refusal) under its reason.
    pub(crate) fn limited(&self, limit: &LimitExceeded) {
        match limited(limit) {
            Some(Limited::Refused(why)) => self.refused(why),
            Some(Limited::Write(why)) => bump(&self.write_refusals[why as usize], 1),
            None => {}
        }
    }

    /// Counts what ended a session, if it is a refusal this set counts.
    pub(crate) fn session_ended(&self, error: &SyncError) {
        if let Some(why) = AuthFailure::of(error) {
            bump(&self.auth_failures[why as usize], 1);
            return;
        }
        match error {
            SyncError::Limit(limit) => self.limited(limit),
            SyncError::ReadOnly { .. } => {
                bump(&self.write_refusals[WriteRefusal::ReadOnly as usize], 1);
            }
            SyncError::Unavailable { .. } => bump(&self.unavailable, 1),
            _ => {}
        }
    }

    /// A connection just accepted, counted as pending until
    /// [`ConnectionGauge::authorize`] (and not at all once dropped).
    pub(crate) fn hold_pending(self: &Arc<Self>) -> ConnectionGauge {
        bump(&self.pending, 1);
        ConnectionGauge {
            metrics: Arc::clone(self),
            authorized: false,
        }
    }

    /// A connection over a cap being told so, counted until dropped.
    pub(crate) fn hold_courtesy(self: &Arc<Self>) -> CourtesyGauge {
        let now = self.courtesy.fetch_add(1, Ordering::Relaxed) + 1;
        self.courtesy_peak.fetch_max(now, Ordering::Relaxed);
        CourtesyGauge {
            metrics: Arc::clone(self),
        }
    }

    /// The byte counts every connection of the relay adds to.
    pub(crate) fn bytes(&self) -> Arc<ByteCounts> {
        Arc::clone(&self.bytes)
    }

    /// A batch of `rows` rows received and applied (`applied` of them
    /// changed the replica), with the conflicts `report` logged.
    pub(crate) fn batch_received(&self, rows: u64, applied: u64, report: &ApplyReport) {
        bump(&self.batches_received, 1);
        bump(&self.rows_received, rows);
        bump(&self.rows_applied, applied);
        if report.table_outcomes.is_empty() {
            return;
        }
        let mut conflicts = self
            .conflicts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for (table, outcomes) in &report.table_outcomes {
            let label = if conflicts.contains_key(table) || conflicts.len() < MAX_TABLE_LABELS {
                table.as_str()
            } else {
                OTHER_TABLE
            };
            let counts = conflicts.entry(label.to_owned()).or_default();
            for (outcome, n) in outcomes {
                if let Some(i) = Outcome::ALL.iter().position(|o| o == outcome) {
                    counts[i] += *n as u64;
                }
            }
        }
    }

    /// A batch of `rows` rows sent.
    pub(crate) fn batch_sent(&self, rows: u64) {
        bump(&self.batches_sent, 1);
        bump(&self.rows_sent, rows);
    }

    /// Mutations an authority ran: `processed` in all, `refused` of them
    /// failed.
    pub(crate) fn mutations(&self, processed: u64, refused: u64) {
        bump(&self.mutations_processed, processed);
        bump(&self.mutations_refused, refused);
    }

    /// How long applying one batch took.
    pub(crate) fn apply_took(&self, took: Duration) {
        self.apply.observe(took);
    }

    /// Every series, in the Prometheus text exposition format 0.0.4.
    pub fn render(&self) -> String {
        let mut out = Exposition::default();
        out.family(
            "meldb_relay_connections",
            "gauge",
            "Connections open now: pending (not yet authorized) or authorized.",
        );
        out.sample(
            "meldb_relay_connections",
            &[("state", "pending")],
            read(&self.pending),
        );
        out.sample(
            "meldb_relay_connections",
            &[("state", "authorized")],
            read(&self.authorized),
        );
        out.counter(
            "meldb_relay_connections_accepted_total",
            "Connections accepted by the listeners.",
            read(&self.accepted),
        );
        out.labelled(
            "meldb_relay_connections_refused_total",
            "Connections refused before or at their authorization, by reason.",
            Refusal::ALL
                .iter()
                .map(|r| (r.name(), read(&self.refused[*r as usize]))),
        );
        out.family(
            "meldb_relay_refusals_in_flight",
            "gauge",
            "Connections over a cap being sent their Busy notice now (bounded; past the \
             bound they are closed at once).",
        );
        out.sample("meldb_relay_refusals_in_flight", &[], read(&self.courtesy));
        out.family(
            "meldb_relay_refusals_in_flight_peak",
            "gauge",
            "The most connections ever being sent their Busy notice at once.",
        );
        out.sample(
            "meldb_relay_refusals_in_flight_peak",
            &[],
            read(&self.courtesy_peak),
        );
        out.labelled(
            "meldb_relay_auth_failures_total",
            "Sessions refused for their token or the identity they claimed, by reason.",
            AuthFailure::ALL
                .iter()
                .map(|r| (r.name(), read(&self.auth_failures[*r as usize]))),
        );
        let counters: [(&str, &str, &AtomicU64); 5] = [
            (
                "meldb_relay_batches_received_total",
                "Batches received from clients and applied.",
                &self.batches_received,
            ),
            (
                "meldb_relay_batches_sent_total",
                "Batches sent to clients.",
                &self.batches_sent,
            ),
            (
                "meldb_relay_rows_received_total",
                "Rows received from clients in applied batches.",
                &self.rows_received,
            ),
            (
                "meldb_relay_rows_sent_total",
                "Rows sent to clients.",
                &self.rows_sent,
            ),
            (
                "meldb_relay_rows_applied_total",
                "Received rows that changed the relay's replica.",
                &self.rows_applied,
            ),
        ];
        for (name, help, counter) in counters {
            out.counter(name, help, read(counter));
        }
        out.counter(
            "meldb_relay_bytes_received_total",
            "Bytes of frames received, headers included.",
            self.bytes.received(),
        );
        out.counter(
            "meldb_relay_bytes_sent_total",
            "Bytes of frames sent, headers included.",
            self.bytes.sent(),
        );
        self.apply.render(
            &mut out,
            "meldb_relay_apply_duration_seconds",
            "Time to apply one batch from a client, in seconds.",
        );
        self.render_conflicts(&mut out);
        out.counter(
            "meldb_relay_mutations_processed_total",
            "Mutations the relay ran as the authority (applied or refused).",
            read(&self.mutations_processed),
        );
        out.counter(
            "meldb_relay_mutations_refused_total",
            "Mutations whose mutator failed at the relay.",
            read(&self.mutations_refused),
        );
        out.labelled(
            "meldb_relay_write_refusals_total",
            "Writes refused with nothing of them written, by limit.",
            WriteRefusal::ALL
                .iter()
                .map(|r| (r.name(), read(&self.write_refusals[*r as usize]))),
        );
        out.counter(
            "meldb_relay_namespaces_unavailable_total",
            "Sessions refused because their namespace's replica could not be served.",
            read(&self.unavailable),
        );
        out.family(
            "meldb_relay_shutting_down",
            "gauge",
            "1 once the relay began shutting down.",
        );
        out.sample(
            "meldb_relay_shutting_down",
            &[],
            u64::from(self.is_shutting_down()),
        );
        out.text
    }

    fn render_conflicts(&self, out: &mut Exposition) {
        const NAME: &str = "meldb_relay_conflicts_total";
        out.family(
            NAME,
            "counter",
            "Conflicts logged while applying clients' batches, by table and outcome.",
        );
        let conflicts = self
            .conflicts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for (table, counts) in &conflicts {
            for (outcome, n) in Outcome::ALL.iter().zip(counts) {
                out.sample(NAME, &[("table", table), ("outcome", outcome.name())], *n);
            }
        }
    }
}

/// The table label of tables past [`MAX_TABLE_LABELS`].
const OTHER_TABLE: &str = "other";

/// One connection's place in the `connections` gauge: pending until
/// authorized, and out of it once dropped.
#[derive(Debug)]
pub(crate) struct ConnectionGauge {
    metrics: Arc<RelayMetrics>,
    authorized: bool,
}

impl ConnectionGauge {
    /// Moves the connection from pending to authorized.
    pub(crate) fn authorize(&mut self) {
        if !self.authorized {
            self.authorized = true;
            bump(&self.metrics.authorized, 1);
            self.metrics.pending.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Drop for ConnectionGauge {
    fn drop(&mut self) {
        let gauge = if self.authorized {
            &self.metrics.authorized
        } else {
            &self.metrics.pending
        };
        gauge.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One refusal in `refusals_in_flight`, until dropped.
#[derive(Debug)]
pub(crate) struct CourtesyGauge {
    metrics: Arc<RelayMetrics>,
}

impl Drop for CourtesyGauge {
    fn drop(&mut self) {
        self.metrics.courtesy.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A histogram over fixed buckets: a count per bucket (not cumulative:
/// rendering adds them up), and the sum of what was observed.
#[derive(Debug)]
struct Histogram {
    bounds: &'static [f64],
    /// One per bound, then the one above every bound (`+Inf`).
    counts: Vec<AtomicU64>,
    sum_nanos: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram::new(&APPLY_BUCKETS)
    }
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
        }
    }

    fn observe(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        let bucket = self
            .bounds
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(self.bounds.len());
        if let Some(count) = self.counts.get(bucket) {
            bump(count, 1);
        }
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        bump(&self.sum_nanos, nanos);
    }

    /// `_bucket` lines with cumulative counts, `_sum` and `_count`; the
    /// count is the `+Inf` bucket's, so the two always agree.
    fn render(&self, out: &mut Exposition, name: &str, help: &str) {
        out.family(name, "histogram", help);
        let bucket = format!("{name}_bucket");
        let mut total = 0u64;
        for (i, count) in self.counts.iter().enumerate() {
            total += read(count);
            let le = match self.bounds.get(i) {
                Some(bound) => bound.to_string(),
                None => "+Inf".to_string(),
            };
            out.sample(&bucket, &[("le", &le)], total);
        }
        let sum = read(&self.sum_nanos) as f64 / 1e9;
        out.sample(&format!("{name}_sum"), &[], sum);
        out.sample(&format!("{name}_count"), &[], total);
    }
}

/// A text exposition being written.
#[derive(Debug, Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    /// The `# HELP` and `# TYPE` lines of a family.
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {}", EscapeHelp(help));
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    /// One sample line.
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl fmt::Display) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (label, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{label}=\"{}\"", EscapeLabel(value));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }

    /// A counter without labels.
    fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, "counter", help);
        self.sample(name, &[], value);
    }

    /// A counter with one `reason` label per value.
    fn labelled<'a>(
        &mut self,
        name: &str,
        help: &str,
        values: impl Iterator<Item = (&'a str, u64)>,
    ) {
        self.family(name, "counter", help);
        for (reason, value) in values {
            self.sample(name, &[("reason", reason)], value);
        }
    }
}

/// A `# HELP` text: backslash and line feed escaped.
struct EscapeHelp<'a>(&'a str);

impl fmt::Display for EscapeHelp<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            match c {
                '\\' => f.write_str("\\\\")?,
                '\n' => f.write_str("\\n")?,
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// A label value: backslash, double quote and line feed escaped.
struct EscapeLabel<'a>(&'a str);

impl fmt::Display for EscapeLabel<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            match c {
                '\\' => f.write_str("\\\\")?,
                '"' => f.write_str("\\\"")?,
                '\n' => f.write_str("\\n")?,
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
        text.lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
            .collect()
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        let mut out = Exposition::default();
        out.family("m", "counter", "a \\ b\nc \"q\"");
        out.sample("m", &[("table", "we\"ird\\na\nme"), ("outcome", "x")], 3);
        assert_eq!(
            out.text,
            "# HELP m a \\\\ b\\nc \"q\"\n# TYPE m counter\n\
             m{table=\"we\\\"ird\\\\na\\nme\",outcome=\"x\"} 3\n"
        );
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_count_is_the_inf_bucket() {
        static BOUNDS: [f64; 3] = [0.01, 0.1, 1.0];
        let h = Histogram::new(&BOUNDS);
        for ms in [5, 5, 50, 500, 5000] {
            h.observe(Duration::from_millis(ms));
        }
        // On a bound counts in that bound's bucket (le is "less or equal").
        h.observe(Duration::from_millis(100));
        let mut out = Exposition::default();
        h.render(&mut out, "t_seconds", "help");
        let text = out.text;
        assert_eq!(
            lines_of(&text, "t_seconds_bucket"),
            [
                "t_seconds_bucket{le=\"0.01\"} 2",
                "t_seconds_bucket{le=\"0.1\"} 4",
                "t_seconds_bucket{le=\"1\"} 5",
                "t_seconds_bucket{le=\"+Inf\"} 6",
            ]
        );
        assert_eq!(lines_of(&text, "t_seconds_count"), ["t_seconds_count 6"]);
        assert_eq!(lines_of(&text, "t_seconds_sum"), ["t_seconds_sum 5.66"]);
        assert!(text.contains("# TYPE t_seconds histogram\n"));
    }

    #[test]
    fn every_family_has_help_and_type_and_fixed_labels_start_at_zero() {
        let text = RelayMetrics::new().render();
        let mut families = 0;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                families += 1;
                let name = rest.split(' ').next().unwrap_or_default();
                assert!(name.starts_with("meldb_relay_"), "{name}");
                assert!(text.contains(&format!("# HELP {name} ")), "{name} has help");
            }
        }
        assert_eq!(families, 20, "every family, once");
        assert!(
            text.contains("meldb_relay_connections_refused_total{reason=\"dropped_over_cap\"} 0\n")
        );
        assert!(text.contains("meldb_relay_refusals_in_flight_peak 0\n"));
        assert!(text.contains("meldb_relay_auth_failures_total{reason=\"bad_token\"} 0\n"));
        assert!(text.contains("meldb_relay_connections{state=\"pending\"} 0\n"));
        assert!(text.contains("meldb_relay_write_refusals_total{reason=\"lag\"} 0\n"));
        assert!(
            !text.contains("meldb_relay_conflicts_total{"),
            "no table yet"
        );
    }

    #[test]
    fn the_gauge_follows_a_connection_from_pending_to_authorized_to_gone() {
        let metrics = Arc::new(RelayMetrics::new());
        let mut a = metrics.hold_pending();
        let b = metrics.hold_pending();
        assert_eq!((read(&metrics.pending), read(&metrics.authorized)), (2, 0));
        a.authorize();
        a.authorize();
        assert_eq!((read(&metrics.pending), read(&metrics.authorized)), (1, 1));
        drop(b);
        drop(a);
        assert_eq!((read(&metrics.pending), read(&metrics.authorized)), (0, 0));
    }

    #[test]
    fn session_ends_count_under_their_reason() {
        let metrics = RelayMetrics::new();
        metrics.session_ended(&SyncError::Unauthorized { presented: true });
        metrics.session_ended(&SyncError::Unauthorized { presented: false });
        metrics.session_ended(&SyncError::ReadOnly { sent: "x".into() });
        metrics.session_ended(&SyncError::Limit(LimitExceeded::Connections { limit: 1 }));
        metrics.session_ended(&SyncError::Timeout { seconds: 1 });
        metrics.session_ended(&SyncError::Unavailable {
            namespace: crate::sync::Namespace::default(),
            source: Box::new(SyncError::Timeout { seconds: 1 }),
        });
        let text = metrics.render();
        for line in [
            "meldb_relay_namespaces_unavailable_total 1",
            "meldb_relay_auth_failures_total{reason=\"bad_token\"} 1",
            "meldb_relay_auth_failures_total{reason=\"no_token\"} 1",
            "meldb_relay_write_refusals_total{reason=\"read_only\"} 1",
            "meldb_relay_connections_refused_total{reason=\"client_cap\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }

    #[test]
    fn tables_past_the_cap_count_as_other() {
        let metrics = RelayMetrics::new();
        for i in 0..MAX_TABLE_LABELS + 10 {
            let mut report = ApplyReport::default();
            report
                .table_outcomes
                .entry(format!("t{i}"))
                .or_default()
                .insert(Outcome::Rejected, 2);
            metrics.batch_received(1, 1, &report);
        }
        let text = metrics.render();
        let series = lines_of(&text, "meldb_relay_conflicts_total{").len();
        assert_eq!(series, (MAX_TABLE_LABELS + 1) * Outcome::ALL.len());
        assert!(
            text.contains("meldb_relay_conflicts_total{table=\"other\",outcome=\"rejected\"} 20\n")
        );
    }
}
