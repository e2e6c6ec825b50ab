//! Application processes on the stack: the daemon's workers own every
//! connection, and a process (an unmodified server under the preload
//! library) reaches its sockets through memory it shares with the daemon
//! (ARCHITECTURE.md, "Applications in other processes").
//!
//! - [`arena`]: the shared layout: queues, socket slots, the ring heap.
//! - [`message`]: commands (process to worker) and events (worker to
//!   process) as queue records.
//! - [`register`]: how a process gets its arena (a unix socket and
//!   SCM_RIGHTS), and how the daemon learns it died (the hangup).
//! - [`serve`]: the worker side, an `App` beside the daemon's services.
//! - [`client`]: the process side, non-blocking calls the preload library
//!   builds the socket API on.
//! - [`heap`]: the worker's allocator for rings in an arena.

pub mod arena;
pub mod client;
pub mod heap;
pub mod message;
pub mod register;
pub mod serve;
#[cfg(test)]
mod tests;

pub use client::{Listener, Process, Ready, Stream};
pub use serve::{Gate, Gateway, Inbox, Link, Order};
