//! Housekeeping of users' containers: at start-up, recover the view from
//! Docker labels and kill what a previous broker's sessions left running;
//! then, periodically, stop containers idle for `idle_stop_after` and remove
//! containers stopped for `remove_after` (homes stay on the host).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bollard::query_parameters::{
    ListContainersOptionsBuilder, RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};

use super::Broker;
use super::container::{Lifecycle, event, labels};
use super::procs;

/// A bastion container as listed by Docker.
struct Listed {
    id: String,
    name: String,
    user: String,
    running: bool,
}

async fn list(broker: &Broker) -> Result<Vec<Listed>, bollard::errors::Error> {
    let options = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&HashMap::from([("label", vec![labels::USER])]))
        .build();
    let summaries = broker
        .containers
        .docker()
        .list_containers(Some(options))
        .await?;
    Ok(summaries
        .into_iter()
        .filter_map(|c| {
            let user = c.labels.as_ref()?.get(labels::USER)?.clone();
            Some(Listed {
                id: c.id?,
                name: c.names?.first()?.trim_start_matches('/').to_owned(),
                user,
                running: c.state == Some(bollard::models::ContainerSummaryStateEnum::RUNNING),
            })
        })
        .collect())
}

/// Start-up recovery: sessions of a previous broker cannot outlive it (it
/// held their streams), so their processes are killed. Containers stay.
pub async fn recover(broker: &Broker) {
    let containers = match list(broker).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list bastion containers at start-up");
            return;
        }
    };
    for c in containers.into_iter().filter(|c| c.running) {
        let id = c.id.clone();
        let killed = tokio::task::spawn_blocking(move || procs::kill_orphaned_sessions(&id))
            .await
            .unwrap_or(0);
        tracing::info!(container = %c.name, user = %c.user, orphans_killed = killed, "recovered container");
    }
}

/// How often the reaper looks.
fn interval(idle: Duration) -> Duration {
    (idle / 4).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

/// Runs forever (aborted at shutdown).
pub async fn run(broker: Arc<Broker>) {
    loop {
        let config = broker.config.current();
        tokio::time::sleep(interval(config.bastiond.idle_stop_after)).await;
        if let Err(e) = sweep(&broker).await {
            tracing::debug!(error = %e, "reaper sweep failed");
        }
    }
}

async fn sweep(broker: &Broker) -> Result<(), bollard::errors::Error> {
    let config = broker.config.current();
    let docker = broker.containers.docker();
    for c in list(broker).await? {
        let lock = broker.containers.lock_for(&c.user);
        let _guard = lock.lock().await;
        if c.running {
            let idle = broker.live.idle_since(&c.user, broker.started);
            if idle.is_some_and(|since| since.elapsed() >= config.bastiond.idle_stop_after) {
                docker
                    .stop_container(&c.id, Some(StopContainerOptionsBuilder::new().t(5).build()))
                    .await?;
                tracing::info!(container = %c.name, user = %c.user, "stopped idle container");
                let ev = event(&c.user, &c.name, &c.id, None, "idle");
                broker.containers.audit(Lifecycle::Stop, ev).await;
            }
        } else if stopped_for(broker, &c.id).await? >= config.bastiond.remove_after {
            docker
                .remove_container(
                    &c.id,
                    Some(RemoveContainerOptionsBuilder::new().force(true).build()),
                )
                .await?;
            tracing::info!(container = %c.name, user = %c.user, "removed long-stopped container");
            let ev = event(
                &c.user,
                &c.name,
                &c.id,
                None,
                "stopped longer than remove_after",
            );
            broker.containers.audit(Lifecycle::Remove, ev).await;
        }
    }
    Ok(())
}

/// How long a container has been stopped (zero when unknown).
async fn stopped_for(broker: &Broker, id: &str) -> Result<Duration, bollard::errors::Error> {
    let inspect = broker
        .containers
        .docker()
        .inspect_container(id, None)
        .await?;
    let finished = inspect.state.and_then(|s| s.finished_at).and_then(|t| {
        time::OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339).ok()
    });
    let Some(finished) = finished else {
        return Ok(Duration::ZERO);
    };
    if finished.year() < 2000 {
        // Created but never started: count from now on.
        return Ok(Duration::ZERO);
    }
    let age = time::OffsetDateTime::now_utc() - finished;
    Ok(age.try_into().unwrap_or(Duration::ZERO))
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
