//! Target `metadata_api`: the metadata proxy's routing and path handling
//! ([`MetadataApi::handle`]) for any request a container could send.
//!
//! The API is built as the unit tests of `metadata_api.rs` build theirs,
//! from public parts only: a [`Directory`] of four containers (alice: role
//! `dev`; bob: role `ops`; nora: no role; carol: a role given as an ARN),
//! STS pointed at a closed loopback port with a 200 ms operation limit
//! (credential requests fail fast, which is a valid path: STS is down; the
//! cache then backs off, so STS is tried rarely), and the real IMDS
//! (passthrough) at the same closed port. Nothing leaves the machine.
//!
//! Input format: byte 0 = bits 0-2 the source address (alice, bob, nora,
//! carol, an unknown 172.30.0.99, 127.0.0.1, bob as `::ffff:172.30.0.3`,
//! `::1`), bit 3 = the API requires IMDSv2; the rest is an HTTP/1.1
//! request head (request line, header lines; parsed leniently: a method
//! or target the `http` types refuse ends the input, a header line they
//! refuse is skipped). A header value `$TOKEN` becomes a valid IMDSv2
//! token of the source's container, `$TOKEN_ALICE` / `$TOKEN_BOB` one of
//! alice's / bob's (a fuzzer cannot forge the HMAC).
//!
//! Properties (besides "never panics"):
//! - an unknown source never gets a 200;
//! - no answer names another container's role or container;
//! - a 200 to a path with "credentials" in it goes only to a container
//!   that has a role, and only for its own role: the role listing, its own
//!   role name, or `/v1/credentials` with its own token;
//! - with IMDSv2 required, a 200 to anything but the token PUT and the
//!   container endpoint needs a token header.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bastion_core::contract::labels;
use bastion_metadata_proxy::audit_events::Auditor;
use bastion_metadata_proxy::containers::{ContainerIdentity, Directory};
use bastion_metadata_proxy::credential_cache::{CredentialCache, Tuning};
use bastion_metadata_proxy::metadata_api::{
    ApiSettings, CONTAINER_CREDENTIALS_PATH, IMDS_HOST, MetadataApi,
};
use bastion_metadata_proxy::metrics::Metrics;
use bastion_metadata_proxy::passthrough::Upstream;
use bastion_metadata_proxy::role::RoleNaming;
use bastion_metadata_proxy::role_session::SessionSettings;
use bastion_metadata_proxy::secret::Secret;
use bastion_metadata_proxy::sts::{AwsSts, StsSettings};
use bollard::models::{ContainerSummary, ContainerSummaryNetworkSettings, EndpointSettings};
use http::header::{AUTHORIZATION, HOST};
use http::{HeaderName, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::BodyExt;
use sha2::{Digest, Sha256};

use crate::input::Input;

const TOKEN_HEADER: &str = "x-aws-ec2-metadata-token";

struct Container {
    id: &'static str,
    ip: Ipv4Addr,
    user: &'static str,
    label: Option<&'static str>,
    /// The role name IMDS lists for it.
    role: Option<&'static str>,
    token: &'static str,
}

const CONTAINERS: [Container; 4] = [
    Container {
        id: "a1",
        ip: Ipv4Addr::new(172, 30, 0, 2),
        user: "alice",
        label: Some("dev"),
        role: Some("bastion-dev"),
        token: "alice-token",
    },
    Container {
        id: "b1",
        ip: Ipv4Addr::new(172, 30, 0, 3),
        user: "bob",
        label: Some("ops"),
        role: Some("bastion-ops"),
        token: "bob-token",
    },
    Container {
        id: "n1",
        ip: Ipv4Addr::new(172, 30, 0, 4),
        user: "nora",
        label: None,
        role: None,
        token: "nora-token",
    },
    Container {
        id: "c1",
        ip: Ipv4Addr::new(172, 30, 0, 5),
        user: "carol",
        label: Some("arn:aws:iam::210987654321:role/team/carol-admin"),
        role: Some("carol-admin"),
        token: "carol-token",
    },
];

const SOURCES: [IpAddr; 8] = [
    IpAddr::V4(Ipv4Addr::new(172, 30, 0, 2)),
    IpAddr::V4(Ipv4Addr::new(172, 30, 0, 3)),
    IpAddr::V4(Ipv4Addr::new(172, 30, 0, 4)),
    IpAddr::V4(Ipv4Addr::new(172, 30, 0, 5)),
    IpAddr::V4(Ipv4Addr::new(172, 30, 0, 99)),
    IpAddr::V4(Ipv4Addr::LOCALHOST),
    IpAddr::V6(Ipv4Addr::new(172, 30, 0, 3).to_ipv6_mapped()),
    IpAddr::V6(Ipv6Addr::LOCALHOST),
];

type Api = MetadataApi<Directory, AwsSts>;

struct Fixture {
    runtime: tokio::runtime::Runtime,
    /// [lenient, IMDSv2 required], each with the IMDSv2 tokens of the
    /// containers (by index in CONTAINERS).
    apis: [(Api, Vec<String>); 2],
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        // A port nothing listens on: bound, then released.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a loopback port")
            .port();
        let apis = [false, true].map(|strict| {
            runtime.block_on(async {
                let api = build(strict, closed).await;
                let mut tokens = Vec::new();
                for c in &CONTAINERS {
                    let request = Request::builder()
                        .method(Method::PUT)
                        .uri("/latest/api/token")
                        .header(HOST, IMDS_HOST)
                        .header("x-aws-ec2-metadata-token-ttl-seconds", "21600")
                        .body(())
                        .expect("a token request");
                    let response = api
                        .handle(request, SocketAddr::new(c.ip.into(), 40000))
                        .await;
                    assert_eq!(response.status(), StatusCode::OK, "token for {}", c.user);
                    let body = response.into_body().collect().await.expect("body");
                    tokens.push(String::from_utf8(body.to_bytes().to_vec()).expect("a token"));
                }
                (api, tokens)
            })
        });
        Fixture { runtime, apis }
    })
}

