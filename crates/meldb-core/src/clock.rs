//! Site ids and the hybrid logical clock (HLC).
//!
//! An [`Hlc`] packs physical milliseconds since the Unix epoch in its high 48
//! bits and a logical counter in its low 16, so plain integer order is HLC
//! order. A replica's [`Clock`] only ever moves forward: every local write gets
//! a timestamp strictly greater than every timestamp this replica has issued
//! or accepted, even if the wall clock steps back.
//!
//! Remote timestamps more than the configured drift ahead of the local wall
//! clock are refused ([`Clock::observe`] returns the offset) and never move the
//! local clock, so one replica with a wrong clock cannot win every
//! last-writer-wins register from then on.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use uuid::Uuid;

/// A replica's identity: a random UUID chosen when the database is created.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SiteId(pub Uuid);

impl SiteId {
    /// A fresh random site id.
    pub fn random() -> Self {
        SiteId(Uuid::new_v4())
    }

    /// The 16 raw bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }

    /// From 16 raw bytes.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        SiteId(Uuid::from_bytes(bytes))
    }
}

impl fmt::Display for SiteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A hybrid logical clock timestamp: `physical_ms << 16 | logical`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hlc(pub u64);

impl Hlc {
    const LOGICAL_BITS: u32 = 16;

    /// The timestamp at the start of a physical millisecond.
    pub fn from_physical_ms(ms: u64) -> Self {
        Hlc(ms << Self::LOGICAL_BITS)
    }

    /// Physical milliseconds since the Unix epoch.
    pub fn physical_ms(self) -> u64 {
        self.0 >> Self::LOGICAL_BITS
    }

    /// The logical counter within the millisecond.
    pub fn logical(self) -> u16 {
        (self.0 & 0xffff) as u16
    }
}

impl fmt::Display for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.physical_ms(), self.logical())
    }
}

/// Where a clock reads physical time from.
pub trait TimeSource: Send + Sync + fmt::Debug {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The operating system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemTimeSource;

impl TimeSource for SystemTimeSource {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }
}

/// A time source that only moves when told to; for tests and simulations.
#[derive(Debug, Clone, Default)]
pub struct ManualTime(Arc<AtomicU64>);

impl ManualTime {
    /// A manual clock reading `ms`.
    pub fn new(ms: u64) -> Self {
        ManualTime(Arc::new(AtomicU64::new(ms)))
    }

    /// Sets the reading; clones share it.
    pub fn set_ms(&self, ms: u64) {
        self.0.store(ms, Ordering::SeqCst);
    }

    /// Moves the reading forward.
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_millis() as u64, Ordering::SeqCst);
    }
}

impl TimeSource for ManualTime {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// A remote timestamp too far ahead of the local wall clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClockAhead {
    /// How far ahead of the local wall clock it is, in milliseconds.
    pub offset_ms: u64,
}

/// A replica's hybrid logical clock.
#[derive(Debug, Clone)]
pub struct Clock {
    last: Hlc,
    max_drift_ms: u64,
    source: Arc<dyn TimeSource>,
}

impl Clock {
    /// A clock that has issued nothing above `last`.
    pub fn new(last: Hlc, max_drift: Duration, source: Arc<dyn TimeSource>) -> Self {
        Clock {
            last,
            max_drift_ms: max_drift.as_millis() as u64,
            source,
        }
    }

    /// The greatest timestamp issued or accepted so far.
    pub fn last(&self) -> Hlc {
        self.last
    }

    /// The drift bound in milliseconds.
    pub fn max_drift_ms(&self) -> u64 {
        self.max_drift_ms
    }

    /// The current wall-clock reading in milliseconds.
    pub fn now_ms(&self) -> u64 {
        self.source.now_ms()
    }

    /// A new timestamp, strictly greater than any seen before.
    pub fn tick(&mut self) -> Hlc {
        let wall = Hlc::from_physical_ms(self.source.now_ms());
        self.last = wall.max(Hlc(self.last.0.saturating_add(1)));
        self.last
    }

    /// Sets the last timestamp back to `last` (a rolled-back transaction's
    /// ticks and observations never happened).
    #[doc(hidden)]
    pub fn reset(&mut self, last: Hlc) {
        self.last = last;
    }

    /// Checks a remote timestamp against the drift bound without moving the
    /// clock.
    pub fn check(&self, remote: Hlc) -> Result<(), ClockAhead> {
        let now = self.source.now_ms();
        let remote_ms = remote.physical_ms();
        if remote_ms > now.saturating_add(self.max_drift_ms) {
            return Err(ClockAhead {
                offset_ms: remote_ms - now,
            });
        }
        Ok(())
    }

    /// Accepts a remote timestamp: later local ticks will be above it. Refuses
    /// (and leaves the clock alone) if it is beyond the drift bound.
    pub fn observe(&mut self, remote: Hlc) -> Result<(), ClockAhead> {
        self.check(remote)?;
        self.last = self.last.max(remote);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clock_at(ms: u64) -> (Clock, ManualTime) {
        let time = ManualTime::new(ms);
        let clock = Clock::new(Hlc(0), Duration::from_secs(300), Arc::new(time.clone()));
        (clock, time)
    }

    #[test]
    fn ticks_are_strictly_increasing_even_when_wall_clock_steps_back() {
        let (mut clock, time) = clock_at(10_000);
        let a = clock.tick();
        let b = clock.tick();
        time.set_ms(5_000);
        let c = clock.tick();
        assert!(a < b && b < c);
        assert_eq!(a.physical_ms(), 10_000);
        assert_eq!(c.physical_ms(), 10_000);
    }

    #[test]
    fn far_future_remote_is_refused_and_does_not_move_clock() {
        let (mut clock, _time) = clock_at(1_000_000);
        let before = clock.last();
        let ahead = Hlc::from_physical_ms(1_000_000 + 301_000);
        assert_eq!(clock.observe(ahead), Err(ClockAhead { offset_ms: 301_000 }));
        assert_eq!(clock.last(), before);
        let near = Hlc::from_physical_ms(1_000_000 + 299_000);
        assert_eq!(clock.observe(near), Ok(()));
        assert!(clock.tick() > near);
    }

    #[test]
    fn hlc_parts_round_trip() {
        let h = Hlc((1234 << 16) | 7);
        assert_eq!(h.physical_ms(), 1234);
        assert_eq!(h.logical(), 7);
        assert_eq!(h.to_string(), "1234.7");
    }
}
