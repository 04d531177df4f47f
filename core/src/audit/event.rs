//! The audit events: a stable schema, documented in docs/audit.md. Adding an
//! optional field is a compatible change; renaming or removing one is not.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// One audit event. The `event` key of a line names the variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event")]
pub enum AuditEvent {
    #[serde(rename = "session.start")]
    SessionStart(SessionStart),
    #[serde(rename = "session.end")]
    SessionEnd(SessionEnd),
    #[serde(rename = "container.create")]
    ContainerCreate(ContainerEvent),
    #[serde(rename = "container.start")]
    ContainerStart(ContainerEvent),
    #[serde(rename = "container.stop")]
    ContainerStop(ContainerEvent),
    #[serde(rename = "container.remove")]
    ContainerRemove(ContainerEvent),
    /// The metadata proxy handed credentials to a container (from its cache
    /// or fresh from STS).
    #[serde(rename = "credentials.issued")]
    CredentialsIssued(CredentialsIssued),
    /// The metadata proxy called sts:AssumeRole.
    #[serde(rename = "sts.assume_role")]
    StsAssumeRole(StsAssumeRole),
    /// `bastionctl sessions prune` deleted a recording (so `audit verify`
    /// knows its absence is not tampering).
    #[serde(rename = "recording.pruned")]
    RecordingPruned(RecordingPruned),
    /// `bastionctl access apply` created a bastion user.
    #[serde(rename = "access.user.added")]
    AccessUserAdded(AccessUserChange),
    /// … made an account of the managed group a working bastion user again
    /// (unlocked, login shell, groups).
    #[serde(rename = "access.user.updated")]
    AccessUserUpdated(AccessUserChange),
    /// … replaced a user's SSH keys.
    #[serde(rename = "access.user.keys_changed")]
    AccessUserKeysChanged(AccessUserChange),
    /// … locked a user: sessions ended, container removed, home kept.
    #[serde(rename = "access.user.locked")]
    AccessUserLocked(AccessUserChange),
    /// … (`--iam`) created a user's IAM role.
    #[serde(rename = "access.role.created")]
    AccessRoleCreated(AccessRoleChange),
    /// … (`--iam`) replaced a user's IAM role's trust policy.
    #[serde(rename = "access.role.trust_updated")]
    AccessRoleTrustUpdated(AccessRoleChange),
    /// … finished applying an access file.
    #[serde(rename = "access.applied")]
    AccessApplied(AccessApplied),
}

impl AuditEvent {
    /// The stable event name, as written in the `event` key.
    pub fn name(&self) -> &'static str {
        match self {
            AuditEvent::SessionStart(_) => "session.start",
            AuditEvent::SessionEnd(_) => "session.end",
            AuditEvent::ContainerCreate(_) => "container.create",
            AuditEvent::ContainerStart(_) => "container.start",
            AuditEvent::ContainerStop(_) => "container.stop",
            AuditEvent::ContainerRemove(_) => "container.remove",
            AuditEvent::CredentialsIssued(_) => "credentials.issued",
            AuditEvent::StsAssumeRole(_) => "sts.assume_role",
            AuditEvent::RecordingPruned(_) => "recording.pruned",
            AuditEvent::AccessUserAdded(_) => "access.user.added",
            AuditEvent::AccessUserUpdated(_) => "access.user.updated",
            AuditEvent::AccessUserKeysChanged(_) => "access.user.keys_changed",
            AuditEvent::AccessUserLocked(_) => "access.user.locked",
            AuditEvent::AccessRoleCreated(_) => "access.role.created",
            AuditEvent::AccessRoleTrustUpdated(_) => "access.role.trust_updated",
            AuditEvent::AccessApplied(_) => "access.applied",
        }
    }
}

/// What kind of session this is. File transfers are never recorded byte by
/// byte; their events carry the command, direction and byte counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionKind {
    /// An interactive login shell.
    Shell,
    /// `ssh host CMD`.
    Command,
    /// sftp-server, `scp -t/-f`, `rsync --server`.
    FileTransfer,
}

/// Direction of a file transfer, seen from the user's machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferDirection {
    /// Files go to the bastion (`scp -t`, rsync receiving).
    Upload,
    /// Files come from the bastion (`scp -f`, rsync sending).
    Download,
    /// Both or unknown (sftp).
    Both,
}

