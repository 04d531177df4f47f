//! Rate limits for log lines an untrusted peer can cause (refused or bad
//! connections): at most one line per key every interval, carrying the
//! count of events since the last line, so a flood of events cannot flood
//! the log, and the disk under it, as well.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Per key: when a line was last due, and events since.
#[derive(Debug)]
pub struct LogLimit<K> {
    every: Duration,
    seen: HashMap<K, (Option<Instant>, u64)>,
}

impl<K: Hash + Eq> LogLimit<K> {
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            seen: HashMap::new(),
        }
    }

    /// Counts one event of `key`; returns the count to log (this event and
    /// those not logged before it) when a line is due.
    pub fn due(&mut self, key: K) -> Option<u64> {
        let now = Instant::now();
        let entry = self.seen.entry(key).or_insert((None, 0));
        entry.1 += 1;
        if entry
            .0
            .is_some_and(|last| now.duration_since(last) < self.every)
        {
            return None;
        }
        let count = entry.1;
        *entry = (Some(now), 0);
        Some(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_key_and_interval_with_the_count() {
        let mut limit = LogLimit::new(Duration::from_millis(50));
        assert_eq!(limit.due("a"), Some(1), "the first is logged");
        for _ in 0..100 {
            assert_eq!(limit.due("a"), None);
        }
        assert_eq!(limit.due("b"), Some(1), "another key");
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(
            limit.due("a"),
            Some(101),
            "the next line counts what was not logged"
        );
    }
}
