//! `bastionctl access plan`: what `apply` would change, worked out from
//! the access file, the host's accounts, the users' containers and the
//! state last applied; shown as a readable diff.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use super::applied::{Applied, AppliedUser};
use super::host::{Account, HostLayout, groups_for};
use super::ssh_keys::{CheckedKey, check_key};
use super::{AccessFile, LOGIN_GROUP};

/// One change `apply` makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A new host account with these keys.
    AddUser { user: String, keys: Vec<CheckedKey> },
    /// An account of the managed group made a working bastion user again
    /// (shell, unlocked), and its access-file groups joined or left.
    RepairUser {
        user: String,
        what: Vec<String>,
        join: Vec<String>,
        leave: Vec<String>,
    },
    /// The user's `authorized_keys` replaced.
    SetKeys {
        user: String,
        keys: Vec<CheckedKey>,
        added: Vec<String>,
        removed: Vec<String>,
    },
    /// Locked at once: sessions ended, container removed, home kept.
    Lock {
        user: String,
        uid: u32,
        why: LockReason,
    },
    /// What the user's next login changes: their kubeconfig's clusters,
    /// their container (recreated for a new role, image or limits).
    NextLogin { user: String, what: Vec<String> },
    /// The applied state records this version of the file.
    RecordState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockReason {
    Disabled,
    Removed,
}

impl fmt::Display for LockReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LockReason::Disabled => "disabled in the access file",
            LockReason::Removed => "no longer in the access file",
        })
    }
}

/// Why no plan could be made: apply would refuse to start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error(
        "user {user} is an existing host account that is not a bastion user of group {group} (uid {uid}; a bastion user is in the group, has an ordinary uid and bastion-shell as login shell); the access file never touches it: rename the user in the file"
    )]
    ForeignAccount {
        user: String,
        uid: u32,
        group: String,
    },
    #[error("user {user} exists with uid 0; refusing")]
    Root { user: String },
    #[error(
        "group {group} is an existing system group (gid {gid}) that is not the bastion's own; bastion users never join it: rename the group in the access file"
    )]
    PrivilegedGroup { group: String, gid: u32 },
    #[error(
        "group {group} is an account's own group (gid {gid}); no access file may use it: rename the group in the access file"
    )]
    PersonalGroup { group: String, gid: u32 },
    #[error(
        "group {group} is a group an access file manages ([host] group); a file's [[groups]] may not name it, or the two files would undo each other's locks"
    )]
    ManagedElsewhere { group: String },
}

/// Everything `apply` would do, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub changes: Vec<Change>,
    /// Facts worth knowing that change nothing (Docker unreachable, …).
    pub notes: Vec<String>,
}

/// The host as the plan sees it.
#[derive(Debug, Clone, Default)]
pub struct HostView {
    /// Members of the managed group.
    pub members: BTreeMap<String, Account>,
    /// Accounts named in the file that exist outside the managed group.
    pub others: BTreeMap<String, Account>,
    /// Users who have a container; `None` when Docker did not answer.
    pub containers: Option<BTreeSet<String>>,
    /// The login shell bastion users must have.
    pub shell: std::path::PathBuf,
    /// The host groups the file's groups name: gid and listed members.
    pub groups: BTreeMap<String, (u32, Vec<String>)>,
    /// The managed group itself, when the host has it.
    pub managed_group: Option<(u32, Vec<String>)>,
    /// Every account's primary gid (personal groups are nobody's to join).
    pub primary_gids: BTreeSet<u32>,
    /// The groups other access files manage.
    pub other_managed: Vec<String>,
}

