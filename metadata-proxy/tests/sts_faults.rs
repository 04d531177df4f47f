//! STS faults caused for real (issue 9): a hanging STS (a listener that
//! accepts and never answers, [`SilentSts`]) and an STS that goes away
//! (moto stopped: connection refused) and comes back (a new moto on the same
//! port). The proxy under test is the binary, or the library's whole
//! `server::start` where a test needs tuning the binary does not expose
//! (the back-off); the callers are real containers on the tests' own
//! network ([`FAULTS_NETWORK`]).
//!
//! No timed assertions: each test waits, with a generous timeout, for an
//! event the old behaviour could not produce at all, and says why.
#![forbid(unsafe_code)]

mod support;

use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bastion_core::config::Config;
use bastion_metadata_proxy::audit_events::Auditor;
use bastion_metadata_proxy::credential_cache::{CredentialCache, Tuning};
use bastion_metadata_proxy::metrics::Metrics;
use bastion_metadata_proxy::secret::Secret;
use bastion_metadata_proxy::server::{ProxyOptions, start};
use bastion_metadata_proxy::sts::{AssumeRoleRequest, AwsSts, StsSettings};
use support::*;

/// Kills the proxy if the test fails before it exits.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const TTL: (&str, &str) = ("X-aws-ec2-metadata-token-ttl-seconds", "300");

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// A `[metadata_proxy]` listening on the faults network's gateway.
fn config_text(
    sts_endpoint: &str,
    account_id: Option<&str>,
    port: u16,
    admin_port: u16,
    audit_log: &Path,
) -> String {
    let account = account_id
        .map(|a| format!("account_id = \"{a}\"\n"))
        .unwrap_or_default();
    format!(
        r#"[metadata_proxy]
listen_address = "{FAULTS_GATEWAY}"
port = {port}
admin_listen = "127.0.0.1:{admin_port}"
{account}sts_endpoint = "{sts_endpoint}"
sts_region = "us-east-1"
imds_upstream = "{sts_endpoint}"

[bastiond.network]
name = "{FAULTS_NETWORK}"
subnet = "{FAULTS_SUBNET}"

[recording]
audit_log = "{audit}"
syslog = false
"#,
        audit = audit_log.display()
    )
}

/// The binary with `config`, its stderr in `log`.
fn spawn_proxy(config: &Path, log: &Path) -> ChildGuard {
    ChildGuard(
        Command::new(env!("CARGO_BIN_EXE_bastion-metadata-proxy"))
            .args(["--config", config.to_str().unwrap()])
            .env("RUST_LOG", "info")
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(log).unwrap())
            .spawn()
            .unwrap(),
    )
}

/// `sts.assume_role` audit events for `user`: (failed, succeeded).
fn assume_role_events(audit_log: &Path, user: &str) -> (usize, usize) {
    let text = fs::read_to_string(audit_log).unwrap_or_default();
    let events: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|e: &serde_json::Value| e["event"] == "sts.assume_role" && e["user"] == user)
        .collect();
    let failed = events.iter().filter(|e| !e["error"].is_null()).count();
    (failed, events.len() - failed)
}

