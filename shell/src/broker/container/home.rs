//! Users' homes on the host: `<home_root>/<user>`, a real directory owned
//! by the user (never a symlink), and — when the user's `limits.home` is
//! not 0 — a file system of its own: an ext4 image under
//! `<state_dir>/home-images/`, loop-mounted there. A full home then fills
//! only itself, on any host file system (no quota support needed).
//!
//! Blocking (file system work, `mkfs.ext4`, `mount`): call from a blocking
//! task. Each step is idempotent, so a login after a crash or a reboot
//! (mounts are gone) finishes what was left.

use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use bytesize::ByteSize;

use crate::broker::identity::Identity;

/// Why a user's home could not be made ready.
#[derive(Debug, thiserror::Error)]
pub enum HomeError {
    #[error("cannot prepare home directory {path}: {source}")]
    Dir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("home directory {path} is not a plain directory (symlink or file); refusing to use it")]
    NotADirectory { path: PathBuf },
    #[error("cannot prepare the home file system {image}: {detail}")]
    Image { image: PathBuf, detail: String },
    #[error(
        "cannot mount the home file system {image} on {path}: {detail} (loop devices are needed; set [bastiond.limits] home = \"0\" for plain directories)"
    )]
    Mount {
        image: PathBuf,
        path: PathBuf,
        detail: String,
    },
}

/// Where a user's home file system image lives.
pub fn image_path(state_dir: &Path, user: &str) -> PathBuf {
    state_dir.join("home-images").join(format!("{user}.ext4"))
}

/// Makes `who`'s home ready: the directory, and with `size` > 0 its own
/// file system mounted on it (created, grown, or migrated from a plain
/// directory as needed). Returns the home's path.
pub fn ensure(
    home_root: &Path,
    state_dir: &Path,
    who: &Identity,
    size: ByteSize,
) -> Result<PathBuf, HomeError> {
    let path = home_root.join(&who.name);
    ensure_dir(home_root, &path, who)?;
    if size.as_u64() == 0 {
        return Ok(path);
    }
    let image = image_path(state_dir, &who.name);
    if is_mountpoint(&path) {
        if !needs_growing(&image, size) {
            return Ok(path);
        }
        // Grown offline (online resizing is not allowed everywhere): this
        // runs only while the user's container is not running.
        unmount(&image, &path)?;
    }
    let fresh = !image.exists();
    if fresh {
        warn_if_overcommitted(state_dir, size);
        create_image(&image, size, who)?;
    } else {
        grow(&image, size)?;
    }
    if fresh && has_content(&path) {
        migrate(&image, &path)?;
    }
    mount(&image, &path)?;
    // The file system's root is the home: the user's, private.
    let err = |source| HomeError::Dir {
        path: path.clone(),
        source,
    };
    nix::unistd::chown(
        &path,
        Some(nix::unistd::Uid::from_raw(who.uid)),
        Some(nix::unistd::Gid::from_raw(who.gid)),
    )
    .map_err(|e| err(e.into()))?;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o700)).map_err(err)?;
    let _ = fs::remove_dir(path.join("lost+found"));
    Ok(path)
}

/// `<home_root>/<user>`: a real directory (never a symlink), owned by the
/// user, mode 0700.
fn ensure_dir(home_root: &Path, path: &Path, who: &Identity) -> Result<(), HomeError> {
    let err = |source| HomeError::Dir {
        path: path.to_owned(),
        source,
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(home_root)
        .map_err(err)?;
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => {
            if meta.uid() == who.uid && meta.gid() == who.gid {
                return Ok(());
            }
        }
        Ok(_) => {
            return Err(HomeError::NotADirectory {
                path: path.to_owned(),
            });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::DirBuilder::new()
                .mode(0o700)
                .create(path)
                .map_err(err)?;
        }
        Err(e) => return Err(err(e)),
    }
    nix::unistd::chown(
        path,
        Some(nix::unistd::Uid::from_raw(who.uid)),
        Some(nix::unistd::Gid::from_raw(who.gid)),
    )
    .map_err(|e| err(e.into()))
}

/// Whether `path` is a mount point (in this mount namespace).
fn is_mountpoint(path: &Path) -> bool {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = path.to_string_lossy();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|point| point.replace("\\040", " ") == want)
}

fn has_content(path: &Path) -> bool {
    fs::read_dir(path).is_ok_and(|mut d| d.next().is_some())
}