impl HostView {
    /// Reads the accounts the file names or the group holds. Members of
    /// `other_groups` (groups other access files manage) are theirs: every
    /// file's users are also in `bastion-users`, and the file managing
    /// `bastion-users` must not lock them.
    pub fn read(
        layout: &HostLayout,
        access: &AccessFile,
        containers: Option<BTreeSet<String>>,
        other_groups: &[String],
    ) -> Result<Self, super::host::HostError> {
        let mut members = layout.accounts_in(&access.host.group)?;
        // Only bastion accounts are the file's: an ordinary uid and
        // bastion-shell as the login shell. Any other member of the group
        // (a system account whose primary group it is, an admin) is never
        // touched; listing it in the file is an error.
        let foreign = keep_bastion_accounts(&mut members, &layout.shell);
        // Only the file of bastion-users shares its members with others.
        let shared = access.host.group == LOGIN_GROUP;
        for other in other_groups
            .iter()
            .filter(|g| shared && **g != access.host.group)
        {
            for name in layout.members(other)? {
                if access.user(&name).is_none() {
                    members.remove(&name);
                }
            }
        }
        let mut others: BTreeMap<String, Account> = foreign
            .into_iter()
            .filter(|a| access.user(&a.name).is_some())
            .map(|a| (a.name.clone(), a))
            .collect();
        for user in &access.users {
            if !members.contains_key(&user.name)
                && !others.contains_key(&user.name)
                && let Some(account) = layout.account(&user.name)?
            {
                others.insert(user.name.clone(), account);
            }
        }
        let groups = access
            .groups
            .iter()
            .filter_map(|g| Some((g.name.clone(), layout.group(&g.name)?)))
            .collect();
        Ok(Self {
            members,
            others,
            containers,
            shell: layout.shell.clone(),
            groups,
            managed_group: layout.group(&access.host.group),
            primary_gids: layout.primary_gids()?,
            other_managed: other_groups
                .iter()
                .filter(|g| **g != access.host.group)
                .cloned()
                .collect(),
        })
    }
}

/// Keeps in `members` only bastion accounts (bastion-shell as login shell,
/// an ordinary uid); returns the others, which apply never touches.
pub fn keep_bastion_accounts(
    members: &mut BTreeMap<String, Account>,
    shell: &std::path::Path,
) -> Vec<Account> {
    let mut foreign = Vec::new();
    members.retain(|_, account| {
        let ours = account.shell == shell && super::host::ORDINARY_UIDS.contains(&account.uid);
        if !ours {
            foreign.push(account.clone());
        }
        ours
    });
    foreign
}

/// The `authorized_keys` text of `keys`.
pub fn keys_file(keys: &[CheckedKey]) -> String {
    keys.iter().map(|k| format!("{}\n", k.line)).collect()
}

fn fingerprints_in(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| check_key(l).ok())
        .map(|k| k.fingerprint)
        .collect()
}

