//! The short byte-fuzz of the decoders that CI runs (issue 18, point 8): the same entry
//! points as the cargo-fuzz targets (`fuzz/`, `scripts/fuzz.sh` for the long runs), fed by
//! proptest with random bytes and with mutations of valid input, which random bytes
//! rarely reach. The properties are in `helios_atlas::fuzzing`'s docs.

use helios_atlas::aof;
use helios_atlas::fuzzing;
use helios_atlas::{Op, SnapshotEntry};
use proptest::prelude::*;

/// A valid record line, then `edits` applied to it: (position, byte) overwrites.
fn mutated(valid: Vec<u8>, edits: &[(usize, u8)], cut: usize) -> Vec<u8> {
    let mut b = valid;
    for &(at, byte) in edits {
        if !b.is_empty() {
            let i = at % b.len();
            b[i] = byte;
        }
    }
    let keep = b.len() - cut % (b.len() + 1);
    b.truncate(keep);
    b
}

fn valid_line(key: impl AsRef<[u8]>, value: &[u8], seq: u64) -> Vec<u8> {
    let mut line = Vec::new();
    aof::encode_record(
        seq,
        &[Op::Set {
            key: key.as_ref().into(),
            value: bytes::Bytes::copy_from_slice(value),
            expire_at_ms: Some(seq * 7),
        }],
        &mut line,
    );
    line.pop();
    line
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn record_lines(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        fuzzing::record_line(&data);
    }

    #[test]
    fn mutated_record_lines(
        key in "[a-z:\\\\\"\u{e9}]{1,12}",
        value in proptest::collection::vec(any::<u8>(), 0..40),
        seq in 1u64..1_000_000,
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..3),
        cut in any::<usize>(),
    ) {
        fuzzing::record_line(&mutated(valid_line(&key, &value, seq), &edits, cut));
    }

    #[test]
    fn record_decoders(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        fuzzing::record_decoders(&data);
    }

    /// The fast decoder against the general one on valid lines (escapes and non-ASCII
    /// keys included) with a few bytes changed or a cut.
    #[test]
    fn mutated_record_decoders(
        key in prop_oneof![
            "[a-z:\\\\\"\u{e9}\t]{1,12}".prop_map(String::into_bytes),
            proptest::collection::vec(any::<u8>(), 1..12),
        ],
        value in proptest::collection::vec(any::<u8>(), 0..40),
        seq in 1u64..1_000_000,
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..3),
        cut in any::<usize>(),
    ) {
        fuzzing::record_decoders(&mutated(valid_line(&key, &value, seq), &edits, cut));
        fuzzing::record_decoders(&valid_line(&key, &value, seq));
    }

    #[test]
    fn segments(data in proptest::collection::vec(any::<u8>(), 0..2000)) {
        fuzzing::segment(&data);
    }

    #[test]
    fn mutated_segments(
        records in proptest::collection::vec(("[a-z]{1,6}", proptest::collection::vec(any::<u8>(), 0..20)), 1..8),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
        cut in any::<usize>(),
    ) {
        let mut seg = aof::header_line(1);
        for (i, (k, v)) in records.iter().enumerate() {
            seg.extend_from_slice(&valid_line(k, v, i as u64 + 1));
            seg.push(b'\n');
        }
        let seg = mutated(seg, &edits, cut);
        fuzzing::segment(&seg);
    }

    #[test]
    fn snapshots(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        fuzzing::snapshot(&data);
    }

    #[test]
    fn mutated_snapshots(
        entries in proptest::collection::vec((proptest::collection::vec(any::<u8>(), 1..6), proptest::collection::vec(any::<u8>(), 0..20), proptest::option::of(any::<u64>())), 0..6),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..3),
        cut in any::<usize>(),
    ) {
        let entries: Vec<SnapshotEntry> = entries
            .into_iter()
            .map(|(key, value, expire_at_ms)| SnapshotEntry { key: key.into(), value, expire_at_ms })
            .collect();
        let bytes = helios_atlas::snapshot::encode(9, &entries).unwrap();
        fuzzing::snapshot(&mutated(bytes, &edits, cut));
    }

    #[test]
    fn short_inputs(data in proptest::collection::vec(any::<u8>(), 0..4)) {
        fuzzing::record_line(&data);
        fuzzing::segment(&data);
        fuzzing::snapshot(&data);
        fuzzing::recovery(&data);
    }

    #[test]
    fn recovery_over_random_files(data in proptest::collection::vec(any::<u8>(), 0..1500)) {
        fuzzing::recovery(&data);
    }
}
