//! Target `cast_writer`: the asciicast writer ([`bastion::recording::Recorder`])
//! and its escaping, read back with the crate's own
//! [`bastion::recording::cast::CastReader`].
//!
//! Input format:
//! - byte 0: bit 0 = record input; bit 1 = a size cap: `max_bytes` is the
//!   big-endian u16 that follows (else 1 GiB);
//! - then operations until the input ends, each a byte (mod 5): 0 output,
//!   1 input (each followed by a length byte, 255 = a big-endian u16
//!   follows, then the bytes: any bytes, split anywhere), 2 resize (u16
//!   cols, u16 rows), 3 marker (length and bytes, as text), 4 flush.
//!
//! Properties (the module's promise): every line of the file is valid JSON
//! (the header an object that reads back equal, each event a
//! `[time, code, data]` array, times never decreasing) and the file ends
//! with a newline; the `"o"` data, concatenated, is the output bytes decoded
//! as `String::from_utf8_lossy` decodes them all at once (a sequence split
//! across chunks kept whole, an invalid or cut-off one U+FFFD), and the same
//! for `"i"` when input is recorded (else no `"i"` event); resize and
//! marker events say what was asked; byte counts count everything. Past
//! `max_bytes`: one marker ends the file, everything before it fits in
//! `max_bytes` (or is the header alone), and the events before it are a
//! prefix of the above. The outcome's size and SHA-256 are the file's.

use std::path::Path;

use bastion::recording::cast::CastReader;
use bastion::recording::{
    BastionHeader, CastEnv, CastHeader, Recorder, RecorderOptions, cast_path,
};
use serde_json::Value;

use crate::input::Input;

fn header() -> CastHeader {
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

/// What was written, by kind of event.
#[derive(Default)]
struct Written {
    output: Vec<u8>,
    input: Vec<u8>,
    resizes: String,
    markers: String,
}

pub fn check(data: &[u8]) {
    let mut input = Input::new(data);
    let flags = input.byte();
    let record_input = flags & 1 != 0;
    let max_bytes = if flags & 2 != 0 {
        u64::from(input.u16())
    } else {
        1 << 30
    };
    // tmpfs when there is one: finish() syncs the file.
    let base = Path::new("/dev/shm");
    let dir = if base.is_dir() {
        tempfile::tempdir_in(base)
    } else {
        tempfile::tempdir()
    }
    .expect("a temporary directory");
    let path = cast_path(dir.path(), "alice", "s1").expect("a recording path");
    let header = header();
    let opts = RecorderOptions {
        record_input,
        max_bytes,
        // No free-space reserve: a write error would end the comparison.
        reserve: 0,
    };
    let mut recorder = Recorder::create(&path, &header, opts).expect("a recording");
    let mut written = Written::default();
    while !input.is_empty() {
        match input.byte() % 5 {
            0 => {
                let bytes = input.sized();
                written.output.extend_from_slice(bytes);
                recorder.output(bytes);
            }
            1 => {
                let bytes = input.sized();
                written.input.extend_from_slice(bytes);
                recorder.input(bytes);
            }
            2 => {
                let (cols, rows) = (input.u16(), input.u16());
                written.resizes.push_str(&format!("{cols}x{rows}"));
                recorder.resize(cols, rows);
            }
            3 => {
                let label = String::from_utf8_lossy(input.sized()).into_owned();
                written.markers.push_str(&label);
                recorder.marker(&label);
            }
            _ => recorder.flush(),
        }
    }
    let outcome = recorder.finish();
    assert_eq!(outcome.error, None, "a write error on tmpfs");
    assert_eq!(outcome.bytes_out, written.output.len() as u64);
    assert_eq!(outcome.bytes_in, written.input.len() as u64);

    let file = std::fs::read(&path).expect("the recording");
    assert_eq!(
        (outcome.size, outcome.sha256.as_str()),
        (
            file.len() as u64,
            bastion::audit::verify::file_sha256(&path)
                .expect("hash")
                .0
                .as_str()
        ),
        "the outcome's size and hash are the file's"
    );
    assert!(file.ends_with(b"\n"), "the file ends with a newline");
    let lines: Vec<&[u8]> = file[..file.len() - 1].split(|&b| b == b'\n').collect();
    for (i, line) in lines.iter().enumerate() {
        let value: Value = serde_json::from_slice(line).unwrap_or_else(|e| {
            panic!(
                "line {} is not JSON ({e}): {:?}",
                i + 1,
                String::from_utf8_lossy(line)
            )
        });
        let ok = if i == 0 {
            value.is_object()
        } else {
            matches!(&value, Value::Array(a) if a.len() == 3 && a[0].is_number() && a[1].is_string() && a[2].is_string())
        };
        assert!(ok, "line {} is not a header or event: {value}", i + 1);
    }

    let mut reader = CastReader::open(&path).expect("the recording reads back");
    assert_eq!(reader.header, header, "the header reads back equal");
    let events: Vec<_> = reader
        .by_ref()
        .collect::<Result<_, _>>()
        .expect("every event reads back");
    assert_eq!(events.len(), lines.len() - 1, "the reader saw every line");
    assert!(
        events.windows(2).all(|w| w[0].time <= w[1].time) && events.iter().all(|e| e.time >= 0.0),
        "event times never decrease"
    );

    let mut events = &events[..];
    let header_len = lines[0].len() as u64 + 1;
    let before_marker = if outcome.truncated {
        let (last, rest) = events.split_last().expect("the cap leaves a marker");
        assert!(
            last.code == "m" && last.data.contains("recording stopped at"),
            "the last event is the cap's marker: {last:?}"
        );
        events = rest;
        file.len() as u64 - (lines.last().expect("a line").len() as u64 + 1)
    } else {
        file.len() as u64
    };
    assert!(
        before_marker <= max_bytes.max(header_len),
        "{before_marker} bytes before any cap marker, max_bytes {max_bytes}"
    );
    let text = |code: &str| -> String {
        events
            .iter()
            .filter(|e| e.code == code)
            .map(|e| e.data.as_str())
            .collect()
    };
    let expected_input = if record_input {
        String::from_utf8_lossy(&written.input).into_owned()
    } else {
        String::new()
    };
    for (code, got, expected) in [
        (
            "o",
            text("o"),
            String::from_utf8_lossy(&written.output).into_owned(),
        ),
        ("i", text("i"), expected_input),
        ("r", text("r"), written.resizes),
        ("m", text("m"), written.markers),
    ] {
        if outcome.truncated {
            assert!(
                expected.starts_with(&got),
                "{code:?} events are not a prefix of what was written:\n got      {got:?}\n expected {expected:?}"
            );
        } else {
            assert_eq!(got, expected, "{code:?} events are not what was written");
        }
    }
}
