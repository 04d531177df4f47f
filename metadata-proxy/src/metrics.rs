//! Prometheus metrics, served on the admin listener's `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// A fixed route name (never the raw path: bounded cardinality).
    pub route: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StsLabels {
    /// `success` or the STS error code.
    pub result: String,
}

/// All metrics of the proxy.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub cache_hits: Counter,
    pub cache_misses: Counter,
    pub cache_stale: Counter,
    pub sts_calls: Family<StsLabels, Counter>,
    pub sts_latency: Histogram,
    pub containers_known: Gauge,
    pub docker_lookups: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("bastion_metadata_proxy");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by route and HTTP status",
            requests.clone(),
        );
        let cache_hits = Counter::default();
        registry.register(
            "credential_cache_hits",
            "Credential requests answered from the cache",
            cache_hits.clone(),
        );
        let cache_misses = Counter::default();
        registry.register(
            "credential_cache_misses",
            "Credential requests that had to wait for STS",
            cache_misses.clone(),
        );
        let cache_stale = Counter::default();
        registry.register(
            "credential_cache_stale",
            "Credential requests answered with still-valid credentials while STS was failing",
            cache_stale.clone(),
        );
        let sts_calls = Family::<StsLabels, Counter>::default();
        registry.register(
            "sts_assume_role_calls",
            "STS AssumeRole calls, by result (success or error code)",
            sts_calls.clone(),
        );
        let sts_latency = Histogram::new(exponential_buckets(0.005, 2.0, 12));
        registry.register(
            "sts_assume_role_seconds",
            "Latency of STS AssumeRole calls",
            sts_latency.clone(),
        );
        let containers_known = Gauge::default();
        registry.register(
            "containers_known",
            "User containers on the bastion network the proxy knows",
            containers_known.clone(),
        );
        let docker_lookups = Counter::default();
        registry.register(
            "docker_lookups",
            "Docker API lookups made for unknown source addresses",
            docker_lookups.clone(),
        );
        Self {
            registry,
            requests,
            cache_hits,
            cache_misses,
            cache_stale,
            sts_calls,
            sts_latency,
            containers_known,
            docker_lookups,
        }
    }

    pub fn record_request(&self, route: &'static str, status: u16) {
        self.requests
            .get_or_create(&RequestLabels { route, status })
            .inc();
    }

    pub fn record_sts_call(&self, result: &str) {
        self.sts_calls
            .get_or_create(&StsLabels {
                result: result.to_owned(),
            })
            .inc();
    }

    /// Number of successful AssumeRole calls so far.
    pub fn sts_successes(&self) -> u64 {
        self.sts_calls
            .get_or_create(&StsLabels {
                result: "success".into(),
            })
            .get()
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_with_labels() {
        let m = Metrics::new();
        m.record_request("imds-credentials", 200);
        m.record_sts_call("success");
        m.record_sts_call("Throttling");
        let text = m.render();
        assert!(
            text.contains(
                r#"bastion_metadata_proxy_requests_total{route="imds-credentials",status="200"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains(
            r#"bastion_metadata_proxy_sts_assume_role_calls_total{result="Throttling"} 1"#
        ));
        assert_eq!(m.sts_successes(), 1);
    }
}
