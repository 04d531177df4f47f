//! Every rule the access file must follow, each reported at its key (and
//! so its line) by `bastionctl access check`, before anything is changed.

use std::collections::HashMap;

use super::grants::UserRoleError;
use super::ssh_keys::check_key;
use super::{AccessFile, Cluster, ClusterAuth, Grant, User};
use crate::config::problems::{Checks, KeyPath};
use crate::config::{Config, PartialLimits};

/// Accounts that exist on every Debian/Ubuntu host: never bastion users
/// (apply also refuses any existing account outside `bastion-users`).
const RESERVED_USERS: &[&str] = &[
    "root",
    "daemon",
    "bin",
    "sys",
    "sync",
    "games",
    "man",
    "lp",
    "mail",
    "news",
    "uucp",
    "proxy",
    "www-data",
    "backup",
    "list",
    "irc",
    "gnats",
    "nobody",
    "_apt",
    "sshd",
    "messagebus",
    "systemd-network",
    "systemd-resolve",
    "systemd-timesync",
];

/// Host groups that give their members power over the host (root by
/// another name, the Docker socket, disks, logs, the kernel): an access
/// file group may not be one of them (plan also refuses any other
/// existing system group that is not bastion's own).
const PRIVILEGED_GROUPS: &[&str] = &[
    "root",
    "sudo",
    "wheel",
    "admin",
    "adm",
    "staff",
    "docker",
    "lxd",
    "kvm",
    "libvirt",
    "disk",
    "shadow",
    "kmem",
    "tty",
    "utmp",
    "input",
    "systemd-journal",
    "sys",
    "bin",
    "daemon",
    "operator",
    "lpadmin",
    "netdev",
    "plugdev",
    "sambashare",
    "nogroup",
    "users",
    "bastion-users",
];

pub(super) fn check(file: &AccessFile, config: &Config, checks: &mut Checks) {
    let root = KeyPath::root();
    if !is_linux_name(&file.host.group) {
        checks.bad(
            root.key("host").key("group"),
            "must be a Linux group name (1-32 of a-z 0-9 _ -)",
        );
    } else if file.host.group != super::LOGIN_GROUP
        && PRIVILEGED_GROUPS.contains(&file.host.group.as_str())
    {
        checks.bad(
            root.key("host").key("group"),
            "is a host group that grants privileges on the bastion host itself; its members would be bastion users: choose a group of the bastion's own",
        );
    }
    check_aws(file, &root.key("aws"), checks);
    unique_names(
        file.clusters.iter().map(|c| c.name.as_str()),
        &root.key("clusters"),
        "cluster",
        checks,
    );
    for (i, cluster) in file.clusters.iter().enumerate() {
        check_cluster(cluster, &root.key("clusters").index(i), checks);
    }
    unique_names(
        file.groups.iter().map(|g| g.name.as_str()),
        &root.key("groups"),
        "group",
        checks,
    );
    for (i, group) in file.groups.iter().enumerate() {
        let at = root.key("groups").index(i);
        if !is_linux_name(&group.name) {
            checks.bad(
                at.key("name"),
                "must be a Linux group name: 1-32 of a-z 0-9 _ - starting with a letter or _ (members join it on the host)",
            );
        } else if PRIVILEGED_GROUPS.contains(&group.name.as_str()) {
            checks.bad(
                at.key("name"),
                "is a host group that grants privileges on the bastion host itself; bastion users never join it",
            );
        }
        check_grants(&group.levels, file, &at.key("levels"), checks);
    }
    unique_names(
        file.users.iter().map(|u| u.name.as_str()),
        &root.key("users"),
        "user",
        checks,
    );
    let mut key_owner: HashMap<String, (&str, KeyPath)> = HashMap::new();
    for (i, user) in file.users.iter().enumerate() {
        let at = root.key("users").index(i);
        check_user(file, user, &at, checks);
        for (k, text) in user.keys.iter().enumerate() {
            let key_at = at.key("keys").index(k);
            match check_key(text) {
                Ok(key) => {
                    if let Some((other, other_at)) = key_owner.get(&key.fingerprint) {
                        checks.bad(
                            key_at,
                            format!(
                                "is the same key as {other_at} (user {other}): one key, one person"
                            ),
                        );
                    } else {
                        key_owner.insert(key.fingerprint, (&user.name, key_at));
                    }
                }
                Err(e) => checks.bad(key_at, e.to_string()),
            }
        }
        check_against_config(user, config, &at, checks);
    }
}

