//! Credentials cached per (role ARN, session name, external id).
//!
//! - A request is answered from the cache when the cached credentials have
//!   more than `min_served` (20 minutes) left.
//! - At most one STS call is in flight per key: concurrent cold requests
//!   wait for the same call (the per-entry fetch lock), then find its result.
//!   The call runs in a task of its own, so a client that gives up does not
//!   cancel it; a request waits for it at most `request_wait`, then gets a
//!   "not answered yet" error (a hanging STS must not hang IMDS).
//! - A background scan refreshes credentials that have less than
//!   `refresh_ahead` left, for keys some known container uses, and drops the
//!   others; containers are prefetched when they appear, so their first
//!   request finds credentials ready.
//! - After a failed call the key backs off exponentially with jitter; while
//!   it does, requests get the cached credentials if they are still valid
//!   (more than `expiry_margin` left), never expired ones, else the error.
//! - An outage ends for every role when STS answers again, not when each
//!   key's back-off (up to `backoff_cap`, minutes) runs out: a call that
//!   failed because STS is unavailable ([`FailureKind::Unavailable`]: no
//!   answer, a 5xx, the proxy's own credentials refused) starts a probe of
//!   STS (GetCallerIdentity; one call every `probe_interval` for the whole
//!   proxy, however many keys wait). When STS answers (the probe, or any
//!   call), every key backing off for that reason retries, spread over a
//!   window (`recovery_spread`, wider the more keys wait: no thundering
//!   herd). Keys STS refused (AccessDenied, a validation error) or
//!   throttled keep their exponential back-off.
//!
//! Hand-built, not `moka`: its hit path measured slower (BENCHMARKS.md,
//! run K), and it has no place for the per-key failure state above.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use rand::Rng;
use tokio::sync::Mutex as AsyncMutex;

use crate::audit_events::Auditor;
use crate::metrics::Metrics;
use crate::sts::{AssumeRole, AssumeRoleRequest, FailureKind, IssuedCredentials, StsError};

mod sts_health;

/// What identifies a role session; requests that differ in any part never
/// share credentials.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    pub role_arn: String,
    pub session_name: String,
    pub external_id: Option<String>,
}

impl CacheKey {
    pub fn of(request: &AssumeRoleRequest) -> Self {
        Self {
            role_arn: request.role_arn.clone(),
            session_name: request.session_name.clone(),
            external_id: request.external_id.clone(),
        }
    }
}

/// Time thresholds of the cache.
#[derive(Debug, Clone, Copy)]
pub struct Tuning {
    /// Serve from the cache without any STS call while more than this is left.
    pub min_served: Duration,
    /// Refresh in the background when less than this is left.
    pub refresh_ahead: Duration,
    /// Never serve credentials with less than this left.
    pub expiry_margin: Duration,
    /// First back-off after a failure; doubles per failure up to `backoff_cap`.
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    /// How often the background scan runs.
    pub scan_interval: Duration,
    /// How long the scan keeps a key no known container uses, after its
    /// last request: a container missing from the directory for a moment
    /// (an event re-read that failed, a resync racing a start) must not
    /// cost its valid credentials and a new STS call.
    pub keep_unwanted: Duration,
    /// How long a request waits for an STS call in flight before it is
    /// answered "not answered yet" (the call goes on). SDKs give up after
    /// 0.5-1 s anyway; this bounds what a slow or hanging STS costs others.
    pub request_wait: Duration,
    /// While STS looks unavailable, how often it is probed.
    pub probe_interval: Duration,
    /// How long one probe may take before it counts as "no answer".
    pub probe_timeout: Duration,
    /// When STS answers again, the keys that waited for it retry at random
    /// moments within this window (or [`RECOVERY_SPACING`] per key, if
    /// longer).
    pub recovery_spread: Duration,
}

/// After an outage, the retry window grows by this much per waiting key:
/// on average at most 50 AssumeRole calls a second (STS throttles, and
/// its limit cannot be raised: AWS STS quotas, "AssumeRole" requests
/// per second per account).
pub const RECOVERY_SPACING: Duration = Duration::from_millis(20);

impl Default for Tuning {
    fn default() -> Self {
        Self {
            min_served: Duration::from_secs(20 * 60),
            refresh_ahead: Duration::from_secs(30 * 60),
            expiry_margin: Duration::from_secs(60),
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(300),
            scan_interval: Duration::from_secs(10),
            keep_unwanted: Duration::from_secs(10 * 60),
            request_wait: Duration::from_secs(5),
            probe_interval: Duration::from_secs(2),
            probe_timeout: Duration::from_secs(3),
            recovery_spread: Duration::from_secs(1),
        }
    }
}

