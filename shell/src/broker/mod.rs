//! `bastiond`: the root session broker. It listens on a unix socket for
//! `bastion-shell`s, identifies each caller by SO_PEERCRED, owns the Docker
//! socket, runs each session as a `docker exec` in the user's container,
//! and stops and removes idle containers.

pub mod admission;
pub mod cgroup;
pub mod container;
pub mod container_state;
pub mod exec;
pub mod fdio;
pub mod health;
pub mod identity;
pub mod limits;
pub mod locale;
pub mod plan;
pub mod pump;
pub mod reaper;
pub mod records;
pub mod request;
pub mod session;
pub mod session_cgroup;
pub mod terminal;
pub mod transfer;
pub mod user_network;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::audit::AuditLog;
use crate::config::{Config, ConfigError};
use crate::recording;
use admission::Admission;
use container::ContainerManager;

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Docker(#[from] crate::contract::docker::ConnectError),
    #[error("cannot listen on {path}: {source}")]
    Listen {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("another bastiond is already listening on {path}")]
    AlreadyRunning { path: PathBuf },
}

/// The configuration, re-read when the file changes. A broken edit is
/// logged and the last good configuration stays in force.
pub struct ConfigSource {
    path: PathBuf,
    state: Mutex<(Arc<Config>, Option<Stamp>)>,
}

/// What tells a changed file apart: modification time and length.
type Stamp = (SystemTime, u64);

impl ConfigSource {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let stamp = stamp(path);
        let config = Config::load(path)?;
        Ok(Self {
            path: path.to_owned(),
            state: Mutex::new((Arc::new(config), stamp)),
        })
    }

    /// The configuration in force now.
    pub fn current(&self) -> Arc<Config> {
        let mut state = self.state.lock().expect("config lock poisoned");
        let now = stamp(&self.path);
        if now != state.1 {
            match Config::load(&self.path) {
                Ok(config) => {
                    tracing::info!(path = %self.path.display(), "configuration reloaded");
                    *state = (Arc::new(config), now);
                }
                Err(e) => {
                    tracing::error!(path = %self.path.display(), error = %e, "configuration change rejected; keeping the previous one");
                    state.1 = now;
                }
            }
        }
        state.0.clone()
    }
}

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Live sessions per user, when each user's last session ended, and the
/// ids of the live sessions (whose cgroups the reaper leaves alone).
#[derive(Default)]
pub struct LiveSessions {
    users: Mutex<HashMap<String, (usize, Instant)>>,
    ids: Mutex<HashSet<String>>,
}

/// One live session; counted until dropped.
pub struct LiveGuard {
    sessions: Arc<LiveSessions>,
    user: String,
    session_id: String,
}

impl LiveSessions {
    pub fn enter(self: &Arc<Self>, user: &str, session_id: &str) -> LiveGuard {
        let mut users = self.users.lock().expect("live lock poisoned");
        users
            .entry(user.to_owned())
            .or_insert((0, Instant::now()))
            .0 += 1;
        self.ids
            .lock()
            .expect("live lock poisoned")
            .insert(session_id.to_owned());
        LiveGuard {
            sessions: self.clone(),
            user: user.to_owned(),
            session_id: session_id.to_owned(),
        }
    }

    /// The ids of the sessions live now.
    pub fn ids(&self) -> HashSet<String> {
        self.ids.lock().expect("live lock poisoned").clone()
    }

    /// How many sessions are live now, of all users.
    pub fn total(&self) -> usize {
        self.ids.lock().expect("live lock poisoned").len()
    }

    pub fn count(&self, user: &str) -> usize {
        let users = self.users.lock().expect("live lock poisoned");
        users.get(user).map_or(0, |e| e.0)
    }

    /// When the user last had a live session, or `None` if they have one now.
    /// Users never seen since start-up count as idle since `fallback`.
    pub fn idle_since(&self, user: &str, fallback: Instant) -> Option<Instant> {
        let users = self.users.lock().expect("live lock poisoned");
        match users.get(user) {
            Some((0, since)) => Some(*since),
            Some(_) => None,
            None => Some(fallback),
        }
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.sessions
            .ids
            .lock()
            .expect("live lock poisoned")
            .remove(&self.session_id);
        let mut users = self.sessions.users.lock().expect("live lock poisoned");
        if let Some(entry) = users.get_mut(&self.user) {
            entry.0 = entry.0.saturating_sub(1);
            entry.1 = Instant::now();
        }
    }
}

