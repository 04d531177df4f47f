//! A user's account inside their container: the image's own `/etc/passwd`
//! and `/etc/group` with the user added, and the container-credentials
//! token. They are files on the host, under `<state_dir>/accounts/<user>/`,
//! mounted read-only into the container (whose own file system is
//! read-only as a whole), so nothing the user does inside can change them
//! or use them to grow the container's writable space.
//!
//! The image's own files are read once per image id, from a container
//! created from the image for that alone (never started, removed at once):
//! a user's container shows the mounted files, not the image's.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    DownloadFromContainerOptionsBuilder, RemoveContainerOptionsBuilder,
};
use futures_util::TryStreamExt;

use crate::broker::identity::Identity;

use crate::contract::TOKEN_PATH_IN_CONTAINER;

/// Why a user's account files could not be made.
#[derive(Debug, thiserror::Error)]
pub enum AccountsError {
    #[error("Docker Engine failed to {action} for image {image}: {source}")]
    Docker {
        action: &'static str,
        image: String,
        #[source]
        source: DockerError,
    },
    #[error("cannot write the account file {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// An image's own `/etc/passwd` and `/etc/group`.
#[derive(Debug)]
pub struct ImageAccounts {
    pub passwd: String,
    pub group: String,
}

/// The host files of one user's account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountFiles {
    pub passwd: PathBuf,
    pub group: PathBuf,
    pub token: PathBuf,
}

impl AccountFiles {
    /// Where `user`'s files live under `state_dir`.
    pub fn of(state_dir: &Path, user: &str) -> Self {
        let dir = state_dir.join("accounts").join(user);
        Self {
            passwd: dir.join("passwd"),
            group: dir.join("group"),
            token: dir.join("aws-container-token"),
        }
    }

    /// The read-only bind mounts of a shell container.
    pub fn binds(&self) -> [String; 3] {
        let [passwd, group] = self.account_binds();
        [
            passwd,
            group,
            format!("{}:{TOKEN_PATH_IN_CONTAINER}:ro", self.token.display()),
        ]
    }

    /// The account files alone (a file-transfer container: no token).
    pub fn account_binds(&self) -> [String; 2] {
        [
            format!("{}:/etc/passwd:ro", self.passwd.display()),
            format!("{}:/etc/group:ro", self.group.display()),
        ]
    }

    /// Writes the files (each replaced whole): the account lines for `who`
    /// and `token`, readable by the user only.
    pub fn write(
        &self,
        image: &ImageAccounts,
        who: &Identity,
        token: &[u8],
    ) -> Result<(), AccountsError> {
        self.write_accounts(image, who)?;
        replace(&self.token, token, 0o400, Some((who.uid, who.gid)))
    }

    /// Writes the account files only (the token stays as it is).
    pub fn write_accounts(
        &self,
        image: &ImageAccounts,
        who: &Identity,
    ) -> Result<(), AccountsError> {
        let (passwd, group) = compose(image, who);
        if let Some(dir) = self.passwd.parent() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|source| AccountsError::Write {
                    path: dir.to_owned(),
                    source,
                })?;
        }
        replace(&self.passwd, passwd.as_bytes(), 0o644, None)?;
        replace(&self.group, group.as_bytes(), 0o644, None)
    }
}

/// Writes `path` whole (a new file renamed over the old one).
fn replace(
    path: &Path,
    data: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
) -> Result<(), AccountsError> {
    let err = |source| AccountsError::Write {
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("new");
    let _ = fs::remove_file(&tmp);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(err)?;
    file.write_all(data).map_err(err)?;
    // Exactly `mode`, whatever bastiond's umask (its unit's UMask, or a
    // narrower one) took away at create: a 0600 /etc/passwd breaks `id`
    // and every name lookup inside the container.
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(err)?;
    file.sync_all().map_err(err)?;
    if let Some((uid, gid)) = owner {
        nix::unistd::fchown(
            &file,
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(gid)),
        )
        .map_err(|e| err(e.into()))?;
    }
    fs::rename(&tmp, path).map_err(err)
}

/// The image's account files with the user added (their own line, and a
/// group line for their primary group).
pub fn compose(image: &ImageAccounts, who: &Identity) -> (String, String) {
    let group_name = uzers::get_group_by_gid(who.gid)
        .and_then(|g| g.name().to_str().map(str::to_owned))
        .unwrap_or_else(|| who.name.clone());
    let passwd = with_line(
        &image.passwd,
        &who.name,
        &format!(
            "{}:x:{}:{}::/home/{}:/bin/bash",
            who.name, who.uid, who.gid, who.name
        ),
    );
    let group = with_line(
        &image.group,
        &group_name,
        &format!("{group_name}:x:{}:", who.gid),
    );
    (passwd, group)
}

