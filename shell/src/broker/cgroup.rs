//! A container's cgroup, read on the host: which processes are in it (to
//! end a session's processes without scanning the whole host) and its
//! limit counters (to tell users when a limit bit). Works with cgroup v1
//! and v2.

use std::path::{Path, PathBuf};

use super::limits::{Counters, counter};

/// A container's cgroup files, found from one of its processes.
#[derive(Debug, Clone)]
pub struct CgroupFiles {
    /// `cgroup.procs` of the pids controller (v1) or the unified group (v2):
    /// every process in the container.
    procs: Option<PathBuf>,
    pids_events: Option<PathBuf>,
    /// `memory.events` (v2) or `memory.oom_control` (v1): both have `oom_kill N`.
    memory_events: Option<PathBuf>,
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
        Some(Self::from_proc_cgroup(Path::new("/sys/fs/cgroup"), &text))
    }

    fn from_proc_cgroup(root: &Path, text: &str) -> Self {
        let mut files = CgroupFiles {
            procs: None,
            pids_events: None,
            memory_events: None,
        };
        for line in text.lines() {
            let mut parts = line.splitn(3, ':');
            let (Some(_), Some(controllers), Some(path)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let rel = path.trim_start_matches('/');
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
    pub fn read_counters(&self) -> Counters {
        let value = |path: &Option<PathBuf>, key: &str| {
            path.as_ref()
                .and_then(|p| counter(&std::fs::read_to_string(p).ok()?, key))
                .unwrap_or(0)
        };
        Counters {
            pids_max: value(&self.pids_events, "max"),
            oom_kills: value(&self.memory_events, "oom_kill"),
        }
    }
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
