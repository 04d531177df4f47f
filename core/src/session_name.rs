//! STS RoleSessionName / SourceIdentity from a user name: the proxy asks
//! STS for it, and the access file's IAM trust policies require it.
//!
//! STS allows 2–64 characters of `[\w+=,.@-]`. The mapping must be
//! injective (two users never share a session name, or they would share
//! credentials and CloudTrail identity), so it is an escape encoding:
//! - ASCII letters, digits and `_+,.@-` stay as they are;
//! - every other byte, `=` included, becomes `=XX` (uppercase hex), so in
//!   an encoded name a `=` is always followed by two hex digits;
//! - a 1-character result gets a bare `=` appended (impossible otherwise);
//! - a result longer than 64 keeps its first 38 characters, then `==`
//!   (impossible otherwise) and 24 hex digits of the name's SHA-256.

use sha2::{Digest, Sha256};

const MAX: usize = 64;
const KEEP_WHEN_LONG: usize = 38;
const HASH_HEX: usize = 24;

/// The session name (and source identity) of `user`.
pub fn session_name(user: &str) -> String {
    let mut out = String::with_capacity(user.len());
    for b in user.bytes() {
        if b.is_ascii_alphanumeric() || b"_+,.@-".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("={b:02X}"));
        }
    }
    while out.len() < 2 {
        out.push('=');
    }
    if out.len() > MAX {
        let digest = hex::encode(Sha256::digest(user.as_bytes()));
        out.truncate(KEEP_WHEN_LONG);
        out.push_str("==");
        out.push_str(&digest[..HASH_HEX]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn valid(name: &str) -> bool {
        (2..=64).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_+=,.@-".contains(&b))
            && !name.starts_with("aws:")
    }

    #[test]
    fn ordinary_user_names_are_kept() {
        assert_eq!(session_name("alice"), "alice");
        assert_eq!(session_name("bob.smith-2"), "bob.smith-2");
        assert_eq!(session_name("svc_deploy@corp"), "svc_deploy@corp");
    }

    #[test]
    fn other_bytes_are_escaped_and_short_names_padded() {
        assert_eq!(session_name("a"), "a=");
        assert_eq!(session_name("a="), "a=3D");
        assert_eq!(session_name("joe$"), "joe=24");
        assert_eq!(session_name("aws:x"), "aws=3Ax");
        assert_eq!(session_name("zoë"), "zo=C3=AB");
        assert_eq!(session_name(""), "==");
    }

    #[test]
    fn long_names_are_cut_with_a_hash_and_stay_distinct() {
        let a = "x".repeat(100);
        let b = format!("{}y", "x".repeat(99));
        let (sa, sb) = (session_name(&a), session_name(&b));
        assert_eq!(sa.len(), 64);
        assert_ne!(sa, sb);
        assert_eq!(&sa[38..40], "==");
    }

    #[test]
    fn results_are_valid_and_collision_free_on_tricky_inputs() {
        let mut inputs: Vec<String> = vec![
            "a", "a=", "a==", "a=3D", "a=3d", "=", "==", "", "a$", "a=24", "ab", "a b", "a=20",
            "A", "a.", "é", "=C3=A9", "aws:", "aws=3A",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        for n in 30..70 {
            inputs.push("u".repeat(n));
            inputs.push(format!("{}$", "u".repeat(n)));
            inputs.push(format!("{}=24", "u".repeat(n)));
        }
        let mut seen: HashMap<String, String> = HashMap::new();
        for input in inputs {
            let name = session_name(&input);
            assert!(valid(&name), "{input:?} -> {name:?}");
            if let Some(other) = seen.insert(name.clone(), input.clone()) {
                panic!("{input:?} and {other:?} both map to {name:?}");
            }
        }
    }
}
