//! The Tune parser: the input as a query string and as a JSON body, each sanitised,
//! parsed and hashed; see `pbg_fuzz::partner` for the properties checked.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postback_gateway::partners::PartnerId;

fuzz_target!(|data: &[u8]| pbg_fuzz::partner(PartnerId::Tune, data));
