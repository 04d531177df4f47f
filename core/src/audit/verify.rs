//! `bastionctl audit verify`: checks the hash chain across the live log and
//! its rotated files, and each recording against its `session.end` event.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use sha2::{Digest, Sha256};

use super::{AuditEvent, AuditRecord, ChainHead, GENESIS_HASH, head_path, read_head};

/// What is wrong at the first broken place of the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    /// The line's content changed (or it is not a valid record).
    Edited,
    /// Lines are missing before this one.
    Removed,
    /// The line is not part of the chain: it was added.
    Inserted,
    /// The line is in the chain, but not here.
    Reordered,
}

impl fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProblemKind::Edited => "edited",
            ProblemKind::Removed => "removed",
            ProblemKind::Inserted => "inserted",
            ProblemKind::Reordered => "reordered",
        })
    }
}

/// The first place where the chain breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainProblem {
    pub file: PathBuf,
    /// 1-based line number in `file`.
    pub line: usize,
    pub kind: ProblemKind,
    pub detail: String,
}

impl fmt::Display for ChainProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}: {}",
            self.file.display(),
            self.line,
            self.kind,
            self.detail
        )
    }
}

/// A recording that no longer matches its `session.end` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingProblem {
    pub session_id: String,
    pub path: PathBuf,
    pub detail: String,
}

impl fmt::Display for RecordingProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "session {}: recording {}: {}",
            self.session_id,
            self.path.display(),
            self.detail
        )
    }
}

/// The outcome of [`verify`].
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    /// The files read, oldest first.
    pub files: Vec<PathBuf>,
    /// Lines read in all files.
    pub lines: u64,
    /// Recordings checked against their end event.
    pub recordings_checked: u64,
    pub chain_problem: Option<ChainProblem>,
    pub recording_problems: Vec<RecordingProblem>,
    /// Things worth knowing that are not tampering (e.g. the chain starts
    /// in a rotated file that was deleted).
    pub notes: Vec<String>,
}

impl VerifyReport {
    /// No tampering found.
    pub fn is_ok(&self) -> bool {
        self.chain_problem.is_none() && self.recording_problems.is_empty()
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for note in &self.notes {
            writeln!(f, "note: {note}")?;
        }
        if let Some(p) = &self.chain_problem {
            writeln!(f, "CHAIN BROKEN: {p}")?;
        }
        for p in &self.recording_problems {
            writeln!(f, "RECORDING MISMATCH: {p}")?;
        }
        let verdict = if self.is_ok() { "OK" } else { "FAILED" };
        write!(
            f,
            "{verdict}: {} lines in {} file(s), {} recording(s) checked",
            self.lines,
            self.files.len(),
            self.recordings_checked
        )
    }
}

/// Why verification could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("no audit log at {0}")]
    Missing(PathBuf),
}

struct Entry {
    file: usize,
    line: usize,
    sha256: String,
    record: Option<AuditRecord>,
    /// `seq` and `prev_sha256` when the line is JSON with them, even if the
    /// event itself is unknown.
    chain: Option<(u64, String)>,
    problem: Option<&'static str>,
}

