//! bastion-metadata-proxy: answers user containers' calls to the EC2
//! instance metadata service (169.254.169.254) and the container-credentials
//! endpoint (169.254.170.2) with STS credentials for that container's role
//! only (docs/ARCHITECTURE.md, "A credential request").
//!
//! A request's path, step by step:
//! - [`metadata_api`]: the HTTP API containers see: strict parsing, Host
//!   checks, routing to the two endpoints, [`imds`] (IMDSv1/v2 tokens,
//!   listings, the caller's role, the passthrough allow-list) and
//!   [`container_credentials`];
//! - [`containers`]: resolve the container (source IP → container, from the
//!   Docker Engine);
//! - [`role_session`]: resolve its role session (role, AssumeRole request);
//! - [`hand_out`]: credentials from the cache, audited ([`audit_events`]);
//!   the endpoints render them.
//! - [`credential_cache`]: per-role-session cache, single-flight STS calls,
//!   background refresh, back-off.
//! - [`sts`]: AssumeRole through aws-sdk-sts.
//! - [`server`]: listeners, wiring and graceful shutdown.
#![forbid(unsafe_code)]

pub mod admin;
pub mod audit_events;
pub mod connection_limit;
pub mod container_credentials;
pub mod containers;
pub mod credential_cache;
pub mod hand_out;
pub mod imds;
pub mod imds_token;
pub mod metadata_api;
pub mod metrics;
pub mod passthrough;
pub use bastion_core::iam_role as role;
pub mod role_session;
pub mod secret;
pub mod server;
pub use bastion_core::session_name;
pub mod sts;
