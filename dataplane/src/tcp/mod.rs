//! The TCP engine: a sans-IO, Linux-compatible TCP.
//!
//! Nothing here reads a clock, does I/O or draws global randomness: time
//! comes in as [`Instant`] arguments and randomness from the seed given to
//! the stack.

pub mod assembler;
pub mod buffer;
pub mod congestion;
pub mod isn;
pub mod rng;
pub mod rtt;
pub mod seq;
pub mod siphash;
pub mod syncookie;
pub mod time;
pub mod timer_wheel;

pub use seq::SeqNum;
pub use time::Instant;
