//! Reconnect delays with jitter: [`Delays`], the schedule a continuous
//! sync waits by between attempts.
//!
//! Invariants: the base delay doubles from [`Backoff::initial`] up to
//! [`Backoff::max`] with each attempt, and each delay is drawn uniformly
//! from `[base / 2, base]` ("equal jitter"), so no delay exceeds `max`,
//! every other delay is at least twice the one two attempts before it
//! until `max` is reached, and a thousand clients cut off by one relay
//! restart spread their reconnects over half the delay instead of
//! arriving in lock-step. The random numbers come from a small seeded
//! generator (splitmix64): the same seed gives the same delays (tests),
//! and clients seed it from their site id and the clock, so no two draw
//! the same sequence.

use super::driver::Backoff;
use crate::clock::SiteId;
use std::time::Duration;

/// The reconnect schedule of one client.
#[derive(Debug, Clone)]
pub(crate) struct Delays {
    backoff: Backoff,
    base: Duration,
    rng: SplitMix,
}

impl Delays {
    /// Starts at `backoff.initial`, drawing from `seed`.
    pub(crate) fn new(backoff: Backoff, seed: u64) -> Delays {
        let backoff = Backoff {
            initial: backoff.initial.max(Duration::from_millis(1)),
            max: backoff.max.max(backoff.initial),
        };
        Delays {
            backoff,
            base: backoff.initial,
            rng: SplitMix(seed),
        }
    }

    /// The delay before the next attempt; the one after grows.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let base = self.base;
        self.base = base.saturating_mul(2).min(self.backoff.max);
        let half = base / 2;
        let spread = u64::try_from((base - half).as_nanos()).unwrap_or(u64::MAX);
        half + Duration::from_nanos(self.rng.below(spread.saturating_add(1)))
    }

    /// After a healthy session: the next delay is short again.
    pub(crate) fn reset(&mut self) {
        self.base = self.backoff.initial;
    }

    /// After a refusal that will not change soon (a bad token): the next
    /// delays are the longest.
    pub(crate) fn slowest(&mut self) {
        self.base = self.backoff.max;
    }
}

/// A seed for a client's schedule: its site id and the clock, so clients
/// started together still differ.
pub(crate) fn seed_for(site: SiteId) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let bytes = site.as_bytes();
    let mut seed = nanos;
    for chunk in bytes.chunks(8) {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        seed = SplitMix(seed ^ u64::from_le_bytes(word)).next_u64();
    }
    seed
}

/// splitmix64: tiny, fast, every seed (0 too) gives a full-period stream.
#[derive(Debug, Clone)]
struct SplitMix(u64);

impl SplitMix {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform enough in `0..n` (`n > 0`; the modulo bias is far below
    /// what spreading reconnects cares about).
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backoff() -> Backoff {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(30),
        }
    }

    fn schedule(seed: u64, n: usize) -> Vec<Duration> {
        let mut delays = Delays::new(backoff(), seed);
        (0..n).map(|_| delays.next_delay()).collect()
    }

    #[test]
    fn delays_stay_within_half_the_base_and_the_base_and_never_exceed_max() {
        for seed in 0..200 {
            let mut base = backoff().initial;
            for delay in schedule(seed, 20) {
                assert!(
                    delay >= base / 2 && delay <= base,
                    "{delay:?} for base {base:?}"
                );
                assert!(delay <= backoff().max);
                base = (base * 2).min(backoff().max);
            }
        }
    }

    #[test]
    fn delays_grow_until_the_maximum() {
        for seed in 0..200 {
            let delays = schedule(seed, 12);
            // The base doubles, so while it is below the maximum a delay
            // two attempts on is at least the largest the earlier one
            // could have been (100 ms * 2^8 = 25.6 s: the first 9).
            for pair in delays[..9].windows(3) {
                assert!(pair[2] >= pair[0], "{delays:?}");
            }
            // 100 ms doubled 9 times is past 30 s: the tail sits in [15, 30] s.
            for late in &delays[9..] {
                assert!(*late >= Duration::from_secs(15), "{delays:?}");
            }
        }
    }

    #[test]
    fn a_healthy_session_resets_and_a_refusal_goes_to_the_slowest() {
        let mut delays = Delays::new(backoff(), 7);
        for _ in 0..10 {
            delays.next_delay();
        }
        delays.reset();
        assert!(delays.next_delay() <= backoff().initial);
        delays.slowest();
        assert!(delays.next_delay() >= backoff().max / 2);
    }

    #[test]
    fn clients_with_different_seeds_do_not_reconnect_in_lock_step() {
        // The same seed repeats itself (tests can rely on it).
        assert_eq!(schedule(42, 10), schedule(42, 10));
        // A thousand clients cut off at once: their first delays spread
        // over the whole window instead of piling up.
        let firsts: std::collections::BTreeSet<Duration> =
            (0..1000u64).map(|client| schedule(client, 1)[0]).collect();
        assert!(
            firsts.len() > 900,
            "only {} distinct first delays",
            firsts.len()
        );
        for a in 0..20u64 {
            for b in (a + 1)..20 {
                assert_ne!(schedule(a, 8), schedule(b, 8), "seeds {a} and {b}");
            }
        }
        // Two clients seeded from their site ids at the same moment differ.
        let one = seed_for(SiteId::from_bytes([1; 16]));
        let two = seed_for(SiteId::from_bytes([2; 16]));
        assert_ne!(schedule(one, 8), schedule(two, 8));
    }

    #[test]
    fn a_tiny_or_inverted_backoff_still_gives_sane_delays() {
        let mut delays = Delays::new(
            Backoff {
                initial: Duration::ZERO,
                max: Duration::ZERO,
            },
            1,
        );
        for _ in 0..5 {
            assert!(delays.next_delay() <= Duration::from_millis(1));
        }
        let mut delays = Delays::new(
            Backoff {
                initial: Duration::from_secs(2),
                max: Duration::from_secs(1),
            },
            1,
        );
        assert!(delays.next_delay() <= Duration::from_secs(2));
    }
}
