#![no_main]
//! See `bastion_fuzz::metadata_api` for the input format and the properties checked.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| bastion_fuzz::metadata_api::check(data));
