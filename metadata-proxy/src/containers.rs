//! Who is calling: source IP → user container, through the Docker Engine.
//!
//! The [`Directory`] is keyed by container id, with an index by IP that is
//! always the newest container seen at that IP: when Docker hands a dead
//! container's IP to a new one, the new one replaces the old entry (never
//! inherits it). The [`DockerWatcher`] keeps it current from the events
//! stream (container start/die/stop/destroy..., network connect/disconnect),
//! resyncs after every reconnect and every minute, and looks an unknown IP
//! up directly, so a container that just started is never refused.
//!
//! Only running containers labelled `bastion.user` with an address on
//! their own bastion network count: the one their `bastion.network` label
//! names (each user's container is alone on a network of its own), or the
//! configured network for containers without that label. Anything else
//! (the host, host-network containers, other networks, unlabelled
//! containers) is unknown: 404, no credentials.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::{ContainerSummary, EventMessage, EventMessageTypeEnum};
use bollard::query_parameters::ListContainersOptions;
use bytes::Bytes;
use rustix::event::{PollFd, PollFlags, poll};
use rustix::process::{Pid, PidfdFlags, pidfd_open};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::role_session::{ResolvedSession, SessionSettings};
use bastion_core::contract::docker::{CancellationToken, EventFollower, follow_events};
pub use bastion_core::contract::labels;

/// A user container as the proxy sees it.
#[derive(Debug)]
pub struct ContainerIdentity {
    pub id: String,
    pub name: String,
    pub user: String,
    pub uid: Option<u32>,
    /// The `bastion.role` label (a role name or ARN); `None`: no role.
    pub role_label: Option<String>,
    /// SHA-256 of the container-credentials token (label), if any.
    pub token_sha256: Option<[u8; 32]>,
    pub ip: Ipv4Addr,
    /// The credentials last handed to this container: audited once each,
    /// their response bodies rendered once each.
    pub handed_out: Mutex<Option<Arc<HandedOut>>>,
    /// Rate limit of the "no credentials" error line for this container.
    pub error_log: crate::credential_cache::RateLimit,
    /// A pidfd of the container's init process, once known: lets a lookup
    /// tell that the container died even before its `die` event arrives,
    /// so a reused IP never maps to a dead container.
    pub pidfd: OnceLock<OwnedFd>,
    /// Its role session, resolved on first use ([`Self::role_session`]).
    session: OnceLock<Option<Arc<ResolvedSession>>>,
}

/// One credential as handed to a container: which (its access key id),
/// and its response bodies, rendered on first use (they hold the secret:
/// `Debug` never shows them).
#[derive(Default)]
pub struct HandedOut {
    pub access_key_id: String,
    pub imds_body: OnceLock<Bytes>,
    pub container_body: OnceLock<Bytes>,
}

impl std::fmt::Debug for HandedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandedOut")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

impl ContainerIdentity {
    /// Its role session under `settings`, resolved once and kept (a bad
    /// role label is logged once, not per request).
    pub fn role_session(&self, settings: &SessionSettings) -> Option<Arc<ResolvedSession>> {
        self.session
            .get_or_init(|| {
                settings
                    .resolve(self.role_label.as_deref(), &self.user, &self.name)
                    .map(Arc::new)
            })
            .clone()
    }

    /// Whether `presented` (an `Authorization` header value) is this
    /// container's token: SHA-256 compared in constant time.
    pub fn token_matches(&self, presented: &[u8]) -> bool {
        let Some(expected) = &self.token_sha256 else {
            return false;
        };
        let digest: [u8; 32] = Sha256::digest(presented).into();
        digest.ct_eq(expected).into()
    }

    /// False once the container's init process has exited (a pidfd becomes
    /// readable then). True while unknown: the events stream decides.
    pub fn is_alive(&self) -> bool {
        let Some(fd) = self.pidfd.get() else {
            return true;
        };
        let mut fds = [PollFd::new(fd, PollFlags::IN)];
        let zero = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        !matches!(poll(&mut fds, Some(&zero)), Ok(n) if n > 0)
    }

