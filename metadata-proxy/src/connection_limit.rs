//! At most `per_source` open connections from one source address. The
//! metadata API listens where every container can reach it, so one
//! container must not hold the proxy's descriptors (its only other bound)
//! with idle or slow connections. A connection over the limit is closed at
//! once; refusals are logged at most once per source every few seconds.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bastion::log_limit::LogLimit;
use bastion::open_counts::OpenCounts;

const LOG_EVERY: Duration = Duration::from_secs(5);

/// Open connections per source address.
#[derive(Debug)]
pub struct ConnectionLimit {
    per_source: usize,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    open: OpenCounts<IpAddr>,
    refused: LogLimit<IpAddr>,
}

/// One admitted connection; its slot is freed when dropped.
#[derive(Debug)]
pub struct Slot {
    limit: Arc<ConnectionLimit>,
    source: IpAddr,
}

impl ConnectionLimit {
    pub fn new(per_source: usize) -> Arc<Self> {
        Arc::new(Self {
            per_source,
            state: Mutex::new(State {
                open: OpenCounts::default(),
                refused: LogLimit::new(LOG_EVERY),
            }),
        })
    }

    /// A slot for a new connection from `source`, or `None` (logged, rate
    /// limited) when it already has `per_source` open.
    pub fn admit(self: &Arc<Self>, source: IpAddr) -> Option<Slot> {
        let mut state = self.state.lock().expect("connection limit lock poisoned");
        if state.open.open_within(source, self.per_source) {
            return Some(Slot {
                limit: self.clone(),
                source,
            });
        }
        if let Some(refused) = state.refused.due(source) {
            tracing::warn!(
                %source,
                refused,
                limit = self.per_source,
                "refused connections: too many open from this address"
            );
        }
        None
    }

    /// Connections open now from `source`.
    pub fn open(&self, source: IpAddr) -> usize {
        let state = self.state.lock().expect("connection limit lock poisoned");
        state.open.of(&source)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut state = self
            .limit
            .state
            .lock()
            .expect("connection limit lock poisoned");
        state.open.close(&self.source);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_source_gets_its_own_limit() {
        let limit = ConnectionLimit::new(2);
        let a: IpAddr = "172.30.0.5".parse().unwrap();
        let b: IpAddr = "172.30.0.6".parse().unwrap();
        let a1 = limit.admit(a).unwrap();
        let _a2 = limit.admit(a).unwrap();
        assert!(limit.admit(a).is_none());
        assert!(limit.admit(b).is_some(), "another source is not affected");
        drop(a1);
        assert_eq!(limit.open(a), 1);
        assert!(limit.admit(a).is_some());
    }
}
