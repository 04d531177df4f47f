//! Issue 10's question, measured: does `moka::future::Cache` (with
//! `try_get_with` as the single flight) serve credentials faster than the
//! metadata proxy's own `CredentialCache`? Both sit in front of the same
//! in-process STS (a fixed delay, then credentials valid for an hour), and
//! both do what a request needs: look the key up, check that more than
//! `min_served` is left, else make (or wait for) the one STS call.
//!
//! Workloads, each run `--rounds` times with the two caches interleaved:
//! - `hit-1`: every request for one warm key (one container polling);
//! - `hit-1000`: requests spread over 1,000 warm keys (a busy bastion);
//! - `cold`: 10,000 concurrent first requests for one key (a container
//!   whose SDKs all start at once); reports the wall time and STS calls.
//!
//! Prints one line per run: `workload cache value unit`, for
//! BENCHMARKS.md. Run in release: `cargo run --release -p bastion-bench
//! --bin cache-vs-moka`.
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bastion_metadata_proxy::audit_events::Auditor;
use bastion_metadata_proxy::credential_cache::{CacheKey, CredentialCache, Tuning};
use bastion_metadata_proxy::metrics::Metrics;
use bastion_metadata_proxy::secret::Secret;
use bastion_metadata_proxy::sts::{AssumeRole, AssumeRoleRequest, IssuedCredentials, StsError};
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Interleaved rounds of every workload.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Requests per task in the hit workloads.
    #[arg(long, default_value_t = 500_000)]
    requests: usize,
    /// Concurrent tasks in the hit workloads.
    #[arg(long, default_value_t = 2)]
    tasks: usize,
}

/// An in-process STS: answers after `delay`, counts its calls (shared by
/// clones).
#[derive(Clone)]
struct FixedDelaySts {
    delay: Duration,
    calls: Arc<AtomicUsize>,
}

impl FixedDelaySts {
    fn issue(&self, request: &AssumeRoleRequest) -> IssuedCredentials {
        let now = SystemTime::now();
        IssuedCredentials {
            access_key_id: "ASIABENCHMARK".into(),
            secret_access_key: Secret::from("secret"),
            session_token: Secret::from("token"),
            expiration: now + Duration::from_secs(3600),
            issued_at: now,
            assumed_role_arn: Some(format!("{}/{}", request.role_arn, request.session_name)),
            request_id: None,
        }
    }
}

impl AssumeRole for FixedDelaySts {
    async fn assume_role(
        &self,
        request: &AssumeRoleRequest,
    ) -> Result<IssuedCredentials, StsError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(self.delay).await;
        Ok(self.issue(request))
    }

    async fn probe(&self) -> Result<(), StsError> {
        Ok(())
    }
}

/// The moka candidate: the cache holds the credentials, `try_get_with`
/// makes the single STS call, an entry with too little left is
/// invalidated and fetched again.
struct MokaCredentials {
    cache: moka::future::Cache<CacheKey, Arc<IssuedCredentials>>,
    sts: FixedDelaySts,
    min_served: Duration,
}

impl MokaCredentials {
    async fn get(
        &self,
        key: &CacheKey,
        request: &AssumeRoleRequest,
    ) -> Result<Arc<IssuedCredentials>, Arc<StsError>> {
        if let Some(creds) = self.cache.get(key).await {
            if left(&creds) > self.min_served {
                return Ok(creds);
            }
            self.cache.invalidate(key).await;
        }
        self.cache
            .try_get_with(key.clone(), async {
                self.sts.assume_role(request).await.map(Arc::new)
            })
            .await
    }
}

fn left(creds: &IssuedCredentials) -> Duration {
    creds
        .expiration
        .duration_since(SystemTime::now())
        .unwrap_or_default()
}

