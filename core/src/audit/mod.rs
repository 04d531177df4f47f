//! The audit trail: `/var/log/bastion/audit.jsonl`, one JSON object a line,
//! each line carrying the SHA-256 of the line before it (docs/audit.md).
//!
//! Two processes append (bastiond and bastion-metadata-proxy). An append:
//! 1. takes an exclusive `flock` on the chain-head file `<log>.chain`, which
//!    logrotate never touches, so the lock and the chain survive rotation;
//! 2. reads the head (`seq` and SHA-256 of the last line written) from it,
//!    and the last complete line of the log (see [`choose_predecessor`]);
//! 3. opens the log by path (`O_APPEND|O_CREAT`, mode 0600), so after
//!    logrotate renamed it the first append creates a fresh file whose first
//!    line continues the chain from the rotated file's last line;
//! 4. writes the line with one `write(2)` and `fdatasync`s it (audit events
//!    are a few per session, so syncing each is cheap);
//! 5. updates the head, unlocks, and sends a copy to syslog (authpriv),
//!    without blocking: syslog trouble never delays a session.
//!
//! Appends block on disk I/O: call them from `spawn_blocking` in async code.

mod event;
#[cfg(any(test, feature = "test-fixtures"))]
pub mod fixtures;
pub mod syslog;
pub mod timestamp;
pub mod verify;

pub use event::{
    AccessApplied, AccessRoleChange, AccessUserChange, AuditEvent, AuditRecord, ContainerEvent,
    CredentialsIssued, EndedBy, MAX_COMMAND_BYTES, MAX_TERM_BYTES, RecordingPruned,
    RecordingSummary, SessionEnd, SessionKind, SessionStart, StsAssumeRole, TransferDirection,
    bounded,
};
pub use verify::{ChainProblem, ProblemKind, RecordingProblem, VerifyReport, verify};

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::Serialize;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

/// `prev_sha256` of the very first line of a chain.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Why an audit event could not be written.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("cannot create the audit log directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot open the audit log {path}: {source} (check that the log directory exists, is writable by root and the disk is not full)"
    )]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot lock the audit log's chain head {path}: {source}")]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the audit log {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write to the audit log {path}: {source} (is the disk full or read-only?)")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot encode an audit event: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Where a line landed in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    pub seq: u64,
    /// SHA-256 (hex) of the line written (what the next line's
    /// `prev_sha256` will be).
    pub sha256: String,
}

/// The end of the chain: the last line written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    pub seq: u64,
    pub sha256: String,
}

/// An append-only, hash-chained audit log.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    head_path: PathBuf,
    host: String,
    syslog: Option<syslog::Syslog>,
}

/// The chain-head file of an audit log: `<log>.chain`.
pub fn head_path(log: &Path) -> PathBuf {
    let mut name = log.file_name().unwrap_or_default().to_os_string();
    name.push(".chain");
    log.with_file_name(name)
}

