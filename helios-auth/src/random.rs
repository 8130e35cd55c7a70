//! Randomness for ids, salts and tokens, injected so tests and simulations replay exactly.
//! [`OsRandom`] is the production source (the OS CSPRNG); [`SeededRandom`] is for tests
//! only (predictable by design).

use parking_lot::Mutex;

/// A source of random bytes.
pub trait Randomness: Send + Sync + std::fmt::Debug {
    /// Fills `buf` with random bytes.
    fn fill(&self, buf: &mut [u8]);
}

/// The operating system's CSPRNG (`getrandom`).
#[derive(Debug, Default, Clone, Copy)]
pub struct OsRandom;

impl Randomness for OsRandom {
    fn fill(&self, buf: &mut [u8]) {
        // The OS RNG failing means the machine cannot make secrets at all; continuing
        // would issue guessable tokens.
        getrandom::fill(buf).expect("the OS random number generator failed");
    }
}

/// A deterministic generator (SplitMix64) for tests and simulations. Not for production:
/// anyone who knows the seed knows every token.
#[derive(Debug)]
pub struct SeededRandom {
    state: Mutex<u64>,
}

impl SeededRandom {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            state: Mutex::new(seed),
        }
    }
}

impl Randomness for SeededRandom {
    fn fill(&self, buf: &mut [u8]) {
        let mut s = self.state.lock();
        for chunk in buf.chunks_mut(8) {
            *s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = *s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
        }
    }
}

/// `n` random bytes as lowercase hex.
pub fn hex_token(rng: &dyn Randomness, n: usize) -> String {
    let mut b = vec![0u8; n];
    rng.fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// SHA-256 of `s` as lowercase hex (token hashes, hashed ids).
pub fn sha256_hex(s: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, s.as_bytes());
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}