/// How a request was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// From the cache, more than `min_served` left.
    Hit,
    /// After an STS call made (or awaited) for this request.
    Fetched,
    /// STS is failing: cached credentials that are still valid.
    Stale,
}

/// Why no credentials could be served.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CacheError {
    #[error(transparent)]
    Sts(#[from] StsError),
}

struct Entry {
    request: AssumeRoleRequest,
    fetch_lock: AsyncMutex<()>,
    state: Mutex<EntryState>,
    warnings: RateLimit,
}

impl Entry {
    fn warn_now(&self) -> bool {
        self.warnings.allow()
    }
}

/// Lets a repeated log line through at most once a minute (SDKs poll: an
/// outage must not flood the log).
#[derive(Debug, Default)]
pub struct RateLimit {
    last: Mutex<Option<Instant>>,
}

impl RateLimit {
    const EVERY: Duration = Duration::from_secs(60);

    pub fn allow(&self) -> bool {
        let mut last = self.last.lock().expect("rate limit lock");
        if last.is_some_and(|t| t.elapsed() < Self::EVERY) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }
}

struct EntryState {
    /// When a request last asked for this key (or it was created).
    last_used: Instant,
    creds: Option<Arc<IssuedCredentials>>,
    failures: u32,
    retry_at: Option<Instant>,
    last_error: Option<StsError>,
    /// What the last failure said about STS; `None` after a success.
    last_kind: Option<FailureKind>,
}

/// What the cache knows of STS as a whole.
#[derive(Debug, Default)]
struct Health {
    /// Since when probes have failed; `None` while STS answers (or nothing
    /// has failed).
    down_since: Option<Instant>,
    /// A probe task runs (at most one).
    probing: bool,
}

/// The cache. Cheap to share behind an `Arc`.
pub struct CredentialCache<S> {
    sts: S,
    tuning: Tuning,
    entries: RwLock<HashMap<CacheKey, Arc<Entry>>>,
    health: Mutex<Health>,
    metrics: Arc<Metrics>,
    auditor: Auditor,
}

fn remaining(creds: &IssuedCredentials, now: SystemTime) -> Duration {
    creds
        .expiration
        .duration_since(now)
        .unwrap_or(Duration::ZERO)
}

impl<S: AssumeRole> CredentialCache<S> {
    pub fn new(sts: S, tuning: Tuning, metrics: Arc<Metrics>, auditor: Auditor) -> Self {
        Self {
            sts,
            tuning,
            entries: RwLock::new(HashMap::new()),
            health: Mutex::new(Health::default()),
            metrics,
            auditor,
        }
    }

    pub fn tuning(&self) -> Tuning {
        self.tuning
    }

    fn entry(&self, key: &CacheKey, request: &AssumeRoleRequest) -> Arc<Entry> {
        if let Some(entry) = self.entries.read().expect("cache lock").get(key)
            && entry.request == *request
        {
            return entry.clone();
        }
        let mut entries = self.entries.write().expect("cache lock");
        if let Some(entry) = entries.get(key)
            && entry.request == *request
        {
            return entry.clone();
        }
        // New key, or the same key with other settings (tags, duration):
        // start over so the new settings apply.
        let entry = Arc::new(Entry {
            request: request.clone(),
            fetch_lock: AsyncMutex::new(()),
            state: Mutex::new(EntryState {
                last_used: Instant::now(),
                creds: None,
                failures: 0,
                retry_at: None,
                last_error: None,
                last_kind: None,
            }),
            warnings: RateLimit::default(),
        });
        entries.insert(key.clone(), entry.clone());
        entry
    }

    /// Credentials for `request`, from the cache or from STS.
    pub async fn get(
        self: &Arc<Self>,
        request: &AssumeRoleRequest,
    ) -> Result<(Arc<IssuedCredentials>, Outcome), CacheError> {
        self.get_keyed(&CacheKey::of(request), request).await
    }

