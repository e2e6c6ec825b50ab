//! The data plane of the xstack user-space TCP/IP stack.
//!
//! - [`wire`]: wire formats as checked zero-copy views and parsed representations.
//! - [`afxdp`]: the AF_XDP port (UMEM, fill/completion/RX/TX rings, frame pool).
//!   The only module allowed to use `unsafe`.
//! - [`worker`]: the per-core run-to-completion loop.
#![deny(unsafe_code)]

pub mod wire;
pub mod tcp;