fn check_aws(file: &AccessFile, at: &KeyPath, checks: &mut Checks) {
    let aws = &file.aws;
    if let Some(account) = &aws.account_id
        && !(account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit()))
    {
        checks.bad(at.key("account_id"), "must be a 12-digit AWS account id");
    }
    if !["aws", "aws-cn", "aws-us-gov", "aws-iso", "aws-iso-b"].contains(&aws.partition.as_str()) {
        checks.bad(
            at.key("partition"),
            "must be an AWS partition (aws, aws-cn, aws-us-gov, aws-iso, aws-iso-b)",
        );
    }
    if !aws.role_template.contains("{user}") {
        checks.bad(
            at.key("role_template"),
            "must contain {user}: every user needs a role of their own",
        );
    } else if aws.role_template.contains("{account}")
        && aws.account_id.is_none()
        && file.enabled_users().any(|u| u.role.is_none())
    {
        checks.bad(
            at.key("account_id"),
            "must be set: role_template uses {account} (or give every user a role ARN)",
        );
    }
    if let Some(role) = &aws.bastion_role
        && let Err(e) = crate::iam_role::parse_arn(role)
    {
        checks.bad(at.key("bastion_role"), e.to_string());
    }
}

fn check_cluster(cluster: &Cluster, at: &KeyPath, checks: &mut Checks) {
    if !is_dns_label(&cluster.name, 40) {
        checks.bad(
            at.key("name"),
            "must be 1-40 of a-z 0-9 - starting and ending with a letter or digit (it names Kubernetes groups and a folder)",
        );
    }
    let server_ok = match cluster.server.parse::<http::Uri>() {
        Ok(uri) => {
            let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
            uri.scheme_str() == Some("https")
                && uri.host().is_some_and(|h| !h.is_empty())
                && !authority.contains('@')
                && (uri.port().is_none() || uri.port_u16().is_some())
        }
        Err(_) => false,
    };
    if !server_ok || cluster.server.chars().any(char::is_control) {
        checks.bad(
            at.key("server"),
            "must be the API server's https:// URL (host and optional port, no user or password)",
        );
    }
    match (&cluster.certificate_authority_data, &cluster.certificate_authority) {
        (Some(_), Some(_)) => checks.bad(
            at.key("certificate_authority"),
            "set certificate_authority_data or certificate_authority, not both",
        ),
        (None, None) => checks.bad(
            at.key("server"),
            "needs the API server's CA: certificate_authority_data (base64 PEM) or certificate_authority (a file)",
        ),
        (Some(data), None) => {
            use base64::Engine as _;
            let pem = base64::engine::general_purpose::STANDARD.decode(data.trim());
            if !pem.is_ok_and(|pem| pem.starts_with(b"-----BEGIN CERTIFICATE-----")) {
                checks.bad(
                    at.key("certificate_authority_data"),
                    "must be a base64-encoded PEM certificate (as in a kubeconfig)",
                );
            }
        }
        (None, Some(path)) => {
            if !path.is_absolute() {
                checks.bad(at.key("certificate_authority"), "must be an absolute path");
            }
        }
    }
    let region_ok = {
        let parts: Vec<&str> = cluster.region.split('-').collect();
        parts.len() >= 3
            && parts.iter().all(|p| !p.is_empty())
            && parts[..parts.len() - 1]
                .iter()
                .all(|p| p.bytes().all(|b| b.is_ascii_lowercase()))
            && parts[parts.len() - 1].bytes().all(|b| b.is_ascii_digit())
    };
    if !region_ok {
        checks.bad(at.key("region"), "must be an AWS region such as eu-west-1");
    }
    if let Some(name) = &cluster.eks_name {
        let ok = (1..=100).contains(&name.len())
            && name.as_bytes()[0].is_ascii_alphanumeric()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            checks.bad(
                at.key("eks_name"),
                "must be an EKS cluster name (1-100 of A-Z a-z 0-9 - _, starting with a letter or digit)",
            );
        }
    }
    if let Some(ns) = &cluster.namespace
        && !is_dns_label(ns, 63)
    {
        checks.bad(at.key("namespace"), NAMESPACE_RULE);
    }
    if cluster.auth == ClusterAuth::AwsAuth && cluster.node_roles.is_empty() {
        checks.bad(
            at.key("node_roles"),
            "must list the nodes' role ARNs: the rendered aws-auth ConfigMap replaces the cluster's, and nodes missing from it are cut off",
        );
    }
    for (i, arn) in cluster.node_roles.iter().enumerate() {
        if let Err(e) = crate::iam_role::parse_arn(arn) {
            checks.bad(at.key("node_roles").index(i), e.to_string());
        }
    }
    for (i, group) in cluster.extra_api_groups.iter().enumerate() {
        let ok = group.len() <= 253
            && group.contains('.')
            && group.split('.').all(|label| is_dns_label(label, 63));
        if !ok || group.ends_with("rbac.authorization.k8s.io") {
            checks.bad(
                at.key("extra_api_groups").index(i),
                "must be a custom resource's API group (e.g. monitoring.coreos.com), not rbac.authorization.k8s.io",
            );
        }
    }
}