    /// [`CredentialCache::get`] with the key already made (hot path).
    pub async fn get_keyed(
        self: &Arc<Self>,
        key: &CacheKey,
        request: &AssumeRoleRequest,
    ) -> Result<(Arc<IssuedCredentials>, Outcome), CacheError> {
        let entry = self.entry(key, request);
        let now = SystemTime::now();
        let cached = {
            let mut state = entry.state.lock().expect("entry lock");
            state.last_used = Instant::now();
            state.creds.clone()
        };
        if let Some(creds) = cached {
            let left = remaining(&creds, now);
            if left > self.tuning.min_served {
                self.metrics.cache_hits.inc();
                return Ok((creds, Outcome::Hit));
            }
            if left > self.tuning.expiry_margin {
                // STS has been failing (the background refresh would
                // otherwise have replaced these): serve what is still
                // valid now, and retry STS in the background.
                self.metrics.cache_stale.inc();
                if entry.warn_now() {
                    tracing::warn!(
                        role_arn = %request.role_arn,
                        session_name = %request.session_name,
                        seconds_left = left.as_secs(),
                        "serving cached credentials with less than the usual time left: STS refresh is failing"
                    );
                }
                return Ok((creds, Outcome::Stale));
            }
        }
        self.metrics.cache_misses.inc();
        self.fetch_for_request(entry).await
    }

    /// A request's fetch: the single-flight call runs in a task of its own
    /// (a client that gives up, as SDKs do after a second, must not cancel
    /// it and leave the next one to start over), and the request waits for
    /// it at most [`Tuning::request_wait`].
    async fn fetch_for_request(
        self: &Arc<Self>,
        entry: Arc<Entry>,
    ) -> Result<(Arc<IssuedCredentials>, Outcome), CacheError> {
        let call = {
            let cache = self.clone();
            let entry = entry.clone();
            tokio::spawn(async move { cache.fetch(&entry, cache.tuning.min_served).await })
        };
        match tokio::time::timeout(self.tuning.request_wait, call).await {
            Ok(Ok(result)) => result,
            Ok(Err(error)) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            // Timed out, or the runtime is shutting down.
            Ok(Err(_)) | Err(_) => Err(StsError::NotAnsweredYet {
                role_arn: entry.request.role_arn.clone(),
                waited: self.tuning.request_wait,
            }
            .into()),
        }
    }

    /// Starts fetching credentials for `request` unless they are cached or
    /// being fetched (a container just started).
    pub fn prefetch(self: &Arc<Self>, request: &AssumeRoleRequest) {
        let entry = self.entry(&CacheKey::of(request), request);
        let cached_ok = entry
            .state
            .lock()
            .expect("entry lock")
            .creds
            .as_ref()
            .is_some_and(|c| remaining(c, SystemTime::now()) > self.tuning.refresh_ahead);
        if !cached_ok {
            self.spawn_refresh(entry);
        }
    }

    fn spawn_refresh(self: &Arc<Self>, entry: Arc<Entry>) {
        let cache = self.clone();
        tokio::spawn(async move {
            let _ = cache.fetch(&entry, cache.tuning.refresh_ahead).await;
        });
    }

    /// The single-flight fetch: one STS call per key at a time; waiters
    /// find the fresh result when the lock is theirs. Cached credentials
    /// with more than `good_enough` left make the call unnecessary.
    async fn fetch(
        self: &Arc<Self>,
        entry: &Entry,
        good_enough: Duration,
    ) -> Result<(Arc<IssuedCredentials>, Outcome), CacheError> {
        let _guard = entry.fetch_lock.lock().await;
        let now = SystemTime::now();
        {
            let state = entry.state.lock().expect("entry lock");
            if let Some(creds) = &state.creds
                && remaining(creds, now) > good_enough
            {
                return Ok((creds.clone(), Outcome::Fetched));
            }
            if let Some(retry_at) = state.retry_at
                && Instant::now() < retry_at
            {
                return self.fallback(entry, &state, now);
            }
        }
        let started = Instant::now();
        let result = self.sts.assume_role(&entry.request).await;
        self.metrics
            .sts_latency
            .observe(started.elapsed().as_secs_f64());
        match result {
            Ok(creds) => {
                self.metrics.record_sts_call("success");
                self.auditor.sts_call(&entry.request, Ok(&creds));
                let creds = Arc::new(creds);
                {
                    let mut state = entry.state.lock().expect("entry lock");
                    state.creds = Some(creds.clone());
                    state.failures = 0;
                    state.retry_at = None;
                    state.last_error = None;
                    state.last_kind = None;
                }
                self.sts_answered(false);
                Ok((creds, Outcome::Fetched))
            }
            Err(error) => {
                self.metrics.record_sts_call(error.code());
                self.auditor.sts_call(&entry.request, Err(&error));
                let kind = error.kind();
                let result = {
                    let mut state = entry.state.lock().expect("entry lock");
                    state.failures = state.failures.saturating_add(1);
                    let delay = self.backoff(state.failures);
                    state.retry_at = Some(Instant::now() + delay);
                    tracing::error!(
                        role_arn = %entry.request.role_arn,
                        session_name = %entry.request.session_name,
                        error = %error,
                        kind = ?kind,
                        failures = state.failures,
                        retry_in_ms = delay.as_millis() as u64,
                        "STS AssumeRole failed"
                    );
                    state.last_error = Some(error);
                    state.last_kind = Some(kind);
                    self.fallback(entry, &state, SystemTime::now())
                };
                match kind {
                    // Is it STS, or this role? The probe tells.
                    FailureKind::Unavailable => self.start_probing(),
                    // STS answered: it is up.
                    FailureKind::Refused => self.sts_answered(false),
                    // STS answers but wants fewer calls: no retry is
                    // hastened by it.
                    FailureKind::Throttled => {}
                }
                result
            }
        }
    }

