//! The `bastion-metadata-proxy` binary as ops run it: config file, logs,
//! audit events, admin endpoints, SIGTERM.
#![forbid(unsafe_code)]

mod support;

use std::fs;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;

/// Kills the proxy if the test fails before stopping it.
struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn config_text(moto: &Moto, admin_port: u16, audit_log: &std::path::Path) -> String {
    format!(
        r#"[metadata_proxy]
admin_listen = "127.0.0.1:{admin_port}"
account_id = "{ACCOUNT}"
sts_endpoint = "{endpoint}"
sts_region = "us-east-1"
imds_upstream = "{endpoint}"

[bastiond.network]
name = "{NETWORK}"
subnet = "{SUBNET}"

[recording]
audit_log = "{audit}"
syslog = false
"#,
        endpoint = moto.endpoint(),
        audit = audit_log.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_any_log_even_at_trace_level() {
    // "debug logging printed credentials" (lyft/metadataproxy README).
    prerequisites();
    let _serial = serial().await;
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let audit_log = dir.path().join("audit/audit.jsonl");
    let admin_port = free_port();
    let config = write_config(dir.path(), &config_text(&moto, admin_port, &audit_log));
    let stderr_path = dir.path().join("proxy.log");
    let mut child = ChildGuard(
        Command::new(env!("CARGO_BIN_EXE_bastion-metadata-proxy"))
            .args(["--config", config.to_str().unwrap()])
            .env("RUST_LOG", "trace")
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .stdout(fs::File::create(dir.path().join("proxy.out")).unwrap())
            .stderr(fs::File::create(&stderr_path).unwrap())
            .spawn()
            .unwrap(),
    );
    let admin: std::net::SocketAddr = ([127, 0, 0, 1], admin_port).into();
    wait_for("/healthz", Duration::from_secs(30), || {
        http(admin, "GET", "127.0.0.1", "/healthz", &[]).is_ok_and(|r| r.status == 200)
    });
    let user = unique("erin");
    let erin = TestContainer::start(&user, Some("dev"), None);
    let imds = from_container(
        &erin,
        imds_addr(),
        "GET",
        IMDS,
        "/latest/meta-data/iam/security-credentials/dev",
        &[],
    );
    assert_eq!(imds.status, 200, "{}", imds.body);
    let v: serde_json::Value = serde_json::from_str(&imds.body).unwrap();
    // This test is about what reaches the logs. Under CI load the local
    // STS server has once refused a connection here (503 "Unreachable",
    // seen in a fresh-clone CI run, not reproduced since); such a
    // transient failure is retried, a lasting one still fails the test.
    let ask = || {
        from_container(
            &erin,
            ecs_addr(),
            "GET",
            ECS,
            "/v1/credentials",
            &[("Authorization", &erin.token)],
        )
    };
    let mut ecs = ask();
    for _ in 0..3 {
        if ecs.status != 503 {
            break;
        }
        std::thread::sleep(Duration::from_secs(2));
        ecs = ask();
    }
    assert_eq!(ecs.status, 200, "{}", ecs.body);
    let secret = v["SecretAccessKey"].as_str().unwrap().to_owned();
    let token = v["Token"].as_str().unwrap().to_owned();
    let key_id = v["AccessKeyId"].as_str().unwrap().to_owned();
    let imds_token = from_container(
        &erin,
        imds_addr(),
        "PUT",
        IMDS,
        "/latest/api/token",
        &[("X-aws-ec2-metadata-token-ttl-seconds", "60")],
    )
    .body;
    let r = from_container(
        &erin,
        imds_addr(),
        "GET",
        IMDS,
        "/latest/meta-data/iam/security-credentials/",
        &[("X-aws-ec2-metadata-token", &imds_token)],
    );
    assert_eq!(r.status, 200);

    // Metrics, from the host: Prometheus text unless OpenMetrics is asked
    // for, and what promtool accepts.
    let metrics = http(admin, "GET", "127.0.0.1", "/metrics", &[]).unwrap();
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("content-type")
                && v.starts_with("text/plain; version=0.0.4")),
        "{:?}",
        metrics.headers
    );
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus; provisioning/install.sh --test installs it)");
    std::io::Write::write_all(&mut promtool.stdin.take().unwrap(), metrics.body.as_bytes())
        .unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool check metrics: {}{}\n{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr),
        metrics.body
    );
    let openmetrics = http(
        admin,
        "GET",
        "127.0.0.1",
        "/metrics",
        &[(
            "Accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )],
    )
    .unwrap();
    assert!(
        openmetrics.body.ends_with("# EOF\n"),
        "{}",
        openmetrics.body
    );
    for needle in [
        r#"bastion_metadata_proxy_requests_total{route="iam-credentials",status="200"} 1"#,
        r#"bastion_metadata_proxy_requests_total{route="container-credentials",status="200"} 1"#,
        r#"bastion_metadata_proxy_sts_assume_role_calls_total{result="success"} "#,
        "bastion_metadata_proxy_containers_known",
        "bastion_metadata_proxy_credential_cache_hits_total",
        "bastion_metadata_proxy_sts_assume_role_seconds_bucket",
    ] {
        assert!(
            metrics.body.contains(needle),
            "no {needle} in\n{}",
            metrics.body
        );
    }

    // Graceful shutdown on SIGTERM.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let mut status = None;
    wait_for(
        "the proxy to exit after SIGTERM",
        Duration::from_secs(15),
        || {
            status = child.0.try_wait().unwrap();
            status.is_some()
        },
    );
    assert!(status.unwrap().success(), "exit status {status:?}");
    let log = fs::read_to_string(&stderr_path).unwrap();
    assert!(log.contains("stopped"), "{log}");
    assert!(
        log.lines().count() > 50,
        "trace logging was on: {} lines",
        log.lines().count()
    );

    // The audit trail has the STS call and the hand-outs, without secrets.
    let audit = fs::read_to_string(&audit_log).unwrap();
    let events: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let sts = events
        .iter()
        .find(|e| e["event"] == "sts.assume_role" && e["user"] == user.as_str())
        .expect("an sts.assume_role event for erin");
    assert_eq!(sts["user"], user.as_str());
    assert_eq!(sts["session_name"], user.as_str());
    assert_eq!(sts["source_identity"], user.as_str());
    assert_eq!(sts["role_arn"], format!("arn:aws:iam::{ACCOUNT}:role/dev"));
    assert_eq!(sts["access_key_id"], key_id.as_str());
    let issued: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "credentials.issued" && e["user"] == user.as_str())
        .collect();
    let endpoints: Vec<&str> = issued
        .iter()
        .map(|e| e["endpoint"].as_str().unwrap())
        .collect();
    assert!(endpoints.contains(&"imds"), "{endpoints:?}");
    assert_eq!(issued[0]["container"], format!("bastion-{user}"));
    assert_eq!(issued[0]["source_ip"], erin.ip.to_string());

    for (name, text) in [("proxy log", &log), ("audit log", &audit)] {
        for (what, value) in [
            ("secret access key", &secret),
            ("session token", &token),
            ("IMDSv2 token", &imds_token),
            ("container token", &erin.token),
        ] {
            assert!(
                !text.contains(value.as_str()),
                "the {name} contains the {what}"
            );
        }
    }
}

#[test]
fn a_bad_config_is_refused_before_binding_naming_the_key_and_line() {
    prerequisites();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "[metadata_proxy]\nport = 8775\nsession_duration = \"5m\"\n",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_bastion-metadata-proxy"))
        .args(["--config", config.to_str().unwrap()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("metadata_proxy.session_duration") && err.contains("line 3"),
        "{err}"
    );

    // A group-writable config is refused too.
    use std::os::unix::fs::PermissionsExt;
    let config = write_config(dir.path(), "[metadata_proxy]\n");
    fs::set_permissions(&config, fs::Permissions::from_mode(0o664)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_bastion-metadata-proxy"))
        .args(["--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("chmod go-w"));
}

#[test]
fn the_manual_page_is_written_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_bastion-metadata-proxy"))
        .arg("--man")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let page = fs::read_to_string(dir.path().join("bastion-metadata-proxy.1")).unwrap();
    assert!(page.contains("\\-\\-config"), "{page}");
}