fn run(image: &Path, what: &str, cmd: &mut Command) -> Result<(), HomeError> {
    run_ok_with(image, what, cmd, &[0])
}

/// Runs `cmd`; exit codes in `ok` are success.
fn run_ok_with(image: &Path, what: &str, cmd: &mut Command, ok: &[i32]) -> Result<(), HomeError> {
    let out = cmd.output().map_err(|e| HomeError::Image {
        image: image.to_owned(),
        detail: format!("cannot run {what}: {e}"),
    })?;
    if out.status.code().is_some_and(|c| ok.contains(&c)) {
        return Ok(());
    }
    Err(HomeError::Image {
        image: image.to_owned(),
        detail: format!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    })
}

/// Homes are sparse: together their limits may exceed the disk. Says so
/// (once per new home) when they would not all fit in what is free.
fn warn_if_overcommitted(state_dir: &Path, size: ByteSize) {
    let images = state_dir.join("home-images");
    let (promised, used): (u64, u64) = fs::read_dir(&images)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| (m.len(), m.blocks() * 512))
                .fold((0, 0), |(p, u), (len, blocks)| (p + len, u + blocks))
        })
        .unwrap_or((0, 0));
    let Ok(free) = crate::recording::free_space(state_dir) else {
        return;
    };
    let unclaimed = (promised + size.as_u64()).saturating_sub(used);
    if unclaimed > free {
        tracing::warn!(
            state_dir = %state_dir.display(),
            homes_limit = %ByteSize::b(promised + size.as_u64()),
            free = %ByteSize::b(free),
            "the homes' limits together exceed the free space of their disk: full homes could fill it (put state_dir on a disk of its own, apart from the logs, or lower limits.home)"
        );
    }
}

/// A sparse file of `size`, with an ext4 file system whose root belongs to
/// the user. Made under a temporary name, so a crash leaves no half-made
/// image under the real one.
fn create_image(image: &Path, size: ByteSize, who: &Identity) -> Result<(), HomeError> {
    let err = |detail: String| HomeError::Image {
        image: image.to_owned(),
        detail,
    };
    let dir = image.parent().unwrap_or(Path::new("/"));
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| err(format!("cannot create {}: {e}", dir.display())))?;
    let tmp = image.with_extension("ext4.new");
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| err(format!("cannot create {}: {e}", tmp.display())))?;
    file.set_len(size.as_u64())
        .map_err(|e| err(format!("cannot size {}: {e}", tmp.display())))?;
    drop(file);
    run(
        image,
        "mkfs.ext4",
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-m", "0", "-L", "bastion-home", "-E"])
            .arg(format!(
                "root_owner={}:{},lazy_itable_init=1,lazy_journal_init=1",
                who.uid, who.gid
            ))
            .arg(&tmp),
    )?;
    fs::rename(&tmp, image).map_err(|e| err(format!("cannot rename {}: {e}", tmp.display())))?;
    tracing::info!(user = %who.name, image = %image.display(), size = %size, "created the user's home file system");
    Ok(())
}

fn needs_growing(image: &Path, size: ByteSize) -> bool {
    fs::metadata(image).is_ok_and(|m| m.len() < size.as_u64())
}

/// Grows the (unmounted) image and its file system to `size` if it is
/// smaller; shrinking is never done (it could lose data).
fn grow(image: &Path, size: ByteSize) -> Result<(), HomeError> {
    if !needs_growing(image, size) {
        return Ok(());
    }
    OpenOptions::new()
        .write(true)
        .open(image)
        .and_then(|f| f.set_len(size.as_u64()))
        .map_err(|e| HomeError::Image {
            image: image.to_owned(),
            detail: format!("cannot grow: {e}"),
        })?;
    // 0: clean; 1: errors corrected (resize2fs wants a fresh check).
    run_ok_with(
        image,
        "e2fsck",
        Command::new("e2fsck").args(["-f", "-p"]).arg(image),
        &[0, 1],
    )?;
    run(image, "resize2fs", Command::new("resize2fs").arg(image))?;
    tracing::info!(image = %image.display(), size = %size, "grew the user's home file system");
    Ok(())
}

