//! The bastion host's accounts as `apply` sees and changes them: Linux
//! users whose login shell is bastion-shell, in the managed group and in
//! `bastion-users` (sshd's `AllowGroups`), with root-owned
//! `authorized_keys` under `/etc/bastion/authorized_keys/`.
//!
//! Changes go through the system's own tools (`useradd`, `usermod`,
//! `pkill`), never by editing `/etc/passwd` by hand. Nothing here touches
//! an account that is not a member of the managed group, except creating
//! a new one.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use uzers::os::unix::{GroupExt, UserExt};

use super::LOGIN_GROUP;

/// The uids of ordinary accounts (Debian's UID_MIN..UID_MAX): apply never
/// treats an account outside them as a bastion user (system accounts,
/// `nobody`).
pub const ORDINARY_UIDS: std::ops::Range<u32> = 1000..60000;

/// Where bastion's host accounts live.
#[derive(Debug, Clone)]
pub struct HostLayout {
    /// `authorized_keys` of each user, `<keys_dir>/<name>` (root-owned).
    pub keys_dir: PathBuf,
    /// The login shell of every bastion user.
    pub shell: PathBuf,
    /// The (empty, read-only) home of the host accounts; homes proper are
    /// in the containers.
    pub home: PathBuf,
    /// Where lock state is read.
    pub shadow: PathBuf,
}

impl Default for HostLayout {
    fn default() -> Self {
        Self {
            keys_dir: PathBuf::from("/etc/bastion/authorized_keys"),
            shell: PathBuf::from("/usr/local/bin/bastion-shell"),
            home: PathBuf::from("/var/lib/bastion/empty"),
            shadow: PathBuf::from("/etc/shadow"),
        }
    }
}

/// One host account, as far as the bastion cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub shell: PathBuf,
    /// Every group it is in, its primary group included.
    pub groups: Vec<String>,
    /// Its password field starts with `!` (sshd without PAM refuses it).
    pub locked: bool,
    /// Its `authorized_keys` file, when there is one.
    pub keys: Option<String>,
}

/// Why the host could not be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("`{command}` failed: {detail}")]
    Command { command: String, detail: String },
}

impl HostLayout {
    /// The account `name`, if the host has one.
    pub fn account(&self, name: &str) -> Result<Option<Account>, HostError> {
        self.account_with(name, &self.locked_accounts()?)
    }