    /// While backing off: still-valid cached credentials, else the error.
    fn fallback(
        &self,
        entry: &Entry,
        state: &EntryState,
        now: SystemTime,
    ) -> Result<(Arc<IssuedCredentials>, Outcome), CacheError> {
        if let Some(creds) = &state.creds
            && remaining(creds, now) > self.tuning.expiry_margin
        {
            return Ok((creds.clone(), Outcome::Stale));
        }
        Err(state
            .last_error
            .clone()
            .unwrap_or_else(|| StsError::NoCredentials {
                role_arn: entry.request.role_arn.clone(),
            })
            .into())
    }

    /// Exponential back-off with "equal jitter": half fixed, half random,
    /// never above `backoff_cap`. By hand, not `backon`: the delay follows
    /// the failure count kept in the key's state, and `backon`'s jitter
    /// adds up to a whole delay on top of the cap (BENCHMARKS.md, run K,
    /// also measures why the cache itself is not `moka`).
    fn backoff(&self, failures: u32) -> Duration {
        let exp = self
            .tuning
            .backoff_base
            .saturating_mul(1u32 << failures.saturating_sub(1).min(20))
            .min(self.tuning.backoff_cap);
        let half = exp / 2;
        let jitter = rand::rng().random_range(0..=half.as_millis() as u64);
        half + Duration::from_millis(jitter)
    }

    /// One pass of the background refresh: refresh keys in `wanted` that
    /// need it (not backing off, no call in flight); drop the other keys
    /// once unused for [`Tuning::keep_unwanted`].
    pub fn scan(self: &Arc<Self>, wanted: &HashSet<CacheKey>) {
        let now = SystemTime::now();
        let mut to_refresh = Vec::new();
        {
            let mut entries = self.entries.write().expect("cache lock");
            entries.retain(|key, entry| {
                let state = entry.state.lock().expect("entry lock");
                if !wanted.contains(key) {
                    return state.last_used.elapsed() < self.tuning.keep_unwanted;
                }
                let due = state
                    .creds
                    .as_ref()
                    .is_none_or(|c| remaining(c, now) <= self.tuning.refresh_ahead);
                let backing_off = state.retry_at.is_some_and(|t| Instant::now() < t);
                if due && !backing_off {
                    to_refresh.push(entry.clone());
                }
                true
            });
        }
        for entry in to_refresh {
            if entry.fetch_lock.try_lock().is_ok() {
                self.spawn_refresh(entry);
            }
        }
    }

