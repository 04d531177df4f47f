//! `bastionctl access check` and `render`, through the binary: the
//! example access file renders to the golden files, the manifests pass
//! `kubernetes-validate --strict` (no API server can run here), and the
//! levels' ClusterRoles grant what docs/access.md says and nothing more,
//! checked by evaluating their rules as RBAC does.
//!
//! After an intended change of the output: `BASTION_BLESS=1 cargo test -p
//! bastion --test access_render` rewrites the golden files; review the diff.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../provisioning/access.toml");
const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/access");
const KUBERNETES_VALIDATE: &str = "/opt/bastion/kubernetes-validate/bin/kubernetes-validate";

fn bastionctl(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_bastionctl"))
        .args(["--config", "/nonexistent/bastion.toml"])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn render(access: &Path, out: &Path) -> (i32, String) {
    bastionctl(&[
        "access",
        "--access",
        access.to_str().unwrap(),
        "render",
        "--out",
        out.to_str().unwrap(),
    ])
}

/// Every file under `dir`, relative path → content.
fn files(dir: &Path) -> BTreeMap<PathBuf, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let text = std::fs::read_to_string(&path).unwrap();
                out.insert(path.strip_prefix(root).unwrap().to_owned(), text);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn rendered_example() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let (code, text) = render(Path::new(EXAMPLE), dir.path());
    assert_eq!(code, 0, "{text}");
    dir
}

#[test]
fn the_example_renders_to_the_golden_files() {
    let dir = rendered_example();
    let rendered = files(dir.path());
    if std::env::var_os("BASTION_BLESS").is_some() {
        let _ = std::fs::remove_dir_all(GOLDEN);
        for (path, text) in &rendered {
            let to = Path::new(GOLDEN).join(path);
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::write(to, text).unwrap();
        }
    }
    let golden = files(Path::new(GOLDEN));
    assert_eq!(
        rendered.keys().collect::<Vec<_>>(),
        golden.keys().collect::<Vec<_>>(),
        "the rendered files differ from {GOLDEN} (BASTION_BLESS=1 rewrites it)"
    );
    for (path, text) in &rendered {
        assert_eq!(
            text,
            &golden[path],
            "{} differs from the golden file (BASTION_BLESS=1 rewrites it)",
            path.display()
        );
    }
    // Deterministic: a second render into the same folder changes nothing.
    let (code, text) = render(Path::new(EXAMPLE), dir.path());
    assert_eq!(code, 0, "{text}");
    assert_eq!(files(dir.path()), rendered);
}

#[test]
fn rendered_manifests_pass_kubernetes_validate_strict() {
    assert!(
        Path::new(KUBERNETES_VALIDATE).is_file(),
        "{KUBERNETES_VALIDATE} is missing: run provisioning/install.sh --test"
    );
    let dir = rendered_example();
    let manifests: Vec<PathBuf> = files(dir.path())
        .into_keys()
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| dir.path().join(p))
        .collect();
    assert_eq!(manifests.len(), 3, "{manifests:?}");
    // The oldest and the newest Kubernetes EKS supports as this is written.
    for version in ["1.29.0", "1.33.0"] {
        let out = Command::new(KUBERNETES_VALIDATE)
            .args(["--strict", "--no-warn", "-k", version])
            .args(&manifests)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "Kubernetes {version}: {text}");
        // 2 × 3 ClusterRoles, 4 bindings, aws-auth.
        assert_eq!(text.matches(" passed ").count(), 11, "{text}");
    }
}

/// A ClusterRole's rules, as RBAC evaluates them.
struct Rules(Vec<serde_yaml_ng::Value>);

impl Rules {
    fn of(rbac_yaml: &str, role: &str) -> Self {
        for doc in serde_yaml_ng::Deserializer::from_str(rbac_yaml) {
            let doc: serde_yaml_ng::Value = serde::Deserialize::deserialize(doc).unwrap();
            if doc["kind"] == "ClusterRole" && doc["metadata"]["name"] == role {
                return Self(doc["rules"].as_sequence().unwrap().clone());
            }
        }
        panic!("no ClusterRole {role}");
    }

    /// Whether some rule allows `verb` on `resource` of `group`.
    fn allow(&self, group: &str, resource: &str, verb: &str) -> bool {
        let has = |rule: &serde_yaml_ng::Value, field: &str, value: &str| {
            rule[field]
                .as_sequence()
                .is_some_and(|items| items.iter().any(|i| i == "*" || i == value))
        };
        self.0.iter().any(|rule| {
            has(rule, "apiGroups", group)
                && has(rule, "resources", resource)
                && has(rule, "verbs", verb)
        })
    }
}

/// Every verb Kubernetes knows, the special ones included.
const VERBS: &[&str] = &[
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
    "bind",
    "escalate",
    "impersonate",
    "approve",
    "sign",
    "use",
    "proxy",
];
const READ: &[&str] = &["get", "list", "watch"];

/// Resources across groups, the sensitive ones included.
const RESOURCES: &[(&str, &str)] = &[
    ("", "pods"),
    ("", "pods/exec"),
    ("", "pods/log"),
    ("", "pods/portforward"),
    ("", "secrets"),
    ("", "configmaps"),
    ("", "serviceaccounts"),
    ("", "serviceaccounts/token"),
    ("", "users"),
    ("", "groups"),
    ("", "nodes/proxy"),
    ("", "namespaces"),
    ("apps", "deployments"),
    ("apps", "deployments/scale"),
    ("batch", "jobs"),
    ("networking.k8s.io", "networkpolicies"),
    ("certificates.k8s.io", "certificatesigningrequests/approval"),
    ("certificates.k8s.io", "signers"),
    (
        "admissionregistration.k8s.io",
        "mutatingwebhookconfigurations",
    ),
    ("monitoring.coreos.com", "prometheuses"),
    ("rbac.authorization.k8s.io", "roles"),
    ("rbac.authorization.k8s.io", "clusterroles"),
    ("rbac.authorization.k8s.io", "rolebindings"),
    ("rbac.authorization.k8s.io", "clusterrolebindings"),
];

