//! `bastionctl access render --out DIR`: everything the clusters and AWS
//! need, one folder per cluster plus `_iam/`, sorted and deterministic so
//! that a change to the access file reviews as a small diff in git.
//!
//! - `CLUSTER/rbac.yaml`: the three levels' ClusterRoles and the
//!   ClusterRoleBindings/RoleBindings of the groups in use ([`rbac`]);
//! - `CLUSTER/access-entries.json` and `CLUSTER/access-entries.sh`: EKS
//!   access entries as the API's requests and as `aws eks` commands, or
//!   `CLUSTER/aws-auth.yaml` for clusters without access entries ([`eks`]);
//! - `_iam/users/USER.json`: each user's role with its trust policy, and
//!   `_iam/bastion-host-policy.json`, what the bastion's own role needs
//!   ([`iam`]).

pub mod eks;
pub mod iam;
pub mod rbac;

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use super::AccessFile;
use crate::config::Config;

/// Why render could not write its output.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{path} exists and was not written by render (no {MARKER}); choose an empty or earlier output folder"
    )]
    NotRenderOutput { path: PathBuf },
    #[error("cannot render: {0}")]
    Invalid(String),
}

/// Written at the top of the output folder; render only replaces a folder
/// that holds it (or an empty one).
pub const MARKER: &str = ".bastion-render";

/// The rendered files: relative path → content.
pub type Rendered = BTreeMap<PathBuf, String>;

/// Everything render writes, in memory.
/// Roles are the ones sessions really get ([`AccessFile::effective_role`]:
/// bastion.toml's where the access file names none).
pub fn render(access: &AccessFile, config: &Config) -> Result<Rendered, RenderError> {
    let mut out = Rendered::new();
    for cluster in &access.clusters {
        let dir = PathBuf::from(&cluster.name);
        out.insert(dir.join("rbac.yaml"), rbac::render(access, cluster));
        match cluster.auth {
            super::ClusterAuth::AccessEntries => {
                let entries = eks::access_entries(access, config, cluster)?;
                out.insert(dir.join("access-entries.json"), eks::entries_json(&entries));
                out.insert(
                    dir.join("access-entries.sh"),
                    eks::entries_commands(cluster, &entries),
                );
            }
            super::ClusterAuth::AwsAuth => {
                out.insert(
                    dir.join("aws-auth.yaml"),
                    eks::aws_auth(access, config, cluster)?,
                );
            }
        }
    }
    for (name, content) in iam::render(access, config)? {
        out.insert(Path::new("_iam").join(name), content);
    }
    Ok(out)
}

/// Writes `rendered` to `dir`, replacing what an earlier render wrote
/// there: the files its marker lists that are no longer rendered are
/// removed, and nothing else of the folder is touched (it may be a git
/// checkout). A folder with other content and no marker is refused.
pub fn write(dir: &Path, rendered: &Rendered) -> Result<(), RenderError> {
    let write_err = |path: &Path| {
        let path = path.to_owned();
        move |source| RenderError::Write { path, source }
    };
    let marker = dir.join(MARKER);
    let earlier: Vec<PathBuf> = match std::fs::read_to_string(&marker) {
        Ok(text) => text
            .lines()
            .skip(1)
            .map(PathBuf::from)
            .filter(|p| {
                p.is_relative() && !p.components().any(|c| c == std::path::Component::ParentDir)
            })
            .collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let empty = match dir.read_dir() {
                Ok(mut entries) => entries.next().is_none(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => true,
                Err(e) => return Err(write_err(dir)(e)),
            };
            if !empty {
                return Err(RenderError::NotRenderOutput {
                    path: dir.to_owned(),
                });
            }
            Vec::new()
        }
        Err(e) => return Err(write_err(&marker)(e)),
    };
    for relative in earlier.iter().filter(|p| !rendered.contains_key(*p)) {
        let path = dir.join(relative);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(write_err(&path)(e)),
            _ => {}
        }
        if let Some(parent) = path.parent().filter(|p| *p != dir) {
            // Gone when it held only rendered files.
            let _ = std::fs::remove_dir(parent);
        }
    }
    for (relative, content) in rendered {
        let path = dir.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(write_err(parent))?;
        }
        std::fs::write(&path, content).map_err(write_err(&path))?;
    }
    let mut listing =
        "Written by `bastionctl access render` (edit the access file instead); its files:\n"
            .to_owned();
    for relative in rendered.keys() {
        listing.push_str(&relative.to_string_lossy());
        listing.push('\n');
    }
    std::fs::write(&marker, listing).map_err(write_err(&marker))?;
    Ok(())
}

/// YAML documents, `---`-separated, from serializable values.
pub(crate) fn yaml_documents<T: serde::Serialize>(docs: &[T]) -> String {
    let mut out = String::new();
    for doc in docs {
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(doc).expect("manifests serialize"));
    }
    out
}
