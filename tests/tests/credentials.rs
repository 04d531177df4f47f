//! AWS credentials inside users' sessions, over real sshd, through the
//! iptables DNAT to the real metadata proxy and the STS-compatible server
//! (moto) the test set-up runs: each user gets their own role, and nothing
//! else.
#![forbid(unsafe_code)]

mod common;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::*;
use std::process::Command;
use std::time::Duration;

/// `aws sts get-caller-identity` in the user's session, via `how`.
fn caller_arn(u: &User, how: &str) -> String {
    let env = match how {
        // The SDK's default chain tries the container endpoint first.
        "default" => "",
        "imds" => {
            "env -u AWS_CONTAINER_CREDENTIALS_FULL_URI -u AWS_CONTAINER_AUTHORIZATION_TOKEN -u AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"
        }
        other => panic!("unknown path {other}"),
    };
    let out = ssh_run(
        u,
        &format!(
            "{env} aws sts get-caller-identity --endpoint-url \"$AWS_ENDPOINT_URL_STS\" --query Arn --output text"
        ),
    );
    assert!(
        out.status.success(),
        "aws sts get-caller-identity ({how}) failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn each_user_gets_their_own_assumed_role() {
    let a = e2e_user("bt-cred-a");
    let b = user_in("bt-cred-b", &["bastion-e2e-other"]);
    ensure_e2e_config();
    for how in ["default", "imds"] {
        let arn = caller_arn(&a, how);
        assert!(
            arn.ends_with(&format!(":assumed-role/e2e-role/{}", a.name)),
            "{how}: {arn}"
        );
        let arn = caller_arn(&b, how);
        assert!(
            arn.ends_with(&format!(":assumed-role/e2e-other-role/{}", b.name)),
            "{how}: {arn}"
        );
    }
}

#[test]
fn imdsv2_and_the_role_listing_look_like_ec2() {
    let u = e2e_user("bt-cred-v2");
    let script = r#"
t=$(curl -s -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' http://169.254.169.254/latest/api/token)
curl -s -H "X-aws-ec2-metadata-token: $t" http://169.254.169.254/latest/meta-data/iam/security-credentials/; echo
curl -s -o /dev/null -w '%{http_code}\n' -H "X-aws-ec2-metadata-token: $t" http://169.254.169.254/latest/meta-data/iam/security-credentials/some-other-role
curl -s -o /dev/null -w '%{http_code}\n' -H "X-aws-ec2-metadata-token: $t" http://169.254.169.254/latest/user-data
curl -s -H "X-aws-ec2-metadata-token: $t" http://169.254.169.254/latest/meta-data/iam/security-credentials/e2e-role | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["Code"], d["Type"], sorted(d))'
"#;
    let text = ssh_text(&u, script);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "e2e-role", "{text}");
    assert_eq!(lines[1], "404", "another role: {text}");
    assert_eq!(lines[2], "404", "user-data is never served: {text}");
    assert!(lines[3].starts_with("Success AWS-HMAC"), "{text}");
    assert!(
        lines[3].contains("'Expiration'") && lines[3].contains("'Token'"),
        "{text}"
    );
}

#[test]
fn other_link_local_addresses_are_unreachable() {
    let u = e2e_user("bt-cred-net");
    let out = ssh_text(
        &u,
        "for a in 169.254.169.253 169.254.170.23 169.254.1.1; do curl -s -m 2 -o /dev/null -w \"$a %{http_code}\\n\" http://$a/ ; done; true",
    );
    for line in out.lines() {
        assert!(line.ends_with(" 000"), "reachable: {line}");
    }
}

/// The installed STS-compatible server (provisioning/sts-demo.sh).
const STS: &str = "127.0.0.1:5000";

#[test]
fn aws_eks_get_token_replayed_against_sts_is_the_users_assumed_role() {
    // Reference: `aws eks get-token` presigns GetCallerIdentity locally; the
    // cluster learns who is calling by replaying that URL against STS.
    let u = e2e_user("bt-cred-eks");
    // (awscli 2.9 prints its ExecCredential as JSON whatever --output says.)
    let out = ssh_text(&u, "aws eks get-token --cluster-name demo");
    let credential: serde_json::Value = serde_json::from_str(&out).unwrap();
    let token = credential["status"]["token"].as_str().unwrap_or_default();
    let encoded = token
        .strip_prefix("k8s-aws-v1.")
        .unwrap_or_else(|| panic!("not an EKS token: {token}"));
    let url = String::from_utf8(URL_SAFE_NO_PAD.decode(encoded).unwrap()).unwrap();
    let (host, path_and_query) = url
        .strip_prefix("https://")
        .and_then(|rest| rest.split_once('/'))
        .unwrap_or_else(|| panic!("not an https URL: {url}"));
    assert!(
        host.starts_with("sts.") && host.ends_with(".amazonaws.com"),
        "{url}"
    );
    assert!(path_and_query.contains("Action=GetCallerIdentity"), "{url}");
    // moto sends requests without an Authorization header to its S3 mock; a
    // header naming the token's own credential scope routes it to STS. The
    // identity is still that of the access key the URL was signed with.
    let credential = path_and_query
        .split(['?', '&'])
        .find_map(|kv| kv.strip_prefix("X-Amz-Credential="))
        .unwrap_or_else(|| panic!("not presigned: {url}"))
        .replace("%2F", "/");
    let out = run_ok(Command::new("curl").args([
        "-sS",
        "-H",
        &format!("Host: {host}"),
        "-H",
        "x-k8s-aws-id: demo",
        "-H",
        &format!("Authorization: AWS4-HMAC-SHA256 Credential={credential}, SignedHeaders=host, Signature=0"),
        &format!("http://{STS}/{path_and_query}"),
    ]));
    let reply = String::from_utf8_lossy(&out.stdout);
    assert!(
        reply.contains(&format!(":assumed-role/e2e-role/{}</Arn>", u.name)),
        "{reply}"
    );
}

/// Fetches the user's credentials in their session through IMDSv1, IMDSv2
/// and the container endpoint into files in their home (never on the
/// terminal, so never in the recording), and returns every secret the
/// session held: the keys and tokens served, the IMDSv2 token and the
/// container's endpoint token.
fn secrets_of_a_session(u: &User) -> Vec<String> {
    let script = r#"
set -e
imds=http://169.254.169.254/latest/meta-data/iam/security-credentials
t=$(curl -sf -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 300' http://169.254.169.254/latest/api/token)
role=$(curl -sf -H "X-aws-ec2-metadata-token: $t" $imds/)
curl -sf -H "X-aws-ec2-metadata-token: $t" $imds/$role >~/.e2e-v2.json
curl -sf $imds/$role >~/.e2e-v1.json
curl -sf -H "Authorization: $AWS_CONTAINER_AUTHORIZATION_TOKEN" "$AWS_CONTAINER_CREDENTIALS_FULL_URI" >~/.e2e-ecs.json
printf '%s' "$t" >~/.e2e-imds-token
printf '%s' "$AWS_CONTAINER_AUTHORIZATION_TOKEN" >~/.e2e-endpoint-token
echo fetched
"#;
    assert_eq!(ssh_text(u, script).trim(), "fetched");
    let home = std::path::Path::new("/var/lib/bastion/homes").join(&u.name);
    let read = |name: &str| std::fs::read_to_string(home.join(name)).unwrap();
    let mut secrets = vec![read(".e2e-imds-token"), read(".e2e-endpoint-token")];
    for file in [".e2e-v2.json", ".e2e-v1.json", ".e2e-ecs.json"] {
        let served: serde_json::Value = serde_json::from_str(&read(file)).unwrap();
        for key in ["SecretAccessKey", "Token"] {
            let value = served[key]
                .as_str()
                .unwrap_or_else(|| panic!("{file}: no {key}"));
            secrets.push(value.to_owned());
        }
    }
    secrets.sort();
    secrets.dedup();
    for s in &secrets {
        assert!(s.len() >= 16, "too short to be a secret: {s:?}");
    }
    secrets
}

#[test]
fn no_secret_of_a_session_reaches_any_log_or_record() {
    let u = e2e_user("bt-cred-leak");
    let secrets = secrets_of_a_session(&u);
    // Everything bastion writes: its daemons' logs (the demo STS server's
    // too), the audit trail and the user's session recordings.
    let mut files = Vec::new();
    let mut dirs = vec![std::path::PathBuf::from("/var/log/bastion")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                // Other users' recordings hold other sessions' output.
                let others = path.parent().is_some_and(|p| p.ends_with("sessions"))
                    && !path.ends_with(&u.name)
                    && !path.ends_with(".open");
                if !others {
                    dirs.push(path);
                }
            } else {
                files.push(path);
            }
        }
    }
    assert!(
        files.iter().any(|f| f.ends_with("metadata-proxy.log")),
        "{files:?}"
    );
    assert!(
        files.iter().any(|f| f.ends_with("audit.jsonl")),
        "{files:?}"
    );
    for file in &files {
        // Session markers come and go while other sessions run.
        let Ok(bytes) = std::fs::read(file) else {
            continue;
        };
        let text = String::from_utf8_lossy(&bytes);
        for secret in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "a secret of {}'s session is in {}",
                u.name,
                file.display()
            );
        }
    }
    // The STS call and the hand-out are audited (without the secrets, as
    // checked above; the proxy writes them just after answering).
    let audited = |kind: &str| {
        audit_events()
            .iter()
            .any(|e| e["user"] == u.name.as_str() && e["event"] == kind)
    };
    assert!(
        eventually(Duration::from_secs(10), || audited("sts.assume_role")
            && audited("credentials.issued")),
        "the credentials of {}'s session are not in the audit log",
        u.name
    );
}

