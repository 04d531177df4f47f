//! Tests that disturb the whole bastion (Docker stopped, bastiond
//! restarted, images retagged, short idle times). They run one at a time
//! (a shared lock), after the other test binaries, and put everything back.
#![forbid(unsafe_code)]

mod common;

use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use common::*;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn container_id(u: &User) -> String {
    docker(&["inspect", "-f", "{{.Id}}", &container_of(u)])
}

#[test]
fn docker_stopped_gives_a_clear_error_then_recovers() {
    let _serial = serial();
    let u = user("bt-dockerdown");
    ssh_text(&u, "echo before > f");
    service("stop", "dockerd");
    let out = ssh_run(&u, "echo should-not-run");
    service("start", "dockerd");
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("container engine is not available"), "{err}");
    assert_eq!(err.lines().count(), 1, "one short line: {err}");
    assert!(out.stdout.is_empty());
    // Back up: the stopped container is started again, the home kept.
    assert_eq!(ssh_text(&u, "cat f").trim(), "before");
}

fn build_alt(tag: &str, marker: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!("FROM bastion/user:latest\nLABEL bastion.e2e.variant={marker}\n"),
    )
    .unwrap();
    run_ok(
        Command::new("docker")
            .args(["build", "-q", "-t", tag])
            .arg(dir.path()),
    );
    docker(&["image", "inspect", "-f", "{{.Id}}", tag])
}

#[test]
fn a_changed_image_recreates_the_container_when_no_session_is_live() {
    let _serial = serial();
    ensure_e2e_config();
    let u = user("bt-img");
    let a = build_alt("bastion/e2e-alt:a", "a");
    let b = build_alt("bastion/e2e-alt:b", "b");
    docker(&["tag", "bastion/e2e-alt:a", "bastion/e2e-alt:current"]);
    remove_container(&u);
    ssh_text(&u, "echo kept > home-file");
    let first = container_id(&u);
    assert_eq!(docker(&["inspect", "-f", "{{.Image}}", &first]), a);

    // While a session is live, the new image waits.
    let mut live = ssh(&u, &["-T"], &["echo live; sleep 600"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first_line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(live.stdout.as_mut().unwrap()),
        &mut first_line,
    )
    .unwrap();
    assert_eq!(first_line, "live\n");
    docker(&["tag", "bastion/e2e-alt:b", "bastion/e2e-alt:current"]);
    ssh_text(&u, "true");
    assert_eq!(
        container_id(&u),
        first,
        "not recreated under a live session"
    );
    live.kill().unwrap();
    live.wait().unwrap();
    // Wait until the broker has seen the session end.
    assert!(eventually(Duration::from_secs(20), || {
        !docker(&["top", &container_of(&u), "-eo", "pid,args"]).contains("sleep 600")
    }));

    // No live session: the next login gets a new container on the new image.
    assert_eq!(
        ssh_text(&u, "cat home-file").trim(),
        "kept",
        "home survives"
    );
    let second = container_id(&u);
    assert_ne!(second, first);
    assert_eq!(docker(&["inspect", "-f", "{{.Image}}", &second]), b);
}

/// Whether bastiond served the session that ran `marker` from the
/// container state it keeps from Docker's events (no inspects), per its log.
fn served_from_remembered_state(marker: &str) -> bool {
    let log = std::fs::read_to_string("/var/log/bastion/bastiond.log").unwrap_or_default();
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("session start") && l.contains(marker))
        .unwrap_or_else(|| panic!("no session start logged for {marker}"));
    line.contains("container_state=\"remembered\"")
}

