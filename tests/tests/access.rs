//! Access as code end to end: an access file applied with `bastionctl
//! access apply` on the real host (accounts, keys, locks), users logging
//! in through the real sshd into real containers, their kubeconfigs, and
//! the exec credential plugin's token resolved by the real STS server.
//!
//! The file manages its own group (`bt-access`), so the host's other
//! bastion users (the demo's, the other tests') are never touched.
#![forbid(unsafe_code)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::*;

const GROUP: &str = "bt-access";
/// A real CA certificate (base64 PEM), as kubeconfigs carry it.
const CA: &str = "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUJmekNDQVNXZ0F3SUJBZ0lVSmxURXA0UW53NGRYQUFEdXpTNnJrZHpJaGR3d0NnWUlLb1pJemowRUF3SXcKRlRFVE1CRUdBMVVFQXd3S2EzVmlaWEp1WlhSbGN6QWVGdzB5TmpFeU1EWXdNak14TWpOYUZ3MHpOakV5TURNdwpNak14TWpOYU1CVXhFekFSQmdOVkJBTU1DbXQxWW1WeWJtVjBaWE13V1RBVEJnY3Foa2pPUFFJQkJnZ3Foa2pPClBRTUJCd05DQUFTa0hnY2xFUk9YbHo3YzBiUjNMeTJGMXRGK0tCWDc4c25ZZTBkVzRqNHc5ZE40VkdjL2llUmgKaDBMMm1WZlFtZ1lTNVNOaDRxZHJhdXEwbDFSOFcxU2hvMU13VVRBZEJnTlZIUTRFRmdRVU0wSkt5bG1RRFZsYgpRMUVQRkliWWFDUnRaMFF3SHdZRFZSMGpCQmd3Rm9BVU0wSkt5bG1RRFZsYlExRVBGSWJZYUNSdFowUXdEd1lEClZSMFRBUUgvQkFVd0F3RUIvekFLQmdncWhrak9QUVFEQWdOSUFEQkZBaUIwOTBLdExuRU5FdlpJRStGUDlHOW4KZ0JKeFFFck1BNmRIVlRNcWhLRC9MZ0loQUt4U0FjOWo1cFpXUzBkSDBYOHcyOFNHUktDUVBlbFIvN0liRjJURgp6SGU1Ci0tLS0tRU5EIENFUlRJRklDQVRFLS0tLS0K";