fn request(i: usize) -> AssumeRoleRequest {
    AssumeRoleRequest {
        user: format!("user{i}"),
        container: format!("bastion-user{i}"),
        role_arn: format!("arn:aws:iam::123456789012:role/bastion-user{i}"),
        session_name: format!("user{i}"),
        external_id: None,
        duration: Duration::from_secs(3600),
        tags: Vec::new(),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Which {
    Hand,
    Moka,
}

impl Which {
    fn name(self) -> &'static str {
        match self {
            Which::Hand => "hand",
            Which::Moka => "moka",
        }
    }
}

struct Caches {
    hand: Arc<CredentialCache<FixedDelaySts>>,
    moka: Arc<MokaCredentials>,
    sts: FixedDelaySts,
}

fn caches(delay: Duration) -> Caches {
    let sts = FixedDelaySts {
        delay,
        calls: Arc::new(AtomicUsize::new(0)),
    };
    let tuning = Tuning::default();
    Caches {
        hand: Arc::new(CredentialCache::new(
            sts.clone(),
            tuning,
            Arc::new(Metrics::new()),
            Auditor::tracing_only(),
        )),
        moka: Arc::new(MokaCredentials {
            cache: moka::future::Cache::builder().max_capacity(100_000).build(),
            sts: sts.clone(),
            min_served: tuning.min_served,
        }),
        sts,
    }
}

async fn get(caches: &Caches, which: Which, key: &CacheKey, request: &AssumeRoleRequest) {
    match which {
        Which::Hand => {
            caches
                .hand
                .get_keyed(key, request)
                .await
                .expect("hand cache");
        }
        Which::Moka => {
            caches.moka.get(key, request).await.expect("moka cache");
        }
    }
}

/// Nanoseconds per request over `tasks` × `requests` warm requests.
async fn hit(caches: &Arc<Caches>, which: Which, keys: usize, args: &Args) -> f64 {
    let work: Arc<Vec<(CacheKey, AssumeRoleRequest)>> = Arc::new(
        (0..keys)
            .map(|i| {
                let r = request(i);
                (CacheKey::of(&r), r)
            })
            .collect(),
    );
    for (key, request) in work.iter() {
        get(caches, which, key, request).await;
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..args.tasks {
        let (caches, work, requests) = (caches.clone(), work.clone(), args.requests);
        tasks.push(tokio::spawn(async move {
            for i in 0..requests {
                let (key, request) = &work[(i * 7919 + t) % work.len()];
                get(&caches, which, key, request).await;
            }
        }));
    }
    for task in tasks {
        task.await.expect("bench task");
    }
    started.elapsed().as_nanos() as f64 / (args.tasks * args.requests) as f64
}

/// Wall time (ms) of 10,000 concurrent first requests, and STS calls made.
async fn cold(which: Which) -> (f64, usize) {
    let caches = Arc::new(caches(Duration::from_millis(50)));
    let r = request(0);
    let key = CacheKey::of(&r);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..10_000 {
        let (caches, key, r) = (caches.clone(), key.clone(), r.clone());
        tasks.push(tokio::spawn(
            async move { get(&caches, which, &key, &r).await },
        ));
    }
    for task in tasks {
        task.await.expect("bench task");
    }
    (
        started.elapsed().as_secs_f64() * 1000.0,
        caches.sts.calls.load(Ordering::Relaxed),
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = Args::parse();
    for round in 0..args.rounds {
        // Alternate which goes first, so neither always runs on a warmer machine.
        let order = if round % 2 == 0 {
            [Which::Hand, Which::Moka]
        } else {
            [Which::Moka, Which::Hand]
        };
        for which in order {
            let warm = Arc::new(caches(Duration::ZERO));
            println!(
                "hit-1 {} {:.1} ns/request",
                which.name(),
                hit(&warm, which, 1, &args).await
            );
            println!(
                "hit-1000 {} {:.1} ns/request",
                which.name(),
                hit(&warm, which, 1000, &args).await
            );
            let (ms, calls) = cold(which).await;
            println!("cold {} {ms:.1} ms ({calls} STS calls)", which.name());
        }
    }
}
