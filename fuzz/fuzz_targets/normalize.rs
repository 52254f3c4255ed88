//! Value normalisation (`partners::normalize`) on arbitrary text: `clean`, `text`,
//! template tokens, all-zero ad ids, event kinds, `parse_time` and the `Picker`;
//! see `pbg_fuzz::normalize` for the properties checked.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| pbg_fuzz::normalize(data));
