//! The config loader on any bytes: errors are fine, a panic is a bug.
//! Seed corpus: `tests/fixtures/fuzz-corpus/config/`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = corral::config::parse(&text, std::path::Path::new("runners.yaml"));
});
