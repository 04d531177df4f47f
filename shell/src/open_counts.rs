//! Counts of open things (connections, requests) per key (a uid, a source
//! address), for limits on what one untrusted peer may hold at once. Keys
//! whose count falls to 0 are forgotten, so a peer that comes and goes
//! leaves nothing behind.

use std::collections::HashMap;
use std::hash::Hash;

/// Open things per key.
#[derive(Debug)]
pub struct OpenCounts<K> {
    open: HashMap<K, usize>,
}

impl<K: Hash + Eq> Default for OpenCounts<K> {
    fn default() -> Self {
        Self {
            open: HashMap::new(),
        }
    }
}

impl<K: Hash + Eq> OpenCounts<K> {
    /// How many `key` has open now.
    pub fn of(&self, key: &K) -> usize {
        self.open.get(key).copied().unwrap_or(0)
    }

    /// Counts one more for `key`.
    pub fn open(&mut self, key: K) {
        *self.open.entry(key).or_default() += 1;
    }

    /// Counts one more for `key` if it has fewer than `limit` open; says
    /// whether it did.
    #[must_use]
    pub fn open_within(&mut self, key: K, limit: usize) -> bool {
        let open = self.open.entry(key).or_default();
        if *open >= limit {
            return false;
        }
        *open += 1;
        true
    }

    /// Counts one less for `key` (one it opened).
    pub fn close(&mut self, key: &K) {
        if let Some(n) = self.open.get_mut(key) {
            *n -= 1;
            if *n == 0 {
                self.open.remove(key);
            }
        }
    }

    /// Keys with something open.
    pub fn keys(&self) -> usize {
        self.open.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_stop_at_the_limit_and_closed_keys_are_forgotten() {
        let mut counts = OpenCounts::default();
        assert!(counts.open_within(7, 2));
        assert!(counts.open_within(7, 2));
        assert!(!counts.open_within(7, 2));
        assert!(counts.open_within(8, 2), "another key is not affected");
        assert_eq!(counts.of(&7), 2);
        counts.close(&7);
        counts.close(&7);
        assert_eq!(counts.of(&7), 0);
        assert_eq!(counts.keys(), 1, "a key with nothing open is forgotten");
        counts.close(&9); // never opened: nothing happens
        assert_eq!(counts.keys(), 1);
    }
}
