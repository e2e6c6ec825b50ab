//! Segments, timers and socket calls against an established connection
//! (built by a real handshake first), with timestamps and SACK on.
#![no_main]

#[path = "harness.rs"]
mod harness;

use libfuzzer_sys::fuzz_target;
use xstack_dataplane::tcp::{Config, State};
use xstack_dataplane::wire::tcp::{Flags, Options};

fuzz_target!(|data: &[u8]| {
    let mut h = harness::Harness::new(Config::default());
    h.listen(8);
    // SYN with every option, then the final ACK: port index 0.
    let mut o = Options { mss: Some(1460), window_scale: Some(7), sack_permitted: true, ..Default::default() };
    o.timestamp = Some((100, 0));
    let mut opt = [0u8; 40];
    let n = o.emit(&mut opt);
    let mut syn = vec![0, Flags::SYN.0, 0xff, 0xff, 0, 0, 0xff, 0xff, n as u8];
    syn.extend_from_slice(&opt[..n]);
    let mut rec = vec![0, syn.len() as u8];
    rec.extend_from_slice(&syn);
    h.run(&rec);
    let o = Options { timestamp: Some((101, 0)), ..Default::default() };
    let n = o.emit(&mut opt);
    let mut ack = vec![0, Flags::ACK.0, 0, 0, 0, 0, 0x01, 0x00, n as u8];
    ack.extend_from_slice(&opt[..n]);
    let mut rec = vec![0, ack.len() as u8];
    rec.extend_from_slice(&ack);
    h.run(&rec);
    assert_eq!(h.conns.len(), 1);
    assert_eq!(h.st.state(h.conns[0]), Some(State::Established));
    h.run(data);
});
