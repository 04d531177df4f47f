//! `sessions export --html` opened in a real browser: headless Chromium
//! (Debian's `chromium`) loads the page from disk with the network off, runs
//! the embedded asciinema-player, and the rendered DOM must show the
//! terminal text the session printed and the metadata beside it.
//!
//! Needs `chromium` on PATH (`apt-get install chromium`).

use std::process::Command;

use bastion::audit::{AuditLog, EndedBy, SessionKind, SessionStart};
use bastion::config::RecordingConfig;
use bastion::recording::{SessionOutcome, SessionRecording};
use bastion::review::{ReviewContext, export_html};

fn chromium() -> &'static str {
    let found = Command::new("chromium").arg("--version").output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "chromium is not installed: run `apt-get install chromium` (this test renders the export in a real browser)"
    );
    "chromium"
}

fn start() -> SessionStart {
    SessionStart {
        session_id: "export-1".into(),
        user: "alice".into(),
        uid: 1000,
        groups: vec!["ops".into()],
        remote_addr: Some("192.0.2.7".into()),
        remote_port: Some(50122),
        container: "bastion-alice".into(),
        container_id: Some("c0ffee".into()),
        image: "bastion/user:1".into(),
        image_digest: Some("sha256:0123".into()),
        role: Some("arn:aws:iam::123456789012:role/ops".into()),
        kind: SessionKind::Shell,
        command: None,
        shell: Some("/bin/bash".into()),
        transfer_direction: None,
        tty: true,
        term: Some("xterm-256color".into()),
        cols: Some(80),
        rows: Some(24),
        recording: None,
        record_input: false,
        unrecorded_reason: None,
    }
}

#[test]
fn the_exported_page_renders_the_terminal_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let config = RecordingConfig {
        log_dir: dir.path().join("log"),
        audit_log: dir.path().join("log/audit.jsonl"),
        syslog: false,
        ..RecordingConfig::default()
    };
    let audit = AuditLog::open(&config.audit_log).unwrap();
    let mut session = SessionRecording::begin(&config, &audit, start(), true).unwrap();
    session.output(b"alice@bastion:~$ kubectl get ns\r\n");
    session.output(b"\x1b[1mNAME\x1b[0m              STATUS\r\n");
    session.output(b"kube-system       Active\r\n");
    session.output("zebra-canary-\u{e9}t\u{e9} </script> & more\r\n".as_bytes());
    session
        .end(
            &audit,
            SessionOutcome {
                ended_by: EndedBy::Exit,
                exit_code: Some(0),
                signal: None,
                error: None,
            },
        )
        .unwrap();

    let html = dir.path().join("export.html");
    let ctx = ReviewContext::from_config(&config);
    export_html(&ctx, "export-1", &html, &mut Vec::new()).unwrap();

    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(chromium())
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
        .arg(format!("file://{}", html.display()))
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The player built its terminal inside #player and drew the recorded
    // lines into it (the recording itself sits in a <script>, outside).
    let player = dom
        .split_once(r#"<div id="player">"#)
        .and_then(|(_, rest)| rest.split_once("<aside>"))
        .map(|(player, _)| player)
        .expect("the player's container");
    assert!(
        player.contains("ap-term"),
        "no player terminal in #player:\n{player}"
    );
    let shown = visible_text(player);
    for text in [
        "kube-system",
        "Active",
        "zebra-canary-été",
        "</script> & more",
    ] {
        assert!(
            shown.contains(text),
            "the player did not render {text:?}; text in #player:\n{shown}"
        );
    }
    // The metadata is beside it.
    assert!(dom.contains("192.0.2.7 port 50122"));
    assert!(dom.contains("intact (matches session.end)"));
}

/// The text of an HTML fragment: tags out, entities decoded, runs of
/// whitespace (the player pads cells) kept as they are.
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
