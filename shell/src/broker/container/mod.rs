//! Users' containers: `bastion-<user>`, created on first login, reused while
//! running, started when stopped, recreated when its configuration (image,
//! role, limits, env) changed and no session is live. One lock per user
//! makes concurrent first logins end in one container.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::query_parameters::{
    ListContainersOptionsBuilder, RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};

pub mod accounts;
pub mod home;
mod setup;
pub mod spec;

use accounts::{AccountsError, ImageAccountsCache};
use home::HomeError;
use spec::build_spec;
pub use spec::{CONTAINER_INIT_USER, ContainerKind, MASKED_PATHS};

use super::cgroup::CgroupFiles;
use super::container_state::{ContainerState, KnownContainer, Running, Ticket};
use super::identity::Identity;
use super::user_network::{self, UserNetworkError};
use crate::audit::{AuditEvent, AuditLog, ContainerEvent};
use crate::config::{BastiondConfig, UserSettings};
use crate::contract::labels;

/// Why a user's container could not be made ready.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("the Docker Engine is not reachable: {0}")]
    DockerUnavailable(#[source] DockerError),
    #[error("image {image} is not present in the Docker Engine")]
    ImageMissing { image: String },
    #[error("a container named {name} exists but does not belong to bastion user {user}")]
    NotOurs { name: String, user: String },
    #[error(transparent)]
    Home(#[from] HomeError),
    #[error(transparent)]
    Accounts(#[from] AccountsError),
    #[error("Docker Engine failed to {action} container {name}: {source}")]
    Docker {
        action: &'static str,
        name: String,
        #[source]
        source: DockerError,
    },
    #[error("Docker Engine failed to create network {name}: {source}")]
    Network {
        name: String,
        #[source]
        source: DockerError,
    },
    #[error(transparent)]
    UserNetwork(#[from] UserNetworkError),
}

impl ContainerError {
    /// The one line a user sees.
    pub fn user_message(&self) -> String {
        match self {
            Self::DockerUnavailable(_) | Self::UserNetwork(UserNetworkError::Unreachable(_)) => {
                ENGINE_DOWN.into()
            }
            Self::ImageMissing { image } => format!(
                "your container image {image} is not available on this bastion; please tell the bastion admins"
            ),
            _ => "your container could not be started; please tell the bastion admins (details are in the bastion log)".into(),
        }
    }
}

/// What a user is told when the Docker Engine cannot be reached.
pub const ENGINE_DOWN: &str = "the container engine is not available right now; please try again in a minute or tell the bastion admins";

/// True when the error means the Engine could not be reached at all.
pub fn is_unreachable(e: &DockerError) -> bool {
    matches!(
        e,
        DockerError::IOError { .. }
            | DockerError::HyperResponseError { .. }
            | DockerError::HyperLegacyError { .. }
            | DockerError::SocketNotFoundError(_)
            | DockerError::RequestTimeoutError
    )
}

fn status_of(e: &DockerError) -> Option<u16> {
    match e {
        DockerError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// Creates, starts and reuses users' containers.
pub struct ContainerManager {
    docker: Docker,
    audit: Arc<AuditLog>,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Per user: held shared by each session from before its exec exists
    /// until it is in its own cgroup, and exclusively by whoever kills the
    /// user's processes outside every session (then none is in flight).
    placements: Mutex<HashMap<String, Arc<tokio::sync::RwLock<()>>>>,
    /// Each image's own `/etc/passwd` and `/etc/group`, by image id.
    image_accounts: ImageAccountsCache,
    /// Running containers and image references as last inspected, kept by
    /// the events stream ([`super::container_state::watch`]).
    state: Arc<ContainerState>,
    /// Serialises the choice of users' network subnets.
    network_alloc: tokio::sync::Mutex<()>,
}

/// A bastion container as listed by Docker.
#[derive(Debug, Clone)]
pub struct Listed {
    pub id: String,
    pub name: String,
    pub user: String,
    pub uid: Option<u32>,
    pub running: bool,
    /// The user's file-transfer container (not their shell container).
    pub transfers: bool,
}

/// Which container lifecycle event to audit.
#[derive(Debug, Clone, Copy)]
enum Lifecycle {
    Create,
    Start,
    Stop,
    Remove,
}

impl ContainerManager {
    pub fn new(docker: Docker, audit: Arc<AuditLog>) -> Self {
        Self {
            docker,
            audit,
            locks: Mutex::new(HashMap::new()),
            placements: Mutex::new(HashMap::new()),
            image_accounts: ImageAccountsCache::default(),
            state: Arc::default(),
            network_alloc: tokio::sync::Mutex::new(()),
        }
    }

    /// The events-kept state, for its watcher.
    pub fn state(&self) -> Arc<ContainerState> {
        self.state.clone()
    }

    /// Forgets what is remembered of container `name` (an exec in it failed).
    pub fn forget(&self, name: &str) {
        self.state.forget(name);
    }

    /// `who`'s container, when the events-kept state knows it running and
    /// created from exactly what `settings` ask for now.
    fn remembered(
        &self,
        config: &BastiondConfig,
        who: &Identity,
        settings: &UserSettings,
        kind: ContainerKind,
        name: &str,
    ) -> Option<Running> {
        let (known, image_id) = self.state.lookup(name, &settings.image)?;
        let current = known.user == who.name
            && known.spec_hash == build_spec(config, who, settings, &image_id, kind).hash;
        current.then_some(Running {
            remembered: true,
            ..known.running
        })
    }

    /// Every bastion container (labelled with a user), running or not.
    pub async fn list(&self) -> Result<Vec<Listed>, DockerError> {
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&HashMap::from([("label", vec![labels::USER])]))
            .build();
        let summaries = self.docker.list_containers(Some(options)).await?;
        Ok(summaries
            .into_iter()
            .filter_map(|c| {
                let labels = c.labels.as_ref()?;
                Some(Listed {
                    user: labels.get(labels::USER)?.clone(),
                    uid: labels.get(labels::UID).and_then(|u| u.parse().ok()),
                    transfers: labels.contains_key(labels::PURPOSE),
                    running: c.state == Some(bollard::models::ContainerSummaryStateEnum::RUNNING),
                    name: c.names?.first()?.trim_start_matches('/').to_owned(),
                    id: c.id?,
                })
            })
            .collect())
    }

    /// The pid (on the host) of container `id`'s init, when it runs.
    pub async fn init_pid(&self, id: &str) -> Option<i32> {
        let inspect = self.docker.inspect_container(id, None).await.ok()?;
        inspect
            .state?
            .pid
            .and_then(|p| i32::try_from(p).ok())
            .filter(|&p| p > 0)
    }

    /// How long container `id` has been stopped (zero when unknown or never
    /// started).
    pub async fn stopped_for(&self, id: &str) -> Result<Duration, DockerError> {
        let inspect = self.docker.inspect_container(id, None).await?;
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

    /// Stops container `c` (5 s grace), logs and audits it with `reason`.
    /// The caller holds the user's lock.
    pub async fn stop(&self, c: &Listed, reason: &str) -> Result<(), DockerError> {
        self.docker
            .stop_container(&c.id, Some(StopContainerOptionsBuilder::new().t(5).build()))
            .await?;
        tracing::info!(container = %c.name, user = %c.user, reason, "stopped container");
        let ev = event(&c.user, &c.name, &c.id, None, reason);
        self.audit(Lifecycle::Stop, ev).await;
        Ok(())
    }

    /// Removes container `c` (and, for a shell container, the user's
    /// network; the home stays), logs and audits it with `reason`. The
    /// caller holds the user's lock.
    pub async fn remove(&self, c: &Listed, reason: &str) -> Result<(), DockerError> {
        self.docker
            .remove_container(
                &c.id,
                Some(RemoveContainerOptionsBuilder::new().force(true).build()),
            )
            .await?;
        tracing::info!(container = %c.name, user = %c.user, reason, "removed container");
        if !c.transfers {
            user_network::remove(&self.docker, &c.user).await;
        }
        let ev = event(&c.user, &c.name, &c.id, None, reason);
        self.audit(Lifecycle::Remove, ev).await;
        Ok(())
    }

    /// Writes a `container.*` audit event (off the async threads).
    async fn audit(&self, what: Lifecycle, event: ContainerEvent) {
        let audit = self.audit.clone();
        let record = match what {
            Lifecycle::Create => AuditEvent::ContainerCreate(event),
            Lifecycle::Start => AuditEvent::ContainerStart(event),
            Lifecycle::Stop => AuditEvent::ContainerStop(event),
            Lifecycle::Remove => AuditEvent::ContainerRemove(event),
        };
        let name = record.name();
        match tokio::task::spawn_blocking(move || audit.append(&record)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(event = name, error = %e, "cannot write audit event"),
            Err(e) => tracing::error!(event = name, error = %e, "audit writer panicked"),
        }
    }

    /// The lock serialising container changes of `user`.
    pub fn lock_for(&self, user: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().expect("lock map poisoned");
        locks.entry(user.to_owned()).or_default().clone()
    }

    /// The lock between sessions being placed in their cgroups (shared)
    /// and sweeps of processes outside every session (exclusive).
    pub fn placement_lock(&self, user: &str) -> Arc<tokio::sync::RwLock<()>> {
        let mut locks = self.placements.lock().expect("lock map poisoned");
        locks.entry(user.to_owned()).or_default().clone()
    }

    /// Makes `who`'s container of `kind` exist and run, per `settings`.
    /// `live_sessions` says whether the user has sessions right now (a
    /// container is never recreated under a live session).
    pub async fn ensure(
        &self,
        config: &BastiondConfig,
        who: &Identity,
        settings: &UserSettings,
        kind: ContainerKind,
        live_sessions: impl Fn() -> usize,
    ) -> Result<Running, ContainerError> {
        let lock = self.lock_for(&who.name);
        let _guard = lock.lock().await;
        let name = kind.name_of(&who.name);
        if let Some(running) = self.remembered(config, who, settings, kind, &name) {
            return Ok(running);
        }
        let ticket = self.state.ticket();

        // Both questions at once: they are independent.
        let (image, existing) = tokio::join!(
            self.docker.inspect_image(&settings.image),
            self.docker.inspect_container(&name, None)
        );
        let image = match image {
            Ok(image) => image,
            Err(e) if status_of(&e) == Some(404) => {
                return Err(ContainerError::ImageMissing {
                    image: settings.image.clone(),
                });
            }
            Err(e) if is_unreachable(&e) => return Err(ContainerError::DockerUnavailable(e)),
            Err(e) => {
                return Err(ContainerError::Docker {
                    action: "inspect the image of",
                    name,
                    source: e,
                });
            }
        };
        let image_locales = locales_of(image.config.as_ref().and_then(|c| c.labels.as_ref()));
        let image_id = image.id.unwrap_or_default();
        let spec = build_spec(config, who, settings, &image_id, kind);
        let spec_hash = spec.hash.clone();

        let existing = match existing {
            Ok(c) => Some(c),
            Err(e) if status_of(&e) == Some(404) => None,
            Err(e) if is_unreachable(&e) => return Err(ContainerError::DockerUnavailable(e)),
            Err(e) => {
                return Err(ContainerError::Docker {
                    action: "inspect",
                    name,
                    source: e,
                });
            }
        };
        let docker_err = |action, source| ContainerError::Docker {
            action,
            name: name.clone(),
            source,
        };

        let mut reuse = None;
        let mut init_pid = None;
        // Only a container created from what the settings ask for now is
        // remembered (one kept for its live sessions is not).
        let mut current_spec = true;
        if let Some(c) = existing {
            let labels = c
                .config
                .as_ref()
                .and_then(|c| c.labels.clone())
                .unwrap_or_default();
            if labels.get(labels::USER) != Some(&who.name) {
                return Err(ContainerError::NotOurs {
                    name,
                    user: who.name.clone(),
                });
            }
            let id = c.id.clone().unwrap_or_default();
            let state = c.state.as_ref();
            let running = state.and_then(|s| s.running).unwrap_or(false);
            let dead = state
                .and_then(|s| s.status)
                .is_some_and(|s| s == bollard::models::ContainerStateStatusEnum::DEAD);
            let current = labels.get(labels::SPEC) == Some(&spec.hash);
            if dead || (!current && live_sessions() == 0) {
                tracing::info!(user = %who.name, container = %name, dead, "recreating container: its configuration changed");
                self.docker
                    .remove_container(
                        &id,
                        Some(RemoveContainerOptionsBuilder::new().force(true).build()),
                    )
                    .await
                    .map_err(|e| docker_err("remove", e))?;
                let reason = if dead {
                    "dead"
                } else {
                    "configuration changed"
                };
                self.audit(
                    Lifecycle::Remove,
                    event(&who.name, &name, &id, c.image.as_deref(), reason),
                )
                .await;
            } else {
                if !current {
                    tracing::info!(user = %who.name, container = %name, "configuration changed; recreation waits until no session is live");
                    current_spec = false;
                }
                let running_image = c.image.clone().unwrap_or_default();
                init_pid = state
                    .and_then(|s| s.pid)
                    .and_then(|p| i32::try_from(p).ok())
                    .filter(|&p| p > 0);
                // A container's labels include its image's.
                reuse = Some((
                    id,
                    running,
                    running_image,
                    labels.get(labels::ROLE).cloned(),
                    locales_of(Some(&labels)),
                ));
            }
        }

        let configured_image_id = image_id.clone();
        let (id, running, image_id, role, locales) = match reuse {
            Some(found) => found,
            None => {
                let id = self
                    .create(config, who, settings, kind, spec, &name, &image_id)
                    .await?;
                let ev = event(&who.name, &name, &id, Some(&image_id), "login");
                self.audit(Lifecycle::Create, ev).await;
                (id, false, image_id, settings.role.clone(), image_locales)
            }
        };
        if !running {
            // After a reboot the home's file system is not mounted yet.
            self.prepare_home(config, who, settings).await?;
            match self.docker.start_container(&id, None).await {
                Ok(()) => {
                    tracing::info!(user = %who.name, container = %name, "started container");
                    let ev = event(&who.name, &name, &id, Some(&image_id), "login");
                    self.audit(Lifecycle::Start, ev).await;
                }
                // 304: already running (another broker path started it).
                Err(e) if status_of(&e) == Some(304) => {}
                Err(e) => return Err(docker_err("start", e)),
            }
            init_pid = self
                .docker
                .inspect_container(&id, None)
                .await
                .ok()
                .and_then(|c| c.state?.pid)
                .and_then(|p| i32::try_from(p).ok())
                .filter(|&p| p > 0);
        }
        let cgroup = init_pid
            .and_then(|pid| CgroupFiles::of_container(pid, &id))
            .map(Arc::new);
        let running = Running {
            cgroup,
            id,
            name,
            image: settings.image.clone(),
            image_id,
            role,
            locales,
            remembered: false,
        };
        if current_spec && let Some(ticket) = ticket {
            self.remember(ticket, who, &running, spec_hash, &configured_image_id);
        }
        Ok(running)
    }

    fn remember(
        &self,
        ticket: Ticket,
        who: &Identity,
        running: &Running,
        spec_hash: String,
        configured_image_id: &str,
    ) {
        let known = KnownContainer {
            running: running.clone(),
            user: who.name.clone(),
            spec_hash,
        };
        let kept = self.state.remember(ticket, known, configured_image_id);
        tracing::debug!(container = %running.name, kept, "container state remembered");
    }

    pub fn docker(&self) -> &Docker {
        &self.docker
    }
}

/// A `container.*` event.
fn event(user: &str, name: &str, id: &str, image_id: Option<&str>, reason: &str) -> ContainerEvent {
    ContainerEvent {
        user: user.to_owned(),
        container: name.to_owned(),
        container_id: Some(id.to_owned()),
        image: None,
        image_digest: image_id.map(str::to_owned),
        reason: Some(reason.to_owned()),
    }
}

/// The locales an image (or a container, whose labels include its image's)
/// lists in its label.
fn locales_of(
    labels: Option<&HashMap<String, String>>,
) -> Option<Arc<crate::broker::locale::ImageLocales>> {
    let value = labels?.get(crate::broker::locale::LABEL)?;
    Some(Arc::new(crate::broker::locale::ImageLocales::from_label(
        value,
    )))
}