    fn same_as(&self, other: &ContainerIdentity) -> bool {
        self.id == other.id
            && self.name == other.name
            && self.user == other.user
            && self.uid == other.uid
            && self.role_label == other.role_label
            && self.token_sha256 == other.token_sha256
            && self.ip == other.ip
    }

    /// Reads a container from the Engine's listing; `None` unless it is a
    /// labelled user container with an IPv4 address on the network its
    /// `bastion.network` label names (`default_network` without one).
    pub fn from_summary(summary: &ContainerSummary, default_network: &str) -> Option<Self> {
        let labels = summary.labels.as_ref()?;
        let user = labels.get(labels::USER).filter(|u| !u.is_empty())?.clone();
        let network = labels
            .get(labels::NETWORK)
            .map_or(default_network, String::as_str);
        let id = summary.id.clone()?;
        let ip = summary
            .network_settings
            .as_ref()?
            .networks
            .as_ref()?
            .get(network)?
            .ip_address
            .as_deref()?
            .parse()
            .ok()?;
        let name = summary
            .names
            .as_ref()
            .and_then(|n| n.first())
            .map(|n| n.trim_start_matches('/').to_owned())
            .unwrap_or_else(|| id.clone());
        let token_sha256 = labels.get(labels::CREDENTIALS_TOKEN_SHA256).and_then(|hex_digest| {
            let parsed = parse_sha256_hex(hex_digest);
            if parsed.is_none() {
                tracing::warn!(container = %name, label = labels::CREDENTIALS_TOKEN_SHA256, "the label is not 64 lowercase hex digits: the container-credentials endpoint will refuse this container");
            }
            parsed
        });
        Some(Self {
            id,
            name,
            user,
            uid: labels.get(labels::UID).and_then(|u| u.parse().ok()),
            role_label: labels.get(labels::ROLE).filter(|r| !r.is_empty()).cloned(),
            token_sha256,
            ip,
            handed_out: Mutex::new(None),
            error_log: Default::default(),
            pidfd: OnceLock::new(),
            session: OnceLock::new(),
        })
    }
}

fn parse_sha256_hex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    hex::decode(text).ok()?.try_into().ok()
}

#[derive(Default)]
struct Inner {
    by_id: HashMap<String, Arc<ContainerIdentity>>,
    by_ip: HashMap<Ipv4Addr, String>,
}

/// The known user containers.
pub struct Directory {
    inner: RwLock<Inner>,
    metrics: Arc<Metrics>,
}

impl Directory {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            inner: RwLock::new(Inner::default()),
            metrics,
        }
    }

    /// The container currently at `ip`, if known.
    pub fn by_ip(&self, ip: Ipv4Addr) -> Option<Arc<ContainerIdentity>> {
        let inner = self.inner.read().expect("directory lock");
        let id = inner.by_ip.get(&ip)?;
        inner.by_id.get(id).cloned()
    }

    /// All known containers.
    pub fn all(&self) -> Vec<Arc<ContainerIdentity>> {
        let inner = self.inner.read().expect("directory lock");
        inner.by_id.values().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.inner.read().expect("directory lock").by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds or updates a container. Another container recorded at the same
    /// IP is dropped (its IP was reused). Returns the entry and whether it
    /// is new or changed.
    pub fn upsert(&self, container: ContainerIdentity) -> (Arc<ContainerIdentity>, bool) {
        let mut inner = self.inner.write().expect("directory lock");
        if let Some(existing) = inner.by_id.get(&container.id)
            && existing.same_as(&container)
        {
            return (existing.clone(), false);
        }
        if let Some(old) = inner.by_id.remove(&container.id)
            && inner.by_ip.get(&old.ip) == Some(&old.id)
        {
            inner.by_ip.remove(&old.ip);
        }
        if let Some(previous_id) = inner.by_ip.get(&container.ip).cloned()
            && previous_id != container.id
        {
            tracing::info!(ip = %container.ip, old = %previous_id, new = %container.id, "IP reused by a new container: forgetting the old one");
            inner.by_id.remove(&previous_id);
        }
        let entry = Arc::new(container);
        inner.by_ip.insert(entry.ip, entry.id.clone());
        inner.by_id.insert(entry.id.clone(), entry.clone());
        self.metrics.containers_known.set(inner.by_id.len() as i64);
        (entry, true)
    }

    /// Forgets a container; true if it was known.
    pub fn remove(&self, id: &str) -> bool {
        let mut inner = self.inner.write().expect("directory lock");
        let Some(old) = inner.by_id.remove(id) else {
            return false;
        };
        if inner.by_ip.get(&old.ip) == Some(&old.id) {
            inner.by_ip.remove(&old.ip);
        }
        self.metrics.containers_known.set(inner.by_id.len() as i64);
        true
    }

    /// Replaces everything with a fresh listing; returns the new/changed.
    pub fn replace_all(&self, listing: Vec<ContainerIdentity>) -> Vec<Arc<ContainerIdentity>> {
        let keep: std::collections::HashSet<String> =
            listing.iter().map(|c| c.id.clone()).collect();
        let stale: Vec<String> = {
            let inner = self.inner.read().expect("directory lock");
            inner
                .by_id
                .keys()
                .filter(|id| !keep.contains(*id))
                .cloned()
                .collect()
        };
        for id in stale {
            self.remove(&id);
        }
        listing
            .into_iter()
            .filter_map(|c| match self.upsert(c) {
                (entry, true) => Some(entry),
                _ => None,
            })
            .collect()
    }
}

