//! xstack-bench: the load generator and comparison harness of xstack.
//!
//! - [`apps`]: HTTP/1.1, redis (RESP2) and memcached clients for real servers.
//! - [`transport`]: the pluggable TCP backend (kernel now, xstack later).
//! - [`workload`]: RR, CRR, STREAM and RATE clients, generic over it.
//! - [`server`]: the services the clients talk to ([`proto`]).
//! - [`openloop`]: the open-loop schedule and coordinated-omission correction.
//! - [`hist`]: HdrHistogram recording, merging and log files.
//! - [`memory`]: heap bytes per connection (idle established, TIME_WAIT).
//! - [`floor`]: raw AF_XDP ping-pong, the physical limit of the path.
//! - [`compare`]: runs everything on the namespace topologies, side by side.
//! - [`report`], [`plot`], [`cpu`]: tables, JSON, charts, CPU accounting.

pub mod apps;
pub mod compare;
pub mod cpu;
pub mod flood;
pub mod floor;
pub mod hist;
pub mod memory;
pub mod openloop;
pub mod plot;
pub mod proto;
pub mod report;
pub mod server;
pub mod transport;
pub mod workload;
