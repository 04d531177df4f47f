//! `bastionctl`'s commands for ops (the reviewers' commands live in
//! [`crate::review`]).

use std::path::Path;

use crate::config::{Config, ConfigError};

/// `bastionctl check`: validates the configuration file and says what is
/// wrong, naming the key and the line.
pub fn check(path: &Path) -> Result<String, ConfigError> {
    let config = Config::load(path)?;
    let b = &config.bastiond;
    Ok(format!(
        "{}: ok (image {}, network {} {}, {} user and {} group overrides)",
        path.display(),
        b.image,
        b.network.name,
        b.network.subnet,
        b.users.len(),
        b.groups.len()
    ))
}