/// Verifies the audit log at `path` (the live file; a directory means its
/// `audit.jsonl`) together with its rotated siblings (`audit.jsonl.1`,
/// `audit.jsonl-20261123`, `.gz` or not), and every recording named by a
/// `session.end` event.
pub fn verify(path: &Path) -> Result<VerifyReport, VerifyError> {
    let live = if path.is_dir() {
        path.join("audit.jsonl")
    } else {
        path.to_owned()
    };
    let candidates = log_files(&live)?;
    if candidates.is_empty() {
        return Err(VerifyError::Missing(live));
    }
    // Hold the appenders' lock while reading so no line is half-written.
    let head_file = File::open(head_path(&live)).ok();
    let lock = head_file.and_then(|f| Flock::lock(f, FlockArg::LockShared).ok());
    let head = lock.as_ref().and_then(|l| read_head(l));
    let mut files = Vec::new();
    for file in candidates {
        let bytes = read_maybe_gz(&file).map_err(|source| VerifyError::Read {
            path: file.clone(),
            source,
        })?;
        files.push((file, bytes));
    }
    drop(lock);

    let mut report = VerifyReport::default();
    let mut per_file: Vec<(PathBuf, Vec<Entry>)> = files
        .into_iter()
        .enumerate()
        .map(|(i, (file, bytes))| {
            let entries = split_entries(i, &bytes);
            (file, entries)
        })
        .collect();
    // Oldest first: by the seq of the first line that has one; the live
    // file last among equals.
    per_file.sort_by_key(|(path, entries)| {
        let first = entries.iter().find_map(|e| e.chain.as_ref().map(|c| c.0));
        (first.unwrap_or(u64::MAX), *path == live)
    });
    let mut names = Vec::new();
    let mut entries = Vec::new();
    for (i, (file, mut es)) in per_file.into_iter().enumerate() {
        names.push(file);
        for e in &mut es {
            e.file = i;
        }
        entries.extend(es);
    }
    report.files = names.clone();
    report.lines = entries.len() as u64;
    report.chain_problem = check_chain(&entries, &names, &mut report.notes);
    if report.chain_problem.is_none() {
        report.chain_problem = check_head(&entries, &names, head.as_ref(), &live);
    }
    check_recordings(&entries, &mut report);
    Ok(report)
}

/// The live log and its rotated siblings.
pub fn log_files(live: &Path) -> Result<Vec<PathBuf>, VerifyError> {
    let dir = live.parent().unwrap_or(Path::new("."));
    let base = live.file_name().unwrap_or_default().to_string_lossy();
    let chain = format!("{base}.chain");
    let read_dir = fs::read_dir(if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    })
    .map_err(|source| VerifyError::Read {
        path: dir.to_owned(),
        source,
    })?;
    let mut out = Vec::new();
    for entry in read_dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&*base) && name != chain && entry.file_type().is_ok_and(|t| t.is_file())
        {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

/// The bytes of `path`, gunzipped when it is a rotated `.gz` log.
pub fn read_maybe_gz(path: &Path) -> io::Result<Vec<u8>> {
    let bytes = fs::read(path)?;
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&bytes[..]).read_to_end(&mut out)?;
        Ok(out)
    } else {
        Ok(bytes)
    }
}

fn split_entries(file: usize, bytes: &[u8]) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut rest = bytes;
    let mut line_no = 0;
    while !rest.is_empty() {
        line_no += 1;
        let (line, complete, next) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (&rest[..i], true, &rest[i + 1..]),
            None => (rest, false, &rest[rest.len()..]),
        };
        rest = next;
        let record: Option<AuditRecord> = serde_json::from_slice(line).ok();
        let chain = record
            .as_ref()
            .map(|r| (r.seq, r.prev_sha256.clone()))
            .or_else(|| chain_fields(line));
        let problem = if !complete {
            Some(
                "the line is incomplete (no newline at its end): the file was cut or a write failed",
            )
        } else if chain.is_none() {
            Some("the line is not a valid audit record")
        } else {
            None
        };
        out.push(Entry {
            file,
            line: line_no,
            sha256: hex::encode(Sha256::digest(line)),
            record,
            chain,
            problem,
        });
    }
    out
}

fn chain_fields(line: &[u8]) -> Option<(u64, String)> {
    #[derive(serde::Deserialize)]
    struct Chain {
        seq: u64,
        prev_sha256: String,
    }
    let c: Chain = serde_json::from_slice(line).ok()?;
    Some((c.seq, c.prev_sha256))
}

