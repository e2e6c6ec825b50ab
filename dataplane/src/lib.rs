//! The data plane of the xstack user-space TCP/IP stack.
//!
//! - [`wire`]: wire formats as checked zero-copy views and parsed representations.
//! - [`afxdp`]: the AF_XDP port (UMEM, fill/completion/RX/TX rings, frame pool).
//!   The only module allowed to use `unsafe` (the workspace denies it
//!   everywhere else).
//! - [`ingress`]: what the stack does with one received frame (pure code).
//! - [`egress`]: the Ethernet, IPv4 and ARP framing of what it sends.
//! - [`worker`]: the per-core run-to-completion loop around a port.
//! - [`channel`], [`neigh`], [`stats`], [`iface`]: what a worker shares with
//!   the control plane: lock-free queues, the neighbour table copy, counters
//!   and the interface configuration.
//! - [`tcp`]: the sans-IO TCP engine.
//! - [`rss`], [`handoff`]: which worker owns a flow, and how segments that
//!   arrive on another worker's queue reach it.
//! - [`introspect`]: what the control plane asks a running worker (counters,
//!   connection table, knobs, drain) and the answers.
//! - [`app`]: the run-to-completion application interface on the workers.
//! - [`sockets`]: sockets for ordinary threads, served by the workers.

pub mod afxdp;
pub mod app;
pub mod apps;
pub mod capture;
pub mod channel;
pub mod egress;
pub mod gateway;
pub mod handoff;
pub mod iface;
pub mod ingress;
pub mod introspect;
pub mod neigh;
pub mod rss;
pub mod shm;
pub mod sockets;
pub mod stats;
pub mod tcp;
pub mod wire;
pub mod worker;