const NAMESPACE_RULE: &str = "must be a Kubernetes namespace name (1-63 of a-z 0-9 -, starting and ending with a letter or digit)";

fn check_grants(grants: &[Grant], file: &AccessFile, at: &KeyPath, checks: &mut Checks) {
    for (i, grant) in grants.iter().enumerate() {
        let at = at.index(i);
        if file.cluster(&grant.cluster).is_none() {
            checks.bad(
                at.key("cluster"),
                format!(
                    "names no cluster of this file (clusters: {})",
                    list(file.clusters.iter().map(|c| c.name.as_str()))
                ),
            );
        }
        if let Some(ns) = &grant.namespace
            && !is_dns_label(ns, 63)
        {
            checks.bad(at.key("namespace"), NAMESPACE_RULE);
        }
    }
}

fn check_user(file: &AccessFile, user: &User, at: &KeyPath, checks: &mut Checks) {
    if !is_linux_name(&user.name) {
        checks.bad(
            at.key("name"),
            "must be a Linux user name: 1-32 of a-z 0-9 _ - starting with a letter or _",
        );
    } else if RESERVED_USERS.contains(&user.name.as_str()) {
        checks.bad(
            at.key("name"),
            "is a system account and can never be a bastion user",
        );
    }
    if !user.disabled && user.keys.is_empty() {
        checks.bad(
            at.key("keys"),
            "must list at least one SSH public key (or set disabled = true)",
        );
    }
    for (i, group) in user.groups.iter().enumerate() {
        if !file.groups.iter().any(|g| &g.name == group) {
            checks.bad(
                at.key("groups").index(i),
                format!(
                    "names no group of this file (groups: {})",
                    list(file.groups.iter().map(|g| g.name.as_str()))
                ),
            );
        }
    }
    check_grants(&user.levels, file, &at.key("levels"), checks);
    match file.aws.role_of(user) {
        // Reported once, at aws.account_id; a locked user needs no role.
        Err(UserRoleError::NoAccount) if user.role.is_none() || user.disabled => {}
        Err(e) => {
            let key = if user.role.is_some() {
                at.key("role")
            } else {
                KeyPath::root().key("aws").key("role_template")
            };
            checks.bad(key, format!("gives {} no role STS accepts: {e}", user.name));
        }
        Ok(_) => {}
    }
    if user.image.as_deref().is_some_and(|i| i.trim().is_empty()) {
        checks.bad(at.key("image"), "must name an image");
    }
    if let Some(limits) = &user.limits {
        limits.check(&at.key("limits"), checks);
    }
}

/// The access file and `bastion.toml`'s `[bastiond.users.NAME]` must not
/// both set a user's image, role or a limit to different values.
fn check_against_config(user: &User, config: &Config, at: &KeyPath, checks: &mut Checks) {
    let Some(other) = config.bastiond.users.get(&user.name) else {
        return;
    };
    let conflict = |what: &str| {
        format!(
            "differs from [bastiond.users.{}] {what} in bastion.toml: set it in one file only (the access file wins, but the two must not disagree)",
            user.name
        )
    };
    if let (Some(a), Some(b)) = (&user.image, &other.image)
        && a != b
    {
        checks.bad(at.key("image"), conflict("image"));
    }
    if let (Some(a), Some(b)) = (&user.role, &other.role)
        && a != b
    {
        checks.bad(at.key("role"), conflict("role"));
    }
    if let (Some(a), Some(b)) = (&user.limits, &other.limits) {
        for (name, differs) in limit_differences(a, b) {
            if differs {
                checks.bad(
                    at.key("limits").key(name),
                    conflict(&format!("limits.{name}")),
                );
            }
        }
    }
}

