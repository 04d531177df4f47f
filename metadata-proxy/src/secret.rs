//! Secrets (STS secret keys, session tokens, IMDSv2 tokens, the upstream
//! IMDS token) are `secrecy` strings: `Debug` shows `[REDACTED]`, there is
//! no `Display`, and the memory is zeroed when dropped. Read one with
//! [`ExposeSecret::expose_secret`], only where it is written into a
//! response to its rightful client or a request to AWS.

pub use secrecy::{ExposeSecret, SecretString as Secret};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let s = Secret::from("wJalrXUtnFEMI/K7MDENG");
        assert!(!format!("{s:?}").contains("wJalr"));
        #[derive(Debug)]
        #[allow(dead_code)]
        struct Holder {
            key: Secret,
        }
        let shown = format!("{:?}", Holder { key: s.clone() });
        assert!(!shown.contains("wJalr"), "{shown}");
        assert!(shown.contains("REDACTED"), "{shown}");
        assert_eq!(s.expose_secret(), "wJalrXUtnFEMI/K7MDENG");
    }
}