    /// Number of cached keys (metrics, tests).
    pub fn len(&self) -> usize {
        self.entries.read().expect("cache lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use crate::secret::Secret;

    /// Test double for STS: counts calls and answers from a script
    /// (credential lifetimes or errors), after an optional delay; while
    /// `down`, every call and probe fails as an unreachable STS does. Used
    /// only for what real STS cannot be made to do on demand: credentials
    /// that expire within minutes, a failure at an exact moment, throttling
    /// and AccessDenied for one role while STS answers. (The integration
    /// tests count AssumeRole calls against a real moto server, and stop it
    /// for real outages.)
    #[derive(Default)]
    struct ScriptedStsTestDouble {
        calls: AtomicUsize,
        probes: AtomicUsize,
        down: AtomicBool,
        delay: Duration,
        script: Mutex<VecDeque<Result<Duration, StsError>>>,
        call_times: Mutex<Vec<Instant>>,
    }

    impl ScriptedStsTestDouble {
        fn with(delay: Duration, script: Vec<Result<Duration, StsError>>) -> Self {
            Self {
                delay,
                script: Mutex::new(script.into()),
                ..Default::default()
            }
        }
        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
        fn probes(&self) -> usize {
            self.probes.load(Ordering::SeqCst)
        }
        fn set_down(&self, down: bool) {
            self.down.store(down, Ordering::SeqCst);
        }
    }

    fn unreachable(role_arn: &str) -> StsError {
        StsError::AssumeRole {
            role_arn: role_arn.into(),
            code: "Unreachable".into(),
            message: "dispatch failure: connection refused".into(),
            request_id: None,
            http_status: None,
        }
    }

    impl AssumeRole for Arc<ScriptedStsTestDouble> {
        async fn assume_role(
            &self,
            request: &AssumeRoleRequest,
        ) -> Result<IssuedCredentials, StsError> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            self.call_times.lock().unwrap().push(Instant::now());
            tokio::time::sleep(self.delay).await;
            if self.down.load(Ordering::SeqCst) {
                return Err(unreachable(&request.role_arn));
            }
            let next = self
                .script
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or(Ok(Duration::from_secs(3600)));
            let lifetime = next?;
            let now = SystemTime::now();
            Ok(IssuedCredentials {
                access_key_id: format!("ASIA{n:016}"),
                secret_access_key: Secret::from(format!("secret-{n}")),
                session_token: Secret::from(format!("token-{n}")),
                expiration: now + lifetime,
                issued_at: now,
                assumed_role_arn: Some(format!("{}/{}", request.role_arn, request.session_name)),
                request_id: Some(format!("req-{n}")),
            })
        }

        async fn probe(&self) -> Result<(), StsError> {
            self.probes.fetch_add(1, Ordering::SeqCst);
            if self.down.load(Ordering::SeqCst) {
                return Err(StsError::CallerIdentity {
                    message: "dispatch failure: connection refused".into(),
                });
            }
            Ok(())
        }
    }

    fn access_denied() -> StsError {
        StsError::AssumeRole {
            role_arn: "arn:aws:iam::123456789012:role/dev".into(),
            code: "AccessDenied".into(),
            message: "not authorized to perform sts:AssumeRole".into(),
            request_id: None,
            http_status: Some(403),
        }
    }

    /// Waits (polling) until `f` holds; panics after `timeout`.
    async fn until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while !f() {
            assert!(Instant::now() < deadline, "gave up waiting for {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// A cache whose back-off is far longer than any test waits: only a
    /// recovery can make a key retry.
    fn outage_cache(
        sts: &Arc<ScriptedStsTestDouble>,
    ) -> Arc<CredentialCache<Arc<ScriptedStsTestDouble>>> {
        Arc::new(CredentialCache::new(
            sts.clone(),
            Tuning {
                backoff_base: Duration::from_secs(300),
                backoff_cap: Duration::from_secs(300),
                probe_interval: Duration::from_millis(20),
                probe_timeout: Duration::from_millis(500),
                recovery_spread: Duration::from_millis(50),
                ..Tuning::default()
            },
            Arc::new(Metrics::new()),
            Auditor::tracing_only(),
        ))
    }

    fn probing(cache: &CredentialCache<Arc<ScriptedStsTestDouble>>) -> bool {
        cache.health.lock().unwrap().probing
    }

    fn throttled() -> StsError {
        StsError::AssumeRole {
            role_arn: "arn:aws:iam::123456789012:role/dev".into(),
            code: "Throttling".into(),
            message: "Rate exceeded".into(),
            request_id: None,
            http_status: Some(400),
        }
    }

    fn request(user: &str, external_id: Option<&str>) -> AssumeRoleRequest {
        AssumeRoleRequest {
            user: user.into(),
            container: format!("bastion-{user}"),
            role_arn: "arn:aws:iam::123456789012:role/dev".into(),
            session_name: user.into(),
            external_id: external_id.map(str::to_owned),
            duration: Duration::from_secs(3600),
            tags: Vec::new(),
        }
    }

    fn cache(sts: &Arc<ScriptedStsTestDouble>) -> Arc<CredentialCache<Arc<ScriptedStsTestDouble>>> {
        Arc::new(CredentialCache::new(
            sts.clone(),
            Tuning {
                backoff_base: Duration::from_millis(200),
                backoff_cap: Duration::from_secs(1),
                ..Tuning::default()
            },
            Arc::new(Metrics::new()),
            Auditor::tracing_only(),
        ))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ten_thousand_cold_requests_make_one_sts_call() {
        let sts = Arc::new(ScriptedStsTestDouble::with(
            Duration::from_millis(50),
            vec![],
        ));
        let cache = cache(&sts);
        let request = request("alice", None);
        let tasks: Vec<_> = (0..10_000)
            .map(|_| {
                let cache = cache.clone();
                let request = request.clone();
                tokio::spawn(
                    async move { cache.get(&request).await.unwrap().0.access_key_id.clone() },
                )
            })
            .collect();
        let mut keys = HashSet::new();
        for task in tasks {
            keys.insert(task.await.unwrap());
        }
        assert_eq!(sts.calls(), 1);
        assert_eq!(keys.len(), 1, "everyone got the same credentials");
        // And later requests are hits.
        let (_, outcome) = cache.get(&request).await.unwrap();
        assert_eq!(outcome, Outcome::Hit);
        assert_eq!(sts.calls(), 1);
    }

    #[tokio::test]
    async fn the_key_is_role_session_and_external_id() {
        let sts = Arc::new(ScriptedStsTestDouble::default());
        let cache = cache(&sts);
        let a = cache.get(&request("alice", None)).await.unwrap().0;
        let b = cache.get(&request("bob", None)).await.unwrap().0;
        let c = cache.get(&request("alice", Some("ext-1"))).await.unwrap().0;
        assert_eq!(sts.calls(), 3);
        assert_ne!(a.access_key_id, b.access_key_id);
        assert_ne!(a.access_key_id, c.access_key_id);
        let mut other_role = request("alice", None);
        other_role.role_arn = "arn:aws:iam::123456789012:role/admin".into();
        let d = cache.get(&other_role).await.unwrap().0;
        assert_ne!(a.access_key_id, d.access_key_id);
        assert_eq!(sts.calls(), 4);
    }

    #[tokio::test]
    async fn credentials_with_20_minutes_or_less_left_are_replaced_before_serving() {
        // 19 minutes: valid, but not enough to serve while STS works.
        let sts = Arc::new(ScriptedStsTestDouble::with(
            Duration::ZERO,
            vec![Ok(Duration::from_secs(19 * 60))],
        ));
        let cache = cache(&sts);
        let req = request("alice", None);
        // The first fetch is served (nothing better exists)...
        let (first, _) = cache.get(&req).await.unwrap();
        // ...and the background scan replaces it at once.
        cache.scan(&HashSet::from([CacheKey::of(&req)]));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(sts.calls(), 2);
        let (second, outcome) = cache.get(&req).await.unwrap();
        assert_ne!(first.access_key_id, second.access_key_id);
        assert_eq!(outcome, Outcome::Hit);
        let left = second.expiration.duration_since(SystemTime::now()).unwrap();
        assert!(left > Duration::from_secs(20 * 60));
    }

    #[tokio::test]
    async fn sts_down_serves_valid_cached_credentials_and_never_expired_ones() {
        let sts = Arc::new(ScriptedStsTestDouble::with(
            Duration::ZERO,
            vec![
                Ok(Duration::from_secs(10 * 60)),
                Err(throttled()),
                Ok(Duration::from_secs(30)),
                Err(throttled()),
            ],
        ));
        let cache = cache(&sts);
        let req = request("alice", None);
        let (warm, _) = cache.get(&req).await.unwrap();
        // STS fails on the refresh: the 10-minute credentials are still
        // served, as Stale.
        cache.scan(&HashSet::from([CacheKey::of(&req)]));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(sts.calls(), 2);
        let (served, outcome) = cache.get(&req).await.unwrap();
        assert_eq!(served.access_key_id, warm.access_key_id);
        assert_eq!(outcome, Outcome::Stale);
        // While backing off, nothing calls STS.
        cache.scan(&HashSet::from([CacheKey::of(&req)]));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(sts.calls(), 2);

        // A new key whose only credentials have 30 s left (under the
        // expiry margin) and STS failing: an error, never those.
        let req = request("bob", None);
        let (short, _) = cache.get(&req).await.unwrap();
        assert_eq!(sts.calls(), 3);
        let left = short.expiration.duration_since(SystemTime::now()).unwrap();
        assert!(left <= Duration::from_secs(30));
        let error = cache.get(&req).await.unwrap_err();
        assert_eq!(sts.calls(), 4);
        assert!(error.to_string().contains("Throttling"), "{error}");
        // During back-off the same error comes without another call.
        assert!(cache.get(&req).await.is_err());
        assert_eq!(sts.calls(), 4);
    }

    #[test]
    fn a_rate_limited_line_passes_once_a_minute() {
        let limit = RateLimit::default();
        assert!(limit.allow());
        assert!(!limit.allow());
        assert!(!limit.allow());
    }

    #[tokio::test]
    async fn backoff_grows_and_stays_under_the_cap() {
        let sts = Arc::new(ScriptedStsTestDouble::default());
        let cache = cache(&sts);
        let first = cache.backoff(1);
        assert!(
            first >= Duration::from_millis(100) && first <= Duration::from_millis(200),
            "{first:?}"
        );
        let third = cache.backoff(3);
        assert!(
            third >= Duration::from_millis(400) && third <= Duration::from_millis(800),
            "{third:?}"
        );
        for failures in [10, 100, u32::MAX] {
            let d = cache.backoff(failures);
            assert!(
                d >= Duration::from_millis(500) && d <= Duration::from_secs(1),
                "{d:?}"
            );
        }
    }

    #[tokio::test]
    async fn unwanted_keys_are_dropped_once_unused_and_prefetch_fills_the_cache() {
        let sts = Arc::new(ScriptedStsTestDouble::default());
        let cache = Arc::new(CredentialCache::new(
            sts.clone(),
            Tuning {
                keep_unwanted: Duration::from_millis(300),
                ..Tuning::default()
            },
            Arc::new(Metrics::new()),
            Auditor::tracing_only(),
        ));
        let req = request("alice", None);
        cache.prefetch(&req);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(sts.calls(), 1);
        let (_, outcome) = cache.get(&req).await.unwrap();
        assert_eq!(
            outcome,
            Outcome::Hit,
            "the first request after a prefetch waits for nothing"
        );
        // A container missing from the directory for a moment keeps its
        // credentials...
        cache.scan(&HashSet::new());
        assert_eq!(cache.len(), 1);
        cache.get(&req).await.unwrap();
        assert_eq!(sts.calls(), 1, "no new STS call after a gap");
        // ...and a key nobody asks for goes once unused for long enough.
        tokio::time::sleep(Duration::from_millis(400)).await;
        cache.scan(&HashSet::new());
        assert!(cache.is_empty());
    }

    #[tokio::test]
    async fn a_request_waits_for_a_slow_sts_at_most_request_wait_and_the_call_goes_on() {
        let sts = Arc::new(ScriptedStsTestDouble::with(
            Duration::from_millis(400),
            vec![],
        ));
        let cache = Arc::new(CredentialCache::new(
            sts.clone(),
            Tuning {
                request_wait: Duration::from_millis(50),
                ..Tuning::default()
            },
            Arc::new(Metrics::new()),
            Auditor::tracing_only(),
        ));
        let req = request("alice", None);
        let error = cache.get(&req).await.unwrap_err();
        let CacheError::Sts(error) = error;
        assert!(matches!(error, StsError::NotAnsweredYet { .. }), "{error}");
        assert_eq!(error.code(), "ServiceUnavailable");
        assert_eq!(sts.calls(), 1);
        // The request is gone; its STS call is not: it completes and fills
        // the cache, and the next request is a hit, with no second call.
        until("the call to complete", Duration::from_secs(10), || {
            cache
                .entries
                .read()
                .unwrap()
                .values()
                .any(|e| e.state.lock().unwrap().creds.is_some())
        })
        .await;
        let (_, outcome) = cache.get(&req).await.unwrap();
        assert_eq!(outcome, Outcome::Hit);
        assert_eq!(sts.calls(), 1);
    }

    #[tokio::test]
    async fn after_an_outage_every_waiting_key_retries_as_soon_as_sts_answers() {
        let sts = Arc::new(ScriptedStsTestDouble::default());
        let cache = outage_cache(&sts);
        sts.set_down(true);
        let alice = request("alice", None);
        let bob = request("bob", None);
        let error = cache.get(&alice).await.unwrap_err();
        assert!(error.to_string().contains("Unreachable"), "{error}");
        assert!(cache.get(&bob).await.is_err());
        assert_eq!(sts.calls(), 2);
        // The probe finds STS down and keeps probing; the keys back off
        // (300 s): requests make no call.
        until("probes to fail", Duration::from_secs(10), || {
            sts.probes() >= 3
        })
        .await;
        for _ in 0..10 {
            assert!(cache.get(&alice).await.is_err());
        }
        assert_eq!(sts.calls(), 2);
        assert!(probing(&cache));

        // STS answers again: both keys are fetched without any request,
        // long before their back-off would have let them.
        sts.set_down(false);
        until("both keys to be refetched", Duration::from_secs(10), || {
            sts.calls() == 4
        })
        .await;
        until("the probe task to end", Duration::from_secs(10), || {
            !probing(&cache)
        })
        .await;
        // (The refetch may still be in flight: the request then waits for
        // it rather than making another call.)
        for req in [&alice, &bob] {
            cache.get(req).await.unwrap();
        }
        assert_eq!(sts.calls(), 4);
        // One probe task, not one per key: probes stopped with the outage.
        let probes = sts.probes();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(sts.probes(), probes);
    }

    #[tokio::test]
    async fn refused_and_throttled_roles_keep_backing_off_when_sts_answers_again() {
        let sts = Arc::new(ScriptedStsTestDouble::with(
            Duration::ZERO,
            vec![Err(access_denied()), Err(throttled())],
        ));
        let cache = outage_cache(&sts);
        let carol = request("carol", None);
        let dave = request("dave", None);
        let erin = request("erin", None);
        let error = cache.get(&carol).await.unwrap_err();
        assert!(error.to_string().contains("AccessDenied"), "{error}");
        let error = cache.get(&dave).await.unwrap_err();
        assert!(error.to_string().contains("Throttling"), "{error}");
        assert_eq!(sts.calls(), 2);
        assert!(!probing(&cache), "a refusal or throttling is no outage");
        // An outage, then recovery: erin, who waited for STS, is fetched;
        // carol and dave keep their back-off.
        sts.set_down(true);
        assert!(cache.get(&erin).await.is_err());
        until("a failed probe", Duration::from_secs(10), || {
            sts.probes() >= 2
        })
        .await;
        sts.set_down(false);
        until("erin to be refetched", Duration::from_secs(10), || {
            sts.calls() == 4
        })
        .await;
        until("the probe task to end", Duration::from_secs(10), || {
            !probing(&cache)
        })
        .await;
        cache.get(&erin).await.unwrap();
        for _ in 0..20 {
            let error = cache.get(&carol).await.unwrap_err();
            assert!(error.to_string().contains("AccessDenied"), "{error}");
            let error = cache.get(&dave).await.unwrap_err();
            assert!(error.to_string().contains("Throttling"), "{error}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(sts.calls(), 4, "no retry of a refused or throttled role");
    }

    #[tokio::test]
    async fn a_server_error_for_one_role_while_sts_answers_keeps_its_backoff() {
        // A 5xx for one role while GetCallerIdentity works: the probe finds
        // STS up, so there is no outage to end and the role backs off.
        let internal = StsError::AssumeRole {
            role_arn: "arn:aws:iam::123456789012:role/dev".into(),
            code: "InternalFailure".into(),
            message: "internal failure".into(),
            request_id: None,
            http_status: Some(500),
        };
        let sts = Arc::new(ScriptedStsTestDouble::with(
            Duration::ZERO,
            vec![Err(internal)],
        ));
        let cache = outage_cache(&sts);
        let frank = request("frank", None);
        assert!(cache.get(&frank).await.is_err());
        until("the probe to run and end", Duration::from_secs(10), || {
            sts.probes() == 1 && !probing(&cache)
        })
        .await;
        for _ in 0..20 {
            assert!(cache.get(&frank).await.is_err());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(sts.calls(), 1);
        assert_eq!(sts.probes(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn recovery_spreads_the_retries_of_many_keys_over_a_window() {
        let sts = Arc::new(ScriptedStsTestDouble::default());
        let cache = outage_cache(&sts);
        sts.set_down(true);
        let n = 100;
        for i in 0..n {
            assert!(
                cache
                    .get(&request(&format!("user{i}"), None))
                    .await
                    .is_err()
            );
        }
        until("a failed probe", Duration::from_secs(10), || {
            sts.probes() >= 2
        })
        .await;
        sts.call_times.lock().unwrap().clear();
        sts.set_down(false);
        until("every key to be refetched", Duration::from_secs(30), || {
            sts.calls() == 2 * n
        })
        .await;
        // 100 keys: a window of 100 x RECOVERY_SPACING = 2 s. The calls are
        // spread over it, not made at once (a lower bound: load only
        // spreads them more).
        let times = sts.call_times.lock().unwrap().clone();
        assert_eq!(times.len(), n);
        let first = *times.iter().min().unwrap();
        let last = *times.iter().max().unwrap();
        assert!(
            last - first >= Duration::from_secs(1),
            "{n} retries within {:?}",
            last - first
        );
    }
}
