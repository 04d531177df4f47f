//! The HTTP API containers see: the IMDS emulator (169.254.169.254) and the
//! container-credentials endpoint (169.254.170.2), both DNATed to the proxy.
//!
//! Every answer is for the calling container only, identified by its source
//! address (see [`crate::containers`]): an unknown caller gets 404 and
//! nothing else. Paths are matched exactly; anything not listed is denied
//! (404), and only allow-listed paths reach the real IMDS.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST, HeaderValue, SERVER};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::Full;
use serde::Serialize;

use crate::audit_events::Auditor;
use crate::containers::{ContainerIdentity, Directory, DockerWatcher};
use crate::credential_cache::CredentialCache;
use crate::imds_token::TokenIssuer;
use crate::metrics::Metrics;
use crate::passthrough::Upstream;
use crate::role_session::{ResolvedSession, SessionSettings};
use crate::sts::AssumeRole;

pub use bastion_core::contract::{
    CONTAINER_CREDENTIALS_HOST, CONTAINER_CREDENTIALS_PATH, IMDS_HOST,
};

pub(crate) const TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";
pub(crate) const TOKEN_HEADER: &str = "x-aws-ec2-metadata-token";

pub type Body = Full<Bytes>;

/// Finds the container behind a source address.
pub trait CallerLookup: Send + Sync + 'static {
    fn lookup(&self, ip: Ipv4Addr) -> impl Future<Output = Option<Arc<ContainerIdentity>>> + Send;
}

impl CallerLookup for DockerWatcher {
    async fn lookup(&self, ip: Ipv4Addr) -> Option<Arc<ContainerIdentity>> {
        DockerWatcher::lookup(self, ip).await
    }
}

/// A directory alone (no Docker behind it): unit tests and tools.
impl CallerLookup for Directory {
    async fn lookup(&self, ip: Ipv4Addr) -> Option<Arc<ContainerIdentity>> {
        self.by_ip(ip)
    }
}

/// What the API needs, besides the caller lookup and STS.
pub struct ApiSettings {
    pub session: SessionSettings,
    pub require_imdsv2: bool,
    /// Host header values accepted besides the link-local ones (the
    /// proxy's own listen address).
    pub own_hosts: Vec<String>,
}

/// The API's state; one per proxy.
pub struct MetadataApi<L, S> {
    lookup: Arc<L>,
    pub(crate) cache: Arc<CredentialCache<S>>,
    pub(crate) tokens: TokenIssuer,
    pub(crate) upstream: Upstream,
    pub(crate) settings: ApiSettings,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) auditor: Auditor,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HostKind {
    Imds,
    ContainerCredentials,
    Own,
}

pub(crate) type Answer = (&'static str, Response<Body>);

pub(crate) fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    headers.insert(SERVER, HeaderValue::from_static("EC2ws"));
    response
}

pub(crate) fn render(body: &impl Serialize) -> Bytes {
    serde_json::to_vec_pretty(body)
        .expect("serializing plain structs cannot fail")
        .into()
}

pub(crate) fn json(status: StatusCode, body: &impl Serialize) -> Response<Body> {
    text(status, render(body))
}

fn status_text(status: StatusCode) -> &'static str {
    status.canonical_reason().unwrap_or("Error")
}

pub(crate) fn refuse(route: &'static str, status: StatusCode) -> Answer {
    (route, text(status, status_text(status)))
}

/// Headers whose value decides who the caller is or what they get: each
/// may appear at most once (two values are two different answers to
/// "which one counts", so neither does).
const SINGLE_HEADERS: [&str; 5] = [
    "host",
    TOKEN_HEADER,
    TTL_HEADER,
    "authorization",
    "x-forwarded-for",
];

