//! Each session's own cgroup: what a session's processes cannot shed.
//!
//! A session runs as `/bin/sh -c` [`ENTER`] `bastion-session ID ARGV…`: a
//! fixed script (no user data in it) that execs `ARGV` only once its own
//! `/proc/self/cgroup` names the session's cgroup, and stops itself
//! (SIGSTOP) until then. bastiond, root on the host, creates the cgroup
//! under the container's ([`super::cgroup::Tracking`]), moves the exec's
//! process into it ([`SessionCgroup::adopt`]) and wakes it. So nothing the
//! user runs starts outside the session's cgroup, and the cgroup is
//! inherited by every child, through setsid, double forks and cleared
//! environments; the container has no writable cgroupfs and no capability
//! to leave it. When the session ends, [`SessionCgroup::kill_all`] kills
//! everything in it at once (`cgroup.kill`, or freeze-kill-thaw), so a
//! forking process cannot outrun it.
//!
//! The only processes of a container outside every session's cgroup are
//! its init and `sleep` (which run as another uid than the user, so the
//! user cannot ptrace them into forking) and sessions' wrappers in the
//! moment before they are moved. [`sweep_strays`] kills everything else of
//! the user's there (what ptracing a wrapper in that moment could make);
//! its callers hold the user's placement lock exclusively, so no wrapper
//! is in flight then.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::cgroup::{Tracking, TrackingKind};

/// The wrapper every session's command runs under. `$1` is the session
/// id; the rest is the session's argv, exec'd unchanged. It reads its
/// cgroup with shell builtins only (nothing forks before the move).
pub const ENTER: &str = r#"s="/bastion-s-$1"; shift; while :; do i=; while read -r l; do case $l in *"$s") i=1;; esac; done </proc/self/cgroup; [ -n "$i" ] && exec "$@"; kill -STOP $$; done"#;

/// The shell that runs [`ENTER`] (the image's POSIX shell).
pub const ENTER_SHELL: &str = "/bin/sh";

/// `$0` of the wrapper (how it shows in `ps`).
pub const ENTER_NAME: &str = "bastion-session";

/// Prefix of session cgroup directory names.
const PREFIX: &str = "bastion-s-";

/// The exec's argv: the wrapper around `argv`.
pub fn wrapped(session_id: &str, argv: Vec<String>) -> Vec<String> {
    let mut cmd = vec![
        ENTER_SHELL.to_owned(),
        "-c".to_owned(),
        ENTER.to_owned(),
        ENTER_NAME.to_owned(),
        session_id.to_owned(),
    ];
    cmd.extend(argv);
    cmd
}

