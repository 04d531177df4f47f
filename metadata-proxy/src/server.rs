//! Wiring: from the configuration to two running HTTP listeners (the
//! metadata API on the bridge gateway, the admin API on loopback), the
//! Docker watcher and the background credential refresh; and a graceful
//! shutdown of all of them.
//!
//! Start-up does not wait for STS when `metadata_proxy.account_id` is set:
//! the proxy's own-identity check (sts:GetCallerIdentity) then runs in the
//! background and is only logged, so a slow or hanging STS cannot keep IMDS
//! down. Without `account_id` the account is needed to name roles, so
//! start-up asks STS for it, waits at most [`ACCOUNT_WAIT`], and otherwise
//! stops with an error that says to set `account_id`.

use std::collections::HashSet;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bastion_core::config::{Config, MetadataProxyConfig, NetworkConfig};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::Admin;
use crate::audit_events::Auditor;
use crate::connection_limit::ConnectionLimit;
use crate::containers::{Directory, DockerError, DockerWatcher};
use crate::credential_cache::{CacheKey, CredentialCache, Tuning};
use crate::metadata_api::{ApiSettings, Body, MetadataApi};
use crate::metrics::Metrics;
use crate::passthrough::{Upstream, UpstreamError};
use crate::role::RoleNaming;
use crate::role_session::SessionSettings;
use crate::sts::{AwsSts, StsError, StsSettings};
use ipnet::IpNet;

/// Everything the proxy needs to start.
#[derive(Debug, Clone)]
pub struct ProxyOptions {
    pub proxy: MetadataProxyConfig,
    pub network: NetworkConfig,
    pub docker_host: Option<String>,
    /// Audit log path and whether to copy events to syslog; `None` only in
    /// tests that do not look at audit events.
    pub audit_log: Option<(PathBuf, bool)>,
    pub sts: StsSettings,
    pub tuning: Tuning,
}

impl ProxyOptions {
    /// The options a config file gives.
    pub fn from_config(config: &Config) -> Self {
        let proxy = config.metadata_proxy.clone();
        let tuning = Tuning {
            min_served: MetadataProxyConfig::MIN_SERVED_LIFETIME,
            refresh_ahead: proxy.refresh_ahead,
            ..Tuning::default()
        };
        Self {
            sts: StsSettings {
                endpoint: proxy.sts_endpoint.clone(),
                region: proxy.sts_region.clone(),
                static_credentials: None,
                operation_timeout: Duration::from_secs(10),
            },
            proxy,
            network: config.bastiond.network.clone(),
            docker_host: config.bastiond.docker_host.clone(),
            audit_log: Some((config.recording.audit_log.clone(), config.recording.syslog)),
            tuning,
        }
    }

    /// Where the metadata API listens: `listen_address` or the gateway.
    pub fn listen_addr(&self) -> SocketAddr {
        let ip = self
            .proxy
            .listen_address
            .unwrap_or(IpAddr::V4(self.network.gateway()));
        SocketAddr::new(ip, self.proxy.port)
    }
}