/// Everything the sessions share.
pub struct Broker {
    pub config: ConfigSource,
    /// The audit trail (`[recording] audit_log`), shared with the proxy.
    pub audit: Arc<AuditLog>,
    pub containers: ContainerManager,
    /// Where sessions' execs are made.
    pub execs: exec::ExecEngine,
    pub live: Arc<LiveSessions>,
    /// Users' recording budgets, reserved by their live sessions.
    pub budgets: Arc<recording::budget::Budgets>,
    /// What `bastionctl access apply` last made true (re-read when changed).
    pub access: Arc<crate::access::applied::AppliedStates>,
    pub shutdown: CancellationToken,
    pub started: Instant,
}

impl Broker {
    /// Loads the config and connects to the Docker Engine
    /// ([`crate::contract::docker::connect`]).
    pub async fn connect(config_path: &Path) -> Result<Self, BrokerError> {
        let config = ConfigSource::load(config_path)?;
        let host = config.current().bastiond.docker_host.clone();
        let (docker, socket) = crate::contract::docker::connect(host.as_deref()).await?;
        let recording = config.current().recording.clone();
        let mut audit = AuditLog::new(&recording.audit_log);
        if recording.syslog {
            audit = audit.with_syslog();
        }
        let audit = Arc::new(audit);
        Ok(Self {
            config,
            execs: exec::ExecEngine::new(docker.clone(), socket),
            containers: ContainerManager::new(docker, audit.clone()),
            audit,
            live: Arc::default(),
            budgets: Arc::default(),
            access: Arc::default(),
            shutdown: CancellationToken::new(),
            started: Instant::now(),
        })
    }
}

/// bastiond's whole life: connects, recovers what a previous broker left,
/// then listens on the configured socket (its appearance is the readiness
/// signal: nothing is accepted before recovery) and serves until SIGTERM or
/// SIGINT.
pub async fn run(config_path: &Path) -> Result<(), BrokerError> {
    let broker = Arc::new(Broker::connect(config_path).await?);
    let watcher = tokio::spawn(container_state::watch(
        broker.containers.state(),
        broker.containers.docker().clone(),
        broker.shutdown.clone(),
    ));
    recover(&broker).await;
    let socket = broker.config.current().bastiond.socket.clone();
    let listener = listen(&socket)?;
    let health_listener = health::listen(&broker.config.current().bastiond.health_socket)?;
    let health_task = tokio::spawn(health::serve(
        broker.clone(),
        health_listener,
        socket.clone(),
    ));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|source| BrokerError::Listen {
            path: socket.clone(),
            source,
        })?;
    let stop = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    crate::service_manager::ready();
    serve(broker.clone(), listener, stop).await;
    crate::service_manager::stopping();
    watcher.abort();
    health_task.abort();
    let _ = std::fs::remove_file(&socket);
    let _ = std::fs::remove_file(&broker.config.current().bastiond.health_socket);
    Ok(())
}

/// What a start-up finds before serving: the gateway network made, the
/// processes of a previous broker's sessions killed, their open records
/// closed.
pub async fn recover(broker: &Arc<Broker>) {
    let config = broker.config.current();
    if let Err(e) = broker.containers.ensure_network(&config.bastiond).await {
        tracing::warn!(error = %e, "cannot prepare the bastion network yet; will retry at the first login");
    }
    reaper::recover(broker).await;
    recover_interrupted_sessions(broker).await;
}

/// Serves logins on `listener` until `stop` completes, then ends the live
/// sessions (each told why) and waits for them, at most 10 s.
pub async fn serve(broker: Arc<Broker>, listener: UnixListener, stop: impl Future<Output = ()>) {
    let config = broker.config.current();
    tracing::info!(socket = %config.bastiond.socket.display(), "bastiond ready");

    let admission = Admission::new(
        config.bastiond.pending_per_uid,
        config.bastiond.pending_total,
    );
    let sessions = TaskTracker::new();
    let reaper = tokio::spawn(reaper::run(broker.clone()));
    let pending_ends = tokio::spawn(write_pending_ends(broker.clone()));
    tokio::pin!(stop);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let uid = match stream.peer_cred() {
                        Ok(cred) => cred.uid(),
                        Err(e) => {
                            tracing::warn!(error = %e, "dropping a connection without peer credentials");
                            continue;
                        }
                    };
                    match admission.admit(uid) {
                        Ok(pending) => {
                            sessions.spawn(session::serve(broker.clone(), stream, uid, pending));
                        }
                        Err(refusal) => refuse(&stream, refusal),
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
            () = &mut stop => break,
        }
    }
    tracing::info!(live = sessions.len(), "shutting down: ending live sessions");
    broker.shutdown.cancel();
    reaper.abort();
    pending_ends.abort();
    sessions.close();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), sessions.wait()).await;
}

