//! Each user's kubeconfig: `~/.kube/bastion/config` in their home, written
//! by bastiond at every login from the applied access state, and
//! `KUBECONFIG=~/.kube/config:~/.kube/bastion/config` in their container.
//!
//! - The file holds exactly the user's clusters: one context each, named
//!   after the cluster, authenticating with the exec credential plugin
//!   (`aws eks get-token`; the role is the container's, from the
//!   metadata proxy).
//! - It is the user's (their uid, 0600): `kubens` (a context's namespace)
//!   writes to it, and the next login keeps that choice while replacing
//!   the rest, so a cluster added to or removed from the access file
//!   appears or is gone.
//! - `~/.kube/config` comes first and is the user's own: kubectl adds new
//!   entries and `kubectx`'s current-context there (it is created empty if
//!   missing). Its entries win over the managed ones of the same name.
//!   bastion changes one line of it, once: a current-context naming a
//!   cluster the access file took away (kubectl would fail on it).
//!
//! bastiond is root and the home is the user's: every step goes through
//! directory file descriptors opened without following symlinks, files are
//! created exclusively and renamed into place, and a directory or file not
//! owned by the user is left alone (the login goes on without it).

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::{self as rfs, AtFlags, Mode, OFlags};

use super::applied::{AppliedCluster, AppliedUser};

/// The managed file's path inside the home.
pub const MANAGED: &str = ".kube/bastion/config";

/// `KUBECONFIG` of a user whose home is `home` in the container.
pub fn kubeconfig_env(home: &str) -> String {
    format!("{home}/.kube/config:{home}/{MANAGED}")
}

/// Largest previous file read back (a bigger one is replaced, its
/// choices forgotten).
const MAX_PREVIOUS: u64 = 256 << 10;