async fn build(strict: bool, closed_port: u16) -> Api {
    let metrics = Arc::new(Metrics::new());
    let directory = Arc::new(Directory::new(metrics.clone()));
    for c in &CONTAINERS {
        directory.upsert(identity(c));
    }
    let endpoint = format!("http://127.0.0.1:{closed_port}");
    let sts = AwsSts::new(&StsSettings {
        endpoint: Some(endpoint.clone()),
        region: Some("us-east-1".into()),
        static_credentials: Some(("unused".into(), Secret::from("unused"))),
        // Retries (and their back-off sleeps) included: a credential
        // request never waits longer than this.
        operation_timeout: Duration::from_millis(200),
    })
    .await;
    let cache = Arc::new(CredentialCache::new(
        sts,
        Tuning::default(),
        metrics.clone(),
        Auditor::tracing_only(),
    ));
    let upstream = Upstream::new(
        &endpoint,
        vec![
            "meta-data/placement/region".into(),
            "meta-data/placement/availability-zone".into(),
            "dynamic/instance-identity/document".into(),
        ],
    )
    .expect("the fuzz upstream is a valid endpoint");
    let settings = ApiSettings {
        session: SessionSettings {
            naming: RoleNaming {
                partition: "aws".into(),
                account_id: "123456789012".into(),
                prefix: "bastion-".into(),
            },
            external_id: strict.then(|| "bastion-fuzz".into()),
            duration: Duration::from_secs(3600),
            tags: strict,
        },
        require_imdsv2: strict,
        own_hosts: vec!["172.30.0.1".into(), "172.30.0.1:8775".into()],
    };
    MetadataApi::new(
        directory,
        cache,
        upstream,
        settings,
        metrics,
        Auditor::tracing_only(),
    )
}

fn identity(c: &Container) -> ContainerIdentity {
    let mut labels = std::collections::HashMap::from([
        (labels::USER.to_owned(), c.user.to_owned()),
        (
            labels::CREDENTIALS_TOKEN_SHA256.to_owned(),
            hex::encode(Sha256::digest(c.token.as_bytes())),
        ),
    ]);
    if let Some(label) = c.label {
        labels.insert(labels::ROLE.to_owned(), label.to_owned());
    }
    let summary = ContainerSummary {
        id: Some(c.id.into()),
        names: Some(vec![format!("/bastion-{}", c.user)]),
        labels: Some(labels),
        network_settings: Some(ContainerSummaryNetworkSettings {
            networks: Some(std::collections::HashMap::from([(
                "bastion0".to_owned(),
                EndpointSettings {
                    ip_address: Some(c.ip.to_string()),
                    ..Default::default()
                },
            )])),
        }),
        ..Default::default()
    };
    ContainerIdentity::from_summary(&summary, "bastion0").expect("a user container")
}

