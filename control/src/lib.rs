//! The xstack control plane: configuration, the XDP program, ARP, worker
//! supervision and statistics. The `xstackd` binary is a thin shell around
//! [`daemon::run`].

pub mod arp;
pub mod config;
pub mod daemon;
pub mod embed;
pub mod pcap;
pub mod sysfs;
