//! The checks behind bastion's fuzz targets (`fuzz_targets/`), one module
//! per target: each decodes a raw fuzz input, runs the code under test and
//! panics when a property fails (libFuzzer then saves the input).
//!
//! The modules use only crates that the crates under test already depend
//! on, so their own tests replay the committed corpora through these same
//! checks (`shell/tests/fuzz_corpus.rs`, `metadata-proxy/tests/fuzz_corpus.rs`)
//! with plain `cargo test`: no cargo-fuzz, no nightly features.
#![forbid(unsafe_code)]

pub mod cast_writer;
pub mod config_parse;
pub mod first_frame;
pub mod input;
pub mod metadata_api;
