//! The asciicast v2 writer ([`Recorder`]) and its header.
//!
//! [`Recorder`] sits in the byte pump of every session, so it does little
//! per chunk: it decodes UTF-8 once (carrying a sequence split across chunks
//! to the next one, replacing invalid bytes with U+FFFD), escapes into one
//! reused buffer, and writes to the file in 64 KiB blocks, hashing each
//! block as it goes, so `finish()` has the SHA-256 without reading the file
//! again. Past `max_bytes` it writes one marker and only counts bytes.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{RecordingError, ensure_private_dir, writer};

/// `env` of the header.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CastEnv {
    #[serde(rename = "TERM", skip_serializing_if = "Option::is_none", default)]
    pub term: Option<String>,
    #[serde(rename = "SHELL", skip_serializing_if = "Option::is_none", default)]
    pub shell: Option<String>,
}

/// bastion's own header keys, under `"bastion"` (players ignore unknown
/// keys; checked with Debian's asciinema 2.2 and asciinema-player 3).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BastionHeader {
    pub session_id: String,
    pub user: String,
    pub uid: u32,
    pub container: String,
    pub image: Option<String>,
    pub image_digest: Option<String>,
    pub role: Option<String>,
    /// The client's address and port, from SSH_CONNECTION.
    pub remote_addr: Option<String>,
    pub remote_port: Option<u16>,
    pub host: Option<String>,
}

/// The asciicast v2 header (first line).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CastHeader {
    pub version: u8,
    pub width: u16,
    pub height: u16,
    /// Unix seconds of the session's start.
    pub timestamp: i64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub command: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub title: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub idle_time_limit: Option<f64>,
    #[serde(default)]
    pub env: CastEnv,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub bastion: Option<BastionHeader>,
}

/// Knobs of one recording.
#[derive(Debug, Clone, Copy)]
pub struct RecorderOptions {
    /// Write `"i"` events for input.
    pub record_input: bool,
    /// Size cap of the .cast file.
    pub max_bytes: u64,
    /// Free space to leave on the file system: the recording stops (with
    /// an error) rather than go below it.
    pub reserve: u64,
}

/// What a closed recording amounts to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingOutcome {
    pub path: PathBuf,
    /// SHA-256 (hex) of the whole file.
    pub sha256: String,
    /// Size of the file.
    pub size: u64,
    /// Bytes of output seen (recorded or not).
    pub bytes_out: u64,
    /// Bytes of input seen (recorded or not).
    pub bytes_in: u64,
    /// Whether the size cap stopped the recording.
    pub truncated: bool,
    /// The write error that stopped the recording, if one did.
    pub error: Option<String>,
}

const FLUSH_AT: usize = 64 * 1024;
const FLUSH_EVERY: Duration = Duration::from_secs(1);
pub(super) const REPLACEMENT: &str = "\u{FFFD}";

/// An asciicast v2 writer for one session.
#[derive(Debug)]
pub struct Recorder {
    path: PathBuf,
    /// Hashes and writes full blocks on its own thread.
    writer: Option<writer::BlockWriter>,
    buf: Vec<u8>,
    /// Bytes handed to the writer (the file's size once written).
    size: u64,
    start: Instant,
    last_flush: Instant,
    opts: RecorderOptions,
    out_carry: Utf8Carry,
    in_carry: Utf8Carry,
    bytes_out: u64,
    bytes_in: u64,
    /// No more events: the cap was hit (`truncated`) or a write failed.
    stopped: bool,
    truncated: bool,
    error: Option<RecordingError>,
    finished: bool,
}

