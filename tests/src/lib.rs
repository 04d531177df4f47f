//! Shared helpers of the end-to-end tests live in `tests/common`.
#![forbid(unsafe_code)]