fn limit_differences(a: &PartialLimits, b: &PartialLimits) -> [(&'static str, bool); 6] {
    fn differ<T: PartialEq>(a: &Option<T>, b: &Option<T>) -> bool {
        matches!((a, b), (Some(a), Some(b)) if a != b)
    }
    [
        ("pids", differ(&a.pids, &b.pids)),
        ("memory", differ(&a.memory, &b.memory)),
        ("cpus", differ(&a.cpus, &b.cpus)),
        ("home", differ(&a.home, &b.home)),
        ("tmp", differ(&a.tmp, &b.tmp)),
        ("recordings", differ(&a.recordings, &b.recordings)),
    ]
}

/// Reports every name used twice, at its second use.
fn unique_names<'a>(
    names: impl Iterator<Item = &'a str>,
    at: &KeyPath,
    what: &str,
    checks: &mut Checks,
) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, name) in names.enumerate() {
        if let Some(first) = seen.get(name) {
            checks.bad(
                at.index(i).key("name"),
                format!("{what} {name} is already defined at {at}[{first}]"),
            );
        } else {
            seen.insert(name, i);
        }
    }
}

/// The portable user name set, as useradd accepts it on Debian.
pub fn is_linux_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (1..=32).contains(&bytes.len())
        && (bytes[0].is_ascii_lowercase() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// An RFC 1123 label (Kubernetes namespace names).
fn is_dns_label(name: &str, max: usize) -> bool {
    let bytes = name.as_bytes();
    (1..=max).contains(&bytes.len())
        && bytes
            .iter()
            .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

fn list<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let names: Vec<&str> = names.collect();
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::test_keys::{ALICE, BOB};
    use crate::access::{AccessFile, ParseError};

    fn problems(text: &str, config: &Config) -> Vec<(String, usize, String)> {
        match AccessFile::parse(text, config) {
            Err(ParseError::Invalid(problems)) => problems
                .iter()
                .map(|p| {
                    (
                        p.key.clone().unwrap_or_default(),
                        p.line.unwrap_or(0),
                        p.message.clone(),
                    )
                })
                .collect(),
            other => panic!("expected problems, got {other:?}"),
        }
    }

    const CA: &str = "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg==";

    #[test]
    fn each_kind_of_mistake_is_named_at_its_key_and_line() {
        let text = format!(
            r#"[aws]
account_id = "123456789012"
[[clusters]]
name = "hyades"
server = "https://hyades.example"
certificate_authority_data = "{CA}"
region = "eu-west-1"
[[groups]]
name = "sre"
levels = [{{ cluster = "hyades", level = "poweruser" }}, {{ cluster = "orion", level = "admin" }}]
[[users]]
name = "alice"
keys = ["{ALICE}"]
groups = ["sre", "nope"]
[[users]]
name = "alice"
keys = ["{BOB}"]
[[users]]
name = "Bob"
keys = ["ssh-ed25519 AAAAnotakey bob"]
role = "no spaces allowed"
[[users]]
name = "carol"
keys = ["{ALICE}"]
levels = [{{ cluster = "hyades", namespace = "Taurus", level = "user" }}]
colour = "blue"
"#
        );
        let found = problems(&text, &Config::default());
        let at: Vec<(&str, usize)> = found.iter().map(|(k, l, _)| (k.as_str(), *l)).collect();
        assert_eq!(
            at,
            [
                ("groups[0].levels[1].cluster", 10),
                ("users[0].groups[1]", 14),
                ("users[1].name", 16),
                ("users[2].name", 19),
                ("users[2].keys[0]", 20),
                ("users[2].role", 21),
                ("users[3].keys[0]", 24),
                ("users[3].levels[0].namespace", 25),
                ("users[3].colour", 26),
            ],
            "{found:#?}"
        );
        let message = |key: &str| &found.iter().find(|(k, _, _)| k == key).unwrap().2;
        assert!(message("users[1].name").contains("already defined at users[0]"));
        assert!(message("users[3].keys[0]").contains("same key as users[0].keys[0]"));
        assert!(message("users[3].colour").contains("unknown field"));
        assert!(message("users[2].role").contains("STS"));
    }

    #[test]
    fn a_level_that_is_not_one_of_the_three_is_named() {
        let text = format!(
            r#"[aws]
account_id = "123456789012"
[[clusters]]
name = "hyades"
server = "https://hyades.example"
certificate_authority_data = "{CA}"
region = "eu-west-1"
[[users]]
name = "alice"
keys = ["{ALICE}"]
levels = [
  {{ cluster = "hyades", level = "root" }},
]
"#
        );
        let found = problems(&text, &Config::default());
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(
            (found[0].0.as_str(), found[0].1),
            ("users[0].levels[0].level", 12)
        );
        assert!(
            found[0].2.contains("`user`, `poweruser`, `admin`"),
            "{}",
            found[0].2
        );
    }

    #[test]
    fn hostile_names_are_refused() {
        for (name, why) in [
            ("root", "system account"),
            ("nobody", "system account"),
            ("../x", "Linux user name"),
            ("a/b", "Linux user name"),
            ("", "Linux user name"),
            ("alice\nroot", "Linux user name"),
        ] {
            let text = format!("[[users]]\nname = {name:?}\nkeys = [\"{ALICE}\"]\n");
            let found = problems(&text, &Config::default());
            assert!(
                found
                    .iter()
                    .any(|(k, l, m)| k == "users[0].name" && *l == 2 && m.contains(why)),
                "{name:?}: {found:?}"
            );
        }
    }

    #[test]
    fn the_managed_group_is_never_a_privileged_host_group() {
        for group in [
            "sudo",
            "docker",
            "shadow",
            "systemd-journal",
            "nogroup",
            "root",
        ] {
            let found = problems(
                &format!("[host]\ngroup = \"{group}\"\n"),
                &Config::default(),
            );
            assert_eq!(found.len(), 1, "{group}: {found:?}");
            assert_eq!(
                (found[0].0.as_str(), found[0].1),
                ("host.group", 2),
                "{group}"
            );
        }
        let ok = "[host]\ngroup = \"team-bastion\"\n";
        AccessFile::parse(ok, &Config::default()).unwrap();
    }

    #[test]
    fn a_huge_file_is_refused_before_parsing() {
        let mut text = String::new();
        for i in 0..100_000 {
            text.push_str(&format!(
                "# line {i} of a file nobody reviews................\n"
            ));
        }
        assert!(matches!(
            AccessFile::parse(&text, &Config::default()),
            Err(ParseError::TooLarge(_))
        ));
    }

    #[test]
    fn the_access_file_and_bastion_toml_may_not_disagree() {
        let config = Config::parse(
            "[bastiond.users.alice]\nimage = \"team/a:1\"\nlimits = { memory = \"4GiB\", pids = 100 }\n",
        )
        .unwrap();
        let text = format!(
            "[aws]\naccount_id = \"123456789012\"\n[[users]]\nname = \"alice\"\nkeys = [\"{ALICE}\"]\nimage = \"team/a:2\"\nlimits = {{ memory = \"8GiB\", pids = 100 }}\n"
        );
        let found = problems(&text, &config);
        let at: Vec<(&str, usize)> = found.iter().map(|(k, l, _)| (k.as_str(), *l)).collect();
        assert_eq!(
            at,
            [("users[0].image", 6), ("users[0].limits.memory", 7)],
            "{found:?}"
        );
        // The same values in both files are fine.
        let same = format!(
            "[aws]\naccount_id = \"123456789012\"\n[[users]]\nname = \"alice\"\nkeys = [\"{ALICE}\"]\nimage = \"team/a:1\"\n"
        );
        AccessFile::parse(&same, &config).unwrap();
    }

    #[test]
    fn clusters_are_checked() {
        let text = r#"[[clusters]]
name = "Hyades"
server = "http://hyades.example"
certificate_authority_data = "bm90IGEgY2VydA=="
region = "mars"
namespace = "-x"
[[clusters]]
name = "pleiades"
server = "https://pleiades.example"
region = "us-east-1"
auth = "aws-auth"
extra_api_groups = ["rbac.authorization.k8s.io"]
"#;
        let found = problems(text, &Config::default());
        let at: Vec<(&str, usize)> = found.iter().map(|(k, l, _)| (k.as_str(), *l)).collect();
        assert_eq!(
            at,
            [
                ("clusters[0].name", 2),
                ("clusters[0].server", 3),
                ("clusters[0].certificate_authority_data", 4),
                ("clusters[0].region", 5),
                ("clusters[0].namespace", 6),
                // Not in the file: the line of its cluster.
                ("clusters[1].node_roles", 7),
                ("clusters[1].server", 9),
                ("clusters[1].extra_api_groups[0]", 12),
            ],
            "{found:#?}"
        );
    }
}
