//! Housekeeping of users' containers: at start-up, recover the view from
//! Docker labels and kill what a previous broker's sessions left running;
//! then, periodically, kill what no live session owns (session cgroups of
//! sessions that are gone, strays outside every session), and decide which
//! containers to stop (idle for `idle_stop_after`) and to remove (stopped
//! for `remove_after`; homes stay on the host). The stopping and removing
//! themselves, and their audit events, are the container manager's
//! ([`super::container::ContainerManager::stop`], `remove`).

use std::sync::Arc;
use std::time::Duration;

use super::Broker;
use super::cgroup::CgroupFiles;
use super::container::Listed;
use super::session_cgroup;
use crate::log_limit::LogLimit;
use crate::recording::LogDisk;

/// Start-up recovery: sessions of a previous broker cannot outlive it (it
/// held their streams), so their processes are killed. Containers stay.
pub async fn recover(broker: &Broker) {
    let containers = match broker.containers.list().await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list bastion containers at start-up");
            return;
        }
    };
    for c in containers.into_iter().filter(|c| c.running) {
        let (sessions, strays) = kill_unowned(broker, &c).await;
        tracing::info!(container = %c.name, user = %c.user, orphaned_sessions = sessions, strays, "recovered container");
    }
}

/// Kills what no live session of container `c` owns: the cgroups of
/// sessions that are not live (a previous bastiond's, or one whose end
/// failed to clean up) and the user's processes outside every session.
/// Returns (sessions, strays) killed.
async fn kill_unowned(broker: &Broker, c: &Listed) -> (usize, usize) {
    let pid = broker.containers.init_pid(&c.id).await;
    let Some(tracking) = pid
        .and_then(|pid| CgroupFiles::of_container(pid, &c.id))
        .and_then(|files| files.tracking)
    else {
        return (0, 0);
    };
    let live = broker.live.clone();
    let uid = c.uid;
    // No session of the user is between its exec and its cgroup meanwhile.
    let sweeping = broker
        .containers
        .placement_lock(&c.user)
        .write_owned()
        .await;
    tokio::task::spawn_blocking(move || {
        let _sweeping = sweeping;
        // The cgroups first, then the live ids: a cgroup is made after its
        // session is counted live, so none made meanwhile is taken.
        let existing = session_cgroup::existing(&tracking);
        let live = live.ids();
        let mut sessions = 0;
        for (id, cgroup) in existing {
            if !live.contains(&id) {
                cgroup.kill_all();
                cgroup.remove();
                sessions += 1;
            }
        }
        let strays = uid.map_or(0, |uid| session_cgroup::sweep_strays(&tracking, uid));
        (sessions, strays)
    })
    .await
    .unwrap_or((0, 0))
}

/// How often the reaper looks.
fn interval(idle: Duration) -> Duration {
    (idle / 4).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

/// Runs forever (aborted at shutdown).
pub async fn run(broker: Arc<Broker>) {
    let mut disk_warnings = LogLimit::new(Duration::from_secs(600));
    loop {
        let config = broker.config.current();
        tokio::time::sleep(interval(config.bastiond.idle_stop_after)).await;
        if let Err(e) = sweep(&broker).await {
            tracing::debug!(error = %e, "reaper sweep failed");
        }
        check_log_disk(&config.recording, &mut disk_warnings);
    }
}

/// Warns (every ten minutes at most) while the log disk has less than
/// twice the audit trail's reserve free, before recordings stop at the
/// reserve itself.
fn check_log_disk(config: &crate::config::RecordingConfig, limit: &mut LogLimit<bool>) {
    let reserve = config.reserve;
    let Ok(state) = LogDisk::check(&config.log_dir, reserve.as_u64()) else {
        return;
    };
    let log_dir = config.log_dir.display();
    match state {
        LogDisk::Roomy => {}
        LogDisk::BelowReserve { free } => {
            if limit.due(true).is_some() {
                let free = bytesize::ByteSize::b(free);
                tracing::error!(%log_dir, %free, %reserve, "the log disk is below the audit trail's reserve: no session can be recorded (logins are refused unless on_log_failure = \"allow\"); free space there");
            }
        }
        LogDisk::NearlyFull { free } => {
            if limit.due(false).is_some() {
                let free = bytesize::ByteSize::b(free);
                tracing::warn!(%log_dir, %free, %reserve, "the log disk is nearly full: recordings stop when less than the reserve is free; free space there");
            }
        }
    }
}

async fn sweep(broker: &Broker) -> Result<(), bollard::errors::Error> {
    let config = broker.config.current();
    let containers = &broker.containers;
    for c in containers.list().await? {
        let lock = containers.lock_for(&c.user);
        let _guard = lock.lock().await;
        if c.running {
            let (sessions, strays) = kill_unowned(broker, &c).await;
            if sessions + strays > 0 {
                tracing::warn!(container = %c.name, user = %c.user, sessions, strays, "killed processes no live session owns");
            }
            let idle = broker.live.idle_since(&c.user, broker.started);
            if idle.is_some_and(|since| since.elapsed() >= config.bastiond.idle_stop_after) {
                containers.stop(&c, "idle").await?;
            }
        } else if containers.stopped_for(&c.id).await? >= config.bastiond.remove_after {
            containers
                .remove(&c, "stopped longer than remove_after")
                .await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sweep_interval_follows_the_idle_time() {
        assert_eq!(interval(Duration::from_secs(3600)), Duration::from_secs(60));
        assert_eq!(interval(Duration::from_secs(20)), Duration::from_secs(5));
        assert_eq!(interval(Duration::from_secs(1)), Duration::from_secs(1));
    }
}