/// `session.start`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionStart {
    pub session_id: String,
    pub user: String,
    pub uid: u32,
    #[serde(default)]
    pub groups: Vec<String>,
    /// Client address and port, from SSH_CONNECTION.
    pub remote_addr: Option<String>,
    pub remote_port: Option<u16>,
    pub container: String,
    pub container_id: Option<String>,
    pub image: String,
    pub image_digest: Option<String>,
    pub role: Option<String>,
    pub kind: SessionKind,
    /// The command (`-c CMD`); `None` for a login shell.
    pub command: Option<String>,
    /// The login shell inside the container (`SHELL` of the recording).
    #[serde(default)]
    pub shell: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer_direction: Option<TransferDirection>,
    pub tty: bool,
    pub term: Option<String>,
    pub cols: Option<u16>,
    pub rows: Option<u16>,
    /// The recording file, when the session is recorded.
    pub recording: Option<PathBuf>,
    #[serde(default)]
    pub record_input: bool,
    /// Why a session that should have been recorded is not (the recording
    /// could not be created and `on_log_failure = "allow"`). Omitted if none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unrecorded_reason: Option<String>,
}

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndedBy {
    /// The session's process exited (see `exit_code` / `signal`).
    Exit,
    /// The client went away (ssh killed, network gone, sshd died).
    ClientGone,
    /// bastiond was stopped while the session was live.
    BrokerShutdown,
    /// The session failed (see `error`).
    Error,
    /// bastiond crashed; the session was closed at its next start-up.
    Interrupted,
}

/// `session.end`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionEnd {
    pub session_id: String,
    pub user: String,
    pub container: String,
    #[serde(with = "crate::audit::timestamp")]
    pub started: OffsetDateTime,
    /// Seconds from start to end.
    pub duration_secs: f64,
    pub exit_code: Option<i32>,
    /// Name of the signal that ended the process (`"KILL"`), if one did.
    pub signal: Option<String>,
    /// Bytes from the client to the session (what the user typed/sent).
    pub bytes_in: u64,
    /// Bytes from the session to the client (what the user saw/received).
    pub bytes_out: u64,
    pub ended_by: EndedBy,
    pub recording: Option<RecordingSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The closed recording of a session, as the end event pins it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingSummary {
    pub path: PathBuf,
    /// SHA-256 (hex) of the whole .cast file.
    pub sha256: String,
    /// Size of the .cast file.
    pub size: u64,
    /// Whether `max_recording_bytes` cut the recording short.
    pub truncated: bool,
    /// A write error that stopped the recording early, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `container.create|start|stop|remove`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerEvent {
    pub user: String,
    pub container: String,
    pub container_id: Option<String>,
    pub image: Option<String>,
    pub image_digest: Option<String>,
    /// Why (e.g. `"idle"`, `"image changed"`, `"first login"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `credentials.issued`: never carries a secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CredentialsIssued {
    pub user: String,
    pub container: String,
    pub container_id: Option<String>,
    /// The container's address the request came from.
    pub source_ip: Option<String>,
    pub role_arn: String,
    pub session_name: String,
    pub source_identity: Option<String>,
    /// The access key id (not a secret: CloudTrail shows it), to correlate.
    pub access_key_id: Option<String>,
    #[serde(with = "crate::audit::timestamp")]
    pub expiration: OffsetDateTime,
    /// Which endpoint asked: `"imds"` or `"container_credentials"`.
    pub endpoint: String,
}

/// `sts.assume_role`: never carries a secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StsAssumeRole {
    pub user: String,
    pub container: String,
    pub role_arn: String,
    pub session_name: String,
    pub source_identity: Option<String>,
    #[serde(with = "crate::audit::timestamp::option", default)]
    pub expiration: Option<OffsetDateTime>,
    pub access_key_id: Option<String>,
    /// The STS request id (x-amzn-RequestId), for CloudTrail.
    pub request_id: Option<String>,
    /// `None` on success, else the STS error code and message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `recording.pruned`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingPruned {
    pub session_id: String,
    pub user: String,
    pub path: PathBuf,
    pub sha256: Option<String>,
    /// Who pruned (the uid running bastionctl).
    pub by_uid: u32,
}

