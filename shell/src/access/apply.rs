//! `bastionctl access plan` and `apply`: make the host match the access
//! file, under a lock, idempotently, each change an audit event.
//!
//! Order of `apply`: the file is read (root-owned) and checked; the plan
//! is made (refused whole when a user would take over an account outside
//! the managed group); the applied state is written first, so bastiond
//! refuses locked users from that moment; then accounts are created and
//! repaired, keys replaced, and removed or disabled users locked (password
//! locked, keys gone, their host processes killed, their containers
//! removed); last, `access.applied`.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::fcntl::{Flock, FlockArg};
use sha2::{Digest, Sha256};

use super::applied::{self, Applied, AppliedError};
use super::host::{HostError, HostLayout, groups_for};
use super::plan::{Change, HostView, Plan, PlanError, keys_file, plan};
use super::{AccessFile, ParseError};
use crate::audit::{AccessApplied, AccessUserChange, AuditError, AuditEvent, AuditLog};
use crate::broker::container::ContainerManager;
use crate::config::{Config, Problems};
use crate::secure_file::{self, Owner, SecureFileError};

/// Where apply's lock lives (one apply at a time on a host).
pub const LOCK_PATH: &str = "/run/bastion/access.lock";

/// How long apply waits for another one to finish.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

/// Why plan or apply could not run (nothing is changed before the plan
/// is made; a failed step leaves the rest for the next apply).
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    File(#[from] SecureFileError),
    #[error(
        "{path} is not in a place only root controls: {at} {why}; move it (e.g. to /etc/bastion/)"
    )]
    Untrusted {
        path: PathBuf,
        at: PathBuf,
        why: String,
    },
    #[error("{path}: {detail}")]
    Invalid { path: PathBuf, detail: String },
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Host(#[from] HostError),
    #[error(transparent)]
    Applied(#[from] AppliedError),
    #[error(
        "cannot take the access lock {path} (another apply has held it for 2 minutes, or it cannot be opened): {source}"
    )]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the audit event {event}: {source}; nothing more was changed")]
    Audit {
        event: &'static str,
        #[source]
        source: AuditError,
    },
    #[error(
        "cannot remove {user}'s container {container}: {detail} (the account is locked; run apply again once Docker answers)"
    )]
    Container {
        user: String,
        container: String,
        detail: String,
    },
}

/// The access file as apply reads it: root-owned, checked, and its hash.
pub struct Loaded {
    pub path: PathBuf,
    pub access: AccessFile,
    pub sha256: String,
}

/// Reads and checks the root-owned access file at `path`. Nobody but
/// root can have put it there: it is no symlink, and every directory above
/// it is root's and writable by no one else (or sticky, as /tmp is).
pub fn load(path: &Path, config: &Config) -> Result<Loaded, ApplyError> {
    trusted_place(path)?;
    let text = secure_file::read_trusted(path, Owner::Root)?;
    let invalid = |detail: String| ApplyError::Invalid {
        path: path.to_owned(),
        detail,
    };
    let access = AccessFile::parse(&text, config).map_err(|e| match e {
        ParseError::Invalid(problems) => invalid(problems_text(path, &problems)),
        e @ ParseError::TooLarge(_) => invalid(e.to_string()),
    })?;
    Ok(Loaded {
        // Absolute in the audit trail: which file was applied.
        path: std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned()),
        sha256: hex::encode(Sha256::digest(text.as_bytes())),
        access,
    })
}

