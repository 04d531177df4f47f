//! Whether STS answers: a probe task while it does not, and the retry of
//! every role session that waited for it, spread over a window, once it
//! answers again.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use rand::Rng;

use super::{CredentialCache, Entry, RECOVERY_SPACING};
use crate::sts::{AssumeRole, FailureKind};

impl<S: AssumeRole> CredentialCache<S> {
    /// Starts the probe task unless one runs: GetCallerIdentity now, then
    /// every [`Tuning::probe_interval`] until STS answers. It holds the
    /// cache weakly, so it ends with the cache.
    pub(super) fn start_probing(self: &Arc<Self>) {
        {
            let mut health = self.health.lock().expect("health lock");
            if health.probing {
                return;
            }
            health.probing = true;
        }
        let cache: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(this) = cache.upgrade() else { return };
                let timeout = this.tuning.probe_timeout;
                let error = match tokio::time::timeout(timeout, this.sts.probe()).await {
                    Ok(Ok(())) => {
                        this.sts_answered(true);
                        return;
                    }
                    Ok(Err(error)) => error.to_string(),
                    Err(_) => format!("no answer within {} ms", timeout.as_millis()),
                };
                this.sts_unavailable(&error);
                let interval = this.tuning.probe_interval;
                drop(this);
                tokio::time::sleep(interval).await;
            }
        });
    }

    /// A probe failed: STS is down (logged once per outage).
    pub(super) fn sts_unavailable(&self, error: &str) {
        let mut health = self.health.lock().expect("health lock");
        if health.down_since.is_none() {
            health.down_since = Some(Instant::now());
            tracing::warn!(
                %error,
                probe_every_ms = self.tuning.probe_interval.as_millis() as u64,
                "STS does not answer: probing it with GetCallerIdentity until it does; the role sessions waiting for it are retried as soon as it answers"
            );
        } else {
            tracing::debug!(%error, "STS probe failed");
        }
    }

    /// STS answered a call or the probe (`from_probe`: the probe task ends).
    /// After an outage, every key that backs off because STS was unavailable
    /// retries now, spread over the recovery window; its failure count
    /// starts over (the outage said nothing about the role).
    pub(super) fn sts_answered(self: &Arc<Self>, from_probe: bool) {
        let down_since = {
            let mut health = self.health.lock().expect("health lock");
            if from_probe {
                health.probing = false;
            }
            health.down_since.take()
        };
        let Some(down_since) = down_since else {
            return;
        };
        let now = Instant::now();
        let waiting: Vec<Arc<Entry>> = self
            .entries
            .read()
            .expect("cache lock")
            .values()
            .filter(|entry| {
                let state = entry.state.lock().expect("entry lock");
                state.last_kind == Some(FailureKind::Unavailable)
                    && state.retry_at.is_some_and(|t| now < t)
            })
            .cloned()
            .collect();
        let spacing =
            RECOVERY_SPACING.saturating_mul(u32::try_from(waiting.len()).unwrap_or(u32::MAX));
        let window = self.tuning.recovery_spread.max(spacing);
        let delays: Vec<Duration> = {
            let mut rng = rand::rng();
            waiting
                .iter()
                .map(|_| Duration::from_millis(rng.random_range(0..=window.as_millis() as u64)))
                .collect()
        };
        tracing::info!(
            down_for_s = down_since.elapsed().as_secs(),
            role_sessions = waiting.len(),
            within_ms = window.as_millis() as u64,
            "STS answers again: retrying the role sessions that waited for it"
        );
        for (entry, delay) in waiting.into_iter().zip(delays) {
            {
                let mut state = entry.state.lock().expect("entry lock");
                state.failures = 0;
                state.retry_at = Some(now + delay);
            }
            let cache = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let _ = cache.fetch(&entry, cache.tuning.refresh_ahead).await;
            });
        }
    }
}