/// `access.user.*`: one change `bastionctl access apply` made to a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessUserChange {
    pub user: String,
    pub uid: Option<u32>,
    /// What was done, in words (`unlock`, `sessions ended`, …).
    pub detail: Vec<String>,
    /// Fingerprints (`SHA256:…`) of keys added and removed.
    pub keys_added: Vec<String>,
    pub keys_removed: Vec<String>,
    /// SHA-256 of the access file applied.
    pub access_sha256: String,
    /// Who ran apply.
    pub by_uid: u32,
}

/// `access.role.*`: an IAM role `apply --iam` changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessRoleChange {
    pub user: String,
    pub role_arn: String,
    pub access_sha256: String,
    pub by_uid: u32,
}

/// `access.applied`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessApplied {
    pub path: PathBuf,
    pub sha256: String,
    /// The group whose members the file manages.
    pub group: String,
    /// How many changes were made (0: the host already matched).
    pub changes: u32,
    pub by_uid: u32,
}

/// One parsed line of the audit log: the chain fields and the event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    #[serde(with = "crate::audit::timestamp")]
    pub ts: OffsetDateTime,
    pub host: String,
    /// Position in the chain, 1 for the first line ever, across rotations.
    pub seq: u64,
    /// SHA-256 (hex) of the previous line's bytes (without its newline);
    /// 64 zeros for the first line ever.
    pub prev_sha256: String,
    #[serde(flatten)]
    pub event: AuditEvent,
}

/// Longest `command` a record keeps, in bytes.
pub const MAX_COMMAND_BYTES: usize = 16 * 1024;
/// Longest `term` a record keeps, in bytes.
pub const MAX_TERM_BYTES: usize = 64;

/// A field the recorded user controls, bounded for the record: at most
/// `max` bytes of it (cut at a character boundary), then, when cut, a
/// marker with the whole value's length and SHA-256, so a reviewer knows
/// it was cut and can match it against another copy. Control characters
/// are kept as they were (the JSON escapes them; every `bastionctl` view
/// shows them escaped).
pub fn bounded(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!(
        "{}…[cut by bastion: {} bytes in all, sha256 {}]",
        &text[..cut],
        text.len(),
        super::line_sha256(text.as_bytes())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_fields_are_bounded_with_a_marker() {
        assert_eq!(bounded("xterm", MAX_TERM_BYTES), "xterm");
        let long = "x".repeat(20_000);
        let cut = bounded(&long, MAX_TERM_BYTES);
        assert!(cut.starts_with(&"x".repeat(64)));
        assert!(cut.contains("…[cut by bastion: 20000 bytes in all, sha256 "));
        assert!(cut.len() < 200, "{}", cut.len());
        // Never inside a character.
        let e = "é".repeat(40);
        let cut = bounded(&e, 5);
        assert!(cut.starts_with("éé…"), "{cut}");
    }

    #[test]
    fn event_names_match_the_serialized_tag() {
        let ev = AuditEvent::SessionStart(crate::audit::fixtures::session_start(
            "s1",
            "alice",
            SessionKind::Shell,
            None,
        ));
        let v = serde_json::to_value(&ev).unwrap();
        assert_eq!(v["event"], ev.name());
        assert_eq!(v["kind"], "shell");
        let back: AuditEvent = serde_json::from_value(v).unwrap();
        assert_eq!(back, ev);
    }

    #[test]
    fn a_record_round_trips_with_flattened_event() {
        let rec = AuditRecord {
            ts: time::macros::datetime!(2026-11-23 06:00:00 UTC),
            host: "h".into(),
            seq: 3,
            prev_sha256: "0".repeat(64),
            event: AuditEvent::ContainerStop(ContainerEvent {
                user: "bob".into(),
                container: "bastion-bob".into(),
                container_id: None,
                image: None,
                image_digest: None,
                reason: Some("idle".into()),
            }),
        };
        let line = serde_json::to_string(&rec).unwrap();
        assert!(line.contains(r#""event":"container.stop""#), "{line}");
        assert!(
            line.contains(r#""ts":"2026-11-23T06:00:00.000Z""#),
            "{line}"
        );
        let back: AuditRecord = serde_json::from_str(&line).unwrap();
        assert_eq!(back, rec);
    }
}