fn check_chain(
    entries: &[Entry],
    names: &[PathBuf],
    notes: &mut Vec<String>,
) -> Option<ChainProblem> {
    let at = |i: usize, kind, detail: String| ChainProblem {
        file: names[entries[i].file].clone(),
        line: entries[i].line,
        kind,
        detail,
    };
    let loc = |i: usize| {
        let e = &entries[i];
        format!("{}:{}", names[e.file].display(), e.line)
    };
    let by_hash: HashMap<&str, usize> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| (e.sha256.as_str(), i))
        .collect();
    for (i, e) in entries.iter().enumerate() {
        if let Some(problem) = e.problem {
            // A broken line after a whole one whose successor continues from
            // it is an insertion; otherwise an edit.
            return Some(at(i, ProblemKind::Edited, problem.to_owned()));
        }
        let (seq, prev) = e.chain.as_ref()?;
        if i == 0 {
            if *seq == 1 && prev != GENESIS_HASH {
                return Some(at(
                    i,
                    ProblemKind::Edited,
                    "the first line of the chain (seq 1) must have prev_sha256 of zeros".into(),
                ));
            }
            if *seq != 1 {
                notes.push(format!(
                    "the chain starts at seq {seq} in {}: earlier lines are in rotated files no longer present",
                    loc(0)
                ));
            }
            continue;
        }
        let before = &entries[i - 1];
        let (before_seq, _) = before.chain.as_ref()?;
        if *prev == before.sha256 {
            if *seq != before_seq + 1 {
                return Some(at(
                    i,
                    ProblemKind::Edited,
                    format!(
                        "seq is {seq} where {} was expected: the line was edited",
                        before_seq + 1
                    ),
                ));
            }
            continue;
        }
        // The chain breaks between i-1 and i. Find out how.
        if let Some(&k) = by_hash.get(prev.as_str()) {
            if k > i {
                return Some(at(
                    i,
                    ProblemKind::Reordered,
                    format!(
                        "out of order: this line continues from {}, which comes later",
                        loc(k)
                    ),
                ));
            }
            if k + 1 < i {
                return Some(at(
                    k + 1,
                    ProblemKind::Inserted,
                    format!(
                        "not part of the chain: {} continues from {}, skipping this line{}",
                        loc(i),
                        loc(k),
                        if i - k > 2 {
                            format!(" and {} more", i - k - 2)
                        } else {
                            String::new()
                        }
                    ),
                ));
            }
        }
        // Does a later line continue from i-1? Then i.. were inserted.
        if let Some(j) = (i + 1..entries.len()).find(|&j| {
            entries[j]
                .chain
                .as_ref()
                .is_some_and(|(_, p)| *p == before.sha256)
        }) {
            return Some(at(
                i,
                ProblemKind::Inserted,
                format!(
                    "not part of the chain: {} continues from {}",
                    loc(j),
                    loc(i - 1)
                ),
            ));
        }
        if *seq > before_seq + 1 {
            let missing = seq - before_seq - 1;
            return Some(at(
                i,
                ProblemKind::Removed,
                format!(
                    "{missing} line(s) (seq {}..={}) were removed before this line",
                    before_seq + 1,
                    seq - 1
                ),
            ));
        }
        if *seq == before_seq + 1 {
            return Some(at(
                i - 1,
                ProblemKind::Edited,
                format!(
                    "its SHA-256 no longer matches the prev_sha256 that {} recorded for it",
                    loc(i)
                ),
            ));
        }
        return Some(at(
            i,
            ProblemKind::Reordered,
            format!("seq goes from {before_seq} to {seq}: lines were moved or replaced"),
        ));
    }
    None
}

