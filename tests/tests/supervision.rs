//! provisioning/bastion-service without systemd, with real processes: its
//! supervisor restarts a daemon that dies (kill -9) and logs it, `stop`
//! stops the daemon for good, and `restart` with a broken bastion.toml
//! stops nothing. These kill bastiond (briefly), so they run as ONE test
//! (cargo runs test binaries one after another), and always leave bastiond
//! running.
#![forbid(unsafe_code)]

mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const PIDFILE: &str = "/run/bastion/bastiond.pid";
const SUPERVISOR_PIDFILE: &str = "/run/bastion/bastiond.supervisor.pid";
const SOCKET: &str = "/run/bastion/bastiond.sock";
const LOG: &str = "/var/log/bastion/bastiond.log";
const EXE: &str = "/usr/local/sbin/bastiond";

/// The pid a pidfile names, if that process is alive (not a zombie).
fn live_pid(pidfile: &str) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(pidfile).ok()?.trim().parse().ok()?;
    alive(pid).then_some(pid)
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z'))
    })
}

fn exe_of(pid: u32) -> String {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| {
            p.to_string_lossy()
                .trim_end_matches(" (deleted)")
                .to_owned()
        })
        .unwrap_or_default()
}

fn cmdline_of(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// Every live process whose executable is bastiond's.
fn bastiond_processes() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| alive(pid) && exe_of(pid) == EXE)
        .collect()
}

fn socket_answers() -> bool {
    std::os::unix::net::UnixStream::connect(SOCKET).is_ok()
}

fn log_len() -> u64 {
    std::fs::metadata(LOG).map(|m| m.len()).unwrap_or(0)
}

/// What the service log gained since offset `from`.
fn log_since(from: u64) -> String {
    let bytes = std::fs::read(LOG).unwrap_or_default();
    String::from_utf8_lossy(&bytes[(from as usize).min(bytes.len())..]).into_owned()
}

fn bastion_service(action: &str) -> std::process::Output {
    Command::new(repo().join("provisioning/bastion-service"))
        .args([action, "bastiond"])
        .output()
        .unwrap()
}

fn login_works(u: &User) {
    assert_eq!(ssh_text(u, "echo logged-in").trim(), "logged-in");
}

/// Whatever happens, bastiond runs again when the test ends.
struct LeaveBastiondRunning;

impl Drop for LeaveBastiondRunning {
    fn drop(&mut self) {
        let out = bastion_service("start");
        if !out.status.success() {
            eprintln!(
                "could not start bastiond again: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// Puts bastion.toml back as it was (content and mode), even on panic.
struct RestoreConfig {
    text: String,
    mode: u32,
}

impl RestoreConfig {
    fn save() -> RestoreConfig {
        RestoreConfig {
            text: std::fs::read_to_string(CONFIG_PATH).unwrap(),
            mode: std::fs::metadata(CONFIG_PATH).unwrap().permissions().mode() & 0o7777,
        }
    }
}

impl Drop for RestoreConfig {
    fn drop(&mut self) {
        let tmp = format!("{CONFIG_PATH}.supervision-tmp");
        std::fs::write(&tmp, &self.text).unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(self.mode)).unwrap();
        std::fs::rename(&tmp, CONFIG_PATH).unwrap();
    }
}

#[test]
fn bastiond_is_supervised_restarted_with_a_checked_config_and_stopped_for_good() {
    let u = user("bt-supervise");
    let _running = LeaveBastiondRunning;
    assert!(
        !Path::new("/run/systemd/system").exists(),
        "these tests drive bastion-service without systemd; under systemd the units restart daemons"
    );

    // A bastiond under bastion-service's supervisor (one started before the
    // supervisor existed is not supervised).
    run_ok(Command::new(repo().join("provisioning/bastion-service")).args(["restart", "bastiond"]));
    login_works(&u);
    let supervisor = live_pid(SUPERVISOR_PIDFILE).expect("a live supervisor after start");
    assert!(
        cmdline_of(supervisor).contains("bastion-service supervise bastiond"),
        "{}",
        cmdline_of(supervisor)
    );
    let first = live_pid(PIDFILE).expect("a live bastiond after start");
    assert_eq!(exe_of(first), EXE, "the pidfile names bastiond itself");

    // (a) kill -9: the supervisor starts a new bastiond, which serves logins,
    // and the log says what happened.
    let from = log_len();
    run_ok(Command::new("kill").args(["-9", &first.to_string()]));
    let mut second = None;
    assert!(
        eventually(Duration::from_secs(60), || {
            second = live_pid(PIDFILE).filter(|&p| p != first && exe_of(p) == EXE);
            second.is_some() && socket_answers()
        }),
        "no new bastiond answered after kill -9 of {first}; log:\n{}",
        log_since(from)
    );
    let second = second.unwrap();
    login_works(&u);
    let log = log_since(from);
    assert!(
        log.contains(&format!(
            "bastiond (pid {first}) was killed by signal KILL; restarting it"
        )),
        "{log}"
    );
    assert!(log.contains("bastiond starting:"), "{log}");
    assert_eq!(live_pid(SUPERVISOR_PIDFILE), Some(supervisor));
    assert!(bastion_service("status").status.success());

    // (b) restart with a broken config: refused with one line naming the
    // problem, and the running bastiond is untouched.
    {
        let _restore = RestoreConfig::save();
        let mut text = std::fs::read_to_string(CONFIG_PATH).unwrap();
        text.push_str("\n[supervision_e2e]\n");
        let bad_line = text.lines().count();
        std::fs::write(CONFIG_PATH, &text).unwrap();
        let out = bastion_service("restart");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "restart with a broken config succeeded: {err}"
        );
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(
            err.contains("not restarting bastiond")
                && err.contains(&format!("line {bad_line}"))
                && err.contains("supervision_e2e"),
            "{err}"
        );
        assert_eq!(
            live_pid(PIDFILE),
            Some(second),
            "bastiond was stopped: {err}"
        );
        assert_eq!(live_pid(SUPERVISOR_PIDFILE), Some(supervisor));
        login_works(&u);
    }
    assert!(
        Command::new("/usr/local/bin/bastionctl")
            .args(["check", "--config", CONFIG_PATH])
            .output()
            .unwrap()
            .status
            .success(),
        "the config was not restored"
    );

    // (c) stop: the daemon and its supervisor are gone, and stay gone (the
    // supervisor's first restart would come after 1 s).
    let out = bastion_service("stop");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!alive(second) && !alive(supervisor));
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        bastiond_processes(),
        Vec::<u32>::new(),
        "a bastiond runs after stop"
    );
    assert!(
        !socket_answers(),
        "something answers on {SOCKET} after stop"
    );
    assert!(!Path::new(SUPERVISOR_PIDFILE).exists());
    assert_eq!(bastion_service("status").status.code(), Some(3));

    // Back up, supervised again.
    run_ok(Command::new(repo().join("provisioning/bastion-service")).args(["start", "bastiond"]));
    login_works(&u);
    assert!(live_pid(SUPERVISOR_PIDFILE).is_some());
}
