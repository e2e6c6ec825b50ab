//! The xstack control plane: configuration, the XDP program, ARP, worker
//! supervision and statistics. The `xstackd` binary is a thin shell around
//! [`daemon::run`]; `xstackctl` is the operator's client of its control
//! socket ([`ctlsock`], [`protocol`], [`render`]), and [`metrics`] serves
//! the same figures to Prometheus.

pub mod arp;
pub mod capture;
pub mod config;
pub mod ctlsock;
pub mod daemon;
pub mod embed;
pub mod gateway;
pub mod help;
pub mod knobs;
pub mod metrics;
pub(crate) mod ops;
pub mod owner;
pub mod pcap;
pub(crate) mod peer;
pub mod print_config;
pub mod protocol;
pub mod queues;
pub mod render;
pub mod sysfs;
pub(crate) mod workers;
