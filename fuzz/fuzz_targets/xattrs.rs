#![no_main]
//! cargo fuzz target: the decoders of private xattrs, ACLs and the export record.

#[path = "../bodies.rs"]
#[allow(dead_code)]
mod bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| bodies::xattrs(data));