#[test]
fn one_users_tokens_are_refused_from_another_users_container() {
    let alice = e2e_user("bt-cred-owner");
    let mallory = e2e_user("bt-cred-thief");
    let stolen = ssh_text(
        &alice,
        "curl -sf -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 300' http://169.254.169.254/latest/api/token; echo; printf '%s' \"$AWS_CONTAINER_AUTHORIZATION_TOKEN\"",
    );
    let (imds_token, endpoint_token) = stolen.split_once('\n').expect("two tokens");
    assert!(
        !imds_token.is_empty() && !endpoint_token.is_empty(),
        "{stolen}"
    );
    let script = format!(
        r#"
imds=http://169.254.169.254/latest/meta-data/iam/security-credentials/
curl -s -o /dev/null -w '%{{http_code}}\n' -H 'X-aws-ec2-metadata-token: {imds_token}' $imds
curl -s -o /dev/null -w '%{{http_code}}\n' -H 'X-aws-ec2-metadata-token: {imds_token}' ${{imds}}e2e-role
curl -s -w '\n%{{http_code}}\n' -H 'Authorization: {endpoint_token}' "$AWS_CONTAINER_CREDENTIALS_FULL_URI"
"#
    );
    let out = ssh_text(&mallory, &script);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "401", "alice's IMDSv2 token listed a role: {out}");
    assert_eq!(
        lines[1], "401",
        "alice's IMDSv2 token got credentials: {out}"
    );
    let status = lines.last().copied().unwrap_or_default();
    assert!(
        status.starts_with('4') && !out.contains("AccessKeyId"),
        "alice's endpoint token got credentials: {out}"
    );
}