pub fn check(data: &[u8]) {
    let fixture = fixture();
    let mut input = Input::new(data);
    let mode = input.byte();
    let ip = SOURCES[usize::from(mode & 7)];
    let strict = mode & 8 != 0;
    let (api, tokens) = &fixture.apis[usize::from(strict)];
    let caller_ip = match ip {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(v6) => v6.to_ipv4_mapped(),
    };
    let caller = CONTAINERS.iter().position(|c| Some(c.ip) == caller_ip);
    let Some(request) = parse_request(input.rest(), |value| match value {
        b"$TOKEN" => caller.map(|i| tokens[i].as_bytes()),
        b"$TOKEN_ALICE" => Some(tokens[0].as_bytes()),
        b"$TOKEN_BOB" => Some(tokens[1].as_bytes()),
        _ => None,
    }) else {
        return;
    };
    let method = request.method().clone();
    let uri = request.uri().clone();
    let headers = request.headers().clone();
    let peer = SocketAddr::new(ip, 40000);
    let (status, body) = fixture.runtime.block_on(async {
        let response = api.handle(request, peer).await;
        let status = response.status();
        let body = response.into_body().collect().await.expect("body");
        (status, body.to_bytes())
    });
    let body = String::from_utf8_lossy(&body);
    let what = || {
        format!(
            "{method} {uri} from {ip} (strict {strict}), headers {headers:?}: {status} {body:?}"
        )
    };
    if std::env::var_os("BASTION_FUZZ_DEBUG").is_some() {
        eprintln!("{}", what());
    }

    let Some(caller) = caller.map(|i| &CONTAINERS[i]) else {
        assert_ne!(
            status,
            StatusCode::OK,
            "a 200 to an unknown source: {}",
            what()
        );
        return;
    };
    for other in CONTAINERS.iter().filter(|c| c.id != caller.id) {
        let container = format!("bastion-{}", other.user);
        assert!(
            !body.contains(&container) && other.role.is_none_or(|role| !body.contains(role)),
            "{}'s answer names {}'s container or role: {}",
            caller.user,
            other.user,
            what()
        );
    }
    let path = uri.path();
    if status == StatusCode::OK && path.to_ascii_lowercase().contains("credentials") {
        let Some(role) = caller.role else {
            panic!(
                "credentials path answered 200 to a container without a role: {}",
                what()
            );
        };
        if path == CONTAINER_CREDENTIALS_PATH {
            assert_eq!(
                headers.get(AUTHORIZATION).map(HeaderValue::as_bytes),
                Some(caller.token.as_bytes()),
                "container credentials without the container's own token: {}",
                what()
            );
        } else {
            let rest = path.strip_prefix("/latest/meta-data/iam/security-credentials");
            assert!(
                matches!(rest, Some("" | "/")) || rest == Some(&format!("/{role}")),
                "a credentials path other than the caller's own role answered 200: {}",
                what()
            );
        }
    }
    if strict
        && status == StatusCode::OK
        && method != Method::PUT
        && path != CONTAINER_CREDENTIALS_PATH
    {
        assert!(
            headers.contains_key(TOKEN_HEADER),
            "IMDSv2 is required, yet a token-less request got 200: {}",
            what()
        );
    }
}

/// An HTTP/1.1 request head, leniently: `METHOD TARGET [VERSION]`, then
/// `Name: value` lines up to an empty line. `substitute` may replace a
/// header value.
fn parse_request<'a>(
    text: &'a [u8],
    substitute: impl Fn(&[u8]) -> Option<&'a [u8]>,
) -> Option<Request<()>> {
    let mut lines = text
        .split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line));
    let mut request_line = lines.next()?.splitn(3, |&b| b == b' ');
    let method = Method::from_bytes(request_line.next()?).ok()?;
    let uri = Uri::try_from(request_line.next()?).ok()?;
    let mut builder = Request::builder().method(method).uri(uri);
    for line in lines.take_while(|line| !line.is_empty()) {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let Ok(name) = HeaderName::from_bytes(&line[..colon]) else {
            continue;
        };
        let value = line[colon + 1..].trim_ascii();
        let value = substitute(value).unwrap_or(value);
        let Ok(value) = HeaderValue::from_bytes(value) else {
            continue;
        };
        builder = builder.header(name, value);
    }
    builder.body(()).ok()
}
