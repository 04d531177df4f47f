//! `bastionctl access apply --iam`: each enabled user's IAM role made to
//! match the access file through the IAM API (the AWS SDK for Rust; the
//! endpoint can be overridden, as the tests do with moto's IAM). A
//! missing role is created with its trust policy, path, session length and
//! tag; an existing one gets its trust policy replaced when it differs.
//! Nothing else of a role is touched: what it may do in AWS is ops' to
//! attach, and roles of removed users are left for ops to delete (the
//! bastion no longer assumes them).

use aws_sdk_iam::Client;
use aws_sdk_iam::error::ProvideErrorMetadata;
use aws_sdk_iam::types::Tag;
use serde_json::Value;

use super::AccessFile;
use super::render::iam::{MAX_SESSION_SECONDS, UserRole, user_roles};
use crate::config::Config;

/// What was done to one role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoleChange {
    Created { user: String, arn: String },
    TrustUpdated { user: String, arn: String },
}

/// Why the roles could not be brought up to date.
#[derive(Debug, thiserror::Error)]
pub enum IamError {
    #[error("cannot work out the users' roles: {0}")]
    Roles(String),
    #[error("IAM {action} of role {role} failed: {code}: {message}")]
    Api {
        action: &'static str,
        role: String,
        code: String,
        message: String,
    },
    #[error("IAM returned a trust policy for {role} that is not JSON: {detail}")]
    BadPolicy { role: String, detail: String },
}

/// An IAM client from the default credential chain, at `endpoint` when
/// given (else the SDK's: `AWS_ENDPOINT_URL_IAM`, then AWS's).
pub async fn client(endpoint: Option<&str>) -> Client {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(endpoint) = endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    // IAM is global; its signing region is us-east-1 in the aws partition.
    let config = loader
        .region(aws_config::Region::new("us-east-1"))
        .load()
        .await;
    Client::new(&config)
}

fn api_error<E: ProvideErrorMetadata>(action: &'static str, role: &str, e: &E) -> IamError {
    IamError::Api {
        action,
        role: role.to_owned(),
        code: e.code().unwrap_or("unknown").to_owned(),
        message: e.message().unwrap_or("no message").to_owned(),
    }
}

/// What `sync` would change, without changing it (for `plan --iam`).
pub async fn pending(
    client: &Client,
    access: &AccessFile,
    config: &Config,
) -> Result<Vec<RoleChange>, IamError> {
    let mut changes = Vec::new();
    for role in user_roles(access, config).map_err(|e| IamError::Roles(e.to_string()))? {
        if let Some(change) = needed(client, &role).await? {
            changes.push(change);
        }
    }
    Ok(changes)
}

/// Brings every enabled user's role up to date; returns what changed.
pub async fn sync(
    client: &Client,
    access: &AccessFile,
    config: &Config,
) -> Result<Vec<RoleChange>, IamError> {
    let mut done = Vec::new();
    for role in user_roles(access, config).map_err(|e| IamError::Roles(e.to_string()))? {
        let Some(change) = needed(client, &role).await? else {
            continue;
        };
        let trust = role.trust_policy.to_string();
        let name = &role.role.name;
        match &change {
            RoleChange::Created { .. } => {
                client
                    .create_role()
                    .role_name(name)
                    .path(&role.path)
                    .assume_role_policy_document(trust)
                    .max_session_duration(MAX_SESSION_SECONDS as i32)
                    .description(format!("bastion: {}'s role (access file)", role.user))
                    .tags(
                        Tag::builder()
                            .key("bastion:user")
                            .value(&role.user)
                            .build()
                            .expect("a tag has key and value"),
                    )
                    .send()
                    .await
                    .map_err(|e| api_error("CreateRole", name, &e))?;
            }
            RoleChange::TrustUpdated { .. } => {
                client
                    .update_assume_role_policy()
                    .role_name(name)
                    .policy_document(trust)
                    .send()
                    .await
                    .map_err(|e| api_error("UpdateAssumeRolePolicy", name, &e))?;
            }
        }
        done.push(change);
    }
    Ok(done)
}

/// What `role` needs: nothing, creating, or a new trust policy.
async fn needed(client: &Client, role: &UserRole) -> Result<Option<RoleChange>, IamError> {
    let name = &role.role.name;
    let found = match client.get_role().role_name(name).send().await {
        Ok(found) => found,
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_no_such_entity_exception()) =>
        {
            return Ok(Some(RoleChange::Created {
                user: role.user.clone(),
                arn: role.role.arn.clone(),
            }));
        }
        Err(e) => return Err(api_error("GetRole", name, &e)),
    };
    let document = found
        .role()
        .and_then(|r| r.assume_role_policy_document())
        .unwrap_or_default();
    // IAM returns the document URL-encoded.
    let decoded = percent_decode(document);
    let current: Value = serde_json::from_str(&decoded).map_err(|e| IamError::BadPolicy {
        role: name.clone(),
        detail: e.to_string(),
    })?;
    Ok(
        (current != role.trust_policy).then(|| RoleChange::TrustUpdated {
            user: role.user.clone(),
            arn: role.role.arn.clone(),
        }),
    )
}

/// IAM's policy documents come URL-encoded.
fn percent_decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iam_documents_are_url_decoded() {
        assert_eq!(percent_decode("%7B%22a%22%3A1%7D"), "{\"a\":1}");
        assert_eq!(percent_decode("{\"a\":1}"), "{\"a\":1}");
        assert_eq!(percent_decode("100%"), "100%");
    }
}