#[test]
fn a_container_changed_behind_the_brokers_back_is_seen_at_the_next_login() {
    let _serial = serial();
    let u = user("bt-behind");
    remove_container(&u);
    ssh_text(&u, "echo kept > f");
    // Warm logins come to be served from the remembered state (the first
    // one's own create and start events make it inspect again once).
    assert!(
        (0..5).any(|i| {
            let marker = format!("warm-probe-{i}");
            ssh_text(&u, &format!("echo {marker}"));
            served_from_remembered_state(&marker)
        }),
        "warm logins never skipped the inspects"
    );
    let first = container_id(&u);

    // Stopped behind bastiond's back: the next login starts it again
    // rather than trusting what it remembered.
    docker(&["stop", "-t", "0", &container_of(&u)]);
    assert_eq!(
        ssh_text(&u, "echo after-stop; cat f").trim(),
        "after-stop\nkept"
    );
    assert!(!served_from_remembered_state("after-stop"));
    assert_eq!(container_id(&u), first);

    // Removed behind its back: the next login creates a new one.
    remove_container(&u);
    assert_eq!(
        ssh_text(&u, "echo after-rm; cat f").trim(),
        "after-rm\nkept"
    );
    assert!(!served_from_remembered_state("after-rm"));
    assert_ne!(container_id(&u), first);
}

#[test]
fn a_stopped_broker_is_a_clear_error() {
    let _serial = serial();
    let u = user("bt-brokerdown");
    service("stop", "bastiond");
    let out = ssh_run(&u, "echo should-not-run");
    service("start", "bastiond");
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("session service is not running"), "{err}");
    assert_eq!(ssh_text(&u, "echo up").trim(), "up");
}

