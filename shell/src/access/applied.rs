//! What `apply` last made true: `<state_dir>/access/<group>.json`, one per
//! managed group (normally `bastion-users`), written by `apply` alone
//! (root, 0600, replaced whole). bastiond reads it at each login (cached
//! while the file is unchanged): a member of a managed group logs in only
//! as an enabled user of that state, with its role, image and limits, and
//! sees its clusters. An edited but unapplied access file changes nothing.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::{AccessFile, Cluster};
use crate::config::{PartialLimits, UserSettings};

/// One applied access file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Applied {
    /// The group whose members this state governs.
    pub group: String,
    /// SHA-256 of the access file's bytes.
    pub source_sha256: String,
    pub users: BTreeMap<String, AppliedUser>,
}

/// One user as applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppliedUser {
    pub enabled: bool,
    /// `SHA256:…` of their keys, in file order.
    pub key_fingerprints: Vec<String>,
    /// Their IAM role's ARN (empty when disabled).
    pub role_arn: String,
    /// The access file names the role itself (`role`), rather than
    /// `aws.role_template` giving it: it then wins over bastion.toml.
    #[serde(default)]
    pub role_explicit: bool,
    /// Their Linux supplementary groups from the access file (its groups).
    #[serde(default)]
    pub groups: Vec<String>,
    pub image: Option<String>,
    pub limits: Option<PartialLimits>,
    /// The clusters they have a level on, in file order.
    pub clusters: Vec<AppliedCluster>,
}

/// What a user's kubeconfig needs of one cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppliedCluster {
    pub name: String,
    pub server: String,
    /// Base64 PEM.
    pub certificate_authority_data: String,
    pub region: String,
    pub eks_name: String,
    /// Where the context starts.
    pub namespace: String,
}

/// Why the applied state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum AppliedError {
    #[error("cannot read the applied access state {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "the applied access state {path} is damaged ({source}); run `bastionctl access apply` again"
    )]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "the applied access state {path} is not owned by root or is writable by others; refusing it"
    )]
    Untrusted { path: PathBuf },
    #[error("cannot write the applied access state {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "the applied access state {path} is for group {group}, not the group it is named after; refusing it"
    )]
    WrongGroup { path: PathBuf, group: String },
    #[error("cannot read the CA file {path} of cluster {cluster}: {source}")]
    CaFile {
        cluster: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The folder of applied states.
pub fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("access")
}

/// The groups that have an applied state (that access files manage).
pub fn managed_groups(state_dir: &Path) -> Vec<String> {
    let mut groups: Vec<String> = std::fs::read_dir(dir(state_dir))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_suffix(".json").map(str::to_owned)
        })
        .collect();
    groups.sort();
    groups
}

/// The applied state of `group`.
pub fn path(state_dir: &Path, group: &str) -> PathBuf {
    dir(state_dir).join(format!("{group}.json"))
}

impl Applied {
    /// The state `access` describes (its users resolved: roles, clusters).
    pub fn of(access: &AccessFile, source_sha256: &str) -> Result<Self, AppliedError> {
        let mut users = BTreeMap::new();
        for user in &access.users {
            let mut clusters = Vec::new();
            let levels = access.levels_of(user);
            for cluster in &access.clusters {
                if let Some(scopes) = levels.get(&cluster.name).filter(|_| !user.disabled) {
                    clusters.push(applied_cluster(cluster, scopes)?);
                }
            }
            let role_arn = if user.disabled {
                String::new()
            } else {
                access.aws.role_of(user).map(|r| r.arn).unwrap_or_default()
            };
            users.insert(
                user.name.clone(),
                AppliedUser {
                    enabled: !user.disabled,
                    key_fingerprints: user
                        .keys
                        .iter()
                        .filter_map(|k| super::ssh_keys::check_key(k).ok())
                        .map(|k| k.fingerprint)
                        .collect(),
                    role_arn,
                    role_explicit: user.role.is_some(),
                    groups: user.groups.clone(),
                    image: user.image.clone(),
                    limits: user.limits,
                    clusters,
                },
            );
        }
        Ok(Self {
            group: access.host.group.clone(),
            source_sha256: source_sha256.to_owned(),
            users,
        })
    }