/// Compares the end of the chain with the head file the appenders keep.
fn check_head(
    entries: &[Entry],
    names: &[PathBuf],
    head: Option<&ChainHead>,
    live: &Path,
) -> Option<ChainProblem> {
    let head = head?;
    let last = entries.last();
    let last_seq = last.and_then(|e| e.chain.as_ref()).map_or(0, |c| c.0);
    let (file, line) = last.map_or((live.to_owned(), 0), |e| (names[e.file].clone(), e.line));
    if head.seq > last_seq {
        return Some(ChainProblem {
            file,
            line: line + 1,
            kind: ProblemKind::Removed,
            detail: format!(
                "the last {} line(s) were removed: the chain head ({}) records seq {} but the log ends at seq {last_seq}",
                head.seq - last_seq,
                head_path(live).display(),
                head.seq
            ),
        });
    }
    if head.seq == last_seq && last.is_some_and(|e| e.sha256 != head.sha256) {
        return Some(ChainProblem {
            file,
            line,
            kind: ProblemKind::Edited,
            detail: format!(
                "the last line's SHA-256 differs from the one the chain head ({}) records",
                head_path(live).display()
            ),
        });
    }
    None
}

fn check_recordings(entries: &[Entry], report: &mut VerifyReport) {
    let pruned: HashSet<&Path> = entries
        .iter()
        .filter_map(|e| match e.record.as_ref().map(|r| &r.event) {
            Some(AuditEvent::RecordingPruned(p)) => Some(p.path.as_path()),
            _ => None,
        })
        .collect();
    for e in entries {
        let Some(AuditEvent::SessionEnd(end)) = e.record.as_ref().map(|r| &r.event) else {
            continue;
        };
        let Some(rec) = &end.recording else { continue };
        if pruned.contains(rec.path.as_path()) {
            continue;
        }
        report.recordings_checked += 1;
        let problem = |detail: String| RecordingProblem {
            session_id: end.session_id.clone(),
            path: rec.path.clone(),
            detail,
        };
        match file_sha256(&rec.path) {
            Err(err) if err.kind() == io::ErrorKind::NotFound => report
                .recording_problems
                .push(problem("missing (deleted without `sessions prune`)".into())),
            Err(err) => report
                .recording_problems
                .push(problem(format!("cannot be read: {err}"))),
            Ok((sha, size)) if sha != rec.sha256 => {
                let how = if size < rec.size {
                    format!(
                        "truncated: {size} bytes, {} when the session ended",
                        rec.size
                    )
                } else {
                    format!(
                        "changed: SHA-256 {sha}, {} when the session ended",
                        rec.sha256
                    )
                };
                report.recording_problems.push(problem(how));
            }
            Ok(_) => {}
        }
    }
}

/// SHA-256 (hex) and size of a file, streamed.
pub fn file_sha256(path: &Path) -> io::Result<(String, u64)> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((hex::encode(hasher.finalize()), size))
}

#[cfg(test)]
mod tests {
    use super::super::tests::container_event;
    use super::super::*;
    use super::*;
    use std::io::Write;

