//! The simulator's own deterministic randomness: proto's SplitMix64, in a
//! separate instance from the swarms' so that graph building does not
//! perturb them.

pub use shoal_proto::rng::Rng as SplitMix;

/// Puts `items` in a uniformly random order (Fisher-Yates).
pub fn shuffle<T>(rng: &mut SplitMix, items: &mut [T]) {
    for k in (1..items.len()).rev() {
        items.swap(k, rng.below(k as u64 + 1) as usize);
    }
}
