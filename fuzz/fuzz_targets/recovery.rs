//! See helios_atlas::fuzzing::recovery for the property.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    helios_atlas::fuzzing::recovery(data);
});
