//! STS AssumeRole: the request the proxy makes for a container, the
//! credentials it gets back, the client that talks to STS (aws-sdk-sts,
//! with an endpoint override for STS-compatible servers), and what a failed
//! call says about STS itself ([`FailureKind`]: an outage, throttling, or a
//! refusal of that one request).

use std::future::Future;

use std::time::{Duration, SystemTime};

use aws_config::BehaviorVersion;
use aws_config::meta::region::RegionProviderChain;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_credential_types::Credentials;
use aws_sdk_sts::config::Region;
use aws_sdk_sts::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_sts::operation::RequestId;
use aws_sdk_sts::types::Tag;

use crate::secret::{ExposeSecret, Secret};

/// One AssumeRole call, as the cache keys and repeats it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssumeRoleRequest {
    /// Who the session is for (audit only; `session_name` derives from it).
    pub user: String,
    /// The user's container name (audit only).
    pub container: String,
    pub role_arn: String,
    /// RoleSessionName, also used as SourceIdentity.
    pub session_name: String,
    pub external_id: Option<String>,
    pub duration: Duration,
    /// Session tags (key, value); empty when tagging is off.
    pub tags: Vec<(String, String)>,
}

/// Credentials STS issued.
#[derive(Debug, Clone)]
pub struct IssuedCredentials {
    pub access_key_id: String,
    pub secret_access_key: Secret,
    pub session_token: Secret,
    pub expiration: SystemTime,
    /// When the proxy received them (IMDS's `LastUpdated`).
    pub issued_at: SystemTime,
    /// `arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION`.
    pub assumed_role_arn: Option<String>,
    pub request_id: Option<String>,
}

/// Why an STS call failed. Cloneable: every waiter of a shared call gets it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StsError {
    #[error("STS AssumeRole of {role_arn} failed: {code}: {message}")]
    AssumeRole {
        role_arn: String,
        code: String,
        message: String,
        request_id: Option<String>,
        /// The HTTP status of STS's answer; `None` when none came (no
        /// connection, a timeout).
        http_status: Option<u16>,
    },
    #[error("STS AssumeRole of {role_arn} returned no credentials")]
    NoCredentials { role_arn: String },
    #[error("STS GetCallerIdentity failed: {message}")]
    CallerIdentity { message: String },
    /// A request waited as long as it may for an AssumeRole still in
    /// flight; the call goes on and its result is cached.
    #[error(
        "STS has not answered the AssumeRole of {role_arn} within {} ms; the call goes on, ask again",
        waited.as_millis()
    )]
    NotAnsweredYet { role_arn: String, waited: Duration },
}

/// What a failed STS call says about STS itself: whether retrying sooner
/// than the back-off could help once STS is seen to answer again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// No answer (no connection, a timeout), a server error (5xx), or the
    /// proxy's own credentials refused: nothing about this role. Once STS
    /// answers again (its GetCallerIdentity succeeds), retry at once.
    Unavailable,
    /// STS asks us to slow down: keep backing off exponentially with
    /// jitter, even while it answers other calls (STS request quotas cannot
    /// be raised).
    Throttled,
    /// STS answered and refused this one request (AccessDenied, a
    /// validation error): retrying sooner would only fail again.
    Refused,
}

/// Error codes STS (or the SDK) uses for throttling; the list the AWS SDKs'
/// retry classifiers use.
const THROTTLING_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "TransactionInProgressException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "LimitExceededException",
    "RequestThrottled",
    "SlowDown",
    "PriorRequestNotComplete",
    "EC2ThrottledException",
];

/// Error codes that are about the proxy's own credentials or STS's health,
/// not about the role asked for: GetCallerIdentity (same credentials, same
/// endpoint) fails alike, so its success shows they are over.
const UNAVAILABLE_CODES: &[&str] = &[
    "Unreachable",
    "Unknown",
    "InternalFailure",
    "InternalError",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "RequestTimeout",
    "RequestTimeoutException",
    "IDPCommunicationError",
    "InvalidClientTokenId",
    "ExpiredToken",
    "ExpiredTokenException",
    "SignatureDoesNotMatch",
    "IncompleteSignature",
    "MissingAuthenticationToken",
    "RequestExpired",
];