/// Refuses (with the reason, for the debug log) what no SDK sends and a
/// lenient parser might read two ways:
/// - a request target that is not origin-form (`GET http://evil/latest/…`,
///   `GET *`): the path alone decides, the Host header names us;
/// - a security header given twice (Host, the IMDSv2 token and TTL, the
///   container-credentials Authorization, X-Forwarded-For);
/// - a path with anything but the characters IMDS paths are made of:
///   no percent-encoding, no `.`/`..` segments, no empty segments.
fn strict_shape<B>(request: &Request<B>) -> Result<(), &'static str> {
    let uri = request.uri();
    if uri.scheme().is_some() || uri.authority().is_some() {
        return Err("absolute-form request target");
    }
    let headers = request.headers();
    for name in SINGLE_HEADERS {
        if headers.get_all(name).iter().nth(1).is_some() {
            return Err("a header that may appear once appears twice");
        }
    }
    if !safe_path(uri.path()) {
        return Err("path with characters or segments IMDS paths never have");
    }
    Ok(())
}

/// `/` followed by segments of `[A-Za-z0-9_.-]`, none empty (but a final
/// `/`), none `.` or `..`.
fn safe_path(path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    if rest.is_empty() {
        return true;
    }
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    rest.split('/').all(|segment| {
        !segment.is_empty()
            && segment != "."
            && segment != ".."
            && segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    })
}

impl<L: CallerLookup, S: AssumeRole> MetadataApi<L, S> {
    pub fn new(
        lookup: Arc<L>,
        cache: Arc<CredentialCache<S>>,
        upstream: Upstream,
        settings: ApiSettings,
        metrics: Arc<Metrics>,
        auditor: Auditor,
    ) -> Self {
        Self {
            lookup,
            cache,
            tokens: TokenIssuer::random(),
            upstream,
            settings,
            metrics,
            auditor,
        }
    }

    pub fn settings(&self) -> &ApiSettings {
        &self.settings
    }

    /// Answers one request from `peer`.
    pub async fn handle<B>(&self, request: Request<B>, peer: SocketAddr) -> Response<Body> {
        let (route, response) = self.route(&request, peer).await;
        self.metrics
            .record_request(route, response.status().as_u16());
        tracing::debug!(
            route,
            status = response.status().as_u16(),
            peer = %peer,
            method = %request.method(),
            path = request.uri().path(),
            "request"
        );
        response
    }

    fn host_kind(&self, headers: &HeaderMap) -> Option<HostKind> {
        let host = headers.get(HOST)?.to_str().ok()?;
        let bare = match host.rsplit_once(':') {
            Some((name, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
                name
            }
            _ => host,
        };
        match bare {
            IMDS_HOST => Some(HostKind::Imds),
            CONTAINER_CREDENTIALS_HOST => Some(HostKind::ContainerCredentials),
            _ if self
                .settings
                .own_hosts
                .iter()
                .any(|h| h == host || h == bare) =>
            {
                Some(HostKind::Own)
            }
            _ => None,
        }
    }

    async fn route<B>(&self, request: &Request<B>, peer: SocketAddr) -> Answer {
        if let Err(why) = strict_shape(request) {
            tracing::debug!(%peer, why, "malformed request refused");
            return refuse("malformed", StatusCode::BAD_REQUEST);
        }
        // DNS rebinding: a page that resolves its own name to this address
        // still sends its own name as Host.
        let Some(host) = self.host_kind(request.headers()) else {
            return refuse("bad-host", StatusCode::FORBIDDEN);
        };
        let caller_ip = match peer.ip() {
            IpAddr::V4(ip) => Some(ip),
            IpAddr::V6(ip) => ip.to_ipv4_mapped(),
        };
        if request.uri().query().is_some() {
            return refuse("not-found", StatusCode::NOT_FOUND);
        }
        let path = request.uri().path();
        if path == CONTAINER_CREDENTIALS_PATH && host != HostKind::Imds {
            return self.container_credentials(request, caller_ip).await;
        }
        if host == HostKind::ContainerCredentials {
            return refuse("not-found", StatusCode::NOT_FOUND);
        }
        self.imds(request, caller_ip).await
    }

    pub(crate) fn session_of(&self, caller: &ContainerIdentity) -> Option<Arc<ResolvedSession>> {
        caller.role_session(&self.settings.session)
    }

    pub(crate) async fn caller(&self, ip: Option<Ipv4Addr>) -> Option<Arc<ContainerIdentity>> {
        self.lookup.lookup(ip?).await
    }
}

#[cfg(test)]
mod tests {
    //! Routing, token and header rules. Paths that reach STS or the real
    //! IMDS are tested against moto in tests/; here the STS client points at
    //! a closed port and is never called.
    use super::*;
    use crate::credential_cache::Tuning;
    use crate::imds::ec2_time;
    use crate::role::RoleNaming;
    use crate::sts::{AwsSts, StsSettings};
    use bastion_core::contract::labels;
    use bollard::models::{ContainerSummary, ContainerSummaryNetworkSettings, EndpointSettings};
    use http::Method;
    use http_body_util::BodyExt;
    use sha2::{Digest, Sha256};
    use std::collections::HashMap;
    use std::time::Duration;

