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

    /// The exposition in `format`.
    pub fn render_as(&self, format: Exposition) -> String {
        match format {
            Exposition::OpenMetrics => self.render(),
            Exposition::Prometheus => prometheus_text(&self.render()),
        }
    }
}

/// The two text formats scrapers read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exposition {
    /// OpenMetrics 1.0 (`application/openmetrics-text`): what Prometheus
    /// asks for first.
    OpenMetrics,
    /// Prometheus text 0.0.4 (`text/plain`): what `curl`, `promtool check
    /// metrics` and older scrapers read.
    Prometheus,
}

impl Exposition {
    /// The format a request's `Accept` header asks for: OpenMetrics only
    /// when it is named (and not with `q=0`), else Prometheus text.
    pub fn from_accept(accept: Option<&str>) -> Self {
        let wants_openmetrics = accept.is_some_and(|accept| {
            accept.split(',').any(|range| {
                let mut params = range.split(';').map(str::trim);
                params.next() == Some("application/openmetrics-text")
                    && !params.any(|p| {
                        p.strip_prefix("q=")
                            .and_then(|q| q.parse::<f32>().ok())
                            .is_some_and(|q| q == 0.0)
                    })
            })
        });
        if wants_openmetrics {
            Exposition::OpenMetrics
        } else {
            Exposition::Prometheus
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Exposition::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Exposition::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// Prometheus text 0.0.4 from prometheus-client's OpenMetrics output
/// (the crate encodes only OpenMetrics; a second metrics crate would mean a
/// second registry). The differences for the metric types used here:
/// counters' HELP and TYPE name the `_total` series, `info` becomes a
/// gauge named `_info`, and there is no `# UNIT` or `# EOF`.
fn prometheus_text(openmetrics: &str) -> String {
    // Family names whose HELP/TYPE take a suffix, and the type they get.
    let mut renamed = std::collections::HashMap::new();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            match rest.rsplit_once(' ') {
                Some((name, "counter")) => renamed.insert(name, ("_total", "counter")),
                Some((name, "info")) => renamed.insert(name, ("_info", "gauge")),
                _ => None,
            };
        }
    }
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        if let Some((prefix, rest)) = meta {
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            if let Some((suffix, kind)) = renamed.get(name) {
                out.push_str(prefix);
                out.push_str(name);
                out.push_str(suffix);
                out.push(' ');
                out.push_str(if prefix == "# TYPE " { kind } else { tail });
                out.push('\n');
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
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

    #[test]
    fn prometheus_text_names_counter_series_and_has_no_eof() {
        let m = Metrics::new();
        m.record_request("imds-credentials", 200);
        m.sts_latency.observe(0.02);
        m.containers_known.set(3);
        let text = m.render_as(Exposition::Prometheus);
        assert!(
            !text.contains("# EOF") && !text.contains("# UNIT"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE bastion_metadata_proxy_requests_total counter\n"),
            "{text}"
        );
        assert!(text.contains(
            "# HELP bastion_metadata_proxy_requests_total Requests answered, by route and HTTP status.\n"
        ));
        assert!(text.contains(
            r#"bastion_metadata_proxy_requests_total{route="imds-credentials",status="200"} 1"#
        ));
        assert!(text.contains("# TYPE bastion_metadata_proxy_containers_known gauge\n"));
        assert!(text.contains("bastion_metadata_proxy_containers_known 3\n"));
        assert!(text.contains("# TYPE bastion_metadata_proxy_sts_assume_role_seconds histogram\n"));
        assert!(text.contains("bastion_metadata_proxy_sts_assume_role_seconds_count 1\n"));
        // Every sample's family has exactly one TYPE line, before it.
        let mut typed = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                assert!(typed.insert(rest.split(' ').next().unwrap().to_owned()));
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                assert!(
                    typed.iter().any(|t| name == t
                        || ["_bucket", "_sum", "_count"]
                            .iter()
                            .any(|s| name == format!("{t}{s}"))),
                    "{name} has no TYPE: {text}"
                );
            }
        }
        let open = m.render_as(Exposition::OpenMetrics);
        assert!(open.ends_with("# EOF\n"));
        assert!(open.contains("# TYPE bastion_metadata_proxy_requests counter\n"));
    }

    #[test]
    fn the_accept_header_chooses_the_format() {
        let prometheus_server = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(
            Exposition::from_accept(Some(prometheus_server)),
            Exposition::OpenMetrics
        );
        for accept in [
            None,
            Some("*/*"),
            Some("text/plain"),
            Some("text/plain;version=0.0.4, application/openmetrics-text; q=0"),
        ] {
            assert_eq!(
                Exposition::from_accept(accept),
                Exposition::Prometheus,
                "{accept:?}"
            );
        }
    }
}
