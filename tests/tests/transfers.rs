//! File transfers through the login shell into the user's container home:
//! scp (SFTP and legacy protocols), sftp and rsync, both directions.
#![forbid(unsafe_code)]

mod common;

use std::process::{Command, Stdio};

use common::*;

fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn remote_sha(u: &User, path: &str) -> String {
    ssh_text(u, &format!("sha256sum {path} | cut -d' ' -f1"))
        .trim()
        .to_owned()
}

#[test]
fn scp_uploads_and_downloads_in_both_protocols() {
    let u = user("bt-xfer");
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("up.bin");
    let data = payload(3 * 1024 * 1024 + 7, 1);
    std::fs::write(&local, &data).unwrap();
    for (flag, name) in [(None, "scp-sftp.bin"), (Some("-O"), "scp-legacy.bin")] {
        let mut up = Command::new("scp");
        up.args(ssh_options(&u)).args(["-P", SSH_PORT]).args(flag);
        up.arg(&local).arg(format!("{}@{SSH_HOST}:{name}", u.name));
        run_ok(&mut up);
        assert_eq!(remote_sha(&u, name), sha256(&data), "{name} uploaded");

        let back = dir.path().join(format!("down-{name}"));
        let mut down = Command::new("scp");
        down.args(ssh_options(&u)).args(["-P", SSH_PORT]).args(flag);
        down.arg(format!("{}@{SSH_HOST}:{name}", u.name)).arg(&back);
        run_ok(&mut down);
        assert_eq!(std::fs::read(&back).unwrap(), data, "{name} downloaded");
    }
    // The file is in the home inside the container, not on the host's home.
    let listing = ssh_text(&u, "ls -l /home/$(id -un)/scp-sftp.bin");
    assert!(listing.contains(&u.name), "{listing}");
}

#[test]
fn sftp_batch_session_works() {
    let u = user("bt-xfer2");
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("f.txt");
    std::fs::write(&local, b"via sftp\n").unwrap();
    let batch = format!(
        "-mkdir sftpdir\nput {} sftpdir/f.txt\nls sftpdir\nget sftpdir/f.txt {}\n",
        local.display(),
        dir.path().join("back.txt").display()
    );
    let mut sftp = Command::new("sftp");
    sftp.args(ssh_options(&u))
        .args(["-P", SSH_PORT, "-b", "-"])
        .arg(format!("{}@{SSH_HOST}", u.name))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = sftp.spawn().unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(batch.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read(dir.path().join("back.txt")).unwrap(),
        b"via sftp\n"
    );
    assert_eq!(ssh_text(&u, "cat sftpdir/f.txt"), "via sftp\n");
}

#[test]
fn rsync_syncs_a_tree_both_ways() {
    let u = user("bt-xfer3");
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("tree");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("a.txt"), b"alpha\n").unwrap();
    std::fs::write(src.join("sub/b.bin"), payload(200_000, 9)).unwrap();
    let ssh_cmd = format!("ssh -p {SSH_PORT} {}", ssh_options(&u).join(" "));
    let mut up = Command::new("rsync");
    up.args(["-a", "-e", &ssh_cmd])
        .arg(format!("{}/", src.display()))
        .arg(format!("{}@{SSH_HOST}:synced/", u.name));
    run_ok(&mut up);
    assert_eq!(ssh_text(&u, "cat synced/a.txt"), "alpha\n");
    assert_eq!(
        remote_sha(&u, "synced/sub/b.bin"),
        sha256(&payload(200_000, 9))
    );

    let back = dir.path().join("back");
    let mut down = Command::new("rsync");
    down.args(["-a", "-e", &ssh_cmd])
        .arg(format!("{}@{SSH_HOST}:synced/", u.name))
        .arg(format!("{}/", back.display()));
    run_ok(&mut down);
    assert_eq!(
        std::fs::read(back.join("sub/b.bin")).unwrap(),
        payload(200_000, 9)
    );
}
