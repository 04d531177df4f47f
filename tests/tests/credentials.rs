//! AWS credentials inside users' sessions, over real sshd, through the
//! iptables DNAT to the real metadata proxy and the STS-compatible server
//! (moto) the test set-up runs: each user gets their own role, and nothing
//! else.

mod common;

use common::*;

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
