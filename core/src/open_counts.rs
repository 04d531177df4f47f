//! Counts of open things (connections, requests) per key (a uid, a source
//! address) and in all, for limits on what untrusted peers may hold at
//! once. Keys whose count falls to 0 are forgotten, so a peer that comes and
//! goes leaves nothing behind.

use std::collections::HashMap;
use std::hash::Hash;

/// Open things per key and in all, each under its limit.
#[derive(Debug)]
pub struct OpenCounts<K> {
    per_key: usize,
    total: usize,
    open: HashMap<K, usize>,
    open_total: usize,
}

/// Why nothing more may be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// The key has `per_key` open.
    Key,
    /// All keys together have `total` open.
    Total,
}

impl<K: Hash + Eq> OpenCounts<K> {
    /// At most `per_key` open for any one key and `total` in all.
    pub fn new(per_key: usize, total: usize) -> Self {
        Self {
            per_key,
            total,
            open: HashMap::new(),
            open_total: 0,
        }
    }

    pub fn per_key(&self) -> usize {
        self.per_key
    }

    pub fn total(&self) -> usize {
        self.total
    }

    /// Counts one more for `key`, or says which limit is reached.
    pub fn open(&mut self, key: K) -> Result<(), Full> {
        if self.open.get(&key).copied().unwrap_or(0) >= self.per_key {
            return Err(Full::Key);
        }
        if self.open_total >= self.total {
            return Err(Full::Total);
        }
        *self.open.entry(key).or_default() += 1;
        self.open_total += 1;
        Ok(())
    }

    /// Counts one less for `key` (one it opened).
    pub fn close(&mut self, key: &K) {
        if let Some(n) = self.open.get_mut(key) {
            *n -= 1;
            self.open_total -= 1;
            if *n == 0 {
                self.open.remove(key);
            }
        }
    }

    /// How many `key` has open now.
    pub fn of(&self, key: &K) -> usize {
        self.open.get(key).copied().unwrap_or(0)
    }

    /// How many are open in all.
    pub fn in_all(&self) -> usize {
        self.open_total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_stop_at_either_limit_and_closed_keys_are_forgotten() {
        let mut counts = OpenCounts::new(2, 3);
        assert_eq!(counts.open(7), Ok(()));
        assert_eq!(counts.open(7), Ok(()));
        assert_eq!(counts.open(7), Err(Full::Key));
        assert_eq!(counts.open(8), Ok(()), "another key is not affected");
        assert_eq!(counts.open(9), Err(Full::Total));
        assert_eq!((counts.of(&7), counts.in_all()), (2, 3));
        counts.close(&7);
        counts.close(&7);
        assert_eq!((counts.of(&7), counts.in_all()), (0, 1));
        assert_eq!(counts.open.len(), 1, "a key with nothing open is forgotten");
        counts.close(&9); // never opened: nothing happens
        assert_eq!(counts.in_all(), 1);
    }
}