/// Why the Docker Engine could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error(transparent)]
    Connect(#[from] bastion_core::contract::docker::ConnectError),
    #[error("cannot list the containers on network {network}: {source}")]
    List {
        network: String,
        #[source]
        source: bollard::errors::Error,
    },
}

/// Called for every container that appears or changes (prefetch).
pub type OnContainer = Box<dyn Fn(&Arc<ContainerIdentity>) + Send + Sync>;

/// Keeps a [`Directory`] current from the Docker Engine.
pub struct DockerWatcher {
    docker: Docker,
    network: String,
    directory: Arc<Directory>,
    metrics: Arc<Metrics>,
    on_container: OnContainer,
    events_connected: AtomicBool,
    /// Serializes direct lookups and remembers recent misses.
    misses: tokio::sync::Mutex<HashMap<Ipv4Addr, Instant>>,
}

/// How long a source IP the Engine did not know stays unknown before the
/// next direct lookup (bounds Docker API calls from junk traffic).
const NEGATIVE_TTL: Duration = Duration::from_millis(500);
const RESYNC_EVERY: Duration = Duration::from_secs(60);

impl EventFollower for DockerWatcher {
    async fn connected(&self) -> Result<(), String> {
        let resynced = self.resync().await.map_err(|e| e.to_string());
        self.events_connected
            .store(resynced.is_ok(), Ordering::Relaxed);
        resynced
    }

    async fn event(&self, event: EventMessage) {
        self.handle_event(event).await;
    }

    fn disconnected(&self) {
        self.events_connected.store(false, Ordering::Relaxed);
    }

    async fn tick(&self) {
        if let Err(error) = self.resync().await {
            tracing::warn!(%error, "periodic resync failed");
        }
    }
}

