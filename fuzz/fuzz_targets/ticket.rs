#![no_main]

libfuzzer_sys::fuzz_target!(init: shoal_tests::fuzz::init(), |data: &[u8]| {
    let _ = shoal_tests::fuzz::ticket(data);
});