/// Works out the plan. `applied` is the state last applied for the
/// file's group; `new_state` the state this file describes.
pub fn plan(
    access: &AccessFile,
    host: &HostView,
    applied: Option<&Applied>,
    new_state: &Applied,
) -> Result<Plan, PlanError> {
    let group = &access.host.group;
    let mut plan = Plan::default();
    if host.containers.is_none() {
        plan.notes.push(
            "Docker Engine did not answer: containers of locked users were not checked".into(),
        );
    }
    // Users join the file's groups on the host: never a system group that
    // is not the bastion's own (all its members bastion users).
    for (name, (gid, members)) in &host.groups {
        let used = access.enabled_users().any(|u| u.groups.contains(name));
        let bastions_own =
            !members.is_empty() && members.iter().all(|m| host.members.contains_key(m));
        if used && *gid < 1000 && !bastions_own {
            return Err(PlanError::PrivilegedGroup {
                group: name.clone(),
                gid: *gid,
            });
        }
    }
    // A file's groups are its own: never another file's managed group (the
    // two files would undo each other's locks), never an account's
    // personal group, never the managed group itself.
    for name in access.groups.iter().map(|g| &g.name) {
        let used = access.enabled_users().any(|u| u.groups.contains(name));
        if !used {
            continue;
        }
        if host.other_managed.contains(name) || name == group {
            return Err(PlanError::ManagedElsewhere {
                group: name.clone(),
            });
        }
        if let Some((gid, _)) = host.groups.get(name)
            && host.primary_gids.contains(gid)
        {
            return Err(PlanError::PersonalGroup {
                group: name.clone(),
                gid: *gid,
            });
        }
    }
    if let Some((gid, _)) = &host.managed_group
        && group != LOGIN_GROUP
        && host.primary_gids.contains(gid)
    {
        return Err(PlanError::PersonalGroup {
            group: group.clone(),
            gid: *gid,
        });
    }
    if group != LOGIN_GROUP
        && let Some((gid, listed)) = &host.managed_group
        && *gid < 1000
        && !listed.iter().all(|m| host.members.contains_key(m))
    {
        return Err(PlanError::PrivilegedGroup {
            group: group.clone(),
            gid: *gid,
        });
    }
    let needed_groups = groups_for(group);
    let file_groups: Vec<&str> = access.groups.iter().map(|g| g.name.as_str()).collect();
    for user in access.enabled_users() {
        let keys: Vec<CheckedKey> = user.keys.iter().filter_map(|k| check_key(k).ok()).collect();
        if let Some(other) = host.others.get(&user.name) {
            return Err(if other.uid == 0 {
                PlanError::Root {
                    user: user.name.clone(),
                }
            } else {
                PlanError::ForeignAccount {
                    user: user.name.clone(),
                    uid: other.uid,
                    group: group.clone(),
                }
            });
        }
        let Some(account) = host.members.get(&user.name) else {
            plan.changes.push(Change::AddUser {
                user: user.name.clone(),
                keys,
            });
            continue;
        };
        if account.uid == 0 {
            return Err(PlanError::Root {
                user: user.name.clone(),
            });
        }
        let mut what = Vec::new();
        if account.locked {
            what.push("unlock".to_owned());
        }
        if account.shell != host.shell {
            what.push(format!(
                "login shell {} → {}",
                account.shell.display(),
                host.shell.display()
            ));
        }
        let wanted = needed_groups
            .iter()
            .copied()
            .chain(user.groups.iter().map(String::as_str));
        let join: Vec<String> = wanted
            .filter(|g| !account.groups.iter().any(|have| have == g))
            .map(str::to_owned)
            .collect();
        let leave: Vec<String> = account
            .groups
            .iter()
            .filter(|g| file_groups.contains(&g.as_str()) && !user.groups.contains(g))
            .cloned()
            .collect();
        what.extend(join.iter().map(|g| format!("join group {g}")));
        what.extend(leave.iter().map(|g| format!("leave group {g}")));
        if !what.is_empty() {
            plan.changes.push(Change::RepairUser {
                user: user.name.clone(),
                what,
                join,
                leave,
            });
        }
        let wanted = keys_file(&keys);
        if account.keys.as_deref() != Some(wanted.as_str()) {
            let had = account
                .keys
                .as_deref()
                .map(fingerprints_in)
                .unwrap_or_default();
            let now: Vec<String> = keys.iter().map(|k| k.fingerprint.clone()).collect();
            plan.changes.push(Change::SetKeys {
                user: user.name.clone(),
                added: now.iter().filter(|f| !had.contains(f)).cloned().collect(),
                removed: had.iter().filter(|f| !now.contains(f)).cloned().collect(),
                keys,
            });
        }
    }
    for (name, account) in &host.members {
        let enabled = access.user(name).is_some_and(|u| !u.disabled);
        if enabled || account.uid == 0 {
            continue;
        }
        let has_container = host.containers.as_ref().is_some_and(|c| c.contains(name));
        if !account.locked || account.keys.is_some() || has_container {
            plan.changes.push(Change::Lock {
                user: name.clone(),
                uid: account.uid,
                why: if access.user(name).is_some() {
                    LockReason::Disabled
                } else {
                    LockReason::Removed
                },
            });
        }
    }
    for user in access.enabled_users() {
        let before = applied.and_then(|a| a.users.get(&user.name));
        let after = &new_state.users[&user.name];
        let what = next_login(before, after);
        if !what.is_empty() {
            plan.changes.push(Change::NextLogin {
                user: user.name.clone(),
                what,
            });
        }
    }
    if applied != Some(new_state) {
        plan.changes.push(Change::RecordState);
    }
    Ok(plan)
}