/// Whether `cmdline` (NUL-separated, as in /proc) is a wrapper still
/// waiting, of `session_id` when given.
fn is_waiting_wrapper(cmdline: &[u8], session_id: Option<&str>) -> bool {
    let mut args = cmdline.split(|&b| b == 0);
    let head = [ENTER_SHELL, "-c", ENTER, ENTER_NAME];
    if !head.iter().all(|want| args.next() == Some(want.as_bytes())) {
        return false;
    }
    match (args.next(), session_id) {
        (Some(id), Some(want)) => id == want.as_bytes(),
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// Why a session cgroup could not be made or used.
#[derive(Debug, thiserror::Error)]
pub enum SessionCgroupError {
    #[error("the container's cgroup is not known (is cgroupfs mounted on the host?)")]
    NoTracking,
    #[error("cannot create the session cgroup {path}: {source}")]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot move process {pid} into the session cgroup {path}: {source}")]
    Adopt {
        pid: i32,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the session's process was not placed in its cgroup within {0:?}")]
    PlacementTimeout(Duration),
}

/// One session's cgroup.
#[derive(Debug, Clone)]
pub struct SessionCgroup {
    kind: TrackingKind,
    dir: PathBuf,
}

impl SessionCgroup {
    /// Creates the cgroup of `session_id` under the container's.
    pub fn create(tracking: &Tracking, session_id: &str) -> Result<Self, SessionCgroupError> {
        let dir = tracking.dir.join(format!("{PREFIX}{session_id}"));
        match fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(source) => return Err(SessionCgroupError::Create { path: dir, source }),
        }
        Ok(Self {
            kind: tracking.kind,
            dir,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Moves process `pid` (and, on v2, all its threads) into the cgroup.
    pub fn adopt(&self, pid: i32) -> Result<(), SessionCgroupError> {
        fs::write(self.dir.join("cgroup.procs"), pid.to_string()).map_err(|source| {
            SessionCgroupError::Adopt {
                pid,
                path: self.dir.clone(),
                source,
            }
        })
    }

    /// Whether `pid` is in the cgroup now.
    pub fn contains(&self, pid: i32) -> bool {
        self.pids().contains(&pid)
    }

    /// The processes in the cgroup now.
    pub fn pids(&self) -> Vec<i32> {
        read_pids(&self.dir.join("cgroup.procs"))
    }

    /// Kills every process in the cgroup, so that none can fork its way
    /// out: v2 `cgroup.kill` (one atomic kill of the whole tree), else
    /// freeze, SIGKILL each, thaw. Returns how many were seen (the kernel
    /// kills them; they leave the cgroup as they exit). Blocking.
    pub fn kill_all(&self) -> usize {
        let mut killed = 0;
        for _ in 0..50 {
            let pids = self.pids();
            if pids.is_empty() {
                break;
            }
            killed = killed.max(pids.len());
            match self.kind {
                TrackingKind::V2 if self.dir.join("cgroup.kill").exists() => {
                    let _ = fs::write(self.dir.join("cgroup.kill"), "1");
                }
                TrackingKind::V2 => {
                    self.frozen(|| kill_each(&self.pids()), "cgroup.freeze", "1", "0");
                }
                TrackingKind::V1Freezer => {
                    self.frozen(
                        || kill_each(&self.pids()),
                        "freezer.state",
                        "FROZEN",
                        "THAWED",
                    );
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        killed
    }

    /// Runs `f` with the cgroup frozen (no process in it runs or forks).
    fn frozen(&self, f: impl FnOnce(), file: &str, freeze: &str, thaw: &str) {
        let path = self.dir.join(file);
        let _ = fs::write(&path, freeze);
        // v1 reports FREEZING until every task stopped; v2 says so in
        // cgroup.events. A few milliseconds at most.
        let deadline = Instant::now() + Duration::from_millis(500);
        while Instant::now() < deadline && !self.is_frozen() {
            std::thread::sleep(Duration::from_millis(1));
        }
        f();
        let _ = fs::write(&path, thaw);
    }

    fn is_frozen(&self) -> bool {
        match self.kind {
            TrackingKind::V2 => fs::read_to_string(self.dir.join("cgroup.events"))
                .is_ok_and(|t| t.lines().any(|l| l == "frozen 1")),
            TrackingKind::V1Freezer => fs::read_to_string(self.dir.join("freezer.state"))
                .is_ok_and(|t| t.trim() == "FROZEN"),
        }
    }

    /// Kills what is left and removes the directory (retried while the
    /// last processes exit). Returns whether it is gone.
    pub fn remove(&self) -> bool {
        for _ in 0..100 {
            match fs::remove_dir(&self.dir) {
                Ok(()) => return true,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return true,
                Err(_) => {
                    self.kill_all();
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
        tracing::warn!(cgroup = %self.dir.display(), "cannot remove a session cgroup");
        false
    }
}

fn read_pids(path: &Path) -> Vec<i32> {
    fs::read_to_string(path)
        .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

fn kill_each(pids: &[i32]) {
    for &pid in pids {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// The session cgroups under a container's (those a previous bastiond left
/// when it stopped, at start-up).
pub fn existing(tracking: &Tracking) -> Vec<(String, SessionCgroup)> {
    let Ok(entries) = fs::read_dir(&tracking.dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let id = name.strip_prefix(PREFIX)?.to_owned();
            e.file_type().ok()?.is_dir().then(|| {
                (
                    id,
                    SessionCgroup {
                        kind: tracking.kind,
                        dir: e.path(),
                    },
                )
            })
        })
        .collect()
}

/// Waits for the session's wrapper `pid` to be in `cgroup` and past the
/// wrapper (exec'd into the session's program, or gone), waking it
/// whenever it stopped itself. Blocking; polls /proc.
pub fn place(
    cgroup: &SessionCgroup,
    session_id: &str,
    pid: i32,
    deadline: Duration,
) -> Result<(), SessionCgroupError> {
    cgroup.adopt(pid)?;
    let started = Instant::now();
    // Short naps: the wrapper stops itself within a millisecond and execs
    // within one more once woken; this is on every login's path.
    let nap = Duration::from_micros(100);
    loop {
        let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
            return Ok(()); // gone
        };
        if !is_waiting_wrapper(&cmdline, Some(session_id)) {
            return Ok(()); // exec'd (inside the cgroup: it only execs there)
        }
        if proc_state(pid) == Some('T') {
            let _ = kill(Pid::from_raw(pid), Signal::SIGCONT);
        }
        if started.elapsed() > deadline {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            return Err(SessionCgroupError::PlacementTimeout(deadline));
        }
        std::thread::sleep(nap);
    }
}

/// The wrappers of `session_id` waiting in the container's own cgroup
/// (not yet in any session's): found from the kernel's list, without
/// asking the Engine. Blocking.
pub fn waiting_wrappers(tracking: &Tracking, session_id: &str) -> Vec<i32> {
    read_pids(&tracking.dir.join("cgroup.procs"))
        .into_iter()
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| is_waiting_wrapper(&c, Some(session_id)))
        })
        .collect()
}

/// The state letter of `/proc/PID/stat` (after the command's parentheses).
fn proc_state(pid: i32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.chars().next()
}

/// Kills the processes of user `uid` in the container's own cgroup (not in
/// any session's). Returns how many. The caller holds the user's placement
/// lock exclusively (no session's wrapper is waiting to be moved).
/// Blocking.
pub fn sweep_strays(tracking: &Tracking, uid: u32) -> usize {
    let mut killed = 0;
    for pid in read_pids(&tracking.dir.join("cgroup.procs")) {
        let owned_by_user =
            fs::metadata(format!("/proc/{pid}")).is_ok_and(|meta| meta.uid() == uid);
        // Not the user's: the container's init and sleep (nobody).
        if owned_by_user && kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok() {
            killed += 1;
        }
    }
    killed
}

/// Session ids whose cgroup is not among `live` (for start-up recovery
/// and the reaper).
pub fn not_live(tracking: &Tracking, live: &HashSet<String>) -> Vec<(String, SessionCgroup)> {
    existing(tracking)
        .into_iter()
        .filter(|(id, _)| !live.contains(id))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::process::{Command, Stdio};

    use super::*;

    #[test]
    fn the_wrapper_is_recognised_by_its_whole_head() {
        let argv = wrapped("s1", vec!["/bin/bash".into(), "-l".into()]);
        let cmdline: Vec<u8> = argv.join("\0").into_bytes();
        assert!(is_waiting_wrapper(&cmdline, Some("s1")));
        assert!(is_waiting_wrapper(&cmdline, None));
        assert!(!is_waiting_wrapper(&cmdline, Some("s2")));
        assert!(!is_waiting_wrapper(b"/bin/bash\0-l", None));
        assert!(!is_waiting_wrapper(
            b"/bin/sh\0-c\0echo\0bastion-session\0s1",
            None
        ));
    }

    /// A cgroup of this test's own, in the host's tracking hierarchy (v2
    /// when mounted, else v1's freezer), or in v1's freezer if `v1`.
    fn test_tracking_of(v1: bool, name: &str) -> Option<Tracking> {
        if !nix::unistd::geteuid().is_root() {
            panic!("run as root (./test.sh does): the test makes cgroups");
        }
        let own = fs::read_to_string("/proc/self/cgroup").ok()?;
        let mut mounts = super::super::cgroup::Mounts::host().clone();
        if v1 {
            mounts.v2 = None;
        }
        let mut tracking = mounts.tracking(&own)?;
        tracking.dir = tracking
            .dir
            .join(format!("bastion-test-{}-{name}", std::process::id()));
        fs::create_dir_all(&tracking.dir).ok()?;
        Some(tracking)
    }

    fn test_tracking() -> Option<Tracking> {
        test_tracking_of(false, "main")
    }

    #[test]
    fn a_wrapped_command_runs_only_once_placed_and_dies_with_its_cgroup() {
        let Some(tracking) = test_tracking() else {
            panic!("no cgroup hierarchy to track sessions in on this host");
        };
        runs_only_once_placed_and_dies_with_its_cgroup(tracking);
    }

    #[test]
    fn the_same_with_the_v1_freezer() {
        if super::super::cgroup::Mounts::host().v1_freezer.is_none() {
            eprintln!("no cgroup v1 freezer on this host: covered by the v2 test");
            return;
        }
        let tracking = test_tracking_of(true, "v1").expect("a freezer cgroup");
        assert_eq!(tracking.kind, TrackingKind::V1Freezer);
        runs_only_once_placed_and_dies_with_its_cgroup(tracking);
    }

    fn runs_only_once_placed_and_dies_with_its_cgroup(tracking: Tracking) {
        let cgroup = SessionCgroup::create(&tracking, "t1").unwrap();
        // The wrapped command forks a double-forked, setsid'd child with
        // a cleared environment: it must still die with the cgroup.
        let argv = wrapped(
            "t1",
            vec![
                "/bin/sh".into(),
                "-c".into(),
                "(setsid env -i sleep 300 &) ; echo started; exec sleep 300".into(),
            ],
        );
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        // Not placed: it stops itself and runs nothing.
        let mut stopped = false;
        for _ in 0..500 {
            if proc_state(pid) == Some('T') {
                stopped = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        assert!(stopped, "the wrapper waits (stopped) until it is placed");
        place(&cgroup, "t1", pid, Duration::from_secs(10)).unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line, "started\n");
        let mut both = false;
        for _ in 0..500 {
            if cgroup.pids().len() >= 2 {
                both = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        assert!(
            both,
            "the escaped child is in the cgroup: {:?}",
            cgroup.pids()
        );
        let escaped: Vec<i32> = cgroup.pids().into_iter().filter(|&p| p != pid).collect();
        assert!(cgroup.kill_all() >= 2);
        child.wait().unwrap();
        assert!(cgroup.remove());
        for p in escaped {
            assert!(
                proc_state(p).is_none_or(|s| s == 'Z'),
                "{p} outlived its session"
            );
        }
        let _ = fs::remove_dir(&tracking.dir);
    }

    #[test]
    fn a_wrapper_in_another_sessions_cgroup_runs_nothing() {
        let Some(tracking) = test_tracking_of(false, "other") else {
            panic!("no cgroup hierarchy to track sessions in on this host");
        };
        let mine = SessionCgroup::create(&tracking, "t2").unwrap();
        let other = SessionCgroup::create(&tracking, "t3").unwrap();
        let argv = wrapped("t2", vec!["/bin/echo".into(), "ran".into()]);
        let child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        other.adopt(pid).unwrap();
        for _ in 0..20 {
            let _ = kill(Pid::from_raw(pid), Signal::SIGCONT);
            std::thread::sleep(Duration::from_millis(5));
        }
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        assert!(
            is_waiting_wrapper(&cmdline, Some("t2")),
            "woken in another session's cgroup, it still waits"
        );
        place(&mine, "t2", pid, Duration::from_secs(10)).unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.stdout, b"ran\n");
        assert!(mine.remove() && other.remove());
        let _ = fs::remove_dir(&tracking.dir);
    }
}