impl DockerWatcher {
    pub fn new(
        docker: Docker,
        network: String,
        directory: Arc<Directory>,
        metrics: Arc<Metrics>,
        on_container: OnContainer,
    ) -> Self {
        Self {
            docker,
            network,
            directory,
            metrics,
            on_container,
            events_connected: AtomicBool::new(false),
            misses: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    pub fn directory(&self) -> &Arc<Directory> {
        &self.directory
    }

    /// Whether the events stream is connected (for `/healthz`).
    pub fn is_healthy(&self) -> bool {
        self.events_connected.load(Ordering::Relaxed)
    }

    async fn list(&self, id: Option<&str>) -> Result<Vec<ContainerIdentity>, DockerError> {
        let mut filters = HashMap::from([
            ("label".to_owned(), vec![labels::USER.to_owned()]),
            ("status".to_owned(), vec!["running".to_owned()]),
        ]);
        if let Some(id) = id {
            filters.insert("id".to_owned(), vec![id.to_owned()]);
        }
        let options = ListContainersOptions {
            all: false,
            filters: Some(filters),
            ..Default::default()
        };
        let listing = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|source| DockerError::List {
                network: self.network.clone(),
                source,
            })?;
        Ok(listing
            .iter()
            .filter_map(|s| ContainerIdentity::from_summary(s, &self.network))
            .collect())
    }

    /// Opens a pidfd of the container's init process (one inspect call,
    /// only for containers that are new or changed).
    async fn watch_pid(&self, entry: &Arc<ContainerIdentity>) {
        if entry.pidfd.get().is_some() {
            return;
        }
        let pid = match self.docker.inspect_container(&entry.id, None).await {
            Ok(inspect) => inspect.state.and_then(|s| s.pid).unwrap_or(0),
            Err(error) => {
                tracing::debug!(%error, id = %entry.id, "cannot inspect a container for its pid");
                return;
            }
        };
        let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
            return;
        };
        match pidfd_open(pid, PidfdFlags::empty()) {
            Ok(fd) => {
                let _ = entry.pidfd.set(fd);
            }
            Err(error) => tracing::debug!(%error, id = %entry.id, "cannot open a pidfd"),
        }
    }

    fn announce(&self, entry: &Arc<ContainerIdentity>) {
        tracing::info!(
            container = %entry.name,
            id = %entry.id,
            user = %entry.user,
            ip = %entry.ip,
            role = entry.role_label.as_deref().unwrap_or("-"),
            "user container known"
        );
        (self.on_container)(entry);
    }

    /// Re-reads every user container on the network.
    pub async fn resync(&self) -> Result<(), DockerError> {
        let listing = self.list(None).await?;
        for entry in self.directory.replace_all(listing) {
            self.announce(&entry);
            self.watch_pid(&entry).await;
        }
        Ok(())
    }

    /// Re-reads one container after an event about it.
    pub async fn refresh_container(&self, id: &str) {
        match self.list(Some(id)).await {
            Ok(mut found) => match found.pop() {
                Some(container) if container.id == id => {
                    let (entry, changed) = self.directory.upsert(container);
                    if changed {
                        self.announce(&entry);
                        self.watch_pid(&entry).await;
                    }
                }
                _ => {
                    if self.directory.remove(id) {
                        tracing::info!(id, "user container gone");
                    }
                }
            },
            Err(error) => {
                // Unsure: forget it rather than risk serving a dead
                // container's identity at a reused IP.
                self.directory.remove(id);
                tracing::warn!(%error, id, "cannot re-read a container after an event");
            }
        }
    }

    /// The container at `ip`: from the directory, else asked from Docker.
    pub async fn lookup(&self, ip: Ipv4Addr) -> Option<Arc<ContainerIdentity>> {
        if let Some(found) = self.live_at(ip) {
            return Some(found);
        }
        let mut misses = self.misses.lock().await;
        // Someone may have found it while we waited.
        if let Some(found) = self.live_at(ip) {
            return Some(found);
        }
        if misses.get(&ip).is_some_and(|t| t.elapsed() < NEGATIVE_TTL) {
            return None;
        }
        self.metrics.docker_lookups.inc();
        let listing = match self.list(None).await {
            Ok(listing) => listing,
            Err(error) => {
                tracing::warn!(%error, %ip, "cannot look up an unknown source address");
                return None;
            }
        };
        let Some(container) = listing.into_iter().find(|c| c.ip == ip) else {
            misses.retain(|_, t| t.elapsed() < NEGATIVE_TTL);
            misses.insert(ip, Instant::now());
            return None;
        };
        let (entry, changed) = self.directory.upsert(container);
        if changed {
            self.announce(&entry);
            self.watch_pid(&entry).await;
        }
        Some(entry)
    }

    /// The container recorded at `ip` if it is still alive; a dead one
    /// (its `die` event not processed yet) is forgotten on the spot.
    fn live_at(&self, ip: Ipv4Addr) -> Option<Arc<ContainerIdentity>> {
        let found = self.directory.by_ip(ip)?;
        if found.is_alive() {
            return Some(found);
        }
        tracing::info!(container = %found.name, %ip, "container at this address has exited: forgetting it before its event arrives");
        self.directory.remove(&found.id);
        None
    }

