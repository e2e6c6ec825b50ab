//! Every other wire parser on the same bytes: Ethernet, ARP, IPv4, ICMP.
//! None may panic, whatever the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xstack_dataplane::wire::{arp, ethernet, icmp, ipv4};

fuzz_target!(|data: &[u8]| {
    if let Ok(f) = ethernet::Frame::new_checked(data) {
        let _ = ethernet::Repr::parse(&f);
        let _ = f.payload();
    }
    if let Ok(p) = arp::Packet::new_checked(data) {
        let _ = arp::Repr::parse(&p);
    }
    if let Ok(p) = ipv4::Packet::new_checked(data) {
        let _ = ipv4::Repr::parse(&p);
        let _ = p.payload();
    }
    if let Ok(p) = icmp::Packet::new_checked(data) {
        let _ = icmp::Repr::parse(&p);
    }
});
