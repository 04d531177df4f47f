//! A container's cgroup, read on the host: its limit counters (to tell
//! users when a limit bit) and the directory under which each session gets
//! its own cgroup ([`super::session_cgroup`]). Works with cgroup v1, v2 and
//! the hybrid layout (v1 controllers plus a v2 hierarchy without any).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::limits::{LimitHits, counter};

/// The hierarchy sessions are tracked in, and the container's directory
/// there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracking {
    pub kind: TrackingKind,
    /// The container's own cgroup directory in that hierarchy.
    pub dir: PathBuf,
}

/// Which kind of hierarchy tracks sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackingKind {
    /// cgroup v2 (also the hybrid layout's controller-less hierarchy):
    /// `cgroup.kill`, or `cgroup.freeze` on kernels before 5.14.
    V2,
    /// cgroup v1's freezer controller: `freezer.state`.
    V1Freezer,
}

/// Where the host mounts the cgroup hierarchies sessions can be tracked in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mounts {
    pub v2: Option<PathBuf>,
    pub v1_freezer: Option<PathBuf>,
}

impl Mounts {
    /// The host's, read once from /proc/self/mountinfo.
    pub fn host() -> &'static Mounts {
        static MOUNTS: OnceLock<Mounts> = OnceLock::new();
        MOUNTS.get_or_init(|| {
            std::fs::read_to_string("/proc/self/mountinfo")
                .map(|text| Self::parse(&text))
                .unwrap_or_default()
        })
    }

    /// Parses mountinfo: `ID PARENT MAJ:MIN ROOT POINT OPTS [TAGS] - TYPE
    /// SOURCE SUPEROPTS`. Only mounts of a hierarchy's root count (a bind
    /// of a sub-cgroup would shift every path).
    pub fn parse(mountinfo: &str) -> Self {
        let mut mounts = Mounts::default();
        for line in mountinfo.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let left: Vec<&str> = left.split(' ').collect();
            let right: Vec<&str> = right.split(' ').collect();
            let (Some(root), Some(point), Some(fstype)) = (left.get(3), left.get(4), right.first())
            else {
                continue;
            };
            if *root != "/" {
                continue;
            }
            let point = PathBuf::from(point.replace("\\040", " "));
            match *fstype {
                "cgroup2" => {
                    mounts.v2.get_or_insert(point);
                }
                "cgroup"
                    if right
                        .get(2)
                        .is_some_and(|o| o.split(',').any(|o| o == "freezer")) =>
                {
                    mounts.v1_freezer.get_or_insert(point);
                }
                _ => {}
            }
        }
        mounts
    }

    /// The tracking hierarchy of a process whose `/proc/PID/cgroup` is
    /// `text`: v2 when mounted, else v1's freezer.
    pub fn tracking(&self, text: &str) -> Option<Tracking> {
        let mut v2 = None;
        let mut freezer = None;
        for (controllers, rel) in entries(text) {
            if controllers.is_empty() {
                v2 = self.v2.as_ref().map(|m| m.join(rel));
            } else if controllers.split(',').any(|c| c == "freezer") {
                freezer = self.v1_freezer.as_ref().map(|m| m.join(rel));
            }
        }
        match (v2, freezer) {
            (Some(dir), _) => Some(Tracking {
                kind: TrackingKind::V2,
                dir,
            }),
            (None, Some(dir)) => Some(Tracking {
                kind: TrackingKind::V1Freezer,
                dir,
            }),
            _ => None,
        }
    }
}

/// A container's cgroup files, found from one of its processes.
#[derive(Debug, Clone)]
pub struct CgroupFiles {
    /// `cgroup.procs` of the pids controller (v1) or the unified group (v2):
    /// every process in the container.
    procs: Option<PathBuf>,
    pids_events: Option<PathBuf>,
    /// `memory.events` (v2) or `memory.oom_control` (v1): both have `oom_kill N`.
    memory_events: Option<PathBuf>,
    /// Where the container's sessions get their own cgroups.
    pub tracking: Option<Tracking>,
}

impl CgroupFiles {
    /// The cgroup files of container `container_id`, whose init process is
    /// `pid` (host pid); `None` when that process is not (or no longer) in
    /// the container's cgroup.
    pub fn of_container(pid: i32, container_id: &str) -> Option<Self> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        if container_id.is_empty() || !text.contains(container_id) {
            return None;
        }
        let mut files = Self::from_proc_cgroup(Path::new("/sys/fs/cgroup"), &text);
        files.tracking = Mounts::host().tracking(&text);
        Some(files)
    }

    fn from_proc_cgroup(root: &Path, text: &str) -> Self {
        let mut files = CgroupFiles {
            procs: None,
            pids_events: None,
            memory_events: None,
            tracking: None,
        };
        for (controllers, rel) in entries(text) {
            if controllers.is_empty() {
                // cgroup v2: one unified hierarchy.
                let dir = root.join(rel);
                files.procs.get_or_insert(dir.join("cgroup.procs"));
                files.pids_events.get_or_insert(dir.join("pids.events"));
                files.memory_events.get_or_insert(dir.join("memory.events"));
            } else {
                for controller in controllers.split(',') {
                    match controller {
                        "pids" => {
                            let dir = root.join("pids").join(rel);
                            files.procs = Some(dir.join("cgroup.procs"));
                            files.pids_events = Some(dir.join("pids.events"));
                        }
                        "memory" => {
                            files.memory_events =
                                Some(root.join("memory").join(rel).join("memory.oom_control"));
                        }
                        _ => {}
                    }
                }
            }
        }
        files
    }

    /// The host pids of every process in the cgroup now, or `None` when
    /// the file cannot be read (the container stopped, or no pids
    /// controller). Read by the kernel's own accounting: no process in the
    /// container can leave it (no capabilities, no writable cgroupfs).
    pub fn processes(&self) -> Option<Vec<i32>> {
        let text = std::fs::read_to_string(self.procs.as_ref()?).ok()?;
        Some(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
    }

    /// Reads the limit counters now (missing files count as zero).
    pub fn read_limit_hits(&self) -> LimitHits {
        let value = |path: &Option<PathBuf>, key: &str| {
            path.as_ref()
                .and_then(|p| counter(&std::fs::read_to_string(p).ok()?, key))
                .unwrap_or(0)
        };
        LimitHits {
            pids_max: value(&self.pids_events, "max"),
            oom_kills: value(&self.memory_events, "oom_kill"),
        }
    }
}