impl AuditLog {
    /// Opens (creating when missing, mode 0600, its directory 0700) the log
    /// at `path`, checking it can be written now. No syslog copy unless
    /// [`AuditLog::with_syslog`] is called.
    pub fn open(path: &Path) -> Result<Self, AuditError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|source| AuditError::CreateDir {
                    path: dir.to_owned(),
                    source,
                })?;
        }
        let log = Self::new(path);
        log.open_head()?;
        log.open_log()?;
        Ok(log)
    }

    /// A log at `path` without touching the disk: every append creates
    /// what is missing and reports its own errors. For a daemon that must
    /// start even when the log directory is broken (and then refuse logins).
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
            head_path: head_path(path),
            host: hostname(),
            syslog: None,
        }
    }

    /// Checks that the log can be written now (creating the file if
    /// missing), without appending.
    pub fn check_writable(&self) -> Result<(), AuditError> {
        self.open_head()?;
        self.open_log()?;
        Ok(())
    }

    /// Also sends every event to syslog (facility authpriv) through
    /// `/dev/log`, best effort.
    pub fn with_syslog(mut self) -> Self {
        self.syslog = Some(syslog::Syslog::new(syslog::DEFAULT_SOCKET, "bastion-audit"));
        self
    }

    /// Sends syslog copies to `syslog` instead (tests, other sockets).
    pub fn with_syslog_to(mut self, syslog: syslog::Syslog) -> Self {
        self.syslog = Some(syslog);
        self
    }

    /// Overrides the `host` field (default: the kernel's hostname).
    pub fn with_host(mut self, host: impl Into<String>) -> Self {
        self.host = host.into();
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one event now.
    pub fn append(&self, event: &AuditEvent) -> Result<Appended, AuditError> {
        self.append_at(event, OffsetDateTime::now_utc())
    }

    /// Appends one event with the given timestamp (truncated to
    /// milliseconds, in UTC).
    pub fn append_at(
        &self,
        event: &AuditEvent,
        ts: OffsetDateTime,
    ) -> Result<Appended, AuditError> {
        let ts = timestamp::truncate(ts);
        let lock =
            Flock::lock(self.open_head()?, FlockArg::LockExclusive).map_err(|(_, errno)| {
                AuditError::Lock {
                    path: self.head_path.clone(),
                    source: errno.into(),
                }
            })?;
        let head = read_head(&lock);
        let mut file = self.open_log()?;
        let tail = last_line(&mut file).map_err(|source| AuditError::Read {
            path: self.path.clone(),
            source,
        })?;
        let new_file = file.metadata().is_ok_and(|m| m.len() == 0);
        let prev = choose_predecessor(head, tail.as_ref().map(|t| &t.head));
        let record = LineOut {
            ts,
            host: &self.host,
            seq: prev.seq + 1,
            prev_sha256: &prev.sha256,
            event,
        };
        let mut line = Vec::with_capacity(512);
        if tail_is_partial(&mut file) {
            // A crash (or a full disk) left half a line: end it, so this
            // line stays whole; `verify` reports the broken one.
            line.push(b'\n');
        }
        let body_start = line.len();
        serde_json::to_writer(&mut line, &record)?;
        let sha256 = hex::encode(Sha256::digest(&line[body_start..]));
        line.push(b'\n');
        let write_err = |source| AuditError::Write {
            path: self.path.clone(),
            source,
        };
        file.write_all(&line).map_err(write_err)?;
        file.sync_data().map_err(write_err)?;
        if new_file && let Some(dir) = self.path.parent() {
            // Make the new file's directory entry durable too.
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        let appended = Appended {
            seq: record.seq,
            sha256,
        };
        write_head(&lock, &appended).map_err(|source| AuditError::Write {
            path: self.head_path.clone(),
            source,
        })?;
        drop(lock);
        if let Some(syslog) = &self.syslog {
            syslog.send(&line[body_start..line.len() - 1]);
        }
        Ok(appended)
    }

    fn open_head(&self) -> Result<File, AuditError> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&self.head_path)
            .map_err(|source| AuditError::Open {
                path: self.head_path.clone(),
                source,
            })
    }

    fn open_log(&self) -> Result<File, AuditError> {
        OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&self.path)
            .map_err(|source| AuditError::Open {
                path: self.path.clone(),
                source,
            })
    }
}

#[derive(Serialize)]
struct LineOut<'a> {
    #[serde(with = "crate::audit::timestamp")]
    ts: OffsetDateTime,
    host: &'a str,
    seq: u64,
    prev_sha256: &'a str,
    #[serde(flatten)]
    event: &'a AuditEvent,
}

/// Which line the next one continues from: the later (by `seq`) of the head
/// file and the log's last line. The head wins a tie or when the log's tail
/// was cut (so cutting lines off the end shows up as a break at the next
/// append); the log wins when it is ahead (a crash between writing the line
/// and updating the head). Neither: a new chain.
pub fn choose_predecessor(head: Option<ChainHead>, tail: Option<&ChainHead>) -> ChainHead {
    match (head, tail) {
        (Some(h), Some(t)) if t.seq > h.seq => t.clone(),
        (Some(h), _) => h,
        (None, Some(t)) => t.clone(),
        (None, None) => ChainHead {
            seq: 0,
            sha256: GENESIS_HASH.to_owned(),
        },
    }
}

const HEAD_LEN: usize = 20 + 1 + 64 + 1;

/// Reads the chain head file; `None` when empty or unreadable.
pub fn read_head(file: &File) -> Option<ChainHead> {
    let mut buf = [0u8; HEAD_LEN];
    let n = file.read_at(&mut buf, 0).ok()?;
    parse_head(&buf[..n])
}

fn parse_head(bytes: &[u8]) -> Option<ChainHead> {
    let text = std::str::from_utf8(bytes).ok()?;
    let (seq, sha) = text.trim_end().split_once(' ')?;
    let ok = sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit());
    if !ok {
        return None;
    }
    Some(ChainHead {
        seq: seq.parse().ok()?,
        sha256: sha.to_owned(),
    })
}

fn write_head(file: &File, appended: &Appended) -> std::io::Result<()> {
    let text = format!("{:020} {}\n", appended.seq, appended.sha256);
    debug_assert_eq!(text.len(), HEAD_LEN);
    file.write_all_at(text.as_bytes(), 0)
}

struct Tail {
    head: ChainHead,
}