/// The value of the AssumeRole-call counter labelled `result`.
fn sts_calls(metrics: &Metrics, result: &str) -> u64 {
    let prefix =
        format!("bastion_metadata_proxy_sts_assume_role_calls_total{{result=\"{result}\"}} ");
    metrics
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(&prefix).map(|n| n.trim().parse().unwrap()))
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_account_id_a_hanging_sts_does_not_hold_up_imds() {
    // Issue 9: start-up called GetCallerIdentity before listening, so a
    // hanging STS kept IMDS down for the SDK's whole timeout on a restart.
    faults_prerequisites();
    let _serial = serial().await;
    let sts = SilentSts::start();
    let user = unique("hana");
    let hana = TestContainer::start_on_network(FAULTS_NETWORK, &user, Some("dev"), None, true);
    let dir = tempfile::tempdir().unwrap();
    let (port, admin_port) = (free_port(), free_port());
    let config = write_config(
        dir.path(),
        &config_text(
            &sts.endpoint(),
            Some(ACCOUNT),
            port,
            admin_port,
            &dir.path().join("audit.jsonl"),
        ),
    );
    let log = dir.path().join("proxy.log");
    let mut proxy = spawn_proxy(&config, &log);
    let imds: SocketAddr = (FAULTS_GATEWAY, port).into();

    // IMDS answers the container's token PUT...
    let mut token = String::new();
    wait_for(
        "the proxy's IMDS to answer a token PUT",
        Duration::from_secs(30),
        || {
            assert!(
                proxy.0.try_wait().unwrap().is_none(),
                "the proxy exited: {}",
                fs::read_to_string(&log).unwrap_or_default()
            );
            match try_from_container(&hana, imds, "PUT", IMDS, "/latest/api/token", &[TTL]) {
                Ok(r) if r.status == 200 => {
                    token = r.body;
                    true
                }
                _ => false,
            }
        },
    );
    let answered = Instant::now();
    // ...while the proxy's own GetCallerIdentity still waits on the silent
    // STS. Before, start-up listened only once that call had given up (the
    // SDK closes the connection then): IMDS could not answer before it
    // closed.
    wait_for(
        "the proxy's GetCallerIdentity to reach the silent STS",
        Duration::from_secs(30),
        || !sts.held("GetCallerIdentity").is_empty(),
    );
    let identity_checks = sts.held("GetCallerIdentity");
    assert!(
        identity_checks
            .iter()
            .any(|c| c.closed.is_none_or(|closed| closed > answered)),
        "IMDS answered only after the proxy's GetCallerIdentity had given up: {identity_checks:?}"
    );

    // A request that gets no answer shows the proxy's log.
    let ask = |method: &str, host: &str, path: &str, headers: &[(&str, &str)]| {
        try_from_container(&hana, imds, method, host, path, headers).unwrap_or_else(|e| {
            panic!(
                "{method} {host}{path} got no answer ({e}); {}; the proxy's log:\n{}",
                hana.diagnosis(),
                fs::read_to_string(&log).unwrap_or_default()
            )
        })
    };

    // The listing needs no STS.
    let auth = ("X-aws-ec2-metadata-token", token.as_str());
    let list = ask(
        "GET",
        IMDS,
        "/latest/meta-data/iam/security-credentials/",
        &[auth],
    );
    assert_eq!((list.status, list.body.as_str()), (200, "dev"));

    // The credentials fail cleanly: EC2's error form, no credentials (the
    // request waits a bounded time for the AssumeRole in flight, not for
    // the SDK's whole timeout).
    let creds = ask(
        "GET",
        IMDS,
        "/latest/meta-data/iam/security-credentials/dev",
        &[auth],
    );
    assert_eq!(creds.status, 200, "{}", creds.body);
    let v = json(&creds.body);
    assert_ne!(v["Code"], "Success", "{v}");
    assert!(v.get("AccessKeyId").is_none(), "{v}");
    assert!(v["Message"].as_str().unwrap().contains("role/dev"), "{v}");
    let ecs = ask(
        "GET",
        ECS,
        "/v1/credentials",
        &[("Authorization", &hana.token)],
    );
    assert_eq!(ecs.status, 503, "{}", ecs.body);
    assert!(json(&ecs.body)["code"].is_string(), "{}", ecs.body);
    assert!(!sts.held("AssumeRole").is_empty(), "the proxy did ask STS");
    assert!(
        proxy.0.try_wait().unwrap().is_none(),
        "the proxy is still running"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_account_id_a_hanging_sts_stops_start_up_after_a_bounded_wait_saying_why() {
    // Without account_id the proxy cannot name roles: it waits for STS a
    // few seconds (saying so at once), then stops with the error that tells
    // what to set. It never listens meanwhile.
    faults_prerequisites();
    let _serial = serial().await;
    let sts = SilentSts::start();
    let dir = tempfile::tempdir().unwrap();
    let (port, admin_port) = (free_port(), free_port());
    let config = write_config(
        dir.path(),
        &config_text(
            &sts.endpoint(),
            None,
            port,
            admin_port,
            &dir.path().join("audit.jsonl"),
        ),
    );
    let log = dir.path().join("proxy.log");
    let mut proxy = spawn_proxy(&config, &log);
    // Why it waits, in the log while it waits.
    wait_for(
        "the proxy to say why it waits for STS",
        Duration::from_secs(30),
        || {
            fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("metadata_proxy.account_id is not set")
                || proxy.0.try_wait().unwrap().is_some()
        },
    );
    let early = fs::read_to_string(&log).unwrap();
    assert!(
        early.contains("metadata_proxy.account_id is not set")
            && early.contains("set account_id to start without waiting for STS"),
        "no line says why start-up waits: {early}"
    );
    if proxy.0.try_wait().unwrap().is_none() {
        let imds: SocketAddr = (FAULTS_GATEWAY, port).into();
        assert!(
            TcpStream::connect_timeout(&imds, Duration::from_secs(2)).is_err(),
            "IMDS listens before the proxy can name any role"
        );
    }
    let mut status = None;
    wait_for("the proxy to give up", Duration::from_secs(60), || {
        status = proxy.0.try_wait().unwrap();
        status.is_some()
    });
    assert!(!status.unwrap().success());
    let log = fs::read_to_string(&log).unwrap();
    let last = log.lines().last().unwrap_or_default();
    assert!(
        last.contains("cannot find the AWS account for role names")
            && last.contains("did not answer GetCallerIdentity within 5 s")
            && last.contains("set metadata_proxy.account_id"),
        "{log}"
    );
    // It gave up on the call (the connection is closed), not just waited.
    let calls = sts.held("GetCallerIdentity");
    assert!(!calls.is_empty());
    wait_for("the connection to close", Duration::from_secs(10), || {
        sts.held("GetCallerIdentity")
            .iter()
            .all(|c| c.closed.is_some())
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_long_sts_outage_a_cold_role_gets_credentials_as_soon_as_sts_answers() {
    // Issue 9: a role whose last AssumeRole failed got the cached failure
    // until its back-off ran out (up to 5 minutes after a long outage),
    // however long STS had been back.
    faults_prerequisites();
    let _serial = serial().await;
    let mut moto = Moto::start();
    let sts_port = moto.port;
    let dir = tempfile::tempdir().unwrap();
    let audit_log = dir.path().join("audit.jsonl");
    let (port, admin_port) = (free_port(), free_port());
    let text = config_text(
        &moto.endpoint(),
        Some(ACCOUNT),
        port,
        admin_port,
        &audit_log,
    );
    let mut options = ProxyOptions::from_config(&Config::parse(&text).unwrap());
    options.sts.static_credentials = Some(("testing".into(), Secret::from("testing")));
    // The back-off a long outage leaves, from the first failure on: with
    // equal jitter, at least 150 s before the key may call STS again.
    options.tuning = Tuning {
        backoff_base: Duration::from_secs(300),
        backoff_cap: Duration::from_secs(300),
        scan_interval: Duration::from_millis(500),
        ..options.tuning
    };
    let proxy = start(options).await.expect("the proxy starts");
    let imds: SocketAddr = (FAULTS_GATEWAY, port).into();

    // STS goes away; a new container's role gets nothing.
    moto.stop();
    let user = unique("ivan");
    let ivan = TestContainer::start_on_network(FAULTS_NETWORK, &user, Some("ops"), None, true);
    let ask = || {
        let r = try_from_container(
            &ivan,
            imds,
            "GET",
            IMDS,
            "/latest/meta-data/iam/security-credentials/ops",
            &[],
        )
        .unwrap_or_else(|e| panic!("no answer ({e}); {}", ivan.diagnosis()));
        assert_eq!(r.status, 200, "{}", r.body);
        json(&r.body)
    };
    wait_for("a failed AssumeRole", Duration::from_secs(30), || {
        assume_role_events(&audit_log, &user).0 >= 1
    });
    // STS stays down a while; requests get the cached failure and make no
    // call (the back-off holds).
    let down_until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < down_until {
        let v = ask();
        assert_ne!(v["Code"], "Success", "{v}");
        assert!(v.get("AccessKeyId").is_none(), "{v}");
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(
        assume_role_events(&audit_log, &user),
        (1, 0),
        "one failed AssumeRole, no retry per request"
    );
    // The real IMDS (moto stands in) is gone too: allow-listed passthrough
    // answers 502 (the caller is not left waiting on a dead upstream).
    let region = || {
        let r = try_from_container(
            &ivan,
            imds,
            "GET",
            IMDS,
            "/latest/meta-data/placement/region",
            &[],
        )
        .unwrap_or_else(|e| panic!("no answer ({e}); {}", ivan.diagnosis()));
        (r.status, r.body)
    };
    assert_eq!(region().0, 502);
    // The admin port says so (what `bastionctl doctor` asks).
    let sts_health = || {
        let r = http(proxy.admin_addr, "GET", "127.0.0.1", "/healthz/sts", &[]).unwrap();
        (r.status, r.body)
    };
    let (status, body) = sts_health();
    assert_eq!(status, 503, "{body}");
    assert!(body.starts_with("STS does not answer the proxy"), "{body}");

    // STS is back where it was. Credentials come within 20 s; before, not
    // for at least 150 s (the back-off after that failure).
    let _moto = Moto::start_on(sts_port);
    let mut last = serde_json::Value::Null;
    wait_for(
        "credentials after STS came back",
        Duration::from_secs(20),
        || {
            last = ask();
            last["Code"] == "Success"
        },
    );
    assert!(last["AccessKeyId"].is_string(), "{last}");
    assert_eq!(
        assume_role_events(&audit_log, &user),
        (1, 1),
        "one AssumeRole after STS came back"
    );
    // ...and so does the passthrough.
    assert_eq!(region(), (200, "us-east-1".to_owned()));
    // The admin port's answer follows within its freshness.
    wait_for("/healthz/sts to say ok", Duration::from_secs(30), || {
        sts_health().0 == 200
    });
    assert!(sts_health().1.starts_with("ok: STS answers"));
    proxy.shutdown().await;
}

fn request(user: &str, session_name: &str) -> AssumeRoleRequest {
    AssumeRoleRequest {
        user: user.into(),
        container: format!("bastion-{user}"),
        role_arn: format!("arn:aws:iam::{ACCOUNT}:role/dev"),
        session_name: session_name.into(),
        external_id: None,
        duration: Duration::from_secs(3600),
        tags: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_sts_refuses_keeps_backing_off_through_an_outage_and_its_end() {
    // The protections stay: a role session STS refuses while it answers
    // (a RoleSessionName over 64 characters: moto, like STS, answers
    // ValidationError) is not retried per request, nor when an outage
    // ends; the role that only waited for STS is.
    faults_prerequisites();
    let _serial = serial().await;
    let mut moto = Moto::start();
    let sts_port = moto.port;
    let sts = AwsSts::new(&StsSettings {
        endpoint: Some(moto.endpoint()),
        region: Some("us-east-1".into()),
        static_credentials: Some(("testing".into(), Secret::from("testing"))),
        operation_timeout: Duration::from_secs(10),
    })
    .await;
    let metrics = Arc::new(Metrics::new());
    let cache = Arc::new(CredentialCache::new(
        sts,
        Tuning {
            backoff_base: Duration::from_secs(300),
            backoff_cap: Duration::from_secs(300),
            ..Tuning::default()
        },
        metrics.clone(),
        Auditor::tracing_only(),
    ));
    let refused = request("kim", &"k".repeat(65));
    let waiting = request("lena", "lena");

    for _ in 0..20 {
        let error = cache.get(&refused).await.unwrap_err();
        assert!(error.to_string().contains("ValidationError"), "{error}");
    }
    assert_eq!(sts_calls(&metrics, "ValidationError"), 1);

    moto.stop();
    let error = cache.get(&waiting).await.unwrap_err();
    assert!(error.to_string().contains("Unreachable"), "{error}");
    let down_until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < down_until {
        assert!(cache.get(&waiting).await.is_err());
        assert!(cache.get(&refused).await.is_err());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(sts_calls(&metrics, "Unreachable"), 1);

    // STS back: lena's credentials within 20 s (before: not for at least
    // 150 s); kim's refusal still backs off.
    let _moto = Moto::start_on(sts_port);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if cache.get(&waiting).await.is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no credentials 20 s after STS came back"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(sts_calls(&metrics, "success"), 1);
    for _ in 0..20 {
        let error = cache.get(&refused).await.unwrap_err();
        assert!(error.to_string().contains("ValidationError"), "{error}");
    }
    assert_eq!(sts_calls(&metrics, "ValidationError"), 1);
}
