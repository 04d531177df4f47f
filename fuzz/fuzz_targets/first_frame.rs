#![no_main]
//! See `bastion_fuzz::first_frame` for the input format and the properties checked.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| bastion_fuzz::first_frame::check(data));
