//! Audit trail (issue 4). Owned by the audit/recording work.
