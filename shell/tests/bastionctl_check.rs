//! `bastionctl check` names the bad key and line, and refuses files others
//! could write.
#![forbid(unsafe_code)]

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

fn check(text: &str, mode: u32) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bastion.toml");
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_bastionctl"))
        .arg("--config")
        .arg(&path)
        .arg("check")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn running_as_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[test]
fn a_good_file_passes() {
    if !running_as_root() {
        panic!("run as root (./test.sh does): the config must be root-owned");
    }
    let (ok, text) = check("[bastiond]\nimage = \"x:1\"\n", 0o644);
    assert!(ok, "{text}");
    assert!(text.contains(": ok"), "{text}");
}

#[test]
fn a_misspelt_key_is_named_with_its_line() {
    let (ok, text) = check(
        "[bastiond]\nimage = \"x:1\"\n\n[bastiond.limits]\npid = 5\n",
        0o644,
    );
    assert!(!ok);
    assert!(text.contains("line 5"), "{text}");
    assert!(text.contains("`pid`"), "{text}");
}

#[test]
fn a_bad_value_is_named_with_its_line() {
    let (ok, text) = check("[bastiond]\nidle_stop_after = \"soon\"\n", 0o644);
    assert!(!ok);
    assert!(text.contains("line 2"), "{text}");
    assert!(text.contains("idle_stop_after"), "{text}");
}

#[test]
fn a_world_writable_file_is_refused() {
    let (ok, text) = check("[bastiond]\n", 0o666);
    assert!(!ok);
    assert!(text.contains("writable by group or others"), "{text}");
}

#[test]
fn manual_pages_and_completions_cover_every_binary() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_bastionctl"))
        .args(["man", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    for page in [
        "bastionctl.1",
        "bastionctl-sessions-search.1",
        "bastiond.1",
        "bastion-shell.1",
    ] {
        let text = std::fs::read_to_string(dir.path().join(page)).unwrap();
        assert!(text.starts_with(".ie"), "{page} is roff: {}", &text[..40]);
    }
    let out = Command::new(env!("CARGO_BIN_EXE_bastionctl"))
        .args(["completions", "zsh"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    for name in [
        "#compdef bastionctl",
        "#compdef bastiond",
        "#compdef bastion-shell",
    ] {
        assert!(text.contains(name), "{name}");
    }
}