    const ALICE_IP: &str = "172.30.0.2";
    const BOB_IP: &str = "172.30.0.3";
    const NOROLE_IP: &str = "172.30.0.4";

    fn container(
        id: &str,
        ip: &str,
        user: &str,
        role: Option<&str>,
        token: &str,
    ) -> ContainerIdentity {
        let mut labels = HashMap::from([
            (labels::USER.to_owned(), user.to_owned()),
            (
                labels::CREDENTIALS_TOKEN_SHA256.to_owned(),
                hex::encode(Sha256::digest(token.as_bytes())),
            ),
        ]);
        if let Some(role) = role {
            labels.insert(labels::ROLE.to_owned(), role.to_owned());
        }
        let summary = ContainerSummary {
            id: Some(id.into()),
            names: Some(vec![format!("/bastion-{user}")]),
            labels: Some(labels),
            network_settings: Some(ContainerSummaryNetworkSettings {
                networks: Some(HashMap::from([(
                    "bastion0".to_owned(),
                    EndpointSettings {
                        ip_address: Some(ip.into()),
                        ..Default::default()
                    },
                )])),
            }),
            ..Default::default()
        };
        ContainerIdentity::from_summary(&summary, "bastion0").unwrap()
    }

    async fn api(require_imdsv2: bool) -> MetadataApi<Directory, AwsSts> {
        let metrics = Arc::new(Metrics::new());
        let directory = Arc::new(Directory::new(metrics.clone()));
        directory.upsert(container(
            "a1",
            ALICE_IP,
            "alice",
            Some("dev"),
            "alice-token",
        ));
        directory.upsert(container("b1", BOB_IP, "bob", Some("ops"), "bob-token"));
        directory.upsert(container("n1", NOROLE_IP, "nora", None, "nora-token"));
        let sts = AwsSts::new(&StsSettings {
            endpoint: Some("http://127.0.0.1:9".into()),
            region: Some("us-east-1".into()),
            static_credentials: Some(("unused".into(), crate::secret::Secret::from("unused"))),
            operation_timeout: Duration::from_secs(1),
        })
        .await;
        let cache = Arc::new(CredentialCache::new(
            sts,
            Tuning::default(),
            metrics.clone(),
            Auditor::tracing_only(),
        ));
        MetadataApi::new(
            directory,
            cache,
            Upstream::new(
                "http://127.0.0.1:9",
                vec!["meta-data/placement/region".into()],
            )
            .unwrap(),
            ApiSettings {
                session: SessionSettings {
                    naming: RoleNaming {
                        partition: "aws".into(),
                        account_id: "123456789012".into(),
                        prefix: "bastion-".into(),
                    },
                    external_id: None,
                    duration: Duration::from_secs(3600),
                    tags: false,
                },
                require_imdsv2,
                own_hosts: vec!["172.30.0.1".into(), "172.30.0.1:8775".into()],
            },
            metrics,
            Auditor::tracing_only(),
        )
    }

    struct Answer {
        status: StatusCode,
        headers: HeaderMap,
        body: String,
    }

