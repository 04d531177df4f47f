//! Each user's recording budget (`[bastiond.limits] recordings`): the space
//! all their recordings may take. Live sessions' recordings grow while they
//! run, so each one *reserves* its cap when it starts, and a new session
//! may only take what neither the files on disk nor the reservations of
//! the user's other live sessions hold. Concurrent sessions therefore
//! cannot take more than the budget between them.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use bytesize::ByteSize;

use super::{MIN_RECORDING_ROOM, RecordingError, user_usage};

/// The live reservations, per user.
#[derive(Debug, Default)]
pub struct Budgets {
    live: Mutex<HashMap<String, HashMap<String, u64>>>,
}

/// One live session's reservation; released when dropped.
#[derive(Debug)]
pub struct Reservation {
    budgets: Arc<Budgets>,
    user: String,
    session_id: String,
    /// The most this session's recording may take.
    pub cap: u64,
}

impl Budgets {
    /// Reserves room for one recording of `user` (session `session_id`): at
    /// most `max` bytes, and no more than what `budget` leaves after the
    /// user's recordings on disk and their other live sessions'
    /// reservations. `budget` 0: no limit.
    pub fn reserve(
        self: &Arc<Self>,
        log_dir: &Path,
        user: &str,
        session_id: &str,
        budget: u64,
        max: u64,
    ) -> Result<Reservation, RecordingError> {
        // Held while the disk is read: concurrent logins see each other.
        let mut live = self.live.lock().expect("budget lock poisoned");
        let mine = live.entry(user.to_owned()).or_default();
        let cap = if budget == 0 {
            max
        } else {
            let used = user_usage(log_dir, user) + mine.values().sum::<u64>();
            if used + MIN_RECORDING_ROOM > budget {
                return Err(RecordingError::Budget {
                    user: user.to_owned(),
                    used: ByteSize::b(used),
                    budget: ByteSize::b(budget),
                });
            }
            max.min(budget - used)
        };
        mine.insert(session_id.to_owned(), cap);
        Ok(Reservation {
            budgets: self.clone(),
            user: user.to_owned(),
            session_id: session_id.to_owned(),
            cap,
        })
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut live = self.budgets.live.lock().expect("budget lock poisoned");
        if let Some(mine) = live.get_mut(&self.user) {
            mine.remove(&self.session_id);
            if mine.is_empty() {
                live.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_sessions_share_one_budget() {
        let dir = tempfile::tempdir().unwrap();
        let budgets = Arc::new(Budgets::default());
        let mib = 1 << 20;
        let a = budgets
            .reserve(dir.path(), "u", "a", 3 * mib, 2 * mib)
            .unwrap();
        assert_eq!(a.cap, 2 * mib);
        let b = budgets
            .reserve(dir.path(), "u", "b", 3 * mib, 2 * mib)
            .unwrap();
        assert_eq!(b.cap, mib, "what a left");
        let err = budgets
            .reserve(dir.path(), "u", "c", 3 * mib, 2 * mib)
            .unwrap_err();
        assert!(matches!(err, RecordingError::Budget { .. }), "{err}");
        assert!(
            budgets
                .reserve(dir.path(), "v", "d", 3 * mib, 2 * mib)
                .is_ok(),
            "another user"
        );
        drop(a);
        assert_eq!(
            budgets
                .reserve(dir.path(), "u", "e", 3 * mib, 2 * mib)
                .unwrap()
                .cap,
            2 * mib
        );
        drop(b);
        // Unlimited.
        assert_eq!(
            budgets.reserve(dir.path(), "u", "f", 0, mib).unwrap().cap,
            mib
        );
    }
}