#[test]
fn a_broker_restart_keeps_containers_and_ends_orphans() {
    let _serial = serial();
    let u = user("bt-restart");
    ssh_text(&u, "true");
    let before = container_id(&u);
    let marker = format!("restartmarker{}", std::process::id());
    let mut live = ssh(&u, &["-T"], &[&format!("exec -a {marker} sleep 1000")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let top = || docker(&["top", &container_of(&u), "-eo", "pid,args"]);
    assert!(eventually(Duration::from_secs(20), || top().contains(&marker)));

    service("restart", "bastiond");

    // The live session ended with the broker (it held its streams): the
    // client is told, and nothing of it is left in the container.
    let status = live.wait().unwrap();
    assert!(!status.success());
    assert!(
        eventually(Duration::from_secs(20), || !top().contains(&marker)),
        "{}",
        top()
    );
    // New logins work, in the same container.
    assert_eq!(ssh_text(&u, "echo again").trim(), "again");
    assert_eq!(container_id(&u), before);
}

#[test]
fn idle_containers_are_stopped_then_removed() {
    let _serial = serial();
    let u = user("bt-idle");
    let original = std::fs::read_to_string(CONFIG_PATH).unwrap();
    let short = original.replacen(
        "[bastiond]",
        "[bastiond]\nidle_stop_after = \"2s\"\nremove_after = \"4s\"",
        1,
    );
    assert_ne!(short, original, "config has a [bastiond] table");
    write_config(&short);
    service("restart", "bastiond");
    let restore = Restore(original);

    ssh_text(&u, "echo persisted > f");
    let c = container_of(&u);
    let stopped = eventually(Duration::from_secs(60), || {
        docker(&["inspect", "-f", "{{.State.Running}}", &c]) == "false"
    });
    let removed =
        stopped && eventually(Duration::from_secs(60), || !docker_status(&["inspect", &c]));
    drop(restore);
    assert!(stopped, "idle container was not stopped");
    assert!(removed, "stopped container was not removed");
    // The home outlived the container.
    assert_eq!(ssh_text(&u, "cat f").trim(), "persisted");
}

/// Puts the original config back and restarts bastiond, even on panic.
struct Restore(String);

impl Drop for Restore {
    fn drop(&mut self) {
        write_config(&self.0);
        service("restart", "bastiond");
    }
}

/// Runs `f` with `extra` appended to the config (a `[recording]` table:
/// the installed config has none of its own), then restores it.
fn with_recording_config(extra: &str, f: impl FnOnce()) {
    let original = std::fs::read_to_string(CONFIG_PATH).unwrap();
    assert!(
        !original.contains("\n[recording]"),
        "config already has [recording]"
    );
    let _restore = Restore(original.clone());
    write_config(&format!(
        "{}\n\n[recording]\n{extra}\n",
        original.trim_end()
    ));
    f();
}

#[test]
fn record_input_records_keystrokes() {
    let _serial = serial();
    let u = user("bt-rec-input");
    with_recording_config("record_input = true", || {
        let term = Terminal::open(&u, 80, 24);
        term.wait_for(&format!("{}@{}:~$", u.name, u.name));
        term.type_line("read -s pw; echo done-reading");
        term.type_line("keystroke-secret-123");
        term.wait_for("done-reading");
        term.type_line("exit");
        term.wait_for("SSH-EXIT=0");
    });
    let cast = std::fs::read_dir(format!("/var/log/bastion/sessions/{}", u.name))
        .unwrap()
        .map(|e| e.unwrap().path())
        .max_by_key(|p| std::fs::metadata(p).unwrap().modified().unwrap())
        .unwrap();
    let text = std::fs::read_to_string(cast).unwrap();
    let input: String = text
        .lines()
        .skip(1)
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e[1] == "i")
        .filter_map(|e| e[2].as_str().map(str::to_owned))
        .collect();
    assert!(
        input.contains("keystroke-secret-123"),
        "input events: {input:?}"
    );
}

#[test]
fn a_full_log_disk_refuses_logins() {
    let _serial = serial();
    let u = user("bt-fulldisk");
    let dir = format!("/tmp/bastion-e2e-tinylog-{}", std::process::id());
    std::fs::create_dir_all(&dir).unwrap();
    run_ok(Command::new("mount").args(["-t", "tmpfs", "-o", "size=128k,mode=0700", "tmpfs", &dir]));
    // Fill it up.
    let _ = Command::new("dd")
        .args(["if=/dev/zero", &format!("of={dir}/filler"), "bs=4k"])
        .stderr(Stdio::null())
        .status();
    let mut outcome = None;
    with_recording_config(
        &format!("log_dir = \"{dir}\"\naudit_log = \"{dir}/audit.jsonl\""),
        || outcome = Some(ssh_run(&u, "echo should-not-run")),
    );
    let _ = Command::new("umount").arg(&dir).status();
    let _ = std::fs::remove_dir(&dir);
    let out = outcome.unwrap();
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot be recorded"), "{err}");
    // With the log directory back, logins work again.
    assert_eq!(ssh_text(&u, "echo ok").trim(), "ok");
}

/// issue 9, faults: bastiond restarted under live sessions. Each client is
/// told why in one line (never a bare 125), the record says
/// broker_shutdown, and a command that finished as the shutdown began
/// keeps its own exit code.
#[test]
fn a_broker_restart_tells_live_sessions_why_and_keeps_real_exit_codes() {
    let _serial = serial();
    let u = user("bt-rec-restart");
    let marker = format!("brokerstop{}", std::process::id());
    let live = live_marked_session(&u, &marker);
    // Short commands finishing all around the restart.
    let racers: Vec<_> = (0..12)
        .map(|i| {
            let u = u.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(40 * i));
                ssh_run(&u, "sleep 0.2; exit 3")
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(150));
    service("restart", "bastiond");
    let out = live.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("was restarted"), "told why: {err:?}");
    let (_, end) = session_by_marker(&marker);
    let end = end.expect("session.end written before the broker stopped");
    assert_eq!(end["ended_by"], "broker_shutdown");
    for racer in racers {
        let out = racer.join().unwrap();
        match out.status.code() {
            Some(3) => {}
            Some(125) => {
                let err = String::from_utf8_lossy(&out.stderr);
                assert!(!err.trim().is_empty(), "a bare 125: {out:?}");
            }
            // ssh's own failure while the broker was down.
            Some(255) => {}
            other => panic!("exit {other:?}: {out:?}"),
        }
    }
    assert_eq!(ssh_text(&u, "echo up").trim(), "up");
}