    fn account_with(
        &self,
        name: &str,
        locked: &std::collections::HashSet<String>,
    ) -> Result<Option<Account>, HostError> {
        let Some(user) = uzers::get_user_by_name(name) else {
            return Ok(None);
        };
        let groups = uzers::get_user_groups(name, user.primary_group_id())
            .unwrap_or_default()
            .iter()
            .map(|g| g.name().to_string_lossy().into_owned())
            .collect();
        let keys = match std::fs::read_to_string(self.keys_path(name)) {
            Ok(text) => Some(text),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(HostError::Read {
                    path: self.keys_path(name),
                    source,
                });
            }
        };
        Ok(Some(Account {
            name: name.to_owned(),
            uid: user.uid(),
            shell: user.shell().to_owned(),
            groups,
            locked: locked.contains(name),
            keys,
        }))
    }

    /// The members of `group` (by membership or as their primary group).
    pub fn members(&self, group: &str) -> Result<Vec<String>, HostError> {
        let Some(g) = uzers::get_group_by_name(group) else {
            return Ok(Vec::new());
        };
        let mut names: Vec<String> = g
            .members()
            .iter()
            .map(|m| m.to_string_lossy().into_owned())
            .collect();
        // Primary members are not listed in /etc/group.
        let passwd = std::fs::read_to_string("/etc/passwd").map_err(|source| HostError::Read {
            path: "/etc/passwd".into(),
            source,
        })?;
        for line in passwd.lines() {
            let fields: Vec<&str> = line.split(':').collect();
            if fields.len() >= 4 && fields[3] == g.gid().to_string() {
                names.push(fields[0].to_owned());
            }
        }
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// Every member of `group` as an account.
    pub fn accounts_in(&self, group: &str) -> Result<BTreeMap<String, Account>, HostError> {
        let mut accounts = BTreeMap::new();
        // Read once for all of them (1,000 users: 1,000 times otherwise).
        let locked = self.locked_accounts()?;
        for name in self.members(group)? {
            if let Some(account) = self.account_with(&name, &locked)? {
                accounts.insert(name, account);
            }
        }
        Ok(accounts)
    }

    /// The accounts whose password field starts with `!`.
    fn locked_accounts(&self) -> Result<std::collections::HashSet<String>, HostError> {
        let shadow = std::fs::read_to_string(&self.shadow).map_err(|source| HostError::Read {
            path: self.shadow.clone(),
            source,
        })?;
        Ok(shadow
            .lines()
            .filter_map(|l| l.split_once(':'))
            .filter(|(_, rest)| rest.starts_with('!'))
            .map(|(user, _)| user.to_owned())
            .collect())
    }

    pub fn keys_path(&self, name: &str) -> PathBuf {
        self.keys_dir.join(name)
    }

    /// Creates `name` as a bastion user, in `groups`, password `*` (no
    /// password login; not `!`, which sshd without PAM takes as locked).
    pub fn create(&self, name: &str, groups: &[&str]) -> Result<(), HostError> {
        for group in groups {
            ensure_group(group)?;
        }
        run(Command::new("useradd")
            .args(["-M", "-U", "-d"])
            .arg(&self.home)
            .arg("-s")
            .arg(&self.shell)
            .args(["-p", "*", "-G", &groups.join(","), "--", name]))
    }

    /// Makes an existing member a bastion user again: shell, unlocked,
    /// in `join`, out of `leave`.
    pub fn repair(&self, name: &str, join: &[&str], leave: &[&str]) -> Result<(), HostError> {
        for group in join {
            ensure_group(group)?;
        }
        let mut usermod = Command::new("usermod");
        usermod.arg("-s").arg(&self.shell).args(["-p", "*"]);
        if !join.is_empty() {
            usermod.args(["-a", "-G", &join.join(",")]);
        }
        run(usermod.args(["--", name]))?;
        for group in leave {
            run(Command::new("gpasswd").args(["-d", name, group]))?;
        }
        Ok(())
    }

    /// Every account's primary gid.
    pub fn primary_gids(&self) -> Result<std::collections::BTreeSet<u32>, HostError> {
        let passwd = std::fs::read_to_string("/etc/passwd").map_err(|source| HostError::Read {
            path: "/etc/passwd".into(),
            source,
        })?;
        Ok(passwd
            .lines()
            .filter_map(|l| l.split(':').nth(3)?.parse().ok())
            .collect())
    }

    /// Group `name`'s gid and listed members, if the host has it.
    pub fn group(&self, name: &str) -> Option<(u32, Vec<String>)> {
        let group = uzers::get_group_by_name(name)?;
        let members = group
            .members()
            .iter()
            .map(|m| m.to_string_lossy().into_owned())
            .collect();
        Some((group.gid(), members))
    }

    /// Locks `name` now: password field `!…`, no keys, every process of
    /// theirs on the host killed (their sshd sessions and bastion-shells).
    pub fn lock(&self, account: &Account) -> Result<(), HostError> {
        if account.uid == 0 {
            return Err(HostError::Command {
                command: format!("lock {}", account.name),
                detail: "refusing to lock uid 0".into(),
            });
        }
        if !account.locked {
            run(Command::new("usermod").args(["-L", "--", &account.name]))?;
        }
        match std::fs::remove_file(self.keys_path(&account.name)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(HostError::Write {
                    path: self.keys_path(&account.name),
                    source: e,
                });
            }
            _ => {}
        }
        // pkill exits 1 when nothing matched: not an error.
        let status = Command::new("pkill")
            .args(["-KILL", "-U", &account.uid.to_string()])
            .status()
            .map_err(|e| HostError::Command {
                command: "pkill".into(),
                detail: e.to_string(),
            })?;
        if !matches!(status.code(), Some(0 | 1)) {
            return Err(HostError::Command {
                command: format!("pkill -KILL -U {}", account.uid),
                detail: status.to_string(),
            });
        }
        Ok(())
    }

    /// Replaces `name`'s `authorized_keys` whole (root-owned, 0644).
    pub fn write_keys(&self, name: &str, text: &str) -> Result<(), HostError> {
        let write_err = |path: &Path| {
            let path = path.to_owned();
            move |source| HostError::Write { path, source }
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&self.keys_dir)
            .map_err(write_err(&self.keys_dir))?;
        let path = self.keys_path(name);
        let tmp = self.keys_dir.join(format!(".{name}.tmp"));
        {
            use std::io::Write as _;
            let _ = std::fs::remove_file(&tmp);
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(&tmp)
                .map_err(write_err(&tmp))?;
            file.write_all(text.as_bytes()).map_err(write_err(&tmp))?;
        }
        std::fs::rename(&tmp, &path).map_err(write_err(&path))
    }
}

/// The groups a user of `managed` must be in.
pub fn groups_for(managed: &str) -> Vec<&str> {
    if managed == LOGIN_GROUP {
        vec![LOGIN_GROUP]
    } else {
        vec![LOGIN_GROUP, managed]
    }
}

/// Creates `group` unless it exists: a regular group (gid 1000 and up;
/// plan refuses to put users into other system groups).
fn ensure_group(group: &str) -> Result<(), HostError> {
    if uzers::get_group_by_name(group).is_some() {
        return Ok(());
    }
    let system = group == LOGIN_GROUP;
    let mut groupadd = Command::new("groupadd");
    if system {
        groupadd.arg("--system");
    }
    run(groupadd.args(["--", group]))
}

fn run(command: &mut Command) -> Result<(), HostError> {
    let shown = format!("{command:?}").replace('"', "");
    let out = command.output().map_err(|e| HostError::Command {
        command: shown.clone(),
        detail: e.to_string(),
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(HostError::Command {
            command: shown,
            detail: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}
