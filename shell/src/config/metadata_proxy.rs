//! `[metadata_proxy]`: settings of `bastion-metadata-proxy` (issue 3).

use serde::Deserialize;

/// `[metadata_proxy]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetadataProxyConfig {}

impl MetadataProxyConfig {
    pub(super) fn validate(&self) -> Result<(), (String, String)> {
        Ok(())
    }
}
