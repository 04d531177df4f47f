//! The HTTP API containers see: the IMDS emulator (169.254.169.254) and the
//! container-credentials endpoint (169.254.170.2), both DNATed to the proxy.
//!
//! Every answer is for the calling container only, identified by its source
//! address (see [`crate::containers`]): an unknown caller gets 404 and
//! nothing else. Paths are matched exactly; anything not listed is denied
//! (404), and only allow-listed paths reach the real IMDS.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST, HeaderValue, SERVER};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::Full;
use serde::Serialize;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::macros::format_description;

use crate::audit_events::{Auditor, Endpoint};
use crate::containers::{ContainerIdentity, Directory, DockerWatcher};
use crate::credential_cache::{CacheError, CredentialCache};
use crate::imds_token::{TokenError, TokenIssuer, parse_ttl};
use crate::metrics::Metrics;
use crate::passthrough::Upstream;
use crate::role::{Role, RoleNaming};
use crate::session_name::session_name;
use crate::sts::{AssumeRole, AssumeRoleRequest, IssuedCredentials};

pub const IMDS_HOST: &str = "169.254.169.254";
pub const CONTAINER_CREDENTIALS_HOST: &str = "169.254.170.2";
pub const CONTAINER_CREDENTIALS_PATH: &str = "/v1/credentials";

const TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";
const TOKEN_HEADER: &str = "x-aws-ec2-metadata-token";

pub type Body = Full<Bytes>;

/// Finds the container behind a source address.
pub trait CallerLookup: Send + Sync + 'static {
    fn lookup(&self, ip: Ipv4Addr) -> impl Future<Output = Option<Arc<ContainerIdentity>>> + Send;
}

impl CallerLookup for DockerWatcher {
    async fn lookup(&self, ip: Ipv4Addr) -> Option<Arc<ContainerIdentity>> {
        DockerWatcher::lookup(self, ip).await
    }
}

/// A directory alone (no Docker behind it): unit tests and tools.
impl CallerLookup for Directory {
    async fn lookup(&self, ip: Ipv4Addr) -> Option<Arc<ContainerIdentity>> {
        self.by_ip(ip)
    }
}

/// How AssumeRole requests are built for a container.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    pub naming: RoleNaming,
    pub external_id: Option<String>,
    pub duration: Duration,
    pub tags: bool,
}

impl SessionSettings {
    /// The role and the AssumeRole request for a container; `None` when it
    /// has no (valid) role label.
    pub fn request_for(&self, container: &ContainerIdentity) -> Option<(Role, AssumeRoleRequest)> {
        let label = container.role_label.as_deref()?;
        let role = match self.naming.resolve(label) {
            Ok(role) => role,
            Err(error) => {
                tracing::warn!(container = %container.name, %error, "container has an unusable role label: it gets no credentials");
                return None;
            }
        };
        let tags = if self.tags {
            vec![
                ("bastion-user".to_owned(), tag_value(&container.user)),
                ("bastion-container".to_owned(), tag_value(&container.name)),
            ]
        } else {
            Vec::new()
        };
        let request = AssumeRoleRequest {
            user: container.user.clone(),
            container: container.name.clone(),
            role_arn: role.arn.clone(),
            session_name: session_name(&container.user),
            external_id: self.external_id.clone(),
            duration: self.duration,
            tags,
        };
        Some((role, request))
    }
}

/// A session tag value: STS allows letters, digits, spaces and `_.:/=+-@`,
/// up to 256 characters.
fn tag_value(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_alphanumeric() || " _.:/=+-@".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(256)
        .collect()
}

/// What the API needs, besides the caller lookup and STS.
pub struct ApiSettings {
    pub session: SessionSettings,
    pub require_imdsv2: bool,
    /// Host header values accepted besides the link-local ones (the
    /// proxy's own listen address).
    pub own_hosts: Vec<String>,
}

/// The API's state; one per proxy.
pub struct MetadataApi<L, S> {
    lookup: Arc<L>,
    cache: Arc<CredentialCache<S>>,
    tokens: TokenIssuer,
    upstream: Upstream,
    settings: ApiSettings,
    metrics: Arc<Metrics>,
    auditor: Auditor,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HostKind {
    Imds,
    ContainerCredentials,
    Own,
}

type Answer = (&'static str, Response<Body>);

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    headers.insert(SERVER, HeaderValue::from_static("EC2ws"));
    response
}

fn json(status: StatusCode, body: &impl Serialize) -> Response<Body> {
    let body = serde_json::to_vec_pretty(body).expect("serializing plain structs cannot fail");
    text(status, body)
}

fn status_text(status: StatusCode) -> &'static str {
    status.canonical_reason().unwrap_or("Error")
}