/// `file` with `line` appended unless an entry named `name` exists.
fn with_line(file: &str, name: &str, line: &str) -> String {
    let prefix = format!("{name}:");
    if file.lines().any(|l| l.starts_with(&prefix)) {
        return file.to_owned();
    }
    let mut out = file.to_owned();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(line);
    out.push('\n');
    out
}

/// Images' own account files, by image id (an id names immutable content,
/// so an entry never goes stale).
#[derive(Default)]
pub struct ImageAccountsCache {
    by_id: Mutex<HashMap<String, Arc<ImageAccounts>>>,
}

impl ImageAccountsCache {
    /// The account files of image `image_id`, read once.
    pub async fn get(
        &self,
        docker: &Docker,
        image_id: &str,
    ) -> Result<Arc<ImageAccounts>, AccountsError> {
        let cached = self
            .by_id
            .lock()
            .expect("image accounts map poisoned")
            .get(image_id)
            .cloned();
        if let Some(found) = cached {
            return Ok(found);
        }
        let found = Arc::new(read_from_image(docker, image_id).await?);
        self.by_id
            .lock()
            .expect("image accounts map poisoned")
            .insert(image_id.to_owned(), found.clone());
        Ok(found)
    }
}

/// Reads `/etc/passwd` and `/etc/group` from a container created from the
/// image for that alone (no network, never started), then removes it.
async fn read_from_image(docker: &Docker, image_id: &str) -> Result<ImageAccounts, AccountsError> {
    let err = |action, source| AccountsError::Docker {
        action,
        image: image_id.to_owned(),
        source,
    };
    let body = ContainerCreateBody {
        image: Some(image_id.to_owned()),
        cmd: Some(vec!["true".into()]),
        labels: Some(HashMap::from([(
            "bastion.probe".to_owned(),
            "accounts".to_owned(),
        )])),
        host_config: Some(HostConfig {
            network_mode: Some("none".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let probe = docker
        .create_container(
            None::<bollard::query_parameters::CreateContainerOptions>,
            body,
        )
        .await
        .map_err(|e| err("create a container to read the account files", e))?;
    let read = |path: &'static str| {
        let id = probe.id.clone();
        async move {
            let tar: Vec<u8> = docker
                .download_from_container(
                    &id,
                    Some(
                        DownloadFromContainerOptionsBuilder::new()
                            .path(path)
                            .build(),
                    ),
                )
                .map_ok(|b| b.to_vec())
                .try_concat()
                .await
                .map_err(|e| err("read the account files", e))?;
            Ok::<_, AccountsError>(first_file_of_tar(&tar).unwrap_or_default())
        }
    };
    let read = tokio::try_join!(read("/etc/passwd"), read("/etc/group"));
    let removed = docker
        .remove_container(
            &probe.id,
            Some(RemoveContainerOptionsBuilder::new().force(true).build()),
        )
        .await;
    if let Err(e) = removed {
        tracing::warn!(container = %probe.id, error = %e, "cannot remove the container that read an image's account files");
    }
    let (passwd, group) = read?;
    Ok(ImageAccounts { passwd, group })
}

fn first_file_of_tar(tar: &[u8]) -> Option<String> {
    let mut archive = tar::Archive::new(tar);
    let mut entry = archive.entries().ok()?.next()?.ok()?;
    let mut text = String::new();
    entry.read_to_string(&mut text).ok()?;
    Some(text)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    fn alice() -> Identity {
        Identity {
            name: "alice".into(),
            uid: 1000,
            gid: 1000,
            groups: vec![],
        }
    }

    #[test]
    fn account_lines_are_added_once() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n";
        let once = with_line(passwd, "alice", "alice:x:1000:1000::/home/alice:/bin/bash");
        assert_eq!(once.lines().count(), 2);
        assert_eq!(with_line(&once, "alice", "alice:x:1:1::/:/bin/sh"), once);
    }

    #[test]
    fn the_files_are_written_with_a_private_token() {
        if !nix::unistd::geteuid().is_root() {
            panic!("run as root (./test.sh does): the token is chowned to the user");
        }
        let dir = tempfile::tempdir().unwrap();
        let files = AccountFiles::of(dir.path(), "alice");
        let image = ImageAccounts {
            passwd: "root:x:0:0:root:/root:/bin/bash\n".into(),
            group: "root:x:0:\n".into(),
        };
        files.write(&image, &alice(), b"tok").unwrap();
        let passwd = fs::read_to_string(&files.passwd).unwrap();
        assert!(passwd.contains("alice:x:1000:1000::/home/alice:/bin/bash"));
        let token = fs::metadata(&files.token).unwrap();
        assert_eq!((token.mode() & 0o777, token.uid()), (0o400, 1000));
        assert_eq!(fs::read(&files.token).unwrap(), b"tok");
        // Rewritten whole.
        files.write(&image, &alice(), b"new").unwrap();
        assert_eq!(fs::read(&files.token).unwrap(), b"new");
        assert!(files.binds()[2].ends_with(":/etc/bastion/aws-container-token:ro"));
    }
}