/// issue 9, faults: dockerd restarted under a live session. The user gets
/// the engine's sentence, and the record says what happened: an error,
/// no invented exit code.
#[test]
fn a_docker_restart_mid_session_is_an_error_ending_not_an_exit_code() {
    let _serial = serial();
    let u = user("bt-dockerbounce");
    let marker = format!("dockerbounce{}", std::process::id());
    let live = live_marked_session(&u, &marker);
    service("stop", "dockerd");
    service("start", "dockerd");
    let out = live.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("container engine is not available"), "{err:?}");
    let end = {
        let mut end = None;
        assert!(eventually(Duration::from_secs(20), || {
            end = session_by_marker(&marker).1;
            end.is_some()
        }));
        end.unwrap()
    };
    assert_eq!(end["ended_by"], "error", "{end}");
    assert_eq!(end["exit_code"], serde_json::Value::Null, "{end}");
    assert!(
        end["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{end}"
    );
    assert_eq!(ssh_text(&u, "echo up").trim(), "up");
}

/// issue 9, faults: the audit log unwritable (chattr +i) when a session
/// ends. The user still gets their exit code; the end, with its real exit
/// code and byte counts, is kept and written once the log is writable
/// again, without a restart.
#[test]
fn an_unwritable_audit_log_at_a_sessions_end_loses_nothing() {
    let _serial = serial();
    let u = user("bt-auditlock");
    let marker = format!("auditlock{}", std::process::id());
    let mut live = spawn_remote(
        &u,
        &format!("echo {marker}; read line; echo got-$line; exit 7"),
        Stdio::piped(),
    );
    assert_eq!(first_line(&mut live), marker);
    struct Unlock;
    impl Drop for Unlock {
        fn drop(&mut self) {
            let _ = Command::new("chattr")
                .args(["-i", "/var/log/bastion/audit.jsonl"])
                .status();
        }
    }
    run_ok(Command::new("chattr").args(["+i", "/var/log/bastion/audit.jsonl"]));
    let unlock = Unlock;
    use std::io::Write;
    live.stdin.take().unwrap().write_all(b"line\n").unwrap();
    let out = live.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(7),
        "the user gets the real code: {out:?}"
    );
    let (start, end) = session_by_marker(&marker);
    assert!(end.is_none(), "nothing could be written yet");
    let pending = format!(
        "/var/log/bastion/sessions/.open/{}.json",
        start["session_id"].as_str().unwrap()
    );
    assert!(
        eventually(Duration::from_secs(10), || std::fs::read_to_string(
            &pending
        )
        .is_ok_and(|t| t.contains("\"exit_code\":7"))),
        "the end is kept in the marker"
    );
    drop(unlock);
    let mut end = None;
    assert!(
        eventually(Duration::from_secs(20), || {
            end = session_by_marker(&marker).1;
            end.is_some()
        }),
        "the end is written once the log is writable, without a restart"
    );
    let end = end.unwrap();
    assert_eq!(end["exit_code"], 7);
    assert_eq!(end["ended_by"], "exit");
    assert!(end["bytes_out"].as_u64().unwrap() > marker.len() as u64);
    assert!(!std::path::Path::new(&pending).exists());
    let verify = run_ok(Command::new("/usr/local/bin/bastionctl").args(["audit", "verify"]));
    assert!(String::from_utf8_lossy(&verify.stdout).starts_with("OK"));
}

#[test]
fn a_crashed_broker_closes_open_records_at_its_next_start() {
    let _serial = serial();
    let u = user("bt-rec-crash");
    let marker = format!("crashmarker{}", std::process::id());
    let mut live = live_marked_session(&u, &marker);
    // kill -9: no chance to write anything.
    let pid = std::fs::read_to_string("/run/bastion/bastiond.pid").unwrap();
    run_ok(Command::new("kill").args(["-9", pid.trim()]));
    let _ = live.wait();
    service("start", "bastiond");
    let (start, end) = session_by_marker(&marker);
    let end = end.expect("session.end written at the next start-up");
    assert_eq!(end["ended_by"], "interrupted");
    // The recording is closed and pinned by its hash.
    let cast = start["recording"].as_str().unwrap();
    let bytes = std::fs::read(cast).unwrap();
    assert_eq!(end["recording"]["sha256"], sha256(&bytes));
    // And nothing of the session is left running.
    let top = docker(&["top", &container_of(&u), "-eo", "pid,args"]);
    assert!(!top.contains("sleep 1000"), "{top}");
}
