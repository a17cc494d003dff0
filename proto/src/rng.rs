//! proto's only source of randomness: SplitMix64 seeded by the caller.
//! The swarm breaks ties with it, the tracker samples peers with it, and
//! the simulator builds its random graphs with its own instance of it.
//!
//! Invariant: the same seed and the same inputs give the same sequence of
//! draws, so every state machine here is a deterministic function of its
//! inputs.

/// Steele, Lea and Flood's SplitMix64: tiny, fast, well mixed. It only
/// breaks ties and shuffles; nothing secret depends on it.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0) up to a bias below 2^-32.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_reference() {
        let mut r = Rng::new(1234567);
        assert_eq!(r.next_u64(), 6457827717110365317);
        assert_eq!(r.next_u64(), 3203168211198807973);
        assert!((0..1000).all(|_| r.below(7) < 7));
    }
}
