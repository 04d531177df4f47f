//! Telling users when their container's limits bit during a session.
//!
//! The Engine does not fail an exec when the container is at its pids
//! limit (the kernel only limits forks inside the cgroup, not processes
//! moved in), and an OOM kill shows only as exit code 137. So bastiond reads
//! the container's cgroup counters (pids `max` events, memory `oom_kill`)
//! at the start and the end of each session and, when they grew, tells the
//! user in one line why commands failed. Works with cgroup v1 and v2.

use std::path::{Path, PathBuf};

/// Where a container's counters live, found from one of its processes.
#[derive(Debug, Clone)]
pub struct CgroupFiles {
    pids_events: Option<PathBuf>,
    /// `memory.events` (v2) or `memory.oom_control` (v1): both have `oom_kill N`.
    memory_events: Option<PathBuf>,
}

/// Counter values at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub pids_max: u64,
    pub oom_kills: u64,
}

impl CgroupFiles {
    /// The counter files of the cgroup process `pid` (host pid) is in.
    pub fn of_process(pid: i32) -> Option<Self> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        Some(Self::from_proc_cgroup(Path::new("/sys/fs/cgroup"), &text))
    }

    fn from_proc_cgroup(root: &Path, text: &str) -> Self {
        let mut files = CgroupFiles {
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
                files.pids_events.get_or_insert(dir.join("pids.events"));
                files.memory_events.get_or_insert(dir.join("memory.events"));
            } else {
                for controller in controllers.split(',') {
                    match controller {
                        "pids" => {
                            files.pids_events =
                                Some(root.join("pids").join(rel).join("pids.events"))
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

    /// Reads the counters now (missing files count as zero).
    pub fn read(&self) -> Counters {
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

/// The value of `key` in a "key value" per line file.
fn counter(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// The line for the user when a limit bit between `before` and `after`.
pub fn notice(
    before: Counters,
    after: Counters,
    pids: i64,
    memory: bytesize::ByteSize,
) -> Option<String> {
    if after.oom_kills > before.oom_kills {
        return Some(format!(
            "your container ran out of memory (limit {memory}) and processes were killed; ask the bastion admins for more if you need it"
        ));
    }
    if after.pids_max > before.pids_max {
        return Some(format!(
            "your container reached its process limit ({pids}), so some commands could not start; end some processes or ask the bastion admins for a higher limit"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_v1_and_v2_files_are_found() {
        let v1 = "12:pids:/docker/abc\n4:memory:/docker/abc\n1:name=systemd:/docker/abc\n";
        let f = CgroupFiles::from_proc_cgroup(Path::new("/cg"), v1);
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
            f.pids_events.unwrap(),
            Path::new("/cg/system.slice/docker-abc.scope/pids.events")
        );
        assert_eq!(
            f.memory_events.unwrap(),
            Path::new("/cg/system.slice/docker-abc.scope/memory.events")
        );
    }

    #[test]
    fn counters_are_parsed_and_growth_is_told() {
        assert_eq!(counter("max 3\n", "max"), Some(3));
        assert_eq!(
            counter("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n", "oom_kill"),
            Some(2)
        );
        let zero = Counters::default();
        let mem = bytesize::ByteSize::gib(1);
        assert_eq!(notice(zero, zero, 40, mem), None);
        let pids = notice(
            zero,
            Counters {
                pids_max: 1,
                oom_kills: 0,
            },
            40,
            mem,
        )
        .unwrap();
        assert!(pids.contains("process limit (40)"), "{pids}");
        let oom = notice(
            zero,
            Counters {
                pids_max: 0,
                oom_kills: 1,
            },
            40,
            mem,
        )
        .unwrap();
        assert!(oom.contains("out of memory"), "{oom}");
    }
}
