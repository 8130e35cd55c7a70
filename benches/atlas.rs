//! ATLAS benchmarks (filled in below).
fn main() {}