/// What changes for `after` at their next login, against `before`.
fn next_login(before: Option<&AppliedUser>, after: &AppliedUser) -> Vec<String> {
    let mut what = Vec::new();
    let names = |u: Option<&AppliedUser>| -> Vec<String> {
        u.map(|u| u.clusters.iter().map(|c| c.name.clone()).collect())
            .unwrap_or_default()
    };
    let (had, has) = (names(before), names(Some(after)));
    for name in has.iter().filter(|n| !had.contains(n)) {
        what.push(format!("kubeconfig: + context {name}"));
    }
    for name in had.iter().filter(|n| !has.contains(n)) {
        what.push(format!("kubeconfig: - context {name}"));
    }
    if let Some(before) = before {
        for (name, changed) in [
            ("role", before.role_arn != after.role_arn),
            ("image", before.image != after.image),
            ("limits", before.limits != after.limits),
        ] {
            if changed {
                what.push(format!("container recreated ({name} changed)"));
            }
        }
        let changed_clusters: Vec<&str> = after
            .clusters
            .iter()
            .filter(|c| {
                before
                    .clusters
                    .iter()
                    .any(|b| b.name == c.name && *b != **c)
            })
            .map(|c| c.name.as_str())
            .collect();
        for name in changed_clusters {
            what.push(format!("kubeconfig: context {name} updated"));
        }
    }
    what
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// How many users it locks.
    pub fn locks(&self) -> usize {
        self.changes
            .iter()
            .filter(|c| matches!(c, Change::Lock { .. }))
            .count()
    }

    /// How many users it shuts out: locks, and key changes that keep none
    /// of the user's keys (as sure a lock-out, for whoever holds them).
    pub fn shut_outs(&self) -> usize {
        self.changes
            .iter()
            .filter(|c| match c {
                Change::Lock { .. } => true,
                // None of the keys it had is kept.
                Change::SetKeys {
                    keys,
                    added,
                    removed,
                    ..
                } => !removed.is_empty() && keys.len() == added.len(),
                _ => false,
            })
            .count()
    }

    /// One line: how many of each kind.
    pub fn summary(&self) -> String {
        let count = |f: fn(&Change) -> bool| self.changes.iter().filter(|c| f(c)).count();
        let parts = [
            (count(|c| matches!(c, Change::AddUser { .. })), "to add"),
            (
                count(|c| matches!(c, Change::RepairUser { .. })),
                "to repair",
            ),
            (
                count(|c| matches!(c, Change::SetKeys { .. })),
                "with new keys",
            ),
            (self.locks(), "to lock"),
            (
                count(|c| matches!(c, Change::NextLogin { .. })),
                "changed at next login",
            ),
        ];
        let shown: Vec<String> = parts
            .iter()
            .filter(|(n, _)| *n > 0)
            .map(|(n, what)| format!("{n} {what}"))
            .collect();
        let record = if self.changes.contains(&Change::RecordState) {
            "; the file's new version to record"
        } else {
            ""
        };
        if shown.is_empty() && record.is_empty() {
            "Plan: no changes.".to_owned()
        } else if shown.is_empty() {
            "Plan: no user changes; the file's new version to record.".to_owned()
        } else {
            format!("Plan: users {}{record}.", shown.join(", "))
        }
    }
}