impl Recorder {
    /// Creates the recording at `path` (mode 0600, a new file; its directory
    /// 0700) and writes the header. Fails, so the login can be refused, when
    /// the file cannot be created or the header written.
    pub fn create(
        path: &Path,
        header: &CastHeader,
        opts: RecorderOptions,
    ) -> Result<Self, RecordingError> {
        if let Some(dir) = path.parent() {
            ensure_private_dir(dir)?;
        }
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|source| RecordingError::CreateFile {
                path: path.to_owned(),
                source,
            })?;
        // Write the header now, synchronously, so a full or read-only disk
        // shows at session start.
        let mut header_line = serde_json::to_vec(header).expect("a header serializes");
        header_line.push(b'\n');
        let mut file = file;
        if let Err(source) = file.write_all(&header_line) {
            let _ = fs::remove_file(path);
            return Err(RecordingError::Write {
                path: path.to_owned(),
                source,
            });
        }
        let mut hasher = Sha256::new();
        hasher.update(&header_line);
        let size = header_line.len() as u64;
        let writer = writer::BlockWriter::spawn(file, hasher, size, 2 * FLUSH_AT, opts.reserve)
            .map_err(|source| RecordingError::CreateFile {
                path: path.to_owned(),
                source,
            })?;
        let now = Instant::now();
        Ok(Self {
            path: path.to_owned(),
            writer: Some(writer),
            buf: Vec::with_capacity(2 * FLUSH_AT),
            size,
            start: now,
            last_flush: now,
            opts,
            out_carry: Utf8Carry::default(),
            in_carry: Utf8Carry::default(),
            bytes_out: 0,
            bytes_in: 0,
            stopped: false,
            truncated: false,
            error: None,
            finished: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Output from the session to the user.
    pub fn output(&mut self, data: &[u8]) {
        self.bytes_out += data.len() as u64;
        if !self.stopped && !data.is_empty() {
            self.text_event(b'o', data);
        }
    }

    /// Whether the recording has stopped (its cap, or a write error):
    /// nothing more is recorded.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// Input from the user; recorded only with `record_input`.
    pub fn input(&mut self, data: &[u8]) {
        self.bytes_in += data.len() as u64;
        if self.opts.record_input && !self.stopped && !data.is_empty() {
            self.text_event(b'i', data);
        }
    }

    /// The terminal was resized.
    pub fn resize(&mut self, cols: u16, rows: u16) {
        if self.stopped {
            return;
        }
        let mark = self.begin_event(b'r');
        let _ = write!(self.buf, "{cols}x{rows}");
        self.end_event(mark);
    }

    /// A marker (shown as a chapter by players).
    pub fn marker(&mut self, label: &str) {
        if self.stopped {
            return;
        }
        let mark = self.begin_event(b'm');
        escape_into(&mut self.buf, label.as_bytes());
        self.end_event(mark);
    }

    /// Writes buffered events to the file. The pump may call this when the
    /// session goes idle; events are otherwise written every 64 KiB or, at
    /// the next event, after a second.
    pub fn flush(&mut self) {
        self.write_buf();
    }

    pub fn bytes_out(&self) -> u64 {
        self.bytes_out
    }

    pub fn bytes_in(&self) -> u64 {
        self.bytes_in
    }

    /// Whether the size cap stopped the recording.
    pub fn truncated(&self) -> bool {
        self.truncated
    }

    /// The write error that stopped the recording, if any: the session
    /// goes on (bastiond decides whether to end it).
    pub fn error(&self) -> Option<&RecordingError> {
        self.error.as_ref()
    }

    /// Size and SHA-256 (hex) of what is in the file so far (flushes first).
    pub fn sha256_so_far(&mut self) -> (u64, String) {
        self.flush();
        self.writer
            .as_ref()
            .and_then(writer::BlockWriter::snapshot)
            .unwrap_or((self.size, String::new()))
    }

    /// Ends the recording: writes what is left (a UTF-8 sequence cut off at
    /// the end becomes U+FFFD), syncs the file and returns its hash.
    pub fn finish(mut self) -> RecordingOutcome {
        for code in [b'o', b'i'] {
            let carry = if code == b'o' {
                &mut self.out_carry
            } else {
                &mut self.in_carry
            };
            if carry.len > 0 && !self.stopped {
                carry.len = 0;
                let mark = self.begin_event(code);
                escape_into(&mut self.buf, REPLACEMENT.as_bytes());
                self.end_event(mark);
            }
        }
        self.flush();
        self.finished = true;
        let done = self.writer.take().map(writer::BlockWriter::finish);
        if let Some(e) = done.as_ref().and_then(|d| d.error.as_ref())
            && self.error.is_none()
        {
            self.fail(std::io::Error::new(e.kind(), e.to_string()));
        }
        let (sha256, size) = match done {
            // Unknown how much of a failed write landed: hash the file.
            Some(_) | None if self.error.is_some() => {
                crate::audit::verify::file_sha256(&self.path).unwrap_or_default()
            }
            Some(done) => (done.sha256, done.size),
            None => (String::new(), self.size),
        };
        RecordingOutcome {
            path: self.path.clone(),
            sha256,
            size,
            bytes_out: self.bytes_out,
            bytes_in: self.bytes_in,
            truncated: self.truncated,
            error: self.error.as_ref().map(ToString::to_string),
        }
    }

    fn text_event(&mut self, code: u8, data: &[u8]) {
        let mark = self.begin_event(code);
        let body = self.buf.len();
        let carry = if code == b'o' {
            &mut self.out_carry
        } else {
            &mut self.in_carry
        };
        push_utf8(&mut self.buf, carry, data);
        if self.buf.len() == body {
            // All of it waits in the carry for the rest of its character.
            self.buf.truncate(mark);
            return;
        }
        self.end_event(mark);
    }

    fn begin_event(&mut self, code: u8) -> usize {
        let mark = self.buf.len();
        let t = self.start.elapsed();
        let _ = write!(
            self.buf,
            "[{}.{:06}, \"{}\", \"",
            t.as_secs(),
            t.subsec_micros(),
            code as char
        );
        mark
    }

    fn end_event(&mut self, mark: usize) {
        self.buf.extend_from_slice(b"\"]\n");
        if self.size + self.buf.len() as u64 > self.opts.max_bytes {
            self.buf.truncate(mark);
            self.stop_at_cap();
            return;
        }
        if self.buf.len() >= FLUSH_AT || self.last_flush.elapsed() >= FLUSH_EVERY {
            self.flush();
        }
    }

    fn stop_at_cap(&mut self) {
        let at = self.size + self.buf.len() as u64;
        let label = format!(
            "bastion: recording stopped at {at} bytes (max_recording_bytes = {}); later output is counted, not recorded",
            self.opts.max_bytes
        );
        let mark = self.begin_event(b'm');
        escape_into(&mut self.buf, label.as_bytes());
        self.buf.extend_from_slice(b"\"]\n");
        let _ = mark;
        self.stopped = true;
        self.truncated = true;
        self.flush();
    }

    fn write_buf(&mut self) {
        self.last_flush = Instant::now();
        if self.buf.is_empty() {
            return;
        }
        let Some(writer) = self.writer.as_mut().filter(|_| self.error.is_none()) else {
            self.buf.clear();
            return;
        };
        self.size += self.buf.len() as u64;
        let block = std::mem::take(&mut self.buf);
        self.buf = writer.send(block);
        if let Some(source) = writer.failure() {
            self.fail(source);
        }
    }

    fn fail(&mut self, source: std::io::Error) {
        tracing::error!(path = %self.path.display(), error = %source, "recording stopped: cannot write");
        self.error = Some(RecordingError::Write {
            path: self.path.clone(),
            source,
        });
        self.stopped = true;
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if !self.finished {
            self.flush();
        }
    }
}

/// Up to 3 bytes of a UTF-8 sequence cut off at the end of a chunk.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Utf8Carry {
    bytes: [u8; 4],
    len: usize,
}

fn utf8_width(lead: u8) -> usize {
    match lead {
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        _ => 4,
    }
}

/// Decodes `data` (after what `carry` holds) as UTF-8 and appends it,
/// JSON-escaped, to `buf`. Invalid bytes become U+FFFD, as in
/// `String::from_utf8_lossy`; an incomplete sequence at the end is kept in
/// `carry` for the next chunk.
pub(super) fn push_utf8(buf: &mut Vec<u8>, carry: &mut Utf8Carry, mut data: &[u8]) {
    if carry.len > 0 {
        let have = carry.len;
        let need = utf8_width(carry.bytes[0]);
        let take = (need - have).min(data.len());
        let mut tmp = carry.bytes;
        tmp[have..have + take].copy_from_slice(&data[..take]);
        let t = &tmp[..have + take];
        match std::str::from_utf8(t) {
            Ok(s) => {
                escape_into(buf, s.as_bytes());
                carry.len = 0;
                data = &data[take..];
            }
            Err(e) => match e.error_len() {
                None => {
                    // Still incomplete: the chunk ended again.
                    carry.bytes[..t.len()].copy_from_slice(t);
                    carry.len = t.len();
                    return;
                }
                Some(n) => {
                    escape_into(buf, REPLACEMENT.as_bytes());
                    carry.len = 0;
                    data = &data[n.saturating_sub(have)..];
                }
            },
        }
    }
    let end = data.as_ptr_range().end;
    for chunk in data.utf8_chunks() {
        escape_into(buf, chunk.valid().as_bytes());
        let invalid = chunk.invalid();
        if invalid.is_empty() {
            continue;
        }
        let at_end = invalid.as_ptr_range().end == end;
        let incomplete = std::str::from_utf8(invalid).is_err_and(|e| e.error_len().is_none());
        if at_end && incomplete {
            carry.bytes[..invalid.len()].copy_from_slice(invalid);
            carry.len = invalid.len();
        } else {
            escape_into(buf, REPLACEMENT.as_bytes());
        }
    }
}

/// JSON escapes: 0 = as is, `u` = `\u00XX`, else `\` + that byte.
static ESCAPE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = b'u';
        i += 1;
    }
    t[0x08] = b'b';
    t[0x09] = b't';
    t[0x0a] = b'n';
    t[0x0c] = b'f';
    t[0x0d] = b'r';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t
};

