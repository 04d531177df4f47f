//! Replays the committed fuzz corpora of the targets on this crate
//! (`fuzz/corpus/{first_frame,config_parse,cast_writer}`) through the fuzz
//! targets' own checks, so plain `cargo test` runs them: no cargo-fuzz, no
//! nightly compiler (fuzzing itself: `fuzz/run.sh`, fuzz/README.md).
//!
//! One test: `first_frame` counts the process's open descriptors around
//! each call, which other tests of the same binary running in parallel
//! would disturb.
#![forbid(unsafe_code)]

#[path = "../../fuzz/src/cast_writer.rs"]
mod cast_writer;
#[path = "../../fuzz/src/config_parse.rs"]
mod config_parse;
#[path = "../../fuzz/src/first_frame.rs"]
mod first_frame;
#[path = "../../fuzz/src/input.rs"]
#[allow(dead_code)]
mod input;

use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "no corpus in {}", dir.display());
    for path in inputs {
        let data = std::fs::read(&path).unwrap();
        if std::panic::catch_unwind(|| check(&data)).is_err() {
            panic!("{target}: {} fails its check", path.display());
        }
    }
}

#[test]
fn fuzz_corpora_pass_their_checks() {
    replay("first_frame", first_frame::check);
    replay("config_parse", config_parse::check);
    replay("cast_writer", cast_writer::check);
}