fn trusted_place(path: &Path) -> Result<(), ApplyError> {
    use std::os::unix::fs::MetadataExt;
    let untrusted = |at: &Path, why: &str| ApplyError::Untrusted {
        path: path.to_owned(),
        at: at.to_owned(),
        why: why.to_owned(),
    };
    let absolute = std::path::absolute(path).map_err(|e| untrusted(path, &e.to_string()))?;
    let meta =
        std::fs::symlink_metadata(&absolute).map_err(|e| untrusted(&absolute, &e.to_string()))?;
    if meta.file_type().is_symlink() {
        return Err(untrusted(&absolute, "is a symlink"));
    }
    for dir in absolute.ancestors().skip(1) {
        let meta = std::fs::symlink_metadata(dir).map_err(|e| untrusted(dir, &e.to_string()))?;
        let sticky = meta.mode() & 0o1000 != 0;
        if meta.file_type().is_symlink() {
            return Err(untrusted(dir, "is a symlink"));
        }
        if meta.uid() != 0 {
            return Err(untrusted(dir, "is not owned by root"));
        }
        if meta.mode() & 0o022 != 0 && !sticky {
            return Err(untrusted(dir, "is writable by others than root"));
        }
    }
    Ok(())
}

fn problems_text(path: &Path, problems: &Problems) -> String {
    problems
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(&format!("\n{}: ", path.display()))
}

/// What the host looks like to the plan, and the states before and after.
pub struct Planned {
    pub plan: Plan,
    pub host: HostView,
    pub new_state: Applied,
}

/// Users who have a container (`None` when Docker does not answer).
async fn users_with_containers(containers: Option<&ContainerManager>) -> Option<BTreeSet<String>> {
    let listed = containers?.list().await.ok()?;
    Some(listed.into_iter().map(|c| c.user).collect())
}

/// The plan for `loaded` on this host.
pub async fn make_plan(
    loaded: &Loaded,
    config: &Config,
    layout: &HostLayout,
    containers: Option<&ContainerManager>,
) -> Result<Planned, ApplyError> {
    let with_containers = users_with_containers(containers).await;
    let access = &loaded.access;
    let other_groups = applied::managed_groups(&config.bastiond.state_dir);
    let host = HostView::read(layout, access, with_containers, &other_groups)?;
    let old = Applied::read(&applied::path(
        &config.bastiond.state_dir,
        &access.host.group,
    ))?;
    let new_state = Applied::of(access, &loaded.sha256)?;
    let plan = plan(access, &host, old.as_ref(), &new_state)?;
    Ok(Planned {
        plan,
        host,
        new_state,
    })
}

