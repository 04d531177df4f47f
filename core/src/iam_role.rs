//! IAM role names and ARNs: from a container's `bastion.role` label (or
//! an access file's `role`) to the role to assume, refusing what STS would.

/// The role a container may use: its ARN and the name IMDS lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    pub arn: String,
    /// The last component of the ARN's resource: what
    /// `iam/security-credentials/` lists and SDKs ask for.
    pub name: String,
    pub account_id: String,
}

/// Why a `bastion.role` label gives no role.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoleError {
    #[error("role label {label:?} is not an IAM role ARN (arn:PARTITION:iam::ACCOUNT:role/NAME)")]
    BadArn { label: String },
    #[error(
        "role label {label:?} is not a valid IAM role name (1-64 characters of letters, digits and +=,.@_-)"
    )]
    BadName { label: String },
}

/// How role names are turned into ARNs (from `[metadata_proxy]`).
#[derive(Debug, Clone)]
pub struct RoleNaming {
    pub partition: String,
    pub account_id: String,
    pub prefix: String,
}

impl RoleNaming {
    /// A full ARN is taken as is; a name becomes
    /// `arn:<partition>:iam::<account>:role/<prefix><name>`.
    pub fn resolve(&self, label: &str) -> Result<Role, RoleError> {
        if label.starts_with("arn:") {
            return parse_arn(label);
        }
        let name_ok = (1..=64).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b));
        if !name_ok {
            return Err(RoleError::BadName {
                label: label.to_owned(),
            });
        }
        parse_arn(&format!(
            "arn:{}:iam::{}:role/{}{}",
            self.partition, self.account_id, self.prefix, label
        ))
        .map_err(|_| RoleError::BadName {
            label: label.to_owned(),
        })
    }
}

/// A role ARN as STS accepts it (`arn:PARTITION:iam::ACCOUNT:role/[PATH/]NAME`).
pub fn parse_arn(arn: &str) -> Result<Role, RoleError> {
    let bad = || RoleError::BadArn {
        label: arn.to_owned(),
    };
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let [_, partition, service, region, account, resource] = parts[..] else {
        return Err(bad());
    };
    let path_and_name = resource.strip_prefix("role/").ok_or_else(bad)?;
    let name = path_and_name.rsplit('/').next().unwrap_or_default();
    let ok = !partition.is_empty()
        && service == "iam"
        && region.is_empty()
        && account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && (1..=64).contains(&name.len())
        && path_and_name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-/".contains(&b));
    if !ok {
        return Err(bad());
    }
    Ok(Role {
        arn: arn.to_owned(),
        name: name.to_owned(),
        account_id: account.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naming(prefix: &str) -> RoleNaming {
        RoleNaming {
            partition: "aws".into(),
            account_id: "123456789012".into(),
            prefix: prefix.into(),
        }
    }

    #[test]
    fn names_become_arns_with_the_prefix() {
        let role = naming("bastion-").resolve("alice").unwrap();
        assert_eq!(role.arn, "arn:aws:iam::123456789012:role/bastion-alice");
        assert_eq!(role.name, "bastion-alice");
        let role = naming("bastion/").resolve("sre").unwrap();
        assert_eq!(role.arn, "arn:aws:iam::123456789012:role/bastion/sre");
        assert_eq!(role.name, "sre");
    }

    #[test]
    fn arns_are_used_as_is() {
        let role = naming("ignored-")
            .resolve("arn:aws:iam::210987654321:role/team/dev")
            .unwrap();
        assert_eq!(role.arn, "arn:aws:iam::210987654321:role/team/dev");
        assert_eq!(role.name, "dev");
        assert_eq!(role.account_id, "210987654321");
    }

    #[test]
    fn malformed_labels_are_refused() {
        for label in [
            "arn:aws:iam::123:role/x",
            "arn:aws:s3:::bucket",
            "arn:aws:iam::123456789012:user/x",
            "arn:aws:iam::123456789012:role/",
        ] {
            assert!(
                matches!(naming("").resolve(label), Err(RoleError::BadArn { .. })),
                "{label}"
            );
        }
        for label in ["", "a b", "x/y", &"r".repeat(65)] {
            assert!(
                matches!(naming("").resolve(label), Err(RoleError::BadName { .. })),
                "{label}"
            );
        }
    }
}