/// The last complete line of the log (seq and hash), if any parses.
fn last_line(file: &mut File) -> std::io::Result<Option<Tail>> {
    let len = file.seek(SeekFrom::End(0))?;
    if len == 0 {
        return Ok(None);
    }
    // Read backwards until the block holds a whole last line.
    let mut block = 64 * 1024u64;
    loop {
        let start = len.saturating_sub(block);
        file.seek(SeekFrom::Start(start))?;
        let mut buf = Vec::with_capacity((len - start) as usize);
        Read::by_ref(file).take(len - start).read_to_end(&mut buf)?;
        let end = match buf.iter().rposition(|&b| b == b'\n') {
            Some(end) => end,
            None if start == 0 => return Ok(None),
            None => {
                block *= 4;
                continue;
            }
        };
        let body = &buf[..end];
        match body.iter().rposition(|&b| b == b'\n') {
            Some(i) => return Ok(parse_tail(&body[i + 1..])),
            None if start == 0 => return Ok(parse_tail(body)),
            None if block >= 16 * 1024 * 1024 => return Ok(None),
            None => block *= 4,
        }
    }
}

fn parse_tail(line: &[u8]) -> Option<Tail> {
    #[derive(serde::Deserialize)]
    struct Seq {
        seq: u64,
    }
    let seq: Seq = serde_json::from_slice(line).ok()?;
    Some(Tail {
        head: ChainHead {
            seq: seq.seq,
            sha256: hex::encode(Sha256::digest(line)),
        },
    })
}

/// Whether the file ends in the middle of a line.
fn tail_is_partial(file: &mut File) -> bool {
    let mut last = [0u8; 1];
    match file.metadata() {
        Ok(m) if m.len() > 0 => file.read_at(&mut last, m.len() - 1).is_ok() && last[0] != b'\n',
        _ => false,
    }
}

/// SHA-256 (hex) of one line's bytes, without its newline.
pub fn line_sha256(line: &[u8]) -> String {
    hex::encode(Sha256::digest(line))
}

