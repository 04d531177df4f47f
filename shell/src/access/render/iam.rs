//! Each user's IAM role, as `apply --iam` creates it: trusted by the
//! bastion's own role only, only with the user as the source identity
//! (the metadata proxy sets it to the user's session name), and allowed
//! session tags. What the role may do in AWS is ops' to attach; bastion
//! manages only its trust.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::RenderError;
use crate::access::{AccessFile, User};
use crate::config::Config;
use crate::iam_role::Role;
use crate::session_name::session_name;

/// STS's cap for role chaining (the proxy's credentials come from the
/// bastion's role): longer sessions are refused.
pub const MAX_SESSION_SECONDS: u32 = 3600;

/// A user's role as the IAM API creates it.
#[derive(Debug, Clone, PartialEq)]
pub struct UserRole {
    pub user: String,
    pub role: Role,
    /// The IAM path (`/` or `/team/`).
    pub path: String,
    pub trust_policy: Value,
}

/// The trust policy of `user`'s role.
pub fn trust_policy(bastion_role: &str, user: &User) -> Value {
    json!({
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "BastionAssumesAsTheUser",
                "Effect": "Allow",
                "Principal": { "AWS": bastion_role },
                "Action": ["sts:AssumeRole", "sts:SetSourceIdentity"],
                "Condition": {
                    "StringEquals": { "sts:SourceIdentity": session_name(&user.name) }
                }
            },
            {
                "Sid": "BastionTagsTheSession",
                "Effect": "Allow",
                "Principal": { "AWS": bastion_role },
                "Action": "sts:TagSession"
            }
        ]
    })
}

/// The roles of the enabled users, in file order.
pub fn user_roles(access: &AccessFile, config: &Config) -> Result<Vec<UserRole>, RenderError> {
    let bastion_role = access.aws.bastion_role.as_deref().ok_or_else(|| {
        RenderError::Invalid(
            "set aws.bastion_role (the bastion host's own role, the only principal users' roles trust)"
                .to_owned(),
        )
    })?;
    access
        .enabled_users()
        .map(|user| {
            let role = access
                .effective_role(config, user)
                .map_err(|e| RenderError::Invalid(format!("user {}: {e}", user.name)))?;
            Ok(UserRole {
                user: user.name.clone(),
                path: path_of(&role.arn),
                trust_policy: trust_policy(bastion_role, user),
                role,
            })
        })
        .collect()
}

/// `/team/` of `arn:…:role/team/name`; `/` without a path.
pub fn path_of(arn: &str) -> String {
    let resource = arn.split_once(":role/").map_or("", |(_, r)| r);
    match resource.rsplit_once('/') {
        Some((path, _)) => format!("/{path}/"),
        None => "/".to_owned(),
    }
}

/// `_iam/`: `users/USER.json` per user's role, and the bastion role's policy.
pub fn render(
    access: &AccessFile,
    config: &Config,
) -> Result<BTreeMap<String, String>, RenderError> {
    let roles = user_roles(access, config)?;
    let mut out = BTreeMap::new();
    for role in &roles {
        let doc = json!({
            "RoleName": role.role.name,
            "Path": role.path,
            "MaxSessionDuration": MAX_SESSION_SECONDS,
            "AssumeRolePolicyDocument": role.trust_policy,
            "Tags": [{ "Key": "bastion:user", "Value": role.user }],
        });
        out.insert(format!("users/{}.json", role.user), pretty(&doc));
    }
    let arns: Vec<&str> = roles.iter().map(|r| r.role.arn.as_str()).collect();
    let host_policy = json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "AssumeTheUsersRoles",
            "Effect": "Allow",
            "Action": ["sts:AssumeRole", "sts:SetSourceIdentity", "sts:TagSession"],
            "Resource": arns,
        }]
    });
    out.insert("bastion-host-policy.json".to_owned(), pretty(&host_policy));
    Ok(out)
}

fn pretty(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(value).expect("policy serializes");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_iam_path_is_kept() {
        assert_eq!(path_of("arn:aws:iam::123456789012:role/bastion-alice"), "/");
        assert_eq!(
            path_of("arn:aws:iam::123456789012:role/team/a/alice"),
            "/team/a/"
        );
    }
}
