//! The contract between bastiond, which creates users' containers, and the
//! metadata proxy, which reads them (docs/ARCHITECTURE.md): the labels on
//! every user container, the addresses and paths the containers are given,
//! and how both reach the Docker Engine. Written once, here; both crates
//! use it.

/// Labels of users' containers.
pub mod labels {
    /// The user a container belongs to.
    pub const USER: &str = "bastion.user";
    pub const UID: &str = "bastion.uid";
    /// The IAM role (a name or an ARN) the container's credentials are for.
    pub const ROLE: &str = "bastion.role";
    /// SHA-256 (hex) of the container-credentials token (the proxy compares
    /// it with the `Authorization` header's).
    pub const CREDENTIALS_TOKEN_SHA256: &str = "bastion.credentials-token-sha256";
    /// Hash of everything the container was created from.
    pub const SPEC: &str = "bastion.spec";
    /// The network the container is on (its own: `bastion-net-<user>`);
    /// the proxy takes the container's address there.
    pub const NETWORK: &str = "bastion.network";
    /// The size limit of the user's home (bytes; 0: none), so a change
    /// recreates the container (and grows the home while it is down).
    pub const HOME_SIZE: &str = "bastion.home-size";
    /// `transfers` on a user's file-transfer container (absent on their
    /// shell container).
    pub const PURPOSE: &str = "bastion.purpose";
}

/// The instance metadata address containers call (DNATed to the proxy).
pub const IMDS_HOST: &str = "169.254.169.254";
/// The container-credentials address and path (DNATed to the proxy).
pub const CONTAINER_CREDENTIALS_HOST: &str = "169.254.170.2";
pub const CONTAINER_CREDENTIALS_PATH: &str = "/v1/credentials";
/// What `AWS_CONTAINER_CREDENTIALS_FULL_URI` points SDKs at.
pub const CREDENTIALS_FULL_URI: &str = "http://169.254.170.2/v1/credentials";
/// Where a container finds its credentials token
/// (`AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`).
pub const TOKEN_PATH_IN_CONTAINER: &str = "/etc/bastion/aws-container-token";
/// Where the kubeconfigs are mounted in a container.
pub const KUBECONFIG_DIR_IN_CONTAINER: &str = "/etc/bastion/kubeconfigs";

/// Reaching the Docker Engine.
pub mod docker {
    use std::collections::HashMap;
    use std::future::Future;
    use std::path::PathBuf;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use backon::BackoffBuilder;
    use bollard::Docker;
    use bollard::models::EventMessage;
    use bollard::query_parameters::EventsOptions;
    use futures_util::StreamExt;
    pub use tokio_util::sync::CancellationToken;

    /// The Engine's endpoint when the config names none.
    pub const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

    /// Why the Docker client could not be set up.
    #[derive(Debug, thiserror::Error)]
    pub enum ConnectError {
        #[error("docker_host {0:?} is not supported: a local unix socket is needed (unix:///path)")]
        NotUnix(String),
        #[error("cannot set up the Docker client for {path}: {source}")]
        Client {
            path: PathBuf,
            #[source]
            source: bollard::errors::Error,
        },
    }

    /// The API version spoken when the Engine cannot be asked for its own
    /// (it is not up yet): Docker 20.10's, which every later Engine still
    /// accepts, while bollard's default is newer than Debian's docker.io.
    const FALLBACK_VERSION: bollard::ClientVersion = bollard::ClientVersion {
        major_version: 1,
        minor_version: 41,
    };

    /// A client of the Engine at `host` (`unix:///path`; [`DEFAULT_HOST`]
    /// when `None`), speaking the Engine's API version; when the Engine
    /// does not answer yet, [`FALLBACK_VERSION`]. Also returns the socket's
    /// path (raw streams go to it directly).
    pub async fn connect(host: Option<&str>) -> Result<(Docker, PathBuf), ConnectError> {
        let host = host.unwrap_or(DEFAULT_HOST);
        let socket = host
            .strip_prefix("unix://")
            .or_else(|| host.starts_with('/').then_some(host))
            .map(PathBuf::from)
            .ok_or_else(|| ConnectError::NotUnix(host.to_owned()))?;
        let client = |version| {
            Docker::connect_with_unix(&socket.to_string_lossy(), 120, version).map_err(|source| {
                ConnectError::Client {
                    path: socket.clone(),
                    source,
                }
            })
        };
        let docker = client(bollard::API_DEFAULT_VERSION)?;
        let docker = match docker.negotiate_version().await {
            Ok(negotiated) => negotiated,
            Err(e) => {
                tracing::warn!(error = %e, "cannot ask the Docker Engine for its API version yet; speaking 1.41");
                client(&FALLBACK_VERSION)?
            }
        };
        Ok((docker, socket))
    }