    /// Follows the events stream until `shutdown` flips, reconnecting with
    /// back-off and resyncing after each (re)connect and every minute
    /// ([`bastion_core::contract::docker::follow_events`]).
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let stop = CancellationToken::new();
        let cancel = stop.clone();
        let stopper = tokio::spawn(async move {
            while !*shutdown.borrow() {
                if shutdown.changed().await.is_err() {
                    break;
                }
            }
            cancel.cancel();
        });
        let filters = HashMap::from([(
            "type".to_owned(),
            vec!["container".to_owned(), "network".to_owned()],
        )]);
        follow_events(&self.docker, filters, &*self, Some(RESYNC_EVERY), &stop).await;
        stopper.abort();
    }

    async fn handle_event(&self, event: EventMessage) {
        let action = event.action.as_deref().unwrap_or_default();
        let Some(actor) = event.actor.as_ref() else {
            return;
        };
        match event.typ {
            Some(EventMessageTypeEnum::CONTAINER) => {
                const RELEVANT: &[&str] = &[
                    "start", "restart", "unpause", "pause", "die", "kill", "stop", "destroy",
                    "rename", "update", "oom",
                ];
                if let Some(id) = &actor.id
                    && RELEVANT.contains(&action)
                {
                    self.refresh_container(id).await;
                }
            }
            // Any network: each user's container has a network of its own.
            Some(EventMessageTypeEnum::NETWORK) => {
                let attributes = actor.attributes.as_ref();
                if matches!(action, "connect" | "disconnect")
                    && let Some(container) = attributes.and_then(|a| a.get("container"))
                {
                    self.refresh_container(container).await;
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{ContainerSummaryNetworkSettings, EndpointSettings};

    fn summary(id: &str, ip: &str, labels: &[(&str, &str)], network: &str) -> ContainerSummary {
        ContainerSummary {
            id: Some(id.into()),
            names: Some(vec![format!("/bastion-{id}")]),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            network_settings: Some(ContainerSummaryNetworkSettings {
                networks: Some(HashMap::from([(
                    network.to_owned(),
                    EndpointSettings {
                        ip_address: Some(ip.into()),
                        ..Default::default()
                    },
                )])),
            }),
            ..Default::default()
        }
    }

    fn identity(id: &str, ip: &str, user: &str) -> ContainerIdentity {
        ContainerIdentity::from_summary(
            &summary(
                id,
                ip,
                &[(labels::USER, user), (labels::ROLE, "r")],
                "bastion0",
            ),
            "bastion0",
        )
        .unwrap()
    }

    #[test]
    fn the_address_is_taken_on_the_network_the_label_names() {
        let labels = [
            (labels::USER, "alice"),
            (labels::NETWORK, "bastion-net-alice"),
        ];
        let own = summary("a", "172.31.0.2", &labels, "bastion-net-alice");
        let c = ContainerIdentity::from_summary(&own, "bastion0").unwrap();
        assert_eq!(c.ip, "172.31.0.2".parse::<Ipv4Addr>().unwrap());
        // An address on any other network (the default one included) is
        // not the container's bastion address.
        let elsewhere = summary("a", "172.30.0.9", &labels, "bastion0");
        assert!(ContainerIdentity::from_summary(&elsewhere, "bastion0").is_none());
        let host = summary("a", "", &labels, "host");
        assert!(ContainerIdentity::from_summary(&host, "bastion0").is_none());
    }

    #[test]
    fn only_labelled_containers_on_the_network_count() {
        let token_sha = hex::encode(Sha256::digest(b"tok"));
        let c = ContainerIdentity::from_summary(
            &summary(
                "a",
                "172.30.0.2",
                &[
                    (labels::USER, "alice"),
                    (labels::UID, "1000"),
                    (labels::ROLE, "dev"),
                    (labels::CREDENTIALS_TOKEN_SHA256, &token_sha),
                ],
                "bastion0",
            ),
            "bastion0",
        )
        .unwrap();
        assert_eq!(
            (c.user.as_str(), c.uid, c.role_label.as_deref()),
            ("alice", Some(1000), Some("dev"))
        );
        assert_eq!(c.name, "bastion-a");
        assert!(c.token_matches(b"tok"));
        assert!(!c.token_matches(b"tok2"));
        assert!(!c.token_matches(b""));
        // No user label, other network, or no address: not a user container.
        assert!(
            ContainerIdentity::from_summary(
                &summary("b", "172.30.0.3", &[(labels::ROLE, "x")], "bastion0"),
                "bastion0"
            )
            .is_none()
        );
        assert!(
            ContainerIdentity::from_summary(
                &summary("c", "172.17.0.3", &[(labels::USER, "x")], "bridge"),
                "bastion0"
            )
            .is_none()
        );
        assert!(
            ContainerIdentity::from_summary(
                &summary("d", "", &[(labels::USER, "x")], "bastion0"),
                "bastion0"
            )
            .is_none()
        );
    }

    #[test]
    fn a_malformed_token_label_matches_nothing() {
        let c = ContainerIdentity::from_summary(
            &summary(
                "a",
                "172.30.0.2",
                &[
                    (labels::USER, "alice"),
                    (labels::CREDENTIALS_TOKEN_SHA256, "ABC"),
                ],
                "bastion0",
            ),
            "bastion0",
        )
        .unwrap();
        assert!(c.token_sha256.is_none());
        assert!(!c.token_matches(b"ABC"));
    }

    #[test]
    fn an_exited_init_process_makes_the_entry_dead_at_once() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let c = identity("a", "172.30.0.9", "alice");
        assert!(
            c.is_alive(),
            "unknown pid: alive until the events stream says otherwise"
        );
        let pid = Pid::from_raw(child.id() as i32).unwrap();
        c.pidfd
            .set(pidfd_open(pid, PidfdFlags::empty()).unwrap())
            .unwrap();
        assert!(c.is_alive());
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!c.is_alive());
    }

    #[test]
    fn a_reused_ip_belongs_to_the_new_container_only() {
        let dir = Directory::new(Arc::new(Metrics::new()));
        dir.upsert(identity("old", "172.30.0.5", "alice"));
        let ip = "172.30.0.5".parse().unwrap();
        assert_eq!(dir.by_ip(ip).unwrap().user, "alice");
        // The die event was missed or not yet processed: the new container
        // with the same IP replaces the old one entirely.
        let (_, changed) = dir.upsert(identity("new", "172.30.0.5", "bob"));
        assert!(changed);
        assert_eq!(dir.by_ip(ip).unwrap().user, "bob");
        assert_eq!(dir.len(), 1);
        // A late die event for the old container does not unmap the new one.
        assert!(!dir.remove("old"));
        assert_eq!(dir.by_ip(ip).unwrap().id, "new");
    }

    #[test]
    fn moving_a_container_to_another_ip_frees_the_old_one() {
        let dir = Directory::new(Arc::new(Metrics::new()));
        dir.upsert(identity("a", "172.30.0.5", "alice"));
        let (_, changed) = dir.upsert(identity("a", "172.30.0.6", "alice"));
        assert!(changed);
        assert!(dir.by_ip("172.30.0.5".parse().unwrap()).is_none());
        assert!(dir.by_ip("172.30.0.6".parse().unwrap()).is_some());
        let (_, changed) = dir.upsert(identity("a", "172.30.0.6", "alice"));
        assert!(!changed, "unchanged containers are not announced again");
    }

    #[test]
    fn replace_all_drops_containers_that_are_gone() {
        let dir = Directory::new(Arc::new(Metrics::new()));
        dir.upsert(identity("a", "172.30.0.5", "alice"));
        dir.upsert(identity("b", "172.30.0.6", "bob"));
        let new = dir.replace_all(vec![
            identity("b", "172.30.0.6", "bob"),
            identity("c", "172.30.0.7", "carol"),
        ]);
        assert_eq!(new.len(), 1);
        assert_eq!(new[0].id, "c");
        assert!(dir.by_ip("172.30.0.5".parse().unwrap()).is_none());
        assert_eq!(dir.len(), 2);
    }
}