    fn log_with(n: usize) -> (tempfile::TempDir, PathBuf, Vec<String>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path).unwrap();
        for i in 0..n {
            log.append(&container_event(&format!("u{i}"))).unwrap();
        }
        let lines = fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
        (dir, path, lines)
    }

    fn rewrite(path: &Path, lines: &[String]) {
        let mut text = lines.join("\n");
        text.push('\n');
        fs::write(path, text).unwrap();
    }

    fn problem(path: &Path) -> ChainProblem {
        let report = verify(path).unwrap();
        assert!(!report.is_ok());
        report.chain_problem.expect("a chain problem")
    }

    #[test]
    fn an_untouched_log_verifies() {
        let (_d, path, _) = log_with(5);
        let report = verify(&path).unwrap();
        assert!(report.is_ok(), "{report}");
        assert_eq!(report.lines, 5);
        assert!(report.to_string().starts_with("OK"), "{report}");
    }

    #[test]
    fn an_edited_line_is_named() {
        let (_d, path, mut lines) = log_with(5);
        lines[2] = lines[2].replace("\"u2\"", "\"mallory\"");
        rewrite(&path, &lines);
        let p = problem(&path);
        assert_eq!((p.kind, p.line), (ProblemKind::Edited, 3), "{p}");
    }

    #[test]
    fn an_edited_last_line_is_caught_by_the_chain_head() {
        let (_d, path, mut lines) = log_with(3);
        lines[2] = lines[2].replace("\"u2\"", "\"mallory\"");
        rewrite(&path, &lines);
        let p = problem(&path);
        assert_eq!((p.kind, p.line), (ProblemKind::Edited, 3), "{p}");
    }

    #[test]
    fn an_edited_seq_is_named() {
        let (_d, path, mut lines) = log_with(4);
        lines[1] = lines[1].replace("\"seq\":2", "\"seq\":7");
        rewrite(&path, &lines);
        let p = problem(&path);
        assert_eq!((p.kind, p.line), (ProblemKind::Edited, 2), "{p}");
    }

    #[test]
    fn a_line_that_is_not_json_is_named() {
        let (_d, path, mut lines) = log_with(4);
        lines[1] = "garbage".into();
        rewrite(&path, &lines);
        let p = problem(&path);
        assert_eq!((p.kind, p.line), (ProblemKind::Edited, 2), "{p}");
    }

    #[test]
    fn a_removed_line_is_named() {
        let (_d, path, mut lines) = log_with(5);
        lines.remove(2);
        rewrite(&path, &lines);
        let p = problem(&path);
        assert_eq!((p.kind, p.line), (ProblemKind::Removed, 3), "{p}");
        assert!(p.detail.contains("seq 3..=3"), "{p}");
    }

    #[test]
    fn removed_last_lines_are_named() {
        let (_d, path, mut lines) = log_with(5);
        lines.truncate(3);
        rewrite(&path, &lines);
        let p = problem(&path);
        assert_eq!((p.kind, p.line), (ProblemKind::Removed, 4), "{p}");
        assert!(p.detail.contains("last 2 line(s)"), "{p}");
    }

    #[test]
    fn a_forged_inserted_line_is_named() {
        let (_d, path, mut lines) = log_with(4);
        // The forger copies line 2's successor fields so the line itself
        // chains correctly from line 2.
        let mut forged: serde_json::Value = serde_json::from_str(&lines[2]).unwrap();
        forged["user"] = "ghost".into();
        lines.insert(2, serde_json::to_string(&forged).unwrap());
        rewrite(&path, &lines);
        let p = problem(&path);
        assert_eq!((p.kind, p.line), (ProblemKind::Inserted, 3), "{p}");
    }

    #[test]
    fn an_inserted_junk_line_is_named() {
        let (_d, path, mut lines) = log_with(4);
        let mut junk: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
        junk["prev_sha256"] = "ab".repeat(32).into();
        junk["seq"] = 99.into();
        lines.insert(1, serde_json::to_string(&junk).unwrap());
        rewrite(&path, &lines);
        let p = problem(&path);
        assert_eq!((p.kind, p.line), (ProblemKind::Inserted, 2), "{p}");
    }

    #[test]
    fn swapped_lines_are_named() {
        let (_d, path, mut lines) = log_with(5);
        lines.swap(1, 2);
        rewrite(&path, &lines);
        let p = problem(&path);
        assert_eq!((p.kind, p.line), (ProblemKind::Reordered, 2), "{p}");
    }

    #[test]
    fn a_line_moved_to_the_end_is_named() {
        let (_d, path, mut lines) = log_with(5);
        let moved = lines.remove(1);
        lines.push(moved);
        rewrite(&path, &lines);
        let p = problem(&path);
        assert_eq!((p.kind, p.line), (ProblemKind::Reordered, 2), "{p}");
    }

    #[test]
    fn the_chain_is_checked_across_rotated_and_compressed_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path).unwrap();
        for round in 0..3 {
            for i in 0..3 {
                log.append(&container_event(&format!("r{round}u{i}")))
                    .unwrap();
            }
            // logrotate: .1 -> .2.gz (delaycompress), live -> .1
            let one = dir.path().join("audit.jsonl.1");
            if one.exists() {
                let data = fs::read(&one).unwrap();
                let gz = fs::File::create(dir.path().join(format!("audit.jsonl.{}.gz", round + 1)))
                    .unwrap();
                let mut enc = flate2::write::GzEncoder::new(gz, flate2::Compression::default());
                enc.write_all(&data).unwrap();
                enc.finish().unwrap();
                fs::remove_file(&one).unwrap();
            }
            fs::rename(&path, &one).unwrap();
        }
        log.append(&container_event("last")).unwrap();
        let report = verify(dir.path()).unwrap();
        assert!(report.is_ok(), "{report}");
        assert_eq!(report.lines, 10);
        assert_eq!(report.files.len(), 4);
        assert!(report.notes.is_empty(), "{:?}", report.notes);
        // A rotated file deleted from the middle of the chain is caught.
        let middle = report.files[1].clone();
        fs::remove_file(&middle).unwrap();
        let p = problem(dir.path());
        assert_eq!(p.kind, ProblemKind::Removed, "{p}");
        // Then deleting the oldest too is what `rotate N` does: a note only.
        fs::remove_file(&report.files[0]).unwrap();
        let rep = verify(dir.path()).unwrap();
        assert!(rep.is_ok(), "{rep}");
        assert_eq!(rep.notes.len(), 1, "{rep}");
    }

    #[test]
    fn an_old_rotated_file_gone_is_a_note_not_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path).unwrap();
        log.append(&container_event("a")).unwrap();
        fs::rename(&path, dir.path().join("audit.jsonl.1")).unwrap();
        log.append(&container_event("b")).unwrap();
        fs::remove_file(dir.path().join("audit.jsonl.1")).unwrap();
        let report = verify(&path).unwrap();
        assert!(report.is_ok(), "{report}");
        assert_eq!(report.notes.len(), 1, "{report}");
    }

    fn session_end(id: &str, path: &Path, sha256: String, size: u64) -> AuditEvent {
        AuditEvent::SessionEnd(SessionEnd {
            session_id: id.into(),
            user: "alice".into(),
            container: "bastion-alice".into(),
            started: time::OffsetDateTime::now_utc(),
            duration_secs: 1.0,
            exit_code: Some(0),
            signal: None,
            bytes_in: 0,
            bytes_out: 5,
            ended_by: EndedBy::Exit,
            recording: Some(RecordingSummary {
                path: path.to_owned(),
                sha256,
                size,
                truncated: false,
                error: None,
            }),
            error: None,
        })
    }

    #[test]
    fn a_changed_truncated_or_missing_recording_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path).unwrap();
        let mut casts = Vec::new();
        for id in ["s1", "s2", "s3", "s4"] {
            let cast = dir.path().join(format!("{id}.cast"));
            fs::write(&cast, "{\"version\":2}\n[0.1,\"o\",\"hello\"]\n").unwrap();
            let (sha, size) = file_sha256(&cast).unwrap();
            log.append(&session_end(id, &cast, sha, size)).unwrap();
            casts.push(cast);
        }
        assert!(verify(&path).unwrap().is_ok());
        fs::write(&casts[0], "{\"version\":2}\n[0.1,\"o\",\"HELLO\"]\n").unwrap();
        fs::write(&casts[1], "{\"version\":2}\n").unwrap();
        fs::remove_file(&casts[2]).unwrap();
        let report = verify(&path).unwrap();
        assert!(report.chain_problem.is_none());
        let got: Vec<_> = report
            .recording_problems
            .iter()
            .map(|p| (p.session_id.as_str(), p.detail.split(':').next().unwrap()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("s1", "changed"),
                ("s2", "truncated"),
                ("s3", "missing (deleted without `sessions prune`)")
            ]
        );
        // A pruned recording is not a problem.
        log.append(&AuditEvent::RecordingPruned(RecordingPruned {
            session_id: "s3".into(),
            user: "alice".into(),
            path: casts[2].clone(),
            sha256: None,
            by_uid: 0,
        }))
        .unwrap();
        assert_eq!(verify(&path).unwrap().recording_problems.len(), 2);
    }
}
