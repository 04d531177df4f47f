//! bastiond's socket attacked from the host: it is open to every local
//! account (SO_PEERCRED says who connects), so an unprivileged account
//! (`nobody` here) sends it hostile first frames and idle connections, and
//! bastiond must stay whole: no descriptor kept, no memory growth, no
//! connection held, and real users still log in.
#![forbid(unsafe_code)]

mod common;

use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use common::*;

const SOCKET: &str = "/run/bastion/bastiond.sock";

/// The tests measure bastiond's descriptors: one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// bastiond's pid (the one process running /usr/local/sbin/bastiond).
fn bastiond_pid() -> u32 {
    let out = run_ok(Command::new("pidof").arg("/usr/local/sbin/bastiond"));
    let text = String::from_utf8(out.stdout).unwrap();
    let pids: Vec<u32> = text
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 1, "one bastiond expected: {text}");
    pids[0]
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// Runs a Python script as `nobody` (an unprivileged host account that is
/// not a bastion user); returns its stdout.
fn as_nobody(script: &str) -> String {
    let out = run_ok(
        Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                // Debian's (root's PATH may lead to a private interpreter).
                "/usr/bin/python3",
                "-c",
                script,
            ])
            .env("BASTIOND_SOCKET", SOCKET),
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A Python helper: `attack(kind)` opens a connection and sends one
/// hostile first frame of that kind, then reads until bastiond closes.
const HOSTILE: &str = r#"
import json, os, socket, struct, sys
SOCK = os.environ["BASTIOND_SOCKET"]
null = os.open("/dev/null", os.O_RDONLY)
frame = json.dumps({"version": 1, "command": "id", "tty": False, "size": None, "env": {}}).encode()
frame = struct.pack(">I", len(frame)) + frame

def send(s, data, nfds):
    anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("%di" % nfds, *([null] * nfds)))] if nfds else []
    s.sendmsg([data], anc)

def attack(kind):
    try:
        hostile(kind)
    except OSError:
        pass  # bastiond closed it first

def hostile(kind):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(30)
    s.connect(SOCK)
    if kind == 0:   send(s, frame, 8)                       # more than fit: truncated
    elif kind == 1: send(s, frame, 5)
    elif kind == 2: send(s, frame, 4)                       # one too many, not truncated
    elif kind == 3: send(s, frame, 2)                       # too few
    elif kind == 4: send(s, frame[:3], 3); send(s, frame[3:], 3)   # spread over messages
    elif kind == 5: send(s, b"\xff\xff\xff\xff", 3)         # oversized length
    elif kind == 6: send(s, frame + b"junk", 3)             # bytes after the frame
    elif kind == 7: send(s, struct.pack(">I", 5) + b"{nope", 3)    # malformed JSON
    elif kind == 8: send(s, frame[:10], 3); s.shutdown(socket.SHUT_WR)  # cut short
    try:
        while s.recv(4096):
            pass
    except OSError:
        pass
    s.close()
"#;

#[test]
fn hostile_first_frames_leave_no_descriptor_and_no_memory_behind() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    require_bastion();
    let u = user("bt-sock");
    assert_eq!(ssh_text(&u, "echo before").trim(), "before");
    let pid = bastiond_pid();
    // Warm up (allocator arenas, lazily opened files), then measure.
    as_nobody(&format!("{HOSTILE}\nfor i in range(200): attack(i % 9)\n"));
    let (fds_before, rss_before) = (open_fds(pid), rss_kib(pid));
    let rounds = 10_000;
    as_nobody(&format!(
        "{HOSTILE}\nfor i in range({rounds}): attack(i % 9)\nprint('done')\n"
    ));
    assert_eq!(bastiond_pid(), pid, "bastiond survived");
    let (fds_after, rss_after) = (open_fds(pid), rss_kib(pid));
    eprintln!(
        "bastiond after {rounds} hostile requests: fds {fds_before} -> {fds_after}, RSS {rss_before} -> {rss_after} KiB"
    );
    // The old leak kept 4 descriptors per request: 40,000 here.
    assert!(
        fds_after <= fds_before + 4,
        "descriptors leaked: {fds_before} -> {fds_after}"
    );
    assert!(
        rss_after <= rss_before + 8 * 1024,
        "memory grew: {rss_before} -> {rss_after} KiB"
    );
    assert_eq!(
        ssh_text(&u, "echo after").trim(),
        "after",
        "logins still work"
    );
}

#[test]
fn idle_connections_are_capped_per_uid_and_closed_at_the_deadline() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    require_bastion();
    let u = user("bt-sock-idle");
    let pid = bastiond_pid();
    let fds_before = open_fds(pid);
    // 50 connections that never send anything: bastiond must refuse all
    // but a few at once, close the rest at its request deadline, and keep
    // serving real users meanwhile.
    let script = r#"
import os, socket, time, select
conns = []
for i in range(50):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(os.environ["BASTIOND_SOCKET"])
    conns.append(s)
time.sleep(1)
def closed(s):
    r, _, _ = select.select([s], [], [], 0)
    if not r:
        return False
    try:
        while True:
            data = s.recv(65536, socket.MSG_DONTWAIT)
            if not data:
                return True
    except BlockingIOError:
        return False
    except OSError:
        return True
early = sum(closed(s) for s in conns)
print("closed-at-once", early, flush=True)
deadline = time.time() + 30
while time.time() < deadline and not all(closed(s) for s in conns):
    time.sleep(0.2)
print("closed-in-the-end", sum(closed(s) for s in conns), flush=True)
"#;
    let nobody = std::thread::spawn(move || as_nobody(script));
    // While nobody's connections wait, a real user still logs in.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(ssh_text(&u, "echo meanwhile").trim(), "meanwhile");
    let out = nobody.join().unwrap();
    let count = |key: &str| -> usize {
        out.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {out}"))
    };
    assert!(
        count("closed-at-once") >= 40,
        "at most a few idle connections per uid are held: {out}"
    );
    assert_eq!(
        count("closed-in-the-end"),
        50,
        "every idle connection is closed at the deadline: {out}"
    );
    assert!(
        eventually(Duration::from_secs(10), || open_fds(pid) <= fds_before + 4),
        "bastiond holds no descriptor of them: {fds_before} -> {}",
        open_fds(pid)
    );
    let log = std::fs::read_to_string("/var/log/bastion/bastiond.log").unwrap_or_default();
    assert!(
        log.contains("refused connections to bastiond") && log.contains("uid=65534"),
        "the refusals are logged with the uid"
    );
}

#[test]
fn only_root_gets_bastiond_s_health_answer() {
    require_bastion();
    let health = "/run/bastion/bastiond-health.sock";
    let out = as_nobody(&format!(
        r#"
import socket
s = socket.socket(socket.AF_UNIX)
try:
    s.connect("{health}")
    print("answered:", s.recv(4096))
except PermissionError:
    print("refused")
"#
    ));
    assert_eq!(out.trim(), "refused", "{out}");
    // Root gets one JSON line saying it is healthy.
    let mut text = String::new();
    std::io::Read::read_to_string(
        &mut std::os::unix::net::UnixStream::connect(health).unwrap(),
        &mut text,
    )
    .unwrap();
    let answer: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(answer["status"], "ok", "{answer}");
    assert_eq!(answer["docker"]["ok"], true, "{answer}");
}