impl fmt::Display for Plan {
    /// One line per change, `+` added, `~` changed, `-` locked.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for note in &self.notes {
            writeln!(f, "note: {note}")?;
        }
        if self.changes.is_empty() {
            return writeln!(f, "No changes: the host matches the access file.");
        }
        writeln!(f, "{}", self.summary())?;
        for change in &self.changes {
            match change {
                Change::AddUser { user, keys } => {
                    writeln!(f, "+ user {user} (new account, {} key(s))", keys.len())?;
                    for key in keys {
                        writeln!(f, "    + key {}", key.fingerprint)?;
                    }
                }
                Change::RepairUser { user, what, .. } => {
                    writeln!(f, "~ user {user}: {}", what.join(", "))?;
                }
                Change::SetKeys {
                    user,
                    added,
                    removed,
                    ..
                } => {
                    writeln!(f, "~ keys of {user}")?;
                    for key in added {
                        writeln!(f, "    + key {key}")?;
                    }
                    for key in removed {
                        writeln!(f, "    - key {key}")?;
                    }
                }
                Change::Lock { user, why, .. } => writeln!(
                    f,
                    "- user {user}: lock now ({why}): sessions end, container removed, home kept"
                )?,
                Change::NextLogin { user, what } => {
                    writeln!(f, "~ {user} at next login: {}", what.join(", "))?;
                }
                Change::RecordState => writeln!(f, "~ record this access file as applied")?,
            }
        }
        let n = self.changes.len();
        writeln!(f, "{n} change{} pending.", if n == 1 { "" } else { "s" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::test_keys::{ALICE, ALICE_NEW, BOB};
    use crate::config::Config;
    use std::path::PathBuf;

    const SHELL: &str = "/usr/local/bin/bastion-shell";

    fn access(users: &str) -> AccessFile {
        let text = format!("[aws]\naccount_id = \"123456789012\"\n{users}");
        AccessFile::parse(&text, &Config::default()).unwrap()
    }

    fn account(name: &str, uid: u32, keys: Option<&str>, locked: bool) -> Account {
        Account {
            name: name.into(),
            uid,
            shell: PathBuf::from(SHELL),
            groups: vec!["bastion-users".into()],
            locked,
            keys: keys.map(|k| format!("{}\n", check_key(k).unwrap().line)),
        }
    }

    fn host(members: Vec<Account>, others: Vec<Account>) -> HostView {
        HostView {
            members: members.into_iter().map(|a| (a.name.clone(), a)).collect(),
            others: others.into_iter().map(|a| (a.name.clone(), a)).collect(),
            containers: Some(["bob".to_owned()].into()),
            shell: PathBuf::from(SHELL),
            groups: Default::default(),
            managed_group: None,
            primary_gids: Default::default(),
            other_managed: Vec::new(),
        }
    }

    fn planned(access: &AccessFile, host: &HostView) -> Result<Plan, PlanError> {
        let state = Applied::of(access, "sha").unwrap();
        plan(access, host, Some(&state), &state)
    }

    #[test]
    fn new_users_are_added_and_members_the_file_drops_are_locked() {
        let file = access(&format!(
            "[[users]]\nname = \"alice\"\nkeys = [\"{ALICE}\"]\n"
        ));
        let plan = planned(
            &file,
            &host(vec![account("bob", 1001, Some(BOB), false)], vec![]),
        )
        .unwrap();
        assert!(
            matches!(&plan.changes[0], Change::AddUser { user, keys } if user == "alice" && keys.len() == 1)
        );
        assert!(
            matches!(&plan.changes[1], Change::Lock { user, why: LockReason::Removed, .. } if user == "bob")
        );
        assert_eq!(plan.changes.len(), 2, "{plan}");
        let shown = plan.to_string();
        assert!(shown.contains("+ user alice"), "{shown}");
        assert!(
            shown.contains("- user bob: lock now (no longer in the access file)"),
            "{shown}"
        );
    }

    #[test]
    fn a_host_that_matches_has_nothing_to_do() {
        let file = access(&format!(
            "[[users]]\nname = \"alice\"\nkeys = [\"{ALICE}\"]\n[[users]]\nname = \"bob\"\nkeys = [\"{BOB}\"]\ndisabled = true\n"
        ));
        let mut view = host(
            vec![
                account("alice", 1000, Some(ALICE), false),
                account("bob", 1001, None, true),
            ],
            vec![],
        );
        view.containers = Some(Default::default());
        let plan = planned(&file, &view).unwrap();
        assert!(plan.is_empty(), "{plan}");
        assert!(plan.to_string().contains("No changes"));
        // bob still has a container: locking is not finished.
        view.containers = Some(["bob".to_owned()].into());
        let plan = planned(&file, &view).unwrap();
        assert!(
            matches!(
                &plan.changes[..],
                [Change::Lock {
                    why: LockReason::Disabled,
                    ..
                }]
            ),
            "{plan}"
        );
    }

    #[test]
    fn a_changed_key_is_shown_as_added_and_removed() {
        let file = access(&format!(
            "[[users]]\nname = \"alice\"\nkeys = [\"{ALICE_NEW}\"]\n"
        ));
        let plan = planned(
            &file,
            &host(vec![account("alice", 1000, Some(ALICE), false)], vec![]),
        )
        .unwrap();
        let Change::SetKeys { added, removed, .. } = &plan.changes[0] else {
            panic!("{plan}")
        };
        assert_eq!(added, &[check_key(ALICE_NEW).unwrap().fingerprint]);
        assert_eq!(removed, &[check_key(ALICE).unwrap().fingerprint]);
    }

    #[test]
    fn only_bastion_accounts_of_the_group_are_the_files() {
        // The group is a system account's primary group, holds `nobody`, or
        // an admin with a shell of their own: none of them is touched.
        let mut members: BTreeMap<String, Account> = [
            account("alice", 1000, Some(ALICE), false),
            account("postgres", 105, None, false),
            account("nobody", 65534, None, false),
            Account {
                shell: PathBuf::from("/bin/bash"),
                ..account("admin", 1001, None, false)
            },
        ]
        .into_iter()
        .map(|a| (a.name.clone(), a))
        .collect();
        let foreign = keep_bastion_accounts(&mut members, std::path::Path::new(SHELL));
        assert_eq!(members.keys().collect::<Vec<_>>(), ["alice"]);
        assert_eq!(foreign.len(), 3);
        // An empty file would lock only alice.
        let plan = planned(&access(""), &host(members.into_values().collect(), vec![])).unwrap();
        assert_eq!(plan.locks(), 1, "{plan}");
    }

    #[test]
    fn a_files_groups_are_never_another_files_nor_anyones_own() {
        let file = access(&format!(
            "[[groups]]\nname = \"team\"\n[[users]]\nname = \"alice\"\nkeys = [\"{ALICE}\"]\ngroups = [\"team\"]\n"
        ));
        let mut view = host(vec![account("alice", 1000, Some(ALICE), false)], vec![]);
        view.other_managed = vec!["team".into()];
        assert!(matches!(
            planned(&file, &view),
            Err(PlanError::ManagedElsewhere { .. })
        ));
        view.other_managed.clear();
        view.groups.insert("team".into(), (1005, vec![]));
        view.primary_gids.insert(1005);
        assert!(matches!(
            planned(&file, &view),
            Err(PlanError::PersonalGroup { gid: 1005, .. })
        ));
        view.primary_gids.clear();
        planned(&file, &view).unwrap();
    }

    #[test]
    fn replacing_every_key_of_a_user_counts_as_shutting_them_out() {
        let file = access(&format!(
            "[[users]]\nname = \"alice\"\nkeys = [\"{ALICE_NEW}\"]\n"
        ));
        let plan = planned(
            &file,
            &host(vec![account("alice", 1000, Some(ALICE), false)], vec![]),
        )
        .unwrap();
        assert_eq!(plan.shut_outs(), 1);
        // Adding a key next to the old one shuts nobody out.
        let file = access(&format!(
            "[[users]]\nname = \"alice\"\nkeys = [\"{ALICE}\", \"{ALICE_NEW}\"]\n"
        ));
        let plan = planned(
            &file,
            &host(vec![account("alice", 1000, Some(ALICE), false)], vec![]),
        )
        .unwrap();
        assert_eq!(plan.shut_outs(), 0, "{plan}");
    }

    #[test]
    fn an_account_outside_the_group_is_never_taken_over() {
        let file = access(&format!(
            "[[users]]\nname = \"postgres\"\nkeys = [\"{ALICE}\"]\n"
        ));
        let mut other = account("postgres", 105, None, false);
        other.shell = PathBuf::from("/bin/bash");
        let err = planned(&file, &host(vec![], vec![other])).unwrap_err();
        assert!(
            matches!(err, PlanError::ForeignAccount { uid: 105, .. }),
            "{err}"
        );
    }
}
