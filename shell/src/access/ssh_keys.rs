//! Users' SSH public keys: parsed with the `ssh-key` crate, so a key that
//! sshd would not read (a typo, a private key, options, a second line) is
//! an error in `check`, not a silent lock-out at login.

use ssh_key::{HashAlg, PublicKey};

/// Why a key line is not one public key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("is a private key; list the public key (the .pub file)")]
    Private,
    #[error("must be one line (no control characters)")]
    NotOneLine,
    #[error("is not an OpenSSH public key (`TYPE BASE64 [comment]`, no options): {reason}")]
    Unreadable { reason: String },
}

/// A checked public key: what goes into authorized_keys, and its
/// fingerprint (what sshd logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedKey {
    /// `TYPE BASE64 comment`, re-encoded from the parsed key.
    pub line: String,
    /// `SHA256:…`, as `ssh-keygen -l` shows it.
    pub fingerprint: String,
}

/// Parses one key line as written in the access file.
pub fn check_key(text: &str) -> Result<CheckedKey, KeyError> {
    if text.contains("PRIVATE KEY") {
        return Err(KeyError::Private);
    }
    if text.chars().any(char::is_control) {
        return Err(KeyError::NotOneLine);
    }
    let key = PublicKey::from_openssh(text.trim()).map_err(|e| KeyError::Unreadable {
        reason: e.to_string(),
    })?;
    let line = key.to_openssh().map_err(|e| KeyError::Unreadable {
        reason: e.to_string(),
    })?;
    Ok(CheckedKey {
        line,
        fingerprint: key.fingerprint(HashAlg::Sha256).to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::access::test_keys::ALICE as ED25519;

    #[test]
    fn a_public_key_is_read_with_its_fingerprint() {
        let key = check_key(ED25519).unwrap();
        assert_eq!(key.line, ED25519);
        assert!(
            key.fingerprint.starts_with("SHA256:"),
            "{}",
            key.fingerprint
        );
    }

    #[test]
    fn what_sshd_would_not_read_is_refused() {
        for bad in [
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICTIDQrAlg/lQn+Jmzm0wxB9I8SX+dJbDqJ7qoYvuY9 alice",
            "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAICTIDQrAlg/lQn+Jmzm0wxB9I8SX+dJbDqJ7qoYvuY9B alice",
            "command=\"/bin/sh\" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICTIDQrAlg/lQn+Jmzm0wxB9I8SX+dJbDqJ7qoYvuY9B",
            "ssh-ed25519",
            "",
        ] {
            assert!(
                matches!(check_key(bad), Err(KeyError::Unreadable { .. })),
                "{bad}"
            );
        }
        assert_eq!(
            check_key(&format!("{ED25519}\n{ED25519}")),
            Err(KeyError::NotOneLine)
        );
        assert_eq!(
            check_key("-----BEGIN OPENSSH PRIVATE KEY-----"),
            Err(KeyError::Private)
        );
    }
}
