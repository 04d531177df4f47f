//! Who gets what: each user's levels (their own and their groups'), the
//! Kubernetes groups that carry them, and the user's IAM role.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Deserialize;

use super::{AccessFile, Aws, User};
use crate::config::Config;
use crate::iam_role::{self, Role, RoleError};

/// The three levels, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Read (no secrets), logs, and `exec` into pods.
    User,
    /// Everything except roles, bindings, impersonation and escalation.
    Poweruser,
    /// Everything.
    Admin,
}

impl Level {
    pub const ALL: [Level; 3] = [Level::Admin, Level::Poweruser, Level::User];

    pub fn as_str(self) -> &'static str {
        match self {
            Level::User => "user",
            Level::Poweruser => "poweruser",
            Level::Admin => "admin",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `{ cluster = "hyades", namespace = "taurus", level = "admin" }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    pub cluster: String,
    /// Only this namespace; the whole cluster when unset.
    pub namespace: Option<String>,
    pub level: Level,
}

/// Where a level applies on one cluster.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    Cluster,
    Namespace(String),
}

impl Grant {
    pub fn scope(&self) -> Scope {
        match &self.namespace {
            Some(ns) => Scope::Namespace(ns.clone()),
            None => Scope::Cluster,
        }
    }

    /// The Kubernetes group that carries this grant on its cluster:
    /// `bastion:CLUSTER:LEVEL` or `bastion:CLUSTER:NAMESPACE:LEVEL`.
    pub fn kubernetes_group(&self) -> String {
        kubernetes_group(&self.cluster, &self.scope(), self.level)
    }
}

pub fn kubernetes_group(cluster: &str, scope: &Scope, level: Level) -> String {
    match scope {
        Scope::Cluster => format!("bastion:{cluster}:{level}"),
        Scope::Namespace(ns) => format!("bastion:{cluster}:{ns}:{level}"),
    }
}

/// One user's effective levels: cluster → scope → level (the highest, when
/// their own levels and their groups' give several for one scope).
pub type Levels = BTreeMap<String, BTreeMap<Scope, Level>>;

impl AccessFile {
    /// `user`'s effective levels. Unknown groups give nothing (`check`
    /// reports them).
    pub fn levels_of(&self, user: &User) -> Levels {
        let from_groups = self
            .groups
            .iter()
            .filter(|g| user.groups.contains(&g.name))
            .flat_map(|g| g.levels.iter());
        let mut levels = Levels::new();
        for grant in user.levels.iter().chain(from_groups) {
            let at = levels
                .entry(grant.cluster.clone())
                .or_default()
                .entry(grant.scope())
                .or_insert(grant.level);
            *at = (*at).max(grant.level);
        }
        levels
    }

    /// The Kubernetes groups `user` belongs to on `cluster`, sorted.
    pub fn kubernetes_groups(&self, user: &User, cluster: &str) -> BTreeSet<String> {
        self.levels_of(user)
            .get(cluster)
            .into_iter()
            .flat_map(|scopes| scopes.iter())
            .map(|(scope, level)| kubernetes_group(cluster, scope, *level))
            .collect()
    }

    /// The users who may log in (not disabled), in file order.
    pub fn enabled_users(&self) -> impl Iterator<Item = &User> {
        self.users.iter().filter(|u| !u.disabled)
    }
}

/// Why a user has no usable IAM role.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserRoleError {
    #[error("aws.role_template uses {{account}}, but aws.account_id is not set")]
    NoAccount,
    #[error(transparent)]
    Invalid(#[from] RoleError),
}

impl AccessFile {
    /// The role `user`'s sessions really get, as bastiond works it out at
    /// login: the access file's `role`; else bastion.toml's for them (their
    /// `[bastiond.users.NAME]`, their groups', `[bastiond] role`; a name
    /// there is made an ARN as the metadata proxy makes it); else the
    /// template's. What `render` and `apply --iam` use.
    pub fn effective_role(&self, config: &Config, user: &User) -> Result<Role, UserRoleError> {
        if user.role.is_some() {
            return self.aws.role_of(user);
        }
        let groups: Vec<String> = [super::LOGIN_GROUP, self.host.group.as_str()]
            .into_iter()
            .map(str::to_owned)
            .chain(user.groups.iter().cloned())
            .collect();
        // Any uid but 0: resolve only refuses root by it.
        let from_config = config
            .bastiond
            .resolve(&user.name, u32::MAX, &groups)
            .ok()
            .and_then(|settings| settings.role);
        match from_config {
            Some(role) => {
                let proxy = &config.metadata_proxy;
                let account = proxy
                    .account_id
                    .clone()
                    .or_else(|| self.aws.account_id.clone())
                    .ok_or(UserRoleError::NoAccount)?;
                let naming = iam_role::RoleNaming {
                    partition: proxy.partition.clone(),
                    account_id: account,
                    prefix: proxy.role_prefix.clone(),
                };
                Ok(naming.resolve(&role)?)
            }
            None => self.aws.role_of(user),
        }
    }
}

impl Aws {
    /// `user`'s IAM role: their `role` (a name in `account_id`, or an
    /// ARN), else `role_template` filled in.
    pub fn role_of(&self, user: &User) -> Result<Role, UserRoleError> {
        let account = || self.account_id.as_deref().ok_or(UserRoleError::NoAccount);
        match &user.role {
            Some(role) if role.starts_with("arn:") => Ok(iam_role::parse_arn(role)?),
            Some(name) => {
                let naming = iam_role::RoleNaming {
                    partition: self.partition.clone(),
                    account_id: account()?.to_owned(),
                    prefix: String::new(),
                };
                Ok(naming.resolve(name)?)
            }
            None => {
                let mut arn = self
                    .role_template
                    .replace("{partition}", &self.partition)
                    .replace("{user}", &user.name);
                if arn.contains("{account}") {
                    arn = arn.replace("{account}", account()?);
                }
                Ok(iam_role::parse_arn(&arn)?)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::test_keys::{ALICE, BOB, CAROL};
    use crate::config::Config;

    fn file(text: &str) -> AccessFile {
        AccessFile::parse(text, &Config::default()).unwrap()
    }

    const CLUSTERS: &str = r#"
[aws]
account_id = "123456789012"
[[clusters]]
name = "hyades"
server = "https://hyades.example"
certificate_authority_data = "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg=="
region = "eu-west-1"
[[clusters]]
name = "pleiades"
server = "https://pleiades.example"
certificate_authority_data = "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg=="
region = "us-east-1"
"#;

    #[test]
    fn own_and_group_levels_merge_keeping_the_highest_per_scope() {
        let access = file(&format!(
            r#"{CLUSTERS}
[[groups]]
name = "sre"
levels = [{{ cluster = "hyades", level = "poweruser" }}, {{ cluster = "pleiades", namespace = "web", level = "admin" }}]
[[users]]
name = "alice"
keys = ["{ALICE}"]
groups = ["sre"]
levels = [{{ cluster = "hyades", level = "user" }}, {{ cluster = "hyades", namespace = "taurus", level = "admin" }}]
"#
        ));
        let alice = access.user("alice").unwrap();
        let levels = access.levels_of(alice);
        assert_eq!(levels["hyades"][&Scope::Cluster], Level::Poweruser);
        assert_eq!(
            levels["hyades"][&Scope::Namespace("taurus".into())],
            Level::Admin
        );
        assert_eq!(
            levels["pleiades"][&Scope::Namespace("web".into())],
            Level::Admin
        );
        assert_eq!(
            access
                .kubernetes_groups(alice, "hyades")
                .into_iter()
                .collect::<Vec<_>>(),
            ["bastion:hyades:poweruser", "bastion:hyades:taurus:admin"]
        );
    }

    #[test]
    fn the_role_comes_from_the_template_unless_the_user_names_one() {
        let access = file(&format!(
            r#"{CLUSTERS}
[[users]]
name = "alice"
keys = ["{ALICE}"]
[[users]]
name = "bob"
keys = ["{BOB}"]
role = "platform-bob"
[[users]]
name = "carol"
keys = ["{CAROL}"]
role = "arn:aws:iam::210987654321:role/ops/carol"
"#
        ));
        let arn = |u: &str| access.aws.role_of(access.user(u).unwrap()).unwrap().arn;
        assert_eq!(arn("alice"), "arn:aws:iam::123456789012:role/bastion-alice");
        assert_eq!(arn("bob"), "arn:aws:iam::123456789012:role/platform-bob");
        assert_eq!(arn("carol"), "arn:aws:iam::210987654321:role/ops/carol");
    }
}
