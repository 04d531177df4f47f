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
use serde::{Deserialize, Serialize};

use super::applied::{AppliedCluster, AppliedUser};

/// The managed file's path inside the home.
pub const MANAGED: &str = ".kube/bastion/config";

/// `KUBECONFIG` of a user whose home is `home` in the container.
pub fn kubeconfig_env(home: &str) -> String {
    format!("{home}/.kube/config:{home}/{MANAGED}")
}

/// Largest previous file read back (a bigger one is replaced, its
/// choices forgotten).
const MAX_PREVIOUS: u64 = 1 << 20;

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

/// What a user chose in the previous managed file.
#[derive(Debug, Default, Deserialize)]
struct Previous {
    #[serde(rename = "current-context", default)]
    current_context: Option<String>,
    #[serde(default)]
    contexts: Vec<NamedContext>,
}

#[derive(Debug, Deserialize, Serialize)]
struct NamedContext {
    name: String,
    context: Context,
}

#[derive(Debug, Deserialize, Serialize)]
struct Context {
    cluster: String,
    user: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<String>,
}

/// The managed file for `user`, keeping the choices of `previous`.
pub fn render(user: &AppliedUser, previous: Option<&str>) -> String {
    let previous: Previous = previous
        .and_then(|text| serde_yaml_ng::from_str(text).ok())
        .unwrap_or_default();
    let chosen_ns: BTreeMap<&str, &str> = previous
        .contexts
        .iter()
        .filter_map(|c| Some((c.name.as_str(), c.context.namespace.as_deref()?)))
        .filter(|(_, ns)| is_namespace(ns))
        .collect();
    let clusters: Vec<serde_json::Value> = user
        .clusters
        .iter()
        .map(|c| {
            serde_json::json!({
                "name": c.name,
                "cluster": {
                    "server": c.server,
                    "certificate-authority-data": c.certificate_authority_data,
                },
            })
        })
        .collect();
    let users: Vec<serde_json::Value> = user
        .clusters
        .iter()
        .map(|c| serde_json::json!({ "name": auth_name(c), "user": { "exec": exec_plugin(c) } }))
        .collect();
    let contexts: Vec<NamedContext> = user
        .clusters
        .iter()
        .map(|c| NamedContext {
            name: c.name.clone(),
            context: Context {
                cluster: c.name.clone(),
                user: auth_name(c),
                namespace: Some(
                    chosen_ns
                        .get(c.name.as_str())
                        .map_or(c.namespace.clone(), |ns| (*ns).to_owned()),
                ),
            },
        })
        .collect();
    // Kept when it still names one of these contexts, or one of the
    // user's own (not a managed one that is gone).
    let current = previous
        .current_context
        .filter(|name| {
            user.clusters.iter().any(|c| &c.name == name)
                || !previous.contexts.iter().any(|c| &c.name == name)
        })
        .or_else(|| user.clusters.first().map(|c| c.name.clone()));
    let mut doc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": clusters,
        "users": users,
        "contexts": contexts,
    });
    if let Some(current) = current {
        doc["current-context"] = serde_json::json!(current);
    }
    let mut text = String::from(
        "# Written by bastion at each login from the access file: your clusters.\n\
         # kubectx/kubens choices made here are kept; add your own entries to\n\
         # ~/.kube/config instead.\n",
    );
    text.push_str(&serde_yaml_ng::to_string(&doc).expect("kubeconfig serializes"));
    text
}

/// The kubeconfig user entry of cluster `c`.
fn auth_name(c: &AppliedCluster) -> String {
    format!("bastion@{}", c.name)
}

/// The exec credential plugin: `aws eks get-token`, with the container's
/// credentials (the metadata proxy's: the user's role).
pub fn exec_plugin(c: &AppliedCluster) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "client.authentication.k8s.io/v1beta1",
        "command": "aws",
        "args": ["--region", c.region, "eks", "get-token", "--cluster-name", c.eks_name, "--output", "json"],
        "interactiveMode": "Never",
        "provideClusterInfo": false,
    })
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
    #[derive(Deserialize)]
    struct Own {
        #[serde(rename = "current-context", default)]
        current_context: Option<String>,
        #[serde(default)]
        contexts: Option<Vec<NamedContext>>,
    }
    let parsed: Own = serde_yaml_ng::from_str(own).ok()?;
    let current = parsed.current_context.filter(|c| !c.is_empty())?;
    let theirs = parsed
        .contexts
        .unwrap_or_default()
        .iter()
        .any(|c| c.name == current);
    let previous: Previous = serde_yaml_ng::from_str(previous_managed?).ok()?;
    let was_ours = previous.contexts.iter().any(|c| c.name == current);
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
            .replace("current-context: hyades", "current-context: pleiades")
            .replacen("namespace: default", "namespace: taurus", 1);
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
                .contains("name: hyades")
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
