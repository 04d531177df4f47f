//! Replays the committed fuzz corpus of the `metadata_api` target
//! (`fuzz/corpus/metadata_api`) through the fuzz target's own check, so
//! plain `cargo test` runs it: no cargo-fuzz, no nightly compiler (fuzzing
//! itself: `fuzz/run.sh`, fuzz/README.md). Nothing leaves the machine: STS
//! and the real IMDS are a closed loopback port.
#![forbid(unsafe_code)]

#[path = "../../fuzz/src/input.rs"]
#[allow(dead_code)]
mod input;
#[path = "../../fuzz/src/metadata_api.rs"]
mod metadata_api;

use std::path::Path;

#[test]
fn fuzz_corpus_passes_its_check() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/metadata_api");
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "no corpus in {}", dir.display());
    for path in inputs {
        let data = std::fs::read(&path).unwrap();
        if std::panic::catch_unwind(|| metadata_api::check(&data)).is_err() {
            panic!("metadata_api: {} fails its check", path.display());
        }
    }
}
