//! A recording written by bastion's recorder, read back by Debian's
//! `asciinema` (2.x): `asciinema cat` must reproduce exactly what the session
//! showed, and accept bastion's extra header keys.
//!
//! Needs `asciinema` on PATH (`apt-get install asciinema`).
#![forbid(unsafe_code)]

use std::path::Path;
use std::process::Command;

use bastion::recording::{
    BastionHeader, CastEnv, CastHeader, Recorder, RecorderOptions, cast_path,
};

/// A config directory of its own for `asciinema` in `dir`, once it has
/// been checked to run there. On its first run asciinema creates
/// `~/.config/asciinema`, and two first runs at once race there (one dies of
/// FileExistsError), as the two tests of this file did on a fresh machine.
fn asciinema_config(dir: &Path) -> std::path::PathBuf {
    let config = dir.join("asciinema-config");
    match Command::new("asciinema")
        .arg("--version")
        .env(CONFIG_ENV, &config)
        .output()
    {
        Ok(o) if o.status.success() => config,
        Ok(o) => panic!(
            "asciinema --version failed: {}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => panic!(
            "asciinema is not installed ({e}): run `apt-get install asciinema` (this test checks our files against the real player)"
        ),
    }
}

const CONFIG_ENV: &str = "ASCIINEMA_CONFIG_HOME";

fn header() -> CastHeader {
    CastHeader {
        version: 2,
        width: 100,
        height: 30,
        timestamp: 1_795_392_000,
        command: Some("/bin/bash -l".into()),
        title: Some("alice in bastion-alice".into()),
        idle_time_limit: None,
        env: CastEnv {
            term: Some("xterm-256color".into()),
            shell: Some("/bin/bash".into()),
        },
        bastion: Some(BastionHeader {
            session_id: "it-1".into(),
            user: "alice".into(),
            uid: 1000,
            container: "bastion-alice".into(),
            image: Some("bastion/user:1".into()),
            image_digest: Some("sha256:0123".into()),
            role: Some("arn:aws:iam::123456789012:role/ops".into()),
            remote_addr: Some("192.0.2.7".into()),
            remote_port: Some(50122),
            host: Some("bastion-1".into()),
        }),
    }
}

fn record(dir: &Path, chunks: &[&[u8]]) -> std::path::PathBuf {
    let path = cast_path(dir, "alice", "it-1").unwrap();
    let mut rec = Recorder::create(
        &path,
        &header(),
        RecorderOptions {
            record_input: true,
            max_bytes: 1 << 20,
            reserve: 0,
        },
    )
    .unwrap();
    for chunk in chunks {
        rec.output(chunk);
    }
    rec.input(b"kubectl get pods\r");
    rec.resize(120, 40);
    rec.marker("after resize");
    rec.output("done ✓\r\n".as_bytes());
    rec.finish().path
}

#[test]
fn asciinema_cat_reproduces_the_output_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let euro = "€".as_bytes();
    // Colours, a UTF-8 character split across two chunks, quotes, control
    // characters, tabs.
    let chunks: Vec<&[u8]> = vec![
        b"$ kubectl get pods\r\n",
        b"\x1b[1mNAME\x1b[0m\tREADY\tSTATUS\r\nweb-1\t1/1\tRunning \"ok\" \\ ",
        &euro[..1],
        &euro[1..],
        b"\x07\r\n",
    ];
    let path = record(dir.path(), &chunks);
    // `asciinema cat` opens /dev/tty (for its keyboard), so it gets a pty
    // as its controlling terminal (`setsid -c` on the pty as stdin) while
    // its stdout stays a pipe, where what it prints arrives unchanged.
    let pty = nix::pty::openpty(None, None).unwrap();
    let out = Command::new("setsid")
        .args(["-w", "-c", "asciinema", "cat"])
        .arg(&path)
        .env(CONFIG_ENV, asciinema_config(dir.path()))
        .stdin(std::process::Stdio::from(pty.slave))
        .output()
        .unwrap();
    drop(pty.master);
    assert!(
        out.status.success(),
        "asciinema cat failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut expected: Vec<u8> = chunks.concat();
    expected.extend_from_slice("done ✓\r\n".as_bytes());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&expected),
        "asciinema cat shows the output events, in order, and nothing else"
    );
}

#[test]
fn asciinema_play_accepts_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = record(dir.path(), &[b"hello from the bastion\r\n"]);
    // `play` wants a terminal only for its keyboard controls; with stdin
    // not a TTY it plays straight through. -i caps the pauses.
    let out = Command::new("asciinema")
        .env(CONFIG_ENV, asciinema_config(dir.path()))
        .args(["play", "-i", "0.01"])
        .arg(&path)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "asciinema play failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("hello from the bastion"), "{shown:?}");
    assert!(shown.contains("done ✓"), "{shown:?}");
}
