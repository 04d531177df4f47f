//! The hand-out both credential endpoints share: a container's credentials
//! for its role session from the cache (STS on a miss, single flight),
//! audited once per credential per container (`credentials.issued`); when
//! none can be had, the error, logged at most once a while per container.
//! What the endpoints render of it is theirs ([`crate::imds`],
//! [`crate::container_credentials`]), kept on the container's
//! [`HandedOut`] so that it is rendered once per credential.

use std::sync::Arc;

use crate::audit_events::Endpoint;
use crate::containers::{ContainerIdentity, HandedOut};
use crate::credential_cache::CacheError;
use crate::metadata_api::{CallerLookup, MetadataApi};
use crate::role_session::ResolvedSession;
use crate::sts::{AssumeRole, IssuedCredentials, StsError};

impl<L: CallerLookup, S: AssumeRole> MetadataApi<L, S> {
    /// `caller`'s credentials for `session`, asked for at `endpoint`, and
    /// their hand-out record.
    pub(crate) async fn hand_out(
        &self,
        caller: &ContainerIdentity,
        session: &ResolvedSession,
        endpoint: Endpoint,
    ) -> Result<(Arc<IssuedCredentials>, Arc<HandedOut>), StsError> {
        let request = &session.request;
        let creds = match self.cache.get_keyed(&session.key, request).await {
            Ok((creds, _)) => creds,
            Err(CacheError::Sts(error)) => {
                if caller.error_log.allow() {
                    tracing::error!(
                        container = %caller.name,
                        user = %caller.user,
                        role_arn = %request.role_arn,
                        %error,
                        "no valid credentials to hand out: STS is failing and the cache holds none"
                    );
                }
                return Err(error);
            }
        };
        let mut last = caller.handed_out.lock().expect("hand-out lock poisoned");
        let handed = match &*last {
            Some(handed) if handed.access_key_id == creds.access_key_id => handed.clone(),
            _ => {
                let handed = Arc::new(HandedOut {
                    access_key_id: creds.access_key_id.clone(),
                    ..Default::default()
                });
                *last = Some(handed.clone());
                drop(last);
                self.auditor
                    .credentials_issued(request, &caller.id, caller.ip, &creds, endpoint);
                handed
            }
        };
        Ok((creds, handed))
    }
}
