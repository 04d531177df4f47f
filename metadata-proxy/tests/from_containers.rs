//! The metadata proxy seen from real user containers on the bastion
//! network, through the real iptables DNAT path, with real STS (moto).
//! Each test names the reference fact or earlier tool failure it checks.
#![forbid(unsafe_code)]

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use aws_credential_types::provider::ProvideCredentials;
use support::*;

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// `sts.assume_role` audit events for `user`, once the appends settled.
fn assume_role_events(audit_log: &std::path::Path, user: &str) -> usize {
    let count = || {
        std::fs::read_to_string(audit_log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|e| e["event"] == "sts.assume_role" && e["user"] == user)
            .count()
    };
    // Appends run on the blocking pool: wait until the count holds still.
    let mut last = count();
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(100));
        let now = count();
        if now == last && now > 0 {
            break;
        }
        last = now;
    }
    last
}

fn is_ec2_time(v: &serde_json::Value) -> bool {
    let s = v.as_str().unwrap_or_default();
    s.len() == 20
        && s.ends_with('Z')
        && time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_container_gets_its_own_role_through_imdsv1_imdsv2_and_the_container_endpoint() {
    prerequisites();
    let _serial = serial().await;
    let moto = Moto::start();
    let audit = tempfile::tempdir().unwrap();
    let audit_log = audit.path().join("audit.jsonl");
    let proxy = start_proxy(options(&moto, Some(&audit_log))).await;
    let alice_user = unique("alice");
    let bob_user = unique("bob");
    let alice = TestContainer::start(&alice_user, Some("dev"), None);
    let bob = TestContainer::start(&bob_user, Some("ops"), None);

    // IMDSv1 (curl-free: a raw request from alice's network namespace).
    let list = from_container(
        &alice,
        imds_addr(),
        "GET",
        IMDS,
        "/latest/meta-data/iam/security-credentials/",
        &[],
    );
    assert_eq!((list.status, list.body.as_str()), (200, "dev"));
    assert_eq!(list.header("content-type"), Some("text/plain"));
    let creds = from_container(
        &alice,
        imds_addr(),
        "GET",
        IMDS,
        "/latest/meta-data/iam/security-credentials/dev",
        &[],
    );
    assert_eq!(creds.status, 200, "{}", creds.body);
    assert_eq!(creds.header("content-type"), Some("text/plain"));
    let v = json(&creds.body);
    // Reference: EC2's exact field names and time format.
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    for key in [
        "Code",
        "LastUpdated",
        "Type",
        "AccessKeyId",
        "SecretAccessKey",
        "Token",
        "Expiration",
    ] {
        assert!(keys.contains(&key), "missing {key}: {keys:?}");
    }
    assert_eq!(keys.len(), 7, "{keys:?}");
    assert_eq!(
        (v["Code"].as_str(), v["Type"].as_str()),
        (Some("Success"), Some("AWS-HMAC"))
    );
    assert!(
        is_ec2_time(&v["LastUpdated"]) && is_ec2_time(&v["Expiration"]),
        "{v}"
    );
    let arn = caller_arn(
        &moto,
        v["AccessKeyId"].as_str().unwrap(),
        v["SecretAccessKey"].as_str().unwrap(),
        v["Token"].as_str().unwrap(),
    )
    .await;
    assert_eq!(
        arn,
        format!("arn:aws:sts::{ACCOUNT}:assumed-role/dev/{alice_user}")
    );

    // IMDSv2 with the AWS SDK for Rust (IMDSv2 only; fails with NoTtl
    // unless the token PUT echoes the TTL header), from bob's namespace.
    let bob_creds = in_netns(bob.pid, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let provider =
                aws_config::imds::credentials::ImdsCredentialsProvider::builder().build();
            provider.provide_credentials().await
        })
    })
    .expect("the Rust SDK's IMDS provider gets credentials");
    let arn = caller_arn(
        &moto,
        bob_creds.access_key_id(),
        bob_creds.secret_access_key(),
        bob_creds.session_token().unwrap(),
    )
    .await;
    assert_eq!(
        arn,
        format!("arn:aws:sts::{ACCOUNT}:assumed-role/ops/{bob_user}")
    );
    let left = bob_creds
        .expiry()
        .unwrap()
        .duration_since(std::time::SystemTime::now())
        .unwrap();
    assert!(
        left > Duration::from_secs(20 * 60),
        "served with {left:?} left"
    );

    // The AWS CLI of the image (botocore): IMDSv2 then the container
    // endpoint. `export-credentials` shows what the CLI resolved.
    let (ok, out, err) = alice.exec(
        &[],
        &[
            "aws",
            "configure",
            "export-credentials",
            "--format",
            "process",
        ],
    );
    assert!(ok, "aws CLI through IMDS: {err}");
    let v = json(&out);
    let arn = caller_arn(
        &moto,
        v["AccessKeyId"].as_str().unwrap(),
        v["SecretAccessKey"].as_str().unwrap(),
        v["SessionToken"].as_str().unwrap(),
    )
    .await;
    assert_eq!(
        arn,
        format!("arn:aws:sts::{ACCOUNT}:assumed-role/dev/{alice_user}")
    );

    let full_uri = format!("http://{ECS}/v1/credentials");
    let (ok, out, err) = bob.exec(
        &[
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", &full_uri),
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN", &bob.token),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ],
        &[
            "aws",
            "configure",
            "export-credentials",
            "--format",
            "process",
        ],
    );
    assert!(ok, "aws CLI through the container endpoint: {err}");
    let v = json(&out);
    let arn = caller_arn(
        &moto,
        v["AccessKeyId"].as_str().unwrap(),
        v["SecretAccessKey"].as_str().unwrap(),
        v["SessionToken"].as_str().unwrap(),
    )
    .await;
    assert_eq!(
        arn,
        format!("arn:aws:sts::{ACCOUNT}:assumed-role/ops/{bob_user}")
    );

    // One AssumeRole per role session, however many requests (other
    // containers on the network may be prefetched too: count ours).
    assert_eq!(assume_role_events(&audit_log, &alice_user), 1);
    assert_eq!(assume_role_events(&audit_log, &bob_user), 1);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_roles_foreign_containers_and_stolen_tokens_get_nothing() {
    prerequisites();
    let _serial = serial().await;
    let moto = Moto::start();
    let proxy = start_proxy(options(&moto, None)).await;
    let alice = TestContainer::start(&unique("alice"), Some("dev"), None);
    let bob = TestContainer::start(&unique("bob"), Some("ops"), None);
    let stranger = TestContainer::start_with_labels(&unique("stranger"), None, None, false);

    // Another role name, and the host's role the real IMDS (moto) has.
    for path in [
        "/latest/meta-data/iam/security-credentials/ops",
        "/latest/meta-data/iam/security-credentials/default-role",
        "/latest/meta-data/iam/security-credentials/dev/",
        "/latest/meta-data/iam/security-credentials/dev/extra",
        "/latest/meta-data/iam/security-credentials/dev%2F..%2F..%2Fdefault-role",
        "/latest/meta-data/iam/",
        "/latest/user-data",
    ] {
        let r = from_container(&alice, imds_addr(), "GET", IMDS, path, &[]);
        let expected = if path == "/latest/meta-data/iam/" {
            200
        } else if path.contains('%') {
            400 // no IMDS path is percent-encoded: refused as malformed
        } else {
            404
        };
        assert_eq!(r.status, expected, "{path}: {}", r.body);
        assert!(
            !r.body.contains("test-secret-key"),
            "{path} leaked the host role"
        );
    }
    // A container without the bastion labels: nothing at all (404), and
    // never the host's role (lyft/metadataproxy #82, kube2iam #266).
    for path in [
        "/latest/meta-data/iam/security-credentials/",
        "/latest/meta-data/iam/security-credentials/default-role",
        "/latest/meta-data/placement/region",
    ] {
        let r = from_container(&stranger, imds_addr(), "GET", IMDS, path, &[]);
        assert_eq!(r.status, 404, "{path}");
    }
    let put = from_container(
        &stranger,
        imds_addr(),
        "PUT",
        IMDS,
        "/latest/api/token",
        &[("X-aws-ec2-metadata-token-ttl-seconds", "60")],
    );
    assert_eq!(put.status, 404);

    // Alice's IMDSv2 token from Bob's container: 401.
    let token = from_container(
        &alice,
        imds_addr(),
        "PUT",
        IMDS,
        "/latest/api/token",
        &[("X-aws-ec2-metadata-token-ttl-seconds", "21600")],
    );
    assert_eq!(token.status, 200);
    assert_eq!(
        token.header("x-aws-ec2-metadata-token-ttl-seconds"),
        Some("21600")
    );
    let stolen = from_container(
        &bob,
        imds_addr(),
        "GET",
        IMDS,
        "/latest/meta-data/iam/security-credentials/",
        &[("X-aws-ec2-metadata-token", &token.body)],
    );
    assert_eq!(stolen.status, 401);
    let own = from_container(
        &alice,
        imds_addr(),
        "GET",
        IMDS,
        "/latest/meta-data/iam/security-credentials/",
        &[("X-aws-ec2-metadata-token", &token.body)],
    );
    assert_eq!(own.status, 200);
    // Alice's container-credentials token from Bob's container: refused.
    let stolen = from_container(
        &bob,
        ecs_addr(),
        "GET",
        ECS,
        "/v1/credentials",
        &[("Authorization", &alice.token)],
    );
    assert_eq!(stolen.status, 403);
    let own = from_container(
        &bob,
        ecs_addr(),
        "GET",
        ECS,
        "/v1/credentials",
        &[("Authorization", &bob.token)],
    );
    assert_eq!(own.status, 200, "{}", own.body);
    assert!(own.body.contains("\"AccessKeyId\""));

    // DNS rebinding (aws-vault #578) and a relayed token request.
    let rebound = from_container(
        &alice,
        imds_addr(),
        "GET",
        "metadata.evil.example",
        "/latest/meta-data/iam/security-credentials/",
        &[],
    );
    assert_eq!(rebound.status, 403);
    let relayed = from_container(
        &alice,
        imds_addr(),
        "PUT",
        IMDS,
        "/latest/api/token",
        &[
            ("X-aws-ec2-metadata-token-ttl-seconds", "60"),
            ("X-Forwarded-For", "1.2.3.4"),
        ],
    );
    assert_eq!(relayed.status, 403);

    // Allow-listed passthrough reaches the real IMDS (moto stands in).
    let region = from_container(
        &alice,
        imds_addr(),
        "GET",
        IMDS,
        "/latest/meta-data/placement/region",
        &[],
    );
    assert_eq!((region.status, region.body.as_str()), (200, "us-east-1"));
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_reach_no_other_link_local_address_and_no_host_service() {
    prerequisites();
    let _serial = serial().await;
    let moto = Moto::start();
    let proxy = start_proxy(options(&moto, None)).await;
    let admin_port = proxy.admin_addr.port();
    let alice = TestContainer::start(&unique("alice"), Some("dev"), None);
    // Control: the admin listener answers on the host.
    let health = http(proxy.admin_addr, "GET", "127.0.0.1", "/healthz", &[]).unwrap();
    assert_eq!(health.status, 200, "{}", health.body);

    let gateway: Ipv4Addr = GATEWAY.parse().unwrap();
    // A host service listening on the bridge address itself.
    let host_service = std::net::TcpListener::bind((gateway, 0)).unwrap();
    let host_service_addr = host_service.local_addr().unwrap();
    let targets: Vec<SocketAddr> = vec![
        host_service_addr,
        SocketAddr::from(([169, 254, 169, 254], 81)),
        SocketAddr::from(([169, 254, 169, 254], 443)),
        SocketAddr::from(([169, 254, 170, 23], 80)),
        SocketAddr::from(([169, 254, 1, 1], 80)),
        SocketAddr::from((gateway, admin_port)),
        SocketAddr::from((gateway, moto.port)),
        SocketAddr::from((gateway, 22)),
        "[fd00:ec2::254]:80".parse().unwrap(),
        "[fd00:ec2::23]:80".parse().unwrap(),
    ];
    let results = in_netns(alice.pid, move || {
        targets
            .into_iter()
            .map(|t| {
                (
                    t,
                    std::net::TcpStream::connect_timeout(&t, Duration::from_secs(1)).is_ok(),
                )
            })
            .collect::<Vec<_>>()
    });
    for (target, connected) in results {
        assert!(!connected, "a container connected to {target}");
    }
    // The admin port on the container's own loopback is not the proxy's.
    let inside = in_netns(alice.pid, move || {
        std::net::TcpStream::connect_timeout(
            &SocketAddr::from(([127, 0, 0, 1], admin_port)),
            Duration::from_secs(1),
        )
        .is_ok()
    });
    assert!(!inside);
    // While the proxy itself is reachable.
    let ok = from_container(
        &alice,
        imds_addr(),
        "GET",
        IMDS,
        "/latest/meta-data/iam/security-credentials/",
        &[],
    );
    assert_eq!(ok.status, 200);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_ip_never_gets_the_previous_containers_credentials() {
    // lyft/metadataproxy #19, kube2iam #17.
    prerequisites();
    let _serial = serial().await;
    let moto = Moto::start();
    let proxy = start_proxy(options(&moto, None)).await;
    let ip: Ipv4Addr = Ipv4Addr::new(172, 30, 200, 200 + (rand::random::<u8>() % 50));
    let alice_user = unique("alice");
    let carol_user = unique("carol");
    let alice = TestContainer::start(&alice_user, Some("dev"), Some(ip));
    let r = from_container(
        &alice,
        imds_addr(),
        "GET",
        IMDS,
        "/latest/meta-data/iam/security-credentials/dev",
        &[],
    );
    assert_eq!(r.status, 200);
    let alice_key = json(&r.body)["AccessKeyId"].as_str().unwrap().to_owned();
    alice.remove();
    // At once, the same IP for someone else with another role.
    let carol = TestContainer::start(&carol_user, Some("ops"), Some(ip));
    assert_eq!(carol.ip, ip);
    let list = from_container(
        &carol,
        imds_addr(),
        "GET",
        IMDS,
        "/latest/meta-data/iam/security-credentials/",
        &[],
    );
    assert_eq!((list.status, list.body.as_str()), (200, "ops"));
    let old = from_container(
        &carol,
        imds_addr(),
        "GET",
        IMDS,
        "/latest/meta-data/iam/security-credentials/dev",
        &[],
    );
    assert_eq!(old.status, 404);
    let r = from_container(
        &carol,
        imds_addr(),
        "GET",
        IMDS,
        "/latest/meta-data/iam/security-credentials/ops",
        &[],
    );
    let v = json(&r.body);
    assert_ne!(v["AccessKeyId"].as_str().unwrap(), alice_key);
    let arn = caller_arn(
        &moto,
        v["AccessKeyId"].as_str().unwrap(),
        v["SecretAccessKey"].as_str().unwrap(),
        v["Token"].as_str().unwrap(),
    )
    .await;
    assert_eq!(
        arn,
        format!("arn:aws:sts::{ACCOUNT}:assumed-role/ops/{carol_user}")
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_requests_of_a_new_container_make_one_assume_role() {
    prerequisites();
    let _serial = serial().await;
    let moto = Moto::start();
    let audit = tempfile::tempdir().unwrap();
    let audit_log = audit.path().join("audit.jsonl");
    let mut opts = options(&moto, Some(&audit_log));
    // A thousand connections at once from one container: above the
    // per-source cap that protects the proxy in production.
    opts.proxy.max_connections_per_source = 2000;
    let proxy = start_proxy(opts).await;
    let user = unique("dave");
    let dave = TestContainer::start(&user, Some("dev"), None);
    // Right after start: the proxy may not have seen the start event yet.
    let keys = in_netns(dave.pid, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let tasks: Vec<_> = (0..1000)
                .map(|_| {
                    tokio::spawn(async {
                        let mut s = tokio::net::TcpStream::connect(imds_addr()).await.expect("connect");
                        s.write_all(b"GET /latest/meta-data/iam/security-credentials/dev HTTP/1.1\r\nHost: 169.254.169.254\r\nConnection: close\r\n\r\n").await.unwrap();
                        let mut raw = Vec::new();
                        s.read_to_end(&mut raw).await.unwrap();
                        parse_reply(&raw)
                    })
                })
                .collect();
            let mut keys = std::collections::HashSet::new();
            for t in tasks {
                let reply = t.await.unwrap();
                assert_eq!(reply.status, 200, "{}", reply.body);
                keys.insert(serde_json::from_str::<serde_json::Value>(&reply.body).unwrap()["AccessKeyId"].as_str().unwrap().to_owned());
            }
            keys
        })
    });
    assert_eq!(keys.len(), 1, "all 1,000 requests got the same credentials");
    // The audit log records every STS call (other containers on the
    // network may be prefetched too: count dave's).
    assert_eq!(
        assume_role_events(&audit_log, &user),
        1,
        "exactly one AssumeRole for dave's role session"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sts_down_keeps_serving_warm_credentials_and_says_so_when_there_are_none() {
    prerequisites();
    let _serial = serial().await;
    let mut moto = Moto::start();
    let proxy = start_proxy(options(&moto, None)).await;
    let alice = TestContainer::start(&unique("alice"), Some("dev"), None);
    let warm = from_container(
        &alice,
        imds_addr(),
        "GET",
        IMDS,
        "/latest/meta-data/iam/security-credentials/dev",
        &[],
    );
    let warm_key = json(&warm.body)["AccessKeyId"].as_str().unwrap().to_owned();
    moto.stop();
    // STS is gone: the cached credentials (an hour left) are still served.
    for _ in 0..3 {
        let r = from_container(
            &alice,
            imds_addr(),
            "GET",
            IMDS,
            "/latest/meta-data/iam/security-credentials/dev",
            &[],
        );
        assert_eq!(r.status, 200);
        assert_eq!(json(&r.body)["AccessKeyId"].as_str().unwrap(), warm_key);
    }
    // A new container has nothing cached: IMDS's error form, not a hang.
    let bob = TestContainer::start(&unique("bob"), Some("ops"), None);
    let r = from_container(
        &bob,
        imds_addr(),
        "GET",
        IMDS,
        "/latest/meta-data/iam/security-credentials/ops",
        &[],
    );
    let v = json(&r.body);
    assert_ne!(v["Code"], "Success", "{v}");
    assert!(v["Message"].as_str().unwrap().contains("ops"), "{v}");
    assert!(v.get("AccessKeyId").is_none());
    let ecs = from_container(
        &bob,
        ecs_addr(),
        "GET",
        ECS,
        "/v1/credentials",
        &[("Authorization", &bob.token)],
    );
    assert_eq!(ecs.status, 503, "{}", ecs.body);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_eks_get_token_presigns_as_the_users_assumed_role() {
    // Reference: `aws eks get-token` presigns GetCallerIdentity locally;
    // the cluster resolves the identity by replaying the URL.
    prerequisites();
    let _serial = serial().await;
    let moto = Moto::start();
    let proxy = start_proxy(options(&moto, None)).await;
    let user = unique("frank");
    let frank = TestContainer::start(&user, Some("dev"), None);
    let (ok, out, err) = frank.exec(&[], &["aws", "eks", "get-token", "--cluster-name", "demo"]);
    assert!(ok, "aws eks get-token: {err}");
    let token = json(&out)["status"]["token"].as_str().unwrap().to_owned();
    let encoded = token.strip_prefix("k8s-aws-v1.").expect("an EKS token");
    use base64::Engine;
    let url = String::from_utf8(
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(encoded)
            .unwrap(),
    )
    .unwrap();
    // Replay it against the STS server, as the cluster would against STS.
    let rest = url.strip_prefix("https://").expect("an https URL");
    let (host, path_and_query) = rest.split_once('/').expect("a path");
    assert!(
        host.starts_with("sts.") && host.ends_with(".amazonaws.com"),
        "{url}"
    );
    assert!(path_and_query.contains("Action=GetCallerIdentity"), "{url}");
    // moto routes unsigned requests to S3; an Authorization header naming
    // the token's own credential scope routes it to STS (the identity is
    // still the access key the token was signed with).
    let credential = path_and_query
        .split(['?', '&'])
        .find_map(|kv| kv.strip_prefix("X-Amz-Credential="))
        .expect("a presigned URL")
        .replace("%2F", "/");
    let routing =
        format!("AWS4-HMAC-SHA256 Credential={credential}, SignedHeaders=host, Signature=0");
    let reply = http(
        ([127, 0, 0, 1], moto.port).into(),
        "GET",
        host,
        &format!("/{path_and_query}"),
        &[("x-k8s-aws-id", "demo"), ("Authorization", &routing)],
    )
    .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    let expected = format!("<Arn>arn:aws:sts::{ACCOUNT}:assumed-role/dev/{user}</Arn>");
    assert!(reply.body.contains(&expected), "{}", reply.body);
    proxy.shutdown().await;
}
