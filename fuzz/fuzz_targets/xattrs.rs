#![no_main]
//! cargo fuzz target: the decoders of private xattrs, ACLs and the export record.

#[path = "../bodies.rs"]
mod bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| bodies::xattrs(data));