/// Why the kubeconfig was not written.
#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {
    #[error("cannot write {user}'s kubeconfig ({step}): {source}")]
    Io {
        user: String,
        step: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{user}'s {path} is not owned by them; their kubeconfig was left alone")]
    NotTheirs { user: String, path: &'static str },
}

/// What a user chose in a kubeconfig: its current-context, and each
/// context's name and namespace.
///
/// Read line by line from the block style kubectl (and this module)
/// writes, never with a YAML parser: the file is the user's, bastiond is
/// root, and a general parser can be made to spin on hostile input (a
/// flow-style file of nested brackets kept libyaml busy for minutes, and
/// the login with it). Anything else is not understood, and the user's
/// choices are then forgotten, never misread. Linear in the file's size.
#[derive(Debug, Default, PartialEq, Eq)]
struct Previous {
    current_context: Option<String>,
    /// (name, namespace) of each context.
    contexts: Vec<(String, Option<String>)>,
}

impl Previous {
    fn read(text: &str) -> Self {
        let mut found = Previous::default();
        let mut in_contexts = false;
        // The context item being read: its name and namespace.
        let mut item: Option<(Option<String>, Option<String>)> = None;
        let finish = |item: &mut Option<(Option<String>, Option<String>)>, found: &mut Previous| {
            if let Some((Some(name), ns)) = item.take() {
                found.contexts.push((name, ns));
            }
        };
        for line in text.lines() {
            if line.trim_start().starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let top_level = !line.starts_with(' ') && !line.starts_with('-');
            if top_level {
                finish(&mut item, &mut found);
                in_contexts = line.trim_end() == "contexts:";
                if let Some(value) = line.strip_prefix("current-context:") {
                    found.current_context = scalar(value);
                }
                continue;
            }
            if !in_contexts {
                continue;
            }
            let rest = match line.strip_prefix("- ") {
                Some(rest) => {
                    finish(&mut item, &mut found);
                    item = Some((None, None));
                    format!("  {rest}")
                }
                None => line.to_owned(),
            };
            let Some((name, namespace)) = item.as_mut() else {
                continue;
            };
            if let Some(value) = rest.strip_prefix("  name:") {
                *name = scalar(value);
            } else if let Some(value) = rest.strip_prefix("    namespace:") {
                *namespace = scalar(value);
            }
        }
        finish(&mut item, &mut found);
        found
    }
}

/// A plain or quoted scalar of printable ASCII without YAML syntax in it
/// (names and namespaces need no more); `None` otherwise.
fn scalar(value: &str) -> Option<String> {
    let value = value.trim();
    let value = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
        .unwrap_or(value);
    let ok = !value.is_empty()
        && value.len() <= 253
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.@:/".contains(&b));
    ok.then(|| value.to_owned())
}

/// The managed file for `user`, keeping the choices of `previous`.
pub fn render(user: &AppliedUser, previous: Option<&str>) -> String {
    let previous = previous.map(Previous::read).unwrap_or_default();
    let chosen_ns: BTreeMap<&str, &str> = previous
        .contexts
        .iter()
        .filter_map(|(name, ns)| Some((name.as_str(), ns.as_deref()?)))
        .filter(|(_, ns)| is_namespace(ns))
        .collect();
    // Kept when it still names one of these contexts, or one of the
    // user's own (not a managed one that is gone).
    let current = previous
        .current_context
        .filter(|name| {
            user.clusters.iter().any(|c| &c.name == name)
                || !previous.contexts.iter().any(|(n, _)| n == name)
        })
        .or_else(|| user.clusters.first().map(|c| c.name.clone()));
    // Written by hand, in the block style kubectl writes (and
    // `Previous::read` reads): every scalar a JSON string, which YAML reads
    // as a double-quoted scalar. No YAML library runs in root on this path.
    let q = |s: &str| serde_json::to_string(s).expect("a string serializes");
    let mut text = String::from(
        "# Written by bastion at each login from the access file: your clusters.\n\
         # kubectx/kubens choices made here are kept; add your own entries to\n\
         # ~/.kube/config instead.\n\
         apiVersion: v1\n\
         kind: Config\n\
         preferences: {}\n",
    );
    text.push_str(if user.clusters.is_empty() {
        "clusters: []\n"
    } else {
        "clusters:\n"
    });
    for c in &user.clusters {
        text.push_str(&format!(
            "- cluster:\n    certificate-authority-data: {}\n    server: {}\n  name: {}\n",
            q(&c.certificate_authority_data),
            q(&c.server),
            q(&c.name)
        ));
    }
    text.push_str(if user.clusters.is_empty() {
        "users: []\n"
    } else {
        "users:\n"
    });
    for c in &user.clusters {
        let args: Vec<String> = exec_args(c)
            .iter()
            .map(|a| format!("      - {}\n", q(a)))
            .collect();
        text.push_str(&format!(
            "- name: {}\n  user:\n    exec:\n      apiVersion: client.authentication.k8s.io/v1beta1\n      args:\n{}      command: aws\n      interactiveMode: Never\n      provideClusterInfo: false\n",
            q(&auth_name(c)),
            args.concat()
        ));
    }
    text.push_str(if user.clusters.is_empty() {
        "contexts: []\n"
    } else {
        "contexts:\n"
    });
    for c in &user.clusters {
        let namespace = chosen_ns
            .get(c.name.as_str())
            .map_or(c.namespace.as_str(), |ns| ns);
        text.push_str(&format!(
            "- context:\n    cluster: {}\n    namespace: {}\n    user: {}\n  name: {}\n",
            q(&c.name),
            q(namespace),
            q(&auth_name(c)),
            q(&c.name)
        ));
    }
    if let Some(current) = current {
        text.push_str(&format!("current-context: {}\n", q(&current)));
    }
    text
}

/// The kubeconfig user entry of cluster `c`.
fn auth_name(c: &AppliedCluster) -> String {
    format!("bastion@{}", c.name)
}

/// The exec credential plugin's arguments: `aws eks get-token`, with the
/// container's credentials (the metadata proxy's: the user's role).
pub fn exec_args(c: &AppliedCluster) -> [&str; 8] {
    [
        "--region",
        &c.region,
        "eks",
        "get-token",
        "--cluster-name",
        &c.eks_name,
        "--output",
        "json",
    ]
}

fn is_namespace(ns: &str) -> bool {
    (1..=63).contains(&ns.len())
        && ns
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !ns.starts_with('-')
        && !ns.ends_with('-')
}

/// Writes `user`'s managed kubeconfig into the home at `home` (the host's
/// path), owned by `uid`:`gid`, and an empty `~/.kube/config` when there is
/// none.
pub fn install(
    home: &Path,
    name: &str,
    uid: u32,
    gid: u32,
    user: &AppliedUser,
) -> Result<(), KubeconfigError> {
    let io_err = |step: &'static str| {
        let user = name.to_owned();
        move |e: rustix::io::Errno| KubeconfigError::Io {
            user,
            step,
            source: e.into(),
        }
    };
    let dir_flags = OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::RDONLY;
    let home_fd = rfs::open(home, dir_flags, Mode::empty()).map_err(io_err("open the home"))?;
    owned_by(&home_fd, uid, name, "home")?;
    let kube = subdir(&home_fd, ".kube", uid, gid, name)?;
    let managed = subdir(&kube, "bastion", uid, gid, name)?;
    if !exists(&kube, "config") {
        let empty = "apiVersion: v1\nkind: Config\npreferences: {}\n";
        // Lost a race with the user creating it: theirs stays.
        let _ = write_new(&kube, "config", empty, uid, gid);
    }
    let previous = read_previous(&managed, "config", uid);
    if let Some(own) = read_previous(&kube, "config", uid)
        && let Some(fixed) = without_gone_current_context(&own, previous.as_deref(), user)
    {
        // Best effort: the user's file stays as it was if this fails.
        let tmp = format!(".config.{}.tmp", std::process::id());
        let _ = rfs::unlinkat(&kube, tmp.as_str(), AtFlags::empty());
        if write_new(&kube, &tmp, &fixed, uid, gid).is_ok() {
            let _ = rfs::renameat(&kube, tmp.as_str(), &kube, "config");
        }
    }
    let text = render(user, previous.as_deref());
    if previous.as_deref() == Some(text.as_str()) {
        return Ok(());
    }
    let tmp = format!(".config.{}.tmp", std::process::id());
    let _ = rfs::unlinkat(&managed, tmp.as_str(), AtFlags::empty());
    write_new(&managed, &tmp, &text, uid, gid).map_err(io_err("write"))?;
    rfs::renameat(&managed, tmp.as_str(), &managed, "config").map_err(io_err("rename"))
}

