//! Users' containers: `bastion-<user>`, created on first login, reused while
//! running, started when stopped, recreated when its configuration (image,
//! role, limits, env) changed and no session is live. One lock per user
//! makes concurrent first logins end in one container.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerCreateBody, HostConfig, HostConfigLogConfig, Ipam, IpamConfig, NetworkCreateRequest,
};
use bollard::query_parameters::{CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder};
use sha2::{Digest, Sha256};

use super::accounts::{AccountFiles, AccountsError, ImageAccountsCache};
use super::cgroup::CgroupFiles;
use super::container_state::{ContainerState, KnownContainer, Ticket};
use super::home::{self, HomeError};
use super::identity::Identity;
use super::user_network::{self, UserNetworkError};
use crate::audit::{AuditEvent, AuditLog, ContainerEvent};
use crate::config::{BastiondConfig, UserSettings};

/// Label names of the Docker contract (design.md, "Contracts").
pub mod labels {
    pub const USER: &str = "bastion.user";
    pub const UID: &str = "bastion.uid";
    pub const ROLE: &str = "bastion.role";
    /// SHA-256 of the container-credentials token (the proxy compares it).
    pub const CREDENTIALS_TOKEN_SHA256: &str = "bastion.credentials-token-sha256";
    /// Hash of everything the container was created from.
    pub const SPEC: &str = "bastion.spec";
    /// The network the container is on (its own: user_network.rs); the
    /// proxy takes the container's address there.
    pub const NETWORK: &str = "bastion.network";
    /// The size limit of the user's home (bytes; 0: none), so a change
    /// recreates the container (and grows the home while it is down).
    pub const HOME_SIZE: &str = "bastion.home-size";
    /// `transfers` on a user's file-transfer container (absent on their
    /// shell container).
    pub const PURPOSE: &str = "bastion.purpose";
}

pub use super::accounts::TOKEN_PATH_IN_CONTAINER;
/// The container-credentials endpoint SDKs are pointed at.
pub const CREDENTIALS_FULL_URI: &str = "http://169.254.170.2/v1/credentials";
/// Where the kubeconfig directory is mounted (read-only) inside.
pub const KUBECONFIG_DIR_IN_CONTAINER: &str = "/etc/bastion/kubeconfigs";

/// The uid:gid of a container's own processes (init, `sleep`): nobody.
pub const CONTAINER_INIT_USER: &str = "65534:65534";

/// Paths hidden inside containers: the Engine's own defaults (this list
/// replaces them), and what tells of the host's block devices: every
/// user's home is a loop device, whose backing file, I/O counters and
/// count would name the other users and show when they work.
pub const MASKED_PATHS: &[&str] = &[
    // Docker's defaults.
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
    // The host's block devices.
    "/proc/diskstats",
    "/proc/partitions",
    "/sys/block",
    "/sys/class/block",
    "/sys/dev/block",
    "/sys/devices/virtual/block",
    "/sys/fs/ext4",
];

/// Which of a user's two containers. File transfers (the unrecorded
/// sessions) run apart from everything else the user runs, in a container
/// of their own with the same home: in another pid namespace, no session of
/// the user's can see, signal, trace or take over a transfer server (or its
/// pipes) to turn its unrecorded channel into a shell. It has no network,
/// no credentials and no kubeconfigs: the transfer servers need none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerKind {
    /// `bastion-<user>`: shells and commands.
    Shell,
    /// `bastion-<user>-files`: scp, sftp and rsync servers only.
    Transfers,
}

impl ContainerKind {
    /// The container name of `user`'s container of this kind.
    pub fn name_of(self, user: &str) -> String {
        match self {
            Self::Shell => format!("bastion-{user}"),
            Self::Transfers => format!("bastion-{user}-files"),
        }
    }
}