/// A key pair made for one user of this test.
fn key(name: &str) -> User {
    let dir = std::env::temp_dir().join(format!("bastion-e2e-access-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join(name);
    let _ = std::fs::remove_file(&key);
    let _ = std::fs::remove_file(key.with_extension("pub"));
    run_ok(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
            .arg(&key),
    );
    User {
        name: name.split('#').next().unwrap().to_owned(),
        key,
    }
}

fn public(u: &User) -> String {
    std::fs::read_to_string(u.key.with_extension("pub"))
        .unwrap()
        .trim()
        .to_owned()
}

/// The access file: `clusters` and `users` are TOML blocks.
fn access_text(clusters: &[&str], users: &[String]) -> String {
    let mut text = format!(
        r#"[host]
group = "{GROUP}"

[aws]
account_id = "123456789012"
bastion_role = "arn:aws:iam::123456789012:role/bastion-host"

[[groups]]
name = "ops"
levels = [{{ cluster = "hyades", level = "poweruser" }}, {{ cluster = "pleiades", level = "poweruser" }}]
"#
    );
    for cluster in clusters {
        text.push_str(&format!(
            r#"
[[clusters]]
name = "{cluster}"
server = "https://{cluster}.bastion-e2e.invalid"
certificate_authority_data = "{CA}"
region = "eu-west-1"
eks_name = "{cluster}-eks"
"#
        ));
    }
    for user in users {
        text.push('\n');
        text.push_str(user);
    }
    text
}

fn user_block(u: &User, extra: &str) -> String {
    format!(
        "[[users]]\nname = \"{}\"\nkeys = [\"{}\"]\n{extra}\n",
        u.name,
        public(u)
    )
}

/// Writes the access file (root-owned, 0644) and returns its path.
fn write_access(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("access.toml");
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    path
}

fn access(path: &Path, command: &str) -> Output {
    Command::new("/usr/local/bin/bastionctl")
        .args(["access", "--access", path.to_str().unwrap(), command])
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn apply(path: &Path) -> String {
    let out = access(path, "apply");
    assert!(out.status.success(), "apply failed: {}", text(&out));
    text(&out)
}

fn plan_code(path: &Path) -> (i32, String) {
    let out = access(path, "plan");
    (out.status.code().unwrap_or(-1), text(&out))
}

/// Starts over as on a fresh host: none of the test's accounts, keys,
/// containers, kubeconfigs, nor the group's applied state.
fn fresh(users: &[&User]) {
    for u in users {
        remove_container(u);
        let _ = Command::new("pkill")
            .args(["-KILL", "-u", &u.name])
            .status();
        let _ = Command::new("userdel").arg(&u.name).output();
        let _ = std::fs::remove_file(Path::new("/etc/bastion/authorized_keys").join(&u.name));
        let _ = std::fs::remove_dir_all(
            Path::new("/var/lib/bastion/homes")
                .join(&u.name)
                .join(".kube"),
        );
    }
    let _ = std::fs::remove_file(format!("/var/lib/bastion/access/{GROUP}.json"));
}

fn ssh_lines(u: &User, remote: &str) -> Vec<String> {
    let out = ssh_run(u, remote);
    assert!(out.status.success(), "{remote}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn events_since(count: usize) -> Vec<serde_json::Value> {
    audit_events().into_iter().skip(count).collect()
}

#[test]
fn an_access_file_makes_users_their_clusters_and_locks_them_at_once() {
    require_bastion();
    let ann = key("bt-acc-ann");
    let ben = key("bt-acc-ben");
    let cat = key("bt-acc-cat");
    fresh(&[&ann, &ben, &cat]);
    let dir = tempfile::tempdir().unwrap();
    let users = vec![
        user_block(
            &ann,
            "levels = [{ cluster = \"hyades\", level = \"admin\" }]",
        ),
        user_block(
            &ben,
            "levels = [{ cluster = \"pleiades\", namespace = \"web\", level = \"user\" }]",
        ),
        user_block(&cat, "groups = [\"ops\"]"),
    ];
    let path = write_access(dir.path(), &access_text(&["hyades", "pleiades"], &users));
    let before = audit_events().len();

    // apply creates exactly them, and afterwards nothing is pending.
    apply(&path);
    let (code, shown) = plan_code(&path);
    assert_eq!(code, 0, "{shown}");
    assert!(shown.contains("No changes"), "{shown}");
    let members =
        String::from_utf8_lossy(&run_ok(Command::new("getent").args(["group", GROUP])).stdout)
            .trim()
            .rsplit(':')
            .next()
            .unwrap()
            .to_owned();
    let mut members: Vec<&str> = members.split(',').collect();
    members.sort();
    assert_eq!(members, ["bt-acc-ann", "bt-acc-ben", "bt-acc-cat"]);
    let passwd = String::from_utf8_lossy(
        &run_ok(Command::new("getent").args(["passwd", "bt-acc-ann"])).stdout,
    )
    .into_owned();
    assert!(
        passwd.trim_end().ends_with(":/usr/local/bin/bastion-shell"),
        "{passwd}"
    );
    let keys = std::fs::metadata("/etc/bastion/authorized_keys/bt-acc-ann").unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&keys), 0);

    // No other account can hold apply's lock (and so keep every apply
    // waiting, a locked user in).
    let held = Command::new("runuser")
        .args([
            "-u",
            "nobody",
            "--",
            "flock",
            "-s",
            "-n",
            "/run/bastion/access.lock",
            "true",
        ])
        .output()
        .unwrap();
    assert!(!held.status.success(), "nobody could take the access lock");

    // Each sees exactly their clusters.
    assert_eq!(ssh_lines(&ann, "kubectx"), ["hyades"]);
    assert_eq!(ssh_lines(&ben, "kubectx"), ["pleiades"]);
    assert_eq!(ssh_lines(&cat, "kubectx"), ["hyades", "pleiades"]);
    // ben may only use one namespace: his context starts there.
    assert_eq!(
        ssh_lines(
            &ben,
            "kubectl config view --minify -o jsonpath='{..namespace}'"
        ),
        ["web"]
    );

    // Switches persist across logins: kubectx, and what kubens writes
    // (kubens itself first asks the cluster for its namespaces; no API
    // server can run here).
    ssh_lines(
        &cat,
        "kubectx pleiades >/dev/null && kubectl config set-context --current --namespace=taurus >/dev/null",
    );
    ssh_lines(
        &cat,
        "kubectl config set-cluster mine --server=https://mine.invalid >/dev/null",
    );
    assert_eq!(
        ssh_lines(&cat, "kubectl config current-context"),
        ["pleiades"]
    );
    assert_eq!(
        ssh_lines(
            &cat,
            "kubectl config view --minify -o jsonpath='{..namespace}'"
        ),
        ["taurus"]
    );

    // The exec plugin of ann's kubeconfig yields a token STS resolves to
    // her role and her session name.
    let args = ssh_lines(
        &ann,
        "kubectl config view --minify --raw -o jsonpath='{.users[0].user.exec.command} {.users[0].user.exec.args}'",
    );
    let (command, args) = args[0].split_once(' ').unwrap();
    let args: Vec<String> = serde_json::from_str(args).unwrap();
    assert_eq!(command, "aws");
    assert_eq!(
        args,
        [
            "--region",
            "eu-west-1",
            "eks",
            "get-token",
            "--cluster-name",
            "hyades-eks",
            "--output",
            "json"
        ]
    );
    let credential: serde_json::Value =
        serde_json::from_str(&ssh_lines(&ann, &format!("{command} {}", args.join(" "))).join("\n"))
            .unwrap();
    let token = credential["status"]["token"].as_str().unwrap().to_owned();
    let identity = sts_identity_of_token(&token);
    assert!(
        identity.contains("assumed-role/bastion-bt-acc-ann/bt-acc-ann"),
        "the token's identity: {identity}"
    );

    // ben is removed (and pleiades with him) while his session is live.
    let mut live = live_marked_session(&ben, "bt-acc-ben-live");
    let ann_new = key("bt-acc-ann#new");
    let users = vec![
        user_block(
            &ann_new,
            "levels = [{ cluster = \"hyades\", level = \"admin\" }]",
        ),
        user_block(&cat, "groups = [\"ops\"]"),
    ];
    let path = write_access(
        dir.path(),
        &access_text(&["hyades"], &users)
            .replace(", { cluster = \"pleiades\", level = \"poweruser\" }", ""),
    );
    let (code, shown) = plan_code(&path);
    assert_eq!(code, 2, "{shown}");
    assert!(shown.contains("- user bt-acc-ben: lock now"), "{shown}");
    assert!(shown.contains("~ keys of bt-acc-ann"), "{shown}");
    apply(&path);
    assert!(
        eventually(Duration::from_secs(10), || live
            .try_wait()
            .unwrap()
            .is_some()),
        "ben's live session did not end"
    );
    let _ = live.kill();
    let refused = ssh_run(&ben, "true");
    assert!(!refused.status.success(), "ben could still log in");
    // Not even from a host shell of his (root lends him one here): bastiond
    // itself refuses a locked user.
    let direct = Command::new("runuser")
        .args([
            "-u",
            "bt-acc-ben",
            "--",
            "/usr/local/bin/bastion-shell",
            "-c",
            "true",
        ])
        .output()
        .unwrap();
    assert!(!direct.status.success(), "{}", text(&direct));
    assert!(
        text(&direct).contains("your access to this bastion has been removed"),
        "{}",
        text(&direct)
    );
    // ann's old key is refused, her new one works.
    let old = ssh_run(&ann, "true");
    assert!(!old.status.success(), "ann's old key still works");
    assert_eq!(ssh_lines(&ann_new, "kubectx"), ["hyades"]);
    // pleiades is gone for cat, and so is the current-context naming it;
    // her own cluster stays.
    assert_eq!(ssh_lines(&cat, "kubectx"), ["hyades"]);
    assert_eq!(
        ssh_lines(&cat, "kubectl config current-context"),
        ["hyades"]
    );
    assert!(ssh_lines(&cat, "kubectl config get-clusters").contains(&"mine".to_owned()));
    let (code, shown) = plan_code(&path);
    assert_eq!(code, 0, "{shown}");

    // The bastion's main access file (group bastion-users, which every
    // file's users are also in) leaves this file's users alone.
    let main = Command::new("/usr/local/bin/bastionctl")
        .args(["access", "plan"])
        .output()
        .unwrap();
    assert!(!text(&main).contains("bt-acc-"), "{}", text(&main));

    // An empty (or truncated, or wrong) file would lock everyone: apply
    // refuses and changes nothing.
    let empty = write_access(dir.path(), &format!("[host]\ngroup = \"{GROUP}\"\n"));
    let out = access(&empty, "apply");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("would lock 2 of the 3 users"),
        "{}",
        text(&out)
    );
    assert_eq!(ssh_lines(&cat, "kubectx"), ["hyades"]);

    // A file another account could have swapped (its folder writable by
    // others) is not applied.
    let open_dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(open_dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let swapped = write_access(open_dir.path(), &std::fs::read_to_string(&path).unwrap());
    let out = access(&swapped, "plan");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("is writable by others than root"),
        "{}",
        text(&out)
    );

    // Every change is in the audit trail, and the trail verifies.
    let events = events_since(before);
    let of = |name: &str, user: &str| {
        events
            .iter()
            .any(|e| e["event"] == name && e["user"] == user)
    };
    for user in ["bt-acc-ann", "bt-acc-ben", "bt-acc-cat"] {
        assert!(of("access.user.added", user), "{user} added");
    }
    assert!(of("access.user.locked", "bt-acc-ben"));
    assert!(of("access.user.keys_changed", "bt-acc-ann"));
    assert!(
        events
            .iter()
            .filter(|e| e["event"] == "access.applied")
            .count()
            >= 2
    );
    run_ok(Command::new("/usr/local/bin/bastionctl").args(["audit", "verify"]));
}

/// The identity STS gives the presigned GetCallerIdentity request inside an
/// EKS token (what EKS itself does with it), asked of the demo's STS server.
fn sts_identity_of_token(token: &str) -> String {
    use base64::Engine as _;
    let url = token
        .strip_prefix("k8s-aws-v1.")
        .unwrap_or_else(|| panic!("not an EKS token: {token}"));
    let url = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(url.trim_end_matches('='))
        .unwrap();
    let url = String::from_utf8(url).unwrap();
    let (endpoint, query) = url.split_once('?').unwrap();
    let host = endpoint
        .trim_start_matches("https://")
        .trim_end_matches('/');
    assert_eq!(host, "sts.eu-west-1.amazonaws.com", "{url}");
    // Sent as EKS sends it, to the STS server standing in for AWS (its
    // address on the bridge serves exactly this request).
    let out = run_ok(Command::new("curl").args([
        "-sS",
        "-H",
        "x-k8s-aws-id: hyades-eks",
        &format!("http://{}:5000/?{query}", bridge_gateway()),
    ]));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn access_iam(path: &Path, command: &str) -> Output {
    Command::new("/usr/local/bin/bastionctl")
        .args(["access", "--access", path.to_str().unwrap(), command])
        .args(["--iam", "--iam-endpoint", "http://127.0.0.1:5000"])
        // The demo's STS server is all of moto on loopback: its IAM too.
        .env("AWS_ACCESS_KEY_ID", "bastion-e2e")
        .env("AWS_SECRET_ACCESS_KEY", "bastion-e2e")
        .output()
        .unwrap()
}

fn moto_role(name: &str) -> serde_json::Value {
    let out = run_ok(
        Command::new("aws")
            .args([
                "--endpoint-url",
                "http://127.0.0.1:5000",
                "--region",
                "us-east-1",
            ])
            .args(["iam", "get-role", "--role-name", name, "--output", "json"])
            .env("AWS_ACCESS_KEY_ID", "bastion-e2e")
            .env("AWS_SECRET_ACCESS_KEY", "bastion-e2e"),
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn apply_iam_creates_and_updates_the_users_roles_through_the_iam_api() {
    require_bastion();
    let dan = key("bt-iam-dan");
    fresh(&[&dan]);
    // Roles of this run only (moto keeps its state across runs).
    let prefix = format!("bt{}", std::process::id());
    let file = |bastion_role: &str| {
        format!(
            "[host]\ngroup = \"bt-iam\"\n[aws]\naccount_id = \"123456789012\"\n\
             role_template = \"arn:aws:iam::123456789012:role/{prefix}-{{user}}\"\n\
             bastion_role = \"arn:aws:iam::123456789012:role/{bastion_role}\"\n\n{}",
            user_block(&dan, "")
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let role = format!("{prefix}-bt-iam-dan");
    let before = audit_events().len();

    let path = write_access(dir.path(), &file("bastion-host"));
    let out = access_iam(&path, "plan");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("+ IAM role arn:aws:iam::123456789012:role/{role}")),
        "{}",
        text(&out)
    );
    let out = access_iam(&path, "apply");
    assert!(out.status.success(), "{}", text(&out));
    let got = moto_role(&role);
    let trust = &got["Role"]["AssumeRolePolicyDocument"];
    assert_eq!(
        trust["Statement"][0]["Principal"]["AWS"], "arn:aws:iam::123456789012:role/bastion-host",
        "{got}"
    );
    assert_eq!(
        trust["Statement"][0]["Condition"]["StringEquals"]["sts:SourceIdentity"],
        "bt-iam-dan"
    );
    assert_eq!(got["Role"]["MaxSessionDuration"], 3600);
    let out = access_iam(&path, "plan");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("IAM: every user's role matches"),
        "{}",
        text(&out)
    );

    // The bastion's role changes: the trust policy follows.
    let path = write_access(dir.path(), &file("bastion-host-2"));
    let out = access_iam(&path, "apply");
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("trust policy replaced"),
        "{}",
        text(&out)
    );
    assert_eq!(
        moto_role(&role)["Role"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"]["AWS"],
        "arn:aws:iam::123456789012:role/bastion-host-2"
    );
    let out = access_iam(&path, "plan");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let events = events_since(before);
    for name in ["access.role.created", "access.role.trust_updated"] {
        assert!(
            events
                .iter()
                .any(|e| e["event"] == name && e["user"] == "bt-iam-dan"),
            "no {name}"
        );
    }
}
