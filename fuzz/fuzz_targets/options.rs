#![no_main]
//! cargo fuzz target: the command line and `-o` option parser.

#[path = "../bodies.rs"]
#[allow(dead_code)]
mod bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| bodies::options(data));
