//! `[recording]`: session recordings and the audit trail (issue 4).

use serde::Deserialize;

/// `[recording]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecordingConfig {}

impl RecordingConfig {
    pub(super) fn validate(&self) -> Result<(), (String, String)> {
        Ok(())
    }
}
