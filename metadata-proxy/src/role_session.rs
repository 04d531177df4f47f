//! A container's role session: from its `bastion.role` label and its user
//! to the role, the AssumeRole request (session name and SourceIdentity
//! from the user, session tags, external id, duration) and the cache key.
//! Resolved once per container (kept on its directory entry).

use std::time::Duration;

use crate::credential_cache::CacheKey;
use crate::role::{Role, RoleNaming};
use crate::session_name::session_name;
use crate::sts::AssumeRoleRequest;

/// How AssumeRole requests are built for a container.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    pub naming: RoleNaming,
    pub external_id: Option<String>,
    pub duration: Duration,
    pub tags: bool,
}

impl SessionSettings {
    /// The role session of `user`'s container `container`, whose role
    /// label is `role_label`; `None` when it has no (valid) role label
    /// (logged: callers resolve once per container, see
    /// [`crate::containers::ContainerIdentity::role_session`]).
    pub fn resolve(
        &self,
        role_label: Option<&str>,
        user: &str,
        container: &str,
    ) -> Option<ResolvedSession> {
        let role = match self.naming.resolve(role_label?) {
            Ok(role) => role,
            Err(error) => {
                tracing::warn!(container, %error, "container has an unusable role label: it gets no credentials");
                return None;
            }
        };
        let tags = if self.tags {
            vec![
                ("bastion-user".to_owned(), tag_value(user)),
                ("bastion-container".to_owned(), tag_value(container)),
            ]
        } else {
            Vec::new()
        };
        let request = AssumeRoleRequest {
            user: user.to_owned(),
            container: container.to_owned(),
            role_arn: role.arn.clone(),
            session_name: session_name(user),
            external_id: self.external_id.clone(),
            duration: self.duration,
            tags,
        };
        Some(ResolvedSession {
            key: CacheKey::of(&request),
            role,
            request,
        })
    }
}

/// A container's role and AssumeRole request, resolved once per container
/// (kept on its [`crate::containers::ContainerIdentity`]): the hot path
/// allocates nothing.
#[derive(Debug)]
pub struct ResolvedSession {
    pub role: Role,
    pub request: AssumeRoleRequest,
    pub key: CacheKey,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(tags: bool) -> SessionSettings {
        SessionSettings {
            naming: RoleNaming {
                partition: "aws".into(),
                account_id: "123456789012".into(),
                prefix: String::new(),
            },
            external_id: None,
            duration: Duration::from_secs(3600),
            tags,
        }
    }

    #[test]
    fn a_role_session_names_the_user_and_tags_the_container() {
        let s = settings(true)
            .resolve(Some("dev"), "alice", "bastion-alice")
            .unwrap();
        assert_eq!(s.role.arn, "arn:aws:iam::123456789012:role/dev");
        assert_eq!(s.request.session_name, session_name("alice"));
        assert_eq!(
            s.request.tags,
            [
                ("bastion-user".to_owned(), "alice".to_owned()),
                ("bastion-container".to_owned(), "bastion-alice".to_owned()),
            ]
        );
        assert!(
            settings(false)
                .resolve(Some("dev"), "a", "c")
                .unwrap()
                .request
                .tags
                .is_empty()
        );
        assert!(
            settings(true)
                .resolve(None, "alice", "bastion-alice")
                .is_none()
        );
    }

    #[test]
    fn tag_values_keep_only_what_sts_allows() {
        assert_eq!(tag_value("a b_c.d:e/f=g+h-i@j"), "a b_c.d:e/f=g+h-i@j");
        assert_eq!(tag_value("x\ny;z"), "x_y_z");
        assert_eq!(tag_value(&"a".repeat(300)).len(), 256);
    }
}
