//! Memory shared with other processes: the transport between the daemon's
//! workers and applications that run in processes of their own (the
//! preload library). A [`Region`] is a memfd mapped `MAP_SHARED`; inside
//! it live byte rings ([`ring`], one stream direction each) and record
//! queues ([`queue`], commands and events).
//!
//! With the AF_XDP module this is the crate's other user of `unsafe`: the
//! memory is shared with a process we do not trust to follow the
//! protocol, exactly as UMEM is shared with the kernel. The rules that
//! keep it sound:
//! - no Rust reference to a shared byte is ever made; bytes move by raw
//!   copies between the mapping and private buffers, so a peer that writes
//!   where it should not garbles data but cannot break our invariants;
//! - the indices are atomics, read from shared memory and checked against
//!   the capacity kept privately, so a peer's nonsense is reported as
//!   [`Corrupt`], never followed out of bounds;
//! - the mapping outlives every view of it (each holds an `Arc<Region>`).
#![allow(unsafe_code)]

pub mod pass;
pub mod queue;
mod region;
pub mod ring;

pub use region::Region;

/// The peer broke the protocol (indices that cannot be): the channel must
/// be torn down; nothing was read or written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("shared memory channel corrupted by its peer")]
pub struct Corrupt;

/// Bytes per cache line: shared indices written by different sides live on
/// lines of their own.
pub const LINE: usize = 64;
