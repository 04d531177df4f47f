//! Locales a session may ask for. Clients send LANG and LC_* (sshd's
//! AcceptEnv); a locale the image lacks makes perl, python and others warn
//! at every command. The image lists what it has in the label
//! `bastion.image.locales` (`C.UTF-8 en_US.UTF-8 de_DE.UTF-8 …`); a value
//! it lacks becomes `C.UTF-8`, which every image has. An image without the
//! label (one of ops' own) gets the values as sent.

use std::collections::HashSet;

/// The image label listing its locales.
pub const LABEL: &str = "bastion.image.locales";

/// What every image has.
pub const FALLBACK: &str = "C.UTF-8";

/// The locales of one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageLocales {
    names: HashSet<String>,
}

impl ImageLocales {
    /// From the label's value: names separated by white space.
    pub fn from_label(value: &str) -> Self {
        Self {
            names: value.split_whitespace().map(normalize).collect(),
        }
    }

    /// `value` if the image has that locale, else [`FALLBACK`].
    pub fn fit<'a>(&self, value: &'a str) -> &'a str {
        if value.is_empty()
            || matches!(value, "C" | "POSIX")
            || self.names.contains(&normalize(value))
        {
            value
        } else {
            FALLBACK
        }
    }
}

/// Whether `name` is a locale variable (LANG, LANGUAGE is not: it is a
/// list of fallbacks that never makes programs warn).
pub fn is_locale_var(name: &str) -> bool {
    name == "LANG" || name.starts_with("LC_")
}

/// glibc's own normalization of the codeset: `UTF-8`, `utf8` and `UTF8`
/// name the same locale (`de_DE.UTF-8` = `de_DE.utf8`).
fn normalize(name: &str) -> String {
    match name.split_once('.') {
        Some((lang, rest)) => {
            let (codeset, modifier) = match rest.split_once('@') {
                Some((c, m)) => (c, Some(m)),
                None => (rest, None),
            };
            let codeset: String = codeset
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .map(|c| c.to_ascii_lowercase())
                .collect();
            match modifier {
                Some(m) => format!("{lang}.{codeset}@{m}"),
                None => format!("{lang}.{codeset}"),
            }
        }
        None => name.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_locale_the_image_has_stays_and_others_become_c_utf8() {
        let locales = ImageLocales::from_label("C.UTF-8 en_US.UTF-8 de_DE.UTF-8");
        assert_eq!(locales.fit("de_DE.UTF-8"), "de_DE.UTF-8");
        assert_eq!(locales.fit("de_DE.utf8"), "de_DE.utf8");
        assert_eq!(locales.fit("en_US.UTF-8"), "en_US.UTF-8");
        assert_eq!(locales.fit("C"), "C");
        assert_eq!(locales.fit("POSIX"), "POSIX");
        assert_eq!(locales.fit("C.utf8"), "C.utf8");
        assert_eq!(locales.fit("xx_YY.UTF-8"), FALLBACK);
        assert_eq!(
            locales.fit("de_DE"),
            FALLBACK,
            "Latin-1 de_DE is not generated"
        );
        assert_eq!(locales.fit("de_DE.ISO-8859-1"), FALLBACK);
        assert_eq!(locales.fit("../../etc/passwd"), FALLBACK);
    }

    #[test]
    fn the_locale_variables_are_lang_and_lc() {
        assert!(is_locale_var("LANG"));
        assert!(is_locale_var("LC_ALL"));
        assert!(is_locale_var("LC_CTYPE"));
        assert!(!is_locale_var("LANGUAGE"));
        assert!(!is_locale_var("TERM"));
    }
}