fn refuse(route: &'static str, status: StatusCode) -> Answer {
    (route, text(status, status_text(status)))
}

/// `YYYY-MM-DDTHH:MM:SSZ`, as EC2 writes times.
pub fn ec2_time(t: SystemTime) -> String {
    OffsetDateTime::from(t)
        .format(format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
        ))
        .expect("formatting a UTC time cannot fail")
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ImdsCredentials<'a> {
    code: &'static str,
    last_updated: String,
    #[serde(rename = "Type")]
    kind: &'static str,
    access_key_id: &'a str,
    secret_access_key: &'a str,
    token: &'a str,
    expiration: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ImdsError {
    code: String,
    message: String,
    last_updated: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ImdsInfo {
    code: &'static str,
    last_updated: String,
    instance_profile_arn: String,
    instance_profile_id: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ContainerCredentials<'a> {
    role_arn: &'a str,
    access_key_id: &'a str,
    secret_access_key: &'a str,
    token: &'a str,
    expiration: String,
    account_id: &'a str,
}

#[derive(Serialize)]
struct ContainerError<'a> {
    code: &'a str,
    message: String,
}

impl<L: CallerLookup, S: AssumeRole> MetadataApi<L, S> {
    pub fn new(
        lookup: Arc<L>,
        cache: Arc<CredentialCache<S>>,
        upstream: Upstream,
        settings: ApiSettings,
        metrics: Arc<Metrics>,
        auditor: Auditor,
    ) -> Self {
        Self {
            lookup,
            cache,
            tokens: TokenIssuer::random(),
            upstream,
            settings,
            metrics,
            auditor,
        }
    }

    pub fn settings(&self) -> &ApiSettings {
        &self.settings
    }

    /// Answers one request from `peer`.
    pub async fn handle<B>(&self, request: Request<B>, peer: SocketAddr) -> Response<Body> {
        let (route, response) = self.route(&request, peer).await;
        self.metrics
            .record_request(route, response.status().as_u16());
        tracing::debug!(
            route,
            status = response.status().as_u16(),
            peer = %peer,
            method = %request.method(),
            path = request.uri().path(),
            "request"
        );
        response
    }

