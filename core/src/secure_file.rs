//! Reading files that carry authority (the config, token files): they must be
//! owned by root and not writable by group or others, or anyone who could
//! write them could change what the root daemons do.

use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Why a root-owned file could not be trusted or read.
#[derive(Debug, thiserror::Error)]
pub enum SecureFileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is owned by uid {uid}, not root: run `chown root:root {path}` (anyone who owns it could change what bastion does)"
    )]
    NotRootOwned { path: PathBuf, uid: u32 },
    #[error(
        "{path} is writable by group or others (mode {mode:o}): run `chmod go-w {path}` (anyone who can write it could change what bastion does)"
    )]
    Writable { path: PathBuf, mode: u32 },
}

/// Which owner a trusted file must have. Tests that run unprivileged may pass
/// their own uid; production code always uses [`Owner::Root`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    Root,
    Uid(u32),
}

impl Owner {
    fn uid(self) -> u32 {
        match self {
            Owner::Root => 0,
            Owner::Uid(uid) => uid,
        }
    }
}

/// Checks owner and mode of an open file and reads it whole. The checks are
/// made on the opened file (fstat), so a rename between check and read
/// cannot swap in another file.
pub fn read_trusted(path: &Path, owner: Owner) -> Result<String, SecureFileError> {
    let read_err = |source| SecureFileError::Read {
        path: path.to_owned(),
        source,
    };
    let mut file = fs::File::open(path).map_err(read_err)?;
    let meta = file.metadata().map_err(read_err)?;
    check_metadata(path, &meta, owner)?;
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(read_err)?;
    Ok(text)
}

fn check_metadata(path: &Path, meta: &fs::Metadata, owner: Owner) -> Result<(), SecureFileError> {
    if meta.uid() != owner.uid() {
        return Err(SecureFileError::NotRootOwned {
            path: path.to_owned(),
            uid: meta.uid(),
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(SecureFileError::Writable {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn own_uid() -> u32 {
        nix::unistd::getuid().as_raw()
    }

    #[test]
    fn reads_a_file_with_the_right_owner_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        fs::write(&path, "a = 1\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            read_trusted(&path, Owner::Uid(own_uid())).unwrap(),
            "a = 1\n"
        );
    }

    #[test]
    fn refuses_group_or_world_writable_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        fs::write(&path, "").unwrap();
        for mode in [0o620, 0o602, 0o666] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            let err = read_trusted(&path, Owner::Uid(own_uid())).unwrap_err();
            assert!(
                matches!(err, SecureFileError::Writable { .. }),
                "{mode:o}: {err}"
            );
            assert!(err.to_string().contains("chmod go-w"));
        }
    }

    #[test]
    fn refuses_files_of_another_owner() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        fs::write(&path, "").unwrap();
        let other = own_uid().wrapping_add(1);
        let err = read_trusted(&path, Owner::Uid(other)).unwrap_err();
        assert!(matches!(err, SecureFileError::NotRootOwned { .. }), "{err}");
    }

    #[test]
    fn a_missing_file_names_its_path() {
        let err = read_trusted(Path::new("/nonexistent/bastion.toml"), Owner::Root).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/bastion.toml"));
    }
}