fn unmount(image: &Path, path: &Path) -> Result<(), HomeError> {
    let out = Command::new("umount")
        .arg(path)
        .output()
        .map_err(|e| HomeError::Mount {
            image: image.to_owned(),
            path: path.to_owned(),
            detail: format!("cannot unmount to grow it: {e}"),
        })?;
    if !out.status.success() {
        return Err(HomeError::Mount {
            image: image.to_owned(),
            path: path.to_owned(),
            detail: format!(
                "cannot unmount to grow it: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(())
}

fn mount(image: &Path, path: &Path) -> Result<(), HomeError> {
    let out = Command::new("mount")
        // discard: space the user frees goes back to the host's disk (the
        // image is sparse), so a home does not keep what it once held.
        .args(["-t", "ext4", "-o", "loop,nosuid,nodev,discard"])
        .arg(image)
        .arg(path)
        .output()
        .map_err(|e| HomeError::Mount {
            image: image.to_owned(),
            path: path.to_owned(),
            detail: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(HomeError::Mount {
            image: image.to_owned(),
            path: path.to_owned(),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(())
}

/// A plain home that gets a file system: its content is copied in (as it
/// is: owners, modes, links), and the old directory kept beside it as
/// `<user>.pre-limit` for the admins.
fn migrate(image: &Path, path: &Path) -> Result<(), HomeError> {
    let staging = image.with_extension("migrating");
    let _ = fs::create_dir(&staging);
    mount(image, &staging)?;
    let mut source = path.as_os_str().to_owned();
    source.push("/.");
    let copied = run(
        image,
        "cp -a",
        Command::new("cp").arg("-a").arg(&source).arg(&staging),
    );
    let _ = Command::new("umount").arg(&staging).status();
    let _ = fs::remove_dir(&staging);
    copied?;
    let aside = path.with_extension("pre-limit");
    fs::rename(path, &aside).map_err(|source| HomeError::Dir {
        path: path.to_owned(),
        source,
    })?;
    fs::DirBuilder::new()
        .mode(0o700)
        .create(path)
        .map_err(|source| HomeError::Dir {
            path: path.to_owned(),
            source,
        })?;
    tracing::warn!(home = %path.display(), kept = %aside.display(), "moved a plain home onto its own file system; the old directory is kept");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> Identity {
        Identity {
            name: "bt-home-unit".into(),
            uid: 4321,
            gid: 4321,
            groups: vec![],
        }
    }

    #[test]
    fn a_limited_home_is_its_own_file_system_that_fills_only_itself() {
        if !nix::unistd::geteuid().is_root() {
            panic!("run as root (./test.sh does): the test mounts file systems");
        }
        let root = tempfile::tempdir().unwrap();
        let homes = root.path().join("homes");
        let state = root.path().join("state");
        let who = me();
        struct Unmount(PathBuf);
        impl Drop for Unmount {
            fn drop(&mut self) {
                let _ = Command::new("umount").arg(&self.0).status();
            }
        }
        let _unmount = Unmount(homes.join(&who.name));
        // A plain home with content first: it is carried over.
        fs::create_dir_all(homes.join(&who.name)).unwrap();
        fs::write(homes.join(&who.name).join("notes.txt"), "kept").unwrap();
        let home = ensure(&homes, &state, &who, ByteSize::mib(64)).unwrap();
        assert!(is_mountpoint(&home));
        assert_eq!(fs::read_to_string(home.join("notes.txt")).unwrap(), "kept");
        let meta = fs::metadata(&home).unwrap();
        assert_eq!((meta.uid(), meta.mode() & 0o777), (4321, 0o700));
        assert!(homes.join(format!("{}.pre-limit", who.name)).exists());
        // Again: nothing to do.
        ensure(&homes, &state, &who, ByteSize::mib(64)).unwrap();
        // Filling it stops at its size.
        let big = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(home.join("big"))
            .unwrap();
        let chunk = vec![1u8; 1 << 20];
        let mut written = 0u64;
        let mut writer = io::BufWriter::new(big);
        let full = loop {
            match io::Write::write_all(&mut writer, &chunk) {
                Ok(()) => written += chunk.len() as u64,
                Err(e) => break e,
            }
            if written > 200 << 20 {
                panic!("wrote {written} bytes into a 64 MiB home");
            }
        };
        assert_eq!(full.raw_os_error(), Some(nix::libc::ENOSPC), "{full}");
        drop(writer);
        fs::remove_file(home.join("big")).unwrap();
        // Grown (while no container uses it).
        ensure(&homes, &state, &who, ByteSize::mib(96)).unwrap();
        assert!(is_mountpoint(&home));
        let stat = nix::sys::statvfs::statvfs(&home).unwrap();
        let total = stat.blocks() * stat.fragment_size();
        assert!(total > 80 << 20, "{total}");
    }
}
