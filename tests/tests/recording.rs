//! Recordings and the audit trail of real sessions over real sshd: what a
//! security reviewer gets, checked the way they would use it.
#![forbid(unsafe_code)]

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

const AUDIT: &str = "/var/log/bastion/audit.jsonl";

/// The start and end events of the session of `user` whose start matches.
fn session_events(user: &str, matches: impl Fn(&Value) -> bool) -> (Value, Value) {
    let mut found = None;
    let ok = eventually(Duration::from_secs(20), || {
        let events = audit_events();
        let start = events
            .iter()
            .rev()
            .find(|e| e["event"] == "session.start" && e["user"] == user && matches(e));
        let Some(start) = start else { return false };
        let end = events
            .iter()
            .find(|e| e["event"] == "session.end" && e["session_id"] == start["session_id"]);
        found = end.map(|end| (start.clone(), end.clone()));
        found.is_some()
    });
    assert!(ok, "no complete session of {user} in {AUDIT}");
    found.unwrap()
}

fn bastionctl(args: &[&str]) -> std::process::Output {
    Command::new("/usr/local/bin/bastionctl")
        .args(args)
        .output()
        .unwrap()
}

/// `bastionctl sessions export --html` of the session whose start event
/// is `start`, into a page in a new temporary directory (kept alive by the
/// returned guard).
fn export_page(start: &Value) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("session.html");
    let out = bastionctl(&[
        "sessions",
        "export",
        start["session_id"].as_str().unwrap(),
        "--html",
        page.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (dir, page)
}

#[test]
fn a_command_session_is_audited_and_recorded() {
    let u = e2e_user("bt-rec-cmd");
    let marker = format!("cmd-marker-{}", std::process::id());
    let out = ssh_run(&u, &format!("echo {marker}; exit 7"));
    assert_eq!(out.status.code(), Some(7));
    let (start, end) = session_events(&u.name, |e| {
        e["command"].as_str().is_some_and(|c| c.contains(&marker))
    });
    assert_eq!(start["kind"], "command");
    assert_eq!(start["container"], container_of(&u));
    assert_eq!(start["role"], "e2e-role");
    assert_eq!(start["remote_addr"], "127.0.0.1");
    assert!(start["remote_port"].as_u64().is_some());
    assert!(
        start["image_digest"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    assert_eq!(start["tty"], false);
    assert_eq!(end["exit_code"], 7);
    assert_eq!(end["ended_by"], "exit");
    assert!(end["bytes_out"].as_u64().unwrap() >= marker.len() as u64);
    // The recording holds what the command printed, and its hash is pinned.
    let cast = start["recording"].as_str().unwrap();
    let text = std::fs::read_to_string(cast).unwrap();
    assert!(text.contains(&marker));
    assert_eq!(end["recording"]["sha256"], sha256(text.as_bytes()));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(cast).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // No banner in command sessions: it would break scripts.
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{marker}\n"));
}

#[test]
fn an_interactive_session_is_recorded_for_asciinema_without_input() {
    let u = e2e_user("bt-rec-tty");
    let term = Terminal::open(&u, 90, 25);
    let banner = term.wait_for("recorded");
    assert!(banner.contains("recorded"), "banner shown: {banner}");
    term.wait_for(&format!("{}@{}:~$", u.name, u.name));
    let secret = "typed-secret-xyz";
    // Typed but never echoed: read -s, like a password prompt.
    term.type_line("read -s -p 'password: ' pw; echo; echo got-${#pw}-chars");
    term.wait_for("password: ");
    term.type_line(secret);
    term.wait_for("got-16-chars");
    term.resize(100, 30);
    std::thread::sleep(Duration::from_millis(300));
    term.type_line("echo printed-$((6*7))-marker");
    term.wait_for("printed-42-marker");
    term.type_line("exit");
    term.wait_for("SSH-EXIT=0");

    let (start, end) = session_events(&u.name, |e| e["kind"] == "shell");
    assert_eq!(start["tty"], true);
    assert_eq!(start["cols"], 90);
    assert_eq!(end["ended_by"], "exit");
    let cast = start["recording"].as_str().unwrap().to_owned();
    let text = std::fs::read_to_string(&cast).unwrap();
    let header: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(header["version"], 2);
    assert_eq!(header["width"], 90);
    let events: Vec<Value> = text
        .lines()
        .skip(1)
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        events.iter().any(|e| e[1] == "r" && e[2] == "100x30"),
        "resize recorded"
    );
    assert!(!text.contains(secret), "input is not recorded by default");
    assert!(
        events.iter().all(|e| e[1] != "i"),
        "no input events by default"
    );

    // Debian's asciinema plays it back: the output is all there.
    // (asciinema cat wants a terminal: script(1) gives it one.)
    let out = Command::new("script")
        .args(["-qec", &format!("asciinema cat {cast}"), "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(shown.contains("printed-42-marker"), "{shown}");

    // A reviewer finds it by what it showed.
    let out = bastionctl(&["sessions", "search", "printed-42-marker", "--user", &u.name]);
    let found = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{found}");
    assert!(
        found.contains(start["session_id"].as_str().unwrap()),
        "{found}"
    );
    // And exports it as a page with the player and its metadata.
    let (_dir, page) = export_page(&start);
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("AsciinemaPlayer"));
    assert!(html.contains(&u.name));
}

#[test]
fn file_transfers_are_counted_not_recorded() {
    let u = e2e_user("bt-rec-xfer");
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("upload.bin");
    std::fs::write(&local, vec![7u8; 300_000]).unwrap();
    let mut sftp = Command::new("sftp");
    sftp.args(ssh_options(&u))
        .args(["-P", SSH_PORT, "-b", "-"])
        .arg(format!("{}@{SSH_HOST}", u.name))
        .stdin(Stdio::piped())
        .stdout(Stdio::null());
    let mut child = sftp.spawn().unwrap();
    use std::io::Write;
    writeln!(
        child.stdin.take().unwrap(),
        "put {} up.bin",
        local.display()
    )
    .unwrap();
    assert!(child.wait().unwrap().success());
    let (start, end) = session_events(&u.name, |e| e["kind"] == "file_transfer");
    assert_eq!(start["transfer_direction"], "both");
    assert!(start["command"].as_str().unwrap().ends_with("sftp-server"));
    assert_eq!(start["recording"], Value::Null);
    assert!(end["bytes_in"].as_u64().unwrap() >= 300_000, "{end}");
}

/// issue 9, class 1: a session can switch its own recording off only by
/// *being* a transfer server. Each of these looks like one to a lenient
/// classifier, runs something else, and must be recorded with its output.
#[test]
fn commands_dressed_as_transfers_are_recorded() {
    let u = e2e_user("bt-rec-evade");
    let id = std::process::id();
    let attempts = [
        format!("scp -f </dev/null; echo hidden-{id}-a"),
        format!("scp -t x && echo hidden-{id}-b"),
        format!("scp -t $(echo hidden-{id}-c >&2)"),
        format!("scp -f x`echo hidden-{id}-d`"),
        format!("echo hidden-{id}-e; /usr/lib/openssh/sftp-server"),
        format!("rsync --server --daemon --config=/dev/null . ; echo hidden-{id}-f"),
        format!("/usr/lib/openssh/sftp-server -d / ; echo hidden-{id}-g"),
        format!("scp -S /bin/echo -t hidden-{id}-h; echo hidden-{id}-h"),
    ];
    for (n, command) in attempts.iter().enumerate() {
        let marker = format!("hidden-{id}-{}", (b'a' + n as u8) as char);
        let _ = ssh_run(&u, command);
        let (start, end) = session_events(&u.name, |e| e["command"] == command.as_str());
        assert_eq!(start["kind"], "command", "{command}");
        let cast = start["recording"]
            .as_str()
            .unwrap_or_else(|| panic!("{command} was not recorded"));
        let text = std::fs::read_to_string(cast).unwrap();
        assert!(
            text.contains(&marker),
            "{command}: its output is in the recording"
        );
        assert!(end["recording"]["sha256"].as_str().is_some());
    }
}

/// issue 9, class 4 (found by the attacker review): an unrecorded session
/// cannot carry an unbounded command into the logs: a "transfer" whose path
/// is longer than any file's can be is a command, recorded (so it counts
/// against the user's recording budget), and bastiond's own log keeps only
/// the start of it.
#[test]
fn a_transfer_cannot_carry_an_unbounded_command_into_the_logs() {
    let u = e2e_user("bt-rec-long");
    let path = format!("long{}{}", std::process::id(), "B".repeat(60_000));
    let command = format!("scp -t {path}");
    let log_before = std::fs::metadata("/var/log/bastion/bastiond.log")
        .map(|m| m.len())
        .unwrap_or(0);
    let _ = ssh_run(&u, &command);
    let (start, _) = session_events(&u.name, |e| {
        e["command"]
            .as_str()
            .is_some_and(|c| c.starts_with(&command[..40]))
    });
    assert_eq!(start["kind"], "command");
    assert!(start["recording"].as_str().is_some(), "recorded");
    let log = std::fs::read("/var/log/bastion/bastiond.log").unwrap();
    let added = &log[(log_before as usize).min(log.len())..];
    let longest = added
        .split(|&b| b == b'\n')
        .map(<[u8]>::len)
        .max()
        .unwrap_or(0);
    assert!(
        longest < 4096,
        "bastiond.log took a {longest}-byte line for a 60 kB command"
    );
}

/// A program the user names `sftp-server` (or `scp`, `rsync`) is theirs,
/// not the image's: it runs recorded, even when it turns into a shell.
#[test]
fn a_users_own_transfer_server_is_recorded() {
    let u = e2e_user("bt-rec-fake");
    let id = std::process::id();
    ssh_text(
        &u,
        "mkdir -p ~/.x ~/bin && printf '#!/bin/bash\nexec bash -i\n' > ~/.x/sftp-server \
         && cp ~/.x/sftp-server ~/bin/scp && chmod +x ~/.x/sftp-server ~/bin/scp",
    );
    // Non-interactive: the fake server's shell reads commands from stdin.
    for command in ["~/.x/sftp-server", "$HOME/.x/sftp-server", "~/bin/scp -t x"] {
        let marker = format!("fake-{id}-{}", command.len());
        let out = ssh_with_input(&u, command, format!("echo {marker}\nexit\n").as_bytes());
        assert!(String::from_utf8_lossy(&out.stdout).contains(&marker));
        let (start, _) = session_events(&u.name, |e| e["command"] == command);
        assert_eq!(start["kind"], "command", "{command}");
        let text = std::fs::read_to_string(start["recording"].as_str().unwrap()).unwrap();
        assert!(text.contains(&marker), "{command}");
    }
    // Interactive (ssh -tt), as the review did it.
    let term = Terminal::open_command(&u, 100, 30, "~/.x/sftp-server");
    term.wait_for("$");
    let marker = format!("tty-fake-{id}");
    term.type_line(&format!("echo {marker}"));
    term.wait_for(&format!("\n{marker}"));
    term.type_line("exit");
    term.wait_for("SSH-EXIT=");
    let (start, _) = session_events(&u.name, |e| {
        e["command"] == "~/.x/sftp-server" && e["tty"] == true
    });
    assert_eq!(start["kind"], "command");
    let text = std::fs::read_to_string(start["recording"].as_str().unwrap()).unwrap();
    assert!(text.contains(&marker));
}

/// issue 9, class 6: whatever the recorded user puts in their TERM, their
/// command or their output, a reviewer's terminal gets no control
/// sequence from any `bastionctl` view; the JSON stays exact; TERM and
/// the command are stored bounded.
#[test]
fn a_recorded_user_cannot_type_into_the_reviewers_terminal() {
    let u = e2e_user("bt-rec-esc");
    let id = std::process::id();
    let evil_term = "xterm\x1b]0;OWNED\x07\x1b[2J";
    let marker = format!("escmark{id}");
    // Output that retitles, asks for a cursor report and turns on mouse
    // reporting; the command itself carries an OSC and a C1 CSI.
    let command = format!(
        "printf 'a\\033]0;OWNED-OUT\\007b\\033[6n\\033[?1000h{marker}\\n' # \x1b]0;CMD\x07 \u{9b}2J"
    );
    let out = ssh(&u, &["-tt"], &[&command])
        .env("TERM", evil_term)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let (start, _) = session_events(&u.name, |e| {
        e["command"].as_str().is_some_and(|c| c.contains(&marker))
    });
    let session = start["session_id"].as_str().unwrap();
    // The record keeps the exact (short) TERM: JSON escapes it.
    assert_eq!(start["term"], evil_term);
    assert_eq!(start["command"], command.as_str());

    let views: Vec<(&str, Vec<&str>)> = vec![
        ("list", vec!["sessions", "list", "--user", &u.name]),
        ("show", vec!["sessions", "show", session]),
        ("search", vec!["sessions", "search", &marker]),
        ("play", vec!["sessions", "play", session, "--speed", "1000"]),
    ];
    for (name, args) in views {
        let out = bastionctl(&args);
        assert!(out.status.success(), "{name}: {out:?}");
        for (stream, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
            let text = String::from_utf8_lossy(bytes);
            if name == "play" && stream == "stdout" {
                // The replay draws, but never retitles, reports or
                // turns on input reporting.
                assert!(text.contains(&marker), "{name}: {text:?}");
                for bad in ["\x1b]", "\x1b[6n", "\x1b[?1000h", "\u{9b}", "\x07"] {
                    assert!(!text.contains(bad), "{name} sent {bad:?}: {text:?}");
                }
                continue;
            }
            assert!(
                !bytes.iter().any(|&b| b == 0x1b || b == 0x07 || b == 0x9b),
                "{name} {stream} carries a control byte: {text:?}"
            );
        }
    }
    let show = String::from_utf8(bastionctl(&["sessions", "show", session]).stdout).unwrap();
    assert!(show.contains("xterm\\x1b]0;OWNED\\x07\\x1b[2J"), "{show}");
    // JSON stays exact.
    let json = bastionctl(&["sessions", "show", session, "--json"]);
    let v: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["start"]["term"], evil_term);

    // A 20,000-character TERM is stored bounded, with a marker.
    let long_term = "x".repeat(20_000);
    let marker2 = format!("longterm{id}");
    let out = ssh(&u, &["-tt"], &[&format!("echo {marker2}")])
        .env("TERM", &long_term)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let (start, _) = session_events(&u.name, |e| {
        e["command"].as_str().is_some_and(|c| c.contains(&marker2))
    });
    let term = start["term"].as_str().unwrap();
    assert!(term.len() < 200, "stored TERM is {} bytes", term.len());
    assert!(term.contains("20000 bytes in all"), "{term}");
    let header = std::fs::read_to_string(start["recording"].as_str().unwrap()).unwrap();
    let first = header.lines().next().unwrap();
    assert!(first.len() < 2000, "cast header is {} bytes", first.len());
}

/// issue 9, classes 1 and 6 (found by the attacker review): output a
/// session hides inside terminal string sequences (a DCS around every line,
/// an OSC title, an APC, 8-bit introducers) reached the SSH client, so
/// every reviewer view shows it: `search` finds it, `play` draws it as
/// text, the exported page carries it.
#[test]
fn what_a_session_hides_in_string_sequences_is_shown_to_reviewers() {
    let u = e2e_user("bt-rec-dcs");
    let id = std::process::id();
    let (dcs, osc, apc, c1) = (
        format!("dcsline{id}"),
        format!("osctitle{id}"),
        format!("apcdata{id}"),
        format!("cones{id}"),
    );
    let command = format!(
        "echo {dcs}-$(id -un) | sed -u 's/^/\\x1bP/; s/$/\\x1b\\\\/'; \
         printf '\\033]2;{osc}\\007\\033_{apc}\\033\\\\\\302\\220{c1}\\302\\234done\\n'"
    );
    let out = ssh(&u, &["-tt"], &[&command])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let client = String::from_utf8_lossy(&out.stdout);
    assert!(
        client.contains(&format!("\x1bP{dcs}-{}", u.name)),
        "the client got the hidden line: {client:?}"
    );
    let (start, _) = session_events(&u.name, |e| {
        e["command"].as_str().is_some_and(|c| c.contains(&dcs))
    });
    let session = start["session_id"].as_str().unwrap();
    for needle in [&dcs, &osc, &apc, &c1] {
        let found = bastionctl(&["sessions", "search", needle, "--user", &u.name]);
        let text = String::from_utf8_lossy(&found.stdout);
        assert!(
            found.status.success() && text.contains(session),
            "search {needle}: {found:?}"
        );
    }
    let found =
        String::from_utf8(bastionctl(&["sessions", "search", &dcs, "--user", &u.name]).stdout)
            .unwrap();
    assert!(
        found.contains(&format!("⟦DCS {dcs}-{}⟧", u.name)),
        "the line is shown with what hid it: {found}"
    );
    let played = bastionctl(&["sessions", "play", session, "--speed", "1000"]);
    let played = String::from_utf8_lossy(&played.stdout);
    for needle in [&dcs, &osc, &apc, &c1] {
        assert!(
            played.contains(needle.as_str()),
            "play {needle}: {played:?}"
        );
    }
    assert!(!played.contains("\x1bP") && !played.contains("\x1b]") && !played.contains("\x1b_"));
    let page = std::env::temp_dir().join(format!("bt-rec-dcs-{id}.html"));
    let exported = bastionctl(&[
        "sessions",
        "export",
        session,
        "--html",
        page.to_str().unwrap(),
    ]);
    assert!(exported.status.success(), "{exported:?}");
    let html = std::fs::read_to_string(&page).unwrap();
    let _ = std::fs::remove_file(&page);
    for shown in [
        format!("⟦DCS {dcs}-{}⟧", u.name),
        format!("⟦OSC 2;{osc}⟧"),
        format!("⟦APC {apc}⟧"),
        format!("⟦DCS {c1}⟧"),
    ] {
        assert!(html.contains(&shown), "export shows {shown}");
    }
}

/// issue 9, classes 1 and 6 (attacker re-test, round 2): text hidden by how
/// it is drawn — built with cursor moves, erased after it was printed,
/// split by zero-width characters, concealed, drawn only on the alternate
/// screen — is found by `search` and shown by `play`.
#[test]
fn text_hidden_by_drawing_is_found_and_shown() {
    let u = e2e_user("bt-rec-draw");
    let id = std::process::id();
    let m = |n: u8| format!("drw{id}x{n}");
    let (built, erased, zero, concealed, alt) = (m(1), m(2), m(3), m(4), m(5));
    // `built` is drawn by inserting its first half before its second.
    let (head, tail) = built.split_at(4);
    let zero_split = format!("{}\u{200b}{}", &zero[..3], &zero[3..]);
    let script = format!(
        "printf '%s\\033[{n}D\\033[{h}@%s\\n' '{tail}' '{head}'; \
         printf '%s\\r\\033[2K\\n' '{erased}'; \
         printf '%s\\n' \"$(printf '{zero_split}')\"; \
         printf '\\033[8m%s\\033[0m\\n' '{concealed}'; \
         printf '\\033[?1049h%s\\033[?1049l\\n' '{alt}'",
        n = tail.len(),
        h = head.len()
    );
    let out = ssh(&u, &["-tt"], &[&script])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let (start, _) = session_events(&u.name, |e| {
        e["command"].as_str().is_some_and(|c| c.contains(&erased))
    });
    let session = start["session_id"].as_str().unwrap();
    for needle in [&built, &erased, &zero, &concealed, &alt] {
        let found = bastionctl(&["sessions", "search", needle, "--user", &u.name]);
        assert!(
            found.status.success() && String::from_utf8_lossy(&found.stdout).contains(session),
            "search {needle}: {found:?}"
        );
    }
    let played = bastionctl(&["sessions", "play", session, "--speed", "1000"]);
    let played = String::from_utf8_lossy(&played.stdout);
    assert!(
        played.contains(&concealed) && !played.contains("\x1b[8m"),
        "{played:?}"
    );
    assert!(
        played.contains(&alt) && !played.contains("\x1b[?1049h"),
        "{played:?}"
    );
    assert!(played.contains("\\u{200b}"), "zero-width shown: {played:?}");
}

/// issue 9, class 1 (found by the attacker review): another session of
/// the same user cannot take over a live, unrecorded transfer (ptrace,
/// /proc/PID/fd, signals) to use its channel as a shell: transfers run in
/// the user's file-transfer container, where no other session can see them.
#[test]
fn a_transfer_cannot_be_taken_over_by_another_session() {
    let u = e2e_user("bt-rec-hijack");
    ssh_text(&u, "mkdir -p synced");
    // A transfer held open (an rsync server waiting for its client).
    let mut transfer = spawn_remote(
        &u,
        "rsync --server -vlogDtpre.iLsfxCIvu . synced/",
        Stdio::piped(),
    );
    let files = format!("{}-files", container_of(&u));
    let top = |c: &str| {
        Command::new("docker")
            .args(["top", c, "-eo", "pid,args"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    assert!(
        eventually(Duration::from_secs(20), || top(&files)
            .contains("rsync --server")),
        "the transfer runs in {files}"
    );
    // The review's attack, and the ways to find the server at all.
    let attack = ssh_text(
        &u,
        r#"p=$(pgrep -o -x rsync); echo "found:${p:-none}";
for d in /proc/[0-9]*; do case "$(readlink $d/exe 2>/dev/null)" in *rsync*|*scp*|*sftp-server*) echo "seen:$d";; esac; done;
if [ -n "$p" ]; then kill -STOP $p; bash --norc -c 'echo HIJACKED' <>/proc/$p/fd/0 >/proc/$p/fd/1 2>&1; fi; echo done"#,
    );
    assert!(attack.contains("found:none"), "{attack}");
    assert!(!attack.contains("seen:"), "{attack}");
    let _ = transfer.stdin.take();
    let out = transfer.wait_with_output().unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains("HIJACKED"));
    // The file-transfer container has no network and no credentials.
    let inspect = docker(&[
        "inspect",
        "-f",
        "{{.HostConfig.NetworkMode}} {{index .Config.Labels \"bastion.purpose\"}} {{range .Config.Env}}{{.}} {{end}}",
        &files,
    ]);
    assert!(inspect.starts_with("none transfers "), "{inspect}");
    assert!(!inspect.contains("AWS_"), "{inspect}");
}

#[test]
fn a_killed_client_still_gets_a_complete_record() {
    let u = e2e_user("bt-rec-kill");
    let marker = format!("killmarker{}", std::process::id());
    let mut client = live_marked_session(&u, &marker);
    client.kill().unwrap();
    client.wait().unwrap();
    let (_, end) = session_events(&u.name, |e| {
        e["command"].as_str().is_some_and(|c| c.contains(&marker))
    });
    assert_eq!(end["ended_by"], "client_gone");
    assert!(end["recording"]["sha256"].as_str().is_some());
}

#[test]
fn the_audit_chain_verifies_and_tampering_is_found() {
    let u = e2e_user("bt-rec-verify");
    ssh_text(&u, "echo for-the-chain");
    let out = bastionctl(&["audit", "verify"]);
    assert!(
        out.status.success(),
        "live log does not verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Tamper with a copy (never the live log): edit one line.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("audit.jsonl");
    let text = std::fs::read_to_string(AUDIT).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() >= 3);
    let target = lines.len() - 2;
    let mut edited: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    edited[target] = edited[target].replacen("\"user\":\"", "\"user\":\"x", 1);
    assert_ne!(edited[target], lines[target]);
    std::fs::write(&copy, edited.join("\n") + "\n").unwrap();
    let out = bastionctl(&["audit", "verify", copy.to_str().unwrap()]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "tampering not found: {report}");
    assert!(
        report.contains(&format!("{}", target + 1)),
        "names the line: {report}"
    );
}

#[test]
fn audit_events_also_go_to_syslog_authpriv() {
    let u = e2e_user("bt-rec-syslog");
    let marker = format!("syslogmarker{}", std::process::id());
    let dev_log = std::path::Path::new("/dev/log");
    if dev_log.exists() {
        // A real syslog daemon: the event lands in its authpriv file.
        ssh_text(&u, &format!("echo {marker}"));
        let found = eventually(Duration::from_secs(20), || {
            ["/var/log/auth.log", "/var/log/secure"]
                .iter()
                .filter_map(|p| std::fs::read_to_string(p).ok())
                .any(|t| t.contains(&marker))
        });
        assert!(found, "no audit line with {marker} in the authpriv log");
        return;
    }
    // No syslog daemon here: stand in for it on /dev/log (the real socket
    // path bastiond writes to) and read what arrives.
    let socket = std::os::unix::net::UnixDatagram::bind(dev_log).unwrap();
    struct Unlink;
    impl Drop for Unlink {
        fn drop(&mut self) {
            let _ = std::fs::remove_file("/dev/log");
        }
    }
    let _unlink = Unlink;
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    ssh_text(&u, &format!("echo {marker}"));
    let mut buf = vec![0u8; 65536];
    let mut seen = Vec::new();
    let found = eventually(Duration::from_secs(20), || {
        if let Ok(n) = socket.recv(&mut buf) {
            seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        seen.iter()
            .any(|m| m.contains(&marker) && m.contains("session.start"))
    });
    assert!(found, "datagrams: {seen:?}");
    let line = seen.iter().find(|m| m.contains(&marker)).unwrap();
    // <86> = facility authpriv (10) * 8 + severity info (6).
    assert!(line.starts_with("<86>"), "{line}");
}

/// A real session exported with `sessions export --html` and opened in a
/// real browser: headless Chromium (Debian's `chromium`) loads the page from
/// disk with the network off, runs the embedded asciinema-player, and the
/// rendered DOM shows what the session printed and the metadata beside it.
#[test]
fn an_exported_session_renders_in_chromium() {
    let u = e2e_user("bt-rec-export");
    let marker = format!("exportmarker{}", std::process::id());
    // Text that a page built carelessly would break on: markup in the
    // output, non-ASCII, and bold (an escape sequence) in a TTY session.
    let printed = ssh(
        &u,
        &["-tt"],
        &[&format!(
            "echo {marker}; printf '\\033[1mNAME\\033[0m STATUS\\nkube-system Active\\nzebra-canary-été </script> & more\\n'"
        )],
    )
    .stdin(Stdio::null())
    .output()
    .unwrap();
    assert!(printed.status.success());
    let (start, _) = session_events(&u.name, |e| {
        e["command"].as_str().is_some_and(|c| c.contains(&marker))
    });
    let (_dir, page) = export_page(&start);

    // The player starts its terminal (WebAssembly) asynchronously, outside
    // Chromium's virtual time: on a loaded machine the DOM can be dumped
    // before it has drawn anything. Such a dump shows an empty player
    // (00:00-00:00) and is taken again, at most three times in all.
    let mut dom = String::new();
    for _ in 0..3 {
        let profile = tempfile::tempdir().unwrap();
        let out = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--virtual-time-budget=10000",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("--dump-dom")
            .arg(format!("file://{}", page.display()))
            .output()
            .expect("chromium (apt-get install chromium; test.sh installs it)");
        assert!(
            out.status.success(),
            "chromium failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        dom = String::from_utf8_lossy(&out.stdout).into_owned();
        if visible_text(player_of(&dom)).contains(marker.as_str()) {
            break;
        }
    }
    let player = player_of(&dom);
    assert!(player.contains("ap-term"), "no player terminal:\n{player}");
    let shown = visible_text(player);
    for text in [
        marker.as_str(),
        "NAME STATUS",
        "kube-system Active",
        "zebra-canary-été",
        "</script> & more",
    ] {
        assert!(
            shown.contains(text),
            "the player did not render {text:?}; text in #player:\n{shown}"
        );
    }
    // The metadata is beside it, and the recording matches its end event.
    assert!(dom.contains(&u.name));
    assert!(dom.contains(&marker));
    assert!(dom.contains("intact (matches session.end)"), "{dom}");
}

/// The player's part of an exported page's DOM: the player builds its
/// terminal inside #player and draws the recorded lines into it (the
/// recording itself sits in a <script>, outside).
fn player_of(dom: &str) -> &str {
    dom.split_once(r#"<div id="player">"#)
        .and_then(|(_, rest)| rest.split_once("<aside>"))
        .map(|(player, _)| player)
        .expect("the player's container")
}

/// The text of an HTML fragment: tags out, entities decoded (the player
/// pads cells with non-breaking spaces).
fn visible_text(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&nbsp;", " ")
        .replace('\u{a0}', " ")
        .replace("&amp;", "&")
}
