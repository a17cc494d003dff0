//! The simulator's own deterministic randomness: proto's SplitMix64, in a
//! separate instance from the swarms' so that graph building does not
//! perturb them.

pub use shoal_proto::rng::Rng as SplitMix;
