//! Admission of connections to bastiond's socket before they have sent a
//! whole request: at most `pending_per_uid` per uid and `pending_total` in
//! all, each held only until its request deadline. The socket is open to
//! every local account, so an account that opens connections and sends
//! nothing must not hold bastiond's descriptors or tasks.
//!
//! Refusals and bad requests are logged, but at most once per uid every few
//! seconds with a count of those since, so a flood cannot flood the log
//! (and the disk under it) as well.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::log_limit::LogLimit;
use crate::open_counts::{Full, OpenCounts};

/// How often refusals of one uid are logged.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// Counts of pending connections.
#[derive(Debug)]
pub struct Admission {
    state: Mutex<State>,
}

/// What is logged about a uid's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Refused,
    BadRequest,
    LoginRefused,
}

#[derive(Debug)]
struct State {
    pending: OpenCounts<u32>,
    logged: LogLimit<(u32, Kind)>,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("uid {uid} already has {limit} connections waiting to send their request")]
    PerUid { uid: u32, limit: usize },
    #[error("{limit} connections are already waiting to send their request")]
    Total { limit: usize },
}

/// One admitted, pending connection; its slot is freed when dropped.
#[derive(Debug)]
pub struct Pending {
    admission: Arc<Admission>,
    uid: u32,
}

impl Admission {
    pub fn new(per_uid: usize, total: usize) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                pending: OpenCounts::new(per_uid, total),
                logged: LogLimit::new(LOG_EVERY),
            }),
        })
    }

    /// Admits a connection from `uid`, or says why not (and logs it, rate
    /// limited).
    pub fn admit(self: &Arc<Self>, uid: u32) -> Result<Pending, Refusal> {
        let mut state = self.state.lock().expect("admission lock poisoned");
        if let Err(full) = state.pending.open(uid) {
            let refusal = match full {
                Full::Key => Refusal::PerUid {
                    uid,
                    limit: state.pending.per_key(),
                },
                Full::Total => Refusal::Total {
                    limit: state.pending.total(),
                },
            };
            if let Some(refused) = state.logged.due((uid, Kind::Refused)) {
                tracing::warn!(
                    uid,
                    refused,
                    reason = %refusal,
                    "refused connections to bastiond: too many waiting to send their request"
                );
            }
            return Err(refusal);
        }
        Ok(Pending {
            admission: self.clone(),
            uid,
        })
    }

    /// Logs a bad first frame from `uid` (rate limited: one line every few
    /// seconds per uid, with the count since the last).
    pub fn bad_request(&self, uid: u32, error: &dyn std::error::Error) {
        let mut state = self.state.lock().expect("admission lock poisoned");
        if let Some(count) = state.logged.due((uid, Kind::BadRequest)) {
            tracing::warn!(uid, count, %error, "bad request from shell");
        }
    }

    /// Logs that `uid` was refused a session (not allowed, unknown): any
    /// local account can cause these, so rate limited like bad requests.
    pub fn login_refused(&self, uid: u32, error: &dyn std::error::Error) {
        let mut state = self.state.lock().expect("admission lock poisoned");
        if let Some(count) = state.logged.due((uid, Kind::LoginRefused)) {
            tracing::warn!(uid, count, %error, "login refused");
        }
    }

    /// Connections pending now (all uids).
    pub fn pending(&self) -> usize {
        self.state
            .lock()
            .expect("admission lock poisoned")
            .pending
            .in_all()
    }
}

impl Pending {
    /// The admission this connection was admitted by.
    pub fn admission(&self) -> Arc<Admission> {
        self.admission.clone()
    }

    /// Logs that this connection's first frame was refused (rate limited).
    pub fn bad_request(&self, error: &dyn std::error::Error) {
        self.admission.bad_request(self.uid, error);
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let mut state = self
            .admission
            .state
            .lock()
            .expect("admission lock poisoned");
        state.pending.close(&self.uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_uid_has_its_own_cap_and_all_share_the_total() {
        let admission = Admission::new(2, 3);
        let a1 = admission.admit(1000).unwrap();
        let _a2 = admission.admit(1000).unwrap();
        assert_eq!(
            admission.admit(1000).unwrap_err(),
            Refusal::PerUid {
                uid: 1000,
                limit: 2
            }
        );
        let _b1 = admission.admit(1001).unwrap();
        assert_eq!(
            admission.admit(1002).unwrap_err(),
            Refusal::Total { limit: 3 }
        );
        drop(a1);
        assert_eq!(admission.pending(), 2);
        let _a3 = admission.admit(1000).unwrap();
    }
}