    fn host_kind(&self, headers: &HeaderMap) -> Option<HostKind> {
        let host = headers.get(HOST)?.to_str().ok()?;
        let bare = match host.rsplit_once(':') {
            Some((name, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
                name
            }
            _ => host,
        };
        match bare {
            IMDS_HOST => Some(HostKind::Imds),
            CONTAINER_CREDENTIALS_HOST => Some(HostKind::ContainerCredentials),
            _ if self
                .settings
                .own_hosts
                .iter()
                .any(|h| h == host || h == bare) =>
            {
                Some(HostKind::Own)
            }
            _ => None,
        }
    }

    async fn route<B>(&self, request: &Request<B>, peer: SocketAddr) -> Answer {
        // DNS rebinding: a page that resolves its own name to this address
        // still sends its own name as Host.
        let Some(host) = self.host_kind(request.headers()) else {
            return refuse("bad-host", StatusCode::FORBIDDEN);
        };
        let caller_ip = match peer.ip() {
            IpAddr::V4(ip) => Some(ip),
            IpAddr::V6(ip) => ip.to_ipv4_mapped(),
        };
        if request.uri().query().is_some() {
            return refuse("not-found", StatusCode::NOT_FOUND);
        }
        let path = request.uri().path();
        if path == CONTAINER_CREDENTIALS_PATH && host != HostKind::Imds {
            return self.container_credentials(request, caller_ip).await;
        }
        if host == HostKind::ContainerCredentials {
            return refuse("not-found", StatusCode::NOT_FOUND);
        }
        self.imds(request, caller_ip).await
    }

    async fn caller(&self, ip: Option<Ipv4Addr>) -> Option<Arc<ContainerIdentity>> {
        self.lookup.lookup(ip?).await
    }

    async fn imds<B>(&self, request: &Request<B>, ip: Option<Ipv4Addr>) -> Answer {
        let headers = request.headers();
        let path = request.uri().path();
        let method = request.method();
        if path == "/latest/api/token" {
            if method != Method::PUT {
                return refuse("token", StatusCode::METHOD_NOT_ALLOWED);
            }
            // A token request relayed by some HTTP proxy in the container
            // is refused, as EC2 does.
            if headers.contains_key("x-forwarded-for") {
                return refuse("token", StatusCode::FORBIDDEN);
            }
            let ttl = match parse_ttl(headers.get(TTL_HEADER).map(HeaderValue::as_bytes)) {
                Ok(ttl) => ttl,
                Err(_) => return refuse("token", StatusCode::BAD_REQUEST),
            };
            let Some(caller) = self.caller(ip).await else {
                return refuse("unknown-caller", StatusCode::NOT_FOUND);
            };
            let token = self.tokens.issue(&caller.id, ttl, SystemTime::now());
            let mut response = text(StatusCode::OK, token.expose().to_owned());
            response
                .headers_mut()
                .insert(TTL_HEADER, HeaderValue::from(ttl));
            return ("token", response);
        }
        if method != Method::GET && method != Method::HEAD {
            return refuse("bad-method", StatusCode::METHOD_NOT_ALLOWED);
        }
        let Some(caller) = self.caller(ip).await else {
            return refuse("unknown-caller", StatusCode::NOT_FOUND);
        };
        match headers.get(TOKEN_HEADER) {
            Some(token) => {
                if let Err(TokenError::Expired | TokenError::Invalid | _) =
                    self.tokens
                        .verify(token.as_bytes(), &caller.id, SystemTime::now())
                {
                    return refuse("unauthorized", StatusCode::UNAUTHORIZED);
                }
            }
            None if self.settings.require_imdsv2 => {
                return refuse("unauthorized", StatusCode::UNAUTHORIZED);
            }
            None => {}
        }
        let Some(rest) = path.strip_prefix("/latest/") else {
            return match path {
                "/" => ("listing", text(StatusCode::OK, "latest")),
                _ => refuse("not-found", StatusCode::NOT_FOUND),
            };
        };
        let role = self.settings.session.request_for(&caller);
        match rest {
            "" => ("listing", text(StatusCode::OK, self.root_listing())),
            "meta-data" | "meta-data/" => (
                "listing",
                text(StatusCode::OK, self.meta_data_listing(role.is_some())),
            ),
            "meta-data/iam" | "meta-data/iam/" => match role {
                Some(_) => (
                    "listing",
                    text(StatusCode::OK, "info\nsecurity-credentials/"),
                ),
                None => refuse("no-role", StatusCode::NOT_FOUND),
            },
            "meta-data/iam/security-credentials" | "meta-data/iam/security-credentials/" => {
                match role {
                    Some((role, _)) => ("iam-role-list", text(StatusCode::OK, role.name)),
                    None => refuse("no-role", StatusCode::NOT_FOUND),
                }
            }
            "meta-data/iam/info" => match role {
                Some((role, _)) => ("iam-info", json(StatusCode::OK, &instance_profile(&role))),
                None => refuse("no-role", StatusCode::NOT_FOUND),
            },
            _ => {
                if let Some(name) = rest.strip_prefix("meta-data/iam/security-credentials/") {
                    return match role {
                        Some((role, request)) if name == role.name => {
                            self.imds_credentials(&caller, &request).await
                        }
                        _ => refuse("other-role", StatusCode::NOT_FOUND),
                    };
                }
                match self.upstream.allowed_entry(rest) {
                    Some(entry) => self.passthrough(entry).await,
                    None => refuse("not-found", StatusCode::NOT_FOUND),
                }
            }
        }
    }

    fn root_listing(&self) -> String {
        let mut items = vec!["meta-data"];
        if self
            .upstream
            .allowed()
            .iter()
            .any(|a| a.starts_with("dynamic/"))
        {
            items.insert(0, "dynamic");
        }
        items.join("\n")
    }

    fn meta_data_listing(&self, has_role: bool) -> String {
        let mut items: Vec<String> = Vec::new();
        if has_role {
            items.push("iam/".to_owned());
        }
        for entry in self.upstream.allowed() {
            if let Some(rest) = entry.strip_prefix("meta-data/") {
                let item = match rest.split_once('/') {
                    Some((dir, _)) => format!("{dir}/"),
                    None => rest.to_owned(),
                };
                if !items.contains(&item) {
                    items.push(item);
                }
            }
        }
        items.sort();
        items.join("\n")
    }

    async fn passthrough(&self, entry: &str) -> Answer {
        match self.upstream.get(entry).await {
            Ok((StatusCode::OK, body)) => ("passthrough", text(StatusCode::OK, body)),
            Ok(_) => refuse("passthrough", StatusCode::NOT_FOUND),
            Err(error) => {
                tracing::warn!(%error, entry, "passthrough to the real IMDS failed");
                refuse("passthrough", StatusCode::BAD_GATEWAY)
            }
        }
    }

    /// Note a hand-out in the audit log, once per credential per container.
    fn audit_hand_out(
        &self,
        caller: &ContainerIdentity,
        request: &AssumeRoleRequest,
        creds: &IssuedCredentials,
        endpoint: Endpoint,
    ) {
        let mut last = caller.last_handed_key.lock().expect("hand-out lock");
        if last.as_deref() != Some(creds.access_key_id.as_str()) {
            *last = Some(creds.access_key_id.clone());
            drop(last);
            self.auditor
                .credentials_issued(request, &caller.id, caller.ip, creds, endpoint);
        }
    }

    async fn imds_credentials(
        &self,
        caller: &ContainerIdentity,
        request: &AssumeRoleRequest,
    ) -> Answer {
        match self.cache.get(request).await {
            Ok((creds, _)) => {
                self.audit_hand_out(caller, request, &creds, Endpoint::Imds);
                let body = ImdsCredentials {
                    code: "Success",
                    last_updated: ec2_time(creds.issued_at),
                    kind: "AWS-HMAC",
                    access_key_id: &creds.access_key_id,
                    secret_access_key: creds.secret_access_key.expose(),
                    token: creds.session_token.expose(),
                    expiration: ec2_time(creds.expiration),
                };
                ("iam-credentials", json(StatusCode::OK, &body))
            }
            Err(CacheError::Sts(error)) => {
                tracing::error!(
                    container = %caller.name,
                    user = %caller.user,
                    role_arn = %request.role_arn,
                    %error,
                    "no valid credentials to hand out: STS is failing and the cache holds none"
                );
                let code = if error.code() == "AccessDenied" {
                    "AssumeRoleUnauthorizedAccess".to_owned()
                } else {
                    error.code().to_owned()
                };
                // EC2's error form: 200 with a Code other than Success.
                let body = ImdsError {
                    code,
                    message: format!(
                        "no credentials are available for role {} right now; the bastion's metadata proxy log says why",
                        request.role_arn
                    ),
                    last_updated: ec2_time(SystemTime::now()),
                };
                ("iam-credentials-error", json(StatusCode::OK, &body))
            }
        }
    }

    async fn container_credentials<B>(&self, request: &Request<B>, ip: Option<Ipv4Addr>) -> Answer {
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return refuse("container-credentials", StatusCode::METHOD_NOT_ALLOWED);
        }
        let Some(caller) = self.caller(ip).await else {
            return refuse("unknown-caller", StatusCode::NOT_FOUND);
        };
        let error = |status: StatusCode, code: &str, message: &str| {
            (
                "container-credentials",
                json(
                    status,
                    &ContainerError {
                        code,
                        message: message.to_owned(),
                    },
                ),
            )
        };
        let Some(token) = request.headers().get(http::header::AUTHORIZATION) else {
            return error(
                StatusCode::UNAUTHORIZED,
                "MissingToken",
                "send the token from AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE in the Authorization header",
            );
        };
        if !caller.token_matches(token.as_bytes()) {
            return error(
                StatusCode::FORBIDDEN,
                "InvalidToken",
                "the Authorization token is not this container's",
            );
        }
        let Some((role, assume)) = self.settings.session.request_for(&caller) else {
            return error(
                StatusCode::NOT_FOUND,
                "NoRole",
                "this container has no IAM role",
            );
        };
        match self.cache.get(&assume).await {
            Ok((creds, _)) => {
                self.audit_hand_out(&caller, &assume, &creds, Endpoint::ContainerCredentials);
                let body = ContainerCredentials {
                    role_arn: &role.arn,
                    access_key_id: &creds.access_key_id,
                    secret_access_key: creds.secret_access_key.expose(),
                    token: creds.session_token.expose(),
                    expiration: ec2_time(creds.expiration),
                    account_id: &role.account_id,
                };
                ("container-credentials", json(StatusCode::OK, &body))
            }
            Err(CacheError::Sts(e)) => {
                tracing::error!(
                    container = %caller.name,
                    user = %caller.user,
                    role_arn = %assume.role_arn,
                    error = %e,
                    "no valid credentials to hand out: STS is failing and the cache holds none"
                );
                error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    e.code(),
                    "no credentials are available right now; the bastion's metadata proxy log says why",
                )
            }
        }
    }
}

/// `iam/info`, synthesized for the container's role.
fn instance_profile(role: &Role) -> ImdsInfo {
    let digest = Sha256::digest(role.arn.as_bytes());
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let id: String = digest
        .iter()
        .take(17)
        .map(|b| ALPHABET[(b % 32) as usize] as char)
        .collect();
    let (prefix, _) = role.arn.split_once(":role/").unwrap_or((&role.arn, ""));
    ImdsInfo {
        code: "Success",
        last_updated: ec2_time(SystemTime::now()),
        instance_profile_arn: format!("{prefix}:instance-profile/{}", role.name),
        instance_profile_id: format!("AIPA{id}"),
    }
}
