//! Hybrid logical clock: timestamps that follow wall time but never go backwards and
//! order every write, so last-writer-wins has a single answer on every replica.

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// A hybrid-logical-clock timestamp. Ordered by wall milliseconds, then the logical
/// counter, then the writer's id as the final tie-breaker (so two writers can never
/// produce equal timestamps and replicas always agree on the winner).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Timestamp {
    /// Milliseconds since the Unix epoch (wall-clock part).
    pub ms: u64,
    /// Logical counter for events within the same millisecond.
    pub logical: u32,
    /// Id of the clock that issued it.
    pub origin: u64,
}

/// A clock issuing strictly increasing [`Timestamp`]s.
#[derive(Debug)]
pub struct Clock {
    origin: u64,
    last: Mutex<(u64, u32)>,
}

impl Clock {
    /// A clock whose timestamps carry `origin` as tie-breaker.
    pub fn new(origin: u64) -> Self {
        Self {
            origin,
            last: Mutex::new((0, 0)),
        }
    }

    /// A fresh timestamp, greater than every one this clock issued or observed.
    pub fn now(&self) -> Timestamp {
        let wall = wall_ms();
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        *last = if wall > last.0 {
            (wall, 0)
        } else {
            (last.0, last.1.saturating_add(1))
        };
        Timestamp {
            ms: last.0,
            logical: last.1,
            origin: self.origin,
        }
    }

    /// Moves the clock past a timestamp seen from another process.
    pub fn observe(&self, seen: Timestamp) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if (seen.ms, seen.logical) > *last {
            *last = (seen.ms, seen.logical);
        }
    }
}

/// Current wall-clock time in milliseconds since the Unix epoch.
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_strictly_increase_and_pass_observed_ones() {
        let c = Clock::new(1);
        let mut prev = c.now();
        for _ in 0..10_000 {
            let t = c.now();
            assert!(t > prev);
            prev = t;
        }
        let future = Timestamp {
            ms: prev.ms + 60_000,
            logical: 5,
            origin: 2,
        };
        c.observe(future);
        assert!(c.now() > future);
    }
}