fn owned_by(fd: &OwnedFd, uid: u32, user: &str, path: &'static str) -> Result<(), KubeconfigError> {
    let stat = rfs::fstat(fd).map_err(|e| KubeconfigError::Io {
        user: user.to_owned(),
        step: "stat",
        source: e.into(),
    })?;
    if stat.st_uid != uid {
        return Err(KubeconfigError::NotTheirs {
            user: user.to_owned(),
            path,
        });
    }
    Ok(())
}

/// Opens (creating, as the user's, 0700) the directory `name` under `dir`.
fn subdir(
    dir: &OwnedFd,
    name: &'static str,
    uid: u32,
    gid: u32,
    user: &str,
) -> Result<OwnedFd, KubeconfigError> {
    let io_err = |step: &'static str| {
        let user = user.to_owned();
        move |e: rustix::io::Errno| KubeconfigError::Io {
            user,
            step,
            source: e.into(),
        }
    };
    match rfs::mkdirat(dir, name, Mode::from_raw_mode(0o700)) {
        Ok(()) => {
            let fd = open_dir(dir, name).map_err(io_err("open a new directory"))?;
            rfs::fchown(&fd, Some(uid_of(uid)), Some(gid_of(gid))).map_err(io_err("chown"))?;
            Ok(fd)
        }
        Err(rustix::io::Errno::EXIST) => {
            let fd = open_dir(dir, name).map_err(io_err("open a directory"))?;
            owned_by(
                &fd,
                uid,
                user,
                if name == ".kube" {
                    "~/.kube"
                } else {
                    "~/.kube/bastion"
                },
            )?;
            Ok(fd)
        }
        Err(e) => Err(io_err("create a directory")(e)),
    }
}

fn open_dir(dir: &OwnedFd, name: &str) -> rustix::io::Result<OwnedFd> {
    rfs::openat(
        dir,
        name,
        OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::RDONLY,
        Mode::empty(),
    )
}

fn exists(dir: &OwnedFd, name: &str) -> bool {
    rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).is_ok()
}

/// The user's own `~/.kube/config` with its `current-context` line
/// changed, when (and only when) kubectx left it naming a context of
/// ours that the access file no longer gives them (kubectl would then
/// fail on every command). It then names the first context they still
/// have, or the line goes. Every other byte of the file stays.
pub fn without_gone_current_context(
    own: &str,
    previous_managed: Option<&str>,
    user: &AppliedUser,
) -> Option<String> {
    let parsed = Previous::read(own);
    let current = parsed.current_context?;
    let theirs = parsed.contexts.iter().any(|(name, _)| *name == current);
    let previous = Previous::read(previous_managed?);
    let was_ours = previous.contexts.iter().any(|(name, _)| *name == current);
    let still_ours = user.clusters.iter().any(|c| c.name == current);
    if theirs || !was_ours || still_ours {
        return None;
    }
    let replacement = user
        .clusters
        .first()
        .map(|c| format!("current-context: {}", c.name));
    let mut changed = false;
    let mut lines = Vec::new();
    for line in own.lines() {
        let names_current = line
            .strip_prefix("current-context:")
            .is_some_and(|v| v.trim().trim_matches(['"', '\'']) == current);
        if names_current {
            changed = true;
            lines.extend(replacement.clone());
        } else {
            lines.push(line.to_owned());
        }
    }
    changed.then(|| lines.join("\n") + "\n")
}

