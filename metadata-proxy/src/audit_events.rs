//! The proxy's audit events (`sts.assume_role`, `credentials.issued`),
//! appended to the hash-chained audit log of `bastion_core::audit`. They never
//! carry a secret: the access key id is not one (CloudTrail shows it).
//!
//! Appends `fdatasync`, so they run on the blocking pool and never delay an
//! answer. A hand-out is recorded once per (container, access key id), not
//! once per request: SDKs poll, and the log must stay readable.

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;

use bastion_core::audit::{AuditError, AuditEvent, AuditLog, CredentialsIssued, StsAssumeRole};
use time::OffsetDateTime;

use crate::sts::{AssumeRoleRequest, IssuedCredentials, StsError};

/// Where audit events go.
#[derive(Clone)]
pub struct Auditor {
    log: Option<Arc<AuditLog>>,
}

/// Which endpoint handed credentials out (the event's `endpoint` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Imds,
    ContainerCredentials,
}

impl Endpoint {
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Imds => "imds",
            Endpoint::ContainerCredentials => "container_credentials",
        }
    }
}

impl Auditor {
    /// Appends to the audit log at `path` (syslog copies when `syslog`).
    pub fn open(path: &Path, syslog: bool) -> Result<Self, AuditError> {
        let mut log = AuditLog::open(path)?;
        if syslog {
            log = log.with_syslog();
        }
        Ok(Self {
            log: Some(Arc::new(log)),
        })
    }

    /// Events only go to the tracing log (unit tests).
    pub fn tracing_only() -> Self {
        Self { log: None }
    }

    /// The one place where the proxy's audit events are written.
    fn record(&self, event: AuditEvent) {
        tracing::info!(target: "bastion_audit", event = event.name(), "audit event");
        let Some(log) = self.log.clone() else {
            return;
        };
        let spawned = tokio::runtime::Handle::try_current().map(|rt| {
            rt.spawn_blocking(move || {
                if let Err(error) = log.append(&event) {
                    tracing::error!(%error, event = event.name(), "cannot write audit event");
                }
            })
        });
        if spawned.is_err() {
            tracing::error!("audit event dropped: no runtime to write it from");
        }
    }

    /// An sts:AssumeRole call and its result.
    pub fn sts_call(
        &self,
        request: &AssumeRoleRequest,
        result: Result<&IssuedCredentials, &StsError>,
    ) {
        let (expiration, access_key_id, request_id, error) = match result {
            Ok(creds) => (
                Some(OffsetDateTime::from(creds.expiration)),
                Some(creds.access_key_id.clone()),
                creds.request_id.clone(),
                None,
            ),
            Err(e) => (
                None,
                None,
                match e {
                    StsError::AssumeRole { request_id, .. } => request_id.clone(),
                    _ => None,
                },
                Some(e.to_string()),
            ),
        };
        self.record(AuditEvent::StsAssumeRole(StsAssumeRole {
            user: request.user.clone(),
            container: request.container.clone(),
            role_arn: request.role_arn.clone(),
            session_name: request.session_name.clone(),
            source_identity: Some(request.session_name.clone()),
            expiration,
            access_key_id,
            request_id,
            error,
        }));
    }

    /// Credentials handed to a container.
    pub fn credentials_issued(
        &self,
        request: &AssumeRoleRequest,
        container_id: &str,
        source_ip: Ipv4Addr,
        creds: &IssuedCredentials,
        endpoint: Endpoint,
    ) {
        self.record(AuditEvent::CredentialsIssued(CredentialsIssued {
            user: request.user.clone(),
            container: request.container.clone(),
            container_id: Some(container_id.to_owned()),
            source_ip: Some(source_ip.to_string()),
            role_arn: request.role_arn.clone(),
            session_name: request.session_name.clone(),
            source_identity: Some(request.session_name.clone()),
            access_key_id: Some(creds.access_key_id.clone()),
            expiration: OffsetDateTime::from(creds.expiration),
            endpoint: endpoint.as_str().to_owned(),
        }));
    }
}
