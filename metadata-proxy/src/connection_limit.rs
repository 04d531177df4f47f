//! Who may hold the proxy's connections: only sources where a user's
//! container can be (the metadata API's listener: the users' networks), and
//! at most `per_source` open connections from each. The metadata API
//! listens on a host address that every container can reach, so neither
//! one container nor a local account on the host (which has every
//! 127.0.0.0/8 address to connect from) may hold the proxy's descriptors
//! with idle or slow connections. A connection from elsewhere, or over the
//! limit, is closed at once; refusals are logged at most once per source
//! every few seconds.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bastion_core::log_limit::LogLimit;
use bastion_core::open_counts::OpenCounts;
use ipnet::IpNet;

const LOG_EVERY: Duration = Duration::from_secs(5);

/// Open connections per source address.
#[derive(Debug)]
pub struct ConnectionLimit {
    /// Sources served; `None`: every source.
    only_from: Option<Vec<IpNet>>,
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
    pub fn new(per_source: usize, total: usize) -> Arc<Self> {
        Self::only_from(per_source, total, None)
    }

    /// A limit that serves only sources in `nets` (`None`: all).
    pub fn only_from(per_source: usize, total: usize, nets: Option<Vec<IpNet>>) -> Arc<Self> {
        Arc::new(Self {
            only_from: nets,
            state: Mutex::new(State {
                open: OpenCounts::new(per_source, total),
                refused: LogLimit::new(LOG_EVERY),
            }),
        })
    }

    /// A slot for a new connection from `source`, or `None` (logged, rate
    /// limited) when it already has `per_source` open.
    pub fn admit(self: &Arc<Self>, source: IpAddr) -> Option<Slot> {
        let source = match source {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(source, IpAddr::V4),
            v4 => v4,
        };
        let mut state = self.state.lock().expect("connection limit lock poisoned");
        if let Some(nets) = &self.only_from
            && !nets.iter().any(|net| net.contains(&source))
        {
            if let Some(refused) = state.refused.due(source) {
                tracing::warn!(
                    %source,
                    refused,
                    "refused connections: not from a user's container network"
                );
            }
            return None;
        }
        if state.open.open(source).is_ok() {
            return Some(Slot {
                limit: self.clone(),
                source,
            });
        }
        if let Some(refused) = state.refused.due(source) {
            tracing::warn!(
                %source,
                refused,
                limit = state.open.per_key(),
                total = state.open.total(),
                "refused connections: too many open from this address, or in all"
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
        let limit = ConnectionLimit::new(2, 100);
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

    #[test]
    fn all_sources_together_stay_under_the_total() {
        let limit = ConnectionLimit::new(2, 3);
        let held: Vec<_> = (1..=3u8)
            .map(|i| limit.admit(IpAddr::from([127, 0, 0, i])).unwrap())
            .collect();
        assert!(limit.admit("127.0.0.9".parse().unwrap()).is_none());
        drop(held);
        assert!(limit.admit("127.0.0.9".parse().unwrap()).is_some());
    }

    #[test]
    fn only_sources_in_the_users_networks_are_served() {
        let nets = vec![
            "172.31.0.0/16".parse().unwrap(),
            "172.30.0.0/24".parse().unwrap(),
        ];
        let limit = ConnectionLimit::only_from(64, 1000, Some(nets));
        assert!(limit.admit("172.31.4.2".parse().unwrap()).is_some());
        assert!(limit.admit("172.30.0.9".parse().unwrap()).is_some());
        assert!(limit.admit("::ffff:172.31.4.3".parse().unwrap()).is_some());
        for other in ["127.0.0.1", "127.8.9.10", "10.0.0.1", "::1", "172.32.0.1"] {
            assert!(limit.admit(other.parse().unwrap()).is_none(), "{other}");
        }
    }
}