/// A file of the user's under `dir`, when it is a regular file of a sane
/// size.
fn read_previous(dir: &OwnedFd, name: &str, uid: u32) -> Option<String> {
    let fd = rfs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let stat = rfs::fstat(&fd).ok()?;
    let regular = rfs::FileType::from_raw_mode(stat.st_mode) == rfs::FileType::RegularFile;
    if !regular || stat.st_uid != uid || stat.st_size as u64 > MAX_PREVIOUS {
        return None;
    }
    let mut text = String::new();
    std::fs::File::from(fd)
        .take(MAX_PREVIOUS)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

/// Creates `name` in `dir` (never an existing one, never through a
/// symlink), writes `text`, and gives it to the user (0600).
fn write_new(dir: &OwnedFd, name: &str, text: &str, uid: u32, gid: u32) -> rustix::io::Result<()> {
    let fd = rfs::openat(
        dir,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )?;
    rfs::fchown(&fd, Some(uid_of(uid)), Some(gid_of(gid)))?;
    let mut file = std::fs::File::from(fd);
    file.write_all(text.as_bytes())
        .map_err(|e| rustix::io::Errno::from_io_error(&e).unwrap_or(rustix::io::Errno::IO))?;
    let _ = file.as_fd();
    Ok(())
}

fn uid_of(uid: u32) -> rustix::fs::Uid {
    rustix::fs::Uid::from_raw(uid)
}

fn gid_of(gid: u32) -> rustix::fs::Gid {
    rustix::fs::Gid::from_raw(gid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(name: &str, ns: &str) -> AppliedCluster {
        AppliedCluster {
            name: name.into(),
            server: format!("https://{name}.example"),
            certificate_authority_data: "Q0E=".into(),
            region: "eu-west-1".into(),
            eks_name: format!("{name}-eks"),
            namespace: ns.into(),
        }
    }

    fn user(clusters: Vec<AppliedCluster>) -> AppliedUser {
        AppliedUser {
            enabled: true,
            key_fingerprints: vec![],
            role_arn: "arn:aws:iam::123456789012:role/bastion-alice".into(),
            role_explicit: false,
            groups: vec![],
            image: None,
            limits: None,
            clusters,
        }
    }

    fn parsed(text: &str) -> serde_yaml_ng::Value {
        serde_yaml_ng::from_str(text).unwrap()
    }

    #[test]
    fn one_context_per_cluster_through_the_exec_plugin() {
        let text = render(
            &user(vec![
                cluster("hyades", "default"),
                cluster("pleiades", "web"),
            ]),
            None,
        );
        let doc = parsed(&text);
        assert_eq!(doc["current-context"], "hyades");
        assert_eq!(doc["contexts"][1]["context"]["namespace"], "web");
        let exec = &doc["users"][0]["user"]["exec"];
        assert_eq!(exec["command"], "aws");
        let args: Vec<&str> = exec["args"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
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
    }

    #[test]
    fn the_users_switches_are_kept_and_gone_clusters_leave() {
        let first = render(
            &user(vec![
                cluster("hyades", "default"),
                cluster("pleiades", "web"),
            ]),
            None,
        );
        // kubectx pleiades; kubens hyades → taurus (what kubectl writes).
        let switched = first
            .replace("current-context: \"hyades\"", "current-context: pleiades")
            .replacen("namespace: \"default\"", "namespace: taurus", 1);
        let again = render(
            &user(vec![
                cluster("hyades", "default"),
                cluster("pleiades", "web"),
            ]),
            Some(&switched),
        );
        let doc = parsed(&again);
        assert_eq!(doc["current-context"], "pleiades");
        assert_eq!(doc["contexts"][0]["context"]["namespace"], "taurus");
        // pleiades leaves the access file: its context goes, and so does
        // the current-context naming it.
        let fewer = render(&user(vec![cluster("hyades", "default")]), Some(&again));
        let doc = parsed(&fewer);
        assert_eq!(doc["contexts"].as_sequence().unwrap().len(), 1);
        assert_eq!(doc["current-context"], "hyades");
        assert_eq!(doc["contexts"][0]["context"]["namespace"], "taurus");
    }

    #[test]
    fn a_current_context_of_the_users_own_is_kept_and_garbage_is_ignored() {
        let own = "current-context: my-kind\ncontexts: []\n";
        let doc = parsed(&render(
            &user(vec![cluster("hyades", "default")]),
            Some(own),
        ));
        assert_eq!(doc["current-context"], "my-kind");
        for garbage in [
            "{{{",
            "contexts: 7",
            "- - -",
            "contexts:\n- name: hyades\n  context: {cluster: x, user: y, namespace: \"../x\"}\n",
        ] {
            let doc = parsed(&render(
                &user(vec![cluster("hyades", "default")]),
                Some(garbage),
            ));
            assert_eq!(
                doc["contexts"][0]["context"]["namespace"], "default",
                "{garbage}"
            );
        }
    }

    #[test]
    fn a_current_context_of_ours_that_is_gone_is_moved_in_the_users_own_file() {
        let both = render(
            &user(vec![
                cluster("hyades", "default"),
                cluster("pleiades", "web"),
            ]),
            None,
        );
        let own = "# mine\napiVersion: v1\nclusters:\n- cluster:\n    server: https://mine\n  name: mine\ncurrent-context: pleiades\nkind: Config\n";
        let fewer = user(vec![cluster("hyades", "default")]);
        let fixed = without_gone_current_context(own, Some(&both), &fewer).unwrap();
        assert_eq!(
            fixed,
            own.replace("current-context: pleiades", "current-context: hyades")
        );
        // Still ours, theirs, or never ours: left alone.
        assert_eq!(
            without_gone_current_context(own, Some(&both), &user(vec![cluster("pleiades", "w")])),
            None
        );
        let theirs = own.replace("current-context: pleiades", "current-context: mine");
        assert_eq!(
            without_gone_current_context(&theirs, Some(&both), &fewer),
            None
        );
        assert_eq!(without_gone_current_context(own, None, &fewer), None);
    }

    #[test]
    fn hostile_kubeconfigs_are_read_in_one_pass_and_understood_as_nothing() {
        // Flow style, nested without end: what kept libyaml spinning.
        let brackets = format!("contexts: {}", "[{a: ".repeat(40_000));
        let keys = format!("contexts:\n{}", "- ? [a, {b: c}]\n".repeat(10_000));
        for hostile in [brackets, keys, "\u{0}\u{1}".repeat(100_000)] {
            assert_eq!(Previous::read(&hostile), Previous::default());
            let doc = parsed(&render(
                &user(vec![cluster("hyades", "default")]),
                Some(&hostile),
            ));
            assert_eq!(doc["contexts"][0]["context"]["namespace"], "default");
        }
        // What kubectl writes is read.
        let kubectl = "apiVersion: v1\ncontexts:\n- context:\n    cluster: hyades\n    namespace: taurus\n    user: bastion@hyades\n  name: hyades\n- context:\n    cluster: x\n    user: y\n  name: \"mine\"\ncurrent-context: mine\nkind: Config\n";
        assert_eq!(
            Previous::read(kubectl),
            Previous {
                current_context: Some("mine".into()),
                contexts: vec![
                    ("hyades".into(), Some("taurus".into())),
                    ("mine".into(), None)
                ],
            }
        );
    }

    #[test]
    fn install_writes_through_the_home_and_refuses_symlinks() {
        let home = tempfile::tempdir().unwrap();
        let (uid, gid) = (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        );
        let alice = user(vec![cluster("hyades", "default")]);
        install(home.path(), "alice", uid, gid, &alice).unwrap();
        let managed = home.path().join(MANAGED);
        assert!(
            std::fs::read_to_string(&managed)
                .unwrap()
                .contains("name: \"hyades\"")
        );
        assert!(home.path().join(".kube/config").is_file());
        // The user replaces their managed folder with a symlink to a
        // directory they want written: nothing is written there.
        let target = tempfile::tempdir().unwrap();
        std::fs::remove_dir_all(home.path().join(".kube/bastion")).unwrap();
        std::os::unix::fs::symlink(target.path(), home.path().join(".kube/bastion")).unwrap();
        assert!(install(home.path(), "alice", uid, gid, &alice).is_err());
        assert_eq!(std::fs::read_dir(target.path()).unwrap().count(), 0);
        // …or the file itself with a symlink: it is replaced, not followed.
        std::fs::remove_file(home.path().join(".kube/bastion")).unwrap();
        install(home.path(), "alice", uid, gid, &alice).unwrap();
        let victim = target.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        std::fs::remove_file(&managed).unwrap();
        std::os::unix::fs::symlink(&victim, &managed).unwrap();
        install(home.path(), "alice", uid, gid, &alice).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        assert!(
            !std::fs::symlink_metadata(&managed)
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }
}