#[test]
fn the_proxys_admin_listener_is_unreachable_from_a_session() {
    let u = e2e_user("bt-cred-admin");
    let gateway = bridge_gateway();
    let gateway = gateway.as_str();
    // The admin listener answers on the host...
    let host = run_ok(Command::new("curl").args(["-sf", "http://127.0.0.1:8776/metrics"]));
    assert!(String::from_utf8_lossy(&host.stdout).contains("# TYPE"));
    // ...and not from a container, at any address it might try.
    let script = format!(
        "for u in http://{gateway}:8776/metrics http://127.0.0.1:8776/metrics http://{gateway}:8775/metrics http://169.254.169.254/metrics; do \
           printf '%s ' $u; curl -s -m 3 $u | grep -c '# TYPE' || true; done"
    );
    let out = ssh_text(&u, &script);
    assert_eq!(out.lines().count(), 4, "{out}");
    for line in out.lines() {
        assert!(line.ends_with(" 0"), "metrics reachable: {line}");
    }
}

/// issue 9, class 9: the proxy is strict where a lenient parser could be
/// read two ways. Raw HTTP from inside a user's session, through the DNAT.
#[test]
fn requests_read_two_ways_are_refused_by_the_proxy() {
    let u = e2e_user("bt-cred-strict");
    let script = r#"
import socket
def ask(raw):
    s = socket.create_connection(("169.254.169.254", 80), timeout=10)
    s.sendall(raw.encode())
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
        if b"\r\n\r\n" in data:
            break
    s.close()
    return data.split(b"\r\n")[0].decode()
P = "/latest/meta-data/iam/security-credentials/"
for name, raw in [
    ("plain", f"GET {P} HTTP/1.1\r\nHost: 169.254.169.254\r\nConnection: close\r\n\r\n"),
    ("two-hosts", f"GET {P} HTTP/1.1\r\nHost: 169.254.169.254\r\nHost: evil.example\r\nConnection: close\r\n\r\n"),
    ("two-hosts-rev", f"GET {P} HTTP/1.1\r\nHost: evil.example\r\nHost: 169.254.169.254\r\nConnection: close\r\n\r\n"),
    ("absolute-foreign", f"GET http://evil.example{P} HTTP/1.1\r\nHost: 169.254.169.254\r\nConnection: close\r\n\r\n"),
    ("absolute-own", f"GET http://169.254.169.254{P} HTTP/1.1\r\nHost: 169.254.169.254\r\nConnection: close\r\n\r\n"),
    ("dot-dot", f"GET {P}%2e%2e/ HTTP/1.1\r\nHost: 169.254.169.254\r\nConnection: close\r\n\r\n"),
    ("two-tokens", f"GET {P} HTTP/1.1\r\nHost: 169.254.169.254\r\nX-aws-ec2-metadata-token: a\r\nX-aws-ec2-metadata-token: b\r\nConnection: close\r\n\r\n"),
]:
    print(name, ask(raw))
"#;
    let out = ssh_text(&u, &format!("python3 - <<'PY'\n{script}\nPY"));
    let status = |name: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in {out}"))
            .to_owned()
    };
    assert!(status("plain").contains(" 200 "), "{out}");
    for name in [
        "two-hosts",
        "two-hosts-rev",
        "absolute-foreign",
        "absolute-own",
        "dot-dot",
        "two-tokens",
    ] {
        assert!(status(name).contains(" 400 "), "{name}: {out}");
    }
}

