//! `Stack::has_output` lets the worker skip taking a UMEM frame when
//! nothing is queued; it must never say "nothing" while a segment waits.

use xstack_dataplane::tcp::{Config, Instant, Stack};
use xstack_dataplane::wire::Ipv4Addr;

const LOCAL: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 3);
const PEER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);

fn drain(stack: &mut Stack, now: Instant) -> usize {
    let mut buf = [0u8; 1500];
    let mut n = 0;
    while stack.poll_transmit(now, &mut buf).is_some() {
        n += 1;
    }
    n
}

#[test]
fn has_output_tracks_queued_segments() {
    let now = Instant::from_millis(1);
    let mut stack = Stack::new(Config::default(), &[LOCAL], 7, Instant::ZERO);
    assert!(!stack.has_output(), "a new stack has nothing to send");
    let s = stack.socket();
    stack.connect(now, s, PEER, 80).unwrap();
    assert!(stack.has_output(), "connect queued a SYN");
    assert_eq!(drain(&mut stack, now), 1, "exactly the SYN");
    assert!(!stack.has_output(), "nothing left after draining");
    // The SYN's retransmission is queued again when its timer fires.
    let later = Instant::from_millis(1200);
    stack.handle_timeout(later);
    assert!(stack.has_output(), "the retransmitted SYN is waiting");
    assert_eq!(drain(&mut stack, later), 1);
    // A segment for no connection is answered with an RST.
    let mut seg = [0u8; 20];
    let repr = xstack_dataplane::wire::tcp::Repr {
        src_port: 4000,
        dst_port: 9,
        seq_number: 1,
        ack_number: 0,
        flags: xstack_dataplane::wire::tcp::Flags::SYN,
        window_len: 1000,
        urgent_at: 0,
        options: Default::default(),
        payload: &[],
    };
    repr.emit(&mut xstack_dataplane::wire::tcp::Packet::new_unchecked(&mut seg[..]), PEER, LOCAL);
    let _ = stack.handle_segment(later, PEER, LOCAL, &seg);
    assert!(stack.has_output(), "the RST is waiting");
    assert_eq!(drain(&mut stack, later), 1);
    assert!(!stack.has_output());
}
