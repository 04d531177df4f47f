#![no_main]
//! See `bastion_fuzz::cast_writer` for the input format and the properties checked.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| bastion_fuzz::cast_writer::check(data));