/// Python, after connections were opened into `held`: prints how many of
/// them the proxy closed at once (`closed N`).
const COUNT_CLOSED: &str = r#"
time.sleep(1)
closed = 0
for s in held:
    s.setblocking(False)
    try:
        if s.recv(1) == b"":
            closed += 1
    except BlockingIOError:
        pass
    except OSError:
        closed += 1
print("closed", closed, flush=True)"#;

/// One container cannot hold the proxy's connections: past the
/// per-source limit its connections are closed at once, and other users
/// are served meanwhile.
#[test]
fn one_container_cannot_hold_the_proxys_connections() {
    let u = e2e_user("bt-cred-hog");
    let other = e2e_user("bt-cred-other");
    let script = format!(
        r#"
import socket, time
held = []
for i in range(200):
    s = socket.create_connection(("169.254.169.254", 80), timeout=10)
    held.append(s)
{COUNT_CLOSED}
time.sleep(20)
"#
    );
    let mut hog = spawn_remote(
        &u,
        &format!("python3 - <<'PY'\n{script}\nPY"),
        std::process::Stdio::null(),
    );
    let line = first_line(&mut hog);
    let closed: usize = line
        .trim()
        .strip_prefix("closed ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    // While its connections are held, another user still gets credentials.
    let arn = caller_arn(&other, "imds");
    let _ = hog.kill();
    let _ = hog.wait();
    assert!(
        closed >= 100,
        "at most the per-source limit (64) is kept open: {closed} of 200 closed"
    );
    assert!(arn.contains("assumed-role/e2e-role/"), "{arn}");
}

/// issue 9, class 9 (found by the attacker review): a local account on
/// the host, which can connect from every 127.0.0.0/8 address, cannot hold
/// the proxy's connections either: only sources in the users' networks
/// are served; anything else is closed at once.
#[test]
fn a_local_account_cannot_hold_the_proxys_connections() {
    let other = e2e_user("bt-cred-local");
    let gateway = bridge_gateway();
    let script = format!(
        r#"
import socket, time
held = []
for i in range(300):
    s = socket.socket()
    s.bind(("127.0.{{}}.{{}}".format(i // 200, 2 + i % 200), 0))
    s.settimeout(10)
    s.connect(("{gateway}", 8775))
    held.append(s)
{COUNT_CLOSED}
"#,
        gateway = gateway
    );
    let out = run_ok(Command::new("setpriv").args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "/usr/bin/python3",
        "-c",
        &script,
    ]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.trim(), "closed 300", "{text}");
    let arn = caller_arn(&other, "imds");
    assert!(arn.contains("assumed-role/e2e-role/"), "{arn}");
}

/// The first PREROUTING jump for the users' bridges wins: a second rule set
/// (a test or benchmark network) applied with the default `bst+` would send
/// every user's IMDS traffic to its own proxy. The script refuses that, and
/// changes nothing.
#[test]
fn a_second_firewall_rule_set_cannot_take_over_the_users_bridges() {
    let prerouting = || {
        let out = run_ok(Command::new("iptables").args(["-w", "-t", "nat", "-S", "PREROUTING"]));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let before = prerouting();
    assert!(before.contains("-i bst+ "), "{before}");
    let out = Command::new(repo().join("provisioning/metadata-proxy-iptables.sh"))
        .args(["apply", "--bridge", "bt-side0", "--gateway", "172.30.250.1"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("already go to another network's proxy"),
        "{err}"
    );
    assert_eq!(prerouting(), before);
}