/// `\u00XX` for each control byte.
static CONTROL_ESCAPES: [[u8; 6]; 32] = {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut t = [[0u8; 6]; 32];
    let mut i = 0;
    while i < 32 {
        t[i] = [b'\\', b'u', b'0', b'0', HEX[i >> 4], HEX[i & 0xf]];
        i += 1;
    }
    t
};

/// Whether any of the 8 bytes in `w` needs escaping (< 0x20, `"` or `\`).
/// Exact for "none" (the fast path); a false "some" only costs a slow step.
#[inline]
fn word_needs_escape(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH != 0;
    let below_space = w.wrapping_sub(ONES * 0x20) & !w & HIGH != 0;
    below_space || has_zero(w ^ (ONES * b'"' as u64)) || has_zero(w ^ (ONES * b'\\' as u64))
}

/// Appends valid UTF-8 `s` to `buf` as the inside of a JSON string, copying
/// runs that need no escape in one go (checked 8 bytes at a time).
pub(super) fn escape_into(buf: &mut Vec<u8>, s: &[u8]) {
    let mut start = 0;
    let mut i = 0;
    while i < s.len() {
        if let Some(word) = s.get(i..i + 8) {
            let w = u64::from_le_bytes(word.try_into().expect("8 bytes"));
            if !word_needs_escape(w) {
                i += 8;
                continue;
            }
        }
        let b = s[i];
        let esc = ESCAPE[b as usize];
        if esc == 0 {
            i += 1;
            continue;
        }
        buf.extend_from_slice(&s[start..i]);
        if esc == b'u' {
            // A run of one control byte (a flood of NULs from `head -c 1G
            // /dev/zero`): escape it 8 at a time.
            let run = s[i..].iter().take_while(|&&c| c == b).count();
            let one = &CONTROL_ESCAPES[b as usize];
            if run >= 8 {
                let mut eight = [0u8; 48];
                for chunk in eight.chunks_exact_mut(6) {
                    chunk.copy_from_slice(one);
                }
                buf.reserve(run * 6);
                for _ in 0..run / 8 {
                    buf.extend_from_slice(&eight);
                }
                for _ in 0..run % 8 {
                    buf.extend_from_slice(one);
                }
            } else {
                for _ in 0..run {
                    buf.extend_from_slice(one);
                }
            }
            i += run;
        } else {
            buf.extend_from_slice(&[b'\\', esc]);
            i += 1;
        }
        start = i;
    }
    buf.extend_from_slice(&s[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recording::cast::{CastEvent, read_cast};
    use crate::recording::*;

    use std::os::unix::fs::PermissionsExt;

    pub(crate) fn header() -> CastHeader {
        CastHeader {
            version: 2,
            width: 80,
            height: 24,
            timestamp: 1_795_000_000,
            command: Some("bash -l".into()),
            title: Some("alice@bastion-alice".into()),
            idle_time_limit: None,
            env: CastEnv {
                term: Some("xterm-256color".into()),
                shell: Some("/bin/bash".into()),
            },
            bastion: Some(BastionHeader {
                session_id: "s1".into(),
                user: "alice".into(),
                uid: 1000,
                container: "bastion-alice".into(),
                ..Default::default()
            }),
        }
    }

    fn opts() -> RecorderOptions {
        RecorderOptions {
            record_input: false,
            max_bytes: 1 << 30,
            reserve: 0,
        }
    }

    fn new_recorder(dir: &Path, opts: RecorderOptions) -> Recorder {
        let path = cast_path(dir, "alice", "s1").unwrap();
        Recorder::create(&path, &header(), opts).unwrap()
    }

    fn output_text(events: &[CastEvent], code: &str) -> String {
        events
            .iter()
            .filter(|e| e.code == code)
            .map(|e| e.data.as_str())
            .collect()
    }

    #[test]
    fn escaping_matches_serde_json() {
        let all: String =
            (0u32..0x80).filter_map(char::from_u32).collect::<String>() + "é€😀\u{2028}";
        let mut buf = vec![b'"'];
        escape_into(&mut buf, all.as_bytes());
        buf.push(b'"');
        let back: String = serde_json::from_slice(&buf).unwrap();
        assert_eq!(back, all);
    }

    #[test]
    fn runs_of_control_bytes_escape_like_single_ones() {
        for run in [1usize, 7, 8, 9, 17, 1000] {
            let mut text = String::from("a");
            text.extend(std::iter::repeat_n('\0', run));
            text.push('\u{1b}');
            text.push('b');
            let mut buf = vec![b'"'];
            escape_into(&mut buf, text.as_bytes());
            buf.push(b'"');
            assert_eq!(
                serde_json::from_slice::<String>(&buf).unwrap(),
                text,
                "run {run}"
            );
        }
    }

    #[test]
    fn utf8_split_across_chunks_at_every_position_is_kept_whole() {
        let text = "aé€😀z — ünïcødé 🎉";
        let bytes = text.as_bytes();
        for cut in 0..=bytes.len() {
            let mut buf = Vec::new();
            let mut carry = Utf8Carry::default();
            push_utf8(&mut buf, &mut carry, &bytes[..cut]);
            push_utf8(&mut buf, &mut carry, &bytes[cut..]);
            assert_eq!(carry.len, 0);
            assert_eq!(String::from_utf8(buf).unwrap(), text, "cut at {cut}");
        }
        // One byte at a time.
        let mut buf = Vec::new();
        let mut carry = Utf8Carry::default();
        for b in bytes {
            push_utf8(&mut buf, &mut carry, std::slice::from_ref(b));
        }
        assert_eq!(String::from_utf8(buf).unwrap(), text);
    }

    #[test]
    fn invalid_utf8_is_replaced_like_from_utf8_lossy() {
        let cases: &[&[u8]] = &[
            b"ok\xffok",
            b"\xe2\x82",
            b"\xe2\x82A",
            b"\xf0\x9f\x98",
            b"\xc3\x28",
            b"\xed\xa0\x80",
            b"\xf5\x80\x80\x80",
            b"\x80\x80abc\xc3",
            b"\xe2\x28\xa1",
        ];
        for &case in cases {
            for cut in 0..=case.len() {
                let mut buf = Vec::new();
                let mut carry = Utf8Carry::default();
                push_utf8(&mut buf, &mut carry, &case[..cut]);
                push_utf8(&mut buf, &mut carry, &case[cut..]);
                if carry.len > 0 {
                    escape_into(&mut buf, REPLACEMENT.as_bytes());
                }
                assert_eq!(
                    String::from_utf8(buf).unwrap(),
                    String::from_utf8_lossy(case),
                    "{case:?} cut at {cut}"
                );
            }
        }
    }

    #[test]
    fn a_recording_has_header_output_resize_and_marker_events() {
        let dir = tempfile::tempdir().unwrap();
        let mut rec = new_recorder(dir.path(), opts());
        rec.output(b"hello \x1b[1mworld\x1b[0m\r\n");
        rec.output("caf\u{e9} \"q\" \\".as_bytes());
        rec.input(b"secret\r");
        rec.resize(120, 40);
        rec.marker("checkpoint");
        let out = rec.finish();
        assert!(!out.truncated);
        assert_eq!(out.bytes_in, 7);
        assert_eq!(out.bytes_out, 32);
        let (header, events) = read_cast(&out.path).unwrap();
        assert_eq!(header.version, 2);
        assert_eq!(header.width, 80);
        assert_eq!(header.env.term.as_deref(), Some("xterm-256color"));
        assert_eq!(header.bastion.unwrap().user, "alice");
        assert_eq!(
            output_text(&events, "o"),
            "hello \x1b[1mworld\x1b[0m\r\ncaf\u{e9} \"q\" \\"
        );
        assert_eq!(output_text(&events, "i"), "", "input is off by default");
        assert_eq!(output_text(&events, "r"), "120x40");
        assert_eq!(output_text(&events, "m"), "checkpoint");
        let times: Vec<f64> = events.iter().map(|e| e.time).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]));
        let (sha, size) = crate::audit::verify::file_sha256(&out.path).unwrap();
        assert_eq!(
            (sha, size),
            (out.sha256, out.size),
            "the running hash is the file's"
        );
    }

    #[test]
    fn the_running_hash_is_the_files_and_a_drop_still_writes_everything() {
        let dir = tempfile::tempdir().unwrap();
        let mut rec = new_recorder(dir.path(), opts());
        let path = rec.path().to_owned();
        rec.output(b"abc");
        let (size, sha) = rec.sha256_so_far();
        assert_eq!(
            crate::audit::verify::file_sha256(&path).unwrap(),
            (sha, size)
        );
        rec.output(b"def");
        drop(rec);
        let (_, events) = read_cast(&path).unwrap();
        assert_eq!(output_text(&events, "o"), "abcdef");
    }

    #[test]
    fn input_is_recorded_only_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let mut rec = new_recorder(
            dir.path(),
            RecorderOptions {
                record_input: true,
                ..opts()
            },
        );
        rec.input(b"ls\r");
        let out = rec.finish();
        let (_, events) = read_cast(&out.path).unwrap();
        assert_eq!(output_text(&events, "i"), "ls\r");
    }

    #[test]
    fn a_split_character_at_the_end_becomes_a_replacement_character() {
        let dir = tempfile::tempdir().unwrap();
        let mut rec = new_recorder(dir.path(), opts());
        rec.output(b"ab\xe2\x82");
        let out = rec.finish();
        let (_, events) = read_cast(&out.path).unwrap();
        assert_eq!(output_text(&events, "o"), "ab\u{fffd}");
    }

    #[test]
    fn past_the_cap_one_marker_then_only_counts() {
        let dir = tempfile::tempdir().unwrap();
        let max = 64 * 1024;
        let mut rec = new_recorder(
            dir.path(),
            RecorderOptions {
                record_input: false,
                max_bytes: max,
                reserve: 0,
            },
        );
        let chunk = vec![b'x'; 1000];
        for _ in 0..200 {
            rec.output(&chunk);
        }
        rec.resize(10, 10);
        assert!(rec.truncated());
        let out = rec.finish();
        assert!(out.truncated);
        assert_eq!(out.bytes_out, 200_000);
        assert!(out.size <= max + 512, "{} bytes", out.size);
        let (_, events) = read_cast(&out.path).unwrap();
        let markers: Vec<_> = events.iter().filter(|e| e.code == "m").collect();
        assert_eq!(markers.len(), 1);
        assert!(
            markers[0].data.contains("recording stopped at"),
            "{}",
            markers[0].data
        );
        assert_eq!(events.last().unwrap().code, "m", "nothing after the marker");
        assert!(output_text(&events, "o").len() > 60_000);
        assert!(fs::metadata(&out.path).unwrap().len() == out.size);
    }

    #[test]
    fn files_are_0600_in_0700_directories_created_so() {
        let dir = tempfile::tempdir().unwrap();
        let log_dir = dir.path().join("log");
        let rec = new_recorder(&log_dir, opts());
        let out = rec.finish();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&out.path), 0o600);
        assert_eq!(mode(&log_dir.join("sessions/alice")), 0o700);
        assert_eq!(mode(&log_dir.join("sessions")), 0o700);
        assert_eq!(mode(&log_dir), 0o700);
    }

    #[test]
    fn an_existing_recording_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        new_recorder(dir.path(), opts()).finish();
        let path = cast_path(dir.path(), "alice", "s1").unwrap();
        let err = Recorder::create(&path, &header(), opts()).unwrap_err();
        assert!(matches!(err, RecordingError::CreateFile { .. }), "{err}");
    }

    #[test]
    fn user_and_session_names_cannot_escape_the_directory() {
        for (user, id) in [
            ("..", "s"),
            ("a/b", "s"),
            ("alice", "../x"),
            ("", "s"),
            (".hidden", "s"),
        ] {
            assert!(cast_path(Path::new("/l"), user, id).is_err(), "{user} {id}");
        }
        assert_eq!(
            cast_path(Path::new("/l"), "alice.b", "2026-x_1").unwrap(),
            PathBuf::from("/l/sessions/alice.b/2026-x_1.cast")
        );
    }

    #[test]
    fn a_group_writable_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let users = dir.path().join("sessions/alice");
        fs::create_dir_all(&users).unwrap();
        fs::set_permissions(&users, fs::Permissions::from_mode(0o777)).unwrap();
        let path = cast_path(dir.path(), "alice", "s1").unwrap();
        let err = Recorder::create(&path, &header(), opts()).unwrap_err();
        assert!(matches!(err, RecordingError::UnsafeDir { .. }), "{err}");
    }

    #[test]
    fn an_unwritable_log_dir_fails_at_create_with_the_path() {
        let path = cast_path(Path::new("/proc/bastion-test"), "alice", "s1").unwrap();
        let err = Recorder::create(&path, &header(), opts()).unwrap_err();
        assert!(err.to_string().contains("/proc/bastion-test"), "{err}");
    }
}
