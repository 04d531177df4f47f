//! Who is calling: the uid from SO_PEERCRED, mapped to a user name and
//! groups through the system's user database (NSS). Never a name from the
//! request.

use std::ffi::OsStr;

/// A caller, as the host knows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<String>,
}

/// Why a uid could not be mapped to a usable identity.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    #[error("uid {uid} has no entry in the user database")]
    UnknownUid { uid: u32 },
    #[error("user name of uid {uid} is not a valid bastion user name: {name:?}")]
    BadName { uid: u32, name: String },
}

/// Looks up `uid` (blocking: NSS may do I/O).
pub fn lookup(uid: u32) -> Result<Identity, IdentityError> {
    let user = uzers::get_user_by_uid(uid).ok_or(IdentityError::UnknownUid { uid })?;
    let name = user
        .name()
        .to_str()
        .map(str::to_owned)
        .ok_or_else(|| IdentityError::BadName {
            uid,
            name: user.name().to_string_lossy().into_owned(),
        })?;
    if !valid_user_name(&name) {
        return Err(IdentityError::BadName { uid, name });
    }
    let gid = user.primary_group_id();
    let groups = uzers::get_user_groups(OsStr::new(&name), gid)
        .unwrap_or_default()
        .iter()
        .filter_map(|g| g.name().to_str().map(str::to_owned))
        .collect();
    Ok(Identity {
        name,
        uid,
        gid,
        groups,
    })
}

/// Names that are safe in a container name, a hostname, a path component
/// and an STS session name: `[a-z_][a-z0-9_.-]*`, at most 32 characters.
pub fn valid_user_name(name: &str) -> bool {
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    name.len() <= 32
        && (first.is_ascii_lowercase() || first == '_')
        && chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_that_are_safe_everywhere() {
        for ok in ["alice", "bob-2", "svc_ci", "j.doe", "_x"] {
            assert!(valid_user_name(ok), "{ok}");
        }
        for bad in [
            "",
            "Alice",
            "../etc",
            "a/b",
            "1abc",
            "a b",
            "x$",
            &"a".repeat(33),
        ] {
            assert!(!valid_user_name(bad), "{bad}");
        }
    }

    #[test]
    fn root_is_found_by_uid() {
        let root = lookup(0).unwrap();
        assert_eq!(root.name, "root");
        assert_eq!(root.gid, 0);
        assert!(root.groups.contains(&"root".to_owned()));
    }

    #[test]
    fn an_unknown_uid_is_an_error() {
        assert_eq!(
            lookup(4_000_000_000),
            Err(IdentityError::UnknownUid { uid: 4_000_000_000 })
        );
    }
}