impl StsError {
    /// A short error code for metrics and the IMDS error body.
    pub fn code(&self) -> &str {
        match self {
            StsError::AssumeRole { code, .. } => code,
            StsError::NoCredentials { .. } => "NoCredentials",
            StsError::CallerIdentity { .. } => "CallerIdentity",
            StsError::NotAnsweredYet { .. } => "ServiceUnavailable",
        }
    }

    /// What this failure says about STS (see [`FailureKind`]).
    pub fn kind(&self) -> FailureKind {
        match self {
            StsError::AssumeRole {
                code, http_status, ..
            } => {
                if THROTTLING_CODES.contains(&code.as_str()) || *http_status == Some(429) {
                    FailureKind::Throttled
                } else if UNAVAILABLE_CODES.contains(&code.as_str())
                    || http_status.is_some_and(|s| s >= 500)
                {
                    FailureKind::Unavailable
                } else {
                    FailureKind::Refused
                }
            }
            StsError::NoCredentials { .. } => FailureKind::Refused,
            StsError::CallerIdentity { .. } | StsError::NotAnsweredYet { .. } => {
                FailureKind::Unavailable
            }
        }
    }
}

/// Something that can assume roles: STS itself, or a test double.
pub trait AssumeRole: Send + Sync + 'static {
    fn assume_role(
        &self,
        request: &AssumeRoleRequest,
    ) -> impl Future<Output = Result<IssuedCredentials, StsError>> + Send;

    /// A cheap call that succeeds whenever STS answers the proxy at all
    /// (GetCallerIdentity: no permission needed, same credentials and
    /// endpoint as AssumeRole). It tells an STS outage from a refusal of one
    /// role; the cache calls it only while some role waits for STS.
    fn probe(&self) -> impl Future<Output = Result<(), StsError>> + Send;
}

/// Where and how to reach STS.
#[derive(Debug, Clone, Default)]
pub struct StsSettings {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// Fixed credentials for the STS calls (tests against moto); when unset,
    /// the SDK's default chain (environment, then the host's instance profile).
    pub static_credentials: Option<(String, Secret)>,
    /// Time limit of one STS call, retries included.
    pub operation_timeout: Duration,
}

/// The real STS client.
#[derive(Clone, Debug)]
pub struct AwsSts {
    client: aws_sdk_sts::Client,
}

impl AwsSts {
    pub async fn new(settings: &StsSettings) -> Self {
        let region = RegionProviderChain::first_try(settings.region.clone().map(Region::new))
            .or_default_provider()
            .or_else(Region::new("us-east-1"));
        let timeout = if settings.operation_timeout.is_zero() {
            Duration::from_secs(10)
        } else {
            settings.operation_timeout
        };
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(region)
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(2))
                    .operation_timeout(timeout)
                    .build(),
            )
            // The cache backs off with jitter itself; the SDK retries once.
            .retry_config(RetryConfig::standard().with_max_attempts(2));
        if let Some(endpoint) = &settings.endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        if let Some((key, secret)) = &settings.static_credentials {
            loader = loader.credentials_provider(Credentials::new(
                key,
                secret.expose_secret(),
                None,
                None,
                "bastion-static",
            ));
        }
        let config = loader.load().await;
        Self {
            client: aws_sdk_sts::Client::new(&config),
        }
    }

    /// The proxy's own identity: (account, ARN). Role names without an
    /// ARN are resolved in that account when the config names none; the
    /// call also warms the client up before the first container asks.
    pub async fn caller_identity(&self) -> Result<(String, String), StsError> {
        let out = self
            .client
            .get_caller_identity()
            .send()
            .await
            .map_err(|e| StsError::CallerIdentity {
                message: DisplayErrorContext(&e).to_string(),
            })?;
        let account = out.account().ok_or(StsError::CallerIdentity {
            message: "the answer carried no account".into(),
        })?;
        Ok((account.to_owned(), out.arn().unwrap_or_default().to_owned()))
    }
}

