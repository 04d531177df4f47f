//! Access as code: `/etc/bastion/access.toml`, the one reviewed file that
//! says who may log in, with which SSH keys, as which IAM role, on which
//! Kubernetes clusters at which level (docs/access.md).
//!
//! - [`AccessFile`] is the file as written; [`AccessFile::load`] parses it
//!   and runs every check ([`check`]), reporting every problem at its key
//!   and line.
//! - [`grants`] works out each user's effective levels (their own and
//!   their groups') and their IAM role.
//! - [`render`] writes what the clusters and AWS need (RBAC, EKS access
//!   entries, aws-auth, IAM trust policies), deterministic for review.

pub mod applied;
pub mod apply;
mod check;
pub mod edit;
pub mod grants;
pub mod host;
pub mod iam;
pub mod kubeconfig;
pub mod plan;
pub mod render;
pub mod ssh_keys;

/// Real public keys (made with ssh-keygen for the tests; the private
/// halves were thrown away).
#[cfg(test)]
pub mod test_keys {
    pub const ALICE: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICTIDQrAlg/lQn+Jmzm0wxB9I8SX+dJbDqJ7qoYvuY9B alice@laptop";
    pub const BOB: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIN9ypLiQItSrJXhgc5n+wzBkQgQ0fuyUKN0kQr97ucha bob@laptop";
    pub const CAROL: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEIM75NqHlT2Zq8yUobzA2bch9as4sdcoXr4SWiS5keL carol@laptop";
    pub const ALICE_NEW: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICXNsyRwFtVvJogKLShmjrVA3je9i4KTDNfp9br7AvpG alice2@laptop";
}

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::config::problems::{self, Problems};
use crate::config::{Config, PartialLimits, Problem};
use crate::secure_file::{self, Owner, SecureFileError};

pub use grants::{Grant, Level, Scope};

/// Where the access file lives unless `--access` says otherwise.
pub const DEFAULT_PATH: &str = "/etc/bastion/access.toml";

/// Larger files are refused before parsing: 10,000 users with a few keys
/// each fit in well under this; a file this large is a mistake or hostile.
pub const MAX_FILE_BYTES: usize = 4 << 20;

/// The access file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessFile {
    pub host: Host,
    pub aws: Aws,
    pub clusters: Vec<Cluster>,
    pub groups: Vec<Group>,
    pub users: Vec<User>,
}

/// `[host]`: which accounts of the bastion host the file manages.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Host {
    /// The group whose members are the file's users: apply creates users
    /// in it, locks its members the file no longer lists as enabled, and
    /// never touches an account outside it.
    pub group: String,
}

impl Default for Host {
    fn default() -> Self {
        Self {
            group: LOGIN_GROUP.to_owned(),
        }
    }
}

/// The group sshd lets in (`AllowGroups`): every user apply creates is in
/// it, besides `host.group` when that is another group.
pub const LOGIN_GROUP: &str = "bastion-users";

/// `[aws]`: how users' IAM roles are named, and who may assume them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Aws {
    /// The account of the users' roles (`{account}` in `role_template`).
    pub account_id: Option<String>,
    pub partition: String,
    /// A user's role unless they set `role`: `{partition}`, `{account}`
    /// and `{user}` are filled in.
    pub role_template: String,
    /// The bastion host's own role (its instance profile): the only
    /// principal the users' roles trust.
    pub bastion_role: Option<String>,
}

impl Default for Aws {
    fn default() -> Self {
        Self {
            account_id: None,
            partition: "aws".to_owned(),
            role_template: "arn:{partition}:iam::{account}:role/bastion-{user}".to_owned(),
            bastion_role: None,
        }
    }
}

/// How a cluster maps IAM roles to Kubernetes identities.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClusterAuth {
    /// EKS access entries (the EKS API).
    #[default]
    AccessEntries,
    /// The `aws-auth` ConfigMap (clusters without access entries).
    AwsAuth,
}