fn rbac_yaml() -> String {
    let dir = rendered_example();
    std::fs::read_to_string(dir.path().join("hyades/rbac.yaml")).unwrap()
}

#[test]
fn the_poweruser_level_grants_no_verb_on_roles_or_bindings_and_cannot_escalate() {
    let rules = Rules::of(&rbac_yaml(), "bastion:poweruser");
    for (group, resource) in RESOURCES {
        for verb in VERBS {
            let allowed = rules.allow(group, resource, verb);
            let expected = *group != "rbac.authorization.k8s.io"
                && ![
                    "bind",
                    "escalate",
                    "impersonate",
                    "approve",
                    "sign",
                    "use",
                    "proxy",
                ]
                .contains(verb);
            assert_eq!(allowed, expected, "poweruser {verb} {group}/{resource}");
        }
    }
}

#[test]
fn the_user_level_reads_without_secrets_and_writes_only_pods_exec() {
    let rules = Rules::of(&rbac_yaml(), "bastion:user");
    for (group, resource) in RESOURCES {
        for verb in VERBS {
            let allowed = rules.allow(group, resource, verb);
            let expected = match (*group, *resource) {
                ("", "pods/exec") => ["create", "get"].contains(verb),
                (
                    "",
                    "secrets"
                    | "users"
                    | "groups"
                    | "serviceaccounts/token"
                    | "nodes/proxy"
                    | "pods/portforward",
                ) => false,
                ("rbac.authorization.k8s.io", _) => false,
                _ => READ.contains(verb),
            };
            assert_eq!(allowed, expected, "user {verb} {group}/{resource}");
        }
    }
}

#[test]
fn the_admin_level_grants_everything() {
    let rules = Rules::of(&rbac_yaml(), "bastion:admin");
    for (group, resource) in RESOURCES {
        for verb in VERBS {
            assert!(
                rules.allow(group, resource, verb),
                "admin {verb} {group}/{resource}"
            );
        }
    }
}

fn write_access(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("access.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn check_exits_1_naming_file_line_and_key_and_render_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let example = std::fs::read_to_string(EXAMPLE).unwrap();
    let (code, text) = bastionctl(&["access", "--access", EXAMPLE, "check"]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("ok (4 users, 1 disabled; 1 groups; 2 clusters)"),
        "{text}"
    );

    let out = dir.path().join("rendered");
    let (code, text) = render(Path::new(EXAMPLE), &out);
    assert_eq!(code, 0, "{text}");
    let before = files(&out);

    // One line where alice's level is misspelt.
    let bad = example.replacen("level = \"admin\"", "level = \"admn\"", 1);
    let line = bad.lines().position(|l| l.contains("\"admn\"")).unwrap() + 1;
    let path = write_access(dir.path(), &bad);
    let (code, text) = bastionctl(&["access", "--access", path.to_str().unwrap(), "check"]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains(&format!(
            "{}: line {line}, key `users[0].levels[0].level`: unknown variant `admn`",
            path.display()
        )),
        "{text}"
    );
    let (code, text) = render(&path, &out);
    assert_eq!(code, 1, "{text}");
    assert_eq!(files(&out), before, "a failed render changed its output");
}

#[test]
fn hostile_files_get_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    for (text, expected) in [
        (
            "[[users]]\nname = \"root\"\nkeys = []\ndisabled = true\n".to_owned(),
            "line 2, key `users[0].name`: is a system account",
        ),
        (
            "[[users]]\nname = \"../x\"\ndisabled = true\n".to_owned(),
            "line 2, key `users[0].name`: must be a Linux user name",
        ),
        (
            "# padding\n".repeat(500_000),
            "more than an access file may hold",
        ),
    ] {
        let path = write_access(dir.path(), &text);
        let (code, out) = bastionctl(&["access", "--access", path.to_str().unwrap(), "check"]);
        assert_eq!(code, 1, "{out}");
        assert!(out.contains(expected), "{out}");
        assert_eq!(out.lines().count(), 1, "{out}");
    }
}

#[test]
fn render_refuses_a_folder_it_did_not_write_and_removes_what_it_no_longer_renders() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
    let (code, text) = render(Path::new(EXAMPLE), dir.path());
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("was not written by render"), "{text}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("notes.txt")).unwrap(),
        "mine"
    );

    let out = dir.path().join("out");
    let (code, text) = render(Path::new(EXAMPLE), &out);
    assert_eq!(code, 0, "{text}");
    std::fs::write(out.join("README.md"), "kept").unwrap();
    // pleiades leaves the file (and carol's level on it with it).
    let example = std::fs::read_to_string(EXAMPLE).unwrap();
    let start = example.find("[[clusters]]\nname = \"pleiades\"").unwrap();
    let end = example.find("# Groups:").unwrap();
    let without = format!("{}{}", &example[..start], &example[end..]).replace(
        "    { cluster = \"pleiades\", level = \"poweruser\" },\n",
        "",
    );
    let path = write_access(dir.path(), &without);
    let (code, text) = render(&path, &out);
    assert_eq!(code, 0, "{text}");
    assert!(!out.join("pleiades").exists());
    assert!(out.join("hyades/rbac.yaml").is_file());
    assert_eq!(
        std::fs::read_to_string(out.join("README.md")).unwrap(),
        "kept"
    );
}