impl AssumeRole for AwsSts {
    async fn assume_role(
        &self,
        request: &AssumeRoleRequest,
    ) -> Result<IssuedCredentials, StsError> {
        let duration = i32::try_from(request.duration.as_secs()).unwrap_or(3600);
        let mut call = self
            .client
            .assume_role()
            .role_arn(&request.role_arn)
            .role_session_name(&request.session_name)
            .source_identity(&request.session_name)
            .duration_seconds(duration)
            .set_external_id(request.external_id.clone());
        for (key, value) in &request.tags {
            let tag =
                Tag::builder()
                    .key(key)
                    .value(value)
                    .build()
                    .map_err(|e| StsError::AssumeRole {
                        role_arn: request.role_arn.clone(),
                        code: "InvalidTag".into(),
                        message: e.to_string(),
                        request_id: None,
                        http_status: None,
                    })?;
            call = call.tags(tag);
        }
        let out = call.send().await.map_err(|e| {
            let (code, message) = match e.as_service_error() {
                Some(service) => (
                    service.code().unwrap_or("Unknown").to_owned(),
                    service.message().unwrap_or_default().to_owned(),
                ),
                None => (
                    "Unreachable".to_owned(),
                    DisplayErrorContext(&e).to_string(),
                ),
            };
            StsError::AssumeRole {
                role_arn: request.role_arn.clone(),
                code,
                message,
                request_id: e.request_id().map(str::to_owned),
                http_status: e.raw_response().map(|r| r.status().as_u16()),
            }
        })?;
        let creds = out.credentials().ok_or_else(|| StsError::NoCredentials {
            role_arn: request.role_arn.clone(),
        })?;
        let expiration =
            SystemTime::try_from(*creds.expiration()).map_err(|_| StsError::NoCredentials {
                role_arn: request.role_arn.clone(),
            })?;
        Ok(IssuedCredentials {
            access_key_id: creds.access_key_id().to_owned(),
            secret_access_key: Secret::from(creds.secret_access_key()),
            session_token: Secret::from(creds.session_token()),
            expiration,
            issued_at: SystemTime::now(),
            assumed_role_arn: out.assumed_role_user().map(|u| u.arn().to_owned()),
            request_id: out.request_id().map(str::to_owned),
        })
    }

    async fn probe(&self) -> Result<(), StsError> {
        self.caller_identity().await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(code: &str, http_status: Option<u16>) -> StsError {
        StsError::AssumeRole {
            role_arn: "arn:aws:iam::123456789012:role/dev".into(),
            code: code.into(),
            message: "m".into(),
            request_id: None,
            http_status,
        }
    }

    #[test]
    fn failures_say_whether_sts_or_the_role_is_at_fault() {
        use FailureKind::*;
        for (code, status, kind) in [
            // No answer, or STS itself failing: over when STS answers.
            ("Unreachable", None, Unavailable),
            ("InternalFailure", Some(500), Unavailable),
            ("ServiceUnavailable", Some(503), Unavailable),
            ("Unknown", Some(502), Unavailable),
            ("SomethingNew", Some(504), Unavailable),
            // The proxy's own credentials: GetCallerIdentity fails alike.
            ("InvalidClientTokenId", Some(403), Unavailable),
            ("ExpiredToken", Some(400), Unavailable),
            // Slow down.
            ("Throttling", Some(400), Throttled),
            ("RequestLimitExceeded", Some(400), Throttled),
            ("SomethingNew", Some(429), Throttled),
            // STS answered about this role.
            ("AccessDenied", Some(403), Refused),
            ("ValidationError", Some(400), Refused),
            ("RegionDisabledException", Some(403), Refused),
            ("SomethingNew", Some(400), Refused),
        ] {
            assert_eq!(failed(code, status).kind(), kind, "{code} {status:?}");
        }
        let none = StsError::NoCredentials {
            role_arn: "arn:aws:iam::123456789012:role/dev".into(),
        };
        assert_eq!(none.kind(), Refused);
        let waiting = StsError::NotAnsweredYet {
            role_arn: "arn:aws:iam::123456789012:role/dev".into(),
            waited: Duration::from_secs(5),
        };
        assert_eq!(waiting.kind(), Unavailable);
        assert_eq!(waiting.code(), "ServiceUnavailable");
        assert!(waiting.to_string().contains("5000 ms"), "{waiting}");
    }
}