    async fn call(
        api: &MetadataApi<Directory, AwsSts>,
        from: &str,
        method: Method,
        host: Option<&str>,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut builder = Request::builder().method(method).uri(path);
        if let Some(host) = host {
            builder = builder.header(HOST, host);
        }
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let peer = SocketAddr::new(from.parse().unwrap(), 40000);
        let response = api.handle(builder.body(()).unwrap(), peer).await;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Answer {
            status,
            headers,
            body: String::from_utf8(body.to_vec()).unwrap(),
        }
    }

    async fn get(api: &MetadataApi<Directory, AwsSts>, from: &str, path: &str) -> Answer {
        call(api, from, Method::GET, Some(IMDS_HOST), path, &[]).await
    }

    async fn token(api: &MetadataApi<Directory, AwsSts>, from: &str) -> String {
        let answer = call(
            api,
            from,
            Method::PUT,
            Some(IMDS_HOST),
            "/latest/api/token",
            &[(TTL_HEADER, "21600")],
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK);
        answer.body
    }

    #[tokio::test]
    async fn token_put_echoes_the_ttl_and_checks_it() {
        let api = api(false).await;
        let ok = call(
            &api,
            ALICE_IP,
            Method::PUT,
            Some(IMDS_HOST),
            "/latest/api/token",
            &[(TTL_HEADER, "300")],
        )
        .await;
        assert_eq!(ok.status, StatusCode::OK);
        assert_eq!(
            ok.headers[TTL_HEADER], "300",
            "aws-sdk-rust fails with NoTtl without it"
        );
        assert_eq!(ok.headers[CONTENT_TYPE], "text/plain");
        assert!(!ok.body.is_empty());
        for bad in ["0", "21601", "abc", ""] {
            let answer = call(
                &api,
                ALICE_IP,
                Method::PUT,
                Some(IMDS_HOST),
                "/latest/api/token",
                &[(TTL_HEADER, bad)],
            )
            .await;
            assert_eq!(answer.status, StatusCode::BAD_REQUEST, "ttl {bad:?}");
        }
        let missing = call(
            &api,
            ALICE_IP,
            Method::PUT,
            Some(IMDS_HOST),
            "/latest/api/token",
            &[],
        )
        .await;
        assert_eq!(missing.status, StatusCode::BAD_REQUEST);
        let forwarded = call(
            &api,
            ALICE_IP,
            Method::PUT,
            Some(IMDS_HOST),
            "/latest/api/token",
            &[(TTL_HEADER, "60"), ("X-Forwarded-For", "10.0.0.1")],
        )
        .await;
        assert_eq!(forwarded.status, StatusCode::FORBIDDEN);
        let get_token = get(&api, ALICE_IP, "/latest/api/token").await;
        assert_eq!(get_token.status, StatusCode::METHOD_NOT_ALLOWED);
    }

    #[tokio::test]
    async fn tokens_are_bound_to_the_container_that_asked() {
        let api = api(false).await;
        let alice = token(&api, ALICE_IP).await;
        let path = "/latest/meta-data/iam/security-credentials/";
        let own = call(
            &api,
            ALICE_IP,
            Method::GET,
            Some(IMDS_HOST),
            path,
            &[(TOKEN_HEADER, &alice)],
        )
        .await;
        assert_eq!(
            (own.status, own.body.as_str()),
            (StatusCode::OK, "bastion-dev")
        );
        // Alice's token from Bob's container: 401.
        let stolen = call(
            &api,
            BOB_IP,
            Method::GET,
            Some(IMDS_HOST),
            path,
            &[(TOKEN_HEADER, &alice)],
        )
        .await;
        assert_eq!(stolen.status, StatusCode::UNAUTHORIZED);
        // An invalid token is 401 even though IMDSv1 is allowed.
        let junk = call(
            &api,
            ALICE_IP,
            Method::GET,
            Some(IMDS_HOST),
            path,
            &[(TOKEN_HEADER, "junk")],
        )
        .await;
        assert_eq!(junk.status, StatusCode::UNAUTHORIZED);
        // IMDSv1 is served when allowed...
        assert_eq!(get(&api, ALICE_IP, path).await.status, StatusCode::OK);
        // ...and refused when tokens are required.
        let strict = super::tests::api(true).await;
        assert_eq!(
            get(&strict, ALICE_IP, path).await.status,
            StatusCode::UNAUTHORIZED
        );
        let t = token(&strict, ALICE_IP).await;
        let ok = call(
            &strict,
            ALICE_IP,
            Method::GET,
            Some(IMDS_HOST),
            path,
            &[(TOKEN_HEADER, &t)],
        )
        .await;
        assert_eq!(ok.status, StatusCode::OK);
    }