/// A user's running container.
#[derive(Debug, Clone)]
pub struct Running {
    pub id: String,
    pub name: String,
    /// The image reference from the config.
    pub image: String,
    /// The image id (`sha256:…`) the container runs.
    pub image_id: String,
    pub role: Option<String>,
    /// The container's cgroup (its processes and limit counters), found
    /// from its init process when it was inspected.
    pub cgroup: Option<Arc<CgroupFiles>>,
    /// Known from the events-kept state, without asking the Engine.
    pub remembered: bool,
}

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

/// Which container lifecycle event to audit.
#[derive(Debug, Clone, Copy)]
pub enum Lifecycle {
    Create,
    Start,
    Stop,
    Remove,
}

/// What a container is built from, before the per-container secret.
struct Spec {
    body: ContainerCreateBody,
    hash: String,
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

    /// Writes a `container.*` audit event (off the async threads).
    pub async fn audit(&self, what: Lifecycle, event: ContainerEvent) {
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
                reuse = Some((
                    id,
                    running,
                    running_image,
                    labels.get(labels::ROLE).cloned(),
                ));
            }
        }

        let configured_image_id = image_id.clone();
        let (id, running, image_id, role) = match reuse {
            Some(found) => found,
            None => {
                let id = self
                    .create(config, who, settings, kind, spec, &name, &image_id)
                    .await?;
                let ev = event(&who.name, &name, &id, Some(&image_id), "login");
                self.audit(Lifecycle::Create, ev).await;
                (id, false, image_id, settings.role.clone())
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

    #[allow(clippy::too_many_arguments)]
    async fn create(
        &self,
        config: &BastiondConfig,
        who: &Identity,
        settings: &UserSettings,
        kind: ContainerKind,
        spec: Spec,
        name: &str,
        image_id: &str,
    ) -> Result<String, ContainerError> {
        self.prepare_home(config, who, settings).await?;
        let docker_err = |action, source| ContainerError::Docker {
            action,
            name: name.to_owned(),
            source,
        };
        let image = self.image_accounts.get(&self.docker, image_id).await?;
        let files = AccountFiles::of(&config.state_dir, &who.name);
        let who_owned = who.clone();
        let mut body = spec.body;
        if kind == ContainerKind::Transfers {
            // No credentials there: only the account files.
            tokio::task::spawn_blocking(move || files.write_accounts(&image, &who_owned))
                .await
                .expect("account files writer panicked")?;
            let options = CreateContainerOptionsBuilder::new().name(name).build();
            let created = self
                .docker
                .create_container(Some(options), body)
                .await
                .map_err(|e| docker_err("create", e))?;
            tracing::info!(user = %who.name, container = %name, id = %created.id, "created the file-transfer container");
            return Ok(created.id);
        }
        let token = random_token();
        body.labels.get_or_insert_with(Default::default).insert(
            labels::CREDENTIALS_TOKEN_SHA256.into(),
            hex::encode(Sha256::digest(&token)),
        );
        // Debian 12's AWS CLI (2.9) ignores the token file, gets a 401 and
        // gives up instead of falling back to IMDS: give it the token too.
        // It is the user's own secret, like the file; only root sees the
        // container's environment from outside.
        body.env.get_or_insert_with(Default::default).push(format!(
            "AWS_CONTAINER_AUTHORIZATION_TOKEN={}",
            String::from_utf8_lossy(&token)
        ));
        // The account files are in place before the container can start.
        tokio::task::spawn_blocking(move || files.write(&image, &who_owned, &token))
            .await
            .expect("account files writer panicked")?;
        user_network::ensure(&self.docker, &self.network_alloc, &config.network, who).await?;
        let options = CreateContainerOptionsBuilder::new().name(name).build();
        let created = self
            .docker
            .create_container(Some(options), body)
            .await
            .map_err(|e| docker_err("create", e))?;
        tracing::info!(user = %who.name, container = %name, id = %created.id, "created container");
        Ok(created.id)
    }

    /// Makes the user's home ready (mounted, when it has a size limit).
    async fn prepare_home(
        &self,
        config: &BastiondConfig,
        who: &Identity,
        settings: &UserSettings,
    ) -> Result<(), ContainerError> {
        let (home_root, state_dir) = (config.home_root.clone(), config.state_dir.clone());
        let (who, size) = (who.clone(), settings.limits.home);
        tokio::task::spawn_blocking(move || home::ensure(&home_root, &state_dir, &who, size))
            .await
            .expect("home preparation panicked")?;
        Ok(())
    }

    /// Creates the gateway network when missing: a bridge named after it,
    /// with no container, whose gateway address is where the metadata
    /// proxy listens for every user's network.
    pub async fn ensure_network(&self, config: &BastiondConfig) -> Result<(), ContainerError> {
        let net = &config.network;
        match self.docker.inspect_network(&net.name, None).await {
            Ok(_) => return Ok(()),
            Err(e) if status_of(&e) == Some(404) => {}
            Err(e) if is_unreachable(&e) => return Err(ContainerError::DockerUnavailable(e)),
            Err(source) => {
                return Err(ContainerError::Network {
                    name: net.name.clone(),
                    source,
                });
            }
        }
        let request = NetworkCreateRequest {
            name: net.name.clone(),
            driver: Some("bridge".into()),
            enable_ipv6: Some(false),
            ipam: Some(Ipam {
                driver: Some("default".into()),
                config: Some(vec![IpamConfig {
                    subnet: Some(net.subnet.to_string()),
                    gateway: Some(net.gateway().to_string()),
                    ..Default::default()
                }]),
                options: None,
            }),
            options: Some(HashMap::from([
                ("com.docker.network.bridge.name".into(), net.name.clone()),
                (
                    "com.docker.network.bridge.enable_icc".into(),
                    "false".into(),
                ),
                (
                    "com.docker.network.bridge.enable_ip_masquerade".into(),
                    "true".into(),
                ),
            ])),
            labels: Some(HashMap::from([(
                user_network::NETWORK_LABEL.into(),
                "gateway".into(),
            )])),
            ..Default::default()
        };
        match self.docker.create_network(request).await {
            Ok(_) => {
                tracing::info!(network = %net.name, subnet = %net.subnet, "created network");
                Ok(())
            }
            // Created meanwhile by someone else.
            Err(e) if status_of(&e) == Some(409) => Ok(()),
            Err(source) => Err(ContainerError::Network {
                name: net.name.clone(),
                source,
            }),
        }
    }

    pub fn docker(&self) -> &Docker {
        &self.docker
    }
}

/// A `container.*` event.
pub fn event(
    user: &str,
    name: &str,
    id: &str,
    image_id: Option<&str>,
    reason: &str,
) -> ContainerEvent {
    ContainerEvent {
        user: user.to_owned(),
        container: name.to_owned(),
        container_id: Some(id.to_owned()),
        image: None,
        image_digest: image_id.map(str::to_owned),
        reason: Some(reason.to_owned()),
    }
}

/// The container's create body and a hash of it (which decides recreation).
fn build_spec(
    config: &BastiondConfig,
    who: &Identity,
    settings: &UserSettings,
    image_id: &str,
    kind: ContainerKind,
) -> Spec {
    let shell = kind == ContainerKind::Shell;
    let home = format!("/home/{}", who.name);
    let mut env = vec![
        format!("HOME={home}"),
        format!("USER={}", who.name),
        format!("LOGNAME={}", who.name),
        format!("SHELL={}", config.shell),
    ];
    let mut labels = HashMap::from([
        (labels::USER.to_owned(), who.name.clone()),
        (labels::UID.to_owned(), who.uid.to_string()),
    ]);
    let files = AccountFiles::of(&config.state_dir, &who.name);
    let mut binds = vec![format!(
        "{}:{home}:rw",
        config.home_root.join(&who.name).display()
    )];
    let network = if shell {
        let network = user_network::name_of(&who.name);
        labels.insert(labels::NETWORK.to_owned(), network.clone());
        env.push(format!(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI={CREDENTIALS_FULL_URI}"
        ));
        env.push(format!(
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE={TOKEN_PATH_IN_CONTAINER}"
        ));
        binds.extend(files.binds());
        network
    } else {
        labels.insert(labels::PURPOSE.to_owned(), "transfers".to_owned());
        binds.extend(files.account_binds());
        "none".to_owned()
    };
    if let Some(role) = settings.role.as_ref().filter(|_| shell) {
        env.push(format!("IAM_ROLE={role}"));
        labels.insert(labels::ROLE.to_owned(), role.clone());
    }
    let kube = shell && config.kubeconfig_dir.is_dir();
    if kube {
        env.push(format!("KUBECONFIG_DIR={KUBECONFIG_DIR_IN_CONTAINER}"));
    }
    if shell {
        env.extend(config.env.iter().map(|(k, v)| format!("{k}={v}")));
    }
    if kube {
        binds.push(format!(
            "{}:{KUBECONFIG_DIR_IN_CONTAINER}:ro",
            config.kubeconfig_dir.display()
        ));
    }
    let limits = settings.limits;
    let memory = i64::try_from(limits.memory.as_u64()).unwrap_or(i64::MAX);
    // The only writable places besides the home: in memory, sized.
    let tmp = format!(
        "rw,nosuid,nodev,size={}k,mode=1777",
        limits.tmp.as_u64() / 1024
    );
    labels.insert(
        labels::HOME_SIZE.to_owned(),
        limits.home.as_u64().to_string(),
    );
    let body = ContainerCreateBody {
        image: Some(image_id.to_owned()),
        hostname: Some(who.name.clone()),
        // The container's own processes (init, `sleep`) run as another
        // uid than the user's sessions (each exec names the user's), so
        // the user can neither signal nor ptrace them into starting
        // something outside every session (session_cgroup.rs).
        user: Some(CONTAINER_INIT_USER.into()),
        env: Some(env),
        cmd: Some(vec!["sleep".into(), "infinity".into()]),
        working_dir: Some("/".into()),
        labels: Some(labels),
        host_config: Some(HostConfig {
            init: Some(true),
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges".into()]),
            pids_limit: Some(limits.pids),
            memory: Some(memory),
            memory_swap: Some(memory),
            nano_cpus: Some((limits.cpus * 1e9) as i64),
            network_mode: Some(network),
            // No writable layer: nothing the user does can grow the
            // container's storage on the host's disk.
            readonly_rootfs: Some(true),
            masked_paths: Some(MASKED_PATHS.iter().map(|p| (*p).to_owned()).collect()),
            tmpfs: Some(HashMap::from([
                ("/tmp".to_owned(), tmp.clone()),
                ("/var/tmp".to_owned(), tmp),
            ])),
            binds: Some(binds),
            ipc_mode: Some("private".into()),
            sysctls: shell
                .then(|| HashMap::from([("net.ipv6.conf.all.disable_ipv6".into(), "1".into())])),
            log_config: Some(HostConfigLogConfig {
                typ: Some("none".into()),
                config: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut canonical = serde_json::to_value(&body).unwrap_or_default();
    sort_json(&mut canonical);
    let hash = hex::encode(Sha256::digest(canonical.to_string().as_bytes()));
    let mut body = body;
    body.labels
        .get_or_insert_with(Default::default)
        .insert(labels::SPEC.into(), hash.clone());
    Spec { body, hash }
}

/// Sorts arrays of strings (env, binds) so the hash does not depend on order.
fn sort_json(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Array(items) => {
            items.iter_mut().for_each(sort_json);
            if items.iter().all(|v| v.is_string()) {
                items.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
            }
        }
        serde_json::Value::Object(map) => map.values_mut().for_each(sort_json),
        _ => {}
    }
}

fn random_token() -> Vec<u8> {
    let bytes: [u8; 32] = rand::random();
    hex::encode(bytes).into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn alice() -> Identity {
        Identity {
            name: "alice".into(),
            uid: 1000,
            gid: 1000,
            groups: vec!["bastion-users".into()],
        }
    }

    /// alice's container spec of `kind`, under a config that names a role.
    fn alices_spec(kind: ContainerKind) -> Spec {
        let config = Config::parse("[bastiond]\nrole = \"dev\"\n")
            .unwrap()
            .bastiond;
        let settings = config.resolve("alice", 1000, &alice().groups).unwrap();
        build_spec(&config, &alice(), &settings, "sha256:abc", kind)
    }

    #[test]
    fn the_spec_carries_the_contract_and_the_hardening() {
        let spec = alices_spec(ContainerKind::Shell);
        let labels = spec.body.labels.as_ref().unwrap();
        assert_eq!(labels[labels::USER], "alice");
        assert_eq!(labels[labels::UID], "1000");
        assert_eq!(labels[labels::ROLE], "dev");
        assert!(
            spec.body
                .env
                .as_ref()
                .unwrap()
                .contains(&"IAM_ROLE=dev".to_owned())
        );
        assert_eq!(spec.body.user.as_deref(), Some(CONTAINER_INIT_USER));
        assert_eq!(spec.body.hostname.as_deref(), Some("alice"));
        let host = spec.body.host_config.as_ref().unwrap();
        assert_eq!(host.cap_drop.as_deref(), Some(&["ALL".to_owned()][..]));
        assert_eq!(
            host.security_opt.as_deref(),
            Some(&["no-new-privileges".to_owned()][..])
        );
        assert_eq!(host.network_mode.as_deref(), Some("bastion-net-alice"));
        assert_eq!(labels[labels::NETWORK], "bastion-net-alice");
        assert_eq!(host.privileged, None);
        assert!(host.binds.as_ref().unwrap()[0].ends_with(":/home/alice:rw"));
    }

    #[test]
    fn the_transfer_container_has_no_network_credentials_or_kubeconfigs() {
        let spec = alices_spec(ContainerKind::Transfers);
        let labels = spec.body.labels.as_ref().unwrap();
        assert_eq!(labels[labels::PURPOSE], "transfers");
        assert!(!labels.contains_key(labels::ROLE) && !labels.contains_key(labels::NETWORK));
        let env = spec.body.env.as_ref().unwrap();
        assert!(
            !env.iter()
                .any(|e| e.starts_with("AWS_") || e.starts_with("IAM_ROLE")),
            "{env:?}"
        );
        let host = spec.body.host_config.as_ref().unwrap();
        assert_eq!(host.network_mode.as_deref(), Some("none"));
        assert_eq!(host.readonly_rootfs, Some(true));
        let binds = host.binds.as_ref().unwrap();
        assert!(
            !binds
                .iter()
                .any(|b| b.contains("token") || b.contains("kubeconfigs")),
            "{binds:?}"
        );
        assert_eq!(
            ContainerKind::Transfers.name_of("alice"),
            "bastion-alice-files"
        );
        assert_ne!(alices_spec(ContainerKind::Shell).hash, spec.hash);
    }

    #[test]
    fn the_spec_hash_follows_image_role_and_limits() {
        let config = Config::parse("").unwrap().bastiond;
        let settings = config.resolve("alice", 1000, &alice().groups).unwrap();
        let a = build_spec(
            &config,
            &alice(),
            &settings,
            "sha256:a",
            ContainerKind::Shell,
        )
        .hash;
        assert_eq!(
            a,
            build_spec(
                &config,
                &alice(),
                &settings,
                "sha256:a",
                ContainerKind::Shell
            )
            .hash
        );
        assert_ne!(
            a,
            build_spec(
                &config,
                &alice(),
                &settings,
                "sha256:b",
                ContainerKind::Shell
            )
            .hash
        );
        let mut other = settings.clone();
        other.role = Some("x".into());
        assert_ne!(
            a,
            build_spec(&config, &alice(), &other, "sha256:a", ContainerKind::Shell).hash
        );
        let mut other = settings.clone();
        other.limits.pids = 99;
        assert_ne!(
            a,
            build_spec(&config, &alice(), &other, "sha256:a", ContainerKind::Shell).hash
        );
    }
}
