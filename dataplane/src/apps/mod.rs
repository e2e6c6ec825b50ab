//! Applications that run on the workers.

pub mod client;
pub mod server;