    #[tokio::test]
    async fn unknown_sources_get_404_and_nothing_else() {
        let api = api(false).await;
        for from in ["172.30.0.99", "127.0.0.1", "10.1.2.3", "::1"] {
            let put = call(
                &api,
                from,
                Method::PUT,
                Some(IMDS_HOST),
                "/latest/api/token",
                &[(TTL_HEADER, "60")],
            )
            .await;
            assert_eq!(put.status, StatusCode::NOT_FOUND, "{from}");
            for path in [
                "/latest/meta-data/iam/security-credentials/",
                "/latest/meta-data/iam/security-credentials/bastion-dev",
                "/latest/meta-data/placement/region",
            ] {
                assert_eq!(
                    get(&api, from, path).await.status,
                    StatusCode::NOT_FOUND,
                    "{from} {path}"
                );
            }
            let creds = call(
                &api,
                from,
                Method::GET,
                Some(CONTAINER_CREDENTIALS_HOST),
                CONTAINER_CREDENTIALS_PATH,
                &[("Authorization", "alice-token")],
            )
            .await;
            assert_eq!(creds.status, StatusCode::NOT_FOUND, "{from}");
        }
    }

    #[tokio::test]
    async fn the_role_listing_shows_only_the_callers_role() {
        let api = api(false).await;
        let alice = get(
            &api,
            ALICE_IP,
            "/latest/meta-data/iam/security-credentials/",
        )
        .await;
        assert_eq!(
            (alice.status, alice.body.as_str()),
            (StatusCode::OK, "bastion-dev")
        );
        assert_eq!(alice.headers[CONTENT_TYPE], "text/plain");
        let no_slash = get(&api, BOB_IP, "/latest/meta-data/iam/security-credentials").await;
        assert_eq!(no_slash.body, "bastion-ops");
        // No role label: 404, which SDKs read as "no role".
        let nora = get(
            &api,
            NOROLE_IP,
            "/latest/meta-data/iam/security-credentials/",
        )
        .await;
        assert_eq!(nora.status, StatusCode::NOT_FOUND);
        assert_eq!(
            get(&api, NOROLE_IP, "/latest/meta-data/iam/info")
                .await
                .status,
            StatusCode::NOT_FOUND
        );
    }

    #[tokio::test]
    async fn other_roles_and_trailing_garbage_are_404_never_passthrough() {
        // lyft/metadataproxy #7: a path with trailing garbage fell through
        // to the real IMDS and leaked the host's role.
        let api = api(false).await;
        for path in [
            "/latest/meta-data/iam/security-credentials/bastion-ops",
            "/latest/meta-data/iam/security-credentials/host-role",
            "/latest/meta-data/iam/security-credentials/bastion-dev/",
            "/latest/meta-data/iam/security-credentials/bastion-dev/x",
            "/latest/meta-data/iam/security-credentials/bastion-devx",
            "/latest/meta-data/iam/security-credentials//bastion-dev",
            "/latest/meta-data/iam/security-credentials/../security-credentials/bastion-dev",
            "/latest/meta-data/iam/security-credentials/%62astion-dev",
            "/latest/meta-data/iam/security-credentials-extended/",
            "/latest/meta-data/identity-credentials/ec2/security-credentials/ec2-instance",
            "/latest/user-data",
            "/latest/meta-data/placement/region/extra",
            "/latest/meta-data/placement",
            "/latest/dynamic/instance-identity/document",
            "/latest/meta-data/iam/security-credentials/bastion-dev?x=1",
            "//latest/meta-data/iam/security-credentials/bastion-dev",
            "/2021-07-15/meta-data/iam/security-credentials/",
        ] {
            // 404, or 400 for paths no IMDS client sends (`//`, `..`, `%`).
            let answer = get(&api, ALICE_IP, path).await;
            assert!(
                matches!(
                    answer.status,
                    StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST
                ),
                "{path}: {}",
                answer.status
            );
        }
    }

