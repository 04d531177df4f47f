//! Telling users when their container's limits bit during a session.
//!
//! The Engine does not fail an exec when the container is at its pids
//! limit (the kernel only limits forks inside the cgroup, not processes
//! moved in), and an OOM kill shows only as exit code 137. So bastiond reads
//! the container's cgroup counters ([`super::cgroup`]: pids `max` events,
//! memory `oom_kill`) at the start and the end of each session and, when
//! they grew, tells the user in one line why commands failed.

/// How often the container hit its limits so far (cgroup counters at one
/// moment).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitHits {
    pub pids_max: u64,
    pub oom_kills: u64,
}

/// The value of `key` in a "key value" per line file.
pub(super) fn counter(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// The line for the user when a limit bit between `before` and `after`.
pub fn notice(
    before: LimitHits,
    after: LimitHits,
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
    fn counters_are_parsed_and_growth_is_told() {
        assert_eq!(counter("max 3\n", "max"), Some(3));
        assert_eq!(
            counter("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n", "oom_kill"),
            Some(2)
        );
        let zero = LimitHits::default();
        let mem = bytesize::ByteSize::gib(1);
        assert_eq!(notice(zero, zero, 40, mem), None);
        let pids = notice(
            zero,
            LimitHits {
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
            LimitHits {
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