/// The kernel's hostname (`/proc/sys/kernel/hostname`).
pub fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    pub(crate) fn container_event(user: &str) -> AuditEvent {
        AuditEvent::ContainerStart(ContainerEvent {
            user: user.into(),
            container: format!("bastion-{user}"),
            container_id: Some("c0ffee".into()),
            image: Some("bastion/user:1".into()),
            image_digest: None,
            reason: None,
        })
    }

    fn lines(path: &Path) -> Vec<String> {
        fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn record(line: &str) -> AuditRecord {
        serde_json::from_str(line).unwrap()
    }

    #[test]
    fn each_line_carries_the_hash_of_the_previous_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path).unwrap().with_host("bastion-1");
        for user in ["a", "b", "c"] {
            log.append(&container_event(user)).unwrap();
        }
        let lines = lines(&path);
        assert_eq!(lines.len(), 3);
        let recs: Vec<_> = lines.iter().map(|l| record(l)).collect();
        assert_eq!(recs[0].prev_sha256, GENESIS_HASH);
        assert_eq!(recs[0].seq, 1);
        assert_eq!(recs[0].host, "bastion-1");
        for i in 1..3 {
            assert_eq!(recs[i].prev_sha256, line_sha256(lines[i - 1].as_bytes()));
            assert_eq!(recs[i].seq, i as u64 + 1);
        }
        let ts = serde_json::from_str::<serde_json::Value>(&lines[0]).unwrap()["ts"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(ts.ends_with('Z'), "RFC 3339 UTC: {ts}");
        assert!(verify(&path).unwrap().is_ok());
    }

    #[test]
    fn files_are_created_0600_in_a_0700_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/audit.jsonl");
        AuditLog::open(&path).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.path().join("logs")), 0o700);
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&head_path(&path)), 0o600);
    }

    #[test]
    fn a_rotated_log_continues_the_chain_in_the_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path).unwrap();
        log.append(&container_event("a")).unwrap();
        let last = log.append(&container_event("b")).unwrap();
        // What logrotate does with `nocreate`: rename, nothing else.
        fs::rename(&path, dir.path().join("audit.jsonl.1")).unwrap();
        log.append(&container_event("c")).unwrap();
        let first = record(&lines(&path)[0]);
        assert_eq!(first.seq, 3);
        assert_eq!(first.prev_sha256, last.sha256);
        let report = verify(&path).unwrap();
        assert!(report.is_ok(), "{report}");
        assert_eq!(report.lines, 3);
    }

    #[test]
    fn cutting_the_last_lines_shows_at_the_next_append() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path).unwrap();
        for user in ["a", "b", "c"] {
            log.append(&container_event(user)).unwrap();
        }
        let text = lines(&path);
        fs::write(&path, format!("{}\n", text[0])).unwrap();
        let report = verify(&path).unwrap();
        assert!(
            !report.is_ok(),
            "verify sees the cut against the chain head"
        );
        log.append(&container_event("d")).unwrap();
        let rec = record(&lines(&path)[1]);
        assert_eq!(
            rec.seq, 4,
            "the chain continues from the head, not the cut tail"
        );
        let report = verify(&path).unwrap();
        let problem = report.chain_problem.unwrap();
        assert_eq!(problem.kind, ProblemKind::Removed);
        assert_eq!(problem.line, 2);
    }

    #[test]
    fn a_lost_head_file_falls_back_to_the_last_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path).unwrap();
        log.append(&container_event("a")).unwrap();
        fs::remove_file(head_path(&path)).unwrap();
        log.append(&container_event("b")).unwrap();
        assert!(verify(&path).unwrap().is_ok());
    }

    #[test]
    fn a_half_written_line_is_ended_and_reported_but_the_next_line_is_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path).unwrap();
        log.append(&container_event("a")).unwrap();
        OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"ts\":\"2026-")
            .unwrap();
        log.append(&container_event("b")).unwrap();
        let lines = lines(&path);
        assert_eq!(lines.len(), 3);
        assert_eq!(record(&lines[2]).seq, 2);
        let problem = verify(&path).unwrap().chain_problem.unwrap();
        assert_eq!(problem.line, 2, "{problem}");
    }

    #[test]
    fn threads_appending_at_once_keep_one_chain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        std::thread::scope(|s| {
            for t in 0..4 {
                let path = &path;
                s.spawn(move || {
                    // Each thread opens its own log, as two processes would.
                    let log = AuditLog::open(path).unwrap();
                    for i in 0..25 {
                        log.append(&container_event(&format!("u{t}-{i}"))).unwrap();
                    }
                });
            }
        });
        let report = verify(&path).unwrap();
        assert!(report.is_ok(), "{report}");
        assert_eq!(report.lines, 100);
    }

    /// Two real processes: this test binary re-runs itself as a child that
    /// appends while the parent appends too.
    #[test]
    fn two_processes_appending_at_once_keep_one_chain() {
        if let Ok(path) = std::env::var("BASTION_AUDIT_CHILD_LOG") {
            let log = AuditLog::open(Path::new(&path)).unwrap();
            for i in 0..50 {
                log.append(&container_event(&format!("child{i}"))).unwrap();
            }
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let exe = std::env::current_exe().unwrap();
        let mut child = std::process::Command::new(exe)
            .args([
                "--exact",
                "audit::tests::two_processes_appending_at_once_keep_one_chain",
                "--nocapture",
            ])
            .env("BASTION_AUDIT_CHILD_LOG", &path)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let log = AuditLog::open(&path).unwrap();
        for i in 0..50 {
            log.append(&container_event(&format!("parent{i}"))).unwrap();
        }
        assert!(child.wait().unwrap().success());
        let report = verify(&path).unwrap();
        assert!(report.is_ok(), "{report}");
        assert_eq!(report.lines, 100);
    }

    #[test]
    fn an_unwritable_directory_fails_with_its_path() {
        let err = AuditLog::open(Path::new("/proc/bastion-test/audit.jsonl")).unwrap_err();
        assert!(err.to_string().contains("/proc/bastion-test"), "{err}");
    }

    #[test]
    fn events_also_go_to_syslog_as_authpriv() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("log.sock");
        let server = std::os::unix::net::UnixDatagram::bind(&sock).unwrap();
        let log = AuditLog::open(&dir.path().join("audit.jsonl"))
            .unwrap()
            .with_syslog_to(syslog::Syslog::new(&sock, "bastion-audit"));
        log.append(&container_event("a")).unwrap();
        let mut buf = vec![0u8; 65536];
        let n = server.recv(&mut buf).unwrap();
        let msg = String::from_utf8_lossy(&buf[..n]);
        assert!(msg.starts_with("<86>"), "authpriv.info: {msg}");
        assert!(msg.contains("bastion-audit["), "{msg}");
        assert!(msg.contains(r#""event":"container.start""#), "{msg}");
    }

    #[test]
    fn a_missing_syslog_does_not_fail_the_append() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(&dir.path().join("audit.jsonl"))
            .unwrap()
            .with_syslog_to(syslog::Syslog::new(dir.path().join("nothing"), "x"));
        log.append(&container_event("a")).unwrap();
    }

    #[test]
    fn head_file_format_round_trips() {
        let a = Appended {
            seq: 42,
            sha256: "ab".repeat(32),
        };
        let dir = tempfile::tempdir().unwrap();
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.path().join("h"))
            .unwrap();
        write_head(&f, &a).unwrap();
        assert_eq!(
            read_head(&f),
            Some(ChainHead {
                seq: 42,
                sha256: a.sha256.clone()
            })
        );
        assert_eq!(parse_head(b"garbage"), None);
    }
}
