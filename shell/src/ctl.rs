//! `bastionctl`'s commands for ops (the reviewers' commands live in
//! [`crate::review`]).

use std::path::Path;

use crate::access::apply::{self as access_apply, ApplyError};
use crate::access::host::HostLayout;
use crate::access::{self, AccessError, AccessFile};
use crate::broker::container::ContainerManager;
use crate::config::{Config, ConfigError};
use crate::secure_file::SecureFileError;

/// `bastionctl check`: validates the configuration file and says what is
/// wrong, naming the key and the line.
pub fn check(path: &Path) -> Result<String, ConfigError> {
    let config = Config::load(path)?;
    let b = &config.bastiond;
    Ok(format!(
        "{}: ok (image {}, network {} {}, {} user and {} group overrides)",
        path.display(),
        b.image,
        b.network.name,
        b.network.subnet,
        b.users.len(),
        b.groups.len()
    ))
}

/// The settings `bastionctl check --get KEY` prints, for scripts
/// (`provisioning/install.sh` reads where the bastion sshd listens), each
/// with how to read it from a config.
/// How one `--get` key is read from a config.
type Read = fn(&Config) -> String;

const GETTABLE: &[(&str, Read)] = &[
    ("sshd.listen", |c| c.sshd.listen.to_string()),
    ("bastiond.socket", |c| {
        c.bastiond.socket.display().to_string()
    }),
    ("bastiond.health_socket", |c| {
        c.bastiond.health_socket.display().to_string()
    }),
    ("bastiond.image", |c| c.bastiond.image.clone()),
    ("bastiond.network.name", |c| c.bastiond.network.name.clone()),
    ("bastiond.network.subnet", |c| {
        c.bastiond.network.subnet.to_string()
    }),
    ("bastiond.network.users_subnet", |c| {
        c.bastiond.network.users_subnet.to_string()
    }),
    ("metadata_proxy.port", |c| c.metadata_proxy.port.to_string()),
    ("metadata_proxy.admin_listen", |c| {
        c.metadata_proxy.admin_listen.to_string()
    }),
    ("recording.log_dir", |c| {
        c.recording.log_dir.display().to_string()
    }),
    ("recording.audit_log", |c| {
        c.recording.audit_log.display().to_string()
    }),
];

/// The keys `bastionctl check --get` knows.
pub fn gettable_keys() -> impl Iterator<Item = &'static str> {
    GETTABLE.iter().map(|(key, _)| *key)
}

/// `bastionctl check --get KEY`: the effective value of one setting of a
/// valid config (defaults included), or `None` for a key it does not know.
pub fn get(config: &Config, key: &str) -> Option<String> {
    GETTABLE
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, read)| read(config))
}