    /// Reads the state at `path`: `None` when there is none.
    pub fn read(path: &Path) -> Result<Option<Self>, AppliedError> {
        let read_err = |source| AppliedError::Read {
            path: path.to_owned(),
            source,
        };
        let file = match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc_nofollow())
            .open(path)
        {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(read_err(e)),
        };
        let meta = file.metadata().map_err(read_err)?;
        if meta.uid() != 0 || meta.mode() & 0o022 != 0 || !meta.is_file() {
            return Err(AppliedError::Untrusted {
                path: path.to_owned(),
            });
        }
        serde_json::from_reader(io::BufReader::new(file))
            .map(Some)
            .map_err(|source| AppliedError::Parse {
                path: path.to_owned(),
                source,
            })
    }

    /// Replaces the state at `path` whole (0600, its folder 0700).
    pub fn write(&self, path: &Path) -> Result<(), AppliedError> {
        let write_err = |source| AppliedError::Write {
            path: path.to_owned(),
            source,
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(write_err)?;
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(self).expect("applied state serializes");
        {
            use std::io::Write as _;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(write_err)?;
            file.write_all(&text).map_err(write_err)?;
            file.sync_all().map_err(write_err)?;
        }
        std::fs::rename(&tmp, path).map_err(write_err)
    }
}

fn libc_nofollow() -> i32 {
    rustix::fs::OFlags::NOFOLLOW.bits() as i32
}

fn applied_cluster(
    cluster: &Cluster,
    scopes: &BTreeMap<super::Scope, super::Level>,
) -> Result<AppliedCluster, AppliedError> {
    let ca = match (
        &cluster.certificate_authority_data,
        &cluster.certificate_authority,
    ) {
        (Some(data), _) => data.trim().to_owned(),
        (None, Some(path)) => {
            use base64::Engine as _;
            let pem = std::fs::read(path).map_err(|source| AppliedError::CaFile {
                cluster: cluster.name.clone(),
                path: path.clone(),
                source,
            })?;
            base64::engine::general_purpose::STANDARD.encode(pem)
        }
        (None, None) => String::new(),
    };
    // A user whose only grants here are in namespaces starts in the first.
    let namespace = if scopes.contains_key(&super::Scope::Cluster) {
        cluster.namespace.clone()
    } else {
        scopes.keys().find_map(|s| match s {
            super::Scope::Namespace(ns) => Some(ns.clone()),
            super::Scope::Cluster => None,
        })
    };
    Ok(AppliedCluster {
        name: cluster.name.clone(),
        server: cluster.server.clone(),
        certificate_authority_data: ca,
        region: cluster.region.clone(),
        eks_name: cluster.eks_name().to_owned(),
        namespace: namespace.unwrap_or_else(|| "default".to_owned()),
    })
}

/// What a login sees of the applied states.
#[derive(Debug, Clone, PartialEq)]
pub enum Admission {
    /// In no managed group: bastion.toml alone decides.
    Unmanaged,
    /// An enabled user of the applied state of `group`.
    Enabled {
        group: String,
        user: Box<AppliedUser>,
    },
    /// A member of a managed group that is not an enabled user of it.
    Refused { group: String },
}

impl AppliedUser {
    /// `settings` (bastion.toml's for this user) with the access file's:
    /// its `role`, `image` and `limits` win; the role template's role
    /// applies only when bastion.toml sets none.
    pub fn apply_to(&self, settings: &mut UserSettings) {
        if !self.role_arn.is_empty() && (self.role_explicit || settings.role.is_none()) {
            settings.role = Some(self.role_arn.clone());
        }
        if let Some(image) = &self.image {
            settings.image.clone_from(image);
        }
        if let Some(limits) = &self.limits {
            limits.apply_to(&mut settings.limits);
        }
    }
}

/// What identifies a version of a state file: mtime (s, ns), inode, size.
type Stamp = (i64, i64, u64, u64);

/// The applied states of a bastion, each re-read only when its file
/// changes.
#[derive(Debug, Default)]
pub struct AppliedStates {
    cache: Mutex<std::collections::HashMap<PathBuf, (Stamp, Applied)>>,
}

impl AppliedStates {
    /// Who `user` (member of `groups`) is to the applied states under
    /// `state_dir`. Only the states of the user's own groups are read: a
    /// damaged state refuses its group's members, nobody else.
    pub fn admission(
        &self,
        state_dir: &Path,
        user: &str,
        groups: &[String],
    ) -> Result<Admission, AppliedError> {
        let mut first = None;
        for group in groups {
            let Some(state) = self.state(&path(state_dir, group), group)? else {
                continue;
            };
            // In several managed groups: enabled by any of them is enough.
            if let Some(applied) = state.users.get(user).filter(|u| u.enabled) {
                return Ok(Admission::Enabled {
                    group: group.clone(),
                    user: Box::new(applied.clone()),
                });
            }
            first.get_or_insert_with(|| group.clone());
        }
        Ok(match first {
            Some(group) => Admission::Refused { group },
            None => Admission::Unmanaged,
        })
    }