    /// What follows the Engine's events stream ([`follow_events`]).
    pub trait EventFollower: Send + Sync {
        /// The stream is (re)connected: bring what is known up to date
        /// (events missed while it was down are not replayed). An error
        /// retries the connection after the back-off.
        fn connected(&self) -> impl Future<Output = Result<(), String>> + Send;
        /// One event.
        fn event(&self, event: EventMessage) -> impl Future<Output = ()> + Send;
        /// The stream is down (until the next `connected`).
        fn disconnected(&self);
        /// Every `tick` of [`follow_events`] while connected.
        fn tick(&self) -> impl Future<Output = ()> + Send {
            async {}
        }
    }

    /// The delays before each reconnection of [`follow_events`]: 250 ms,
    /// doubling to 10 s, then 10 s for ever (a fresh sequence after a
    /// healthy connection).
    pub fn reconnect_delays() -> impl Iterator<Item = Duration> {
        backon::ExponentialBuilder::new()
            .with_min_delay(Duration::from_millis(250))
            .with_max_delay(Duration::from_secs(10))
            .without_max_times()
            .build()
    }

    /// Follows the Engine's events matching `filters` until `stop`:
    /// reconnects after a failure or the stream's end with a back-off
    /// (250 ms, doubling to 10 s; back to 250 ms after a connection that
    /// delivered an event or lasted 10 s), asking each (re)connection from a second before it so that
    /// nothing between is lost. Both bastiond (its container state) and the
    /// metadata proxy (its directory) keep their view this way.
    pub async fn follow_events(
        docker: &Docker,
        filters: HashMap<String, Vec<String>>,
        follower: &impl EventFollower,
        tick: Option<Duration>,
        stop: &CancellationToken,
    ) {
        let mut backoff = reconnect_delays();
        while !stop.is_cancelled() {
            let since = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs()
                .saturating_sub(1);
            let options = EventsOptions {
                since: Some(since.to_string()),
                until: None,
                filters: Some(filters.clone()),
            };
            let mut events = docker.events(Some(options));
            match follower.connected().await {
                Ok(()) => {}
                Err(error) => {
                    tracing::warn!(%error, "cannot bring the view of the Docker Engine up to date; retrying");
                    follower.disconnected();
                    let delay = backoff.next().unwrap_or(Duration::from_secs(10));
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(delay) => {}
                    }
                    continue;
                }
            }
            let mut ticks = tokio::time::interval(tick.unwrap_or(Duration::MAX / 4));
            ticks.tick().await;
            let connected_at = std::time::Instant::now();
            let mut healthy = false;
            loop {
                tokio::select! {
                    () = stop.cancelled() => {
                        follower.disconnected();
                        return;
                    }
                    _ = ticks.tick(), if tick.is_some() => follower.tick().await,
                    event = events.next() => match event {
                        Some(Ok(event)) => {
                            healthy = true;
                            follower.event(event).await;
                        }
                        Some(Err(error)) => {
                            tracing::warn!(%error, "Docker events stream failed; reconnecting");
                            break;
                        }
                        None => {
                            tracing::warn!("Docker events stream ended; reconnecting");
                            break;
                        }
                    }
                }
            }
            follower.disconnected();
            if healthy || connected_at.elapsed() > Duration::from_secs(10) {
                backoff = reconnect_delays();
            }
            let delay = backoff.next().unwrap_or(Duration::from_secs(10));
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[tokio::test]
        async fn only_a_local_socket_is_accepted() {
            assert!(matches!(
                connect(Some("tcp://10.0.0.1:2375")).await,
                Err(ConnectError::NotUnix(_))
            ));
            match connect(Some("unix:///nonexistent/docker.sock")).await {
                Err(ConnectError::Client { path, .. }) => {
                    assert_eq!(path, PathBuf::from("/nonexistent/docker.sock"));
                }
                other => panic!("{other:?}"),
            }
        }

        #[test]
        fn reconnection_waits_250_ms_doubling_to_10_s_for_ever() {
            let ms: Vec<u128> = reconnect_delays().take(9).map(|d| d.as_millis()).collect();
            assert_eq!(
                ms,
                [250, 500, 1000, 2000, 4000, 8000, 10_000, 10_000, 10_000]
            );
            assert_eq!(
                reconnect_delays().nth(1000),
                Some(Duration::from_secs(10)),
                "never gives up"
            );
        }
    }
}