/// Every few seconds, writes the session ends the audit log could not take
/// when the sessions ended (kept in their open markers), as soon as it
/// takes writes again.
async fn write_pending_ends(broker: Arc<Broker>) {
    let mut failures = crate::log_limit::LogLimit::new(std::time::Duration::from_secs(60));
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        let log_dir = broker.config.current().recording.log_dir.clone();
        let audit = broker.audit.clone();
        let result =
            tokio::task::spawn_blocking(move || recording::retry_pending_ends(&log_dir, &audit))
                .await;
        if let Ok(Err(e)) = result
            && failures.due(()).is_some()
        {
            tracing::error!(error = %e, "session ends are waiting for the audit log to take writes");
        }
    }
}

/// Tells a connection that was not admitted why, if its socket has room
/// (never waits: the peer may be hostile), and closes it.
fn refuse(stream: &tokio::net::UnixStream, refusal: admission::Refusal) {
    let message = match refusal {
        admission::Refusal::PerUid { .. } => {
            "too many connections from your account are waiting to start a session; please try again"
        }
        admission::Refusal::Total { .. } => "the bastion is busy; please try again in a moment",
    };
    let reply = crate::protocol::ServerMessage::Error {
        message: message.to_owned(),
        code: crate::protocol::EXIT_BASTION_FAILURE,
    };
    if let Ok(frame) = crate::protocol::encode(&reply) {
        let _ = stream.try_write(&frame);
    }
}

/// Closes the records of sessions a crashed broker left open, before any
/// new session starts.
async fn recover_interrupted_sessions(broker: &Arc<Broker>) {
    let log_dir = broker.config.current().recording.log_dir.clone();
    let audit = broker.audit.clone();
    let recovered =
        tokio::task::spawn_blocking(move || recording::recover_interrupted(&log_dir, &audit)).await;
    match recovered {
        Ok(Ok(ends)) if !ends.is_empty() => {
            let sessions: Vec<&str> = ends.iter().map(|e| e.session_id.as_str()).collect();
            tracing::warn!(
                ?sessions,
                "closed the records of sessions interrupted by a crash"
            );
        }
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "cannot close interrupted sessions' records"),
        Err(e) => tracing::error!(error = %e, "recovery of interrupted sessions panicked"),
    }
}

/// Binds the shells' socket: its directory root-owned 0755, the socket 0666
/// (anyone may connect; SO_PEERCRED says who they are). A stale socket file
/// is replaced; a live one means another broker runs.
pub fn listen(path: &Path) -> Result<UnixListener, BrokerError> {
    let err = |source| BrokerError::Listen {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(err)?;
    }
    bind_socket(path, 0o666)
}

/// Binds a unix socket at `path` with `mode`, replacing a stale one (no
/// process listening); a live one means another bastiond runs. Bound with
/// the process umask, then set to `mode` (connecting needs write
/// permission, so a narrower umask only shortens who may connect).
pub fn bind_socket(path: &Path, mode: u32) -> Result<UnixListener, BrokerError> {
    let err = |source| BrokerError::Listen {
        path: path.to_owned(),
        source,
    };
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_socket() && std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(BrokerError::AlreadyRunning {
                path: path.to_owned(),
            });
        }
        std::fs::remove_file(path).map_err(err)?;
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(err)?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_edit_applies_and_a_broken_edit_keeps_the_last_good_one() {
        if !nix::unistd::geteuid().is_root() {
            panic!("run as root (./test.sh does): the config must be root-owned");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bastion.toml");
        std::fs::write(&path, "[bastiond]\nimage = \"one:1\"\n").unwrap();
        let source = ConfigSource::load(&path).unwrap();
        assert_eq!(source.current().bastiond.image, "one:1");

        std::fs::write(&path, "[bastiond]\nimage = \"two:22\"\n").unwrap();
        assert_eq!(source.current().bastiond.image, "two:22");

        std::fs::write(&path, "[bastiond]\nimage = \n").unwrap();
        assert_eq!(
            source.current().bastiond.image,
            "two:22",
            "broken edit ignored"
        );
    }

    #[test]
    fn live_sessions_are_counted_until_dropped() {
        let live = Arc::new(LiveSessions::default());
        let start = Instant::now();
        assert_eq!(live.idle_since("a", start), Some(start));
        let one = live.enter("a", "s1");
        let two = live.enter("a", "s2");
        assert_eq!(live.count("a"), 2);
        assert_eq!(live.ids().len(), 2);
        assert_eq!(live.idle_since("a", start), None);
        drop(one);
        assert_eq!(live.count("a"), 1);
        drop(two);
        assert_eq!(live.count("a"), 0);
        assert!(live.ids().is_empty());
        assert!(live.idle_since("a", start).unwrap() >= start);
    }
}