/// `[[clusters]]`: one Kubernetes cluster users may reach.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    /// The context's name in kubeconfigs, and the folder `render` writes.
    pub name: String,
    /// API server URL (`https://…`).
    pub server: String,
    /// The API server's CA, base64 PEM as in a kubeconfig…
    pub certificate_authority_data: Option<String>,
    /// …or a PEM file on the bastion host.
    pub certificate_authority: Option<PathBuf>,
    pub region: String,
    /// The EKS cluster's name (`aws eks get-token --cluster-name`);
    /// `name` when unset.
    pub eks_name: Option<String>,
    /// Namespace contexts start in, unless a user's only grants on the
    /// cluster are for one namespace.
    pub namespace: Option<String>,
    #[serde(default)]
    pub auth: ClusterAuth,
    /// API groups of custom resources the poweruser and user levels
    /// cover, besides Kubernetes' own.
    #[serde(default)]
    pub extra_api_groups: Vec<String>,
    /// With `auth = "aws-auth"`: the nodes' IAM role ARNs, which the
    /// rendered ConfigMap (it replaces the cluster's) must keep mapping.
    #[serde(default)]
    pub node_roles: Vec<String>,
}

impl Cluster {
    pub fn eks_name(&self) -> &str {
        self.eks_name.as_deref().unwrap_or(&self.name)
    }
}

/// `[[groups]]`: levels shared by their members.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    pub name: String,
    #[serde(default)]
    pub levels: Vec<Grant>,
}

/// `[[users]]`: one person.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// The Linux account name, also their STS session name.
    pub name: String,
    /// OpenSSH public keys (`ssh-ed25519 AAAA… comment`).
    #[serde(default)]
    pub keys: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub levels: Vec<Grant>,
    /// An IAM role name or ARN instead of `aws.role_template`'s.
    pub role: Option<String>,
    /// Their container's image instead of `[bastiond] image`.
    pub image: Option<String>,
    pub limits: Option<PartialLimits>,
    /// Locked: no login, no container; the home is kept.
    #[serde(default)]
    pub disabled: bool,
}

/// Why the access file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error(transparent)]
    File(#[from] SecureFileError),
    #[error(
        "{path}: more than an access file may hold ({MAX_FILE_BYTES} bytes; {size} or more); it was not used"
    )]
    TooLarge { path: PathBuf, size: usize },
    #[error("{}", shown(path, problems))]
    Invalid { path: PathBuf, problems: Problems },
}

fn shown(path: &Path, problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("{}: {p}", path.display()))
        .collect::<Vec<_>>()
        .join("\n")
}

impl AccessError {
    /// The problems found in the file (none for the other errors).
    pub fn problems(&self) -> &[Problem] {
        match self {
            AccessError::Invalid { problems, .. } => problems,
            _ => &[],
        }
    }
}

impl AccessFile {
    /// Loads and checks the file at `path` against the bastion's `config`
    /// (the two files must not disagree). With `owner`, the file must be
    /// owned by it and writable by no one else (what `apply` acts on);
    /// without, any file is read (`check` and `render` of a checkout).
    pub fn load(path: &Path, owner: Option<Owner>, config: &Config) -> Result<Self, AccessError> {
        let text = match owner {
            Some(owner) => secure_file::read_trusted(path, owner)?,
            None => read_bounded(path)?,
        };
        Self::parse(&text, config).map_err(|e| match e {
            ParseError::TooLarge(size) => AccessError::TooLarge {
                path: path.to_owned(),
                size,
            },
            ParseError::Invalid(problems) => AccessError::Invalid {
                path: path.to_owned(),
                problems,
            },
        })
    }

    /// Parses and checks access-file text.
    pub fn parse(text: &str, config: &Config) -> Result<Self, ParseError> {
        if text.len() > MAX_FILE_BYTES {
            return Err(ParseError::TooLarge(text.len()));
        }
        problems::parse_checked(text, |file: &AccessFile, checks| {
            check::check(file, config, checks)
        })
        .map_err(ParseError::Invalid)
    }

    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.iter().find(|u| u.name == name)
    }

    pub fn cluster(&self, name: &str) -> Option<&Cluster> {
        self.clusters.iter().find(|c| c.name == name)
    }
}

/// Reads at most one byte more than an access file may hold (so a huge
/// file is refused without reading it all).
fn read_bounded(path: &Path) -> Result<String, AccessError> {
    use std::io::Read as _;
    let read_err = |source| SecureFileError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut text = String::new();
    file.take(MAX_FILE_BYTES as u64 + 1)
        .read_to_string(&mut text)
        .map_err(read_err)?;
    if text.len() > MAX_FILE_BYTES {
        return Err(AccessError::TooLarge {
            path: path.to_owned(),
            size: text.len(),
        });
    }
    Ok(text)
}

/// Why access-file text is not usable.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("{0} bytes is more than an access file may hold ({MAX_FILE_BYTES} bytes)")]
    TooLarge(usize),
    #[error("{0}")]
    Invalid(Problems),
}