    #[tokio::test]
    async fn iam_info_is_synthesized_for_the_callers_role() {
        let api = api(false).await;
        let info = get(&api, ALICE_IP, "/latest/meta-data/iam/info").await;
        assert_eq!(info.status, StatusCode::OK);
        let v: serde_json::Value = serde_json::from_str(&info.body).unwrap();
        assert_eq!(v["Code"], "Success");
        assert_eq!(
            v["InstanceProfileArn"],
            "arn:aws:iam::123456789012:instance-profile/bastion-dev"
        );
        assert!(v["InstanceProfileId"].as_str().unwrap().starts_with("AIPA"));
        let updated = v["LastUpdated"].as_str().unwrap();
        assert_eq!(updated.len(), 20, "YYYY-MM-DDTHH:MM:SSZ: {updated}");
        let listing = get(&api, ALICE_IP, "/latest/meta-data/").await;
        assert_eq!(listing.body, "iam/\nplacement/");
        assert_eq!(
            get(&api, ALICE_IP, "/latest/meta-data/iam/").await.body,
            "info\nsecurity-credentials/"
        );
    }

    #[tokio::test]
    async fn requests_a_lenient_parser_would_read_two_ways_are_400() {
        let api = api(false).await;
        let creds = "/latest/meta-data/iam/security-credentials/";
        // A second Host header, whichever comes first.
        for hosts in [
            [IMDS_HOST, "evil.example"],
            ["evil.example", IMDS_HOST],
            [IMDS_HOST, IMDS_HOST],
        ] {
            let request = Request::builder()
                .uri(creds)
                .header(HOST, hosts[0])
                .header(HOST, hosts[1])
                .body(())
                .unwrap();
            let peer = SocketAddr::new(ALICE_IP.parse().unwrap(), 40000);
            let response = api.handle(request, peer).await;
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{hosts:?}");
        }
        // Absolute-form targets, with a foreign authority or our own.
        for target in [
            "http://evil.example/latest/meta-data/iam/security-credentials/",
            "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
            "http://169.254.170.2/v1/credentials",
        ] {
            let answer = call(&api, ALICE_IP, Method::GET, Some(IMDS_HOST), target, &[]).await;
            assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{target}");
        }
        // Paths that are not plainly an IMDS path.
        for path in [
            "/latest/meta-data/iam/security-credentials/%2e%2e/",
            "/latest/meta-data/iam/security-credentials/../info",
            "/latest/meta-data/iam/./security-credentials/",
            "/latest//meta-data/iam/security-credentials/",
            "/latest/meta-data/iam/security-credentials/e2e%2drole",
            "/latest/meta-data/iam/security-credentials/e2e-role;x",
            "/latest/meta-data/placement/region%00",
        ] {
            let answer = get(&api, ALICE_IP, path).await;
            assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{path}");
        }
        // A security header given twice.
        let token = token(&api, ALICE_IP).await;
        for (name, values) in [
            (TOKEN_HEADER, [token.as_str(), "bogus"]),
            (TOKEN_HEADER, [token.as_str(), token.as_str()]),
            ("x-forwarded-for", ["10.0.0.1", "10.0.0.2"]),
            ("authorization", ["a", "b"]),
        ] {
            let answer = call(
                &api,
                ALICE_IP,
                Method::GET,
                Some(IMDS_HOST),
                creds,
                &[(name, values[0]), (name, values[1])],
            )
            .await;
            assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{name}");
        }
        let put = call(
            &api,
            ALICE_IP,
            Method::PUT,
            Some(IMDS_HOST),
            "/latest/api/token",
            &[(TTL_HEADER, "60"), (TTL_HEADER, "21600")],
        )
        .await;
        assert_eq!(put.status, StatusCode::BAD_REQUEST, "two TTLs");
        // The plain forms still work.
        assert_eq!(get(&api, ALICE_IP, creds).await.status, StatusCode::OK);
        assert_eq!(get(&api, ALICE_IP, "/").await.status, StatusCode::OK);
    }