/// Runs `planned` (under the caller's lock). Returns the changes made.
pub async fn apply(
    loaded: &Loaded,
    planned: Planned,
    config: &Config,
    layout: &HostLayout,
    audit: &AuditLog,
    containers: Option<&ContainerManager>,
) -> Result<usize, ApplyError> {
    let access = &loaded.access;
    let group = &access.host.group;
    let by_uid = nix::unistd::getuid().as_raw();
    let change_event = |user: &str, uid: Option<u32>, detail: Vec<String>| AccessUserChange {
        user: user.to_owned(),
        uid,
        detail,
        keys_added: Vec::new(),
        keys_removed: Vec::new(),
        access_sha256: loaded.sha256.clone(),
        by_uid,
    };
    let record = |event: AuditEvent| {
        audit
            .append(&event)
            .map(|_| ())
            .map_err(|source| ApplyError::Audit {
                event: event.name(),
                source,
            })
    };
    let state_path = applied::path(&config.bastiond.state_dir, group);
    if planned.plan.changes.contains(&Change::RecordState) {
        planned.new_state.write(&state_path)?;
    }
    let groups = groups_for(group);
    let mut made = 0;
    for change in &planned.plan.changes {
        match change {
            Change::AddUser { user, keys } => {
                let mut groups = groups.clone();
                if let Some(u) = access.user(user) {
                    groups.extend(u.groups.iter().map(String::as_str));
                }
                layout.create(user, &groups)?;
                layout.write_keys(user, &keys_file(keys))?;
                let uid = uzers::get_user_by_name(user).map(|u| u.uid());
                let mut event = change_event(
                    user,
                    uid,
                    vec![format!("account created in {}", groups.join(", "))],
                );
                event.keys_added = keys.iter().map(|k| k.fingerprint.clone()).collect();
                record(AuditEvent::AccessUserAdded(event))?;
            }
            Change::RepairUser {
                user,
                what,
                join,
                leave,
            } => {
                let join: Vec<&str> = join.iter().map(String::as_str).collect();
                let leave: Vec<&str> = leave.iter().map(String::as_str).collect();
                layout.repair(user, &join, &leave)?;
                let uid = planned.host.members.get(user).map(|a| a.uid);
                record(AuditEvent::AccessUserUpdated(change_event(
                    user,
                    uid,
                    what.clone(),
                )))?;
            }
            Change::SetKeys {
                user,
                keys,
                added,
                removed,
            } => {
                layout.write_keys(user, &keys_file(keys))?;
                let uid = planned.host.members.get(user).map(|a| a.uid);
                let mut event = change_event(user, uid, vec!["authorized_keys replaced".into()]);
                event.keys_added.clone_from(added);
                event.keys_removed.clone_from(removed);
                record(AuditEvent::AccessUserKeysChanged(event))?;
            }
            Change::Lock { user, uid, why } => {
                let account = &planned.host.members[user];
                layout.lock(account)?;
                let mut detail = vec![
                    why.to_string(),
                    "password locked, keys removed, host sessions killed".to_owned(),
                ];
                if let Some(manager) = containers {
                    let removed = remove_containers(manager, user).await?;
                    detail.extend(
                        removed
                            .into_iter()
                            .map(|c| format!("container {c} removed")),
                    );
                } else {
                    detail.push("containers not removed: Docker did not answer".into());
                }
                record(AuditEvent::AccessUserLocked(change_event(
                    user,
                    Some(*uid),
                    detail,
                )))?;
            }
            Change::NextLogin { .. } | Change::RecordState => continue,
        }
        made += 1;
    }
    record(AuditEvent::AccessApplied(AccessApplied {
        path: loaded.path.clone(),
        sha256: loaded.sha256.clone(),
        group: group.clone(),
        changes: made as u32,
        by_uid,
    }))?;
    Ok(made)
}

/// Removes every container of `user` (their sessions die with them).
async fn remove_containers(
    manager: &ContainerManager,
    user: &str,
) -> Result<Vec<String>, ApplyError> {
    let failed = |container: &str, detail: String| ApplyError::Container {
        user: user.to_owned(),
        container: container.to_owned(),
        detail,
    };
    let listed = manager
        .list()
        .await
        .map_err(|e| failed("(list)", e.to_string()))?;
    let mut removed = Vec::new();
    for c in listed.into_iter().filter(|c| c.user == user) {
        let lock = manager.lock_for(user);
        let _held = lock.lock().await;
        manager
            .remove(&c, "user locked by bastionctl access apply")
            .await
            .map_err(|e| failed(&c.name, e.to_string()))?;
        removed.push(c.name);
    }
    Ok(removed)
}

/// Holds apply's lock while alive.
pub struct ApplyLock(#[allow(dead_code)] Flock<File>);

/// Takes apply's lock at `path`, waiting for another apply to finish.
pub fn lock(path: &Path) -> Result<ApplyLock, ApplyError> {
    let lock_err = |source| ApplyError::Lock {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(lock_err)?;
    }
    // Root's alone (0600): another account that could open it could hold
    // a shared lock on it and keep every apply waiting.
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
        .map_err(lock_err)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(lock_err)?;
    // Wait for another apply, but not for ever, and say so.
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    let mut file = file;
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(flock) => return Ok(ApplyLock(flock)),
            Err((back, nix::errno::Errno::EWOULDBLOCK)) if std::time::Instant::now() < deadline => {
                file = back;
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err((_, errno)) => return Err(lock_err(std::io::Error::from(errno))),
        }
    }
}

/// An audit log for apply: `[recording] audit_log`, with syslog copies
/// when configured.
pub fn audit_log(config: &Config) -> Result<Arc<AuditLog>, AuditError> {
    let mut log = AuditLog::open(&config.recording.audit_log)?;
    if config.recording.syslog {
        log = log.with_syslog();
    }
    Ok(Arc::new(log))
}
