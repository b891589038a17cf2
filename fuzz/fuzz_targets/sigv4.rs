#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| weir::fuzz::sigv4(data));
