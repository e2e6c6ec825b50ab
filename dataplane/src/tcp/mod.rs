//! The TCP engine: a sans-IO, Linux-compatible TCP.
//!
//! Nothing here reads a clock, does I/O or draws global randomness: time
//! comes in as [`Instant`] arguments and randomness from the seed given to
//! the [`Stack`]. The behaviour contract is `shared/tcp-behaviour.md`.
//!
//! - [`stack`]: the per-worker surface and the order to call it in; the
//!   socket table, demultiplexing, the socket operations, events.
//! - [`connection`]: one connection's state machine, a file per behaviour
//!   (input, ACK, receive, send, window, timers, user calls, TIME_WAIT).
//! - [`listener`]: LISTEN and SYN_RCVD: SYN queue, accept queue, overflow,
//!   SYN cookies, the SYN|ACK timer.
//! - [`time_wait`]: TIME_WAIT as a compact record once the connection is
//!   gone.
//! - the pieces: [`sent`] (the segments in flight), [`rack`], [`minmax`],
//!   [`seq`], [`timer_wheel`], [`isn`],
//!   [`syncookie`], [`buffer`], [`assembler`], [`rtt`], [`congestion`],
//!   [`output`], [`shared`] (what the sockets of one stack share);
//!   [`pair`], two stacks joined in memory for benchmarks and
//!   measurements.

pub mod assembler;
pub mod buffer;
pub mod config;
pub mod congestion;
pub(crate) mod connection;
pub mod error;
pub mod isn;
pub(crate) mod listener;
pub mod memory;
pub mod minmax;
pub mod output;
pub mod pair;
pub(crate) mod path_mtu;
pub(crate) mod rack;
pub mod rng;
pub mod rtt;
pub(crate) mod sent;
pub mod seq;
pub(crate) mod shared;
pub mod siphash;
pub mod socket;
pub mod stack;
pub mod stats;
pub mod syncookie;
pub mod time;
pub(crate) mod time_wait;
pub mod timer_wheel;

pub use config::Config;
pub use congestion::Algorithm;
pub use error::Error;
pub use output::Transmit;
pub use seq::SeqNum;
pub use socket::{
    ConnectionInfo, Event, EventKind, FourTuple, Shutdown, SocketId, SocketInfo, SocketOption, SocketOptions, State,
};
pub use stack::{Resources, Stack};
pub use stats::{DropReason, Stats};
pub use time::Instant;

#[cfg(test)]
mod tests;