/// Why an `access` command could not run.
#[derive(Debug, thiserror::Error)]
pub enum AccessCommandError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error(transparent)]
    Render(#[from] access::render::RenderError),
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error("cannot open the audit log: {0}")]
    Audit(#[from] crate::audit::AuditError),
    #[error("cannot read the public key file {path}: {source}")]
    KeysFile {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Edit(#[from] access::edit::EditError),
    #[error(transparent)]
    Iam(#[from] access::iam::IamError),
    #[error(
        "{path} would lock {locks} of the {members} users of group {group} at once (locked, or all their keys replaced); nothing was changed. Check that this is the right file (`bastionctl access plan` lists them); if it is, run apply again with --allow-locks {locks}"
    )]
    MassLock {
        path: std::path::PathBuf,
        group: String,
        locks: usize,
        members: usize,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The bastion's config, to check the access file against; its defaults
/// when the file does not exist (checking an access file on a laptop).
fn config_or_defaults(path: &Path) -> Result<Config, ConfigError> {
    match Config::load(path) {
        Err(ConfigError::File(SecureFileError::Read { source, .. }))
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            Ok(Config::default())
        }
        other => other,
    }
}

/// `bastionctl access check`: the file's summary, or every problem.
pub fn access_check(config: &Path, path: &Path) -> Result<String, AccessCommandError> {
    let config = config_or_defaults(config)?;
    let access = AccessFile::load(path, None, &config)?;
    let disabled = access.users.iter().filter(|u| u.disabled).count();
    Ok(format!(
        "{}: ok ({} users, {} disabled; {} groups; {} clusters)",
        path.display(),
        access.users.len(),
        disabled,
        access.groups.len(),
        access.clusters.len()
    ))
}

/// `bastionctl access render --out DIR`: writes the manifests and
/// policies; returns the files written.
pub fn access_render(
    config: &Path,
    path: &Path,
    out: &Path,
) -> Result<Vec<std::path::PathBuf>, AccessCommandError> {
    let config = config_or_defaults(config)?;
    let access = AccessFile::load(path, None, &config)?;
    let rendered = access::render::render(&access, &config)?;
    access::render::write(out, &rendered)?;
    Ok(rendered.keys().map(|p| out.join(p)).collect())
}

/// What `access plan` or `access apply` found or did.
pub struct AccessOutcome {
    /// The plan, as shown to ops.
    pub shown: String,
    /// Changes pending (plan) or made (apply).
    pub changes: usize,
}

/// The users' containers, when the Docker Engine answers.
async fn container_manager(config: &Config) -> Option<ContainerManager> {
    let (docker, _) = crate::contract::docker::connect(config.bastiond.docker_host.as_deref())
        .await
        .ok()?;
    docker.ping().await.ok()?;
    let audit = access_apply::audit_log(config).ok()?;
    Some(ContainerManager::new(docker, audit))
}

/// With `--iam`: where the IAM API is (`None`: the SDK's default).
#[derive(Debug, Clone, Default)]
pub struct IamOptions {
    pub enabled: bool,
    pub endpoint: Option<String>,
}

/// `bastionctl access plan`: what apply would change.
pub async fn access_plan(
    config: &Path,
    path: &Path,
    iam: &IamOptions,
) -> Result<AccessOutcome, AccessCommandError> {
    let config = Config::load(config)?;
    let loaded = access_apply::load(path, &config)?;
    let containers = container_manager(&config).await;
    let planned = access_apply::make_plan(
        &loaded,
        &config,
        &HostLayout::default(),
        containers.as_ref(),
    )
    .await?;
    let mut shown = planned.plan.to_string();
    let mut changes = planned.plan.changes.len();
    if iam.enabled {
        let client = access::iam::client(iam.endpoint.as_deref()).await;
        let roles = access::iam::pending(&client, &loaded.access, &config).await?;
        shown.push_str(&iam_lines(&roles));
        changes += roles.len();
    }
    Ok(AccessOutcome { shown, changes })
}

fn iam_lines(roles: &[access::iam::RoleChange]) -> String {
    use access::iam::RoleChange;
    if roles.is_empty() {
        return "IAM: every user's role matches the access file.\n".to_owned();
    }
    roles
        .iter()
        .map(|r| match r {
            RoleChange::Created { user, arn } => format!("+ IAM role {arn} (for {user})\n"),
            RoleChange::TrustUpdated { user, arn } => {
                format!("~ IAM role {arn} (for {user}): trust policy replaced\n")
            }
        })
        .collect()
}

/// `bastionctl access apply`: makes the host match, under the lock; with
/// `--iam`, the users' IAM roles too.
pub async fn access_apply(
    config: &Path,
    path: &Path,
    iam: &IamOptions,
    allow_locks: usize,
) -> Result<AccessOutcome, AccessCommandError> {
    let config = Config::load(config)?;
    let _lock = access_apply::lock(Path::new(access_apply::LOCK_PATH))?;
    let mut outcome = apply_locked(&config, path, allow_locks).await?;
    if iam.enabled {
        let loaded = access_apply::load(path, &config)?;
        let client = access::iam::client(iam.endpoint.as_deref()).await;
        let roles = access::iam::sync(&client, &loaded.access, &config).await?;
        let audit = access_apply::audit_log(&config)?;
        for role in &roles {
            audit_role(&audit, role, &loaded.sha256)?;
        }
        outcome.shown.push_str(&iam_lines(&roles));
        outcome.changes += roles.len();
    }
    Ok(outcome)
}

fn audit_role(
    audit: &crate::audit::AuditLog,
    role: &access::iam::RoleChange,
    sha256: &str,
) -> Result<(), AccessCommandError> {
    use crate::audit::{AccessRoleChange, AuditEvent};
    use access::iam::RoleChange;
    let change = |user: &str, arn: &str| AccessRoleChange {
        user: user.to_owned(),
        role_arn: arn.to_owned(),
        access_sha256: sha256.to_owned(),
        by_uid: nix::unistd::getuid().as_raw(),
    };
    let event = match role {
        RoleChange::Created { user, arn } => AuditEvent::AccessRoleCreated(change(user, arn)),
        RoleChange::TrustUpdated { user, arn } => {
            AuditEvent::AccessRoleTrustUpdated(change(user, arn))
        }
    };
    audit.append(&event)?;
    Ok(())
}

/// `bastionctl access add-user NAME --key FILE [--group G]…`: puts the user
/// into the access file (creating it when missing) with exactly the keys
/// of FILE, enabled, and applies it; under the lock, so that concurrent
/// calls each keep the other's user.
pub async fn access_add_user(
    config: &Path,
    path: &Path,
    name: &str,
    keys_file: &Path,
    groups: &[String],
) -> Result<AccessOutcome, AccessCommandError> {
    let config = Config::load(config)?;
    let _lock = access_apply::lock(Path::new(access_apply::LOCK_PATH))?;
    let keys_text =
        std::fs::read_to_string(keys_file).map_err(|source| AccessCommandError::KeysFile {
            path: keys_file.to_owned(),
            source,
        })?;
    let keys: Vec<String> = keys_text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    let text = match crate::secure_file::read_trusted(path, crate::secure_file::Owner::Root) {
        Ok(text) => text,
        Err(SecureFileError::Read { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            NEW_ACCESS_FILE.to_owned()
        }
        Err(e) => return Err(AccessError::from(e).into()),
    };
    let edited = access::edit::add_user(&text, name, &keys, groups)?;
    // The edited file must pass every check before it replaces the old one.
    AccessFile::parse(&edited, &config).map_err(|e| match e {
        access::ParseError::Invalid(problems) => AccessError::Invalid {
            path: path.to_owned(),
            problems,
        },
        access::ParseError::TooLarge(size) => AccessError::TooLarge {
            path: path.to_owned(),
            size,
        },
    })?;
    replace_root_file(path, &edited)?;
    apply_locked(&config, path, 0).await
}

/// What `add-user` starts from when there is no access file yet.
const NEW_ACCESS_FILE: &str = "\
# /etc/bastion/access.toml: who may log in, with which SSH keys, as which
# IAM role, on which clusters at which level (docs/access.md; a commented
# example: provisioning/access.toml). Started by `bastionctl access
# add-user`; yours to edit, then `bastionctl access apply`.
";

/// Writes a root-owned 0644 file whole (temporary file, then rename).
fn replace_root_file(path: &Path, text: &str) -> Result<(), AccessCommandError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let write_err = |source| AccessCommandError::Write {
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("toml.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&tmp)
        .map_err(write_err)?;
    file.write_all(text.as_bytes()).map_err(write_err)?;
    file.sync_all().map_err(write_err)?;
    std::fs::rename(&tmp, path).map_err(write_err)
}

/// Apply refuses, unless told how many, to lock more than this many users
/// and more than a quarter of the group at once (an empty or truncated
/// file, the wrong file), or to lock users with a file that lists none.
const UNASKED_LOCKS: usize = 5;

async fn apply_locked(
    config: &Config,
    path: &Path,
    allow_locks: usize,
) -> Result<AccessOutcome, AccessCommandError> {
    let loaded = access_apply::load(path, config)?;
    let audit = access_apply::audit_log(config)?;
    let containers = container_manager(config).await;
    let layout = HostLayout::default();
    let planned = access_apply::make_plan(&loaded, config, &layout, containers.as_ref()).await?;
    let locks = planned.plan.shut_outs();
    let members = planned.host.members.len();
    let none_listed = loaded.access.enabled_users().next().is_none();
    let mass = (locks > UNASKED_LOCKS && locks * 4 > members) || (none_listed && locks > 0);
    if mass && locks > allow_locks {
        return Err(AccessCommandError::MassLock {
            path: loaded.path.clone(),
            group: loaded.access.host.group.clone(),
            locks,
            members,
        });
    }
    let shown = planned.plan.to_string();
    let changes = access_apply::apply(
        &loaded,
        planned,
        config,
        &layout,
        &audit,
        containers.as_ref(),
    )
    .await?;
    Ok(AccessOutcome { shown, changes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_gettable_key_has_a_value_and_others_none() {
        let config = Config::parse("[sshd]\nlisten = \"127.0.0.1:2022\"\n").unwrap();
        for key in gettable_keys() {
            assert!(get(&config, key).is_some(), "{key}");
        }
        assert_eq!(get(&config, "sshd.listen").unwrap(), "127.0.0.1:2022");
        assert_eq!(get(&config, "bastiond.users"), None);
    }
}
