//! Applications that run on the workers.

pub mod server;
