//! Killing what a session started inside its container.
//!
//! A closed attach stream does not kill a `docker exec` process, and the
//! Engine has no API to kill one. bastiond runs on the host as root, so it
//! finds the session's processes itself: every process in the container's
//! cgroup whose environment carries the session's `BASTION_SESSION` marker
//! (this survives setsid, nohup and double forks), plus every descendant of
//! the exec's own process (which catches children that cleared their
//! environment while their parent lives).
//!
//! The container's processes come from its cgroup's `cgroup.procs`, so the
//! cost follows the container's process count, not the host's (every
//! session's end runs this). Without the cgroup (the container's init is
//! unknown or gone), every host process's cgroup is checked instead.

use std::collections::{HashMap, HashSet};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::cgroup::CgroupFiles;

/// The environment variable that marks a session's processes.
pub const SESSION_ENV: &str = "BASTION_SESSION";

/// One process as far as we need it.
#[derive(Debug, Clone)]
struct ProcInfo {
    pid: i32,
    ppid: i32,
    in_container: bool,
    session: Option<String>,
}

/// The container's processes: from its cgroup when it can be read, else by
/// checking every host process's cgroup for the container id.
fn scan(container_id: &str, cgroup: Option<&CgroupFiles>) -> Vec<ProcInfo> {
    if let Some(pids) = cgroup.and_then(CgroupFiles::processes) {
        return pids
            .into_iter()
            .filter_map(|pid| procfs::process::Process::new(pid).ok())
            .filter_map(|p| info(&p, true))
            .collect();
    }
    let Ok(all) = procfs::process::all_processes() else {
        return Vec::new();
    };
    all.filter_map(Result::ok)
        .filter_map(|p| {
            let in_container = p
                .cgroups()
                .map(|cgs| cgs.into_iter().any(|cg| cg.pathname.contains(container_id)))
                .unwrap_or(false);
            info(&p, in_container)
        })
        .collect()
}

/// What `select` needs of one process (`None` when it is gone).
fn info(p: &procfs::process::Process, in_container: bool) -> Option<ProcInfo> {
    let stat = p.stat().ok()?;
    let session = if in_container {
        p.environ().ok().and_then(|env| {
            env.iter().find_map(|(k, v)| {
                (k.to_str()? == SESSION_ENV).then(|| v.to_string_lossy().into_owned())
            })
        })
    } else {
        None
    };
    Some(ProcInfo {
        pid: stat.pid,
        ppid: stat.ppid,
        in_container,
        session,
    })
}

/// Pids to kill for `session` in container `container_id`.
fn select(procs: &[ProcInfo], session: Option<&str>, root_pid: Option<i32>) -> Vec<i32> {
    let mut chosen: HashSet<i32> = procs
        .iter()
        .filter(|p| {
            p.in_container
                && match (session, &p.session) {
                    (Some(want), Some(have)) => want == have,
                    (None, Some(_)) => true,
                    _ => false,
                }
        })
        .map(|p| p.pid)
        .collect();
    if let Some(root) = root_pid {
        let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
        for p in procs.iter().filter(|p| p.in_container) {
            children.entry(p.ppid).or_default().push(p.pid);
        }
        let inside: HashSet<i32> = procs
            .iter()
            .filter(|p| p.in_container)
            .map(|p| p.pid)
            .collect();
        let mut visited = HashSet::new();
        let mut stack = vec![root];
        while let Some(pid) = stack.pop() {
            if !inside.contains(&pid) || !visited.insert(pid) {
                continue;
            }
            chosen.insert(pid);
            stack.extend(children.get(&pid).into_iter().flatten());
        }
    }
    chosen.into_iter().collect()
}

/// SIGKILLs every process of `session` in container `container_id` (whose
/// cgroup, when known, lists its processes); returns how many. Blocking
/// (reads /proc): call from a blocking task.
pub fn kill_session(
    container_id: &str,
    cgroup: Option<&CgroupFiles>,
    session: &str,
    exec_pid: Option<i32>,
) -> usize {
    kill_selected(container_id, cgroup, Some(session), exec_pid)
}

/// SIGKILLs every process of any session in the container: those a previous
/// bastiond left behind when it stopped. Returns how many.
pub fn kill_orphaned_sessions(container_id: &str) -> usize {
    kill_selected(container_id, None, None, None)
}

fn kill_selected(
    container_id: &str,
    cgroup: Option<&CgroupFiles>,
    session: Option<&str>,
    root: Option<i32>,
) -> usize {
    // Two passes: a process may fork between the scan and the kill.
    let mut killed = 0;
    for _ in 0..2 {
        let pids = select(
            &scan(container_id, cgroup),
            session,
            root.filter(|&p| p > 1),
        );
        if pids.is_empty() {
            break;
        }
        for pid in pids {
            if kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok() {
                killed += 1;
            }
        }
    }
    killed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pid: i32, ppid: i32, in_container: bool, session: Option<&str>) -> ProcInfo {
        ProcInfo {
            pid,
            ppid,
            in_container,
            session: session.map(str::to_owned),
        }
    }

    #[test]
    fn selects_marked_processes_and_the_exec_tree_inside_the_container_only() {
        let procs = vec![
            p(1, 0, false, None),        // host init
            p(10, 1, true, None),        // container init
            p(20, 10, true, Some("s1")), // session 1 shell
            p(21, 20, true, Some("s1")),
            p(22, 21, true, None),       // cleared its env, child of the tree
            p(30, 10, true, Some("s2")), // another session
            p(40, 10, true, Some("s1")), // s1's double-forked daemon
            p(50, 1, false, Some("s1")), // a host process with the marker: not ours
        ];
        let mut got = select(&procs, Some("s1"), Some(20));
        got.sort();
        assert_eq!(got, vec![20, 21, 22, 40]);
        let mut orphans = select(&procs, None, None);
        orphans.sort();
        assert_eq!(orphans, vec![20, 21, 30, 40]);
    }
}
