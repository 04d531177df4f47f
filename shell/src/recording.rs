//! Session recordings in asciicast v2 (issue 4). Owned by the audit/recording work.