/// How long start-up waits for STS to name the AWS account when
/// `metadata_proxy.account_id` is not set (STS answers GetCallerIdentity in
/// well under a second when it works).
pub const ACCOUNT_WAIT: Duration = Duration::from_secs(5);

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open the audit log: {0}")]
    Audit(#[from] bastion_core::audit::AuditError),
    #[error(
        "cannot find the AWS account for role names (set metadata_proxy.account_id, or give the proxy credentials that can call sts:GetCallerIdentity): {0}"
    )]
    Account(#[source] StsError),
    #[error(
        "cannot find the AWS account for role names: STS ({endpoint}) did not answer GetCallerIdentity within {} s (set metadata_proxy.account_id to start without waiting for STS, or check sts_endpoint and the proxy's network path to STS)",
        waited.as_secs()
    )]
    AccountTimeout { endpoint: String, waited: Duration },
    #[error(transparent)]
    Docker(#[from] DockerError),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A started proxy.
pub struct RunningProxy {
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub metrics: Arc<Metrics>,
    pub directory: Arc<Directory>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningProxy {
    /// Stops accepting, lets requests in flight finish (up to 5 s), stops
    /// the watcher and the refresh.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Binds a listener; with IP_FREEBIND, so the proxy can start (and be
/// ready) before the bridge and its gateway address exist.
fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    let err = |source| StartError::Bind { addr, source };
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )
    .map_err(err)?;
    socket.set_reuse_address(true).map_err(err)?;
    if addr.is_ipv4() {
        socket.set_freebind_v4(true).map_err(err)?;
    }
    socket.set_nonblocking(true).map_err(err)?;
    socket.bind(&addr.into()).map_err(err)?;
    socket.listen(1024).map_err(err)?;
    TcpListener::from_std(socket.into()).map_err(err)
}

/// Starts the proxy.
pub async fn start(options: ProxyOptions) -> Result<RunningProxy, StartError> {
    let metrics = Arc::new(Metrics::new());
    let auditor = match &options.audit_log {
        Some((path, syslog)) => Auditor::open(path, *syslog)?,
        None => Auditor::tracing_only(),
    };
    let sts = AwsSts::new(&options.sts).await;
    let (shutdown, shutdown_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let account_id = match &options.proxy.account_id {
        Some(configured) => {
            tasks.push(tokio::spawn(log_own_identity(
                sts.clone(),
                configured.clone(),
                shutdown_rx.clone(),
            )));
            configured.clone()
        }
        None => account_from_sts(&sts, options.sts.endpoint.as_deref()).await?,
    };
    let session = SessionSettings {
        naming: RoleNaming {
            partition: options.proxy.partition.clone(),
            account_id,
            prefix: options.proxy.role_prefix.clone(),
        },
        external_id: options.proxy.external_id.clone(),
        duration: options.proxy.session_duration,
        tags: options.proxy.session_tags,
    };
    let sts_check = crate::admin::StsCheck::new(sts.clone());
    let cache = Arc::new(CredentialCache::new(
        sts,
        options.tuning,
        metrics.clone(),
        auditor.clone(),
    ));
    let directory = Arc::new(Directory::new(metrics.clone()));
    let (docker, _) = bastion_core::contract::docker::connect(options.docker_host.as_deref())
        .await
        .map_err(DockerError::from)?;
    let prefetch = {
        let cache = cache.clone();
        let session = session.clone();
        Box::new(
            move |container: &Arc<crate::containers::ContainerIdentity>| {
                if let Some(resolved) = container.role_session(&session) {
                    cache.prefetch(&resolved.request);
                }
            },
        )
    };
    let watcher = Arc::new(DockerWatcher::new(
        docker,
        options.network.name.clone(),
        directory.clone(),
        metrics.clone(),
        prefetch,
    ));

    let addr = options.listen_addr();
    let listener = bind(addr)?;
    let admin_listener = bind(options.proxy.admin_listen)?;
    let addr = listener
        .local_addr()
        .map_err(|source| StartError::Bind { addr, source })?;
    let admin_addr = admin_listener
        .local_addr()
        .map_err(|source| StartError::Bind {
            addr: options.proxy.admin_listen,
            source,
        })?;

    let mut own_hosts = vec![addr.ip().to_string(), addr.to_string()];
    if addr.port() == 80 {
        own_hosts.pop();
    }
    let api = Arc::new(MetadataApi::new(
        watcher.clone(),
        cache.clone(),
        Upstream::new(
            &options.proxy.imds_upstream,
            options.proxy.passthrough.clone(),
        )?,
        ApiSettings {
            session: session.clone(),
            require_imdsv2: options.proxy.require_imdsv2,
            own_hosts,
        },
        metrics.clone(),
        auditor,
    ));
    let admin = Arc::new(Admin {
        metrics: metrics.clone(),
        watcher: watcher.clone(),
        sts: sts_check,
    });

    tasks.push(tokio::spawn(watcher.clone().run(shutdown_rx.clone())));
    tasks.push(tokio::spawn(refresh_loop(
        cache,
        directory.clone(),
        session,
        options.tuning.scan_interval,
        shutdown_rx.clone(),
    )));
    // Only where a container can be: the users' networks (and the gateway
    // network's subnet, for containers on it).
    // In all, well below the descriptor limit: the rest stays for STS,
    // Docker and the admin listener.
    let containers_only = ConnectionLimit::only_from(
        options.proxy.max_connections_per_source,
        connection_budget(),
        Some(vec![
            IpNet::V4(options.network.users_subnet),
            IpNet::V4(options.network.subnet),
        ]),
    );
    // The admin listener serves monitoring on loopback, where every local
    // account can connect: a few connections in all.
    let admin_limit = ConnectionLimit::new(ADMIN_PER_SOURCE, ADMIN_TOTAL);
    tasks.push(tokio::spawn(serve(
        listener,
        move |request, peer| {
            let api = api.clone();
            async move { api.handle(request, peer).await }
        },
        containers_only,
        shutdown_rx.clone(),
    )));
    tasks.push(tokio::spawn(serve(
        admin_listener,
        move |request, _peer| {
            let admin = admin.clone();
            async move { admin.handle(&request).await }
        },
        admin_limit,
        shutdown_rx,
    )));
    tracing::info!(%addr, %admin_addr, network = %options.network.name, "metadata proxy listening");
    Ok(RunningProxy {
        addr,
        admin_addr,
        metrics,
        directory,
        shutdown,
        tasks,
    })
}

/// Connections the admin listener holds from one address, and in all.
const ADMIN_PER_SOURCE: usize = 4;
const ADMIN_TOTAL: usize = 32;

/// How many connections the metadata API holds in all: three quarters of
/// the descriptor limit (the rest for STS, Docker, the admin listener and
/// the audit log), at least 256.
fn connection_budget() -> usize {
    let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(1024);
    usize::try_from(soft / 4 * 3).unwrap_or(usize::MAX).max(256)
}

/// The proxy's own identity, checked in the background when the account is
/// configured: only a log line (it names the credentials the proxy assumes
/// roles with), so it never holds up serving.
async fn log_own_identity(sts: AwsSts, configured: String, mut shutdown: watch::Receiver<bool>) {
    let identity = tokio::select! {
        identity = sts.caller_identity() => identity,
        _ = shutdown.changed() => return,
    };
    match identity {
        Ok((account, arn)) => tracing::info!(
            %arn,
            %account,
            account_id = %configured,
            "the proxy's own AWS identity (it assumes the users' roles with it)"
        ),
        Err(error) => tracing::warn!(
            %error,
            account_id = %configured,
            "cannot check the proxy's own AWS identity; serving goes on with metadata_proxy.account_id (AssumeRole fails for as long as STS does)"
        ),
    }
}

/// The account role names resolve in, when the config names none: asked of
/// STS, for at most [`ACCOUNT_WAIT`] (the metadata API does not listen
/// meanwhile: it could not name any role).
async fn account_from_sts(sts: &AwsSts, endpoint: Option<&str>) -> Result<String, StartError> {
    let endpoint = endpoint.unwrap_or("the SDK's default STS endpoint");
    tracing::info!(
        %endpoint,
        wait_s = ACCOUNT_WAIT.as_secs(),
        "metadata_proxy.account_id is not set: asking STS (GetCallerIdentity) for the account to name roles in before listening; set account_id to start without waiting for STS"
    );
    match tokio::time::timeout(ACCOUNT_WAIT, sts.caller_identity()).await {
        Ok(Ok((account, arn))) => {
            tracing::info!(%arn, %account, "the proxy's own AWS identity (it assumes the users' roles with it; role names resolve in its account)");
            Ok(account)
        }
        Ok(Err(error)) => Err(StartError::Account(error)),
        Err(_) => Err(StartError::AccountTimeout {
            endpoint: endpoint.to_owned(),
            waited: ACCOUNT_WAIT,
        }),
    }
}

/// The background refresh: every `interval`, refresh what known containers
/// use and forget what none uses.
async fn refresh_loop<S: crate::sts::AssumeRole>(
    cache: Arc<CredentialCache<S>>,
    directory: Arc<Directory>,
    session: SessionSettings,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let wanted: HashSet<CacheKey> = directory
                    .all()
                    .iter()
                    .filter_map(|c| c.role_session(&session))
                    .map(|resolved| resolved.key.clone())
                    .collect();
                cache.scan(&wanted);
            }
            _ = shutdown.changed() => return,
        }
    }
}

/// Serves HTTP/1.1 on `listener` until `shutdown`, then waits up to 5 s
/// for open connections to finish their requests. A source with `limit`'s
/// number of connections open gets its next one closed at once.
async fn serve<F, Fut>(
    listener: TcpListener,
    handler: F,
    limit: Arc<ConnectionLimit>,
    mut shutdown: watch::Receiver<bool>,
) where
    F: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let Some(slot) = limit.admit(peer.ip()) else {
                    drop(stream);
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let handler = handler.clone();
                let service = service_fn(move |request| {
                    let handler = handler.clone();
                    async move { Ok::<_, Infallible>(handler(request, peer).await) }
                });
                let connection = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .serve_connection(TokioIo::new(stream), service);
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    if let Err(error) = connection.await {
                        tracing::debug!(%error, %peer, "connection ended with an error");
                    }
                    drop(slot);
                });
            }
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(Duration::from_secs(5)) => {
            tracing::warn!("connections still open after 5 s: closing them");
        }
    }
}
