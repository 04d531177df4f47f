//! IMDSv2 session tokens, bound to the container that asked for them.
//!
//! A token is `<expiry unix seconds, hex>.<HMAC-SHA256(key, container id,
//! expiry), hex>` under a key drawn at start-up. Nothing is stored per token
//! (a container cannot exhaust memory with PUTs), a token minted for one
//! container fails for any other, and a restart invalidates all tokens
//! (SDKs then fetch a new one: 401 is retried).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::secret::Secret;

/// Largest TTL IMDS accepts (6 hours).
pub const MAX_TTL_SECONDS: u32 = 21_600;

/// Why a TTL header or a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("X-aws-ec2-metadata-token-ttl-seconds is missing")]
    MissingTtl,
    #[error("X-aws-ec2-metadata-token-ttl-seconds must be a whole number from 1 to 21600")]
    BadTtl,
    #[error("the IMDSv2 token is malformed or was not issued to this container")]
    Invalid,
    #[error("the IMDSv2 token has expired")]
    Expired,
}

/// Parses `X-aws-ec2-metadata-token-ttl-seconds`.
pub fn parse_ttl(header: Option<&[u8]>) -> Result<u32, TokenError> {
    let raw = header.ok_or(TokenError::MissingTtl)?;
    let text = std::str::from_utf8(raw).map_err(|_| TokenError::BadTtl)?;
    if text.is_empty() || text.len() > 5 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TokenError::BadTtl);
    }
    let ttl: u32 = text.parse().map_err(|_| TokenError::BadTtl)?;
    if (1..=MAX_TTL_SECONDS).contains(&ttl) {
        Ok(ttl)
    } else {
        Err(TokenError::BadTtl)
    }
}

/// Mints and checks tokens.
pub struct TokenIssuer {
    key: [u8; 32],
}

impl TokenIssuer {
    /// An issuer with a fresh random key.
    pub fn random() -> Self {
        Self {
            key: rand::random(),
        }
    }

    fn mac(&self, container_id: &str, expiry: u64) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key size");
        mac.update(container_id.as_bytes());
        mac.update(&[0]);
        mac.update(&expiry.to_be_bytes());
        mac
    }

    /// A token for `container_id`, valid `ttl_seconds` from `now`.
    pub fn issue(&self, container_id: &str, ttl_seconds: u32, now: SystemTime) -> Secret {
        let expiry = unix(now) + u64::from(ttl_seconds);
        let tag = self.mac(container_id, expiry).finalize().into_bytes();
        Secret::from(format!("{expiry:x}.{}", hex::encode(tag)))
    }

    /// Whether `token` was issued to `container_id` and is still valid.
    pub fn verify(
        &self,
        token: &[u8],
        container_id: &str,
        now: SystemTime,
    ) -> Result<(), TokenError> {
        let text = std::str::from_utf8(token).map_err(|_| TokenError::Invalid)?;
        let (expiry_hex, tag_hex) = text.split_once('.').ok_or(TokenError::Invalid)?;
        if expiry_hex.is_empty() || expiry_hex.len() > 16 {
            return Err(TokenError::Invalid);
        }
        let expiry = u64::from_str_radix(expiry_hex, 16).map_err(|_| TokenError::Invalid)?;
        let tag = hex::decode(tag_hex).map_err(|_| TokenError::Invalid)?;
        // Constant-time comparison inside verify_slice.
        self.mac(container_id, expiry)
            .verify_slice(&tag)
            .map_err(|_| TokenError::Invalid)?;
        if unix(now) >= expiry {
            return Err(TokenError::Expired);
        }
        Ok(())
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::ExposeSecret;

    #[test]
    fn ttl_must_be_1_to_21600() {
        assert_eq!(parse_ttl(Some(b"21600")), Ok(21600));
        assert_eq!(parse_ttl(Some(b"1")), Ok(1));
        assert_eq!(parse_ttl(None), Err(TokenError::MissingTtl));
        for bad in [
            &b"0"[..],
            b"21601",
            b"",
            b"-5",
            b"10s",
            b" 60",
            b"99999999999",
            b"1.5",
        ] {
            assert_eq!(parse_ttl(Some(bad)), Err(TokenError::BadTtl), "{bad:?}");
        }
    }

    #[test]
    fn a_token_works_for_its_container_only_and_until_it_expires() {
        let issuer = TokenIssuer::random();
        let now = SystemTime::now();
        let token = issuer.issue("container-a", 60, now);
        let bytes = token.expose_secret().as_bytes();
        assert_eq!(issuer.verify(bytes, "container-a", now), Ok(()));
        assert_eq!(
            issuer.verify(bytes, "container-b", now),
            Err(TokenError::Invalid)
        );
        assert_eq!(
            issuer.verify(bytes, "container-a", now + Duration::from_secs(60)),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn forged_or_foreign_tokens_are_invalid() {
        let issuer = TokenIssuer::random();
        let now = SystemTime::now();
        let token = issuer.issue("c", 60, now);
        let (_, tag) = token.expose_secret().split_once('.').unwrap();
        // Pushing the expiry forward breaks the MAC.
        let forged = format!("{:x}.{tag}", unix(now) + 100_000);
        assert_eq!(
            issuer.verify(forged.as_bytes(), "c", now),
            Err(TokenError::Invalid)
        );
        let other = TokenIssuer::random().issue("c", 60, now);
        assert_eq!(
            issuer.verify(other.expose_secret().as_bytes(), "c", now),
            Err(TokenError::Invalid)
        );
        for junk in [&b""[..], b".", b"zz.zz", b"\xff", b"ffffffffffffffffff.00"] {
            assert_eq!(
                issuer.verify(junk, "c", now),
                Err(TokenError::Invalid),
                "{junk:?}"
            );
        }
    }
}
