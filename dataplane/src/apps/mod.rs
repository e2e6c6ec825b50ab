//! Applications that run on the workers.

pub mod client;
pub mod http;
pub mod server;
pub mod sockperf;