    #[tokio::test]
    async fn foreign_host_headers_are_refused() {
        // aws-vault #578: DNS rebinding.
        let api = api(false).await;
        let path = "/latest/meta-data/iam/security-credentials/";
        for host in [
            Some("evil.example"),
            Some("169.254.169.254.nip.io"),
            Some("localhost"),
            None,
        ] {
            let answer = call(&api, ALICE_IP, Method::GET, host, path, &[]).await;
            assert_eq!(answer.status, StatusCode::FORBIDDEN, "{host:?}");
        }
        for host in ["169.254.169.254", "169.254.169.254:80", "172.30.0.1:8775"] {
            let answer = call(&api, ALICE_IP, Method::GET, Some(host), path, &[]).await;
            assert_eq!(answer.status, StatusCode::OK, "{host}");
        }
        let put = call(
            &api,
            ALICE_IP,
            Method::PUT,
            Some("evil.example"),
            "/latest/api/token",
            &[(TTL_HEADER, "60")],
        )
        .await;
        assert_eq!(put.status, StatusCode::FORBIDDEN);
    }

    #[tokio::test]
    async fn container_credentials_need_the_callers_own_token() {
        let api = api(false).await;
        let from = |ip, auth: Option<&'static str>| {
            let api = &api;
            async move {
                let headers: Vec<(&str, &str)> =
                    auth.map(|a| ("Authorization", a)).into_iter().collect();
                call(
                    api,
                    ip,
                    Method::GET,
                    Some(CONTAINER_CREDENTIALS_HOST),
                    CONTAINER_CREDENTIALS_PATH,
                    &headers,
                )
                .await
            }
        };
        assert_eq!(from(ALICE_IP, None).await.status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            from(ALICE_IP, Some("bob-token")).await.status,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            from(ALICE_IP, Some("alice-token ")).await.status,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            from(BOB_IP, Some("alice-token")).await.status,
            StatusCode::FORBIDDEN
        );
        // Right token, no role: 404.
        assert_eq!(
            from(NOROLE_IP, Some("nora-token")).await.status,
            StatusCode::NOT_FOUND
        );
        // The IMDS host does not serve the container endpoint, nor the
        // container host IMDS paths.
        let wrong_host = call(
            &api,
            ALICE_IP,
            Method::GET,
            Some(IMDS_HOST),
            CONTAINER_CREDENTIALS_PATH,
            &[("Authorization", "alice-token")],
        )
        .await;
        assert_eq!(wrong_host.status, StatusCode::NOT_FOUND);
        let imds_on_ecs_host = call(
            &api,
            ALICE_IP,
            Method::GET,
            Some(CONTAINER_CREDENTIALS_HOST),
            "/latest/meta-data/iam/security-credentials/",
            &[],
        )
        .await;
        assert_eq!(imds_on_ecs_host.status, StatusCode::NOT_FOUND);
        let post = call(
            &api,
            ALICE_IP,
            Method::POST,
            Some(CONTAINER_CREDENTIALS_HOST),
            CONTAINER_CREDENTIALS_PATH,
            &[("Authorization", "alice-token")],
        )
        .await;
        assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);
    }

    #[test]
    fn ec2_times_have_no_fraction_and_a_z() {
        let t = std::time::UNIX_EPOCH + Duration::from_millis(1_795_000_000_123);
        assert_eq!(ec2_time(t), "2026-11-18T11:06:40Z");
    }
}
