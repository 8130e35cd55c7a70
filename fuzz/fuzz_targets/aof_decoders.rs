//! See helios_atlas::fuzzing::record_decoders for the property.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    helios_atlas::fuzzing::record_decoders(data);
});
