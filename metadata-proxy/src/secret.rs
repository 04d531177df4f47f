//! Secrets (STS secret keys, session tokens, IMDSv2 tokens, container
//! authorization tokens) wrapped so that neither `Debug` nor `Display` can
//! print them: a stray `{:?}` in a log line shows `[redacted]`.

use std::fmt;

/// A string that must never reach a log. Read it with [`Secret::expose`],
/// only where it is written into a response or a request.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself: only for the bytes sent to the rightful client.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let s = Secret::new("wJalrXUtnFEMI/K7MDENG");
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(format!("{s}"), "[redacted]");
        #[derive(Debug)]
        #[allow(dead_code)]
        struct Holder {
            key: Secret,
        }
        let shown = format!("{:?}", Holder { key: s.clone() });
        assert!(!shown.contains("wJalr"), "{shown}");
        assert_eq!(s.expose(), "wJalrXUtnFEMI/K7MDENG");
    }
}