    /// The state of `group` at `path`, from the cache while unchanged.
    fn state(&self, path: &Path, group: &str) -> Result<Option<Applied>, AppliedError> {
        let meta = match std::fs::symlink_metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.cache.lock().expect("applied states lock").remove(path);
                return Ok(None);
            }
            Err(source) => {
                return Err(AppliedError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        let stamp = (meta.mtime(), meta.mtime_nsec(), meta.ino(), meta.size());
        if let Some((known, state)) = self.cache.lock().expect("applied states lock").get(path)
            && *known == stamp
        {
            return Ok(Some(state.clone()));
        }
        let Some(state) = Applied::read(path)? else {
            return Ok(None);
        };
        if state.group != group {
            return Err(AppliedError::WrongGroup {
                path: path.to_owned(),
                group: state.group,
            });
        }
        self.cache
            .lock()
            .expect("applied states lock")
            .insert(path.to_owned(), (stamp, state.clone()));
        Ok(Some(state))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::test_keys::{ALICE, BOB};
    use crate::config::Config;

    fn state(text: &str) -> Applied {
        let access = AccessFile::parse(text, &Config::default()).unwrap();
        Applied::of(&access, "sha").unwrap()
    }

    fn file(disabled_bob: bool) -> String {
        format!(
            "[host]\ngroup = \"team\"\n[aws]\naccount_id = \"123456789012\"\n\
             [[users]]\nname = \"alice\"\nkeys = [\"{ALICE}\"]\nimage = \"team/a:1\"\n\
             [[users]]\nname = \"bob\"\nkeys = [\"{BOB}\"]\ndisabled = {disabled_bob}\n"
        )
    }

    #[test]
    fn members_of_a_managed_group_get_in_only_as_its_enabled_users() {
        let dir = tempfile::tempdir().unwrap();
        let states = AppliedStates::default();
        let groups = |g: &[&str]| g.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // No applied state: bastion.toml alone decides.
        assert_eq!(
            states
                .admission(dir.path(), "alice", &groups(&["team"]))
                .unwrap(),
            Admission::Unmanaged
        );
        state(&file(false))
            .write(&path(dir.path(), "team"))
            .unwrap();
        match states
            .admission(dir.path(), "alice", &groups(&["team"]))
            .unwrap()
        {
            Admission::Enabled { user, .. } => {
                assert_eq!(
                    user.role_arn,
                    "arn:aws:iam::123456789012:role/bastion-alice"
                );
                assert_eq!(user.image.as_deref(), Some("team/a:1"));
            }
            other => panic!("{other:?}"),
        }
        // A member the file does not list.
        assert_eq!(
            states
                .admission(dir.path(), "mallory", &groups(&["team"]))
                .unwrap(),
            Admission::Refused {
                group: "team".into()
            }
        );
        // Not in the group: the file has nothing to say.
        assert_eq!(
            states
                .admission(dir.path(), "carol", &groups(&["other"]))
                .unwrap(),
            Admission::Unmanaged
        );
        // bob is disabled by a new apply: refused from then on.
        assert!(matches!(
            states
                .admission(dir.path(), "bob", &groups(&["team"]))
                .unwrap(),
            Admission::Enabled { .. }
        ));
        state(&file(true)).write(&path(dir.path(), "team")).unwrap();
        assert_eq!(
            states
                .admission(dir.path(), "bob", &groups(&["team"]))
                .unwrap(),
            Admission::Refused {
                group: "team".into()
            }
        );
    }

    #[test]
    fn a_damaged_state_refuses_its_groups_members_only() {
        let dir = tempfile::tempdir().unwrap();
        state(&file(false))
            .write(&path(dir.path(), "team"))
            .unwrap();
        std::fs::write(path(dir.path(), "other"), "{ not json").unwrap();
        let states = AppliedStates::default();
        assert!(matches!(
            states
                .admission(dir.path(), "alice", &["team".into()])
                .unwrap(),
            Admission::Enabled { .. }
        ));
        assert!(matches!(
            states.admission(dir.path(), "carol", &["other".into()]),
            Err(AppliedError::Parse { .. })
        ));
        // A state copied under another group's name is refused too.
        std::fs::copy(path(dir.path(), "team"), path(dir.path(), "other")).unwrap();
        assert!(matches!(
            states.admission(dir.path(), "alice", &["other".into()]),
            Err(AppliedError::WrongGroup { .. })
        ));
    }

    #[test]
    fn a_state_others_could_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let at = path(dir.path(), "team");
        state(&file(false)).write(&at).unwrap();
        std::fs::set_permissions(&at, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(matches!(
            AppliedStates::default().admission(dir.path(), "alice", &["team".into()]),
            Err(AppliedError::Untrusted { .. })
        ));
    }
}