/// The entries of a `/proc/PID/cgroup` text: each line's controllers
/// (empty for v2's unified hierarchy) and its path relative to the
/// hierarchy's mount. Lines that are not `ID:CONTROLLERS:PATH` are skipped.
fn entries(text: &str) -> impl Iterator<Item = (&str, &str)> {
    text.lines().filter_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        Some((controllers, path.trim_start_matches('/')))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_v1_and_v2_files_are_found() {
        let v1 = "12:pids:/docker/abc\n4:memory:/docker/abc\n1:name=systemd:/docker/abc\n";
        let f = CgroupFiles::from_proc_cgroup(Path::new("/cg"), v1);
        assert_eq!(
            f.procs.unwrap(),
            Path::new("/cg/pids/docker/abc/cgroup.procs")
        );
        assert_eq!(
            f.pids_events.unwrap(),
            Path::new("/cg/pids/docker/abc/pids.events")
        );
        assert_eq!(
            f.memory_events.unwrap(),
            Path::new("/cg/memory/docker/abc/memory.oom_control")
        );
        let v2 = "0::/system.slice/docker-abc.scope\n";
        let f = CgroupFiles::from_proc_cgroup(Path::new("/cg"), v2);
        assert_eq!(
            f.procs.unwrap(),
            Path::new("/cg/system.slice/docker-abc.scope/cgroup.procs")
        );
        assert_eq!(
            f.pids_events.unwrap(),
            Path::new("/cg/system.slice/docker-abc.scope/pids.events")
        );
        assert_eq!(
            f.memory_events.unwrap(),
            Path::new("/cg/system.slice/docker-abc.scope/memory.events")
        );
    }

    const HYBRID: &str = "\
24 1 0:22 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
25 24 0:23 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
26 24 0:24 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
27 24 0:25 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
28 1 0:26 /docker/abc /mnt/bind rw - cgroup2 cgroup2 rw
";

    #[test]
    fn sessions_are_tracked_in_v2_when_mounted_else_in_the_freezer() {
        let mounts = Mounts::parse(HYBRID);
        assert_eq!(
            mounts.v2.as_deref(),
            Some(Path::new("/sys/fs/cgroup/unified"))
        );
        assert_eq!(
            mounts.v1_freezer.as_deref(),
            Some(Path::new("/sys/fs/cgroup/freezer"))
        );
        let hybrid = "6:freezer:/docker/abc\n8:pids:/docker/abc\n0::/docker/abc\n";
        assert_eq!(
            mounts.tracking(hybrid),
            Some(Tracking {
                kind: TrackingKind::V2,
                dir: "/sys/fs/cgroup/unified/docker/abc".into()
            })
        );
        let v1_only = Mounts {
            v2: None,
            ..mounts.clone()
        };
        assert_eq!(
            v1_only.tracking(hybrid),
            Some(Tracking {
                kind: TrackingKind::V1Freezer,
                dir: "/sys/fs/cgroup/freezer/docker/abc".into()
            })
        );
        let v2 = Mounts::parse("30 1 0:27 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n");
        assert_eq!(
            v2.tracking("0::/system.slice/docker-abc.scope\n")
                .unwrap()
                .dir,
            Path::new("/sys/fs/cgroup/system.slice/docker-abc.scope")
        );
        assert_eq!(Mounts::default().tracking(hybrid), None);
    }

    #[test]
    fn a_process_outside_the_container_gives_no_files() {
        let me = std::process::id() as i32;
        assert!(CgroupFiles::of_container(me, "0123456789abcdef").is_none());
        assert!(CgroupFiles::of_container(me, "").is_none());
    }

    #[test]
    fn a_live_process_is_found_in_its_own_cgroup() {
        let me = std::process::id() as i32;
        let text = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let files = CgroupFiles::from_proc_cgroup(Path::new("/sys/fs/cgroup"), &text);
        // This process's cgroup (pids controller or unified) lists it.
        if let Some(pids) = files.processes() {
            assert!(pids.contains(&me), "{pids:?}");
        }
    }
}
